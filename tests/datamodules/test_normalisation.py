"""Tests for rareseg.datamodules.normalisation: scene samples and the ``scene`` normalisation, end to end."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from rareseg.cli import main
from rareseg.datamodules import DataError, LissIVDataModule
from rareseg.datamodules.normalisation import (
    BandStatistics,
    SceneStandardise,
    robust_standardisation,
    sample_pixels,
    scene_standardisation,
)
from rareseg.inference import RadiometryWarning, load_predictor
from tests.conftest import fit_tiny_checkpoint
from tests.inference.helpers import write_geotiff


def _write(path: Path, image: np.ndarray, nodata: float | None = 0, **creation: object) -> Path:
    """A GeoTIFF of a (C, H, W) image with GDAL creation options (tiling, rows per strip)."""
    profile = {"driver": "GTiff", "count": image.shape[0], "height": image.shape[1], "width": image.shape[2]}
    with rasterio.open(path, "w", **profile, dtype=str(image.dtype), nodata=nodata, **creation) as dst:
        dst.write(image)
    return path


def test_a_crop_reaching_past_a_scene_edge_takes_the_scene_it_overlaps_most() -> None:
    # two scenes side by side, x 0-100 and 100-200 (same day); a grid sampler's last tile of the first
    # scene may reach past its edge: x 60-130 has its centre (95) in the first scene and 40 of its 70 m there,
    # x 80-150 has its centre (115) in the second and 50 of 70 m there; a tile off every scene is an error
    day = (0, 1)
    first = (*day, (0.0, 0.0, 100.0, 100.0), [10.0], [2.0])
    second = (*day, (100.0, 0.0, 200.0, 100.0), [50.0], [5.0])
    transform = SceneStandardise([first, second])
    image = torch.full((1, 2, 2), 60.0)

    def standardised(x0: float, x1: float) -> float:
        query = (slice(x0, x1), slice(10.0, 80.0), slice(0, 1))
        return float(transform({"image": image.clone(), "bounds": query})["image"][0, 0, 0])

    assert standardised(60.0, 130.0) == pytest.approx((60 - 10) / 2)
    assert standardised(80.0, 150.0) == pytest.approx((60 - 50) / 5)
    assert standardised(170.0, 240.0) == pytest.approx((60 - 50) / 5)  # centre 205 is past every scene
    with pytest.raises(LookupError, match="no scene overlaps the crop"):
        standardised(300.0, 370.0)


def test_a_striped_scene_is_sampled_in_evenly_spread_strips(tmp_path: Path) -> None:
    # pixel value = 1 + row index, so the sampled values are the sampled rows
    rows = np.repeat(np.arange(1, 513, dtype=np.uint16)[:, None], 20, axis=1)
    image = np.stack([rows, rows, rows])
    image[:, 0, :5] = 0  # nodata in every band: not sampled
    path = _write(tmp_path / "tall.tif", image, blockysize=8)
    with rasterio.open(path) as src:
        assert src.block_shapes[0] == (8, 20)
        pixels = sample_pixels(src)
    # 64 strips of 8 rows; 32 read: strips round(i * 63 / 31), i = 0..31 (0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, ...)
    strips = [round(i * 63 / 31) for i in range(32)]
    assert strips[:3] == [0, 2, 4] and strips[-1] == 63
    expected = np.concatenate([np.repeat(np.arange(8 * k, 8 * k + 8) + 1, 20) for k in strips])
    np.testing.assert_array_equal(pixels[0], expected[5:])
    assert pixels.shape == (3, 32 * 8 * 20 - 5) and pixels.dtype == np.float64


def test_a_tiled_scene_is_sampled_in_decimated_tiles(tmp_path: Path) -> None:
    # value = 1 + row * 1024 + column (float64 is exact): every sampled pixel tells where it was
    image = (1 + np.arange(1024 * 1024, dtype=np.float32).reshape(1, 1024, 1024)).repeat(3, axis=0)
    path = _write(tmp_path / "tiled.tif", image, nodata=None, tiled=True, blockxsize=256, blockysize=256)
    with rasterio.open(path) as src:
        pixels = sample_pixels(src)
    # 16 tiles (< 32), all read; step ceil(sqrt(16 * 256 * 256 / 2^18)) = 2: every other row and column
    rows, cols = np.divmod(pixels[0].astype(np.int64) - 1, 1024)
    assert pixels.shape == (3, 512 * 512)
    assert set(np.unique(rows % 2)) == {0} and set(np.unique(cols % 2)) == {0}
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (0, 1022, 0, 1022)


def test_a_scene_with_overviews_is_read_decimated(tmp_path: Path) -> None:
    image = np.full((3, 2048, 1024), 7, dtype=np.uint16)
    image[1] = 9
    path = write_geotiff(tmp_path / "big.tif", image)
    with rasterio.open(path, "r+") as dst:
        dst.build_overviews([2, 4])
    with rasterio.open(path) as src:
        pixels = sample_pixels(src)
    assert pixels.shape == (3, 1024 * 512)  # longer side 2048 -> 1024
    assert set(pixels[0]) == {7.0} and set(pixels[1]) == {9.0}


def test_a_footprint_the_sampled_blocks_miss_is_found_by_a_decimated_read(tmp_path: Path) -> None:
    # 100 strips of 1 row; the 32 sampled ones are rows round(i * 99 / 31): row 1 is not one of them
    image = np.zeros((3, 100, 10), dtype=np.uint16)
    image[:, 1] = 5
    path = _write(tmp_path / "small-footprint.tif", image, blockysize=1)
    with rasterio.open(path) as src:
        assert 1 not in {round(i * 99 / 31) for i in range(32)}
        np.testing.assert_array_equal(sample_pixels(src), np.full((3, 10), 5.0))
    empty = _write(tmp_path / "empty.tif", np.zeros((3, 8, 8), dtype=np.uint16))
    with pytest.raises(DataError, match=r"empty.tif: no valid pixel to standardise the scene with"):
        scene_standardisation(str(empty))


def test_non_finite_pixels_are_not_sampled(tmp_path: Path) -> None:
    image = np.ones((3, 8, 8), dtype=np.float32)
    image[2, 3, 3] = np.nan
    path = write_geotiff(tmp_path / "nan.tif", image, nodata=None)
    with rasterio.open(path) as src:
        assert sample_pixels(src).shape == (3, 63)


def test_robust_standardisation_by_hand() -> None:
    # values 1..100: median 50.5; linear percentiles p2 = 1 + 0.02 * 99 = 2.98, p98 = 1 + 0.98 * 99 = 98.02
    pixels = np.arange(1.0, 101.0)[None]
    median, sigma = robust_standardisation(pixels)
    assert median[0] == pytest.approx(50.5)
    assert sigma[0] == pytest.approx((98.02 - 2.98) / (2 * 2.0537489))
    # any positive scale: median and spread scale with it, the standardised pixels do not change
    scaled_median, scaled_sigma = robust_standardisation(pixels * 1e4)
    np.testing.assert_allclose((pixels * 1e4 - scaled_median[:, None]) / scaled_sigma[:, None],
                               (pixels - median[:, None]) / sigma[:, None], rtol=1e-12)  # fmt: skip
    stats = BandStatistics.of(pixels)
    assert (stats.low[0], stats.median[0], stats.high[0]) == pytest.approx((2.98, 50.5, 98.02))


def test_scene_normalisation_standardises_each_crop_by_its_scene(synth_root: Path) -> None:
    options = {"batch_size": 2, "patch_size": 64, "length": 4, "augment": False}
    raw_dm = LissIVDataModule(str(synth_root), **options)
    dm = LissIVDataModule(str(synth_root), normalisation="scene", **options)
    assert dm.normalisation == "scene" and dm.band_mean == raw_dm.band_mean  # the check still has the dataset's
    with pytest.raises(ValueError, match="normalisation must be one of dataset, scene, got 'image'"):
        LissIVDataModule(str(synth_root), normalisation="image", **options)
    dm.setup("fit")
    raw_dm.setup("fit")
    statistics = [scene_standardisation(str(s.image)) for s in dm.scenes_of("train")]
    assert len(statistics) == 2
    for query in list(dm.train_sampler)[:4]:
        sample, raw = dm.train_dataset[query], raw_dm.train_dataset[query]
        candidates = [(raw["image"] - _column(median)) / _column(sigma) for median, sigma in statistics]
        matches = [torch.allclose(sample["image"], c, rtol=1e-5, atol=1e-5) for c in candidates]
        assert sum(matches) == 1  # standardised by exactly one training scene's statistics: its own
        assert torch.equal(sample["mask"], raw["mask"])
    # Normalize after the transfer is the identity: the crops are already standardised
    batch = {"image": torch.randn(1, 3, 8, 8), "mask": torch.zeros(1, 8, 8, dtype=torch.long)}
    torch.testing.assert_close(dm.aug({**batch, "image": batch["image"].clone()})["image"], batch["image"])


def _column(values: np.ndarray) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)[:, None, None]


@pytest.fixture(scope="module")
def scene_checkpoint(synth_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A RareSegModule trained two steps with the ``scene`` normalisation."""
    datamodule = LissIVDataModule(
        str(synth_root), batch_size=2, patch_size=64, length=4, augment=False, normalisation="scene"
    )
    path = tmp_path_factory.mktemp("scene-ckpt") / "scene.ckpt"
    return fit_tiny_checkpoint(datamodule, path, max_steps=2, normalisation=datamodule.normalisation)


