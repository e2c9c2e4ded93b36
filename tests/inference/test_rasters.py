"""Tests for rareseg.inference.rasters."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import matplotlib
import numpy as np
import PIL.Image
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import from_origin

from rareseg.inference.rasters import (
    BLOCK,
    MASK_SIDECARS,
    BlockRowWriter,
    build_overviews,
    output_profile,
    overview_factors,
    write_mask_preview,
    write_mask_sidecars,
    write_probability_preview,
)
from tests.inference.cog import cog_layout_problems
from tests.inference.gdal_c import band_categories


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


def test_build_overviews_adds_the_factors_and_lays_the_file_out_as_a_cog(tmp_path: Path) -> None:
    height, width = 600, 140
    data = np.random.default_rng(3).integers(0, 6, size=(1, height, width), dtype=np.uint8)
    with rasterio.open(_source(tmp_path / "src.tif", height, width)) as src:
        profile = output_profile(src, 1, "uint8", 255)
    path = tmp_path / "x.tif"
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        dst.write_colormap(1, {0: (10, 20, 30, 255), 255: (0, 0, 0, 0)})
        dst.update_tags(1, class_0="cropland")
        dst.scales = (0.5,)
    # a tiled GeoTIFF with overviews appended after its data is not a COG
    assert cog_layout_problems(path) == ["no GDAL structural metadata (ghost header) after the TIFF header"]
    build_overviews(path, Resampling.nearest)
    assert cog_layout_problems(path) == []
    with rasterio.open(path) as out:
        assert out.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
        assert out.overviews(1) == overview_factors(600, 140) == [2, 4]
        assert out.tags()["overview_resampling"] == "nearest"
        assert out.block_shapes == [(BLOCK, BLOCK)] and out.compression.value == "DEFLATE"
        np.testing.assert_array_equal(out.read(), data)
        # nearest overview of factor 2 keeps every other pixel
        np.testing.assert_array_equal(out.read(1, out_shape=(300, 70)), data[0, ::2, ::2])
        assert (out.colormap(1)[0], out.tags(1)["class_0"], out.scales, out.nodata) == (
            (10, 20, 30, 255),
            "cropland",
            (0.5,),
            255,
        )
        assert (out.crs, out.transform) == (src.crs, src.transform)
    # the temporary COG replaced the file: nothing else was left in the folder
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src.tif", "x.tif"]


def test_small_rasters_without_overviews_are_cogs_too(tmp_path: Path) -> None:
    path = _source(tmp_path / "small.tif", 100, 60)
    build_overviews(path, Resampling.average)
    assert cog_layout_problems(path) == []
    with rasterio.open(path) as out:
        assert out.overviews(1) == []


def test_cog_check_notices_a_damaged_tile_trailer(tmp_path: Path) -> None:
    path = _source(tmp_path / "x.tif", 300, 300)
    build_overviews(path, Resampling.nearest)
    data = bytearray(path.read_bytes())
    # the last tile of the file ends the file: its 4 repeated bytes are the last 4
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert any("repeated last 4 bytes" in problem for problem in cog_layout_problems(path))


def test_mask_sidecars_name_the_classes_for_gdal_and_qgis(tmp_path: Path) -> None:
    names = ["cropland", "built-up & roads", "wetland <marsh>"]
    colours = [(230, 200, 90), (200, 30, 30), (0, 160, 160)]
    path = _write(tmp_path / "mask.tif", np.array([[[0, 1, 2, 255]]], dtype=np.uint8))
    with rasterio.open(path, "r+") as dst:
        dst.write_colormap(1, {i: (*c, 255) for i, c in enumerate(colours)})
    write_mask_sidecars(path, names, colours)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["mask.tif", *MASK_SIDECARS])
    gdal = band_categories(path)
    assert gdal.category_names == names
    assert gdal.rat_columns == [("Value", 5), ("Class", 2), ("Red", 6), ("Green", 7), ("Blue", 8)]
    assert gdal.rat_rows == [[str(i), n, *map(str, c)] for i, (n, c) in enumerate(zip(names, colours))]
    # the TIFF colour table has 256 entries; the QGIS style lists only the K classes
    assert gdal.color_entries == 256
    qml = ET.parse(tmp_path / "mask.qml").getroot()
    renderer = qml.find("pipe/rasterrenderer")
    assert (renderer.get("type"), renderer.get("band")) == ("paletted", "1")
    entries = [(e.get("value"), e.get("label"), e.get("color"), e.get("alpha")) for e in renderer.iter("paletteEntry")]
    assert entries == [
        ("0", "cropland", "#e6c85a", "255"),
        ("1", "built-up & roads", "#c81e1e", "255"),
        ("2", "wetland <marsh>", "#00a0a0", "255"),
    ]
    assert (tmp_path / "mask.qml").read_text().startswith("<!DOCTYPE qgis")


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
