"""The ablation report: paired differences with bootstrap intervals, verdicts and learning curves.

:func:`write_ablation_report` turns the finished result JSONs of :mod:`rareseg.evaluation.ablation`
into a Markdown page and PNG figures. Scores come from the per-scene test confusion matrices of each
run, pooled over the scenes; differences between rows are paired by seed (see
:mod:`rareseg.evaluation.paired`). The headline uses the decision users get from ``rareseg infer``
(``deployed``); the plain argmax is reported beside it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rareseg.core.files import write_atomically
from rareseg.core.plots import save_figure
from rareseg.evaluation.ablation import SCORED_RULES, AblationRow
from rareseg.evaluation.paired import Interval, paired_interval, score_functions

#: Scores whose paired differences are reported (per rare class IoU is added).
DIFFERENCE_SCORES = ("rare_iou", "rare_recall", "majority_precision")
#: Share of the steps at the end of a run over which convergence is judged.
CONVERGENCE_TAIL = 0.2
#: Largest gain of the best validation rare IoU over that tail that still counts as converged.
CONVERGENCE_GAIN = 0.01


@dataclass
class RowRuns:
    """The finished runs of one row, in seed order.

    Attributes:
        row: the row.
        seeds: the seeds that finished.
        matrices: per decision rule, ``(S, J, K, K)`` test confusion matrices (seed x scene).
        results: the result dicts, in seed order.
    """

    row: AblationRow
    seeds: list[int]
    matrices: dict[str, np.ndarray]
    results: list[dict[str, Any]]


def collect_runs(results: Sequence[dict[str, Any]], rows: Mapping[int, AblationRow]) -> dict[int, RowRuns]:
    """Group finished results by row; every run must have scored the same test scenes.

    Raises:
        ValueError: runs scored on different scenes or classes (mixed budgets or data roots).
    """
    grouped: dict[int, list[dict[str, Any]]] = {}
    for result in sorted(results, key=lambda r: (r["row"], r["seed"])):
        grouped.setdefault(result["row"], []).append(result)
    scenes = classes = None
    collected = {}
    scored = [d for d in SCORED_RULES if all(d in result["scoring"] for result in results)]
    for number, group in sorted(grouped.items()):
        matrices = {}
        for decision in scored:
            stacked = []
            for result in group:
                per_scene = result["scoring"][decision]
                if scenes is None:
                    scenes, classes = sorted(per_scene), list(result["class_names"])
                if sorted(per_scene) != scenes or list(result["class_names"]) != classes:
                    raise ValueError(
                        f"row {number} seed {result['seed']}: scored on other scenes or classes than the other runs"
                    )
                stacked.append([per_scene[stem] for stem in scenes])
            matrices[decision] = np.asarray(stacked, dtype=np.int64)
        collected[number] = RowRuns(rows[number], [r["seed"] for r in group], matrices, group)
    return collected


def _paired(first: RowRuns, second: RowRuns, decision: str) -> tuple[np.ndarray, np.ndarray]:
    """Both rows' matrices restricted to their common seeds, in the same order."""
    common = [s for s in first.seeds if s in second.seeds]

    def pick(runs: RowRuns) -> np.ndarray:
        return runs.matrices[decision][[runs.seeds.index(s) for s in common]]

    return pick(first), pick(second)


def convergence(result: dict[str, Any], key: str = "val/rare_iou", tail: float = CONVERGENCE_TAIL) -> float:
    """Gain of the best-so-far validation score over the last ``tail`` share of a run's steps.

    ``max(score up to the end) - max(score up to step (1 - tail) * last step)``: what the tested
    (best) checkpoint gained in the run's last stretch. NaN when the curve has no point before that.
    """
    points = [(p["step"], p[key]) for p in result["curve"] if key in p and math.isfinite(p[key])]
    if not points:
        return float("nan")
    cut = (1 - tail) * points[-1][0]
    before = [value for step, value in points if step <= cut]
    if not before:
        return float("nan")
    return max(value for _, value in points) - max(before)