def _scaled_copy(source: Path, path: Path, scale: float, dtype: str) -> Path:
    with rasterio.open(source) as src:
        image, profile = src.read(), src.profile
    profile.update(dtype=dtype)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write((image * scale).astype(dtype))
    return path


def test_a_scene_normalised_model_predicts_the_same_mask_for_a_scene_x10_and_x0_1(
    scene_checkpoint: Path, synth_root: Path, tmp_path: Path
) -> None:
    predictor = load_predictor(scene_checkpoint, device="cpu")
    assert predictor.normalisation == "scene"
    scene = sorted((synth_root / "images").glob("*.tif"))[-1]
    scenes = {
        "base": scene,
        "x10": _scaled_copy(scene, tmp_path / "x10.tif", 10, "uint16"),
        "tenth": _scaled_copy(scene, tmp_path / "tenth.tif", 0.1, "float32"),
    }
    masks, probs = {}, {}
    for name, path in scenes.items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            main(["infer", "--checkpoint", str(scene_checkpoint), "--input", str(path), "--out", str(tmp_path / name)]
                 + ["--tile", "128", "--overlap", "16", "--quiet"])  # fmt: skip
        assert not [w for w in caught if issubclass(w.category, RadiometryWarning)]  # scale does not matter here
        record = json.loads((tmp_path / name / "summary.json").read_text())["radiometry"]
        assert record["scale_invariant"] is True and record["ok"] is True
        with rasterio.open(tmp_path / name / "mask.tif") as mask, rasterio.open(tmp_path / name / "rare_prob.tif") as p:
            masks[name], probs[name] = mask.read(1), p.read().astype(int)
    np.testing.assert_array_equal(masks["x10"], masks["base"])
    # /10 stored as float32 rounds the DN (1e-7 relative): masks agree on all but a handful of tied pixels
    assert (masks["tenth"] != masks["base"]).mean() <= 1e-3
    assert np.abs(probs["x10"] - probs["base"]).max() <= 1 and np.abs(probs["tenth"] - probs["base"]).max() <= 1
