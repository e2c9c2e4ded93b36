"""Ablation runner: every row config x seed trained on one budget, resumable, summarised in ABLATION.md.

Each row is ``configs/ablations/NN-*.yaml`` applied on top of ``configs/wetlands.yaml``, followed by
a budget file (``configs/ablations/budget-<name>.yaml``) that fixes data, epochs and model size for
every row. A finished ``(row, seed)`` writes one result JSON atomically; a later run skips it.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from matplotlib.figure import Figure

from rareseg.callbacks import RareClassMetrics
from rareseg.core.files import write_atomically
from rareseg.core.plots import save_figure
from rareseg.core.scores import per_class_scores, summary_scores
from rareseg.datamodules import DataError, LissIVDataModule


@dataclass(frozen=True)
class AblationRow:
    """One row of the ablation table.

    Attributes:
        number: row number (1-based, the table order).
        label: short description shown in the table.
        config: file name in ``configs/ablations/``.
    """

    number: int
    label: str
    config: str


ROWS: dict[int, AblationRow] = {
    row.number: row
    for row in (
        AblationRow(1, "CE", "01-ce.yaml"),
        AblationRow(2, "weighted CE", "02-weighted-ce.yaml"),
        AblationRow(3, "Dice", "03-dice.yaml"),
        AblationRow(4, "Focal-Tversky", "04-focal-tversky.yaml"),
        AblationRow(5, "ARBT alpha_on=fp", "05-arbt-fp.yaml"),
        AblationRow(6, "ARBT alpha_on=fn", "06-arbt-fn.yaml"),
        AblationRow(7, "ARBT + SAM", "07-arbt-sam.yaml"),
        AblationRow(8, "ARBT + CASM", "08-arbt-casm.yaml"),
        AblationRow(9, "+ rare-class sampling", "09-casm-rare-sampling.yaml"),
        AblationRow(10, "+ saliency-guided sampling", "10-casm-saliency-sampling.yaml"),
        AblationRow(11, "full method (+ babysitting)", "11-full-babysitting.yaml"),
    )
}
"""The ablation rows by number."""

#: Keys every finished result JSON holds; a file without them is not finished.
RESULT_KEYS = (
    "row",
    "seed",
    "budget",
    "config_digest",
    "class_names",
    "rare_classes",
    "summary",
    "per_class",
    "train_seconds",
    "confusion_matrix",
)

#: Trains one (row, seed) and returns its test scores: ``train(row, seed, budget_file, workdir, config_dir)``.
TrainFunction = Callable[[AblationRow, int, Path, Path, Path], dict[str, Any]]


def budget_file(budget: str, config_dir: Path) -> Path:
    """The YAML of a budget: a name (``cpu-small`` -> ``<config_dir>/ablations/budget-cpu-small.yaml``) or a path.

    Raises:
        DataError: no such file.
    """
    path = Path(budget) if budget.endswith((".yaml", ".yml")) else config_dir / "ablations" / f"budget-{budget}.yaml"
    if not path.is_file():
        raise DataError(f"{path}: ablation budget file not found")
    return path


def parse_rows(text: str | None) -> list[AblationRow]:
    """Rows from ``"1,2,5"`` (``None``: all rows, in order).

    Raises:
        ValueError: a number that is not a row.
    """
    if text is None:
        return list(ROWS.values())
    try:
        numbers = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"--rows must be comma-separated row numbers, got {text!r}") from None
    unknown = [n for n in numbers if n not in ROWS]
    if unknown or not numbers:
        raise ValueError(f"unknown ablation rows {unknown or text!r}: rows are 1..{len(ROWS)}")
    return [ROWS[n] for n in numbers]


def result_path(out: Path, row: AblationRow, seed: int) -> Path:
    """Where the result JSON of ``(row, seed)`` lives."""
    return out / f"row{row.number:02d}-seed{seed}.json"


def config_digest(row: AblationRow, budget: Path, config_dir: Path) -> str:
    """SHA-256 (hex) of the recipe, row and budget YAML texts: a result is reused only while they are unchanged."""
    digest = hashlib.sha256()
    for path in (config_dir / "wetlands.yaml", config_dir / "ablations" / row.config, budget):
        digest.update(path.read_bytes())
    return digest.hexdigest()


def load_result(path: Path, digest: str | None = None) -> dict[str, Any] | None:
    """A finished result, or None when the file is missing, unreadable, partial or marked unfinished.

    With ``digest`` (see :func:`config_digest`), a result made from other config files is also None.
    """
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if (
        not isinstance(result, dict)
        or result.get("complete") is not True
        or any(key not in result for key in RESULT_KEYS)
    ):
        return None
    if digest is not None and result["config_digest"] != digest:
        return None
    return result


def prepare_budget_data(budget: Path) -> None:
    """Create the budget's data root (and its statistics) once, before any run is timed.

    Only the budget's ``data.init_args`` are used, so the budget should name ``root`` and the
    ``synth_*`` keys of the data it trains on.
    """
    init_args = (yaml.safe_load(budget.read_text()) or {}).get("data", {}).get("init_args", {})
    LissIVDataModule(**init_args)


def train_row(row: AblationRow, seed: int, budget: Path, workdir: Path, config_dir: Path) -> dict[str, Any]:
    """Fit one row with one seed in-process, test its best checkpoint, return the test scores.

    The run is ``rareseg fit --config wetlands.yaml --config <row> --config <budget>`` with
    ``seed_everything`` and the sampler seed set to ``seed``; ``train_seconds`` is the wall time of
    the fit (model construction, training and validation), in seconds.

    Returns:
        ``class_names``, ``rare_classes`` (names), ``summary`` (see
        :func:`rareseg.core.scores.summary_scores`), ``per_class`` (IoU/recall/precision/F1 per class
        name), ``confusion_matrix`` and ``train_seconds``.
    """
    from rareseg.training import run_cli

    args = [
        "fit",
        "--config", str(config_dir / "wetlands.yaml"),
        "--config", str(config_dir / "ablations" / row.config),
        "--config", str(budget),
        "--seed_everything", str(seed),
        "--data.init_args.seed", str(seed),
        "--trainer.default_root_dir", str(workdir),
        "--test_after_fit", "false",
    ]  # fmt: skip
    start = time.perf_counter()
    cli = run_cli(args)
    train_seconds = time.perf_counter() - start
    checkpoint = cli.trainer.checkpoint_callback
    cli.trainer.test(
        cli.model,
        datamodule=cli.datamodule,
        ckpt_path="best" if checkpoint is not None and checkpoint.best_model_path else None,
        verbose=False,
    )
    metrics = next(cb for cb in cli.trainer.callbacks if isinstance(cb, RareClassMetrics))
    matrix = metrics.confusion_matrix
    scores = per_class_scores(matrix)
    return {
        "class_names": metrics.class_names,
        "rare_classes": [metrics.class_names[c] for c in metrics.rare_classes],
        "summary": summary_scores(matrix, metrics.rare_classes, metrics.majority_class),
        "per_class": {
            name: {key: float(scores[key][i]) for key in ("iou", "recall", "precision", "f1")}
            for i, name in enumerate(metrics.class_names)
        },
        "confusion_matrix": matrix.tolist(),
        "train_seconds": train_seconds,
    }


def run_ablation(
    rows: Sequence[AblationRow],
    seeds: Sequence[int],
    budget: Path,
    out: Path,
    config_dir: Path = Path("configs"),
    train: TrainFunction = train_row,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Run every ``(row, seed)`` that has no finished result in ``out``; return all finished results.

    A result counts as finished when :func:`load_result` accepts it with the current
    :func:`config_digest`, so editing the recipe, a row or the budget reruns the affected runs.

    Args:
        rows: rows to run.
        seeds: seeds per row.
        budget: budget YAML applied after the row config.
        out: folder of the result JSONs (and ``runs/`` with each run's checkpoints).
        config_dir: folder holding ``wetlands.yaml`` and ``ablations/``.
        train: the per-run training function (see :data:`TrainFunction`).
        log: progress messages.

    Returns:
        The finished results in row, seed order (``row``, ``seed``, ``budget``, ``config_digest``, ``complete`` and
        the keys :func:`train_row` returns).
    """
    results = []
    for row in rows:
        for seed in seeds:
            path = result_path(out, row, seed)
            digest = config_digest(row, budget, config_dir)
            result = load_result(path, digest)
            if result is not None:
                log(f"row {row.number} seed {seed}: finished earlier, skipped ({path})")
            else:
                log(f"row {row.number} seed {seed}: training ({row.label})")
                scores = train(row, seed, budget, out / "runs" / path.stem, config_dir)
                result = (
                    {
                        "row": row.number,
                        "label": row.label,
                        "seed": seed,
                        "budget": budget.name,
                        "config_digest": digest,
                    }
                    | scores
                    | {"complete": True}
                )
                write_atomically(path, (json.dumps(result, indent=2) + "\n").encode())
                log(
                    f"row {row.number} seed {seed}: rare IoU {result['summary']['rare_iou']:.4f} in "
                    f"{result['train_seconds']:.0f} s"
                )
            results.append(result)
    return results


