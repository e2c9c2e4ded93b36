"""``rareseg fit`` with the shipped configs ending mid-epoch: max_steps, Ctrl+C, and resuming from last.ckpt."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from rareseg.cli import main

CONFIGS = [str(Path(__file__).parents[1] / "configs" / name) for name in ("wetlands.yaml", "demo-cpu.yaml")]


class InterruptAt(Callback):
    """Sends this process SIGINT after training batch ``step`` (a user's Ctrl+C)."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:  # noqa: ANN001 - Lightning hook
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGINT)


def _fit(root: Path, *extra: str) -> None:
    main(
        [
            "fit",
            *(arg for config in CONFIGS for arg in ("--config", config)),
            f"--data.init_args.root={root}",
            "--data.init_args.patch_size=64",
            "--data.init_args.batch_size=4",
            "--data.init_args.length=16",  # 4 steps per epoch
            "--data.init_args.num_workers=0",
            "--model.init_args.net.init_args.decoder_channels=32",
            "--test_after_fit=false",
            *extra,
        ]
    )


def _step(checkpoint: Path) -> int:
    return int(torch.load(checkpoint, map_location="cpu", weights_only=False)["global_step"])


@pytest.mark.slow
def test_max_steps_mid_epoch_saves_last_ckpt_and_resumes(
    synth_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    # stops inside the first epoch, before any validation: EarlyStopping and ModelCheckpoint watch
    # val/rare_iou, which is not logged yet, and must not fail
    _fit(synth_copy, "--trainer.max_steps=2")
    [last] = list(tmp_path.glob("runs/demo-cpu/**/last.ckpt"))
    assert _step(last) == 2
    # resumed, it crosses an epoch end (validation, best.ckpt) and stops mid-epoch again: last.ckpt is at step 6
    _fit(synth_copy, "--trainer.max_steps=6", f"--ckpt_path={last}")
    [last] = sorted(tmp_path.glob("runs/demo-cpu/**/last.ckpt"), key=lambda p: p.stat().st_mtime)[-1:]
    assert _step(last) == 6
    assert list(tmp_path.glob("runs/demo-cpu/**/best.ckpt"))


@pytest.mark.slow
def test_ctrl_c_during_fit_stops_after_the_step_with_last_ckpt(
    synth_copy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        _fit(
            synth_copy,
            "--trainer.max_steps=40",
            '--trainer.callbacks+={"class_path": "tests.test_fit_stops.InterruptAt", "init_args": {"step": 1}}',
        )
    assert exit_info.value.code == 130
    [last] = list(tmp_path.glob("runs/demo-cpu/**/last.ckpt"))
    assert _step(last) == 1
    assert (
        capsys.readouterr()
        .err.strip()
        .splitlines()[-1]
        .endswith(
            "rareseg fit: interrupted (SIGINT); stopped after the running step; resume with --ckpt_path "
            f"{last.relative_to(tmp_path)}"
        )
    )
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
