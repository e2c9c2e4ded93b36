"""Predict-stage scenes: descriptors from the test split or from files, folders and globs; one-line errors."""

from __future__ import annotations

import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import rasterio
import torch

from rareseg.datamodules import DataError, LissIVDataModule, resolve_predict_inputs


def _datamodule(root: Path, **kwargs) -> LissIVDataModule:
    return LissIVDataModule(str(root), patch_size=64, generate_if_missing=False, **kwargs)


def _unlabelled(source: Path, target: Path) -> Path:
    """A copy of a scene image outside any dataset root (no mask anywhere)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(source, target))


def test_predict_stage_yields_the_test_split_scenes_one_per_batch(synth_root: Path) -> None:
    dm = _datamodule(synth_root)
    dm.setup("predict")
    batches = list(dm.predict_dataloader())
    assert dm.split_scenes["test"] == ["scene_03"]
    assert batches == [{"path": str((synth_root / "images" / "scene_03.tif").resolve()), "name": "scene_03"}]
    # device transfer and batch augmentation leave a descriptor as it is
    assert dm.on_after_batch_transfer(dm.transfer_batch_to_device(batches[0], torch.device("cpu"), 0), 0) == batches[0]


def test_predict_inputs_take_files_folders_and_globs_without_masks(synth_root: Path, tmp_path: Path) -> None:
    images = synth_root / "images"
    single = _unlabelled(images / "scene_00.tif", tmp_path / "single" / "field_c.tif")
    folder = tmp_path / "new"
    _unlabelled(images / "scene_01.tif", folder / "field_a.tif")
    _unlabelled(images / "scene_02.tif", folder / "field_b.tiff")
    # the glob reaches field_a.tif a second time: it counts once
    dm = _datamodule(synth_root, predict_inputs=[str(single), str(folder), str(folder / "*.tif")])
    dm.setup("predict")
    names = [batch["name"] for batch in dm.predict_dataloader()]
    assert names == ["field_c", "field_a", "field_b"]
    assert dm.predict_scenes[1]["path"] == str((folder / "field_a.tif").resolve())


def _write(path: Path, bands: int) -> Path:
    profile = {
        "driver": "GTiff",
        "count": bands,
        "height": 8,
        "width": 8,
        "dtype": "uint16",
        "crs": "EPSG:32644",
        "transform": rasterio.Affine(5.8, 0, 4e5, 0, -5.8, 2.3e6),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.ones((bands, 8, 8), dtype=np.uint16))
    return path


def _bad_input(tmp_path: Path, case: str) -> tuple[list[str], str, str]:
    """Predict inputs for a bad case, the name the error must give and the problem it must state."""
    if case == "missing file":
        return [str(tmp_path / "nowhere.tif")], "nowhere.tif", "not found"
    if case == "empty folder":
        (tmp_path / "empty").mkdir()
        return [str(tmp_path / "empty")], "empty", "no GeoTIFF"
    if case == "glob without match":
        return [str(tmp_path / "*.tif")], "*.tif", "no file matches"
    if case == "not a GeoTIFF":
        (tmp_path / "notes.tif").write_text("not a raster\n")
        return [str(tmp_path / "notes.tif")], "notes.tif", "not a readable GeoTIFF"
    if case == "wrong band count":
        return [str(_write(tmp_path / "four.tif", 4))], "four.tif", "has 4 bands, expected 3"
    if case == "same name twice":
        return (
            [str(_write(tmp_path / "a" / "x.tif", 3)), str(_write(tmp_path / "b" / "x.tif", 3))],
            "b/x.tif",
            "same scene name 'x'",
        )
    assert case == "empty list"
    return [], "predict_inputs", "empty"


@pytest.mark.parametrize(
    "case",
    [
        "missing file",
        "empty folder",
        "glob without match",
        "not a GeoTIFF",
        "wrong band count",
        "same name twice",
        "empty list",
    ],
)
def test_bad_predict_input_is_a_one_line_error_naming_it(tmp_path: Path, case: str) -> None:
    inputs, name, problem = _bad_input(tmp_path, case)
    with pytest.raises(DataError) as info:
        resolve_predict_inputs(inputs, bands=3)
    message = str(info.value)
    assert "\n" not in message
    assert name in message and problem in message


def test_bad_predict_input_fails_at_construction(synth_root: Path, tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere.tif: predict input not found"):
        _datamodule(synth_root, predict_inputs=[str(tmp_path / "nowhere.tif")])


def test_more_processes_than_scenes_is_refused(synth_root: Path) -> None:
    dm = _datamodule(synth_root)
    dm.setup("predict")
    dm.trainer = SimpleNamespace(world_size=2)
    with pytest.raises(DataError, match="1 scene\\(s\\) to predict for 2 processes"):
        dm.predict_dataloader()


def test_empty_test_split_has_nothing_to_predict(synth_copy: Path) -> None:
    dm = _datamodule(synth_copy, val_scenes=["scene_02"], test_scenes=[])
    dm.setup("predict")
    with pytest.raises(DataError, match="no scene to predict"):
        dm.predict_dataloader()
