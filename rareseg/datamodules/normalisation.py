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
valid pixels (:func:`sample_pixels`): a decimated read (an overview level when the file has
one) or, without overviews, a few evenly spaced full-width strips.
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
from rasterio.windows import Window

#: The normalisations a datamodule and a checkpoint may name.
NORMALISATIONS = ("dataset", "scene")
#: Without overviews: number of evenly spaced full-width strips read, and rows per strip.
SAMPLE_STRIPS = 16
STRIP_ROWS = 8
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
    (nearest neighbour, which GDAL serves from an overview level); one without is read as
    :data:`SAMPLE_STRIPS` evenly spaced full-width strips of :data:`STRIP_ROWS` rows (the whole
    scene when it is smaller). Valid: see :func:`valid_pixels`.

    Args:
        src: the open scene.

    Returns:
        The valid pixels (N may be 0).
    """
    height, width = src.height, src.width
    if src.overviews(1):
        factor = max(1, math.ceil(max(height, width) / OVERVIEW_SIDE))
        shape = (src.count, math.ceil(height / factor), math.ceil(width / factor))
        data = src.read(out_shape=shape, resampling=Resampling.nearest)
    elif height <= SAMPLE_STRIPS * STRIP_ROWS:
        data = src.read()
    else:
        step = (height - STRIP_ROWS) / (SAMPLE_STRIPS - 1)
        strips = [src.read(window=Window(0, round(i * step), width, STRIP_ROWS)) for i in range(SAMPLE_STRIPS)]
        data = np.concatenate(strips, axis=1)
    pixels = data.reshape(src.count, -1).astype(np.float64)
    return pixels[:, valid_pixels(data, src.nodata)]


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


def scene_standardisation(path: str, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """:func:`robust_standardisation` of the :func:`sample_pixels` of the scene file ``path`` times ``scale``."""
    with rasterio.open(path) as src:
        return robust_standardisation(sample_pixels(src) * scale)


class SceneStandardise:
    """Sample transform of the ``"scene"`` normalisation for training crops: ``(x - median_s) / sigma_s``.

    Each crop is standardised with the statistics of the scene it was read from, found by the
    crop's query (``sample["bounds"]``, a torchgeo ``GeoSlice``): the scene whose time slot and
    footprint contain the query's centre. Every pixel is standardised, nodata ones too, as
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
        cx, cy = (x.start + x.stop) / 2, (y.start + y.stop) / 2
        for start, stop, (xmin, ymin, xmax, ymax), median, sigma in self.scenes:
            if start <= t.stop and t.start <= stop and xmin <= cx <= xmax and ymin <= cy <= ymax:
                return median, sigma
        raise LookupError(f"scene normalisation: no scene contains the crop {query}")

    def __call__(self, sample: dict[str, Any]) -> dict[str, Any]:
        """Standardise ``sample["image"]`` (C, H, W) with its scene's statistics."""
        median, sigma = self._statistics(sample["bounds"])
        sample["image"] = (sample["image"].float() - median) / sigma
        return sample


def _column(values: Any) -> torch.Tensor:
    """(C,) values as a float32 (C, 1, 1) tensor that broadcasts over (C, H, W)."""
    return torch.as_tensor(np.asarray(values, dtype=np.float32))[:, None, None]