def best_peer(runs: Mapping[int, RowRuns], scores: Mapping[str, Any], decision: str) -> int | None:
    """The peer row (``peer: true``) with the highest mean rare IoU under ``decision``; None without peers."""
    peers = [number for number, r in runs.items() if r.row.peer]
    if not peers:
        return None
    means = {number: float(scores["rare_iou"](runs[number].matrices[decision].sum(axis=1)).mean()) for number in peers}
    return max(means, key=means.get)


def write_ablation_report(
    results: Sequence[dict[str, Any]],
    rows: Mapping[int, AblationRow],
    report: Path,
    figures: Path,
    command: str,
    context: Sequence[str] = (),
    curve_rows: Sequence[int] = (1, 11),
    replicates: int = 4000,
    analysis: str | None = None,
) -> str:
    """Write the ablation report (Markdown) and its figures (PNG); return the Markdown.

    Args:
        results: finished results (see :func:`rareseg.evaluation.ablation.run_ablation`).
        rows: every row by number (labels, peers, comparisons).
        report: Markdown file, e.g. ``benchmarks/ABLATION.md``.
        figures: folder of the PNGs (linked by relative paths).
        command: the command that reproduces the results.
        context: extra lines for the header (machine, date, wall time).
        curve_rows: rows whose learning curves are drawn (one line per seed) and checked for convergence.
        replicates: bootstrap replicates per interval.
        analysis: Markdown written by hand (what the numbers mean), placed after the introduction.
    """
    runs = collect_runs(results, rows)
    if not runs:
        raise ValueError("no finished ablation results to report")
    first = next(iter(runs.values())).results[0]
    names = list(first["class_names"])
    rare = [names.index(n) for n in first["rare_classes"]]
    pooled_truth = sum(r.matrices["deployed"].sum(axis=(0, 1)) for r in runs.values()).sum(axis=1)
    majority = int(np.argmax(pooled_truth))
    scores = score_functions(rare, majority, names)
    rare_names = [names[c] for c in rare]
    lines = [
        "# Ablation",
        "",
        "Which part of the method earns its place. Each row changes one thing from the row it names in",
        "*compared with*; *peer* rows are published recipes, the comparison a new method must win. Every",
        "run is scored on the same test scenes by its best checkpoint (by validation rare-class IoU).",
        "",
        "**Headline: the deployed decision**, exactly what `rareseg infer` writes (overlapping tiles blended,",
        "the checkpoint's calibrated rare-class thresholds). The plain argmax is reported beside it.",
        "Scores pool each run's test scenes; values are means over seeds with a 95 % percentile-bootstrap",
        "interval over seeds x test scenes; differences are paired by seed (same data, initial weights and",
        "crop order where the rows allow it). A part *helps* only where the interval of its difference",
        "excludes 0.",
        "",
        f"- reproduce: `{command}`",
        *(f"- {line}" for line in context),
        f"- majority class (precision guard): {names[majority]}; rare classes: {', '.join(rare_names)}",
        "",
    ]
    if analysis:
        lines += [analysis.strip(), ""]
    lines += _convergence_section(runs, curve_rows, figures, report, rare_names)
    scored = next(iter(runs.values())).matrices
    for decision in SCORED_RULES:
        if decision in scored:
            lines += _score_table(runs, scores, decision, rare_names, replicates)
    lines += _difference_section(runs, scores, "deployed", rare_names, replicates)
    lines += _verdicts(runs, scores, "deployed", replicates)
    if "calibrated" in scored:
        lines += _rule_section(runs, scores, replicates)
    chart = figures / "ablation.png"
    save_figure(_bar_chart(runs, scores, rare_names, replicates), chart)
    lines += ["", f"![rare-class IoU per ablation row]({_relative(chart, report)})", ""]
    markdown = "\n".join(lines)
    write_atomically(report, markdown.encode())
    return markdown


def _relative(path: Path, report: Path) -> str:
    return Path(os.path.relpath(path, report.parent)).as_posix()


def _cell(interval: Interval, digits: int = 3, signed: bool = False) -> str:
    if math.isnan(interval.value):
        return "n/a"
    sign = "+" if signed else ""
    return f"{interval.value:{sign}.{digits}f} [{interval.low:{sign}.{digits}f}, {interval.high:{sign}.{digits}f}]"


