"""Tests for rareseg.web.uploads: checking uploads by reading them, and the input preview."""

from __future__ import annotations

from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import rasterio

from rareseg.datamodules import DataError
from rareseg.synth.preview import false_colour
from rareseg.web import inspect_upload, preview_shape
from tests.web.helpers import truncated_copy, write_tiff


@pytest.mark.parametrize(
    ("height", "width", "side", "expected"),
    [(256, 256, 1024, (256, 256)), (1000, 300, 256, (250, 75)), (100, 100, 30, (25, 25)), (7, 5000, 16, (1, 15))],
)
def test_preview_shape_uses_one_integer_step(height: int, width: int, side: int, expected: tuple[int, int]) -> None:
    assert preview_shape(height, width, side) == expected


def test_accepted_scene_gets_its_false_colour_preview(scene: Path, tmp_path: Path) -> None:
    info = inspect_upload(scene, "my scene.tif", 3, tmp_path / "preview.png", preview_side=1024)
    with rasterio.open(scene) as src:
        assert (info.width, info.height, info.bands, info.crs) == (256, 256, 3, "EPSG:32644")
        expected = false_colour(src.read(), src.nodata)
        nodata = np.all(src.read() == 0, axis=0)
    preview = matplotlib.image.imread(tmp_path / "preview.png")
    np.testing.assert_array_equal(np.rint(preview[..., :3] * 255).astype(np.uint8), expected)
    assert nodata.any() and (expected[nodata] == 0).all() and expected[~nodata].any()


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_preview_is_decimated_and_a_scene_without_crs_is_accepted(tmp_path: Path) -> None:
    image = np.random.default_rng(0).integers(1, 1000, size=(3, 90, 60), dtype=np.uint16)
    info = inspect_upload(
        write_tiff(tmp_path / "x.tif", image, crs=None), "x.tif", 3, tmp_path / "p.png", preview_side=30
    )
    assert info.crs is None
    assert matplotlib.image.imread(tmp_path / "p.png").shape[:2] == (30, 20)


def test_a_single_band_scene_is_previewed_in_grey(tmp_path: Path) -> None:
    image = np.arange(1, 65, dtype=np.uint16).reshape(1, 8, 8)
    inspect_upload(write_tiff(tmp_path / "x.tif", image), "x.tif", 1, tmp_path / "p.png", preview_side=64)
    preview = matplotlib.image.imread(tmp_path / "p.png")[..., :3]
    assert np.array_equal(preview[..., 0], preview[..., 1]) and np.array_equal(preview[..., 0], preview[..., 2])
    assert preview[0, 0, 0] == 0 and preview[7, 7, 0] == 1.0


def test_bad_uploads_name_the_uploaded_file(scene: Path, tmp_path: Path) -> None:
    text = tmp_path / "a"
    text.write_text("just some text, not an image\n")
    png = tmp_path / "b"
    matplotlib.image.imsave(png, np.zeros((8, 8, 3)), format="png")
    four = write_tiff(tmp_path / "c", np.ones((4, 16, 16), dtype=np.uint16))
    cases = [
        (text, r"notes\.txt: not a GeoTIFF \(it cannot be read as a raster image\)"),
        (png, r"notes\.txt: not a GeoTIFF \(it is a PNG image\)"),
        (
            truncated_copy(scene, tmp_path / "d"),
            r"notes\.txt: corrupt or truncated GeoTIFF \(its header cannot be read\)",
        ),
        (
            truncated_copy(scene, tmp_path / "e", cog=True),
            r"notes\.txt: corrupt or truncated GeoTIFF \(its pixels cannot be read\)",
        ),
        (four, r"notes\.txt: has 4 bands, the model expects 3"),
    ]
    for path, message in cases:
        with pytest.raises(DataError, match=message):
            inspect_upload(path, "notes.txt", 3, tmp_path / "never.png", preview_side=64)
    assert not (tmp_path / "never.png").exists()