def aggregate(results: Sequence[dict[str, Any]]) -> dict[int, dict[str, tuple[float, float, int]]]:
    """Mean and sample standard deviation (ddof 1; NaN for one seed) over seeds of each row's headline scores.

    Scores: ``iou/<rare>`` and ``recall/<rare>`` for every rare class, ``rare_iou``, ``rare_recall``,
    ``majority_precision``, ``miou`` and ``train_seconds``. NaN scores of a seed are left out.

    Returns:
        ``{row: {score: (mean, std, seeds)}}``.
    """
    by_row: dict[int, list[dict[str, Any]]] = {}
    for result in results:
        by_row.setdefault(result["row"], []).append(result)
    table = {}
    for row, group in sorted(by_row.items()):
        values: dict[str, list[float]] = {}
        for result in group:
            for name in result["rare_classes"]:
                values.setdefault(f"iou/{name}", []).append(result["per_class"][name]["iou"])
                values.setdefault(f"recall/{name}", []).append(result["per_class"][name]["recall"])
            for key in ("rare_iou", "rare_recall", "majority_precision", "miou"):
                values.setdefault(key, []).append(result["summary"][key])
            values.setdefault("train_seconds", []).append(result["train_seconds"])
        table[row] = {key: _mean_std(samples) for key, samples in values.items()}
    return table


