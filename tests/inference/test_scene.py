"""Tests for rareseg.inference.scene: whole-scene prediction to GeoTIFFs."""

from __future__ import annotations

import json
import os
import threading
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import pytest
import rasterio
import torch
from torch import nn

from rareseg.datamodules import DataError
from rareseg.inference import (
    OUTPUTS,
    BlockRowWriter,
    InferenceCancelled,
    Predictor,
    SceneResult,
    check_options,
    predict_scene,
)
from rareseg.inference import scene as scene_module
from rareseg.inference.radiometry import RadiometryWarning
from rareseg.inference.scene import PREDICTION_SHARE, TOPK_DONE
from tests.inference.cog import cog_layout_problems
from tests.inference.gdal_c import band_categories
from tests.inference.helpers import (
    BAND_MEAN,
    BAND_STD,
    CLASS_NAMES,
    ConstantNet,
    FailingNet,
    LocalNet,
    TileContextNet,
    make_module,
    write_geotiff,
)

CONSTANT_PROBS = [0.45, 0.1, 0.05, 0.05, 0.3, 0.05]


def _predict(
    net: nn.Module, scene: Path, out: Path, thresholds: dict[int, float] | None = None, **options: Any
) -> SceneResult:
    predictor = Predictor.from_module(make_module(net), device="cpu", thresholds=thresholds)
    return predict_scene(predictor, scene, out, **options)


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _direct_probs(net: nn.Module, image: np.ndarray) -> np.ndarray:
    """float64 softmax of the network on the whole normalised image: the one-tile reference."""
    mean = torch.tensor(BAND_MEAN, dtype=torch.float64)[:, None, None]
    std = torch.tensor(BAND_STD, dtype=torch.float64)[:, None, None]
    normalised = ((torch.from_numpy(image.astype(np.float64)) - mean) / std)[None]
    with torch.no_grad():
        return torch.softmax(net.double()(normalised).logits, dim=1)[0].numpy()


