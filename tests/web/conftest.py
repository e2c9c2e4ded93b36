"""Fixtures for web tests: a trained checkpoint, its predictor, a scene, and an app on a private jobs folder."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rareseg.inference import Predictor, load_predictor
from rareseg.web import job_manager
from tests.conftest import CALIBRATED_THRESHOLDS, synth_scene
from tests.web.helpers import make_app

#: Thresholds calibrated into the test checkpoint: wetland only (water falls back to 0.5).
CALIBRATED = CALIBRATED_THRESHOLDS


@pytest.fixture(scope="session")
def web_checkpoint(checkpoint_path: Path) -> Path:
    """The shared test checkpoint (tests/conftest.py), with a calibrated wetland threshold."""
    return checkpoint_path


@pytest.fixture(scope="session")
def predictor(web_checkpoint: Path) -> Predictor:
    """The test checkpoint loaded once on the CPU."""
    return load_predictor(web_checkpoint, device="cpu")


@pytest.fixture(scope="session")
def scene(synth_root: Path) -> Path:
    """A 256 px synthetic scene with a nodata margin."""
    return synth_scene(synth_root, nodata_margin=True)


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
