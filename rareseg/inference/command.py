"""``rareseg infer``: predict a whole scene from a checkpoint into georeferenced GeoTIFFs."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from tqdm import tqdm

from rareseg.core.help import DefaultsHelpFormatter
from rareseg.inference.checkpoint import load_predictor
from rareseg.inference.predictor import resolve_device
from rareseg.inference.radiometry import parse_input_scale
from rareseg.inference.scene import check_options, predict_scene
from rareseg.inference.selection import split_class_list


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rareseg infer",
        description=(
            "Predict a whole LISS-IV scene into mask.tif, rare_prob.tif, saliency_topk.tif, PNG previews and "
            "summary.json."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="RareSegModule checkpoint (.ckpt)")
    parser.add_argument("--input", required=True, help="scene GeoTIFF (bands in the checkpoint's order)")
    parser.add_argument(
        "--out", required=True, help="output folder (created; finished outputs are replaced only at the end)"
    )
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=64, help="pixels shared by neighbouring tiles (at most tile/2)")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda or cuda:N")
    parser.add_argument(
        "--precision",
        default="32",
        choices=("32", "bf16"),
        help="bf16: autocast on CUDA or CPU (about 2x faster on CPUs with native bf16, slower on others)",
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help=(
            "probability threshold for every selected rare class (default: the checkpoint's calibrated thresholds, "
            "else 0.5)"
        ),
    )
    parser.add_argument(
        "--rare-classes",
        default=None,
        help="comma-separated rare class names to output (default: all of the checkpoint's)",
    )
    parser.add_argument(
        "--topk", type=float, default=10.0, help="percentage of valid pixels marked in saliency_topk.tif"
    )
    parser.add_argument("--preview-side", type=int, default=1024, help="longer side of the PNG previews in pixels")
    parser.add_argument(
        "--input-scale",
        default="1",
        help=(
            "factor multiplying the bands before normalisation (e.g. 0.1 for reflectance x 10000 into a DN-trained "
            "checkpoint), or auto: the factor the radiometry check detects"
        ),
    )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def infer_command(argv: Sequence[str]) -> None:
    """Run ``rareseg infer`` with ``argv`` (the arguments after ``infer``)."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        check_options(args.tile, args.overlap, args.batch_size, args.topk, args.threshold, args.preview_side)
        resolve_device(args.device)
        rare = None if args.rare_classes is None else split_class_list(args.rare_classes, "--rare-classes")
        input_scale = parse_input_scale(args.input_scale)
    except ValueError as err:
        parser.error(str(err))
    predictor = load_predictor(args.checkpoint, device=args.device, precision=args.precision)
    with tqdm(
        total=100,
        desc="infer",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]",
        disable=args.quiet,
    ) as bar:

        def progress(fraction: float) -> None:
            bar.update(round(100 * fraction) - bar.n)

        result = predict_scene(
            predictor,
            args.input,
            args.out,
            tile=args.tile,
            overlap=args.overlap,
            batch_size=args.batch_size,
            rare_classes=rare,
            threshold=args.threshold,
            topk=args.topk,
            preview_max_side=args.preview_side,
            input_scale=input_scale,
            progress=progress,
        )
    summary = result.summary
    print(
        f"wrote {len(result.outputs)} files to {result.out_dir} ({summary['tiles']['predicted']} tiles, "
        f"{summary['seconds']:.1f} s, {summary['megapixels_per_second']:.2f} MPix/s)"
    )