def write_ablation_report(results: Sequence[dict[str, Any]], report: Path, chart: Path, command: str) -> str:
    """Write the ablation table (Markdown) and its bar chart (PNG); return the Markdown.

    Args:
        results: finished results (see :func:`run_ablation`).
        report: Markdown file, e.g. ``benchmarks/ABLATION.md``.
        chart: PNG of rare-class IoU per row, linked from the report by a relative path.
        command: the command that reproduces the results.
    """
    table = aggregate(results)
    rare = list(results[0]["rare_classes"]) if results else []
    columns = [
        *(f"iou/{n}" for n in rare),
        *(f"recall/{n}" for n in rare),
        "rare_iou",
        "rare_recall",
        "majority_precision",
        "miou",
        "train_seconds",
    ]
    titles = [
        *(f"{n} IoU" for n in rare),
        *(f"{n} recall" for n in rare),
        "rare mean IoU",
        "rare mean recall",
        "majority precision",
        "mIoU",
        "train time (s)",
    ]
    budgets = sorted({result["budget"] for result in results})
    lines = [
        "# Ablation",
        "",
        "Which part of the method earns its place: each row changes one thing from the row above it",
        "(rows 1-6 compare losses with AdamW and uniform crops). Test-split scores of the best checkpoint",
        "(by validation rare-class IoU), mean ± sample standard deviation over seeds; differences",
        "smaller than those deviations are noise. Train time is the wall time of the fit on this machine.",
        "",
        f"- budget: {', '.join(budgets)}",
        f"- reproduce: `{command}`",
        "",
        "| row | setup | seeds | " + " | ".join(titles) + " |",
        "|---:|---|---:|" + "---:|" * len(titles),
    ]
    for row, scores in table.items():
        seeds = scores["train_seconds"][2]
        cells = [_mean_std_text(*scores[key][:2], digits=0 if key == "train_seconds" else 3) for key in columns]
        lines.append(f"| {row} | {ROWS[row].label} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", f"![rare-class IoU per ablation row]({Path(os.path.relpath(chart, report.parent)).as_posix()})", ""]
    markdown = "\n".join(lines)
    save_figure(_ablation_figure(table, rare), chart)
    write_atomically(report, markdown.encode())
    return markdown


def _ablation_figure(table: dict[int, dict[str, tuple[float, float, int]]], rare: Sequence[str]) -> Figure:
    keys = [*(f"iou/{n}" for n in rare), "rare_iou"]
    labels = [*(f"{n} IoU" for n in rare), "rare mean IoU"]
    rows = list(table)
    positions = np.arange(len(rows))
    width = 0.8 / max(len(keys), 1)
    figure = Figure(figsize=(2.0 + 0.8 * len(rows), 4.5))
    axes = figure.add_subplot()
    for index, (key, label) in enumerate(zip(keys, labels)):
        means = [table[row][key][0] for row in rows]
        errors = [0.0 if math.isnan(table[row][key][1]) else table[row][key][1] for row in rows]
        axes.bar(positions + (index - (len(keys) - 1) / 2) * width, means, width, yerr=errors, capsize=2, label=label)
    axes.set_xticks(positions, [f"{row}. {ROWS[row].label}" for row in rows], rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("test IoU (mean ± std over seeds)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _mean_std(samples: Sequence[float]) -> tuple[float, float, int]:
    finite = np.array([s for s in samples if s is not None and not math.isnan(s)], dtype=np.float64)
    mean = float(finite.mean()) if finite.size else float("nan")
    std = float(finite.std(ddof=1)) if finite.size > 1 else float("nan")
    return mean, std, len(samples)


def _mean_std_text(mean: float, std: float, digits: int) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.{digits}f}" if math.isnan(std) else f"{mean:.{digits}f} ± {std:.{digits}f}"
