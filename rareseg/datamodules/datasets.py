"""TorchGeo raster datasets for LISS-IV scenes and their class masks."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import rasterio
from rasterio.io import DatasetReader
from rasterio.warp import calculate_default_transform
from rasterio.windows import Window
from torch import Tensor
from torchgeo.datasets import RasterDataset
from torchgeo.datasets.utils import GeoSlice, array_to_tensor

from rareseg.core.conventions import IGNORE_INDEX

_EPOCH = pd.Timestamp("2000-01-01")


class _SceneRaster(RasterDataset):
    """A RasterDataset over explicit scene files in which every scene is its own time slot.

    LISS-IV scenes of one area taken on different dates overlap on the ground; torchgeo
    would mosaic them into one query. Giving the k-th scene (by sorted file stem) the
    interval [k days, k days + 12 h] keeps every sample inside one scene, and an image
    and its mask (same stem, same k) still intersect.

    A query inside one scene on its pixel grid (what the samplers draw) is read straight
    from the file: the same pixels as torchgeo's ``rasterio.merge`` path, several times
    faster (``benchmarks/datamodule.py``); anything else takes torchgeo's path.
    """

    filename_glob = "*.tif"

    def __init__(
        self,
        paths: Sequence[Path],
        transforms: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
        cache: bool = True,
    ) -> None:
        """Initialise over explicit scene files.

        Args:
            paths: GeoTIFF files, one per scene.
            transforms: optional sample transform.
            cache: keep file handles open between samples.
        """
        super().__init__(paths=[str(p) for p in paths], transforms=transforms, cache=cache)
        stems = sorted(Path(p).stem for p in self.index.filepath)
        order = {stem: k for k, stem in enumerate(stems)}
        starts = [_EPOCH + pd.Timedelta(days=order[Path(p).stem]) for p in self.index.filepath]
        self.index.index = pd.IntervalIndex.from_arrays(
            starts, [s + pd.Timedelta(hours=12) for s in starts], closed="both", name="datetime"
        )
        self._bounds = super().bounds
        self._scenes = [
            (interval.left, interval.right, geometry.bounds, path)
            for interval, geometry, path in zip(self.index.index, self.index.geometry, self.index.filepath)
        ]

    @property
    def bounds(self) -> tuple[slice, slice, slice]:
        """Bounding x, y and t slices of the index (computed once; the index does not change)."""
        return self._bounds

    def __getitem__(self, query: GeoSlice) -> dict[str, Any]:
        """The sample of a query: read directly when it lies on one scene's pixel grid, else torchgeo's merge."""
        x, y, t = self._disambiguate_slice(query)
        hits = [
            path
            for start, stop, (xmin, ymin, xmax, ymax), path in self._scenes
            if start <= t.stop and t.start <= stop and xmin <= x.stop and x.start <= xmax
            and ymin <= y.stop and y.start <= ymax
        ]  # fmt: skip
        data = self._read_on_grid(hits[0], x, y) if len(hits) == 1 and not self.separate_files else None
        if data is None:
            return super().__getitem__(query)
        sample: dict[str, Any] = {"crs": self.crs, "bounds": query}
        data = array_to_tensor(data).to(self.dtype)
        if self.is_image:
            sample["image"] = data
        else:
            sample["mask"] = data.squeeze(0)
        if self.transforms is not None:
            sample = self.transforms(sample)
        return sample

    def _load_warp_file(self, filepath: Path) -> DatasetReader:
        """The file itself when it is already in the dataset's CRS and grid, else torchgeo's WarpedVRT.

        torchgeo compares the file's transform with a recomputed one exactly, so float rounding
        wraps every file in a WarpedVRT (a warp per read); equal within 1e-9 pixel is the same grid.
        """
        src = rasterio.open(filepath)
        if src.crs == self.crs:
            bounds = src.bounds
            transform, _, _ = calculate_default_transform(src.crs, self.crs, src.width, src.height, *_ordered(bounds))
            if src.transform.almost_equals(transform, precision=1e-9 * abs(src.transform.a)):
                return src
        src.close()
        return super()._load_warp_file(filepath)

    def _read_on_grid(self, path: str, x: slice, y: slice) -> np.ndarray | None:
        """The query's pixels of one file, filled with the file's nodata outside it; None when off its grid.

        Matches ``rasterio.merge.merge`` (what torchgeo calls) on a single source: the output is
        filled with the source's nodata value (0 when it has none), and valid source pixels are
        copied in. (Through torchgeo's WarpedVRT, a pixel that is nodata in some bands only may
        come back with a neighbour's value in those bands; here it keeps the file's.)
        """
        src = self._cached_load_warp_file(path) if self.cache else self._load_warp_file(path)
        transform = src.transform
        if transform.b != 0 or transform.d != 0 or transform.e >= 0:
            return None
        if not (math.isclose(transform.a, x.step, rel_tol=1e-9) and math.isclose(-transform.e, y.step, rel_tol=1e-9)):
            return None
        grid = [(x.start - transform.c) / x.step, (transform.f - y.stop) / y.step]
        grid += [(x.stop - x.start) / x.step, (y.stop - y.start) / y.step]
        if any(abs(value - round(value)) > 1e-6 for value in grid):
            return None
        col, row, width, height = (int(round(value)) for value in grid)
        dtype = np.dtype(src.dtypes[0])
        out = np.full((len(self.band_indexes or src.indexes), height, width), _fill_value(src.nodatavals[0], dtype))
        row0, col0 = max(row, 0), max(col, 0)
        row1, col1 = min(row + height, src.height), min(col + width, src.width)
        if row1 > row0 and col1 > col0:
            window = Window(col0, row0, col1 - col0, row1 - row0)
            data = src.read(self.band_indexes, window=window, masked=True)
            region = out[:, row0 - row : row1 - row, col0 - col : col1 - col]
            np.copyto(region, data.data, where=~np.ma.getmaskarray(data))
        return out


def _fill_value(nodata: float | None, dtype: np.dtype) -> np.generic:
    """What ``rasterio.merge.merge`` fills a window with: the nodata value when ``dtype`` holds it, else 0."""
    if nodata is None:
        return dtype.type(0)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return dtype.type(nodata) if math.isfinite(nodata) and info.min <= nodata <= info.max else dtype.type(0)
    return dtype.type(nodata)


def _ordered(bounds: Any) -> tuple[float, float, float, float]:
    """(left, bottom, right, top) with left <= right and bottom <= top, as torchgeo computes them."""
    return (
        min(bounds.left, bounds.right),
        min(bounds.bottom, bounds.top),
        max(bounds.left, bounds.right),
        max(bounds.bottom, bounds.top),
    )


class LissIVImage(_SceneRaster):
    """LISS-IV scenes: float32 image of shape (C, H, W) in file units (DN or reflectance)."""

    is_image = True


class LissIVMask(_SceneRaster):
    """Class masks: long (H, W); file nodata and outside-scene pixels become 255 (ignore)."""

    is_image = False

    def __getitem__(self, query: Any) -> dict[str, Any]:
        """Read the mask for a query, mapping the file's nodata value to the ignore index."""
        sample = super().__getitem__(query)
        nodata = self._nodata_value()
        if nodata is not None and nodata != IGNORE_INDEX:
            mask: Tensor = sample["mask"]
            mask[mask == nodata] = IGNORE_INDEX
        return sample

    def _nodata_value(self) -> float | None:

        if not hasattr(self, "_nodata"):
            with rasterio.open(self.index.filepath.iloc[0]) as src:
                self._nodata = src.nodata
        return self._nodata
