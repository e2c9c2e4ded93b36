"""Shared fixtures: a small synthetic LISS-IV root generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")

#: Thresholds stored in the test checkpoint: wetland only (water falls back to the default).
CALIBRATED_THRESHOLDS = {5: 0.3}


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 256 px synthetic scenes (train/val/test split 2/1/1). Treat as read-only."""
    from rareseg.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "liss4", num_scenes=4, size=256, seed=7, progress=False)


@pytest.fixture(scope="session")
def three_class_root(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`synth_root`'s scenes relabelled land / river / marsh (another class table). Read-only."""
    import numpy as np
    import rasterio
    import yaml

    target = tmp_path_factory.mktemp("three-classes")
    (target / "images").mkdir()
    (target / "masks").mkdir()
    lookup = np.full(256, 255, np.uint8)
    lookup[[0, 1, 2, 3, 4, 5]] = [0, 0, 0, 0, 1, 2]
    for image in sorted((synth_root / "images").glob("*.tif")):
        (target / "images" / image.name).write_bytes(image.read_bytes())
        with rasterio.open(synth_root / "masks" / image.name) as src:
            profile, mask = src.profile, src.read(1)
        with rasterio.open(target / "masks" / image.name, "w", **profile) as dst:
            dst.write(lookup[mask], 1)
    classes = [
        {"id": 0, "name": "land", "color": [200, 200, 120], "rare": False},
        {"id": 1, "name": "river", "color": [0, 0, 255], "rare": True},
        {"id": 2, "name": "marsh", "color": [0, 200, 200], "rare": True},
    ]
    (target / "classes.yaml").write_text(yaml.safe_dump({"bands": ["green", "red", "nir"], "classes": classes}))
    return target


@pytest.fixture()
def synth_copy(synth_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of :func:`synth_root` (for tests that break it)."""
    import shutil

    return Path(shutil.copytree(synth_root, tmp_path / "root"))


@pytest.fixture(autouse=True)
def _close_wandb_runs():
    """Finish any W&B run a test's WandbLogger opened, so the next test starts its own."""
    yield
    import wandb

    wandb.finish()


def synth_scene(root: Path, nodata_margin: bool) -> Path:
    """The first image of a synthetic root with (or without) pixels that are nodata in every band.

    Which generated scene has a nodata margin (a rotated footprint) depends on the generator.
    """
    import rasterio

    for path in sorted((root / "images").glob("*.tif")):
        with rasterio.open(path) as src:
            if bool((src.read() == src.nodata).all(axis=0).any()) == nodata_margin:
                return path
    raise LookupError(f"{root}: no scene {'with' if nodata_margin else 'without'} a nodata margin")


def task_for(datamodule: Any, **overrides: Any) -> Any:
    """A RareSegModule (AdamW) with the classes and band statistics of ``datamodule``, as the CLI links them."""
    from rareseg.lightning_modules import RareSegModule

    linked = {
        name: getattr(datamodule, name)
        for name in (
            "num_classes",
            "in_channels",
            "rare_classes",
            "class_names",
            "class_colors",
            "band_mean",
            "band_std",
        )
    }
    return RareSegModule(**{"optimizer": "adamw", **linked, **overrides})


def fit_tiny_checkpoint(datamodule: Any, path: Path, max_steps: int, **task: Any) -> Path:
    """Fit :func:`task_for` ``(datamodule, **task)`` for ``max_steps`` steps (seed 0, no validation) and save it."""
    import torch
    from lightning.pytorch import Trainer

    torch.manual_seed(0)
    module = task_for(datamodule, **task)
    trainer = Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
    )
    trainer.fit(module, datamodule=datamodule)
    trainer.save_checkpoint(path)
    return path


@pytest.fixture(scope="session")
def checkpoint_path(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RareSegModule (default network) fitted for one step on the synthetic root, with calibrated thresholds."""
    import torch

    from rareseg.datamodules import LissIVDataModule

    datamodule = LissIVDataModule(
        str(synth_root), batch_size=2, patch_size=64, length=2, augment=False, generate_if_missing=False
    )
    path = fit_tiny_checkpoint(datamodule, tmp_path_factory.mktemp("ckpt") / "model.ckpt", max_steps=1)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["rareseg_thresholds"] = CALIBRATED_THRESHOLDS
    torch.save(checkpoint, path)
    return path
