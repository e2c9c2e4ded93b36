"""Scene footprints: where crops of each scene of a torchgeo dataset may lie, on the scene's pixel grid.

A footprint is the bounding box of (scene bounds ∩ ``roi``), shrunk to whole pixels, as
torchgeo's ``RandomGeoSampler`` uses it. A crop centred on pixel ``p`` starts at ``p - size // 2``
and is shifted, never cut, to fit the footprint, so it still contains ``p``. Building the
footprints reads each scene's grid (one raster header per scene).

The masks are found in the dataset itself: an ``IntersectionDataset`` of an image and a mask
:class:`~torchgeo.datasets.RasterDataset` (``is_image=False``), such as ``LissIVImage & LissIVMask``.
Scene ids are the file stems of the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from torchgeo.datasets import GeoDataset, IntersectionDataset, RasterDataset

#: A torchgeo 0.8 query: ``(slice(xmin, xmax), slice(ymin, ymax), slice(tmin, tmax))``.
GeoSlice = tuple[slice, slice, slice]
#: Slack, in pixels, when snapping a footprint to whole pixels.
_SNAP = 1e-6


def _clamp_start(center: int, size: int, start: int, stop: int) -> int:
    """First pixel of a ``size``-pixel crop centred on ``center``, shifted into ``[start, stop)``."""
    return min(max(center - size // 2, start), stop - size)


@dataclass(frozen=True)
class SceneFootprint:
    """Where crops of one scene may lie, on the scene's pixel grid.

    Attributes:
        scene_id: file stem of the scene's image.
        mask_path: the scene's mask GeoTIFF, or None when the dataset has no mask.
        left: x of the left edge of pixel column 0 (CRS units).
        top: y of the top edge of pixel row 0 (CRS units).
        res: pixel size (x, y) in CRS units.
        rows: valid pixel rows ``[start, stop)``.
        cols: valid pixel columns ``[start, stop)``.
        time: the scene's time slice.
    """

    scene_id: str
    mask_path: Path | None
    left: float
    top: float
    res: tuple[float, float]
    rows: tuple[int, int]
    cols: tuple[int, int]
    time: slice

    @property
    def area(self) -> int:
        """Valid pixels."""
        return (self.rows[1] - self.rows[0]) * (self.cols[1] - self.cols[0])

    def query(self, row: int, col: int, size: tuple[int, int]) -> GeoSlice:
        """The torchgeo query of the crop whose top-left pixel is (``row``, ``col``), ``size`` = (h, w) pixels."""
        xmin = self.left + col * self.res[0]
        ymax = self.top - row * self.res[1]
        return slice(xmin, xmin + size[1] * self.res[0]), slice(ymax - size[0] * self.res[1], ymax), self.time

    def centred_query(self, row: int, col: int, size: tuple[int, int]) -> GeoSlice:
        """The query of the crop centred on pixel (``row``, ``col``), shifted to lie inside the footprint."""
        return self.query(_clamp_start(row, size[0], *self.rows), _clamp_start(col, size[1], *self.cols), size)


def _file_column(dataset: GeoDataset, is_image: bool) -> str | None:
    """Index column holding the file paths of the image (or mask) member of a dataset, if any."""
    if isinstance(dataset, RasterDataset):
        return "filepath" if dataset.is_image == is_image else None
    if isinstance(dataset, IntersectionDataset):
        for k, member in enumerate(dataset.datasets):
            if isinstance(member, RasterDataset) and member.is_image == is_image:
                suffixed = f"filepath_{k + 1}"
                return suffixed if suffixed in dataset.index.columns else "filepath"
    return None


def scene_footprints(index: Any, dataset: GeoDataset, res: tuple[float, float]) -> list[SceneFootprint]:
    """Footprints of the scenes in a sampler's (ROI-clipped) index.

    Args:
        index: the sampler's ``GeoDataFrame`` (geometry clipped to the roi, IntervalIndex of times).
        dataset: the dataset the index came from (to locate image and mask files).
        res: the dataset resolution (x, y) in CRS units; must equal the files' pixel size.

    Returns:
        One footprint per index row with at least one whole valid pixel.
    """
    image_column, mask_column = _file_column(dataset, True), _file_column(dataset, False)
    if image_column is None and mask_column is None:
        raise ValueError(
            f"sampler needs a RasterDataset or an IntersectionDataset of RasterDatasets, got {type(dataset).__name__}"
        )
    footprints = []
    for i in range(len(index)):
        mask_path = Path(index[mask_column].iloc[i]) if mask_column else None
        image_path = Path(index[image_column].iloc[i]) if image_column else mask_path
        with rasterio.open(mask_path or image_path) as src:
            transform, height, width = src.transform, src.height, src.width
        if transform.b != 0 or transform.d != 0 or transform.e >= 0:
            raise ValueError(f"{image_path}: sampler needs a north-up grid without rotation")
        pixel = (transform.a, -transform.e)
        if not np.allclose(pixel, res, rtol=1e-6):
            raise ValueError(f"{image_path}: pixel size {pixel} differs from the dataset resolution {tuple(res)}")
        xmin, ymin, xmax, ymax = index.geometry.iloc[i].bounds
        rows = (
            max(0, math.ceil((transform.f - ymax) / pixel[1] - _SNAP)),
            min(height, math.floor((transform.f - ymin) / pixel[1] + _SNAP)),
        )
        cols = (
            max(0, math.ceil((xmin - transform.c) / pixel[0] - _SNAP)),
            min(width, math.floor((xmax - transform.c) / pixel[0] + _SNAP)),
        )
        if rows[1] > rows[0] and cols[1] > cols[0]:
            interval = index.index[i]
            footprints.append(
                SceneFootprint(
                    image_path.stem,
                    mask_path,
                    transform.c,
                    transform.f,
                    pixel,
                    rows,
                    cols,
                    slice(interval.left, interval.right),
                )
            )
    return footprints
