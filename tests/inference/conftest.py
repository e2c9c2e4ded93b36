"""Fixtures for inference tests: synthetic scenes and a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rareseg.lightning_modules import RareSegModule


@pytest.fixture(scope="session")
def scene_path(synth_root: Path) -> Path:
    """A 256 px synthetic scene with a nodata margin (rotated footprint)."""
    return synth_root / "images" / "scene_01.tif"


@pytest.fixture(scope="session")
def full_scene_path(synth_root: Path) -> Path:
    """A 256 px synthetic scene without nodata."""
    return synth_root / "images" / "scene_00.tif"


@pytest.fixture(scope="session")
def checkpoint_path(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RareSegModule (default network) fitted for one step on the synthetic root, with calibrated thresholds."""
    from lightning.pytorch import Trainer

    from rareseg.datamodules import LissIVDataModule

    datamodule = LissIVDataModule(str(synth_root), batch_size=2, patch_size=64, length=2, augment=False, generate_if_missing=False)
    torch.manual_seed(0)
    module = RareSegModule(
        optimizer="adamw",
        num_classes=datamodule.num_classes,
        in_channels=datamodule.in_channels,
        rare_classes=datamodule.rare_classes,
        class_names=datamodule.class_names,
        class_colors=datamodule.class_colors,
        band_mean=datamodule.band_mean,
        band_std=datamodule.band_std,
    )
    trainer = Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0)
    trainer.fit(module, datamodule=datamodule)
    path = tmp_path_factory.mktemp("ckpt") / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["rareseg_thresholds"] = {5: 0.3}
    torch.save(checkpoint, path)
    return path
