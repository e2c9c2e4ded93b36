"""The rareseg command: LightningCLI wiring from the YAML configs to a trained checkpoint."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from rareseg.cli import main
from rareseg.training import run_cli

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _tiny_run_args(root: Path, out: Path, seed_method: bool = False) -> list[str]:
    """Demo-sized arguments; ``seed_method`` adds the seed's full method (ablation row 11) on top of the recipe."""
    seed = ["--config", str(CONFIGS / "ablations" / "11-full-babysitting.yaml")] if seed_method else []
    return [
        "--config",
        str(CONFIGS / "wetlands.yaml"),
        "--config",
        str(CONFIGS / "demo-cpu.yaml"),
        *seed,
        "--data.init_args.root",
        str(root),
        "--data.init_args.patch_size",
        "64",
        "--data.init_args.batch_size",
        "2",
        "--data.init_args.num_workers",
        "0",
        "--model.init_args.net.init_args.decoder_channels",
        "32",
        "--trainer.logger.init_args.save_dir",
        str(out),
        "--trainer.default_root_dir",
        str(out),
    ]


@pytest.mark.parametrize("seed_method", [False, True], ids=["recipe", "seed-method"])
def test_fast_dev_run_on_the_wetlands_recipe(synth_root: Path, tmp_path: Path, seed_method: bool) -> None:
    cli = run_cli(["fit", *_tiny_run_args(synth_root, tmp_path, seed_method), "--trainer.fast_dev_run", "true"])
    module, data = cli.model, cli.datamodule
    assert cli.trainer.global_step == 1
    assert module.net.num_classes == data.num_classes == 6
    if seed_method:
        assert list(module.criterion.weights.shape) == [6]  # ARBT got the linked class frequencies
        assert data.sampler_name == "saliency" and module.net.saliency_block is not None
    else:  # the measured best recipe: plain SegFormer, cross-entropy, rare-class sampling at T = 0.01
        assert type(module.criterion).__name__ == "CrossEntropyLoss" and module.net.saliency_block is None
        assert (data.sampler_name, data.rare_temperature) == ("rare", 0.01)
    assert module.hparams.band_mean == pytest.approx(data.band_mean)
    assert module.rare_classes == (4, 5)


@pytest.mark.slow
def test_fit_then_test_writes_a_checkpoint_that_reloads(synth_root: Path, tmp_path: Path) -> None:
    args = _tiny_run_args(synth_root, tmp_path)
    cli = run_cli(
        ["fit", *args, "--trainer.max_epochs", "1", "--data.init_args.length", "8", "--test_after_fit", "false"]
    )
    best = Path(cli.trainer.checkpoint_callback.best_model_path)
    assert best.is_file() and cli.trainer.global_step == 4
    from rareseg.lightning_modules import RareSegModule

    reloaded = RareSegModule.load_from_checkpoint(best, map_location="cpu")
    x = torch.randn(1, 3, 64, 64)
    cli.model.eval()
    reloaded.eval()
    torch.testing.assert_close(reloaded(x).logits, cli.model.cpu()(x).logits)
    assert reloaded.hparams.class_names[5] == "wetland"


