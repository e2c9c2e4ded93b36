"""Output rasters of whole-scene prediction: the files, their description, row writing, overviews, previews."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import PIL.Image
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window

from rareseg.core.conventions import IGNORE_INDEX

#: Output files of a scene, in the order they are moved into place (``summary.json`` last marks completion).
OUTPUTS = ("mask.tif", "rare_prob.tif", "saliency_topk.tif", "preview_mask.png", "preview_prob.png", "summary.json")
#: Rare-class probabilities are stored as uint8 percent: ``value = round(P / PROBABILITY_SCALE)``, GDAL scale 0.01.
PROBABILITY_SCALE = 0.01
#: Colour table of ``saliency_topk.tif``: 0 black, 1 gold, nodata transparent.
TOPK_COLORMAP = {0: (0, 0, 0, 255), 1: (255, 215, 0, 255), IGNORE_INDEX: (0, 0, 0, 0)}
#: Side of the square internal tiles of every output GeoTIFF, in pixels.
BLOCK = 256
#: Smallest overview side: overviews halve the scene until its longer side would drop below this.
MIN_OVERVIEW_SIDE = 128
#: Deflate level of outputs and their overviews: 1 writes ~2.5x faster than the default 6 for ~25 % larger files.
DEFLATE_LEVEL = 1
#: Fast PNG compression for previews (they are small; encoding speed matters more than size).
PNG_OPTIONS = {"compress_level": 1}


def output_profile(src: rasterio.DatasetReader, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """Creation options of an output on the grid of ``src``: same size, CRS and transform; tiled, deflate level 1."""
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": src.crs,
        "transform": src.transform,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "zlevel": DEFLATE_LEVEL,
        "BIGTIFF": "IF_SAFER",
    }


def describe_outputs(
    mask: rasterio.io.DatasetWriter,
    probs: rasterio.io.DatasetWriter,
    class_names: Sequence[str],
    class_colors: Sequence[tuple[int, int, int]],
    rare_classes: Sequence[int],
    thresholds: Sequence[float],
) -> None:
    """Colour table, class names, band descriptions, scales and thresholds of ``mask.tif`` and ``rare_prob.tif``.

    QGIS shows the class names in its legend (band tags ``class_<id>`` and the colour table) and
    reads the percent bands as probabilities through the GDAL scale.
    """
    mask.set_band_description(1, "class")
    mask.update_tags(class_names=json.dumps(list(class_names)))
    mask.update_tags(1, **{f"class_{i}": name for i, name in enumerate(class_names)})
    mask.write_colormap(1, {**{i: (*colour, 255) for i, colour in enumerate(class_colors)}, IGNORE_INDEX: (0, 0, 0, 0)})
    probs.descriptions = tuple(class_names[c] for c in rare_classes)
    probs.scales = (PROBABILITY_SCALE,) * len(rare_classes)
    probs.offsets = (0.0,) * len(rare_classes)
    probs.update_tags(units="percent", scale="probability = value * 0.01")
    for band, (class_id, threshold) in enumerate(zip(rare_classes, thresholds), start=1):
        probs.update_tags(band, class_id=str(class_id), threshold=str(threshold))


class BlockRowWriter:
    """Append rows to a GeoTIFF top to bottom, writing whole rows of internal blocks only.

    Rows arrive in strips of any height; each write covers complete block rows (``BLOCK`` rows,
    the last one shorter), so no compressed block is ever written twice. At most ``BLOCK - 1``
    pending rows stay in memory.

    Args:
        dataset: a GeoTIFF opened for writing.
    """

    def __init__(self, dataset: rasterio.io.DatasetWriter) -> None:
        self.dataset = dataset
        self.next_row = 0
        self._pending: np.ndarray | None = None

    def append(self, rows: np.ndarray) -> None:
        """Queue (count, n, width) rows below the ones already given and write complete block rows."""
        pending = rows if self._pending is None else np.concatenate([self._pending, rows], axis=1)
        end = self.next_row + pending.shape[1]
        ready = end - self.next_row if end == self.dataset.height else (end // BLOCK) * BLOCK - self.next_row
        if ready > 0:
            self.dataset.write(pending[:, :ready], window=Window(0, self.next_row, self.dataset.width, ready))
            self.next_row += ready
        self._pending = pending[:, ready:].copy() if ready < pending.shape[1] else None


def overview_factors(height: int, width: int, min_side: int = MIN_OVERVIEW_SIDE) -> list[int]:
    """Decimation factors ``2, 4, 8, ...`` while ``max(height, width) / factor >= min_side``."""
    factors = []
    factor = 2
    while max(height, width) / factor >= min_side:
        factors.append(factor)
        factor *= 2
    return factors


def build_overviews(path: Path, resampling: Resampling) -> None:
    """Add internal overviews (:func:`overview_factors`) to a finished GeoTIFF."""
    with rasterio.Env(ZLEVEL_OVERVIEW=DEFLATE_LEVEL), rasterio.open(path, "r+") as dst:
        factors = overview_factors(dst.height, dst.width)
        if factors:
            dst.build_overviews(factors, resampling)
            dst.update_tags(ns="rio_overview", resampling=resampling.name)


def _decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    return max(1, height // step), max(1, width // step)


def _write_palette_png(png_path: Path, indices: np.ndarray, palette: np.ndarray, transparent: int) -> None:
    """Write (H, W) uint8 ``indices`` as a palette PNG of colours ``palette[i]`` (N <= 256, RGB).

    Index ``transparent`` is see-through.

    A palette image is a quarter of the bytes of RGBA, and encodes about 10x faster.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    image = PIL.Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8), mode="P")
    image.putpalette(table.tobytes())
    image.save(png_path, format="png", transparency=transparent, **PNG_OPTIONS)


def write_mask_preview(
    mask_path: Path,
    png_path: Path,
    colours: Sequence[tuple[int, int, int]],
    max_side: int,
    nodata: int = IGNORE_INDEX,
) -> None:
    """Palette PNG of the class mask in its class colours (``nodata`` transparent), longer side at most ``max_side``."""
    with rasterio.open(mask_path) as src:
        mask = src.read(1, out_shape=_decimated_shape(src.height, src.width, max_side), resampling=Resampling.nearest)
    _write_palette_png(png_path, mask, np.array([colour[:3] for colour in colours], dtype=np.uint8), transparent=nodata)


def write_probability_preview(prob_path: Path, png_path: Path, max_side: int, nodata: int = IGNORE_INDEX) -> None:
    """Palette PNG of the highest rare-class probability per pixel (magma colour map, ``nodata`` transparent).

    The bands hold integer percent (0..100), so the preview is exact with one palette entry per percent.
    """
    with rasterio.open(prob_path) as src:
        percent = src.read(
            out_shape=(src.count, *_decimated_shape(src.height, src.width, max_side)), resampling=Resampling.nearest
        )
        scale = src.scales[0]
    # nodata is shared by every band, and valid percentages are <= 100 < nodata
    highest = np.where(percent[0] != nodata, percent.max(axis=0), nodata)
    levels = np.arange(256) * scale
    palette = matplotlib.colormaps["magma"](np.clip(levels, 0.0, 1.0), bytes=True)[:, :3]
    _write_palette_png(png_path, highest, palette, transparent=nodata)
