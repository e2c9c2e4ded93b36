"""LISS-IV scene datasets: the direct read path returns exactly torchgeo's merged pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from rasterio.transform import from_origin
from torchgeo.datasets import RasterDataset

from rareseg.datamodules import LissIVImage, LissIVMask


class TorchgeoImage(LissIVImage):
    """The same dataset read the way torchgeo 0.8 does (WarpedVRT handles, rasterio.merge)."""

    __getitem__ = RasterDataset.__getitem__
    _load_warp_file = RasterDataset._load_warp_file


class TorchgeoMask(LissIVMask):
    _load_warp_file = RasterDataset._load_warp_file

    def __getitem__(self, query):
        sample = RasterDataset.__getitem__(self, query)
        sample["mask"][sample["mask"] == self._nodata_value()] = 255
        return sample


def _write(path: Path, data: np.ndarray, nodata: float | None, west: float = 500000.0) -> Path:
    profile = dict(driver="GTiff", height=data.shape[1], width=data.shape[2], count=data.shape[0], dtype=data.dtype)
    with rasterio.open(
        path, "w", crs="EPSG:32644", transform=from_origin(west, 2000000.0, 5.8, 5.8), nodata=nodata, **profile
    ) as dst:
        dst.write(data)
    return path


def _queries(dataset, rng: np.random.Generator, count: int, size_px: int, aligned: bool):
    x, y, t = dataset.bounds
    for _ in range(count):
        # start anywhere from half a crop before the scene to half a crop past it (edges are partly outside)
        col = rng.integers(-size_px // 2, round((x.stop - x.start) / 5.8) - size_px // 2)
        row = rng.integers(-size_px // 2, round((y.stop - y.start) / 5.8) - size_px // 2)
        shift = 0.0 if aligned else rng.uniform(0.2, 0.8) * 5.8
        xmin = x.start + col * 5.8 + shift
        ymax = y.stop - row * 5.8 - shift
        yield slice(xmin, xmin + size_px * 5.8, 5.8), slice(ymax - size_px * 5.8, ymax, 5.8), slice(t.start, t.stop, 1)


@pytest.mark.parametrize("nodata", [0, None])
def test_direct_reads_equal_torchgeo_merge(tmp_path: Path, nodata: float | None) -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(1, 1024, (3, 150, 170), dtype=np.uint16)
    image[:, :10, :10] = 0  # nodata corner (every band, as outside a scene's footprint)
    path = _write(tmp_path / "scene.tif", image, nodata)
    fast, reference = LissIVImage([path]), TorchgeoImage([path])
    assert type(fast._cached_load_warp_file(str(path))).__name__ == "DatasetReader"  # no warp per read
    for query in _queries(fast, rng, 60, 32, aligned=True):
        got, expected = fast[query]["image"], reference[query]["image"]
        assert got.dtype == expected.dtype == torch.float32
        assert torch.equal(got, expected), query
    for query in _queries(fast, rng, 5, 32, aligned=False):  # off the pixel grid: rasterio.merge resamples
        x, y, _ = fast._disambiguate_slice(query)
        assert fast._read_on_grid(str(path), x, y) is None
        assert fast[query]["image"].shape == (3, 32, 32)


def test_direct_mask_reads_map_nodata_to_ignore_like_torchgeo(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    mask = rng.integers(0, 6, (1, 120, 100), dtype=np.uint8)
    mask[:, 50:60, :] = 7
    path = _write(tmp_path / "mask.tif", mask, 7)
    fast, reference = LissIVMask([path]), TorchgeoMask([path])
    for query in _queries(fast, rng, 40, 24, aligned=True):
        got, expected = fast[query]["mask"], reference[query]["mask"]
        assert torch.equal(got, expected)
    assert (got <= 5).logical_or(got == 255).all()


def test_a_query_over_two_scenes_takes_torchgeos_path(tmp_path: Path) -> None:
    """Scenes are separate time slots; a query over both time slots mosaics them as torchgeo does."""
    rng = np.random.default_rng(2)
    a = _write(tmp_path / "a.tif", rng.integers(1, 99, (3, 40, 40), dtype=np.uint16), 0)
    b = _write(tmp_path / "b.tif", rng.integers(1, 99, (3, 40, 40), dtype=np.uint16), 0, west=500000.0 + 20 * 5.8)
    fast, reference = LissIVImage([a, b]), TorchgeoImage([a, b])
    x, y, t = fast.bounds
    query = (slice(x.start, x.stop, 5.8), slice(y.start, y.stop, 5.8), slice(t.start, t.stop, 1))
    assert torch.equal(fast[query]["image"], reference[query]["image"])
