"""Random fields and shapes shared by the synthetic land cover and its confusers."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def smooth_noise(rng: np.random.Generator, shape: tuple[int, int], feature_px: float, octaves: int = 3) -> np.ndarray:
    """Fractal value noise with zero mean and unit standard deviation.

    Args:
        rng: random generator.
        shape: (H, W) of the output in pixels.
        feature_px: size of the coarsest features in pixels.
        octaves: number of octaves, each half the feature size and half the amplitude.

    Returns:
        (H, W) float32 array.
    """
    height, width = shape
    total = np.zeros(shape, dtype=np.float32)
    for octave in range(octaves):
        feature = max(feature_px / 2**octave, 2.0)
        grid = (int(np.ceil(height / feature)) + 3, int(np.ceil(width / feature)) + 3)
        coarse = torch.from_numpy(rng.standard_normal(grid).astype(np.float32))[None, None]
        out_size = (int(round(grid[0] * feature)), int(round(grid[1] * feature)))
        zoomed = F.interpolate(coarse, size=out_size, mode="bicubic", align_corners=False)[0, 0].numpy()
        offset = int(feature)
        total += 0.5**octave * zoomed[offset : offset + height, offset : offset + width]
    total -= total.mean()
    return total / (total.std() + 1e-6)


def blob(
    rng: np.random.Generator, shape: tuple[int, int], centre: tuple[float, float], radius: float, roughness: float
) -> np.ndarray:
    """Irregular ellipse (tank, lake, village) as a boolean mask."""
    height, width = shape
    pad = int(radius * 2.2) + 4
    r0, c0 = int(centre[0]), int(centre[1])
    r_lo, r_hi = max(r0 - pad, 0), min(r0 + pad, height)
    c_lo, c_hi = max(c0 - pad, 0), min(c0 + pad, width)
    mask = np.zeros(shape, dtype=bool)
    if r_hi <= r_lo or c_hi <= c_lo:
        return mask
    yy, xx = np.mgrid[r_lo:r_hi, c_lo:c_hi].astype(np.float32)
    angle = rng.uniform(0, np.pi)
    aspect = rng.uniform(0.5, 1.0)
    dy, dx = yy - centre[0], xx - centre[1]
    u = (dy * np.cos(angle) + dx * np.sin(angle)) / radius
    v = (-dy * np.sin(angle) + dx * np.cos(angle)) / (radius * aspect)
    edge = smooth_noise(rng, yy.shape, max(radius / 2, 3), octaves=2)
    mask[r_lo:r_hi, c_lo:c_hi] = np.sqrt(u**2 + v**2) + roughness * edge < 1
    return mask