def _score_table(
    runs: Mapping[int, RowRuns], scores: Mapping[str, Any], decision: str, rare_names: Sequence[str], replicates: int
) -> list[str]:
    keys = [*(f"iou/{n}" for n in rare_names), "rare_iou", "rare_recall", "majority_precision", "miou"]
    titles = [*(f"{n} IoU" for n in rare_names), "rare IoU", "rare recall", "majority precision", "mIoU"]
    heading = {
        "deployed": "Deployed decision (headline)",
        "argmax": "Argmax (beside the headline)",
        "calibrated": "Calibrated decision rule (the same thresholds, a rare class only where it reaches them)",
    }[decision]
    lines = [
        f"## {heading}: test scores",
        "",
        "| row | setup | peer | seeds | " + " | ".join(titles) + " | train min/run |",
        "|---:|---|:-:|---:|" + "---:|" * len(titles) + "---:|",
    ]
    for number, run in runs.items():
        cells = [_cell(paired_interval(run.matrices[decision], None, scores[k], replicates)) for k in keys]
        minutes = np.mean([r["train_seconds"] for r in run.results]) / 60
        peer = "yes" if run.row.peer else ""
        lines.append(
            f"| {number} | {run.row.label} | {peer} | {len(run.seeds)} | " + " | ".join(cells) + f" | {minutes:.1f} |"
        )
    return [*lines, ""]


def _difference_section(
    runs: Mapping[int, RowRuns], scores: Mapping[str, Any], decision: str, rare_names: Sequence[str], replicates: int
) -> list[str]:
    peer = best_peer(runs, scores, decision)
    keys = ["rare_iou", *(f"iou/{n}" for n in rare_names), "rare_recall", "majority_precision"]
    titles = ["Δ rare IoU", *(f"Δ {n} IoU" for n in rare_names), "Δ rare recall", "Δ majority precision"]
    lines = []
    references = [(1, "row 1 (CE)")] + ([(peer, f"the best peer, row {peer} ({runs[peer].row.label})")] if peer else [])
    for reference, name in references:
        if reference not in runs:
            continue
        lines += [
            f"## Paired differences against {name}, deployed decision",
            "",
            "| row | setup | seeds | " + " | ".join(titles) + " | verdict (rare IoU) |",
            "|---:|---|---:|" + "---:|" * len(titles) + "---|",
        ]
        for number, run in runs.items():
            if number == reference:
                continue
            first, second = _paired(run, runs[reference], decision)
            if len(first) == 0:
                continue
            intervals = [paired_interval(first, second, scores[k], replicates) for k in keys]
            cells = [_cell(i, signed=True) for i in intervals]
            lines.append(
                f"| {number} | {run.row.label} | {len(first)} | " + " | ".join(cells) + f" | {intervals[0].verdict} |"
            )
        lines.append("")
    return lines


def _verdicts(runs: Mapping[int, RowRuns], scores: Mapping[str, Any], decision: str, replicates: int) -> list[str]:
    lines = [
        "## Verdict per part (each row against the row it changes one thing from)",
        "",
        "| part (row vs row) | Δ rare IoU | Δ majority precision | verdict |",
        "|---|---:|---:|---|",
    ]
    for number, run in runs.items():
        reference = run.row.compare
        if reference is None or reference not in runs:
            continue
        first, second = _paired(run, runs[reference], decision)
        if len(first) == 0:
            continue
        rare_iou = paired_interval(first, second, scores["rare_iou"], replicates)
        precision = paired_interval(first, second, scores["majority_precision"], replicates)
        lines.append(
            f"| {run.row.label} ({number} vs {reference}) | {_cell(rare_iou, signed=True)} | "
            f"{_cell(precision, signed=True)} | {rare_iou.verdict} |"
        )
    return [*lines, ""]


