"""The synthetic LISS-IV scenes: class shares, georeference, determinism, realism checks."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
import yaml

from rareseg.cli import main
from rareseg.synth import generate_scene
from rareseg.synth.landcover import CROPLAND, FALLOW, FOREST, WATER, WETLAND


def _shares(mask: np.ndarray) -> np.ndarray:
    valid = mask != 255
    return np.bincount(mask[valid], minlength=6) / valid.sum()


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_class_frequencies_in_design_ranges(seed: int) -> None:
    shares = _shares(generate_scene(512, seed).mask)
    assert 0.02 <= shares[WATER] <= 0.05
    assert 0.005 <= shares[WETLAND] <= 0.02
    assert shares[CROPLAND] > 0.3 and shares[FALLOW] > 0.05 and shares[FOREST] > 0.01


@pytest.mark.slow
def test_full_size_scene_frequencies() -> None:
    shares = _shares(generate_scene(2048, 11).mask)
    assert 0.02 <= shares[WATER] <= 0.05
    assert 0.005 <= shares[WETLAND] <= 0.02


def test_same_seed_same_scene_and_different_seed_differs() -> None:
    a, b, c = generate_scene(256, 5), generate_scene(256, 5), generate_scene(256, 6)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.mask, b.mask)
    assert not np.array_equal(a.mask, c.mask)


def test_digital_numbers_are_10_bit_and_nodata_matches_mask() -> None:
    for seed in range(6):
        scene = generate_scene(256, seed)
        nodata = np.all(scene.image == 0, axis=0)
        assert np.array_equal(nodata, scene.mask == 255)
        assert scene.image.max() <= 1023 and scene.image[:, ~nodata].min() >= 1


def test_wetland_is_spectrally_confusable() -> None:
    """Wetland NIR lies between water and vegetation, and a nearest-centroid classifier misses much of it."""
    images, masks = zip(*[(s.image, s.mask) for s in (generate_scene(512, k) for k in range(3))])
    pixels = np.concatenate([im.reshape(3, -1) for im in images], axis=1).T.astype(np.float64)
    labels = np.concatenate([m.ravel() for m in masks])
    keep = labels != 255
    pixels, labels = pixels[keep], labels[keep]
    centroids = np.stack([pixels[labels == c].mean(axis=0) for c in range(6)])
    nir = centroids[:, 2]
    assert nir[WATER] < nir[WETLAND] < nir[CROPLAND]
    nearest = np.argmin(((pixels[:, None, :] - centroids[None]) ** 2).sum(-1), axis=1)
    wetland_recall = (nearest[labels == WETLAND] == WETLAND).mean()
    wetland_precision = (labels[nearest == WETLAND] == WETLAND).mean()
    assert wetland_recall < 0.8
    assert wetland_precision < 0.5


def test_synth_command_writes_georeferenced_root_and_preview(tmp_path) -> None:
    out = tmp_path / "root"
    main(["synth", "--out", str(out), "--scenes", "2", "--size", "128", "--seed", "3", "--preview"])
    images = sorted((out / "images").glob("*.tif"))
    assert [p.name for p in images] == ["scene_00.tif", "scene_01.tif"]
    bounds = []
    for image in images:
        with rasterio.open(image) as img, rasterio.open(out / "masks" / image.name) as msk:
            assert img.crs.to_epsg() == 32644
            assert img.transform.a == pytest.approx(5.8) and img.transform.e == pytest.approx(-5.8)
            assert img.count == 3 and img.dtypes[0] == "uint16" and img.nodata == 0
            assert msk.transform == img.transform and msk.dtypes[0] == "uint8" and msk.nodata == 255
            assert msk.colormap(1)[WATER][:3] == (30, 90, 230)
            bounds.append(img.bounds)
    assert bounds[0].right < bounds[1].left  # scenes never overlap on the ground
    classes = yaml.safe_load((out / "classes.yaml").read_text())
    assert [c["name"] for c in classes["classes"] if c["rare"]] == ["water", "wetland"]
    import matplotlib.image

    preview = matplotlib.image.imread(out / "previews" / "scene_00.png")
    assert preview.shape[:2] == (128, 256)  # false colour | mask
    assert preview[:, :128, 0].std() > 0.05  # the NIR channel shows structure


def test_synth_refuses_to_overwrite(tmp_path) -> None:
    out = tmp_path / "root"
    main(["synth", "--out", str(out), "--scenes", "1", "--size", "64"])
    with pytest.raises(SystemExit, match="already exists"):
        main(["synth", "--out", str(out), "--scenes", "1", "--size", "64"])
