"""SaliencyRefresh: re-predict per-scene saliency maps that steer the training sampler."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import rasterio
import torch
from affine import Affine
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info
from rasterio.windows import Window
from torch import Tensor
from tqdm import tqdm


def pixel_saliency(saliency_logits: Tensor) -> Tensor:
    """Saliency of each pixel: ``s = max_r sigmoid(z_r)`` over the rare channels.

    The maximum (not the mean) keeps a pixel salient when any one rare class is likely,
    the same reduction as the model's saliency gate.

    Args:
        saliency_logits: (B, R, H, W) logits, one channel per rare class.

    Returns:
        (B, H, W) saliency in [0, 1].
    """
    return torch.sigmoid(saliency_logits.float()).amax(dim=1)


def accumulate_cells(saliency: np.ndarray, row: int, col: int, cell: int, sums: np.ndarray, counts: np.ndarray) -> None:
    """Add a tile's pixel saliency into per-cell sums and counts (the map is ``sums / counts``).

    Cell ``(i, j)`` covers scene pixels ``[i*cell, (i+1)*cell) x [j*cell, (j+1)*cell)``; edge cells
    are partial, so their mean is over the pixels they hold.

    Args:
        saliency: (h, w) saliency of the scene pixels ``[row, row+h) x [col, col+w)``.
        row: first scene row of the tile.
        col: first scene column of the tile.
        cell: cell side in pixels.
        sums: (ceil(H/cell), ceil(W/cell)) float64 running sums, updated in place.
        counts: same shape, running pixel counts, updated in place.
    """
    height, width = saliency.shape
    cell_rows = (np.arange(row, row + height) // cell)[:, None]
    cell_cols = (np.arange(col, col + width) // cell)[None, :]
    top, left = row // cell, col // cell
    span = (int(cell_rows[-1, 0]) - top + 1, int(cell_cols[0, -1]) - left + 1)
    local = ((cell_rows - top) * span[1] + (cell_cols - left)).ravel()
    size = span[0] * span[1]
    sums[top : top + span[0], left : left + span[1]] += np.bincount(
        local, weights=saliency.ravel(), minlength=size
    ).reshape(span)
    counts[top : top + span[0], left : left + span[1]] += np.bincount(local, minlength=size).reshape(span)


def _saliency_logits(output: Any) -> Tensor:
    """``saliency_logits`` of a model output (attribute or mapping key)."""
    logits = output.get("saliency_logits") if isinstance(output, Mapping) else getattr(output, "saliency_logits", None)
    if logits is None:
        raise ValueError(
            f"SaliencyRefresh needs the model output to carry saliency_logits (B, R, H, W); got {type(output).__name__} without them (is the saliency head enabled?)"
        )
    return logits


class SaliencyRefresh(Callback):
    """At the end of every n-th training epoch, predict saliency maps of the training scenes for the sampler.

    Under ``fast_dev_run`` no maps are predicted (the sampler keeps its label-based stand-in).

    For every training scene the model runs over a grid of ``patch_size`` tiles read with
    rasterio (edge tiles padded with the image's nodata value, or 0), in eval mode without
    gradients and with the trainer's precision, ``batch_size`` tiles at a time; the train/eval
    mode is restored afterwards. A pixel's saliency is ``max_r sigmoid(saliency_logits_r)``
    (:func:`pixel_saliency`), and the map holds its mean over cells of ``k = round(resolution_m /
    pixel size)`` pixels (23.2 m = 4 LISS-IV pixels). Memory: one batch of tiles plus one scene's map sums.

    Duck-typed contract (no project imports):

    * ``trainer.datamodule.saliency_sources()`` returns ``(scene_id, image_path, band_mean,
      band_std)`` per training scene; the model input is ``(x - band_mean) / band_std`` per band.
    * ``trainer.datamodule.train_sampler.update_saliency(scene_id, saliency, transform)`` takes
      the (h, w) float32 map and its ``affine.Affine`` in the scene CRS.
    * ``pl_module(x)`` returns an object with ``.saliency_logits`` or a mapping with
      ``"saliency_logits"``, shape (B, R, H, W).

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
    """

    def __init__(
        self, every_n_epochs: int = 1, resolution_m: float = 23.2, batch_size: int = 4, patch_size: int = 256
    ) -> None:
        super().__init__()
        for name, value in (("every_n_epochs", every_n_epochs), ("batch_size", batch_size), ("patch_size", patch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SaliencyRefresh: {name} must be a positive integer, got {value!r}")
        if not resolution_m > 0:
            raise ValueError(f"SaliencyRefresh: resolution_m must be > 0, got {resolution_m!r}")
        self.every_n_epochs = every_n_epochs
        self.resolution_m = float(resolution_m)
        self.batch_size = batch_size
        self.patch_size = patch_size
        self.maps: dict[str, tuple[np.ndarray, Affine]] = {}

    @property
    def state_key(self) -> str:
        """Checkpoint key, unique per configuration."""
        return self._generate_state_key(every_n_epochs=self.every_n_epochs, resolution_m=self.resolution_m)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check the datamodule contract before the first epoch."""
        self._sampler(trainer)
        self._sources(trainer)

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
        was_training = pl_module.training
        pl_module.eval()
        try:
            local = {
                scene_id: self._scene_map(trainer, pl_module, path, mean, std) for scene_id, path, mean, std in sources
            }
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

    @torch.no_grad()
    def _scene_map(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, path: Any, mean: Sequence[float], std: Sequence[float]
    ) -> tuple[np.ndarray, Affine]:
        """Saliency map of one scene: (ceil(H/k), ceil(W/k)) float32 and its transform."""
        tile = self.patch_size
        with rasterio.open(path) as src:
            cell = max(1, round(self.resolution_m / src.res[0]))
            shape = (math.ceil(src.height / cell), math.ceil(src.width / cell))
            sums, counts = np.zeros(shape), np.zeros(shape)
            fill = src.nodata if src.nodata is not None else 0
            mean_t = torch.tensor(mean, dtype=torch.float32)[:, None, None]
            std_t = torch.tensor(std, dtype=torch.float32)[:, None, None]
            origins = [(r, c) for r in range(0, src.height, tile) for c in range(0, src.width, tile)]
            progress = tqdm(
                total=len(origins),
                desc=f"saliency {Path(path).name}",
                leave=False,
                disable=trainer.progress_bar_callback is None or not trainer.is_global_zero,
            )
            for start in range(0, len(origins), self.batch_size):
                batch = origins[start : start + self.batch_size]
                tiles = []
                for r, c in batch:
                    window = Window(c, r, min(tile, src.width - c), min(tile, src.height - r))
                    raw = np.full((src.count, tile, tile), fill, dtype=np.float32)
                    raw[:, : window.height, : window.width] = src.read(window=window)
                    tiles.append((torch.from_numpy(raw) - mean_t) / std_t)
                with trainer.precision_plugin.forward_context():
                    logits = _saliency_logits(pl_module(torch.stack(tiles).to(pl_module.device)))
                saliency = pixel_saliency(logits).cpu().double().numpy()
                for (r, c), values in zip(batch, saliency, strict=True):
                    accumulate_cells(
                        values[: min(tile, src.height - r), : min(tile, src.width - c)], r, c, cell, sums, counts
                    )
                progress.update(len(batch))
            progress.close()
            transform = src.transform * Affine.scale(cell)
        return (sums / counts).astype(np.float32), transform

    @staticmethod
    def _sampler(trainer: pl.Trainer) -> Any:
        sampler = getattr(trainer.datamodule, "train_sampler", None)
        if not callable(getattr(sampler, "update_saliency", None)):
            raise ValueError(
                f"SaliencyRefresh needs trainer.datamodule.train_sampler with update_saliency(scene_id, saliency, transform), got {type(sampler).__name__} (use a saliency-guided sampler)"
            )
        return sampler

    @staticmethod
    def _sources(trainer: pl.Trainer) -> list[tuple[str, Any, Sequence[float], Sequence[float]]]:
        sources = getattr(trainer.datamodule, "saliency_sources", None)
        if not callable(sources):
            raise ValueError(
                f"SaliencyRefresh needs trainer.datamodule.saliency_sources() -> [(scene_id, image_path, band_mean, band_std)], got {type(trainer.datamodule).__name__}"
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