def test_outputs_share_the_input_grid_and_carry_their_metadata(scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = _predict(LocalNet(), scene_path, out, tile=64, overlap=16, batch_size=4)
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    assert result.outputs == {name: out / name for name in OUTPUTS}
    with rasterio.open(scene_path) as src:
        grid = (src.crs, src.transform, src.width, src.height)
    for name, count in (("mask.tif", 1), ("rare_prob.tif", 2), ("saliency_topk.tif", 1)):
        with rasterio.open(out / name) as dst:
            assert (dst.crs, dst.transform, dst.width, dst.height) == grid
            assert (dst.count, dst.dtypes[0], dst.nodata) == (count, "uint8", 255)
            assert dst.block_shapes == [(256, 256)] * count and dst.compression.value == "DEFLATE"
            assert dst.overviews(1) == [2]
        assert cog_layout_problems(out / name) == []
    # QGIS's legend: GDAL's category names, and the default style with exactly the K classes
    assert band_categories(out / "mask.tif").category_names == CLASS_NAMES
    palette = ET.parse(out / "mask.qml").getroot().iter("paletteEntry")
    assert [(entry.get("value"), entry.get("label")) for entry in palette] == [
        (str(i), name) for i, name in enumerate(CLASS_NAMES)
    ]
    with rasterio.open(out / "mask.tif") as mask:
        assert mask.colormap(1)[4] == (30, 90, 230, 255)
        assert mask.colormap(1)[255][3] == 0
        assert mask.descriptions == ("class",)
        assert mask.tags(1)["class_5"] == "wetland"
        assert json.loads(mask.tags()["class_names"]) == CLASS_NAMES
        assert set(np.unique(mask.read(1))) <= set(range(6)) | {255}
    with rasterio.open(out / "rare_prob.tif") as probs:
        assert probs.descriptions == ("water", "wetland")
        assert probs.scales == (0.01, 0.01) and probs.offsets == (0.0, 0.0)
        # one convention: stored round(100 P), scaled value = probability; no unit type, no "percent"
        assert probs.units == (None, None) and "units" not in probs.tags()
        assert probs.tags()["encoding"].startswith("probability = value * 0.01")
        assert set(np.unique(probs.read())) <= set(range(101)) | {255}
    assert set(np.unique(_read(out / "saliency_topk.tif"))) == {0, 1, 255}
    preview = matplotlib.image.imread(out / "preview_mask.png")
    assert preview.shape[:2] == (256, 256)
    assert matplotlib.image.imread(out / "preview_prob.png").shape == (256, 256, 4)
    assert json.loads((out / "summary.json").read_text()) == result.summary


def test_preview_is_decimated_to_the_requested_side(scene_path: Path, tmp_path: Path) -> None:
    _predict(LocalNet(), scene_path, tmp_path, tile=128, overlap=16, preview_max_side=100)
    assert matplotlib.image.imread(tmp_path / "preview_mask.png").shape[:2] == (85, 85)
    assert matplotlib.image.imread(tmp_path / "preview_prob.png").shape[:2] == (85, 85)


@pytest.mark.parametrize(
    ("rows", "cols"), [(slice(0, 256), slice(0, 256)), (slice(0, 230), slice(10, 180)), (slice(0, 40), slice(0, 256))]
)
def test_blended_tiles_equal_the_one_tile_prediction_away_from_tile_edges(
    full_scene_path: Path, tmp_path: Path, rows: slice, cols: slice
) -> None:
    image = _read(full_scene_path)[:, rows, cols]
    scene = write_geotiff(tmp_path / "scene.tif", np.ascontiguousarray(image))
    net = LocalNet()
    single = _predict(net, scene, tmp_path / "single", tile=256, overlap=0)
    multi = _predict(net, scene, tmp_path / "multi", tile=64, overlap=16, batch_size=3)
    assert single.summary["tiles"]["count"] == 1
    assert multi.summary["tiles"]["count"] > 4
    # the single tile is the network on the whole scene (float64 recomputation, percent rounding)
    reference = _direct_probs(net, image)
    single_percent = _read(tmp_path / "single" / "rare_prob.tif").astype(int)
    np.testing.assert_array_less(np.abs(single_percent - np.rint(100 * reference[[4, 5]])), 1.01)
    np.testing.assert_array_equal(_read(tmp_path / "single" / "mask.tif")[0], reference.argmax(axis=0))
    # multi-tile: the 5x5 receptive field differs only within 2 px of a tile edge, where the window is ~0
    multi_percent = _read(tmp_path / "multi" / "rare_prob.tif").astype(int)
    assert np.abs(multi_percent - single_percent).max() <= 1
    # classes differ only where the two best classes are nearly tied
    differs = _read(tmp_path / "multi" / "mask.tif")[0] != _read(tmp_path / "single" / "mask.tif")[0]
    top_two = np.sort(reference, axis=0)[-2:]
    assert differs.mean() < 0.005
    assert np.all(top_two[1][differs] - top_two[0][differs] < 0.02)


def _row_jumps(band: np.ndarray) -> np.ndarray:
    """Mean |p[r] - p[r-1]| over columns, for r = 1..H-1 (index r-1)."""
    return np.abs(np.diff(band.astype(float), axis=0)).mean(axis=1)


def test_blending_leaves_no_seam_at_tile_borders(full_scene_path: Path, tmp_path: Path) -> None:
    net = TileContextNet()
    hard = _predict(net, full_scene_path, tmp_path / "hard", tile=64, overlap=0)
    blended = _predict(net, full_scene_path, tmp_path / "blended", tile=64, overlap=16)
    _predict(LocalNet(), full_scene_path, tmp_path / "natural", tile=64, overlap=16)  # no tile context at all
    assert hard.summary["tiles"]["count"] == 16 and blended.summary["tiles"]["count"] == 25
    for axis in (0, 1):
        jumps = {
            name: _row_jumps(np.moveaxis(_read(tmp_path / name / "rare_prob.tif")[0], axis, 0))
            for name in ("hard", "blended", "natural")
        }
        # without blending the tile context shows: every border (rows 64, 128, 192) jumps
        hard_seams = jumps["hard"][[b - 1 for b in (64, 128, 192)]]
        assert hard_seams.min() > 5 * np.median(jumps["hard"])
        # with blending a seam of height S is a linear ramp over the 16 px overlap: no row (away from the
        # scene's first and last two rows, zero padding of the network) jumps more than the context-free
        # prediction does plus twice S / 16, and none comes near a seam
        ramp = 2 * hard_seams.max() / 16
        assert jumps["blended"][2:-2].max() <= jumps["natural"][2:-2].max() + ramp
        assert jumps["blended"][2:-2].max() < 0.5 * hard_seams.min()


def test_nodata_stays_nodata_in_every_output(full_scene_path: Path, tmp_path: Path) -> None:
    image = _read(full_scene_path).copy()
    image[:, 100:140, 30:200] = 0  # nodata in every band
    image[0, 10:20, 10:20] = 0  # one band only: still data
    image[:, 200:, 220:] = 0
    scene = write_geotiff(tmp_path / "scene.tif", image, nodata=0)
    result = _predict(LocalNet(), scene, tmp_path / "out", tile=64, overlap=16)
    nodata = (image == 0).all(axis=0)
    assert not nodata[10:20, 10:20].any()
    np.testing.assert_array_equal(_read(tmp_path / "out" / "mask.tif")[0] == 255, nodata)
    probs = _read(tmp_path / "out" / "rare_prob.tif")
    np.testing.assert_array_equal(probs == 255, np.broadcast_to(nodata, probs.shape))
    assert probs[:, ~nodata].max() <= 100
    np.testing.assert_array_equal(_read(tmp_path / "out" / "saliency_topk.tif")[0] == 255, nodata)
    assert result.summary["nodata_pixels"] == int(nodata.sum())


@pytest.mark.parametrize("nodata", [None, 0.0, float("nan")])
def test_nan_and_infinite_pixels_are_nodata_and_do_not_spread(
    full_scene_path: Path, tmp_path: Path, nodata: float | None
) -> None:
    clean = _read(full_scene_path).astype(np.float32)
    image = clean.copy()
    image[0, 40:60, 50:90] = np.nan  # one band is enough
    image[1, 150:151, :] = np.inf
    image[2, 200:230, 10:20] = -np.inf
    bad = ~np.isfinite(image).all(axis=0)
    scene = write_geotiff(tmp_path / "scene.tif", image, nodata=nodata)
    reference = write_geotiff(tmp_path / "clean.tif", clean, nodata=nodata)
    result = _predict(LocalNet(), scene, tmp_path / "out", tile=64, overlap=16)
    _predict(LocalNet(), reference, tmp_path / "ref", tile=64, overlap=16)
    mask, expected = _read(tmp_path / "out" / "mask.tif")[0], _read(tmp_path / "ref" / "mask.tif")[0]
    np.testing.assert_array_equal(mask == 255, bad)
    probs = _read(tmp_path / "out" / "rare_prob.tif")
    np.testing.assert_array_equal(probs == 255, np.broadcast_to(bad, probs.shape))
    assert probs[:, ~bad].max() <= 100
    np.testing.assert_array_equal(_read(tmp_path / "out" / "saliency_topk.tif")[0] == 255, bad)
    # LocalNet sees 5x5 pixels: two pixels away from a bad pixel the prediction is that of the clean scene
    near = np.zeros_like(bad)
    for dy in range(-2, 3):
        for dx in range(-2, 3):
            near |= np.roll(bad, (dy, dx), axis=(0, 1))
    np.testing.assert_array_equal(mask[~near], expected[~near])
    assert result.summary["nodata_pixels"] == int(bad.sum())
    assert 0.10 <= result.summary["topk"]["pixels"] / int((~bad).sum()) < 0.102


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_scene_without_a_finite_pixel_is_a_one_line_error(tmp_path: Path, value: float) -> None:
    image = np.full((3, 40, 50), value, dtype=np.float32)
    image[:, :5, :] = -9999  # the declared nodata
    scene = write_geotiff(tmp_path / "scene.tif", image, nodata=-9999)
    with pytest.raises(DataError, match=r"scene\.tif: no valid pixel: every pixel is nodata, NaN or infinite$"):
        _predict(LocalNet(), scene, tmp_path / "out", tile=32, overlap=8)
    assert list((tmp_path / "out").iterdir()) == []


def test_a_new_run_removes_staging_folders_left_by_killed_runs(full_scene_path: Path, tmp_path: Path) -> None:
    import subprocess

    killed = subprocess.Popen(["true"])
    killed.wait()
    out = tmp_path / "out"
    stale = out / f".rareseg-infer-{killed.pid}-x1y2"
    stale.mkdir(parents=True)
    (stale / "mask.tif").write_bytes(b"")  # what SIGKILL leaves
    mine = out / f".rareseg-infer-{os.getpid()}-busy"  # a live run of this process (the web server runs several)
    mine.mkdir()
    _predict(LocalNet(), full_scene_path, out, tile=128, overlap=16)
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, mine.name])


