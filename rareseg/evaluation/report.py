"""Evaluation outputs: metrics.json, report.md and PNG plots, each written atomically (write-then-rename)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from rareseg.core.files import write_atomically
from rareseg.core.plots import confusion_figure, save_figure

#: Plots written next to metrics.json.
PLOTS = ("confusion_matrix.png", "per_class.png", "pr_curves.png", "reliability.png")


def write_evaluation(scores: dict[str, Any], out: Path) -> None:
    """Write ``metrics.json``, ``report.md`` and the :data:`PLOTS` of an evaluation into ``out``.

    Args:
        scores: the dict returned by :func:`rareseg.evaluation.evaluate`.
        out: output folder (created).
    """
    write_atomically(out / "metrics.json", (json.dumps(scores, indent=2) + "\n").encode())
    save_figure(confusion_figure(scores["confusion_matrix"], _labels(scores)), out / "confusion_matrix.png")
    save_figure(per_class_figure(scores), out / "per_class.png")
    save_figure(pr_figure(scores), out / "pr_curves.png")
    save_figure(reliability_figure(scores), out / "reliability.png")
    write_atomically(out / "report.md", markdown_report(scores).encode())


def markdown_report(scores: dict[str, Any]) -> str:
    """The Markdown report of an evaluation.

    Summary of both decision rules, the per-class tables (deployed decision, then plain argmax),
    rare-class calibration, the per-scene table and the deployed confusion matrix.
    """
    decision = scores["decision"]
    thresholds = ", ".join(f"{name} {value:.2f}" for name, value in decision["thresholds"].items())
    tiles = scores.get("tiles")
    lines = [
        f"# Evaluation on the {scores['split']} split",
        "",
        f"- checkpoint: `{scores['checkpoint']}`",
        f"- data root: `{scores['data_root']}`",
        f"- scenes: {', '.join(scores['per_scene'])}",
    ]
    if tiles:
        lines.append(f"- tiles: {tiles['size']} px, overlap {tiles['overlap']} px, blended (as `rareseg infer`)")
    lines += [
        f"- deployed decision (thresholds {thresholds or 'none'}, from {decision['threshold_source']}): "
        + _summary(scores["summary"]),
        "- plain argmax: " + _summary(scores["argmax"]["summary"]),
        "",
        "## Per class, deployed decision (* rare)",
        "",
        *_class_table(scores["per_class"], set(scores["rare_classes"])),
        "",
        "## Per class, plain argmax (* rare)",
        "",
        *_class_table(scores["argmax"]["per_class"], set(scores["rare_classes"])),
        "",
        "## Rare-class probabilities",
        "",
        "| class | ECE | average precision |",
        "|---|---:|---:|",
    ]
    for name, table in scores["rare_probabilities"].items():
        lines.append(f"| {name} | {_fmt(table['ece'])} | {_fmt(table['average_precision'])} |")
    first = next(iter(scores["per_scene"].values()), {})
    names = [key for key, value in first.items() if not isinstance(value, dict)]
    lines += [
        "",
        "## Per scene, deployed decision",
        "",
        "| scene | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for stem, row in scores["per_scene"].items():
        lines.append(f"| {stem} | " + " | ".join(_fmt(row[key]) for key in names) + " |")
    lines += ["", "## Plots", ""] + [f"![{plot[:-4]}]({plot})" for plot in PLOTS]
    lines += ["", "Confusion matrix, deployed decision (rows = truth, columns = prediction, pixels):", "", "```"]
    lines += [" ".join(f"{count:>10d}" for count in row) for row in scores["confusion_matrix"]]
    return "\n".join([*lines, "```", ""])


def _summary(summary: dict[str, float | None]) -> str:
    return ", ".join(f"{key} {_fmt(value)}" for key, value in summary.items())


def _class_table(per_class: dict[str, dict[str, Any]], rare: set[str]) -> list[str]:
    lines = ["| class | IoU | recall | precision | F1 | pixels |", "|---|---:|---:|---:|---:|---:|"]
    for name, row in per_class.items():
        label = f"{name}*" if name in rare else name
        scores = " | ".join(_fmt(row[key]) for key in ("iou", "recall", "precision", "f1"))
        lines.append(f"| {label} | {scores} | {int(row['support'])} |")
    return lines


def per_class_figure(scores: dict[str, Any]) -> Figure:
    """Grouped bars of IoU, recall, precision and F1 per class (undefined scores drawn as 0)."""
    keys = ("iou", "recall", "precision", "f1")
    labels = _labels(scores)
    positions = np.arange(len(labels))
    width = 0.8 / len(keys)
    figure = Figure(figsize=(2.0 + 1.1 * len(labels), 4.0))
    axes = figure.add_subplot()
    for index, key in enumerate(keys):
        values = [row[key] or 0.0 for row in scores["per_class"].values()]
        axes.bar(positions + (index - (len(keys) - 1) / 2) * width, values, width, label=key)
    axes.set_xticks(positions, labels, rotation=30, ha="right")
    axes.set_ylim(0, 1)
    axes.set_ylabel("score")
    axes.legend(ncol=len(keys), fontsize=8, loc="upper center")
    figure.tight_layout()
    return figure


def pr_figure(scores: dict[str, Any]) -> Figure:
    """Precision-recall curves of the rare classes from their binned probabilities."""
    figure = Figure(figsize=(5.0, 4.5))
    axes = figure.add_subplot()
    for name, table in scores["rare_probabilities"].items():
        recall = np.array([np.nan if v is None else v for v in table["pr_recall"]])
        precision = np.array([np.nan if v is None else v for v in table["pr_precision"]])
        axes.plot(recall, precision, marker=".", markersize=3, label=f"{name} (AP {_fmt(table['average_precision'])})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1.02)
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def reliability_figure(scores: dict[str, Any]) -> Figure:
    """Reliability diagram of the rare classes: observed frequency against mean predicted probability."""
    figure = Figure(figsize=(5.0, 4.5))
    axes = figure.add_subplot()
    axes.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for name, table in scores["rare_probabilities"].items():
        filled = [(c, f) for c, f in zip(table["confidence"], table["frequency"]) if c is not None]
        if filled:
            confidence, frequency = zip(*filled)
            axes.plot(confidence, frequency, marker="o", label=f"{name} (ECE {_fmt(table['ece'])})")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed frequency")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _labels(scores: dict[str, Any]) -> list[str]:
    rare = set(scores["rare_classes"])
    return [f"{name}*" if name in rare else name for name in scores["class_names"]]


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"
