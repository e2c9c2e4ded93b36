"""ScenePredictionWriter: trainer.predict writes what predict_scene writes, once per scene, also under DDP."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from lightning.pytorch import Trainer
from torch.utils.data import DataLoader

from rareseg.datamodules import DataError, LissIVDataModule
from rareseg.inference import OUTPUTS, ScenePredictionWriter, load_predictor, predict_scene
from rareseg.lightning_modules import RareSegModule
from tests.conftest import CALIBRATED_THRESHOLDS
from tests.ddp import CloseProcessGroupAtExit
from tests.inference.helpers import LocalNet, make_module

#: Small tiles so a 256 px scene has 3 x 3 overlapping tiles in 3 forward passes.
OPTIONS = {"tile": 128, "overlap": 16, "batch_size": 4}
RASTERS = ("mask.tif", "rare_prob.tif", "saliency_topk.tif")


def _predict(
    module,
    datamodule,
    writer: ScenePredictionWriter,
    ckpt_path: Path | None,
    root_dir: Path,
    callbacks=(),
    **trainer_kwargs,
) -> None:
    defaults = dict(
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=root_dir,
    )
    trainer = Trainer(**{**defaults, **trainer_kwargs}, callbacks=[writer, *callbacks])
    trainer.predict(module, datamodule=datamodule, ckpt_path=ckpt_path, return_predictions=False)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _unlabelled_scenes(synth_root: Path, folder: Path, stems: list[str]) -> list[Path]:
    """Copies of synthetic scene images outside the dataset root, named ``field_<stem>`` (no masks)."""
    folder.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy(synth_root / "images" / f"{stem}.tif", folder / f"field_{stem}.tif")) for stem in stems]


def _assert_same_as_predict_scene(written: Path, scene: Path, checkpoint_path: Path, direct_dir: Path) -> None:
    """The writer's rasters equal those of predict_scene on the same scene, options and checkpoint thresholds."""
    direct = predict_scene(load_predictor(checkpoint_path, device="cpu"), scene, direct_dir, **OPTIONS)
    for name in RASTERS:
        np.testing.assert_array_equal(_read(written / name), _read(direct.outputs[name]), err_msg=name)
    summary = json.loads((written / "summary.json").read_text())
    assert summary["rare_classes"] == direct.summary["rare_classes"]
    assert summary["rare_classes"] == [
        {"id": 4, "name": "water", "threshold": 0.5},
        {"id": 5, "name": "wetland", "threshold": CALIBRATED_THRESHOLDS[5]},
    ]
    assert summary["threshold_source"] == "checkpoint+default"
    assert summary["input"] == str(scene.resolve()) and summary["checkpoint"] == str(checkpoint_path)


def _assert_complete(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == sorted(OUTPUTS)  # every output, no staging folder left


def test_trainer_predict_writes_each_scene_as_predict_scene_does(
    synth_root: Path, checkpoint_path: Path, tmp_path: Path
) -> None:
    scenes = _unlabelled_scenes(synth_root, tmp_path / "new", ["scene_01", "scene_03"])  # scene_01 has a nodata margin
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False, predict_inputs=[str(tmp_path / "new")])
    module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    out = tmp_path / "predictions"
    _predict(module, datamodule, ScenePredictionWriter(output_dir=str(out), **OPTIONS), checkpoint_path, tmp_path)
    assert sorted(p.name for p in out.iterdir()) == ["field_scene_01", "field_scene_03", "predictions.json"]
    for scene in scenes:
        _assert_complete(out / scene.stem)
        _assert_same_as_predict_scene(out / scene.stem, scene, checkpoint_path, tmp_path / "direct" / scene.stem)
    index = json.loads((out / "predictions.json").read_text())
    assert index["checkpoint"] == str(checkpoint_path)
    assert index["scenes"] == [{"name": s.stem, "input": str(s.resolve()), "folder": s.stem, "rank": 0} for s in scenes]


@pytest.mark.parametrize(
    ("options", "ckpt", "expected", "source"),
    [
        ({"threshold": 0.9}, True, [0.9, 0.9], "override"),
        ({"rare_classes": ["wetland"]}, False, [0.5], "default"),  # no checkpoint restored: no calibrated thresholds
    ],
)
def test_threshold_and_rare_class_options_reach_the_outputs(
    synth_root, checkpoint_path, tmp_path, options, ckpt, expected, source
) -> None:
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False)  # predicts the test split: scene_03
    module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    writer = ScenePredictionWriter(output_dir=str(tmp_path / "out"), **OPTIONS, **options)
    _predict(module, datamodule, writer, checkpoint_path if ckpt else None, tmp_path)
    summary = json.loads((tmp_path / "out" / "scene_03" / "summary.json").read_text())
    assert [c["threshold"] for c in summary["rare_classes"]] == expected
    assert summary["threshold_source"] == source
    assert _read(tmp_path / "out" / "scene_03" / "rare_prob.tif").shape[0] == len(expected)


