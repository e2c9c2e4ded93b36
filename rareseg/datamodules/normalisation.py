"""Scene samples, their per-band statistics, and the two input normalisations (``dataset`` and ``scene``).

A network sees its input bands standardised. Two ways are offered, chosen by the datamodule's
``normalisation`` option and stored in the checkpoint, so inference normalises as training did:

- ``"dataset"`` (default): ``x' = (x - mean) / std`` with the per-band mean and standard
  deviation of the training split (``stats.json``). Keeps absolute radiometry (water is dark in
  NIR in every scene), but a scene in another radiometric scale (DN vs reflectance x 10,000 vs
  float reflectance) lands far outside what the network has seen.
- ``"scene"``: per-scene robust standardisation ``x' = (x - median_s) / sigma_s`` with the median
  and robust spread ``sigma_s = (p98 - p2) / (2 z_0.98)`` of the scene's own valid pixels
  (:func:`robust_standardisation`; ``z_0.98 = 2.054``, so ``sigma_s`` is the standard deviation of
  normal data). Invariant to any positive scale factor of the scene (``median`` and the
  percentiles scale with it), at the price of the scene's absolute level: a scene that is mostly
  water is standardised differently from one that is mostly cropland.

Both training and inference compute a scene's statistics from the same cheap sample of its
valid pixels (:func:`sample_pixels`): an overview level when the file has one, else a few dozen
of its blocks (tiles or strips) spread over the scene.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import torch
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.windows import Window

from rareseg.datamodules.scenes import DataError, read_window

#: The normalisations a datamodule and a checkpoint may name.
NORMALISATIONS = ("dataset", "scene")
#: Without overviews: blocks of the file read at most (spread evenly), and pixels kept at most
#: (each block decimated by the same row and column step).
SAMPLE_BLOCKS = 32
SAMPLE_PIXELS = 2**18
#: With overviews: longer side, in pixels, of the decimated read.
OVERVIEW_SIDE = 1024
#: Percentiles of a scene's robust range (observed range in warnings; spread of ``"scene"``).
LOW_PERCENTILE, HIGH_PERCENTILE = 2.0, 98.0
#: Standard-normal quantile of ``HIGH_PERCENTILE``: ``p98 - p2 = 2 * Z_HIGH * sigma`` for normal data.
Z_HIGH = 2.0537489
#: Smallest spread used to divide by (a constant band does not divide by zero).
MIN_SPREAD = 1e-6


def check_normalisation(normalisation: str) -> str:
    """Return ``normalisation`` when it is one of :data:`NORMALISATIONS`; else a one-line ValueError."""
    if normalisation not in NORMALISATIONS:
        raise ValueError(f"normalisation must be one of {', '.join(NORMALISATIONS)}, got {normalisation!r}")
    return normalisation


def valid_pixels(data: np.ndarray, nodata: float | None) -> np.ndarray:
    """(N,) mask of the pixels of a (C, H, W) read that are finite in every band and not nodata in all bands."""
    valid = np.isfinite(data).all(axis=0)
    if nodata is not None:
        valid &= ~(data == nodata).all(axis=0)
    return valid.reshape(-1)


def sample_pixels(src: rasterio.DatasetReader) -> np.ndarray:
    """A cheap, deterministic sample of a scene's valid pixels, (C, N) float64 in file units.

    A file with overviews is read decimated to a longer side of :data:`OVERVIEW_SIDE` pixels
    (nearest neighbour, which GDAL serves from an overview level). A file without is read in
    whole blocks of its own layout (tiles, or strips of rows), so nothing is decompressed twice:
    at most :data:`SAMPLE_BLOCKS` blocks spread evenly over the blocks in raster order, each
    decimated by the same row and column step so that at most about :data:`SAMPLE_PIXELS` pixels
    are kept; when those blocks hold no valid pixel (a small footprint), the whole scene is read
    decimated as with overviews. Valid: see :func:`valid_pixels`. The sample depends on the file's layout: a copy
    written with other tiles or overviews gives slightly different statistics.

    Args:
        src: the open scene.

    Returns:
        The valid pixels (N may be 0).
    """
    height, width = src.height, src.width
    if src.overviews(1):
        return _decimated(src)
    block_h, block_w = (min(side, limit) for side, limit in zip(src.block_shapes[0], (height, width)))
    rows, cols = math.ceil(height / block_h), math.ceil(width / block_w)
    count = min(rows * cols, SAMPLE_BLOCKS)
    step = max(1, math.ceil(math.sqrt(count * block_h * block_w / SAMPLE_PIXELS)))
    parts = []
    for i in range(count):
        index = round(i * (rows * cols - 1) / (count - 1)) if count > 1 else 0
        y0, x0 = (index // cols) * block_h, (index % cols) * block_w
        window = Window(x0, y0, min(block_w, width - x0), min(block_h, height - y0))
        data = read_window(src, window)[:, ::step, ::step]
        parts.append(data.reshape(src.count, -1)[:, valid_pixels(data, src.nodata)])
    pixels = np.concatenate(parts, axis=1).astype(np.float64)
    if pixels.shape[1] == 0 and count < rows * cols:  # the blocks missed a small footprint: look everywhere
        return _decimated(src)
    return pixels


def _decimated(src: rasterio.DatasetReader) -> np.ndarray:
    """Valid pixels of the scene read at a longer side of :data:`OVERVIEW_SIDE` (nearest), (C, N) float64."""
    factor = max(1, math.ceil(max(src.height, src.width) / OVERVIEW_SIDE))
    shape = (src.count, math.ceil(src.height / factor), math.ceil(src.width / factor))
    try:
        data = src.read(out_shape=shape, resampling=Resampling.nearest)
    except RasterioError as err:
        detail = " ".join(str(err).split())
        raise DataError(
            f"{src.name}: read failed in a decimated read of the whole scene (truncated or corrupt file? {detail})"
        ) from None
    return data.reshape(src.count, -1).astype(np.float64)[:, valid_pixels(data, src.nodata)]


@dataclass(frozen=True)
class BandStatistics:
    """Per-band statistics of a sample of valid pixels, all (C,) float64 in the sample's units.

    Attributes:
        mean: mean of the pixels clipped to the band's 0.5th..99.5th percentiles (winsorised).
        std: standard deviation of the same winsorised pixels.
        low: :data:`LOW_PERCENTILE` th percentile.
        median: median.
        high: :data:`HIGH_PERCENTILE` th percentile.
        pixels: number of pixels in the sample.
    """

    mean: np.ndarray
    std: np.ndarray
    low: np.ndarray
    median: np.ndarray
    high: np.ndarray
    pixels: int

    @classmethod
    def of(cls, pixels: np.ndarray) -> BandStatistics:
        """Statistics of (C, N) pixels (N >= 1)."""
        if pixels.shape[1] == 0:
            raise ValueError("no valid pixel to compute band statistics from")
        edges = np.percentile(pixels, [0.5, LOW_PERCENTILE, 50.0, HIGH_PERCENTILE, 99.5], axis=1)
        clipped = np.clip(pixels, edges[0][:, None], edges[4][:, None])
        return cls(clipped.mean(axis=1), clipped.std(axis=1), edges[1], edges[2], edges[3], int(pixels.shape[1]))

    def summary(self) -> dict[str, Any]:
        """JSON-ready lists (``mean``, ``std``, ``p2``, ``median``, ``p98``, ``pixels``)."""
        return {
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            f"p{LOW_PERCENTILE:g}": self.low.tolist(),
            "median": self.median.tolist(),
            f"p{HIGH_PERCENTILE:g}": self.high.tolist(),
            "pixels": self.pixels,
        }


def robust_standardisation(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Centre and scale of the ``"scene"`` normalisation: per-band median and ``(p98 - p2) / (2 * Z_HIGH)``.

    Args:
        pixels: (C, N) valid pixels of one scene (:func:`sample_pixels`), N >= 1.

    Returns:
        ``(median, sigma)``, each (C,) float64; ``sigma >= MIN_SPREAD``.
    """
    if pixels.shape[1] == 0:
        raise ValueError("no valid pixel to standardise the scene with")
    low, median, high = np.percentile(pixels, [LOW_PERCENTILE, 50.0, HIGH_PERCENTILE], axis=1)
    return median, np.maximum((high - low) / (2 * Z_HIGH), MIN_SPREAD)


