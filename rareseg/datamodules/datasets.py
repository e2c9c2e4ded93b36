"""TorchGeo raster datasets for LISS-IV scenes and their class masks."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from torch import Tensor
from torchgeo.datasets import RasterDataset

from rareseg.core.conventions import IGNORE_INDEX

_EPOCH = pd.Timestamp("2000-01-01")


class _SceneRaster(RasterDataset):
    """A RasterDataset over explicit scene files in which every scene is its own time slot.

    LISS-IV scenes of one area taken on different dates overlap on the ground; torchgeo
    would mosaic them into one query. Giving the k-th scene (by sorted file stem) the
    interval [k days, k days + 12 h] keeps every sample inside one scene, and an image
    and its mask (same stem, same k) still intersect.
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
        import rasterio

        if not hasattr(self, "_nodata"):
            with rasterio.open(self.index.filepath.iloc[0]) as src:
                self._nodata = src.nodata
        return self._nodata
