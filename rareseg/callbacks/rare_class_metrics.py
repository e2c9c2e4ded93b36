"""RareClassMetrics: per-class and rare-class segmentation scores from a confusion matrix, plus figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from torchmetrics.classification import MulticlassConfusionMatrix
from typing_extensions import override

from rareseg.callbacks._contract import resolve_class_ids, step_output

DEFAULT_PALETTE: tuple[str, ...] = (
    "#e6c229",  # yellow
    "#a0522d",  # brown
    "#1b7837",  # dark green
    "#d7301f",  # red
    "#2166ac",  # blue
    "#35b5a8",  # teal
    "#984ea3",  # purple
    "#ff7f00",  # orange
    "#f781bf",  # pink
    "#999999",  # grey
    "#a6d96a",  # light green
    "#80b1d3",  # light blue
)
"""Class colours used when ``class_colors`` is not given, cycled for more classes."""

IGNORE_COLOR = (0, 0, 0)


def per_class_scores(confusion_matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class scores of a confusion matrix.

    With ``TP_c = M[c, c]``, ``T_c = sum_j M[c, j]`` (pixels whose truth is ``c``) and
    ``P_c = sum_i M[i, c]`` (pixels predicted ``c``):
    ``recall = TP/T``, ``precision = TP/P``, ``iou = TP/(T + P - TP)``, ``f1 = 2 TP/(T + P)``.
    A score whose denominator is 0 is NaN.

    Args:
        confusion_matrix: ``(K, K)`` pixel counts, rows = truth, columns = prediction.

    Returns:
        ``{"iou", "recall", "precision", "f1", "support"}``, each ``(K,)`` float64;
        ``support`` is ``T_c``.
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "iou": true_positive / (support + predicted - true_positive),
            "recall": true_positive / support,
            "precision": true_positive / predicted,
            "f1": 2 * true_positive / (support + predicted),
            "support": support,
        }


def summary_scores(
    confusion_matrix: np.ndarray, rare_classes: Sequence[int], majority_class: int | None = None
) -> dict[str, float]:
    """The headline scores of a confusion matrix.

    Args:
        confusion_matrix: ``(K, K)`` pixel counts, rows = truth, columns = prediction.
        rare_classes: ids of the rare classes.
        majority_class: id whose precision is the guard; ``None`` picks the class with the most
            truth pixels.

    Returns:
        ``rare_recall`` and ``rare_iou`` (means over rare classes), ``miou`` (mean IoU over all
        classes) and ``majority_precision``; means skip NaN scores and are NaN when all are NaN.
    """
    scores = per_class_scores(confusion_matrix)
    rare = list(rare_classes)
    majority = int(np.argmax(scores["support"])) if majority_class is None else majority_class
    return {
        "rare_recall": _nanmean(scores["recall"][rare]),
        "rare_iou": _nanmean(scores["iou"][rare]),
        "miou": _nanmean(scores["iou"]),
        "majority_precision": float(scores["precision"][majority]),
    }


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
            index) are drawn black.
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


class RareClassMetrics(Callback):
    r"""Per-class IoU/recall/precision/F1 and rare-class summaries for validation and test.

    Reads ``outputs[preds_key]`` ``(B, H, W)`` class ids and ``outputs[target_key]`` ``(B, H, W)``
    (``ignore_index`` pixels skipped) from what ``validation_step``/``test_step`` return, and
    accumulates a ``torchmetrics`` confusion matrix on the module's device. At epoch end the matrix
    is summed over ranks and these are logged (``<stage>`` is ``val`` or ``test``) with
    ``sync_dist=True`` (identical on all ranks, so the values are exact under DDP):

    * ``<stage>/iou/<name>``, ``<stage>/recall/<name>``, ``<stage>/precision/<name>``,
      ``<stage>/f1/<name>`` for every class (see :func:`per_class_scores`; NaN when undefined);
    * ``<stage>/rare_recall``, ``<stage>/rare_iou``, ``<stage>/miou``, ``<stage>/majority_precision``
      (see :func:`summary_scores`).

    They are logged from ``on_*_epoch_end``, so ``ModelCheckpoint``/``EarlyStopping``/``Babysitter``
    can monitor them (those read ``trainer.callback_metrics`` in ``on_validation_end`` or
    ``on_train_epoch_end``, after Lightning has gathered epoch-end logs).

    Outside the sanity check, rank zero also sends a confusion-matrix figure (rows normalised to
    recall) and a grid of up to ``log_images`` samples -- image | truth | prediction, plus the
    saliency (maximum over its ``R`` maps) when ``outputs[saliency_key]`` ``(B, R, H, W)`` exists --
    to every W&B or TensorBoard logger as ``<stage>/confusion_matrix`` and ``<stage>/samples``.
    The image is ``outputs[image_key]`` ``(B, C, H, W)``, first three bands stretched per band
    (:func:`stretch_to_rgb`); without it the image column is left out. Other loggers get no figures.

    Args:
        class_names: names of classes ``0..K-1`` (class ids index this list).
        rare_classes: rare class ids or names.
        ignore_index: target value of pixels that are not scored.
        log_images: samples per epoch in the figure (``0`` for none).
        majority_class: id or name whose precision is ``majority_precision``; ``None`` takes the
            class with the most truth pixels in the epoch.
        class_colors: RGB colour (0-255) per class; ``None`` uses :data:`DEFAULT_PALETTE`.
        preds_key: output key of the predicted class ids.
        target_key: output key of the truth.
        image_key: output key of the input image.
        saliency_key: output key of the saliency maps.

    Attributes:
        confusion_matrix: ``(K, K)`` int64 numpy counts of the last finished epoch, or ``None``.

    Raises:
        ValueError: bad arguments (at construction), or a step output without ``preds``/``target``.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        rare_classes: Sequence[int | str],
        ignore_index: int = 255,
        log_images: int = 4,
        majority_class: int | str | None = None,
        class_colors: Sequence[Sequence[int]] | None = None,
        preds_key: str = "preds",
        target_key: str = "target",
        image_key: str = "image",
        saliency_key: str = "saliency",
    ) -> None:
        super().__init__()
        if len(class_names) < 2:
            raise ValueError(f"RareClassMetrics needs at least 2 class names, got {list(class_names)}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"RareClassMetrics class_names must be unique, got {list(class_names)}")
        if log_images < 0:
            raise ValueError(f"RareClassMetrics log_images must be >= 0, got {log_images}")
        if 0 <= ignore_index < len(class_names):
            raise ValueError(f"RareClassMetrics ignore_index {ignore_index} is a class id (0..{len(class_names) - 1})")
        self.class_names = list(class_names)
        self.rare_classes = resolve_class_ids(rare_classes, self.class_names, "RareClassMetrics", "rare_classes")
        if not self.rare_classes:
            raise ValueError("RareClassMetrics needs at least one rare class")
        self.majority_class = (
            None
            if majority_class is None
            else resolve_class_ids([majority_class], self.class_names, "RareClassMetrics", "majority_class")[0]
        )
        self.palette = _palette(len(self.class_names), class_colors)
        self.ignore_index = ignore_index
        self.log_images = log_images
        self.preds_key = preds_key
        self.target_key = target_key
        self.image_key = image_key
        self.saliency_key = saliency_key
        self.confusion_matrix: np.ndarray | None = None
        self._confmat = MulticlassConfusionMatrix(num_classes=len(self.class_names), ignore_index=ignore_index)
        self._samples: list[dict[str, np.ndarray]] = []

    def per_class_table(self) -> str:
        """Fixed-width table of the last epoch's per-class scores (rare classes starred).

        Raises:
            RuntimeError: no epoch has finished yet.
        """
        if self.confusion_matrix is None:
            raise RuntimeError("RareClassMetrics has no confusion matrix yet: run validation or test first")
        scores = per_class_scores(self.confusion_matrix)
        width = max(len(name) for name in self.class_names) + 2
        lines = [f"{'class':<{width}} {'IoU':>7} {'recall':>7} {'prec.':>7} {'F1':>7} {'pixels':>12}"]
        for class_id, name in enumerate(self.class_names):
            label = f"{name}*" if class_id in self.rare_classes else name
            values = " ".join(f"{scores[key][class_id]:7.4f}" for key in ("iou", "recall", "precision", "f1"))
            lines.append(f"{label:<{width}} {values} {int(scores['support'][class_id]):12d}")
        summary = summary_scores(self.confusion_matrix, self.rare_classes, self.majority_class)
        lines.append("* rare; " + ", ".join(f"{key} {value:.4f}" for key, value in summary.items()))
        return "\n".join(lines)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start(pl_module)

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start(pl_module)

    @override
    def on_validation_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end(trainer, outputs, "validation")

    @override
    def on_test_batch_end(
        self,
        trainer: pl.Trainer,
        pl_module: pl.LightningModule,
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        self._batch_end(trainer, outputs, "test")

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "val")

    @override
    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_end(trainer, pl_module, "test")

    def _epoch_start(self, pl_module: pl.LightningModule) -> None:
        self._confmat = self._confmat.to(pl_module.device)
        self._confmat.reset()
        self._samples = []

    def _batch_end(self, trainer: pl.Trainer, outputs: Any, stage: str) -> None:
        preds = step_output(outputs, self.preds_key, "RareClassMetrics", stage)
        target = step_output(outputs, self.target_key, "RareClassMetrics", stage)
        self._confmat.update(preds.detach(), target.detach())
        if len(self._samples) < self.log_images and self._wants_figures(trainer):
            self._collect_samples(outputs, preds, target)

    def _epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, prefix: str) -> None:
        matrix = self._confmat.compute().cpu().numpy().astype(np.int64)
        self.confusion_matrix = matrix
        scores = per_class_scores(matrix)
        metrics = {
            f"{prefix}/{key}": value
            for key, value in summary_scores(matrix, self.rare_classes, self.majority_class).items()
        }
        for key in ("iou", "recall", "precision", "f1"):
            for class_id, name in enumerate(self.class_names):
                metrics[f"{prefix}/{key}/{name}"] = float(scores[key][class_id])
        pl_module.log_dict(metrics, on_step=False, on_epoch=True, sync_dist=True)
        if self._wants_figures(trainer):
            self._send_figures(trainer, prefix, matrix)
        self._samples = []

    def _wants_figures(self, trainer: pl.Trainer) -> bool:
        return (
            not trainer.sanity_checking
            and trainer.is_global_zero
            and any(isinstance(logger, (WandbLogger, TensorBoardLogger)) for logger in trainer.loggers)
        )

    def _collect_samples(self, outputs: Any, preds: torch.Tensor, target: torch.Tensor) -> None:
        image = outputs.get(self.image_key)
        saliency = outputs.get(self.saliency_key)
        for index in range(min(preds.shape[0], self.log_images - len(self._samples))):
            sample = {"target": target[index].cpu().numpy(), "preds": preds[index].cpu().numpy()}
            if image is not None:
                sample["image"] = image[index].detach().float().cpu().numpy()
            if saliency is not None:
                sample["saliency"] = saliency[index].detach().float().amax(dim=0).cpu().numpy()
            self._samples.append(sample)

    def _send_figures(self, trainer: pl.Trainer, prefix: str, matrix: np.ndarray) -> None:
        figures = {f"{prefix}/confusion_matrix": _render(self._confusion_figure(matrix))}
        if self._samples:
            figures[f"{prefix}/samples"] = _render(self._samples_figure())
        step = trainer.global_step
        for logger in trainer.loggers:
            for key, picture in figures.items():
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[picture], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(key, picture, global_step=step, dataformats="HWC")

    def _confusion_figure(self, matrix: np.ndarray) -> Figure:
        count = len(self.class_names)
        with np.errstate(divide="ignore", invalid="ignore"):
            normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
        size = 1.5 + 0.6 * count
        figure = Figure(figsize=(size + 1, size), dpi=100)
        axes = figure.add_subplot()
        shown = axes.imshow(normalised, vmin=0, vmax=1, cmap="Blues")
        labels = [f"{name}*" if i in self.rare_classes else name for i, name in enumerate(self.class_names)]
        axes.set_xticks(range(count), labels, rotation=45, ha="right")
        axes.set_yticks(range(count), labels)
        axes.set_xlabel("prediction")
        axes.set_ylabel("truth")
        for row in range(count):
            for column in range(count):
                value = normalised[row, column]
                color = "white" if value > 0.5 else "black"
                axes.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8, color=color)
        figure.colorbar(shown, ax=axes, label="fraction of truth row")
        figure.tight_layout()
        return figure

    def _samples_figure(self) -> Figure:
        columns = [key for key in ("image", "target", "preds", "saliency") if key in self._samples[0]]
        titles = {"image": "image", "target": "truth", "preds": "prediction", "saliency": "saliency"}
        rows = len(self._samples)
        figure = Figure(figsize=(2.6 * len(columns), 2.6 * rows + 0.6), dpi=100)
        grid = figure.subplots(rows, len(columns), squeeze=False)
        for row, sample in enumerate(self._samples):
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
                    axes.imshow(colorize(sample[key], self.palette), interpolation="nearest")
        handles = [Patch(color=self.palette[i] / 255, label=name) for i, name in enumerate(self.class_names)]
        figure.legend(handles=handles, loc="lower center", ncol=min(len(handles), 6), fontsize=8, frameon=False)
        figure.tight_layout(rect=(0, 0.6 / (2.6 * rows + 0.6), 1, 1))
        return figure


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _palette(count: int, class_colors: Sequence[Sequence[int]] | None) -> np.ndarray:
    if class_colors is None:
        return np.array(
            [[round(255 * c) for c in to_rgb(DEFAULT_PALETTE[i % len(DEFAULT_PALETTE)])] for i in range(count)],
            dtype=np.uint8,
        )
    if len(class_colors) != count:
        raise ValueError(f"RareClassMetrics class_colors has {len(class_colors)} colours for {count} classes")
    colors = np.asarray(class_colors)
    if colors.shape != (count, 3) or colors.min() < 0 or colors.max() > 255:
        raise ValueError("RareClassMetrics class_colors must be RGB triples with values 0-255")
    return colors.astype(np.uint8)


def _render(figure: Figure) -> np.ndarray:
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()
