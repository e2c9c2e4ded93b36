"""Training-split statistics (per-band mean/std, class pixel frequencies), cached in the root.

Statistics are computed once from the training split, over valid pixels only (image
not nodata and finite in every band, mask not ignore), and stored in ``<root>/stats.json`` together with a
fingerprint of the files and split they came from; a changed file or split recomputes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm import tqdm

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.core.files import write_atomically
from rareseg.core.pixels import nodata_pixels
from rareseg.datamodules.scenes import DataError, Scene, read_window

STATS_VERSION = 1
_ROWS_PER_READ = 1024


@dataclass
class DatasetStats:
    """Normalisation and class statistics of a training split.

    Attributes:
        band_mean: per-band mean of valid pixels (file units: DN or reflectance).
        band_std: per-band standard deviation of valid pixels.
        class_frequencies: fraction of valid training pixels in each class (sums to 1).
        class_counts: valid training pixel count of each class.
        fingerprint: what the statistics were computed from (files, sizes, mtimes, split).
    """

    band_mean: list[float]
    band_std: list[float]
    class_frequencies: list[float]
    class_counts: list[int]
    fingerprint: dict


def _fingerprint(scenes: Sequence[Scene], rows: tuple[float, float]) -> dict:
    files = {}
    for scene in scenes:
        for path in (scene.image, scene.mask):
            if path is not None:
                st = path.stat()
                files[str(path.name) + ("/mask" if path == scene.mask else "")] = [st.st_size, int(st.st_mtime)]
    return {"version": STATS_VERSION, "scenes": [s.stem for s in scenes], "rows": list(rows), "files": files}


def fraction_rows(rows: tuple[float, float], height: int) -> tuple[int, int]:
    """Pixel rows ``[round(a * height), round(b * height))`` of the row fractions ``rows = (a, b)`` of a scene."""
    return int(round(rows[0] * height)), int(round(rows[1] * height))


def _row_windows(height: int, width: int, rows: tuple[float, float]) -> Iterator[Window]:
    start, stop = fraction_rows(rows, height)
    for row in range(start, stop, _ROWS_PER_READ):
        yield Window(0, row, width, min(_ROWS_PER_READ, stop - row))


def _check_ids(mask: np.ndarray, path: Path, num_classes: int) -> None:
    """Raise a :class:`DataError` naming ``path`` if ``mask`` has an id outside 0..num_classes-1 (255 allowed)."""
    bad = (mask != IGNORE_INDEX) & (mask >= num_classes)
    if bad.any():
        raise DataError(
            f"{path}: class id {int(mask[bad].max())} is not in classes.yaml (ids 0..{num_classes - 1}, 255 = ignore)"
        )


def compute_stats(
    scenes: Sequence[Scene], num_classes: int, rows: tuple[float, float] = (0.0, 1.0), progress: bool = True
) -> DatasetStats:
    """Compute band statistics and class frequencies over the given scenes.

    Args:
        scenes: training scenes (with masks).
        num_classes: number of classes; a mask value >= this (other than 255) is an error.
        rows: fraction of each scene's rows to use, as (start, stop), for block splits.
        progress: show a tqdm bar.

    Returns:
        The statistics (float64 accumulation).
    """
    n_bands = None
    total = sumsq = None
    count = 0
    class_counts = np.zeros(num_classes, dtype=np.int64)
    for scene in tqdm(scenes, desc="dataset statistics", disable=not progress):
        with rasterio.open(scene.image) as img, rasterio.open(scene.mask) as msk:
            if n_bands is None:
                n_bands = img.count
                total = np.zeros(n_bands)
                sumsq = np.zeros(n_bands)
            for window in _row_windows(scene.height, scene.width, rows):
                image = read_window(img, window).astype(np.float64)
                mask = read_window(msk, window, 1)
                _check_ids(mask, scene.mask, num_classes)
                valid = (mask != IGNORE_INDEX) & ~nodata_pixels(image, scene.nodata)
                pixels = image[:, valid]
                total += pixels.sum(axis=1)
                sumsq += (pixels**2).sum(axis=1)
                count += pixels.shape[1]
                class_counts += np.bincount(mask[valid], minlength=num_classes)[:num_classes]
    if count == 0:
        raise DataError(
            f"{scenes[0].image.parent}: the training split has no valid pixels (labelled, not nodata, finite)"
        )
    mean = total / count
    std = np.sqrt(np.maximum(sumsq / count - mean**2, 0.0))
    frequencies = class_counts / class_counts.sum()
    return DatasetStats(
        mean.tolist(),
        np.maximum(std, 1e-6).tolist(),
        frequencies.tolist(),
        class_counts.tolist(),
        _fingerprint(scenes, rows),
    )


def check_class_ids(scenes: Sequence[Scene], num_classes: int) -> None:
    """Raise a :class:`DataError` naming the first mask with a class id outside ``classes.yaml``."""
    for scene in scenes:
        if scene.mask is None:
            continue
        with rasterio.open(scene.mask) as msk:
            for window in _row_windows(scene.height, scene.width, (0.0, 1.0)):
                _check_ids(msk.read(1, window=window), scene.mask, num_classes)


def load_or_compute_stats(
    root: Path, scenes: Sequence[Scene], num_classes: int, rows: tuple[float, float] = (0.0, 1.0), cache: bool = True
) -> DatasetStats:
    """Return cached statistics from ``root/stats.json`` when still valid, else compute and cache them."""
    path = root / "stats.json"
    expected = _fingerprint(scenes, rows)
    if cache and path.is_file():
        try:
            cached = DatasetStats(**json.loads(path.read_text()))
        except (json.JSONDecodeError, TypeError):
            cached = None
        if cached is not None and cached.fingerprint == expected and len(cached.class_counts) == num_classes:
            return cached
    stats = compute_stats(scenes, num_classes, rows)
    if cache and os.access(root, os.W_OK):
        write_atomically(path, json.dumps(asdict(stats), indent=1).encode())
    return stats