@pytest.mark.slow
def test_wandb_offline_run_has_per_class_curves_knobs_and_panels(synth_root: Path, tmp_path: Path, monkeypatch) -> None:
    """The offline run file holds the history keys (protobuf stores them as plain UTF-8) and the panels' PNGs."""
    import wandb

    wandb.finish()  # a run left open by an earlier test would be reused
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    args = _tiny_run_args(synth_root, tmp_path, seed_method=True)  # the Babysitter and CASM log knobs and traces
    run_cli(
        [
            "fit",
            *args,
            "--trainer.max_epochs",
            "2",
            "--data.init_args.length",
            "4",
            "--trainer.log_every_n_steps",
            "1",
            "--test_after_fit",
            "false",
        ]
    )
    wandb.finish()
    runs = list(tmp_path.rglob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1
    keys = [f"val/{m}/{c}" for m in ("iou", "recall", "precision", "f1") for c in ("cropland", "water", "wetland")]
    keys += ["val/rare_recall", "val/rare_iou", "val/majority_precision", "val/miou", "train/rho", "train/p_r"]
    keys += [
        f"babysitter/{k}"
        for k in (
            "criterion.lam",
            "criterion.delta",
            "optimizer.kappa",
            "optimizer.lr",
            "datamodule.sampler.salient_fraction",
        )
    ]
    # wandb's writer process may still be appending to the file after finish() returns on a busy
    # machine (the val/* records were missing once in a CI run with two trainings beside it)
    deadline = time.monotonic() + 60
    while True:
        history = runs[0].read_bytes()
        missing = [k for k in keys if k.encode() not in history]
        if not missing or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not missing, missing
    images = {p.name.rsplit("_", 2)[0] for p in runs[0].parent.rglob("media/images/val/*.png")}
    assert images == {"samples", "confusion_matrix"}


@pytest.mark.slow
def test_fast_dev_run_of_the_console_command_on_the_embedded_data(tmp_path: Path) -> None:
    """`rareseg fit --config configs/wetlands.yaml --trainer.fast_dev_run=true` in a fresh folder.

    It generates the data and exits 0.
    """
    import os
    import subprocess
    import sys

    rareseg = Path(sys.executable).with_name("rareseg")
    env = {**os.environ, "WANDB_MODE": "disabled"}
    done = subprocess.run(
        [str(rareseg), "fit", "--config", str(CONFIGS / "wetlands.yaml"), "--trainer.fast_dev_run=true"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert len(list((tmp_path / "data" / "liss4-synth" / "images").glob("*.tif"))) == 8
    assert "max_steps=1` reached" in done.stdout + done.stderr


def _predict_args(root: Path, checkpoint: Path | None, out: Path) -> list[str]:
    """`rareseg predict` on the tiny recipe with small tiles."""
    args = [
        "predict",
        *_tiny_run_args(root, out.parent),
        "--trainer.callbacks.init_args.output_dir",  # the recipe's last callback: ScenePredictionWriter
        str(out),
        "--trainer.callbacks.init_args.tile",
        "128",
        "--trainer.callbacks.init_args.overlap",
        "16",
    ]
    return args if checkpoint is None else [*args, "--ckpt_path", str(checkpoint)]


def test_fit_then_predict_writes_the_test_split_with_the_calibrated_thresholds(
    synth_root: Path, tmp_path: Path, monkeypatch
) -> None:
    """`rareseg fit` then `rareseg predict --ckpt_path best.ckpt`.

    The CLI restores hparams only from its own checkpoints.
    """
    from rareseg.inference import OUTPUTS

    monkeypatch.chdir(tmp_path)
    fit = run_cli(
        [
            "fit",
            *_tiny_run_args(synth_root, tmp_path / "fit"),
            "--trainer.max_epochs",
            "1",
            "--data.init_args.length",
            "2",
            "--test_after_fit",
            "false",
        ]
    )
    best = Path(fit.trainer.checkpoint_callback.best_model_path)
    calibrated = torch.load(best, map_location="cpu", weights_only=False)["rareseg_thresholds"]
    assert sorted(calibrated) == [4, 5]
    predict = run_cli(_predict_args(synth_root, best, tmp_path / "predict" / "out"))
    assert predict.trainer.predict_loop.return_predictions is False  # the writer wrote them; nothing is kept in memory
    folder = tmp_path / "predict" / "out" / "scene_03"
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["rare_classes"] == [
        {"id": c, "name": n, "threshold": float(calibrated[c])} for c, n in ((4, "water"), (5, "wetland"))
    ]
    assert summary["threshold_source"] == "checkpoint" and summary["checkpoint"] == str(best)
    assert summary["tiles"]["size"] == [128, 128]
    index = json.loads((tmp_path / "predict" / "out" / "predictions.json").read_text())
    assert [s["name"] for s in index["scenes"]] == ["scene_03"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "error: predict needs --ckpt_path CHECKPOINT"),
        (
            ["--ckpt_path", "best.ckpt", "--trainer.callbacks.init_args.overlap", "100"],
            "error: ScenePredictionWriter: overlap must be in [0, tile / 2] = [0, 64] pixels, got 100",
        ),
        (
            ["--ckpt_path", "best.ckpt", "--trainer.callbacks.init_args.input_scale", "zero"],
            "error: ScenePredictionWriter: input scale must be a positive number or auto, got 'zero'",
        ),
    ],
)
def test_predict_usage_errors_stop_before_anything_runs(
    synth_root: Path, tmp_path: Path, capsys, extra: list[str], message: str
) -> None:
    with pytest.raises(SystemExit) as info:
        main([*_predict_args(synth_root, None, tmp_path / "out"), *extra])
    assert info.value.code == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_predict_input_not_found_is_a_one_line_error(synth_root: Path, tmp_path: Path) -> None:
    args = [
        *_predict_args(synth_root, tmp_path / "best.ckpt", tmp_path / "out"),
        "--data.init_args.predict_inputs",
        f"[{tmp_path / 'field.tif'}]",
    ]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == f"rareseg: error: {tmp_path / 'field.tif'}: predict input not found"


def test_help_lists_every_subcommand_with_one_line(capsys) -> None:
    main(["--help"])
    lines = capsys.readouterr().out.splitlines()
    names = ("fit", "validate", "test", "predict", "synth", "infer", "evaluate", "bench", "serve")
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.split()[0] in names]
    assert listed == list(names)


