"""Runs you can reproduce: own configs, data settings in checkpoints and loggers, W&B modes, TensorBoard."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import yaml

from rareseg.training import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _short_fit(root: Path, out: Path, *extra: str) -> list[str]:
    """One epoch of two crops and one validation batch of the recipe, sized for a CPU."""
    return [
        "fit",
        "--config", str(CONFIGS / "wetlands.yaml"),
        "--config", str(CONFIGS / "demo-cpu.yaml"),
        "--data.init_args.root", str(root),
        "--data.init_args.patch_size", "64",
        "--data.init_args.batch_size", "2",
        "--data.init_args.length", "2",
        "--data.init_args.num_workers", "0",
        "--model.init_args.net.init_args.decoder_channels", "32",
        "--trainer.max_epochs", "1",
        "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(out),
        "--trainer.logger.init_args.save_dir", str(out),
        *extra,
    ]  # fmt: skip


@pytest.fixture()
def wandb_as_configured(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No WANDB_MODE (the tests' default is disabled): the logger's ``offline`` decides; no server is reachable."""
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")  # the discard port: any contact fails
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wandb-home"))


@pytest.mark.slow
def test_two_offline_runs_in_one_folder_keep_their_own_configs_and_data_settings(
    synth_root: Path, tmp_path: Path, wandb_as_configured: None
) -> None:
    import wandb

    out = tmp_path / "runs"
    checkpoints = []
    for seed in (1, 2):
        cli = run_cli(_short_fit(synth_root, out, "--seed_everything", str(seed)))
        checkpoints.append(Path(cli.trainer.checkpoint_callback.best_model_path))
        wandb.finish()
    configs = sorted(out.rglob("config.yaml"), key=lambda p: p.stat().st_mtime)
    run_configs = [p for p in configs if p.parent.parent.name == "rareseg"]  # save_dir/<project>/<run id>/
    assert [p.parent for p in run_configs] == [c.parent.parent for c in checkpoints]
    assert len({p.parent for p in run_configs}) == 2
    for seed, path in zip((1, 2), run_configs, strict=True):
        config = yaml.safe_load(path.read_text())
        assert config["seed_everything"] == seed
        assert config["data"]["init_args"]["patch_size"] == 64
        assert config["trainer"]["logger"]["init_args"]["offline"] is True
    saved = torch.load(checkpoints[1], map_location="cpu", weights_only=False)
    assert saved["datamodule_hyper_parameters"]["patch_size"] == 64
    assert saved["datamodule_hyper_parameters"]["length"] == 2
    assert saved["hyper_parameters"]["class_names"][5] == "wetland"
    # the W&B run (offline, written locally) has the whole config: trainer, model and data
    runs = sorted(out.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 2
    history = runs[-1].read_bytes()
    for key in (b"datamodule", b"patch_size", b"trainer", b"CrossEntropyLoss", b"rare_temperature"):
        assert key in history


def test_online_logger_leaves_wandb_mode_to_the_user(synth_root: Path, tmp_path: Path, wandb_as_configured) -> None:
    """``offline: false``: rareseg sets no WANDB_MODE (fast_dev_run swaps the logger out, so nothing is sent)."""
    run_cli(
        [
            *_short_fit(synth_root, tmp_path),
            "--trainer.logger.init_args.offline",
            "false",
            "--trainer.fast_dev_run",
            "true",
        ]  # fmt: skip
    )
    assert "WANDB_MODE" not in os.environ


@pytest.mark.slow
def test_tensorboard_logger_is_a_one_line_change(synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "runs"
    cli = run_cli(_short_fit(synth_root, out, "--trainer.logger", "lightning.pytorch.loggers.TensorBoardLogger"))
    folder = out / "demo-cpu" / "version_0"  # the W&B block's name and save_dir carry over
    assert Path(cli.trainer.checkpoint_callback.best_model_path).parent == folder / "checkpoints"
    assert (folder / "config.yaml").is_file()
    events = list(folder.glob("events.out.tfevents.*"))
    assert events and b"val/rare_iou" in events[0].read_bytes()
