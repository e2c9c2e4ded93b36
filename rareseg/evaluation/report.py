"""Evaluation outputs: metrics.json, report.md and PNG plots, each written atomically."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

#: Plots written next to metrics.json.
PLOTS = ("confusion_matrix.png", "per_class.png", "pr_curves.png", "reliability.png")


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the complete new one, never a partial write.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def save_figure(figure: Figure, path: Path) -> None:
    """Render a matplotlib figure to a PNG file atomically."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())


def write_evaluation(scores: dict[str, Any], out: Path) -> None:
    """Write ``metrics.json``, ``report.md`` and the :data:`PLOTS` of an evaluation into ``out``.

    Args:
        scores: the dict returned by :func:`rareseg.evaluation.evaluate`.
        out: output folder (created).
    """
    write_atomically(out / "metrics.json", (json.dumps(scores, indent=2) + "\n").encode())
    save_figure(confusion_figure(scores), out / "confusion_matrix.png")
    save_figure(per_class_figure(scores), out / "per_class.png")
    save_figure(pr_figure(scores), out / "pr_curves.png")
    save_figure(reliability_figure(scores), out / "reliability.png")
    write_atomically(out / "report.md", markdown_report(scores).encode())


def markdown_report(scores: dict[str, Any]) -> str:
    """The Markdown report of an evaluation: summary, per-class table, rare-class calibration, per-scene table."""
    rare = set(scores["rare_classes"])
    lines = [
        f"# Evaluation on the {scores['split']} split",
        "",
        f"- checkpoint: `{scores['checkpoint']}`",
        f"- data root: `{scores['data_root']}`",
        f"- scenes: {', '.join(scores['per_scene'])}",
        "- " + ", ".join(f"{key} {_fmt(value)}" for key, value in scores["summary"].items()),
        "",
        "## Per class (* rare)",
        "",
        "| class | IoU | recall | precision | F1 | pixels |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in scores["per_class"].items():
        label = f"{name}*" if name in rare else name
        lines.append(
            f"| {label} | {_fmt(row['iou'])} | {_fmt(row['recall'])} | {_fmt(row['precision'])} | {_fmt(row['f1'])} | {int(row['support'])} |"
        )
    lines += ["", "## Rare-class probabilities", "", "| class | ECE | average precision |", "|---|---:|---:|"]
    for name, table in scores["rare_probabilities"].items():
        lines.append(f"| {name} | {_fmt(table['ece'])} | {_fmt(table['average_precision'])} |")
    names = list(next(iter(scores["per_scene"].values()), {}))
    lines += ["", "## Per scene", "", "| scene | " + " | ".join(names) + " |", "|---|" + "---:|" * len(names)]
    for stem, row in scores["per_scene"].items():
        lines.append(f"| {stem} | " + " | ".join(_fmt(row[key]) for key in names) + " |")
    lines += ["", "## Plots", ""] + [f"![{plot[:-4]}]({plot})" for plot in PLOTS]
    lines += ["", "Confusion matrix (rows = truth, columns = prediction, pixels):", "", "```"]
    lines += [" ".join(f"{count:>10d}" for count in row) for row in scores["confusion_matrix"]]
    return "\n".join([*lines, "```", ""])


def confusion_figure(scores: dict[str, Any]) -> Figure:
    """Confusion matrix, rows normalised to recall, annotated with the fraction of each truth row."""
    matrix = np.asarray(scores["confusion_matrix"], dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    labels = _labels(scores)
    size = 2.0 + 0.7 * len(labels)
    figure = Figure(figsize=(size + 1.2, size))
    axes = figure.add_subplot()
    shown = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    axes.set_yticks(range(len(labels)), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    for row, column in np.ndindex(normalised.shape):
        value = normalised[row, column]
        axes.text(
            column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color="white" if value > 0.5 else "black"
        )
    figure.colorbar(shown, ax=axes, label="fraction of truth row")
    figure.tight_layout()
    return figure


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