def test_a_geographic_scene_reports_ellipsoidal_areas(full_scene_path: Path, tmp_path: Path) -> None:
    step = 5.8 / 111320  # about 5.8 m in degrees, as in the EPSG:4326 scene
    image = _read(full_scene_path)
    profile = {"driver": "GTiff", "count": 3, "height": 256, "width": 256, "dtype": str(image.dtype), "nodata": 0}
    profile |= {"crs": "EPSG:4326", "transform": rasterio.transform.from_origin(79.0, 21.0, step, step)}
    with rasterio.open(tmp_path / "scene.tif", "w", **profile) as dst:
        dst.write(image)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a geographic CRS has areas: no warning
        # but the radiometry check may flag this small crop's brightness against the net's statistics
        # (tests/inference/test_radiometry.py covers that check); it is not about areas
        warnings.simplefilter("ignore", RadiometryWarning)
        result = _predict(LocalNet(), tmp_path / "scene.tif", tmp_path / "out", tile=128, overlap=16)
    mask = _read(tmp_path / "out" / "mask.tif")[0]
    # independent reference: M * N * cos(phi) * dlambda * dphi on WGS84 at each row's centre latitude
    a, e2 = 6378137.0, 0.00669437999014
    phi = np.radians(21.0 - (np.arange(256) + 0.5) * step)
    w = 1 - e2 * np.sin(phi) ** 2
    row_area = a * (1 - e2) / w**1.5 * a / np.sqrt(w) * np.cos(phi) * np.radians(step) ** 2
    summary = result.summary
    assert summary["area_method"] == "geodesic"
    assert summary["pixel_area_m2"] == pytest.approx(row_area.mean(), rel=5e-3)
    for entry in summary["classes"]:
        expected = float((row_area[:, None] * (mask == entry["id"])).sum()) / 1e4
        assert entry["area_ha"] == pytest.approx(expected, rel=5e-3, abs=1e-9)
    assert sum(e["area_ha"] for e in summary["classes"]) > 0


def test_tiles_entirely_nodata_are_not_predicted(full_scene_path: Path, tmp_path: Path) -> None:
    image = _read(full_scene_path).copy()
    image[:, :128, :] = 0
    scene = write_geotiff(tmp_path / "scene.tif", image, nodata=0)
    net = LocalNet()
    result = _predict(net, scene, tmp_path / "out", tile=64, overlap=0, batch_size=1)
    assert result.summary["tiles"]["count"] == 16
    assert result.summary["tiles"]["predicted"] == net.calls == 8


@pytest.mark.parametrize(
    ("options", "thresholds", "expected_class", "source"),
    [
        ({}, None, 0, "default"),
        ({"threshold": 0.25}, None, 4, "override"),
        ({"threshold": 0.35}, None, 0, "override"),
        ({"threshold": 0.04, "rare_classes": ["wetland"]}, None, 5, "override"),
        ({"threshold": 0.04, "rare_classes": ["wetland", "water"]}, None, 4, "override"),
        ({}, {4: 0.25}, 4, "checkpoint+default"),
        ({"rare_classes": ["water"]}, {4: 0.25}, 4, "checkpoint"),
        ({"threshold": 0.5}, {4: 0.25}, 0, "override"),
    ],
)
def test_threshold_gives_a_rare_class_pixels_whose_argmax_is_another_class(
    full_scene_path: Path,
    tmp_path: Path,
    options: dict[str, Any],
    thresholds: dict[int, float] | None,
    expected_class: int,
    source: str,
) -> None:
    # every pixel: P = (0.45, 0.1, 0.05, 0.05, 0.3, 0.05): argmax cropland, water 0.3, wetland 0.05
    result = _predict(
        ConstantNet(CONSTANT_PROBS), full_scene_path, tmp_path, thresholds=thresholds, tile=128, overlap=16, **options
    )
    assert np.all(_read(tmp_path / "mask.tif") == expected_class)
    assert result.summary["threshold_source"] == source
    selected = [CLASS_NAMES.index(name) for name in options.get("rare_classes", ["water", "wetland"])]
    probs = _read(tmp_path / "rare_prob.tif")
    for band, class_id in enumerate(selected):
        assert np.all(probs[band] == round(100 * CONSTANT_PROBS[class_id]))
    expected_thresholds = [options.get("threshold", (thresholds or {}).get(c, 0.5)) for c in selected]
    assert [r["threshold"] for r in result.summary["rare_classes"]] == pytest.approx(expected_thresholds)


class _ProbabilityNet(LocalNet):
    """LocalNet without a saliency head: the top-k score is the highest rare probability."""

    def __init__(self) -> None:
        super().__init__(saliency=False)


@pytest.mark.parametrize("topk", [10.0, 2.5])
def test_topk_marks_the_most_salient_share_of_valid_pixels(scene_path: Path, tmp_path: Path, topk: float) -> None:
    result = _predict(_ProbabilityNet(), scene_path, tmp_path, tile=64, overlap=16, topk=topk)
    top = _read(tmp_path / "saliency_topk.tif")[0]
    valid = top != 255
    share = np.count_nonzero(top == 1) / np.count_nonzero(valid)
    assert topk / 100 <= share < topk / 100 + 0.002
    assert result.summary["topk"]["pixels"] == np.count_nonzero(top == 1)
    assert result.summary["topk"]["score"] == "max rare probability"
    # the score is the max rare probability: every marked pixel scores at least as high as every unmarked one
    highest = _read(tmp_path / "rare_prob.tif").max(axis=0, where=valid, initial=0).astype(int)
    assert highest[top == 1].min() >= highest[top == 0].max() - 1
    assert result.summary["topk"]["cut"] * 100 == pytest.approx(highest[top == 1].min(), abs=1)


def test_topk_uses_the_saliency_head_when_present(full_scene_path: Path, tmp_path: Path) -> None:
    result = _predict(LocalNet(), full_scene_path, tmp_path, tile=64, overlap=16, topk=10)
    assert result.summary["topk"]["score"] == "saliency head"
    assert 0.10 <= result.summary["topk"]["pixels"] / 256**2 < 0.102


def test_summary_areas_are_counts_times_pixel_area(scene_path: Path, tmp_path: Path) -> None:
    result = _predict(LocalNet(), scene_path, tmp_path, tile=64, overlap=16)
    summary = json.loads((tmp_path / "summary.json").read_text())
    mask = _read(tmp_path / "mask.tif")[0]
    counts = np.bincount(mask[mask != 255], minlength=6)
    assert [c["pixels"] for c in summary["classes"]] == counts.tolist()
    assert [c["area_ha"] for c in summary["classes"]] == pytest.approx((counts * 5.8 * 5.8 / 1e4).tolist())
    assert [c["name"] for c in summary["classes"]] == CLASS_NAMES
    assert summary["pixel_area_m2"] == pytest.approx(33.64)
    assert summary["crs"] == "EPSG:32644"
    assert summary["valid_pixels"] + summary["nodata_pixels"] == 256 * 256
    assert summary["valid_pixels"] == counts.sum()
    assert summary["tiles"] == {
        "size": [64, 64],
        "overlap": 16,
        "batch_size": 8,
        "count": 25,
        "predicted": result.summary["tiles"]["predicted"],
    }
    assert summary["seconds"] > 0 and summary["megapixels_per_second"] == pytest.approx(
        256 * 256 / 1e6 / summary["seconds"]
    )


def _previous_outputs(out: Path) -> dict[str, str]:
    out.mkdir()
    previous = {"mask.tif": "finished mask of an earlier run", "summary.json": "{}"}
    for name, text in previous.items():
        (out / name).write_text(text)
    return previous


def _assert_untouched(out: Path, previous: dict[str, str]) -> None:
    assert sorted(os.listdir(out)) == sorted(previous)  # no new file, no staging folder left
    for name, text in previous.items():
        assert (out / name).read_text() == text
    # the background reader/writer threads were joined, not left running
    assert not [thread.name for thread in threading.enumerate() if thread.name.startswith("rareseg-io")]


@pytest.mark.parametrize("stop_at", [0.0, 0.5, PREDICTION_SHARE, TOPK_DONE])
def test_cancelled_run_leaves_no_output_and_keeps_earlier_ones(
    scene_path: Path, tmp_path: Path, stop_at: float
) -> None:
    out = tmp_path / "out"
    previous = _previous_outputs(out)
    done = [0.0]
    with pytest.raises(InferenceCancelled):
        _predict(
            LocalNet(), scene_path, out, tile=64, overlap=16, progress=done.append, cancel=lambda: done[-1] >= stop_at
        )
    _assert_untouched(out, previous)
    assert done[-1] >= stop_at


def test_crash_mid_scene_leaves_no_output_and_keeps_earlier_ones(scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    previous = _previous_outputs(out)
    with pytest.raises(RuntimeError, match="injected failure"):
        _predict(FailingNet(fail_at=3), scene_path, out, tile=64, overlap=16, batch_size=2)
    _assert_untouched(out, previous)


def test_finished_run_replaces_earlier_outputs_and_reports_progress(scene_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    _previous_outputs(out)
    done: list[float] = []
    _predict(LocalNet(), scene_path, out, tile=64, overlap=16, progress=done.append)
    assert sorted(os.listdir(out)) == sorted(OUTPUTS)
    assert json.loads((out / "summary.json").read_text())["tiles"]["count"] == 25
    assert done == sorted(done) and done[-1] == 1.0 and 0 < done[0] < 0.2


def test_wrong_band_count_is_a_one_line_error(full_scene_path: Path, tmp_path: Path) -> None:
    image = _read(full_scene_path)
    scene = write_geotiff(tmp_path / "four.tif", np.concatenate([image, image[:1]]))
    with pytest.raises(DataError, match=r"four.tif: has 4 bands, the checkpoint expects 3$"):
        _predict(LocalNet(), scene, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_scene_without_crs_is_predicted_with_a_warning(full_scene_path: Path, tmp_path: Path) -> None:
    scene = write_geotiff(tmp_path / "plain.tif", _read(full_scene_path)[:, :96, :96], crs=None)
    with pytest.warns(UserWarning, match="plain.tif: has no CRS"):
        result = _predict(LocalNet(), scene, tmp_path / "out", tile=64, overlap=16)
    with rasterio.open(tmp_path / "out" / "mask.tif") as mask:
        assert mask.crs is None and (mask.width, mask.height) == (96, 96)
    assert result.summary["crs"] is None and result.summary["pixel_area_m2"] is None
    assert all(c["area_ha"] is None for c in result.summary["classes"])


def test_unreadable_and_non_geotiff_inputs(tmp_path: Path) -> None:
    text = tmp_path / "notes.tif"
    text.write_text("not an image")
    with pytest.raises(DataError, match="notes.tif: not a readable GeoTIFF"):
        _predict(LocalNet(), text, tmp_path / "out")
    png = tmp_path / "photo.png"
    with rasterio.open(png, "w", driver="PNG", width=32, height=32, count=3, dtype="uint8") as dst:
        dst.write(np.zeros((3, 32, 32), dtype=np.uint8))
    with pytest.raises(DataError, match=r"photo.png: not a GeoTIFF \(format PNG\)"):
        _predict(LocalNet(), png, tmp_path / "out")
    with pytest.raises(DataError, match="missing.tif: not a readable GeoTIFF"):
        _predict(LocalNet(), tmp_path / "missing.tif", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_output_dir_that_cannot_be_created_is_a_one_line_error(scene_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(DataError, match=r"file/out: output directory is not writable \(Not a directory\)"):
        _predict(LocalNet(), scene_path, blocker / "out")
    with pytest.raises(DataError, match=r"file: output directory is not writable \(File exists\)"):
        _predict(LocalNet(), scene_path, blocker)


def test_unknown_rare_class_is_a_one_line_error(scene_path: Path, tmp_path: Path) -> None:
    with pytest.raises(
        DataError, match=r"unknown rare class 'reeds' \(the checkpoint's rare classes: water, wetland\)"
    ):
        _predict(LocalNet(), scene_path, tmp_path / "out", rare_classes=["reeds"])
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((8, 0, 1, 10), "tile must be >= 16"),
        ((64, 40, 1, 10), r"overlap must be in \[0, tile / 2\] = \[0, 32\]"),
        ((64, -1, 1, 10), "overlap must be in"),
        ((64, 16, 0, 10), "batch size must be >= 1"),
        ((64, 16, 1, 0), r"topk must be a percentage in \(0, 100\]"),
        ((64, 16, 1, 101), "topk must be a percentage"),
        ((64, 16, 1, 10, 1.5), r"threshold must be a probability in \[0, 1\]"),
        ((64, 16, 1, 10, None, 8), "preview side must be >= 16"),
    ],
)
def test_bad_options_are_refused(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_options(*arguments)


def test_failure_while_writing_leaves_no_output(
    scene_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    previous = _previous_outputs(out)
    original = BlockRowWriter.append
    calls = [0]

    def failing_append(self: BlockRowWriter, rows: np.ndarray) -> None:
        calls[0] += 1
        if calls[0] == 4:
            raise OSError("disk full")
        original(self, rows)

    monkeypatch.setattr(BlockRowWriter, "append", failing_append)
    with pytest.raises(OSError, match="disk full"):
        _predict(LocalNet(), scene_path, out, tile=64, overlap=16)
    _assert_untouched(out, previous)


def test_failure_while_finishing_the_outputs_leaves_no_output(
    scene_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The overviews and previews run on a second thread; their errors still reach the caller."""
    out = tmp_path / "out"
    previous = _previous_outputs(out)

    def failing_preview(*args: Any) -> None:
        raise OSError("preview disk full")

    monkeypatch.setattr(scene_module, "write_probability_preview", failing_preview)
    with pytest.raises(OSError, match="preview disk full"):
        _predict(LocalNet(), scene_path, out, tile=64, overlap=16)
    _assert_untouched(out, previous)


def test_background_worker_keeps_the_order_bounds_the_jobs_in_flight_and_reraises() -> None:
    worker = scene_module._Worker(max_pending=2)
    release, done = threading.Event(), []
    try:
        worker.submit(release.wait)
        worker.submit(done.append, 1)
        third = threading.Thread(target=worker.submit, args=(done.append, 2))
        third.start()
        third.join(timeout=0.3)
        assert third.is_alive()  # two jobs unfinished: the third submit waits for the oldest
        release.set()
        third.join(timeout=10)
        assert not third.is_alive()
        worker.drain()
        assert done == [1, 2]

        def fail() -> None:
            raise OSError("write failed")

        worker.submit(fail)
        worker.submit(done.append, 3)
        with pytest.raises(OSError, match="write failed"):
            worker.drain()
    finally:
        worker.close()
