"""Tests for rareseg.inference.summary."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio import Affine
from rasterio.crs import CRS
from rasterio.transform import from_origin

from rareseg.inference.summary import areas_hectares, pixel_area_m2


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
