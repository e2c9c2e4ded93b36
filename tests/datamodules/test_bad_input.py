"""Every bad dataset root gives a one-line error naming the file and the problem."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import yaml

from rareseg.cli import main
from rareseg.datamodules import DataError, LissIVDataModule


def _rewrite(path, transform=None, data=None, count=None, crs="keep"):
    with rasterio.open(path) as src:
        profile, array = src.profile, src.read()
    if data is not None:
        array = data
    if count is not None:
        array = np.concatenate([array, array[:1]])[:count]
    profile.update(count=array.shape[0])
    if transform is not None:
        profile.update(transform=transform)
    if crs != "keep":
        profile.update(crs=crs)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)


def _error(root) -> str:
    with pytest.raises(DataError) as info:
        LissIVDataModule(str(root), generate_if_missing=False)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_root_without_images(synth_copy) -> None:
    for f in (synth_copy / "images").glob("*.tif"):
        f.unlink()
    assert "no images" in _error(synth_copy) and "images" in _error(synth_copy)


def test_image_without_mask(synth_copy) -> None:
    (synth_copy / "masks" / "scene_02.tif").unlink()
    message = _error(synth_copy)
    assert "scene_02.tif" in message and "no matching mask" in message


def test_mask_grid_differs(synth_copy) -> None:
    with rasterio.open(synth_copy / "masks" / "scene_01.tif") as src:
        shifted = src.transform @ rasterio.Affine.translation(3, 0)
    _rewrite(synth_copy / "masks" / "scene_01.tif", transform=shifted)
    message = _error(synth_copy)
    assert "masks/scene_01.tif" in message and "grid differs" in message


def test_band_count_differs_from_classes_yaml(synth_copy) -> None:
    _rewrite(synth_copy / "images" / "scene_03.tif", count=4)
    message = _error(synth_copy)
    assert "scene_03.tif" in message and "has 4 bands, expected 3" in message


def test_class_id_not_in_classes_yaml(synth_copy) -> None:
    path = synth_copy / "masks" / "scene_03.tif"
    with rasterio.open(path) as src:
        mask = src.read()
    mask[0, 10, 10] = 9
    _rewrite(path, data=mask)
    message = _error(synth_copy)
    assert "masks/scene_03.tif" in message and "class id 9 is not in classes.yaml" in message


def test_non_geotiff_file(synth_copy) -> None:
    (synth_copy / "images" / "scene_00.tif").write_text("this is not an image")
    message = _error(synth_copy)
    assert "scene_00.tif" in message and "not a readable GeoTIFF" in message


def test_image_without_crs(synth_copy) -> None:
    _rewrite(synth_copy / "images" / "scene_00.tif", crs=None)
    message = _error(synth_copy)
    assert "scene_00.tif" in message and "no CRS" in message


def test_classes_yaml_without_rare_class(synth_copy) -> None:
    doc = yaml.safe_load((synth_copy / "classes.yaml").read_text())
    for entry in doc["classes"]:
        entry["rare"] = False
    (synth_copy / "classes.yaml").write_text(yaml.safe_dump(doc))
    assert "no class is marked 'rare: true'" in _error(synth_copy)


def test_cli_reports_bad_root_in_one_line(synth_copy, capsys) -> None:
    (synth_copy / "masks" / "scene_02.tif").unlink()
    with pytest.raises(SystemExit) as info:
        main(
            [
                "fit",
                "--data",
                "rareseg.datamodules.LissIVDataModule",
                "--data.root",
                str(synth_copy),
                "--data.generate_if_missing",
                "false",
                "--model",
                "rareseg.lightning_modules.RareSegModule",
            ]
        )
    assert str(info.value).startswith("rareseg: error: ") and "no matching mask" in str(info.value)
    assert "\n" not in str(info.value)
