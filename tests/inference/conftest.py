"""Fixtures for inference tests: synthetic scenes (the trained checkpoint is in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import synth_scene


@pytest.fixture(scope="session")
def scene_path(synth_root: Path) -> Path:
    """A 256 px synthetic scene with a nodata margin (rotated footprint)."""
    return synth_scene(synth_root, nodata_margin=True)


@pytest.fixture(scope="session")
def full_scene_path(synth_root: Path) -> Path:
    """A 256 px synthetic scene without nodata."""
    return synth_scene(synth_root, nodata_margin=False)
