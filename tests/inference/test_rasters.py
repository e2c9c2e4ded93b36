"""Tests for rareseg.inference.rasters."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from rareseg.inference.rasters import BLOCK, BlockRowWriter, build_overviews, output_profile, overview_factors


def _source(path: Path, height: int, width: int) -> Path:
    with rasterio.open(path, "w", driver="GTiff", height=height, width=width, count=1, dtype="uint8", crs="EPSG:32644", transform=from_origin(0, 0, 5.8, 5.8)) as dst:
        dst.write(np.zeros((1, height, width), dtype=np.uint8))
    return path


def test_block_row_writer_writes_strips_of_any_height_in_order(tmp_path: Path) -> None:
    height, width = 2 * BLOCK + 37, 300
    expected = np.random.default_rng(0).integers(0, 250, size=(2, height, width), dtype=np.uint8)
    with rasterio.open(_source(tmp_path / "src.tif", height, width)) as src:
        profile = output_profile(src, 2, "uint8", 255)
    writes: list[int] = []
    with rasterio.open(tmp_path / "out.tif", "w", **profile) as dst:
        writer = BlockRowWriter(dst)
        for start, stop in [(0, 100), (100, 130), (130, 300), (300, height)]:
            writer.append(expected[:, start:stop])
            writes.append(writer.next_row)
    # only whole block rows are written until the last strip: 0, 0, 256, then everything
    assert writes == [0, 0, BLOCK, height]
    with rasterio.open(tmp_path / "out.tif") as out:
        np.testing.assert_array_equal(out.read(), expected)
        assert out.block_shapes[0] == (BLOCK, BLOCK)
        assert out.compression.value == "DEFLATE"


def test_overview_factors_halve_down_to_the_minimum_side() -> None:
    assert overview_factors(256, 256) == [2]
    assert overview_factors(12000, 9000) == [2, 4, 8, 16, 32, 64]
    assert overview_factors(12000, 9000, min_side=64) == [2, 4, 8, 16, 32, 64, 128]
    assert overview_factors(100, 60) == []


def test_build_overviews_adds_the_factors(tmp_path: Path) -> None:
    path = _source(tmp_path / "x.tif", 600, 140)
    build_overviews(path, Resampling.nearest)
    with rasterio.open(path) as src:
        assert src.overviews(1) == overview_factors(600, 140) == [2, 4]
        assert src.tags(ns="rio_overview") == {"resampling": "nearest"}


def test_output_profile_copies_the_grid(tmp_path: Path) -> None:
    with rasterio.open(_source(tmp_path / "src.tif", 50, 70)) as src:
        profile = output_profile(src, 3, "float32", -1.0)
        assert (profile["height"], profile["width"], profile["crs"], profile["transform"]) == (50, 70, src.crs, src.transform)
    assert (profile["count"], profile["dtype"], profile["nodata"], profile["tiled"]) == (3, "float32", -1.0, True)
    assert profile["compress"] == "deflate"
