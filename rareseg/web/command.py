"""``rareseg serve``: the web page on waitress (a production WSGI server), with the model loaded once.

Binding anything but loopback needs an access token (``--token`` or ``$RARESEG_TOKEN``), which
every request must then carry (:mod:`rareseg.web.access`). Ctrl+C or SIGTERM stops the server:
running jobs are cancelled and the default temporary jobs folder is removed.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import signal
import sys
from collections.abc import Sequence
from types import FrameType

from waitress import create_server

from rareseg.core.help import DefaultsHelpFormatter
from rareseg.web.app import create_app, job_manager
from rareseg.web.config import WebConfig

#: Environment variable holding the access token (keeps it out of ``ps`` and shell history).
TOKEN_VARIABLE = "RARESEG_TOKEN"
#: Request bodies waitress accepts beyond the upload limit, so that Flask answers the 413 in JSON.
BODY_MARGIN_BYTES = 2**20


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
    parser.add_argument(
        "--token",
        default=None,
        help=(
            f"access token every request must carry (default: ${TOKEN_VARIABLE}); required unless --host is loopback; "
            "open the page once as http://HOST:PORT/?token=TOKEN"
        ),
    )
    parser.add_argument("--max-upload-mb", type=float, default=1024.0, help="largest accepted upload in MB")
    parser.add_argument(
        "--jobs-dir", default=None, help="folder for uploads and outputs (default: a new temporary folder)"
    )
    parser.add_argument("--workers", type=int, default=2, help="scenes predicted at the same time")
    parser.add_argument("--keep-jobs", type=int, default=100, help="finished jobs kept on disk (oldest deleted first)")
    parser.add_argument(
        "--max-job-age", type=float, default=24.0, help="hours after which a finished job and its files are deleted"
    )
    parser.add_argument("--threads", type=int, default=8, help="requests answered at the same time")
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


def _stop(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # waitress's loop returns on it, like on Ctrl+C


def serve_command(argv: Sequence[str]) -> None:
    """Run ``rareseg serve`` with ``argv`` (the arguments after ``serve``) until Ctrl+C or SIGTERM."""
    parser = _parser()
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"--port must be in [0, 65535], got {args.port}")
    if args.threads < 1:
        parser.error(f"--threads must be >= 1, got {args.threads}")
    token = args.token if args.token is not None else os.environ.get(TOKEN_VARIABLE) or None
    if token is None and not is_loopback(args.host):
        parser.error(
            f"--host {args.host} lets other machines connect: give an access token with --token or ${TOKEN_VARIABLE}"
        )
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
            max_job_age_hours=args.max_job_age,
            token=token,
        )
    except ValueError as err:
        parser.error(str(err))
    app = create_app(settings)
    manager = job_manager(app)
    try:
        server = create_server(
            app,
            host=args.host,
            port=args.port,
            threads=args.threads,
            max_request_body_size=settings.max_upload_bytes + BODY_MARGIN_BYTES,
        )
    except (OSError, ValueError) as err:
        manager.shutdown()
        parser.error(f"cannot listen on {args.host}:{args.port} ({getattr(err, 'strerror', None) or err})")
    host, port = getattr(server, "effective_listen", [(server.effective_host, server.effective_port)])[0]
    address = f"[{host}]" if ":" in str(host) else host
    if not is_loopback(args.host):
        print(
            f"rareseg serve: warning: listening on {args.host}: other machines can reach this server; "
            "every request needs the access token",
            file=sys.stderr,
        )
    print(f"rareseg serve: http://{address}:{port}/ (jobs in {manager.jobs_dir}); Ctrl+C stops")
    if token is not None:
        print(f"rareseg serve: open the page once as http://{address}:{port}/?token=<token>")
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run()  # returns on Ctrl+C (and SIGTERM): waitress catches KeyboardInterrupt
    finally:
        signal.signal(signal.SIGTERM, previous)
        print("rareseg serve: stopping")
        server.close()
        manager.shutdown()
