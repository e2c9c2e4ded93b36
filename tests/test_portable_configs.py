"""The shipped configs run unchanged under a plain LightningCLI, and give ``rareseg fit`` the same task."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import rasterio
import torch
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from rareseg.training import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
ROWS = sorted(p for p in (CONFIGS / "ablations").glob("[0-9]*.yaml"))

#: Exactly the CLI the issue names: nothing of rareseg's, the model and data classes from the config.
PLAIN_CLI = """
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

cli = LightningCLI(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True)
cli.trainer.save_checkpoint(cli.trainer.default_root_dir + "/fast.ckpt")  # fast_dev_run saves none itself
"""


def _demo_sized(root: Path, out: Path) -> list[str]:
    """Overrides that make the recipe a few seconds on a CPU (the same for both commands)."""
    return [
        "--config", str(CONFIGS / "wetlands.yaml"),
        "--config", str(CONFIGS / "demo-cpu.yaml"),
        "--data.init_args.root", str(root),
        "--data.init_args.patch_size", "64",
        "--data.init_args.batch_size", "2",
        "--data.init_args.num_workers", "0",
        "--model.init_args.net.init_args.decoder_channels", "32",
        "--trainer.logger.init_args.save_dir", str(out),
        "--trainer.default_root_dir", str(out),
        "--trainer.fast_dev_run=true",
    ]  # fmt: skip


@pytest.mark.slow
def test_plain_lightning_cli_fits_the_recipe_and_rareseg_infer_reads_its_checkpoint(
    synth_root: Path, tmp_path: Path
) -> None:
    plain_dir, rareseg_dir = tmp_path / "plain", tmp_path / "rareseg"
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", PLAIN_CLI, "fit", *_demo_sized(synth_root, plain_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    plain = torch.load(plain_dir / "fast.ckpt", weights_only=False, map_location="cpu")
    assert plain["global_step"] == 1

    # the task learned the data's classes and statistics, and the checkpoint keeps the data settings
    hparams = plain["hyper_parameters"]
    assert hparams["num_classes"] == 6 and hparams["in_channels"] == 3 and hparams["rare_classes"] == [4, 5]
    assert hparams["class_names"][5] == "wetland"
    stats = json.loads((synth_root / "stats.json").read_text())
    assert hparams["band_mean"] == pytest.approx(stats["band_mean"])
    assert plain["datamodule_hyper_parameters"]["patch_size"] == 64
    assert plain["datamodule_hyper_parameters"]["root"] == str(synth_root)

    # the same files under rareseg fit give the same task hyperparameters and data settings
    cli = run_cli(["fit", *_demo_sized(synth_root, rareseg_dir)])
    cli.trainer.save_checkpoint(rareseg_dir / "fast.ckpt")
    ours = torch.load(rareseg_dir / "fast.ckpt", weights_only=False, map_location="cpu")
    assert ours["hyper_parameters"] == hparams
    assert ours["datamodule_hyper_parameters"] == plain["datamodule_hyper_parameters"]
    assert set(ours["state_dict"]) == set(plain["state_dict"])

    # rareseg infer predicts a scene with the plain CLI's checkpoint
    scene = sorted((synth_root / "images").glob("*.tif"))[0]
    rareseg = Path(sys.executable).with_name("rareseg")
    out = tmp_path / "infer"
    infer = subprocess.run(
        [str(rareseg), "infer", "--checkpoint", str(plain_dir / "fast.ckpt"), "--input", str(scene)]
        + ["--out", str(out), "--tile", "128", "--overlap", "16", "--device", "cpu", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert infer.returncode == 0, infer.stderr[-3000:]
    with rasterio.open(out / "mask.tif") as mask, rasterio.open(scene) as source:
        assert (mask.width, mask.height, mask.crs) == (source.width, source.height, source.crs)
        assert int(mask.read(1).max()) < 6 or int(mask.read(1).max()) == 255


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")  # pytest's own argv is not ours
@pytest.mark.parametrize("row", ROWS, ids=lambda p: p.stem)
def test_every_ablation_row_trains_on_a_root_with_other_classes_under_a_plain_lightning_cli(
    row: Path, three_class_root: Path, tmp_path: Path
) -> None:
    """Each row on top of wetlands.yaml builds and trains one step on a 3-class root, with no rareseg CLI.

    The rows name no class: classes, rare classes, frequencies and the majority class all come
    from the root (land / river / marsh here), so every row runs on a user's own dataset.
    """
    cli = LightningCLI(
        LightningModule,
        LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        run=False,
        args=[
            "--config", str(CONFIGS / "wetlands.yaml"),
            "--config", str(row),
            "--data.init_args.root", str(three_class_root),
            "--data.init_args.num_workers", "0",
            "--data.init_args.patch_size", "64",
            "--data.init_args.batch_size", "2",
            "--model.init_args.net.init_args.decoder_channels", "16",
            "--trainer.logger", "false",
            "--trainer.default_root_dir", str(tmp_path),
            "--trainer.fast_dev_run", "1",
        ],
    )  # fmt: skip
    assert cli.model.net is None  # built in configure_model, from the datamodule
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    assert (cli.datamodule.class_names, cli.datamodule.rare_classes) == (["land", "river", "marsh"], [1, 2])
    assert cli.model.net is not None and cli.trainer.global_step == 1
    metrics = cli.trainer.callback_metrics
    assert torch.isfinite(metrics["train/loss_epoch"]), sorted(metrics)
    assert {"val/rare_iou", "val/iou/river", "val/iou/marsh"} <= set(metrics), sorted(metrics)
