"""RareClassMetrics: per-class and rare-class segmentation scores of validation and test, sent to the loggers.

The score math is :mod:`rareseg.core.scores`, the figures :mod:`rareseg.core.plots`; this module
accumulates the confusion matrix, logs the scores and hands the figures to W&B or TensorBoard.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.loggers import TensorBoardLogger, WandbLogger
from torchmetrics.classification import MulticlassConfusionMatrix
from typing_extensions import override

from rareseg.callbacks._contract import learned, resolve_class_ids, step_output
from rareseg.core.conventions import IGNORE_INDEX, resolve_class_colors
from rareseg.core.scores import per_class_scores, summary_scores


class RareClassMetrics(Callback):
    r"""Per-class IoU/recall/precision/F1 and rare-class summaries for validation and test.

    Reads ``outputs[preds_key]`` ``(B, H, W)`` class ids and ``outputs[target_key]`` ``(B, H, W)``
    (``ignore_index`` pixels skipped) from what ``validation_step``/``test_step`` return, and
    accumulates a ``torchmetrics`` confusion matrix on the module's device. At epoch end the matrix
    is summed over ranks and these are logged (``<stage>`` is ``val`` or ``test``) with
    ``sync_dist=True`` (identical on all ranks, so the values are exact under DDP):

    * ``<stage>/iou/<name>``, ``<stage>/recall/<name>``, ``<stage>/precision/<name>``,
      ``<stage>/f1/<name>`` for every class (see :func:`~rareseg.core.scores.per_class_scores`; NaN
      when undefined);
    * ``<stage>/rare_recall``, ``<stage>/rare_iou``, ``<stage>/miou``, ``<stage>/majority_precision``
      (see :func:`~rareseg.core.scores.summary_scores`).

    They are logged from ``on_*_epoch_end``, so ``ModelCheckpoint``/``EarlyStopping``/``Babysitter``
    can monitor them (those read ``trainer.callback_metrics`` in ``on_validation_end`` or
    ``on_train_epoch_end``, after Lightning has gathered epoch-end logs).

    Outside the sanity check, rank zero also sends a confusion-matrix figure (rows normalised to
    recall) and a grid of up to ``log_images`` samples -- image | truth | prediction, plus the
    saliency (maximum over its ``R`` maps) when ``outputs[saliency_key]`` ``(B, R, H, W)`` exists --
    to every W&B or TensorBoard logger as ``<stage>/confusion_matrix`` and ``<stage>/samples``.
    The image is ``outputs[image_key]`` ``(B, C, H, W)``, first three bands stretched per band
    (:func:`~rareseg.core.plots.stretch_to_rgb`); without it the image column is left out. Other loggers get no figures.

    ``class_names``, ``rare_classes`` and ``class_colors`` not given are read, when the first
    validation or test epoch starts, from the LightningModule's attributes of those names, else from
    ``trainer.datamodule``'s (duck typing: any module or datamodule that has them).

    Args:
        class_names: names of classes ``0..K-1`` (class ids index this list); None: learned.
        rare_classes: rare class ids or names; None: learned.
        ignore_index: target value of pixels that are not scored.
        log_images: samples per epoch in the figure (``0`` for none).
        majority_class: id or name whose precision is ``majority_precision``; ``None`` takes the
            class with the most truth pixels in the epoch.
        class_colors: RGB colour (0-255) per class; ``None``: learned, else
            :data:`~rareseg.core.conventions.DEFAULT_PALETTE`.
        preds_key: output key of the predicted class ids.
        target_key: output key of the truth.
        image_key: output key of the input image.
        saliency_key: output key of the saliency maps.

    Attributes:
        confusion_matrix: ``(K, K)`` int64 numpy counts of the last finished epoch, or ``None``.

    Raises:
        ValueError: bad arguments (at construction, or once learned), or a step output without
            ``preds``/``target``.
    """

    def __init__(
        self,
        class_names: Sequence[str] | None = None,
        rare_classes: Sequence[int | str] | None = None,
        ignore_index: int = IGNORE_INDEX,
        log_images: int = 4,
        majority_class: int | str | None = None,
        class_colors: Sequence[Sequence[int]] | None = None,
        preds_key: str = "preds",
        target_key: str = "target",
        image_key: str = "image",
        saliency_key: str = "saliency",
    ) -> None:
        super().__init__()
        if log_images < 0:
            raise ValueError(f"RareClassMetrics log_images must be >= 0, got {log_images}")
        self.ignore_index = ignore_index
        self.log_images = log_images
        self.preds_key = preds_key
        self.target_key = target_key
        self.image_key = image_key
        self.saliency_key = saliency_key
        self.confusion_matrix: np.ndarray | None = None
        self._given = {"class_names": class_names, "rare_classes": rare_classes, "class_colors": class_colors}
        self._majority_given = majority_class
        self.class_names: list[str] | None = None
        self._samples: list[dict[str, np.ndarray]] = []
        if class_names is not None and rare_classes is not None:
            self._configure(class_names, rare_classes, class_colors)

    def _configure(
        self,
        class_names: Sequence[str],
        rare_classes: Sequence[int | str],
        class_colors: Sequence[Sequence[int]] | None,
    ) -> None:
        """Check the classes and set up the confusion matrix."""
        if len(class_names) < 2:
            raise ValueError(f"RareClassMetrics needs at least 2 class names, got {list(class_names)}")
        if len(set(class_names)) != len(class_names):
            raise ValueError(f"RareClassMetrics class_names must be unique, got {list(class_names)}")
        if 0 <= self.ignore_index < len(class_names):
            raise ValueError(
                f"RareClassMetrics ignore_index {self.ignore_index} is a class id (0..{len(class_names) - 1})"
            )
        names = list(class_names)
        self.rare_classes = resolve_class_ids(rare_classes, names, "RareClassMetrics", "rare_classes")
        if not self.rare_classes:
            raise ValueError("RareClassMetrics needs at least one rare class")
        majority = self._majority_given
        self.majority_class = (
            None if majority is None else resolve_class_ids([majority], names, "RareClassMetrics", "majority_class")[0]
        )
        try:
            self.palette = np.array(resolve_class_colors(len(names), class_colors), dtype=np.uint8)
        except ValueError as err:
            raise ValueError(f"RareClassMetrics {err}") from None
        self.class_names = names
        self._confmat = MulticlassConfusionMatrix(num_classes=len(names), ignore_index=self.ignore_index)

    def _learn(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fill in the classes not given from the module or the datamodule (once)."""
        if self.class_names is not None:
            return
        values = {name: learned(name, given, trainer, pl_module) for name, given in self._given.items()}
        for name in ("class_names", "rare_classes"):
            if values[name] is None:
                raise ValueError(
                    f"RareClassMetrics: {name} not given, and neither the LightningModule nor the datamodule has {name}"
                )
        self._configure(values["class_names"], values["rare_classes"], values["class_colors"])

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
        self._epoch_start(trainer, pl_module)

    @override
    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._epoch_start(trainer, pl_module)

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

    def _epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._learn(trainer, pl_module)
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
        from rareseg.core.plots import confusion_figure, figure_pixels, samples_figure  # matplotlib: only when drawing

        labels = [f"{name}*" if i in self.rare_classes else name for i, name in enumerate(self.class_names)]
        figures = {f"{prefix}/confusion_matrix": figure_pixels(confusion_figure(matrix, labels))}
        if self._samples:
            figures[f"{prefix}/samples"] = figure_pixels(samples_figure(self._samples, self.palette, self.class_names))
        step = trainer.global_step
        for logger in trainer.loggers:
            for key, picture in figures.items():
                if isinstance(logger, WandbLogger):
                    logger.log_image(key=key, images=[picture], step=step)
                elif isinstance(logger, TensorBoardLogger):
                    logger.experiment.add_image(key, picture, global_step=step, dataformats="HWC")