def scene_standardisation(path: str) -> tuple[np.ndarray, np.ndarray]:
    """:func:`robust_standardisation` of the :func:`sample_pixels` of the scene file ``path``.

    Raises:
        DataError: the scene has no valid pixel.
    """
    with rasterio.open(path) as src:
        pixels = sample_pixels(src)
    if pixels.shape[1] == 0:
        raise DataError(f"{path}: no valid pixel to standardise the scene with (normalisation: scene)")
    return robust_standardisation(pixels)


class SceneStandardise:
    """Sample transform of the ``"scene"`` normalisation for training crops: ``(x - median_s) / sigma_s``.

    Each crop is standardised with the statistics of the scene it was read from, found by the
    crop's query (``sample["bounds"]``, a torchgeo ``GeoSlice``): the scene whose time slot and
    footprint overlaps the query most (a grid sampler's last tile may reach past a scene's edge).
    Every pixel is standardised, nodata ones too, as
    inference does; run the nodata rule (``MarkNodata``) before this transform.

    Args:
        scenes: per scene, ``(t_start, t_stop, (xmin, ymin, xmax, ymax), median, sigma)``; the
            statistics are (C,) in file units.
    """

    def __init__(self, scenes: Sequence[tuple[Any, Any, tuple[float, ...], Any, Any]]) -> None:
        self.scenes = [
            (start, stop, bounds, _column(median), _column(sigma)) for start, stop, bounds, median, sigma in scenes
        ]

    def _statistics(self, query: Any) -> tuple[torch.Tensor, torch.Tensor]:
        x, y, t = query
        best, chosen = 0.0, None
        for start, stop, (xmin, ymin, xmax, ymax), median, sigma in self.scenes:
            if start <= t.stop and t.start <= stop:
                # the overlap, not the centre: a grid sampler's last tile may reach past the scene's edge
                overlap = max(0.0, min(x.stop, xmax) - max(x.start, xmin)) * max(
                    0.0, min(y.stop, ymax) - max(y.start, ymin)
                )
                if overlap > best:
                    best, chosen = overlap, (median, sigma)
        if chosen is None:
            raise LookupError(f"scene normalisation: no scene overlaps the crop {query}")
        return chosen

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Standardise ``sample["image"]`` (C, H, W) with its scene's statistics."""
        median, sigma = self._statistics(sample["bounds"])
        sample["image"] = (sample["image"].float() - median) / sigma
        return sample


def _column(values: Any) -> torch.Tensor:
    """(C,) values as a float32 (C, 1, 1) tensor that broadcasts over (C, H, W)."""
    return torch.as_tensor(np.asarray(values, dtype=np.float32))[:, None, None]
