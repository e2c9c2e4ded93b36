"""Tests for rareseg.inference.rasters."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from rareseg.inference.rasters import (
    BLOCK,
    BlockRowWriter,
    build_overviews,
    output_profile,
    overview_factors,
    write_mask_preview,
    write_probability_preview,
)


def _source(path: Path, height: int, width: int) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=height,
        width=width,
        count=1,
        dtype="uint8",
        crs="EPSG:32644",
        transform=from_origin(0, 0, 5.8, 5.8),
    ) as dst:
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
        assert (profile["height"], profile["width"], profile["crs"], profile["transform"]) == (
            50,
            70,
            src.crs,
            src.transform,
        )
    assert (profile["count"], profile["dtype"], profile["nodata"], profile["tiled"]) == (3, "float32", -1.0, True)
    assert profile["compress"] == "deflate"


def _write(path: Path, data: np.ndarray, **tags: tuple[float, ...]) -> Path:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype="uint8",
        nodata=255,
        crs="EPSG:32644",
        transform=from_origin(0, 0, 5.8, 5.8),
    ) as dst:
        dst.write(data)
        if "scales" in tags:
            dst.scales = tags["scales"]
    return path


def test_mask_preview_paints_class_colours_and_leaves_nodata_transparent(tmp_path: Path) -> None:
    mask = np.array([[[0, 1, 2, 255], [2, 2, 1, 0]]], dtype=np.uint8)
    colours = [(10, 20, 30), (200, 100, 0), (0, 255, 0)]
    write_mask_preview(_write(tmp_path / "mask.tif", mask), tmp_path / "mask.png", colours, max_side=64)
    rgba = np.asarray(PIL.Image.open(tmp_path / "mask.png").convert("RGBA"))
    expected = np.array(
        [[(*colours[c], 255) if c != 255 else (0, 0, 0, 0) for c in row] for row in mask[0]], dtype=np.uint8
    )
    np.testing.assert_array_equal(rgba[..., 3], expected[..., 3])
    np.testing.assert_array_equal(rgba[rgba[..., 3] > 0], expected[expected[..., 3] > 0])


def test_probability_preview_is_magma_of_the_highest_rare_probability(tmp_path: Path) -> None:
    percent = np.array([[[0, 40, 100, 255]], [[10, 90, 5, 255]]], dtype=np.uint8)
    write_probability_preview(
        _write(tmp_path / "prob.tif", percent, scales=(0.01, 0.01)), tmp_path / "prob.png", max_side=64
    )
    rgba = np.asarray(PIL.Image.open(tmp_path / "prob.png").convert("RGBA"))
    expected = matplotlib.colormaps["magma"](np.array([0.10, 0.90, 1.00]), bytes=True)
    np.testing.assert_array_equal(rgba[0, :3], expected)
    assert rgba[0, 3, 3] == 0


def test_previews_are_decimated_to_the_longer_side(tmp_path: Path) -> None:
    mask = np.zeros((1, 300, 120), dtype=np.uint8)
    write_mask_preview(_write(tmp_path / "mask.tif", mask), tmp_path / "mask.png", [(1, 2, 3)], max_side=100)
    # step ceil(300 / 100) = 3
    assert PIL.Image.open(tmp_path / "mask.png").size == (40, 100)
