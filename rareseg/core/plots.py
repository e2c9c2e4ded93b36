"""Matplotlib figures shared by the ``RareClassMetrics`` callback and the ``rareseg evaluate`` report.

Figures are built on matplotlib's object API (no pyplot state), so they are safe in any thread.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from rareseg.core.files import write_atomically

#: Colour of pixels without a class (e.g. the ignore index) in :func:`colorize`.
IGNORE_COLOR = (0, 0, 0)


def confusion_figure(confusion_matrix: np.ndarray, labels: Sequence[str]) -> Figure:
    """Confusion matrix with rows normalised to recall, each cell annotated with its fraction of the truth row.

    Args:
        confusion_matrix: ``(K, K)`` pixel counts, rows = truth, columns = prediction.
        labels: ``K`` class labels for both axes.
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    count = len(labels)
    size = 1.5 + 0.6 * count
    figure = Figure(figsize=(size + 1, size), dpi=100)
    axes = figure.add_subplot()
    shown = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
    axes.set_xticks(range(count), labels, rotation=45, ha="right")
    axes.set_yticks(range(count), labels)
    axes.set_xlabel("prediction")
    axes.set_ylabel("truth")
    for row, column in np.ndindex(normalised.shape):
        value = normalised[row, column]
        color = "white" if value > 0.5 else "black"
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
    figure.colorbar(shown, ax=axes, label="fraction of truth row")
    figure.tight_layout()
    return figure


def stretch_to_rgb(image: np.ndarray, low: float = 2.0, high: float = 98.0) -> np.ndarray:
    """Display image of the first three bands, each stretched between its percentiles.

    ``out = clip((x - p_low) / (p_high - p_low), 0, 1)`` per band; a constant band becomes 0.
    A single-band image is shown in grey; with two bands the first is repeated.

    Args:
        image: ``(C, H, W)`` in any units (e.g. normalised reflectance).
        low: lower percentile (0-100).
        high: upper percentile (0-100).

    Returns:
        ``(H, W, 3)`` float in ``[0, 1]``.
    """
    count = image.shape[0]
    indices = (0, 1, 2) if count >= 3 else (0, 1, 0) if count == 2 else (0, 0, 0)
    out = []
    for index in indices:
        band = np.asarray(image[index], dtype=np.float64)
        finite = band[np.isfinite(band)]
        lo, hi = np.percentile(finite, [low, high]) if finite.size else (0.0, 0.0)
        scaled = np.zeros_like(band) if hi <= lo else (band - lo) / (hi - lo)
        out.append(np.clip(np.nan_to_num(scaled), 0.0, 1.0))
    return np.stack(out, axis=-1)


def colorize(mask: np.ndarray, palette: np.ndarray) -> np.ndarray:
    """Colour a class-id mask.

    Args:
        mask: ``(H, W)`` integer class ids; ids outside ``[0, len(palette))`` (e.g. the ignore
            index) are drawn in :data:`IGNORE_COLOR`.
        palette: ``(K, 3)`` uint8 RGB colour per class id.

    Returns:
        ``(H, W, 3)`` uint8.
    """
    mask = np.asarray(mask)
    valid = (mask >= 0) & (mask < len(palette))
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    out[:] = IGNORE_COLOR
    out[valid] = palette[mask[valid]]
    return out


def samples_figure(samples: Sequence[dict[str, np.ndarray]], palette: np.ndarray, class_names: Sequence[str]) -> Figure:
    """Grid of samples, one row each: image | truth | prediction | saliency, with a class legend.

    Args:
        samples: dicts with ``target`` and ``preds`` ``(H, W)`` class ids and optionally ``image``
            ``(C, H, W)`` (drawn with :func:`stretch_to_rgb`) and ``saliency`` ``(H, W)`` in ``[0, 1]``;
            the keys of the first sample choose the columns.
        palette: ``(K, 3)`` uint8 RGB colour per class id.
        class_names: ``K`` names for the legend.
    """
    columns = [key for key in ("image", "target", "preds", "saliency") if key in samples[0]]
    titles = {"image": "image", "target": "truth", "preds": "prediction", "saliency": "saliency"}
    rows = len(samples)
    figure = Figure(figsize=(2.6 * len(columns), 2.6 * rows + 0.6), dpi=100)
    grid = figure.subplots(rows, len(columns), squeeze=False)
    for row, sample in enumerate(samples):
        for column, key in enumerate(columns):
            axes = grid[row][column]
            axes.set_axis_off()
            if row == 0:
                axes.set_title(titles[key])
            if key == "image":
                axes.imshow(stretch_to_rgb(sample["image"]))
            elif key == "saliency":
                axes.imshow(sample["saliency"], vmin=0, vmax=1, cmap="magma")
            else:
                axes.imshow(colorize(sample[key], palette), interpolation="nearest")
    handles = [Patch(color=palette[i] / 255, label=name) for i, name in enumerate(class_names)]
    figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
    figure.tight_layout(rect=(0, 0.6 / (2.6 * rows + 0.6), 1, 1))
    return figure


def figure_pixels(figure: Figure) -> np.ndarray:
    """The rendered figure as ``(H, W, 3)`` uint8 RGB, for loggers that take images."""
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def save_figure(figure: Figure, path: Path) -> None:
    """Render a figure to a PNG file (100 dpi) with :func:`~rareseg.core.files.write_atomically`."""
    FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    write_atomically(path, buffer.getvalue())