def _rule_section(runs: Mapping[int, RowRuns], scores: Mapping[str, Any], replicates: int) -> list[str]:
    """Per row, the calibrated rule minus the deployed one on the same checkpoints (paired by seed and scene)."""
    lines = [
        "## The calibrated rule against the deployed one (same checkpoints and thresholds)",
        "",
        "| row | setup | seeds | Δ rare IoU | Δ rare recall | Δ majority precision | verdict (rare IoU) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for number, run in runs.items():
        pair = run.matrices["calibrated"], run.matrices["deployed"]
        intervals = [paired_interval(*pair, scores[k], replicates) for k in DIFFERENCE_SCORES]
        cells = " | ".join(_cell(i, signed=True) for i in intervals)
        lines.append(f"| {number} | {run.row.label} | {len(run.seeds)} | {cells} | {intervals[0].verdict} |")
    return [*lines, ""]


def _convergence_section(
    runs: Mapping[int, RowRuns], curve_rows: Sequence[int], figures: Path, report: Path, rare_names: Sequence[str]
) -> list[str]:
    shown = [n for n in curve_rows if n in runs]
    if not shown:
        return []
    lines = [
        "## Convergence",
        "",
        f"Criterion: the best validation rare IoU gains less than {CONVERGENCE_GAIN:.2f} over the last",
        f"{CONVERGENCE_TAIL:.0%} of the steps (the tested checkpoint is the best one).",
        "",
        "| row | setup | gain over the last 20 % per seed | largest | converged |",
        "|---:|---|---|---:|---|",
    ]
    for number in shown:
        gains = [convergence(r) for r in runs[number].results]
        largest = max(gains)
        text = ", ".join(f"{g:.3f}" for g in gains)
        lines.append(
            f"| {number} | {runs[number].row.label} | {text} | {largest:.3f} | "
            f"{'yes' if largest < CONVERGENCE_GAIN else 'no'} |"
        )
    curves = figures / "learning_curves.png"
    wetland = rare_names[-1]
    save_figure(_learning_curves(runs, shown, wetland), curves)
    return [*lines, "", f"![validation learning curves]({_relative(curves, report)})", ""]


def _learning_curves(runs: Mapping[int, RowRuns], shown: Sequence[int], rare_name: str) -> Figure:
    figure = Figure(figsize=(11, 4.2))
    panels = figure.subplots(1, 2)
    colours = ["tab:blue", "tab:red", "tab:green", "tab:purple", "tab:orange"]
    for colour, number in zip(colours, shown):
        for index, result in enumerate(runs[number].results):
            label = f"{number}. {runs[number].row.label}" if index == 0 else None
            for panel, key in zip(panels, ("val/rare_iou", f"val/recall/{rare_name}")):
                points = [(p["step"], p[key]) for p in result["curve"] if key in p]
                if points:
                    steps, values = zip(*points)
                    panel.plot(steps, values, color=colour, alpha=0.75, linewidth=1.2, label=label)
    for panel, title in zip(panels, ("validation rare-class IoU", f"validation {rare_name} recall")):
        panel.set_xlabel("optimiser step")
        panel.set_title(title + " (one line per seed)")
        panel.grid(alpha=0.3)
    panels[0].legend(fontsize=8)
    figure.tight_layout()
    return figure


def _bar_chart(
    runs: Mapping[int, RowRuns], scores: Mapping[str, Any], rare_names: Sequence[str], replicates: int
) -> Figure:
    keys = [*(f"iou/{n}" for n in rare_names), "rare_iou"]
    labels = [*(f"{n} IoU" for n in rare_names), "rare mean IoU"]
    numbers = list(runs)
    positions = np.arange(len(numbers))
    width = 0.8 / len(keys)
    figure = Figure(figsize=(2.0 + 0.75 * len(numbers), 4.8))
    axes = figure.add_subplot()
    for index, (key, label) in enumerate(zip(keys, labels)):
        intervals = [paired_interval(runs[n].matrices["deployed"], None, scores[key], replicates) for n in numbers]
        means = np.array([i.value for i in intervals])
        errors = np.array([[i.value - i.low for i in intervals], [i.high - i.value for i in intervals]])
        offset = (index - (len(keys) - 1) / 2) * width
        axes.bar(positions + offset, means, width, yerr=errors, capsize=2, label=label)
    axes.set_xticks(positions, [f"{n}. {runs[n].row.label}" for n in numbers], rotation=35, ha="right", fontsize=8)
    axes.set_ylabel("test IoU, deployed decision (mean, 95 % CI)")
    axes.set_ylim(bottom=0)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure
