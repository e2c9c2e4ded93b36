"""Tests for rareseg.web.render: re-rendering outputs from stored network outputs."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import rasterio

from rareseg.inference import Predictor, predict_scene
from rareseg.inference.rasters import MASK_SIDECARS
from rareseg.web import ARGMAX_THRESHOLD, RENDERED, RenderOptions, render_outputs, topk_outline
from tests.inference.gdal_c import band_categories
from tests.web.helpers import read_band

WATER, WETLAND = 4, 5
PIXEL_HA = 5.8 * 5.8 / 1e4


@pytest.fixture(scope="module")
def network_dir(predictor: Predictor, scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Network outputs of the scene as a job stores them: every rare class, argmax threshold, one 256 px tile."""
    out = tmp_path_factory.mktemp("network")
    predict_scene(predictor, scene, out, tile=256, overlap=16, threshold=ARGMAX_THRESHOLD, topk=10.0)
    return out


@pytest.fixture(scope="module")
def direct_probs(predictor: Predictor, scene: Path) -> np.ndarray:
    """(K, H, W) class probabilities of the whole scene in one forward pass."""
    with rasterio.open(scene) as src:
        probs, _ = predictor.predict(src.read()[None].astype(np.float32))
    return probs[0].astype(np.float64)


def options(rare: tuple[int, ...], thresholds: tuple[float, ...], topk: float = 10.0) -> RenderOptions:
    return RenderOptions(rare, thresholds, ("override",) * len(rare), topk)


def reference_mask(
    argmax: np.ndarray, percent: np.ndarray, rare: tuple[int, ...], thresholds: tuple[float, ...]
) -> np.ndarray:
    """Independent rule: among rare classes with p >= t, the most probable (first on ties) replaces the argmax."""
    probs = percent / 100.0
    eligible = probs >= np.asarray(thresholds)[:, None, None]
    best = np.where(eligible, probs, -1.0).argmax(axis=0)
    out = argmax.astype(np.int64)
    overridden = eligible.any(axis=0)
    out[overridden] = np.asarray(rare)[best][overridden]
    out[argmax == 255] = 255
    return out


def stored(network_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Network argmax (H, W) and stored percent probabilities (2, H, W) of water and wetland."""
    with rasterio.open(network_dir / "rare_prob.tif") as src:
        return read_band(network_dir / "mask.tif"), src.read()


def test_network_run_keeps_the_plain_argmax(network_dir: Path, direct_probs: np.ndarray) -> None:
    argmax, percent = stored(network_dir)
    valid = argmax != 255
    assert valid.mean() > 0.5
    np.testing.assert_array_equal(argmax[valid], direct_probs.argmax(axis=0)[valid])
    np.testing.assert_allclose(percent[:, valid], 100 * direct_probs[[WATER, WETLAND]][:, valid], atol=0.5 + 1e-3)


def test_mask_applies_thresholds_to_the_stored_percentages(network_dir: Path, tmp_path: Path) -> None:
    chosen = options((WATER, WETLAND), (0.2, 0.35))
    summary = render_outputs(network_dir, tmp_path, chosen, preview_side=1024, summary_fields={"input": "scene.tif"})
    argmax, percent = stored(network_dir)
    expected = reference_mask(argmax, percent, chosen.rare_classes, chosen.thresholds)
    mask = read_band(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask, expected)
    assert (mask != argmax).sum() > 100  # the thresholds change something
    counts = np.bincount(expected[expected != 255].ravel(), minlength=6)
    assert [c["pixels"] for c in summary["classes"]] == counts.tolist()
    assert [c["area_ha"] for c in summary["classes"]] == pytest.approx((counts * PIXEL_HA).tolist(), rel=1e-12)
    assert summary["rare_classes"] == [
        {"id": 4, "name": "water", "threshold": 0.2},
        {"id": 5, "name": "wetland", "threshold": 0.35},
    ]
    assert (summary["input"], summary["threshold_source"], summary["outputs"]) == (
        "scene.tif",
        "override",
        list(RENDERED),
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    assert sorted(os.listdir(tmp_path)) == sorted(RENDERED)


def test_render_agrees_with_predict_scene_except_within_half_a_percent_of_the_threshold(
    predictor: Predictor, scene: Path, network_dir: Path, direct_probs: np.ndarray, tmp_path: Path
) -> None:
    predict_scene(predictor, scene, tmp_path / "direct", tile=256, overlap=16, threshold=0.3)
    render_outputs(network_dir, tmp_path, options((WATER, WETLAND), (0.3, 0.3)), preview_side=1024, summary_fields={})
    differ = read_band(tmp_path / "mask.tif") != read_band(tmp_path / "direct" / "mask.tif")
    near = (np.abs(direct_probs[[WATER, WETLAND]] - 0.3) <= 0.005 + 1e-6).any(axis=0)
    assert not (differ & ~near).any()


def test_one_selected_class_writes_one_band_and_never_forces_the_other(network_dir: Path, tmp_path: Path) -> None:
    render_outputs(network_dir, tmp_path, options((WETLAND,), (0.25,)), preview_side=1024, summary_fields={})
    argmax, percent = stored(network_dir)
    with rasterio.open(tmp_path / "rare_prob.tif") as src:
        assert (src.count, src.descriptions, src.scales) == (1, ("wetland",), (0.01,))
        assert src.tags(1)["class_id"] == "5" and src.tags(1)["threshold"] == "0.25"
        np.testing.assert_array_equal(src.read(1), percent[1])
        assert src.crs.to_string() == "EPSG:32644"
    mask = read_band(tmp_path / "mask.tif")
    np.testing.assert_array_equal(mask == WATER, argmax == WATER)
    np.testing.assert_array_equal(mask, reference_mask(argmax, percent[1:], (WETLAND,), (0.25,)))
    with rasterio.open(tmp_path / "mask.tif") as src, rasterio.open(network_dir / "mask.tif") as network:
        assert src.colormap(1) == network.colormap(1)
        assert src.tags()["class_names"] == network.tags()["class_names"]
        assert src.overviews(1) == [2]


def test_topk_of_every_class_and_the_same_percent_is_the_networks(network_dir: Path, tmp_path: Path) -> None:
    summary = render_outputs(
        network_dir, tmp_path, options((WATER, WETLAND), (0.5, 0.5), topk=10.0), preview_side=1024, summary_fields={}
    )
    np.testing.assert_array_equal(
        read_band(tmp_path / "saliency_topk.tif"), read_band(network_dir / "saliency_topk.tif")
    )
    assert summary["topk"] == json.loads((network_dir / "summary.json").read_text())["topk"]
    assert summary["topk"]["score"] == "saliency head"


def test_topk_is_recomputed_from_stored_probabilities_otherwise(network_dir: Path, tmp_path: Path) -> None:
    summary = render_outputs(
        network_dir, tmp_path, options((WETLAND,), (0.5,), topk=5.0), preview_side=1024, summary_fields={}
    )
    argmax, percent = stored(network_dir)
    valid = argmax != 255
    scores = np.sort(percent[1][valid])[::-1]
    wanted = math.ceil(0.05 * scores.size)
    level = scores[wanted - 1]
    expected = np.where(valid, percent[1] >= level, 255)
    np.testing.assert_array_equal(read_band(tmp_path / "saliency_topk.tif"), expected)
    assert summary["topk"] == {
        "percent": 5.0,
        "score": "max rare probability (stored percent)",
        "cut": level / 100,
        "pixels": int((expected == 1).sum()),
    }
    assert (expected == 1).sum() >= wanted


def test_topk_outline_is_the_regions_inner_border() -> None:
    region = np.zeros((5, 6), dtype=bool)
    region[1:4, 1:4] = True
    region[0:2, 5] = True  # touches the image edge: edge pixels are border
    expected = region.copy()
    expected[2, 2] = False
    np.testing.assert_array_equal(topk_outline(region), expected)


def test_outline_preview_draws_the_decimated_region_in_cyan(network_dir: Path, tmp_path: Path) -> None:
    render_outputs(
        network_dir, tmp_path, options((WATER, WETLAND), (0.5, 0.5), topk=10.0), preview_side=128, summary_fields={}
    )
    outline = matplotlib.image.imread(tmp_path / "preview_topk.png")
    assert outline.shape == (*matplotlib.image.imread(tmp_path / "preview_prob.png").shape[:2], 4) == (128, 128, 4)
    with rasterio.open(tmp_path / "saliency_topk.tif") as src:
        region = src.read(1, out_shape=(128, 128), resampling=rasterio.enums.Resampling.nearest) == 1
    drawn = outline[..., 3] == 1.0
    np.testing.assert_array_equal(drawn, topk_outline(region))
    assert drawn.any() and (outline[drawn][:, :3] == [0.0, 1.0, 1.0]).all()


def test_a_failed_render_keeps_the_previous_outputs(network_dir: Path, tmp_path: Path) -> None:
    render_outputs(network_dir, tmp_path, options((WATER, WETLAND), (0.4, 0.4)), preview_side=64, summary_fields={})
    before = {name: (tmp_path / name).read_bytes() for name in RENDERED}
    with pytest.raises(KeyError):
        render_outputs(network_dir, tmp_path, options((3,), (0.4,)), preview_side=64, summary_fields={})
    assert {name: (tmp_path / name).read_bytes() for name in RENDERED} == before
    assert sorted(os.listdir(tmp_path)) == sorted(RENDERED)


def test_rendered_mask_carries_the_class_names_for_qgis_and_gdal(network_dir: Path, tmp_path: Path) -> None:
    summary = render_outputs(network_dir, tmp_path, options((WATER,), (0.25,)), preview_side=256, summary_fields={})
    names = [entry["name"] for entry in summary["classes"]]
    assert len(names) == 6 and names[WATER] == "water"
    gdal = band_categories(tmp_path / "mask.tif")
    assert gdal.category_names == names
    with rasterio.open(tmp_path / "mask.tif") as src:
        colours = [src.colormap(1)[c][:3] for c in range(len(names))]
    assert gdal.rat_rows == [[str(c), n, *map(str, rgb)] for c, (n, rgb) in enumerate(zip(names, colours))]
    # the same sidecars `rareseg predict` writes for the network's own mask (same classes, same colours)
    for name in MASK_SIDECARS:
        assert (tmp_path / name).read_bytes() == (network_dir / name).read_bytes()
