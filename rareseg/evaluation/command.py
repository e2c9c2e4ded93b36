"""``rareseg evaluate`` and ``rareseg bench ablation``: argument parsing around the evaluation package."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from pathlib import Path

from rareseg.datamodules.liss4 import SPLITS


def evaluate_command(argv: Sequence[str]) -> None:
    """Run ``rareseg evaluate`` on ``argv`` and print the per-class tables and where the outputs went."""
    from rareseg.evaluation.evaluate import evaluate
    from rareseg.evaluation.report import markdown_report
    from rareseg.inference.predictor import resolve_device, resolve_precision
    from rareseg.inference.scene import check_options

    parser = argparse.ArgumentParser(
        prog="rareseg evaluate",
        description="Score a checkpoint on a split of a dataset root, exactly as `rareseg infer` predicts it "
        "(blended tiles, calibrated thresholds), with the plain argmax beside it: per class, per scene, "
        "calibration, plots.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, help="Lightning checkpoint of a RareSegModule")
    parser.add_argument("--data-root", required=True, help="dataset root (images/, masks/, classes.yaml)")
    parser.add_argument("--split", default="test", choices=SPLITS, help="split to score")
    parser.add_argument(
        "--out",
        default=None,
        help="folder for metrics.json, report.md and plots (default: <checkpoint folder>/evaluation-<split>)",
    )
    parser.add_argument("--tile", type=int, default=512, help="tile side in pixels (as rareseg infer)")
    parser.add_argument(
        "--overlap", type=int, default=64, help="pixels shared by neighbouring tiles (as rareseg infer)"
    )
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="one threshold for every rare class in the deployed decision (default: the checkpoint's calibrated ones)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument("--precision", default="32", choices=("32", "bf16"), help="bf16: autocast")
    args = parser.parse_args(argv)
    try:
        check_options(args.tile, args.overlap, args.batch_size, 10.0, args.threshold)
        resolve_device(args.device)
        resolve_precision(args.precision)
    except ValueError as err:
        parser.error(str(err))
    out = Path(args.out) if args.out is not None else Path(args.checkpoint).parent / f"evaluation-{args.split}"
    scores = evaluate(
        args.checkpoint,
        args.data_root,
        args.split,
        out,
        tile=args.tile,
        overlap=args.overlap,
        batch_size=args.batch_size,
        threshold=args.threshold,
        device=args.device,
        precision=args.precision,
    )
    print(markdown_report(scores).split("## Rare-class probabilities")[0].rstrip())
    print(f"\nwrote metrics.json, report.md and plots to {out}")


def bench_command(argv: Sequence[str]) -> None:
    """Run ``rareseg bench ablation`` on ``argv``: train the missing (row, seed) runs, then write the report."""
    from rareseg.evaluation.ablation import (
        budget_file,
        parse_rows,
        prepare_budget_data,
        run_ablation,
        write_ablation_report,
    )

    parser = argparse.ArgumentParser(prog="rareseg bench", description="Benchmarks that train models.")
    commands = parser.add_subparsers(dest="benchmark", required=True)
    ablation = commands.add_parser(
        "ablation", help="ablation rows x seeds on a fixed budget, resumable; writes ABLATION.md"
    )
    ablation.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 per row")
    ablation.add_argument(
        "--budget",
        default="cpu-small",
        help="budget name (configs/ablations/budget-<name>.yaml: cpu-small, gpu) or a YAML path",
    )
    ablation.add_argument("--rows", default=None, help="comma-separated row numbers (default: all 11)")
    ablation.add_argument(
        "--out", default="benchmarks/ablation", help="folder of the per-run result JSONs, run folders and the chart"
    )
    ablation.add_argument("--report", default="benchmarks/ABLATION.md", help="Markdown report to write")
    ablation.add_argument("--config-dir", default="configs", help="folder holding wetlands.yaml and ablations/")
    ablation.add_argument(
        "--report-only", action="store_true", help="write the report from the finished results without training"
    )
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    try:
        rows = parse_rows(args.rows)
    except ValueError as err:
        parser.error(str(err))
    config_dir, out = Path(args.config_dir), Path(args.out)
    budget = budget_file(args.budget, config_dir)
    seeds = list(range(args.seeds))
    if args.report_only:
        from rareseg.evaluation.ablation import config_digest, load_result, result_path

        found = (
            load_result(result_path(out, row, seed), config_digest(row, budget, config_dir))
            for row in rows
            for seed in seeds
        )
        results = [result for result in found if result is not None]
    else:
        prepare_budget_data(budget)
        results = run_ablation(rows, seeds, budget, out, config_dir)
    if not results:
        raise SystemExit(f"rareseg bench: no finished ablation results in {out}")
    command = shlex.join(["rareseg", "bench", *(a for a in argv if a != "--report-only")])
    write_ablation_report(results, Path(args.report), out / "ablation.png", command)
    print(f"wrote {args.report} from {len(results)} finished runs")
