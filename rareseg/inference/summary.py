"""The grid part of a prediction's ``summary.json``: size, CRS, pixel area and class areas in hectares.

Areas come from the CRS: a projected CRS has one pixel area (``|det| * u^2``, :func:`pixel_area_m2`);
in a geographic CRS (degrees) a pixel's ground area shrinks with latitude, so each row gets the
geodesic area of its pixel footprint on the CRS's ellipsoid (:func:`row_pixel_areas`). Other CRSs
(no linear units: engineering, geocentric) and scenes without a CRS report no areas, with a warning.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyproj
import rasterio
from rasterio import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError

SQUARE_METRES_PER_HECTARE = 1e4


def pixel_area_m2(transform: Affine, crs: CRS | None) -> float | None:
    """Ground area of one pixel in square metres, in a projected CRS.

    ``A = |a * e - b * d| * u^2`` with ``a, b, d, e`` the geotransform's linear part in CRS units
    and ``u`` the CRS's metres per unit.

    Args:
        transform: the raster's affine geotransform.
        crs: its coordinate reference system.

    Returns:
        The area, or None when it is not one number in metres: no CRS, a geographic CRS (see
        :func:`row_pixel_areas`), or a CRS without linear units.
    """
    if crs is None or not crs.is_projected:
        return None
    try:
        _, metres_per_unit = crs.linear_units_factor
    except CRSError:
        return None
    return abs(transform.a * transform.e - transform.b * transform.d) * metres_per_unit**2


def row_pixel_areas(transform: Affine, crs: CRS | None, height: int, width: int, name: str = "") -> np.ndarray | None:
    """Ground area in square metres of a pixel of each row: (height,) float64, or None with a warning.

    Projected CRS: :func:`pixel_area_m2` for every row. Geographic CRS: the geodesic area
    (``pyproj.Geod.polygon_area_perimeter`` on the CRS's ellipsoid) of the footprint of the row's
    middle pixel, whose corners are the geotransform of its pixel corners in degrees. No CRS, or a
    CRS without linear units: None, and one warning naming ``name`` (the no-CRS warning is the
    caller's, which says it when opening the scene).
    """
    if crs is None:
        return None
    area = pixel_area_m2(transform, crs)
    if area is not None:
        return np.full(height, area, dtype=np.float64)
    if not crs.is_geographic:
        warnings.warn(f"{name}: CRS {crs} has no linear units; areas are not reported", stacklevel=2)
        return None
    geod = pyproj.CRS.from_user_input(crs.to_wkt()).get_geod()
    column = width // 2
    areas = np.empty(height, dtype=np.float64)
    for row in range(height):
        corners = [transform @ (column + dx, row + dy) for dx, dy in ((0, 0), (1, 0), (1, 1), (0, 1))]
        lons, lats = zip(*corners)
        areas[row] = abs(geod.polygon_area_perimeter(lons, lats)[0])
    return areas


def areas_hectares(pixel_counts: np.ndarray, pixel_area: float | None) -> list[float | None]:
    """Class areas ``count * pixel_area / 10^4`` in hectares (None per class when the pixel area is unknown)."""
    if pixel_area is None:
        return [None] * len(pixel_counts)
    return [float(count) * pixel_area / SQUARE_METRES_PER_HECTARE for count in pixel_counts]


def grid_summary(
    src: rasterio.DatasetReader,
    class_counts: np.ndarray,
    class_names: Sequence[str],
    row_areas: np.ndarray | None = None,
    class_areas_m2: np.ndarray | None = None,
) -> dict[str, Any]:
    """Grid, CRS and per-class pixel counts and areas in hectares of a scene.

    Args:
        src: the input scene.
        class_counts: (K,) valid pixels per predicted class.
        class_names: the K class names.
        row_areas: :func:`row_pixel_areas` of the scene (None: no areas).
        class_areas_m2: (K,) ground area of each class, the sum of its pixels' row areas (used in a
            geographic CRS; a projected CRS gives ``count * pixel area``).

    Returns:
        ``width``, ``height``, ``crs``, ``transform`` (six coefficients), ``pixel_area_m2`` (the
        mean over rows in a geographic CRS), ``area_method`` (``planar``, ``geodesic`` or None),
        ``valid_pixels``, ``nodata_pixels`` and ``classes`` (``id``, ``name``, ``pixels``, ``area_ha``).
    """
    planar = row_areas is not None and src.crs.is_projected
    pixel_area = None if row_areas is None else float(row_areas[0] if planar else row_areas.mean())
    valid = int(class_counts.sum())
    if class_areas_m2 is not None and row_areas is not None and not planar:
        hectares: list[float | None] = [float(a) / SQUARE_METRES_PER_HECTARE for a in class_areas_m2]
    else:
        hectares = areas_hectares(class_counts, pixel_area)
    method = None if row_areas is None else "planar" if planar else "geodesic"
    return {
        "width": src.width,
        "height": src.height,
        "crs": None if src.crs is None else src.crs.to_string(),
        "transform": list(src.transform)[:6],
        "pixel_area_m2": pixel_area,
        "area_method": method,
        "valid_pixels": valid,
        "nodata_pixels": src.width * src.height - valid,
        "classes": [
            {"id": i, "name": name, "pixels": int(count), "area_ha": area}
            for i, (name, count, area) in enumerate(zip(class_names, class_counts, hectares))
        ],
    }
