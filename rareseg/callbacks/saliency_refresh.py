"""SaliencyRefresh: re-predict per-scene saliency maps that steer the training sampler."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from affine import Affine
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from tqdm import tqdm


class SaliencyRefresh(Callback):
    """At the end of every n-th training epoch, predict saliency maps of the training scenes for the sampler.

    Under ``fast_dev_run`` no maps are predicted (the sampler keeps its label-based stand-in).

    Every training scene goes through the module's whole-scene prediction -- for ``RareSegModule``
    rareseg's one inference pass: the module's band statistics normalise raw tiles of
    ``patch_size`` pixels overlapping by ``overlap``, ``batch_size`` at a time, in eval mode without
    gradients, the tiles are blended, and a pixel's saliency is the highest blended rare-class
    saliency ``max_r S_r``. The map holds its mean over the valid pixels of cells of
    ``k = round(resolution_m / pixel size)`` pixels (23.2 m = 4 LISS-IV pixels). The train/eval
    mode is restored afterwards.

    Duck-typed contract (the callback imports nothing from rareseg but its neutral core):

    * ``trainer.datamodule.saliency_sources()`` returns ``(scene_id, image_path)`` per training scene;
    * ``pl_module.scene_saliency(image_path, resolution_m, tile=, overlap=, batch_size=, precision=)``
      returns the scene's (h, w) float32 map (NaN for cells without valid pixels) and its
      ``affine.Affine`` in the scene CRS; ``precision`` is the trainer's;
    * ``trainer.datamodule.train_sampler.update_saliency(scene_id, saliency, transform)`` takes the map.

    The module predicts, not the datamodule: it owns the network and the normalisation it was
    trained with, and rareseg's inference pass depends on the datamodules package, so a datamodule
    calling it would close an import cycle. The datamodule only says which scenes.

    The sampler lives in the process that iterates the DataLoader, so DataLoader workers
    (persistent or not) only receive the queries it yields and the next epoch already follows
    the new maps. Under DDP each rank predicts every ``world_size``-th scene and the maps are
    exchanged with ``torch.distributed.all_gather_object``, so every rank's sampler (same seed)
    holds the same maps. The last maps are saved in checkpoints and handed to the sampler again
    when a resumed run starts training.

    Args:
        every_n_epochs: refresh after every n-th training epoch.
        resolution_m: target map cell size in CRS units (metres), rounded to whole pixels.
        batch_size: tiles per forward pass.
        patch_size: tile side in pixels.
        overlap: pixels shared by neighbouring tiles, at most ``patch_size / 2``.
    """

    def __init__(
        self,
        every_n_epochs: int = 1,
        resolution_m: float = 23.2,
        batch_size: int = 4,
        patch_size: int = 256,
        overlap: int = 32,
    ) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size), ("patch_size", patch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SaliencyRefresh: {name} must be a positive integer, got {value!r}")
        if not resolution_m > 0:
            raise ValueError(f"SaliencyRefresh: resolution_m must be > 0, got {resolution_m!r}")
        if isinstance(overlap, bool) or not isinstance(overlap, int) or not 0 <= overlap <= patch_size // 2:
            raise ValueError(f"SaliencyRefresh: overlap must be an integer in [0, patch_size / 2], got {overlap!r}")
        self.every_n_epochs = every_n_epochs
        self.resolution_m = float(resolution_m)
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.overlap = overlap
        self.maps: dict[str, tuple[np.ndarray, Affine]] = {}

    @property
    def state_key(self) -> str:
        """Checkpoint key, unique per configuration."""
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, resolution_m=self.resolution_m)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the datamodule and module contract before the first epoch."""
        self._sampler(trainer)
        self._sources(trainer)
        self._check_module(pl_module)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Give the sampler the maps restored from a checkpoint, if any."""
        sampler = self._sampler(trainer)
        for scene_id, (saliency, transform) in self.maps.items():
            sampler.update_saliency(scene_id, saliency, transform)

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Refresh the maps after every ``every_n_epochs``-th epoch; not under ``fast_dev_run``.

        ``fast_dev_run`` runs a few batches to find bugs, and Lightning's own checkpointing and
        early stopping stand down for it; a pass over every training scene would dwarf those batches.
        """
        if trainer.fast_dev_run:
            rank_zero_info("SaliencyRefresh: no refresh under fast_dev_run (it would predict every training scene)")
            return
        if (trainer.current_epoch + 1) % self.every_n_epochs == 0:
            self.refresh(trainer, pl_module)

    def refresh(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Predict this rank's share of the scenes, gather all ranks' maps and update the sampler."""
        sampler = self._sampler(trainer)
        sources = self._sources(trainer)[trainer.global_rank :: trainer.world_size]
        self._check_module(pl_module)
        was_training = pl_module.training
        try:
            local = {}
            for scene_id, path in tqdm(
                sources,
                desc="saliency maps",
                unit="scene",
                leave=False,
                disable=trainer.progress_bar_callback is None or not trainer.is_global_zero,
            ):
                local[scene_id] = pl_module.scene_saliency(
                    Path(path),
                    self.resolution_m,
                    tile=self.patch_size,
                    overlap=self.overlap,
                    batch_size=self.batch_size,
                    precision=str(getattr(trainer, "precision", "32-true")),
                )
        finally:
            pl_module.train(was_training)
        gathered = [local]
        if trainer.world_size > 1 and torch.distributed.is_available() and torch.distributed.is_initialized():
            gathered = [{} for _ in range(trainer.world_size)]
            torch.distributed.all_gather_object(gathered, local)
        for maps in gathered:
            for scene_id, (saliency, transform) in maps.items():
                sampler.update_saliency(scene_id, saliency, transform)
                self.maps[scene_id] = (saliency, transform)

    @staticmethod
    def _check_module(pl_module: pl.LightningModule) -> None:
        if not callable(getattr(pl_module, "scene_saliency", None)):
            raise ValueError(
                "SaliencyRefresh needs pl_module.scene_saliency(image_path, resolution_m, tile=, overlap=,"
                f" batch_size=, precision=) -> (map, transform), got {type(pl_module).__name__}"
                " (rareseg.lightning_modules.RareSegModule has it)"
            )

    @staticmethod
    def _sampler(trainer: pl.Trainer) -> Any:
        sampler = getattr(trainer.datamodule, "train_sampler", None)
        if not callable(getattr(sampler, "update_saliency", None)):
            raise ValueError(
                "SaliencyRefresh needs trainer.datamodule.train_sampler with update_saliency(scene_id, saliency,"
                f" transform), got {type(sampler).__name__} (use a saliency-guided sampler)"
            )
        return sampler

    @staticmethod
    def _sources(trainer: pl.Trainer) -> list[tuple[str, Any]]:
        sources = getattr(trainer.datamodule, "saliency_sources", None)
        if not callable(sources):
            raise ValueError(
                "SaliencyRefresh needs trainer.datamodule.saliency_sources() -> [(scene_id, image_path)],"
                f" got {type(trainer.datamodule).__name__}"
            )
        return list(sources())

    def state_dict(self) -> dict[str, Any]:
        """The last maps, as tensors, so a resumed run steers its sampler from the start."""
        return {
            "maps": {
                scene_id: {"saliency": torch.from_numpy(saliency), "transform": list(transform)[:6]}
                for scene_id, (saliency, transform) in self.maps.items()
            }
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the maps saved by :meth:`state_dict`."""
        self.maps = {
            scene_id: (entry["saliency"].numpy(), Affine(*entry["transform"]))
            for scene_id, entry in state_dict["maps"].items()
        }
