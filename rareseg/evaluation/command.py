"""``rareseg evaluate`` and ``rareseg bench ablation``: argument parsing around the evaluation package."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from rareseg.core.help import DefaultsHelpFormatter
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
        formatter_class=DefaultsHelpFormatter,
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
        config_digest,
        discover_rows,
        load_result,
        parse_rows,
        planned_runs,
        prepare_budget_data,
        result_path,
        run_ablation,
        thread_environment,
    )
    from rareseg.evaluation.ablation_report import write_ablation_report

    parser = argparse.ArgumentParser(prog="rareseg bench", description="Benchmarks that train models.")
    commands = parser.add_subparsers(dest="benchmark", required=True)
    ablation = commands.add_parser(
        "ablation", help="ablation rows x seeds on a fixed budget, resumable; writes a report with paired statistics"
    )
    ablation.add_argument(
        "--budget",
        default="cpu-small",
        help="budget name (configs/ablations/budget-<name>.yaml: cpu-small, cpu-converged, gpu) or a YAML path",
    )
    ablation.add_argument("--rows", default=None, help="comma-separated row numbers (default: every row file)")
    ablation.add_argument(
        "--seeds", type=int, default=None, help="seeds 0..N-1 for every row (default: each row's '# seeds:', else 3)"
    )
    ablation.add_argument("--jobs", type=int, default=1, help="runs trained at the same time, one process each")
    ablation.add_argument(
        "--threads", type=int, default=None, help="torch threads per run (default: 1 with --jobs > 1)"
    )
    ablation.add_argument(
        "--data-root",
        default=None,
        help="train and test on this dataset root instead of the budget's (scenes split as the datamodule derives)",
    )
    ablation.add_argument(
        "--out",
        default=None,
        help="folder of the result JSONs, run folders and figures (default: benchmarks/ablation-<budget>)",
    )
    ablation.add_argument("--report", default=None, help="Markdown report to write (default: <out>/ABLATION.md)")
    ablation.add_argument("--config-dir", default="configs", help="folder holding wetlands.yaml and ablations/")
    ablation.add_argument(
        "--report-only", action="store_true", help="write the report from the finished results without training"
    )
    ablation.add_argument(
        "--analysis", default=None, help="Markdown file with a written analysis, placed after the report's introduction"
    )
    args = parser.parse_args(argv)
    for name in ("seeds", "jobs", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be >= 1, got {value}")
    config_dir = Path(args.config_dir)
    known = discover_rows(config_dir)
    try:
        rows = parse_rows(args.rows, known)
    except ValueError as err:
        parser.error(str(err))
    budget = budget_file(args.budget, config_dir)
    out = Path(args.out) if args.out else Path("benchmarks") / f"ablation-{budget.stem.removeprefix('budget-')}"
    report = Path(args.report) if args.report else out / "ABLATION.md"
    threads = args.threads or (1 if args.jobs > 1 else None)
    if threads is not None:
        thread_environment(threads)
    other_config = 0  # finished results made from another configuration: not reported, but said
    if args.report_only:
        results = []
        for row, seed in planned_runs(rows, args.seeds):
            result = load_result(result_path(out, row, seed))  # read once; the digest is compared here
            if result is None:
                continue
            if result["config_digest"] == config_digest(row, budget, config_dir, args.data_root):
                results.append(result)
            else:
                other_config += 1
    else:
        prepare_budget_data(budget, args.data_root)
        results = run_ablation(
            rows, budget, out, config_dir, seeds=args.seeds, jobs=args.jobs, threads=threads, data_root=args.data_root
        )
    stale = (
        f"; {other_config} finished result(s) there were made from another configuration of their row or"
        " budget (config_digest differs): rerun them, or report from the commit that made them"
        if other_config
        else ""
    )
    if not results:
        raise SystemExit(f"rareseg bench: no finished ablation results in {out} for the current configs{stale}")
    if stale:
        print(f"rareseg bench: left out of the report{stale}")
    command = shlex.join(["rareseg", "bench", *(a for a in argv if a != "--report-only")])
    core_hours = sum(result["train_seconds"] for result in results) / 3600
    context = [
        f"machine: {_machine()}",
        f"report written {datetime.now(UTC):%Y-%m-%d %H:%M} UTC at commit {_commit()}",
        f"{len(results)} runs, {core_hours:.1f} hours of training (one torch thread each)",
    ]
    analysis = Path(args.analysis).read_text() if args.analysis else None
    write_ablation_report(results, known, report, out, command, context=context, analysis=analysis)
    print(f"wrote {report} from {len(results)} finished runs")


def _machine() -> str:
    """CPU model and core count, e.g. ``AMD EPYC 7B13, 2 cores``."""
    import os

    try:
        model = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        import platform

        model = platform.processor() or platform.machine()
    return f"{model}, {os.cpu_count()} cores"


def _commit() -> str:
    """The git commit of the working tree (``unknown`` outside a repository)."""
    import subprocess

    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
