"""The grid part of a prediction's ``summary.json``: size, CRS, pixel area and class areas in hectares."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import rasterio
from rasterio import Affine
from rasterio.crs import CRS

SQUARE_METRES_PER_HECTARE = 1e4


def pixel_area_m2(transform: Affine, crs: CRS | None) -> float | None:
    """Ground area of one pixel in square metres.

    ``A = |a * e - b * d| * u^2`` with ``a, b, d, e`` the geotransform's linear part in CRS units
    and ``u`` the CRS's metres per unit.

    Args:
        transform: the raster's affine geotransform.
        crs: its coordinate reference system.

    Returns:
        The area, or None when it has no meaning in metres: no CRS, or a geographic CRS (degrees).
    """
    if crs is None or not crs.is_projected:
        return None
    _, metres_per_unit = crs.linear_units_factor
    return abs(transform.a * transform.e - transform.b * transform.d) * metres_per_unit**2


def areas_hectares(pixel_counts: np.ndarray, pixel_area: float | None) -> list[float | None]:
    """Class areas ``count * pixel_area / 10^4`` in hectares (None per class when the pixel area is unknown)."""
    if pixel_area is None:
        return [None] * len(pixel_counts)
    return [float(count) * pixel_area / SQUARE_METRES_PER_HECTARE for count in pixel_counts]


def grid_summary(src: rasterio.DatasetReader, class_counts: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Grid, CRS and per-class pixel counts and areas (hectares, ``count * pixel area / 10^4``) of a scene.

    Args:
        src: the input scene.
        class_counts: (K,) valid pixels per predicted class.
        class_names: the K class names.

    Returns:
        ``width``, ``height``, ``crs``, ``transform`` (six coefficients), ``pixel_area_m2``,
        ``valid_pixels``, ``nodata_pixels`` and ``classes`` (``id``, ``name``, ``pixels``, ``area_ha``).
    """
    pixel_area = pixel_area_m2(src.transform, src.crs)
    valid = int(class_counts.sum())
    return {
        "width": src.width,
        "height": src.height,
        "crs": None if src.crs is None else src.crs.to_string(),
        "transform": list(src.transform)[:6],
        "pixel_area_m2": pixel_area,
        "valid_pixels": valid,
        "nodata_pixels": src.width * src.height - valid,
        "classes": [
            {"id": i, "name": name, "pixels": int(count), "area_ha": area}
            for i, (name, count, area) in enumerate(
                zip(class_names, class_counts, areas_hectares(class_counts, pixel_area))
            )
        ],
    }
