"""Procedural LISS-IV-like land cover: the class map of one synthetic scene.

The layout imitates a rural Indian LISS-IV scene at 5.8 m: small irregular field
parcels (cropland, with flooded paddy among them, and fallow), forest patches on
uplands, villages joined by roads, meandering rivers, irrigation tanks and lakes,
and marsh (wetland) fringes and patches around the water. Sizes are in pixels of
5.8 m, so a 20 px parcel is about 1.3 ha.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from scipy.spatial import cKDTree

CROPLAND, FALLOW, FOREST, BUILT_UP, WATER, WETLAND = range(6)


@dataclass
class LandCover:
    """Class map and the per-pixel attributes the spectral model needs.

    Attributes:
        classes: (H, W) uint8 class ids (0..5, see module constants).
        vigour: (H, W) float32 in [0, 1], green-vegetation amount of crop/fallow parcels.
        flooded: (H, W) float32 in [0, 1], standing-water fraction (paddy, marsh, shallows).
        turbidity: (H, W) float32 in [0, 1], suspended sediment of water.
        parcel_edges: (H, W) bool, bunds between field parcels.
    """

    classes: np.ndarray
    vigour: np.ndarray
    flooded: np.ndarray
    turbidity: np.ndarray
    parcel_edges: np.ndarray


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


def _parcels(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Voronoi field parcels on domain-warped, anisotropic coordinates.

    Returns:
        parcel ids (H, W) int32 and a boolean map of parcel boundaries (bunds).
    """
    height, width = shape
    mean_parcel_px = rng.uniform(16, 26)
    n_points = max(int(height * width / mean_parcel_px**2), 4)
    points = rng.uniform(0, 1, (n_points, 2)) * (height, width)
    angle = rng.uniform(0, np.pi)
    stretch = rng.uniform(1.3, 1.8)
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    metric = rotation @ np.diag([1.0, stretch]) @ rotation.T

    step = 2  # query at half resolution, parcels are >> 2 px
    yy, xx = np.mgrid[0:height:step, 0:width:step].astype(np.float32)
    warp_y = smooth_noise(rng, yy.shape, 60 / step) * 5
    warp_x = smooth_noise(rng, yy.shape, 60 / step) * 5
    coords = np.stack([(yy + warp_y).ravel(), (xx + warp_x).ravel()], axis=1)
    tree = cKDTree(points @ metric.T)
    _, nearest = tree.query(coords @ metric.T, workers=1)
    ids = nearest.reshape(yy.shape).astype(np.int32)
    ids = np.repeat(np.repeat(ids, step, axis=0), step, axis=1)[:height, :width]
    edges = np.zeros(shape, dtype=bool)
    edges[:-1, :] |= ids[:-1, :] != ids[1:, :]
    edges[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return ids, edges


def _draw_polyline(shape: tuple[int, int], points: np.ndarray, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rasterise densely sampled polyline points; returns (hit mask, value at hit)."""
    height, width = shape
    rows = np.round(points[:, 0]).astype(int)
    cols = np.round(points[:, 1]).astype(int)
    inside = (rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)
    hit = np.zeros(shape, dtype=bool)
    value = np.zeros(shape, dtype=np.float32)
    hit[rows[inside], cols[inside]] = True
    value[rows[inside], cols[inside]] = values[inside]
    return hit, value


def _meander(
    rng: np.random.Generator, shape: tuple[int, int], width_px: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """A meandering channel crossing the scene edge to edge.

    Returns:
        centre-line points (N, 2) in (row, col) pixels and the half width at each point.
    """
    height, width = shape
    side = rng.integers(4)
    start = {
        0: (0.0, rng.uniform(0.1, 0.9) * width),
        1: (height - 1.0, rng.uniform(0.1, 0.9) * width),
        2: (rng.uniform(0.1, 0.9) * height, 0.0),
        3: (rng.uniform(0.1, 0.9) * height, width - 1.0),
    }[int(side)]
    heading0 = {0: np.pi / 2, 1: -np.pi / 2, 2: 0.0, 3: np.pi}[int(side)] + rng.uniform(-0.5, 0.5)
    n_steps = int(4 * (height + width))
    t = np.arange(n_steps, dtype=np.float64)
    heading = np.full(n_steps, heading0)
    for _ in range(3):
        wavelength = rng.uniform(60, 400)
        heading += rng.uniform(0.3, 0.9) * np.sin(2 * np.pi * t / wavelength + rng.uniform(0, 2 * np.pi))
    drift = np.cumsum(rng.normal(0, 0.01, n_steps))
    heading += drift - drift.mean()
    step = 1.0
    rows = start[0] + np.cumsum(step * np.sin(heading))
    cols = start[1] + np.cumsum(step * np.cos(heading))
    inside = (rows >= -5) & (rows < height + 5) & (cols >= -5) & (cols < width + 5)
    last = np.argmin(inside) if not inside.all() else n_steps
    last = max(int(last), 2)
    half_width = np.interp(t[:last], [0, last], rng.uniform(*width_px, 2) / 2)
    half_width *= 1 + 0.25 * np.sin(2 * np.pi * t[:last] / rng.uniform(80, 200))
    return np.stack([rows[:last], cols[:last]], axis=1), half_width


def _channels(
    rng: np.random.Generator, shape: tuple[int, int], count: int, width_px: tuple[float, float]
) -> tuple[np.ndarray, np.ndarray]:
    """Rasterised rivers/streams: boolean water mask and distance to the nearest bank axis."""
    hit = np.zeros(shape, dtype=bool)
    half_width = np.zeros(shape, dtype=np.float32)
    for _ in range(count):
        points, widths = _meander(rng, shape, width_px)
        h, w = _draw_polyline(shape, points, widths)
        half_width = np.where(h, np.maximum(half_width, w), half_width)
        hit |= h
    if not hit.any():
        return hit, np.full(shape, np.inf, dtype=np.float32)
    distance, (near_r, near_c) = ndimage.distance_transform_edt(~hit, return_indices=True)
    water = distance <= half_width[near_r, near_c]
    return water, distance.astype(np.float32)


def _blob(
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


def generate_landcover(
    rng: np.random.Generator,
    shape: tuple[int, int],
    water_fraction: float,
    wetland_fraction: float,
) -> LandCover:
    """Lay out one scene's land cover.

    Args:
        rng: random generator (the scene's own stream).
        shape: (H, W) in pixels.
        water_fraction: target share of water pixels (rivers + tanks/lakes).
        wetland_fraction: target share of wetland pixels.

    Returns:
        The class map with its per-pixel spectral attributes.
    """
    height, width = shape
    n_pixels = height * width
    parcel_ids, parcel_edges = _parcels(rng, shape)
    n_parcels = int(parcel_ids.max()) + 1

    # Fields: dry regions have more fallow; each parcel has its own crop vigour.
    dryness = smooth_noise(rng, shape, 400)
    counts = np.bincount(parcel_ids.ravel(), minlength=n_parcels)
    parcel_dryness = np.bincount(parcel_ids.ravel(), weights=dryness.ravel(), minlength=n_parcels) / np.maximum(
        counts, 1
    )
    p_fallow = np.clip(0.25 + 0.15 * parcel_dryness, 0.05, 0.6)
    is_fallow = rng.uniform(size=n_parcels) < p_fallow
    classes = np.where(is_fallow[parcel_ids], FALLOW, CROPLAND).astype(np.uint8)
    vigour = rng.beta(2.5, 1.8, size=n_parcels).astype(np.float32)[parcel_ids]
    vigour = np.where(classes == FALLOW, rng.uniform(0, 0.25, n_parcels).astype(np.float32)[parcel_ids], vigour)

    # Forest on uplands (the highest parts of a smooth relief field).
    relief = smooth_noise(rng, shape, 350, octaves=5)
    forest_share = rng.uniform(0.06, 0.16)
    forest = relief > np.quantile(relief, 1 - forest_share)
    forest &= smooth_noise(rng, shape, 40, octaves=2) > -0.8
    classes[forest] = FOREST

    # Villages and the roads between them.
    built = np.zeros(shape, dtype=bool)
    n_villages = max(int(rng.uniform(5, 9) * n_pixels / 1024**2), 1)
    centres = rng.uniform(0.05, 0.95, (n_villages, 2)) * (height, width)
    for centre in centres:
        built |= _blob(rng, shape, tuple(centre), rng.uniform(12, 40), 0.35)
    if n_villages > 1:
        _, nearest = cKDTree(centres).query(centres, k=2)
        for a, b in nearest:
            n = int(np.hypot(*(centres[b] - centres[a]))) * 2 + 2
            line = np.linspace(centres[a], centres[b], n)
            hit, _ = _draw_polyline(shape, line, np.ones(n, np.float32))
            built |= ndimage.binary_dilation(hit, iterations=1)
    classes[built] = BUILT_UP

    # Water: rivers first, then tanks/lakes until the scene's target share is met.
    n_rivers = int(rng.choice([1, 1, 2]))
    river, _ = _channels(rng, shape, n_rivers, (8, 26))
    stream, _ = _channels(rng, shape, int(rng.integers(0, 3)), (3, 6))
    water = river | stream
    if water.mean() > water_fraction:
        water = stream if stream.mean() < water_fraction else np.zeros(shape, dtype=bool)
    attempts = 0
    while water.mean() < water_fraction and attempts < 200:
        attempts += 1
        centre = tuple(rng.uniform(0.03, 0.97, 2) * (height, width))
        remaining_px = (water_fraction - water.mean()) * n_pixels
        radius = float(np.clip(rng.lognormal(np.log(28), 0.5), 4, max(np.sqrt(remaining_px / np.pi) * 1.2, 4)))
        tank = _blob(rng, shape, centre, radius, 0.25)
        if (tank & built).mean() > 0:
            tank &= ~built
        water |= tank
    turbidity = np.clip(0.5 + 0.35 * smooth_noise(rng, shape, 250), 0, 1).astype(np.float32)
    turbidity[river] = np.clip(turbidity[river] + 0.3, 0, 1)

    # Wetland: marsh fringes whose width varies along the shore, plus marsh patches
    # inside shallow water bodies; grown to the scene's target share.
    distance_to_water = ndimage.distance_transform_edt(~water).astype(np.float32)
    fringe_noise = smooth_noise(rng, shape, 35, octaves=3)
    potential = distance_to_water * np.exp(-0.9 * fringe_noise)
    shallow = water & (ndimage.distance_transform_edt(water) < 4) & (smooth_noise(rng, shape, 20) > 1.0)
    candidates = ~water & ~built & (distance_to_water < 60)
    needed = max(int(wetland_fraction * n_pixels) - int(shallow.sum()), 0)
    wetland = shallow.copy()
    if needed > 0 and candidates.any():
        values = potential[candidates]
        threshold = np.partition(values, min(needed, values.size - 1))[min(needed, values.size - 1)]
        wetland |= candidates & (potential < threshold)
    water &= ~wetland
    classes[water] = WATER
    classes[wetland] = WETLAND

    # Paddy: flooded crop parcels near water, spectrally close to marsh (the hard case).
    near_water = distance_to_water < 120
    parcel_near = np.bincount(parcel_ids[near_water], minlength=n_parcels) > 0
    is_paddy = parcel_near & ~is_fallow & (rng.uniform(size=n_parcels) < 0.25)
    flooded = np.zeros(shape, dtype=np.float32)
    paddy_water = rng.uniform(0.35, 0.75, n_parcels).astype(np.float32)
    paddy = is_paddy[parcel_ids] & (classes == CROPLAND)
    flooded[paddy] = paddy_water[parcel_ids][paddy]
    marsh_mix = np.clip(0.5 + 0.25 * smooth_noise(rng, shape, 12, octaves=2), 0.1, 0.9)
    flooded[wetland] = marsh_mix[wetland]
    flooded[water] = 1.0
    vigour[wetland] = np.clip(0.55 + 0.2 * fringe_noise[wetland], 0.2, 0.9)

    return LandCover(classes, vigour.astype(np.float32), flooded, turbidity, parcel_edges & ~water & ~wetland)