def test_nan_and_infinite_pixels_are_nodata_in_predict_outputs(synth_root, checkpoint_path, tmp_path) -> None:
    with rasterio.open(synth_root / "images" / "scene_03.tif") as src:
        image, profile = src.read().astype(np.float32), src.profile
    image[0, 30:70, 40:120] = np.nan
    image[1, 200, :] = np.inf
    image[2, 100:140, 10:20] = -np.inf
    bad = ~np.isfinite(image).all(axis=0) | (image == 0).all(axis=0)
    profile.update(dtype="float32")
    (tmp_path / "new").mkdir()
    with rasterio.open(tmp_path / "new" / "field.tif", "w", **profile) as dst:
        dst.write(image)
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False, predict_inputs=[str(tmp_path / "new")])
    module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    _predict(module, datamodule, ScenePredictionWriter(output_dir=str(tmp_path / "out"), **OPTIONS), None, tmp_path)
    mask = _read(tmp_path / "out" / "field" / "mask.tif")[0]
    np.testing.assert_array_equal(mask == 255, bad)
    probs = _read(tmp_path / "out" / "field" / "rare_prob.tif")
    assert probs[:, ~bad].max() <= 100 and (probs[:, bad] == 255).all()
    summary = json.loads((tmp_path / "out" / "field" / "summary.json").read_text())
    assert summary["nodata_pixels"] == int(bad.sum())


def test_unknown_rare_class_fails_before_any_scene_is_written(synth_root, checkpoint_path, tmp_path) -> None:
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False)
    module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    writer = ScenePredictionWriter(output_dir=str(tmp_path / "out"), rare_classes=["glacier"], **OPTIONS)
    with pytest.raises(DataError, match="unknown rare class 'glacier'"):
        _predict(module, datamodule, writer, checkpoint_path, tmp_path)
    assert not (tmp_path / "out").exists()


def test_options_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match=r"overlap must be in \[0, tile / 2\] = \[0, 64\] pixels, got 100"):
        ScenePredictionWriter(tile=128, overlap=100)
    with pytest.raises(ValueError, match="threshold must be a probability"):
        ScenePredictionWriter(threshold=1.5)


def test_unsupported_trainer_precision_is_refused(synth_root, tmp_path) -> None:
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False)
    with pytest.raises(ValueError, match="trainer precision '64-true' is not supported"):
        _predict(
            make_module(LocalNet()),
            datamodule,
            ScenePredictionWriter(output_dir=str(tmp_path / "out"), **OPTIONS),
            None,
            tmp_path,
            precision="64-true",
        )


def test_batches_of_crops_are_skipped_with_a_warning(tmp_path) -> None:
    crops = DataLoader([{"image": torch.zeros(3, 16, 16)}] * 2, batch_size=2)
    writer = ScenePredictionWriter(output_dir=str(tmp_path / "out"))
    trainer = Trainer(
        accelerator="cpu",
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[writer],
    )
    with pytest.warns(UserWarning, match="did not return a scene descriptor"):
        predictions = trainer.predict(make_module(LocalNet()), crops)
    assert predictions[0]["probs"].shape == (2, 6, 16, 16)
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_ddp_writes_every_scene_exactly_once(synth_root: Path, checkpoint_path: Path, tmp_path: Path) -> None:
    """Three scenes on two CPU processes: Lightning's unrepeated sampler gives rank 0 scenes 0 and 2, rank 1 scene 1."""
    scenes = _unlabelled_scenes(synth_root, tmp_path / "new", ["scene_00", "scene_01", "scene_02"])
    datamodule = LissIVDataModule(str(synth_root), generate_if_missing=False, predict_inputs=[str(s) for s in scenes])
    module = RareSegModule.load_from_checkpoint(checkpoint_path, map_location="cpu")
    out = tmp_path / "predictions"
    _predict(
        module,
        datamodule,
        ScenePredictionWriter(output_dir=str(out), **OPTIONS),
        checkpoint_path,
        tmp_path,
        strategy="ddp_spawn",
        devices=2,
        callbacks=[CloseProcessGroupAtExit()],
    )
    index = json.loads((out / "predictions.json").read_text())
    # gathered from both ranks without de-duplication: a scene predicted twice would be listed twice
    assert [(s["name"], s["rank"]) for s in index["scenes"]] == [
        ("field_scene_00", 0),
        ("field_scene_01", 1),
        ("field_scene_02", 0),
    ]
    assert sorted(p.name for p in out.iterdir()) == [
        "field_scene_00",
        "field_scene_01",
        "field_scene_02",
        "predictions.json",
    ]
    for scene in scenes:
        _assert_complete(out / scene.stem)
    _assert_same_as_predict_scene(out / "field_scene_01", scenes[1], checkpoint_path, tmp_path / "direct")
