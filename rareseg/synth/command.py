"""``rareseg synth``: write the embedded synthetic LISS-IV data set."""

from __future__ import annotations

import argparse
import textwrap
from collections.abc import Sequence

from rareseg.synth.confusers import CONFUSERS, check_confusers


def _confuser_list() -> str:
    lines = ["confusers (look-alikes of water and wetland, labelled with the class they really are):"]
    for name, text in CONFUSERS.items():
        lines.append(textwrap.fill(text, width=100, initial_indent=f"  {name:14s}", subsequent_indent=" " * 16))
    return "\n".join(lines)


def synth_command(argv: Sequence[str]) -> None:
    """Parse ``rareseg synth`` options and write the data set."""
    from rareseg.synth.scene import generate_dataset

    parser = argparse.ArgumentParser(
        prog="rareseg synth",
        description="Write the synthetic LISS-IV-like data set (images/, masks/, classes.yaml).",
        epilog=_confuser_list(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="data/liss4-synth", help="dataset root to create")
    parser.add_argument("--scenes", type=int, default=8, help="number of scenes")
    parser.add_argument("--size", type=int, default=2048, help="scene side in pixels (5.8 m each)")
    parser.add_argument("--seed", type=int, default=0, help="master seed")
    parser.add_argument(
        "--confusers",
        default="all",
        help="comma-separated confusers to include, 'all' (default) or 'none' (see the list below)",
    )
    parser.add_argument(
        "--preview", action="store_true", help="also write previews/<scene>.png (false colour NIR-R-G and mask)"
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing root")
    args = parser.parse_args(argv)
    try:
        confusers = check_confusers(args.confusers.split(","))
    except ValueError as err:
        parser.error(f"--confusers: {err}")
    root = generate_dataset(
        args.out,
        num_scenes=args.scenes,
        size=args.size,
        seed=args.seed,
        preview=args.preview,
        overwrite=args.overwrite,
        confusers=confusers,
    )
    print(f"wrote {args.scenes} scenes to {root}")