def test_version_is_the_installed_distribution_version(capsys) -> None:
    from importlib.metadata import version

    main(["--version"])
    assert capsys.readouterr().out == f"rareseg {version('rareseg')}\n"


def test_unknown_subcommand_is_a_one_line_error() -> None:
    with pytest.raises(SystemExit) as info:
        main(["fitt"])
    assert str(info.value.code).startswith("rareseg: error: unknown subcommand 'fitt' (choose from fit, validate")


def test_fit_help_from_the_console_command_has_no_lightning_cli_warning(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    rareseg = Path(sys.executable).with_name("rareseg")
    done = subprocess.run(
        [str(rareseg), "fit", "--help"],
        cwd=tmp_path,
        env=os.environ.copy(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0
    assert "--test_after_fit" in done.stdout
    assert "warn" not in done.stderr.lower() and "args parameter" not in done.stdout + done.stderr


@pytest.mark.parametrize("tool", ["infer", "evaluate", "serve"])
def test_tool_help_states_each_default_once(tool: str, capsys) -> None:
    with pytest.raises(SystemExit):
        main([tool, "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines; join them
    assert "(default: None)" not in text
    assert "(default: the checkpoint's calibrated thresholds, else 0.5) (default" not in text
    assert text.count("(default:") >= 3  # values that are worth printing still are


@pytest.mark.slow
def test_test_after_fit_prints_the_per_class_table_of_the_best_checkpoint(
    synth_root: Path, tmp_path: Path, capsys
) -> None:
    args = _tiny_run_args(synth_root, tmp_path)
    run_cli(["fit", *args, "--trainer.max_epochs", "1", "--data.init_args.length", "2", "--test_after_fit", "true"])
    out = capsys.readouterr().out
    table = out[out.index("Test split, per class (scene_03):") :].splitlines()
    assert table[1].split() == ["class", "IoU", "recall", "prec.", "F1", "pixels"]
    assert [line.split()[0] for line in table[2:8]] == [
        "cropland",
        "fallow",
        "forest",
        "built_up",
        "water*",
        "wetland*",
    ]
    assert table[8].startswith("* rare; rare_recall")
