"""The generic ``lightning`` command: a plain LightningCLI for any LightningModule and DataModule."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from lightning.pytorch.demos.boring_classes import BoringModel


def _lightning(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    command = [
        sys.executable,
        "-c",
        "import sys; from rareseg.cli import lightning_main; sys.argv[0] = 'lightning'; lightning_main()",
        *args,
    ]
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={"PATH": "/usr/bin:/bin", "WANDB_MODE": "disabled"},
    )


def test_lightning_fits_a_module_that_is_not_rareseg(tmp_path: Path) -> None:
    run = _lightning(
        "fit",
        "--model",
        "lightning.pytorch.demos.boring_classes.BoringModel",
        "--data",
        "lightning.pytorch.demos.boring_classes.BoringDataModule",
        "--trainer.max_steps",
        "3",
        "--trainer.limit_val_batches",
        "1",
        "--trainer.accelerator",
        "cpu",
        "--trainer.logger",
        "false",
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.default_root_dir",
        str(tmp_path),
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    checkpoints = list(tmp_path.rglob("*.ckpt"))
    assert len(checkpoints) == 1
    # the checkpoint holds the three optimiser steps and reloads into the same class
    assert torch.load(checkpoints[0], weights_only=False)["global_step"] == 3
    assert BoringModel.load_from_checkpoint(checkpoints[0]).layer.weight.shape == (2, 32)


def test_lightning_help_lists_the_subcommands(tmp_path: Path) -> None:
    run = _lightning("--help", cwd=tmp_path)
    assert run.returncode == 0
    for subcommand in ("fit", "validate", "test", "predict"):
        assert subcommand in run.stdout
