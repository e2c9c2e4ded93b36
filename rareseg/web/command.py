"""``rareseg serve``: the web page on a local port, with the model loaded once."""

from __future__ import annotations

import argparse
import ipaddress
import sys
from collections.abc import Sequence

from werkzeug.serving import make_server

from rareseg.core.help import DefaultsHelpFormatter
from rareseg.web.app import create_app, job_manager
from rareseg.web.config import WebConfig


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rareseg serve",
        description=(
            "Serve the web page: upload a LISS-IV scene, set options, see and download the mask and rare-class "
            "probabilities."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="RareSegModule checkpoint (.ckpt)")
    parser.add_argument(
        "--host", default="127.0.0.1", help="address to bind; anything but loopback lets other machines upload"
    )
    parser.add_argument("--port", type=int, default=8000, help="TCP port")
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest accepted upload in MB")
    parser.add_argument(
        "--jobs-dir", default=None, help="folder for uploads and outputs (default: a new temporary folder)"
    )
    parser.add_argument("--workers", type=int, default=2, help="scenes predicted at the same time")
    parser.add_argument("--keep-jobs", type=int, default=100, help="finished jobs kept on disk (oldest deleted first)")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="32", choices=("32", "bf16"), help="network precision")
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--topk", type=float, default=10.0, help="default top-k saliency percentage on the page")
    parser.add_argument("--preview-side", type=int, default=1024, help="longer side of the PNG previews in pixels")
    return parser


def is_loopback(host: str) -> bool:
    """Whether ``host`` only accepts connections from this machine (``localhost`` or a loopback address)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_command(argv: Sequence[str]) -> None:
    """Run ``rareseg serve`` with ``argv`` (the arguments after ``serve``) until interrupted."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    try:
        settings = WebConfig(
            checkpoint=args.checkpoint,
            jobs_dir=args.jobs_dir,
            max_upload_mb=args.max_upload_mb,
            workers=args.workers,
            device=args.device,
            precision=args.precision,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            topk=args.topk,
            preview_side=args.preview_side,
            keep_jobs=args.keep_jobs,
        )
    except ValueError as err:
        parser.error(str(err))
    app = create_app(settings)
    manager = job_manager(app)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as err:
        manager.shutdown()
        parser.error(f"cannot listen on {args.host}:{args.port} ({err.strerror or err})")
    if not is_loopback(args.host):
        print(
            f"rareseg serve: warning: listening on {args.host}: other machines can upload files and run the model",
            file=sys.stderr,
        )
    print(f"rareseg serve: http://{args.host}:{server.server_port}/ (jobs in {manager.jobs_dir}); Ctrl+C stops")
    try:
        server.serve_forever()  # returns on Ctrl+C: werkzeug's server catches KeyboardInterrupt
    finally:
        print("rareseg serve: stopping")
        server.server_close()
        manager.shutdown()
