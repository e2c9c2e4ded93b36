"""Which pixels of a raster hold data: the one rule inference, training crops, statistics and evaluation share.

A pixel is nodata when every band equals the file's nodata value (NaN matches NaN), or when any
band is not a finite number (NaN, +Inf, -Inf), whatever the declared nodata value: such values
cannot be normalised or averaged, and a network fed them spreads NaN to its neighbours.
"""

from __future__ import annotations

import numpy as np


def nodata_pixels(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """(H, W) bool: pixels of a (C, H, W) image that are nodata in every band or non-finite in any band.

    Args:
        image: pixel values in file units.
        nodata: the file's nodata value, or None when it declares none.
    """
    missing = non_finite_pixels(image)
    if nodata is None:
        return missing
    if np.isnan(nodata):
        return missing | np.isnan(image).all(axis=0)
    return missing | (image == nodata).all(axis=0)


def non_finite_pixels(image: np.ndarray) -> np.ndarray:
    """(H, W) bool: pixels of a (C, H, W) image with NaN or +/-Inf in at least one band (all False for integers)."""
    if not np.issubdtype(image.dtype, np.floating):
        return np.zeros(image.shape[1:], dtype=bool)
    return ~np.isfinite(image).all(axis=0)
