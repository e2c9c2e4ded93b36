"""Tests for rareseg.inference.summary."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from rareseg.inference.summary import areas_hectares, pixel_area_m2, row_pixel_areas


def test_pixel_area_of_a_liss4_pixel_in_utm() -> None:
    assert pixel_area_m2(from_origin(350000, 2350000, 5.8, 5.8), CRS.from_epsg(32644)) == pytest.approx(33.64)


def test_pixel_area_uses_the_determinant_and_the_unit_factor() -> None:
    # rotated/sheared grid: |a*e - b*d| = |2*(-3) - 1*0.5| = 6.5 square units
    transform = Affine(2.0, 1.0, 0.0, 0.5, -3.0, 0.0)
    assert pixel_area_m2(transform, CRS.from_epsg(32644)) == pytest.approx(6.5)
    foot = 0.30480060960121924  # US survey foot (EPSG:2230)
    assert pixel_area_m2(from_origin(0, 0, 10, 10), CRS.from_epsg(2230)) == pytest.approx(100 * foot**2)


def test_pixel_area_is_unknown_without_a_projected_crs() -> None:
    assert pixel_area_m2(from_origin(77, 20, 0.0001, 0.0001), CRS.from_epsg(4326)) is None
    assert pixel_area_m2(from_origin(0, 0, 1, 1), None) is None


def test_areas_hectares_is_count_times_pixel_area_over_ten_thousand() -> None:
    assert areas_hectares(np.array([0, 3, 10000]), 33.64) == pytest.approx([0.0, 3 * 33.64 / 1e4, 33.64])
    assert areas_hectares(np.array([4, 5]), None) == [None, None]


#: WGS84 semi-major axis (m) and first eccentricity squared.
WGS84_A, WGS84_E2 = 6378137.0, 0.00669437999014


def _ellipsoid_pixel_area(lat_deg: np.ndarray, dlon_deg: float, dlat_deg: float) -> np.ndarray:
    """Area of a small lat/lon cell on WGS84: M * N * cos(phi) * dlambda * dphi (radians), in m^2."""
    phi = np.radians(lat_deg)
    w = 1 - WGS84_E2 * np.sin(phi) ** 2
    meridian = WGS84_A * (1 - WGS84_E2) / w**1.5
    normal = WGS84_A / np.sqrt(w)
    return meridian * normal * np.cos(phi) * np.radians(dlon_deg) * np.radians(dlat_deg)


@pytest.mark.parametrize("latitude", [0.0, 20.0, 35.0, 60.0])
def test_geographic_rows_get_the_ellipsoidal_area_of_their_pixels(latitude: float) -> None:
    step = 5.8 / 111320  # about a LISS-IV pixel in degrees
    height = 50
    areas = row_pixel_areas(from_origin(77.0, latitude + height * step, step, step), CRS.from_epsg(4326), height, 40)
    centres = latitude + (height - np.arange(height) - 0.5) * step
    expected = _ellipsoid_pixel_area(centres, step, step)
    np.testing.assert_allclose(areas, expected, rtol=1e-4)  # the issue asks for 0.5 %
    assert areas[0] < areas[-1] or latitude == 0.0  # rows nearer the pole are smaller


def test_projected_rows_share_one_area_and_a_crs_without_linear_units_warns() -> None:
    areas = row_pixel_areas(from_origin(350000, 2350000, 5.8, 5.8), CRS.from_epsg(32644), 3, 4)
    np.testing.assert_array_equal(areas, [33.64, 33.64, 33.64])
    local = CRS.from_wkt('LOCAL_CS["arbitrary",UNIT["metre",1]]')
    with pytest.warns(UserWarning, match=r"^scene\.tif: CRS .* has no linear units; areas are not reported$"):
        assert row_pixel_areas(from_origin(0, 0, 1, 1), local, 3, 4, "scene.tif") is None
    assert row_pixel_areas(from_origin(0, 0, 1, 1), None, 3, 4) is None
