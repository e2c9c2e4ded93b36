"""Fixtures for web tests: a trained checkpoint, its predictor, a scene, and an app on a private jobs folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from flask import Flask
from flask.testing import FlaskClient

from rareseg.inference import Predictor, load_predictor
from rareseg.lightning_modules import RareSegModule
from rareseg.web import job_manager
from tests.web.helpers import make_app

#: Thresholds calibrated into the test checkpoint: wetland only (water falls back to 0.5).
CALIBRATED = {5: 0.3}


@pytest.fixture(scope="session")
def web_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RareSegModule (default network) fitted for one step on the synthetic root, with a calibrated wetland threshold."""
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
    path = tmp_path_factory.mktemp("web-ckpt") / "model.ckpt"
    trainer.save_checkpoint(path)
    checkpoint = torch.load(path, weights_only=False)
    checkpoint["rareseg_thresholds"] = CALIBRATED
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="session")
def predictor(web_checkpoint: Path) -> Predictor:
    """The test checkpoint loaded once on the CPU."""
    return load_predictor(web_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def scene(synth_root: Path) -> Path:
    """A 256 px synthetic scene with a nodata margin."""
    return synth_root / "images" / "scene_01.tif"


@pytest.fixture()
def app(predictor: Predictor, tmp_path: Path) -> Iterator[Flask]:
    """A fresh app (two workers) on ``tmp_path / "jobs"``; its workers are stopped afterwards."""
    application = make_app(predictor, tmp_path / "jobs")
    yield application
    job_manager(application).shutdown()


@pytest.fixture()
def client(app: Flask) -> FlaskClient:
    """A test client of :func:`app`."""
    return app.test_client()
