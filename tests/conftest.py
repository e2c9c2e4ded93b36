"""Shared fixtures: a small synthetic LISS-IV root generated once per test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def synth_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Four 256 px synthetic scenes (train/val/test split 2/1/1). Treat as read-only."""
    from rareseg.synth import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data") / "liss4", num_scenes=4, size=256, seed=7, progress=False)


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
