"""Low-resolution saliency maps of whole scenes, for the saliency-guided training sampler.

A map is the one inference pass (:func:`~rareseg.inference.scene.blend_scene`) reduced to cells:
a pixel's saliency is ``s = max_r S_r``, the highest blended saliency-head probability over the
rare classes (the reduction of the model's saliency gate; the maximum keeps a pixel salient when
any one rare class is likely), and a cell's value is the mean ``s`` of its valid pixels. The
``SaliencyRefresh`` callback gets maps through ``RareSegModule.scene_saliency``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from affine import Affine

from rareseg.inference.predictor import Predictor
from rareseg.inference.radiometry import prepare_scene
from rareseg.inference.scene import GDAL_CACHE_MB, blend_scene, open_scene
from rareseg.inference.tiling import BlendedRows


def accumulate_cells(
    values: np.ndarray,
    row: int,
    col: int,
    cell: int,
    sums: np.ndarray,
    counts: np.ndarray,
    valid: np.ndarray | None = None,
) -> None:
    """Add a block of pixel values into per-cell sums and counts (the map is ``sums / counts``).

    Cell ``(i, j)`` covers scene pixels ``[i*cell, (i+1)*cell) x [j*cell, (j+1)*cell)``; edge cells
    are partial, so their mean is over the pixels they hold.

    Args:
        values: (h, w) values of the scene pixels ``[row, row+h) x [col, col+w)``.
        row: first scene row of the block.
        col: first scene column of the block.
        cell: cell side in pixels.
        sums: (ceil(H/cell), ceil(W/cell)) float64 running sums, updated in place.
        counts: same shape, running pixel counts, updated in place.
        valid: optional (h, w) bool; only these pixels are added.
    """
    height, width = values.shape
    cell_rows = (np.arange(row, row + height) // cell)[:, None]
    cell_cols = (np.arange(col, col + width) // cell)[None, :]
    top, left = row // cell, col // cell
    span = (int(cell_rows[-1, 0]) - top + 1, int(cell_cols[0, -1]) - left + 1)
    local = ((cell_rows - top) * span[1] + (cell_cols - left)).ravel()
    weights = values.ravel()
    if valid is not None:
        keep = valid.ravel()
        local, weights = local[keep], weights[keep]
    size = span[0] * span[1]
    sums[top : top + span[0], left : left + span[1]] += np.bincount(local, weights=weights, minlength=size).reshape(
        span
    )
    counts[top : top + span[0], left : left + span[1]] += np.bincount(local, minlength=size).reshape(span)


def scene_saliency_map(
    predictor: Predictor,
    image_path: str | Path,
    resolution: float,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
) -> tuple[np.ndarray, Affine]:
    """Mean saliency of a scene over cells of ``k = max(1, round(resolution / pixel size))`` pixels.

    Args:
        predictor: a network with a saliency head.
        image_path: the scene GeoTIFF.
        resolution: target cell size in CRS units (metres), rounded to whole pixels.
        tile: tile side in pixels of the pass.
        overlap: pixels shared by neighbouring tiles.
        batch_size: tiles per forward pass.
        progress: called with the fraction of the pass done.

    Returns:
        The (ceil(H/k), ceil(W/k)) float32 map (NaN for cells without a valid pixel) and its
        ``Affine`` (cell -> scene CRS).

    Raises:
        ValueError: the network has no saliency head.
        DataError: the scene is not a readable GeoTIFF with the predictor's band count.
    """
    path = Path(image_path)
    with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_scene(path, predictor.in_channels) as src:
        predictor, _ = prepare_scene(predictor, src, str(path))  # the scene's normalisation, as every pass
        cell = max(1, round(resolution / src.res[0]))
        shape = (math.ceil(src.height / cell), math.ceil(src.width / cell))
        sums, counts = np.zeros(shape), np.zeros(shape)

        def add_rows(rows: BlendedRows) -> None:
            if rows.saliency_sums is None:
                raise ValueError(
                    f"{path}: a saliency map needs a network with a saliency head (saliency_logits (B, R, H, W));"
                    " this one has none"
                )
            saliency = rows.saliency_sums.max(axis=0) / rows.weights  # the weight sum is positive
            accumulate_cells(saliency, rows.start, 0, cell, sums, counts, rows.valid)

        blend_scene(predictor, src, add_rows, tile=tile, overlap=overlap, batch_size=batch_size, progress=progress)
        transform = src.transform * Affine.scale(cell)
    with np.errstate(divide="ignore", invalid="ignore"):
        return (sums / counts).astype(np.float32), transform
