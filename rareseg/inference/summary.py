"""Areas for the prediction summary: pixel area from the geotransform and class areas in hectares."""

from __future__ import annotations

import numpy as np
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
