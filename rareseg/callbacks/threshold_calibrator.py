"""ThresholdCalibrator: per rare class, the probability threshold that maximises validation F1."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_warn
from torch import Tensor
from typing_extensions import override

from rareseg.callbacks._contract import learned, resolve_class_ids, step_output
from rareseg.core.conventions import IGNORE_INDEX, THRESHOLDS_KEY
from rareseg.core.histograms import best_f1_threshold, bin_edges, probability_histograms


class ThresholdCalibrator(Callback):
    r"""Pick, per rare class, the probability threshold that maximises F1 on validation.

    Each validation epoch (not the sanity check) it reads ``outputs[probs_key]`` ``(B, K, H, W)``
    softmax probabilities and ``outputs[target_key]`` ``(B, H, W)`` from ``validation_step`` and
    counts, per rare class ``c``, positive (truth ``c``) and negative valid pixels in ``num_bins``
    equal probability bins (:func:`~rareseg.core.histograms.probability_histograms`; the bin
    convention of :mod:`rareseg.core.histograms`, shared with ``rareseg evaluate``). At epoch end the
    counts are summed over ranks and the threshold ``t_c`` maximising F1 of the rule "pixel is ``c``
    if ``P_c >= t_c``" is chosen from the lower bin edges ``t_b = b / num_bins``
    (:func:`~rareseg.core.histograms.best_f1_threshold`) and logged as ``val/threshold/<name>``.
    The thresholds of the last validation -- at the end of fit, the final one -- are in
    ``thresholds``; every checkpoint saved after a validation holds the thresholds of the weights it
    contains, in the callback state (``{"thresholds": ...}``) and under the top-level key
    :data:`~rareseg.core.conventions.THRESHOLDS_KEY` for inference code.

    ``rare_classes`` and ``class_names`` not given are read, when the first validation epoch starts,
    from the LightningModule's attributes of those names, else from ``trainer.datamodule``'s.

    Args:
        rare_classes: rare class ids or names (names need ``class_names``); None: learned.
        class_names: names of classes ``0..K-1``, used for names in ``rare_classes`` and log keys;
            None: learned (ids stand in when nothing has them).
        num_bins: number of probability bins (``>= 2``); their lower edges ``0, 1/n, ..., (n-1)/n``
            are the candidate thresholds.
        probs_key: output key of the probabilities.
        target_key: output key of the truth.
        ignore_index: target value of pixels that are not counted.

    Attributes:
        thresholds: ``{class_id: threshold}``; a class without positive pixels is left out.

    Raises:
        ValueError: bad arguments (at construction, or once learned), or a step output without probs/target.
    """

    def __init__(
        self,
        rare_classes: Sequence[int | str] | None = None,
        class_names: Sequence[str] | None = None,
        num_bins: int = 100,
        probs_key: str = "probs",
        target_key: str = "target",
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if num_bins < 2:
            raise ValueError(f"ThresholdCalibrator num_bins must be >= 2, got {num_bins}")
        self._given = {"rare_classes": rare_classes, "class_names": class_names}
        self.class_names = list(class_names) if class_names is not None else None
        self.rare_classes: list[int] | None = None
        if rare_classes is not None:
            self._configure(rare_classes, self.class_names)
        self.num_bins = num_bins
        self.probs_key = probs_key
        self.target_key = target_key
        self.ignore_index = ignore_index
        self.thresholds: dict[int, float] = {}
        self._edges = bin_edges(num_bins).numpy()
        self._counts: Tensor | None = None

    def _configure(self, rare_classes: Sequence[int | str], class_names: list[str] | None) -> None:
        self.class_names = class_names
        self.rare_classes = resolve_class_ids(rare_classes, class_names, "ThresholdCalibrator", "rare_classes")
        if not self.rare_classes:
            raise ValueError("ThresholdCalibrator needs at least one rare class")

    def _learn(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Fill in the classes not given from the module or the datamodule (once)."""
        if self.rare_classes is not None:
            return
        rare_classes = learned("rare_classes", None, trainer, pl_module)
        if rare_classes is None:
            raise ValueError(
                "ThresholdCalibrator: rare_classes not given, and neither the LightningModule nor the datamodule has "
                "rare_classes"
            )
        names = learned("class_names", self._given["class_names"], trainer, pl_module)
        self._configure(rare_classes, list(names) if names is not None else None)

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": dict(self.thresholds)}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.thresholds = {int(k): float(v) for k, v in state_dict["thresholds"].items()}

    @override
    def on_save_checkpoint(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        checkpoint[THRESHOLDS_KEY] = dict(self.thresholds)

    @override
    def on_validation_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._learn(trainer, pl_module)
        self._counts = None

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
        if trainer.sanity_checking:
            return
        probs = step_output(outputs, self.probs_key, "ThresholdCalibrator", "validation").detach()
        target = step_output(outputs, self.target_key, "ThresholdCalibrator", "validation").detach()
        valid = target != self.ignore_index
        rare = torch.tensor(self.rare_classes, device=probs.device)
        rare_probs = probs.index_select(1, rare).movedim(1, 0)[:, valid]
        positive = target[valid].unsqueeze(0) == rare.unsqueeze(1)
        counts = probability_histograms(rare_probs, positive, self.num_bins)
        self._counts = counts if self._counts is None else self._counts + counts

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        counts = self._counts
        if counts is None:
            counts = torch.zeros(len(self.rare_classes), 2, self.num_bins, dtype=torch.long, device=pl_module.device)
        counts = trainer.strategy.reduce(counts, reduce_op="sum").cpu().numpy()
        thresholds: dict[int, float] = {}
        for row, class_id in enumerate(self.rare_classes):
            name = self._name(class_id)
            threshold, _ = best_f1_threshold(counts[row, 0], counts[row, 1], self._edges)
            if np.isnan(threshold):
                rank_zero_warn(f"ThresholdCalibrator: no validation pixel of class {name}; not calibrated")
                continue
            thresholds[class_id] = threshold
            pl_module.log(f"val/threshold/{name}", threshold, on_epoch=True, sync_dist=True)
        self.thresholds = thresholds
        self._counts = None

    def _name(self, class_id: int) -> str:
        return self.class_names[class_id] if self.class_names is not None else str(class_id)
