"""ScenePredictionWriter: ``trainer.predict`` (``rareseg predict``) writes whole scenes as ``rareseg infer`` does."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import BasePredictionWriter
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

from rareseg.core.conventions import THRESHOLDS_KEY
from rareseg.core.files import write_atomically
from rareseg.datamodules.predict_scenes import is_scene_descriptor
from rareseg.inference.predictor import Precision, Predictor, resolve_precision
from rareseg.inference.radiometry import parse_input_scale
from rareseg.inference.scene import check_options, predict_scene

#: Index of a predict run, written into ``output_dir`` by rank 0 when every process is done.
INDEX_NAME = "predictions.json"


class ScenePredictionWriter(BasePredictionWriter):
    """Predict every scene of a predict run with :func:`~rareseg.inference.predict_scene`.

    Each predict batch is a scene descriptor ``{"path", "name"}`` (``LissIVDataModule``'s predict
    stage; ``RareSegModule.predict_step`` passes it through). The scene is predicted tile by tile,
    memory independent of its size, into ``output_dir/<name>/``: ``mask.tif``, ``rare_prob.tif``,
    ``saliency_topk.tif``, ``preview_mask.png``, ``preview_prob.png`` and ``summary.json``, exactly
    the outputs of ``rareseg infer`` with the same options, staged and moved into place when complete.

    The network runs on the module's device; the trainer's precision ``32-true`` or ``bf16-mixed``
    (autocast) applies. Thresholds are those ``ThresholdCalibrator`` stored in the checkpoint given
    as ``ckpt_path`` (read in :meth:`on_load_checkpoint`; it writes them only into full checkpoints,
    which Lightning hands to callbacks), else 0.5; ``threshold`` overrides both. Under DDP each
    scene goes to exactly one process, and when all are done rank 0 writes
    ``output_dir/predictions.json`` listing every scene written, its input, its folder and the rank
    that wrote it. Batches that are not scene descriptors are skipped with a warning.
    """

    def __init__(
        self,
        output_dir: str = "predictions",
        tile: int = 512,
        overlap: int = 64,
        batch_size: int = 8,
        rare_classes: list[str | int] | None = None,
        threshold: float | None = None,
        topk: float = 10.0,
        preview_max_side: int = 1024,
        input_scale: float | str = 1.0,
    ) -> None:
        """Check the options.

        Args:
            output_dir: folder of the per-scene output folders (created when missing).
            tile: tile side in pixels.
            overlap: pixels shared by neighbouring tiles, at most ``tile / 2``.
            batch_size: tiles per forward pass.
            rare_classes: names or ids of the rare classes to output and threshold (None: all of
                the checkpoint's).
            threshold: one probability threshold in [0, 1] for every selected rare class (None:
                the checkpoint's calibrated thresholds, else 0.5).
            topk: percentage of valid pixels marked in ``saliency_topk.tif``, in (0, 100].
            preview_max_side: longer side of the PNG previews in pixels.
            input_scale: factor multiplying the bands before normalisation, or ``"auto"`` (the
                factor the radiometry check detects, per scene); see :mod:`rareseg.inference.radiometry`.

        Raises:
            ValueError: an option out of range (one line).
        """
        super().__init__(write_interval="batch")
        check_options(tile, overlap, batch_size, topk, threshold, preview_max_side)
        self.output_dir = Path(output_dir)
        self.tile = tile
        self.overlap = overlap
        self.batch_size = batch_size
        self.rare_classes = None if rare_classes is None else list(rare_classes)
        self.threshold = threshold
        self.topk = topk
        self.preview_max_side = preview_max_side
        self.input_scale = parse_input_scale(input_scale)
        self._reset()

    def _reset(self) -> None:
        """Forget what a previous predict run loaded and wrote."""
        self.checkpoint_thresholds: dict[int, float] = {}
        self.written: list[dict[str, Any]] = []
        self._precision: Precision = "32"
        self._predictor: Predictor | None = None
        self._warned = False

    def setup(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        """For ``predict``: start afresh (before Lightning restores ``ckpt_path``) and check the trainer's precision."""
        super().setup(trainer, pl_module, stage)
        if stage != "predict":
            return
        self._reset()
        precision = str(trainer.precision)
        try:
            self._precision = resolve_precision(precision)
        except ValueError:
            raise ValueError(
                f"ScenePredictionWriter: trainer precision {precision!r} is not supported for scene prediction"
                " (use 32-true or bf16-mixed)"
            ) from None

    def on_load_checkpoint(self, trainer: Trainer, pl_module: LightningModule, checkpoint: dict[str, Any]) -> None:
        """Keep the calibrated ``{class_id: threshold}`` of the checkpoint being restored."""
        self.checkpoint_thresholds = {int(k): float(v) for k, v in (checkpoint.get(THRESHOLDS_KEY) or {}).items()}

    def on_predict_start(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Wrap the module, now on its device, for tiled prediction once per run; check ``rare_classes`` against it."""
        self._predictor = Predictor.from_module(
            pl_module,
            device=pl_module.device,
            precision=self._precision,
            thresholds=self.checkpoint_thresholds,
            checkpoint=Path(trainer.ckpt_path) if trainer.ckpt_path else None,
        )
        self._predictor.select_rare_classes(self.rare_classes)

    def write_on_batch_end(
        self,
        trainer: Trainer,
        pl_module: LightningModule,
        prediction: Any,
        batch_indices: Sequence[int] | None,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int,
    ) -> None:
        """Predict the scene named by ``prediction`` into ``output_dir/<name>/``."""
        if not is_scene_descriptor(prediction):
            if not self._warned:
                rank_zero_warn(
                    "ScenePredictionWriter: predict_step did not return a scene descriptor {'path', 'name'};"
                    " nothing is written for such batches"
                )
                self._warned = True
            return
        assert self._predictor is not None, "on_predict_start builds the predictor"
        name = prediction["name"]
        predict_scene(
            self._predictor,
            prediction["path"],
            self.output_dir / name,
            tile=self.tile,
            overlap=self.overlap,
            batch_size=self.batch_size,
            rare_classes=self.rare_classes,
            threshold=self.threshold,
            topk=self.topk,
            preview_max_side=self.preview_max_side,
            input_scale=self.input_scale,
        )
        self.written.append({"name": name, "input": prediction["path"], "folder": name, "rank": trainer.global_rank})

    def on_predict_end(self, trainer: Trainer, pl_module: LightningModule) -> None:
        """Collect the scenes written by every process; rank 0 writes ``output_dir/predictions.json``."""
        scenes = sorted(_gather(trainer, self.written), key=lambda scene: scene["name"])
        if trainer.is_global_zero and scenes:
            index = {"checkpoint": None if trainer.ckpt_path is None else str(trainer.ckpt_path), "scenes": scenes}
            write_atomically(self.output_dir / INDEX_NAME, (json.dumps(index, indent=2) + "\n").encode())
            rank_zero_info(
                f"ScenePredictionWriter: wrote {len(scenes)} scene(s) to {self.output_dir} (index: {INDEX_NAME})"
            )


def _gather(trainer: Trainer, items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every process's ``items``, concatenated in rank order (the local list in a single process)."""
    if trainer.world_size == 1:
        return list(items)
    gathered: list[list[dict[str, Any]] | None] = [None] * trainer.world_size
    torch.distributed.all_gather_object(gathered, items)
    return [item for part in gathered for item in part or []]
