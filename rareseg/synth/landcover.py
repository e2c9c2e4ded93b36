"""Procedural LISS-IV-like land cover: the class map of one synthetic scene.

The layout imitates a rural Indian LISS-IV scene at 5.8 m: field parcels (cropland, with flooded
paddy among them, and fallow), irregular in old village land and rectangular in canal-command
blocks cut by roads and canals, forest patches on uplands, villages joined by roads, meandering
rivers, irrigation tanks, lakes and farm ponds, and marsh (wetland) fringes and patches around the
water. The look-alikes of water and wetland that real scenes carry (:mod:`rareseg.synth.confusers`)
are laid out here too. Sizes are in pixels of 5.8 m, so a 20 px parcel is about 1.3 ha.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from rareseg.synth.confusers import (
    ASPHALT_ROAD,
    CONFUSERS,
    EARTH_ROAD,
    WATER_CANAL,
    WEEDY_CANAL,
    crop_rows,
    grid_layout,
    illumination,
)
from rareseg.synth.noise import blob, smooth_noise

CROPLAND, FALLOW, FOREST, BUILT_UP, WATER, WETLAND = range(6)

#: Surface materials that override a class's usual spectrum (``LandCover.surface``).
NATURAL, ASPHALT, EARTH, WEEDY, FLOATING_PLANTS, SAND = range(6)


@dataclass
class LandCover:
    """Class map and the per-pixel attributes the spectral model needs.

    Attributes:
        classes: (H, W) uint8 class ids (0..5, see module constants).
        vigour: (H, W) float32 in [0, 1], green-vegetation amount of crop/fallow parcels.
        flooded: (H, W) float32 in [0, 1], standing-water fraction (paddy, marsh, shallows).
        turbidity: (H, W) float32 in [0, 1], suspended sediment of water.
        parcel_edges: (H, W) bool, bunds between field parcels.
        moisture: (H, W) float32 in [0, 1], soil wetness (irrigated fallow, damp margins, silted canals).
        surface: (H, W) uint8 surface material (:data:`NATURAL`, :data:`ASPHALT`, ...).
        algae: (H, W) float32 in [0, 1], chlorophyll of water.
        rows: (H, W) float32 in [-1, 1], crop-row striping (0 without texture).
        light: (H, W) float32 direct-sun share (terrain shade and cloud shadows; 1 = flat, sunlit).
    """

    classes: np.ndarray
    vigour: np.ndarray
    flooded: np.ndarray
    turbidity: np.ndarray
    parcel_edges: np.ndarray
    moisture: np.ndarray
    surface: np.ndarray
    algae: np.ndarray
    rows: np.ndarray
    light: np.ndarray


def _parcels(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Irregular field parcels: Voronoi cells on domain-warped, anisotropic coordinates, as (H, W) int32 ids."""
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
    return np.repeat(np.repeat(ids, step, axis=0), step, axis=1)[:height, :width]


def _edges(ids: np.ndarray) -> np.ndarray:
    """Boolean map of the pixels whose lower or right neighbour has another id."""
    edges = np.zeros(ids.shape, dtype=bool)
    edges[:-1, :] |= ids[:-1, :] != ids[1:, :]
    edges[:, :-1] |= ids[:, :-1] != ids[:, 1:]
    return edges


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


def _field_parcels(
    rng: np.random.Generator, shape: tuple[int, int], confusers: Collection[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Irregular parcels, replaced by the rectangular grid layout where it applies.

    Returns:
        compact parcel ids (H, W) int32, the grid's line kinds (H, W) int8 (-1: no line) and the
        crop-row direction of every parcel (radians).
    """
    irregular = _parcels(rng, shape)
    grid = grid_layout(rng, shape, confusers)
    ids = np.where(grid.zone, grid.parcel_ids + int(irregular.max()) + 1, irregular)
    _, compact = np.unique(ids, return_inverse=True)
    ids = compact.reshape(shape).astype(np.int32)
    n_parcels = int(ids.max()) + 1
    in_grid = np.bincount(ids.ravel(), weights=grid.zone.ravel(), minlength=n_parcels) > 0
    orientation = np.where(in_grid, grid.orientation, rng.uniform(0, np.pi, n_parcels)).astype(np.float32)
    return ids, grid.lines, orientation


def _roads_between(rng: np.random.Generator, shape: tuple[int, int], centres: np.ndarray) -> np.ndarray:
    """Each village joined to its nearest neighbour by a 3 px road."""
    roads = np.zeros(shape, dtype=bool)
    if len(centres) < 2:
        return roads
    _, nearest = cKDTree(centres).query(centres, k=2)
    for a, b in nearest:
        n = int(np.hypot(*(centres[b] - centres[a]))) * 2 + 2
        line = np.linspace(centres[a], centres[b], n)
        hit, _ = _draw_polyline(shape, line, np.ones(n, np.float32))
        roads |= ndimage.binary_dilation(hit, iterations=1)
    return roads


def _highways(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """One or two gently curving 2-4 px asphalt highways crossing the scene."""
    height, width = shape
    highway = np.zeros(shape, dtype=bool)
    for _ in range(int(rng.integers(1, 3))):
        start = rng.uniform(0, 1, 2) * (height, width)
        angle = rng.uniform(0, np.pi)
        length = 2 * (height + width)
        t = np.linspace(-length / 2, length / 2, 4 * length)
        bend = 40 * np.sin(2 * np.pi * t / rng.uniform(1500, 4000) + rng.uniform(0, 2 * np.pi))
        rows = start[0] + t * np.sin(angle) + bend * np.cos(angle)
        cols = start[1] + t * np.cos(angle) - bend * np.sin(angle)
        hit, _ = _draw_polyline(shape, np.stack([rows, cols], axis=1), np.ones(t.size, np.float32))
        highway |= ndimage.binary_dilation(hit, iterations=int(rng.integers(1, 3)))
    return highway


def generate_landcover(
    rng: np.random.Generator,
    shape: tuple[int, int],
    water_fraction: float,
    wetland_fraction: float,
    confusers: Collection[str] = tuple(CONFUSERS),
) -> LandCover:
    """Lay out one scene's land cover.

    Args:
        rng: random generator (the scene's own stream).
        shape: (H, W) in pixels.
        water_fraction: target share of water pixels (rivers, canals, tanks and ponds).
        wetland_fraction: target share of wetland pixels.
        confusers: names from :data:`rareseg.synth.confusers.CONFUSERS` to lay out.

    Returns:
        The class map with its per-pixel spectral attributes.
    """
    height, width = shape
    n_pixels = height * width
    surface = np.zeros(shape, dtype=np.uint8)
    moisture = np.zeros(shape, dtype=np.float32)
    parcel_ids, lines, orientation = _field_parcels(rng, shape, confusers)
    parcel_edges = _edges(parcel_ids)
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
    if "wet-soil" in confusers:
        wet = is_fallow & (rng.uniform(size=n_parcels) < 0.3)
        moisture = np.where(wet, rng.uniform(0.5, 0.95, n_parcels), 0.0).astype(np.float32)[parcel_ids]

    # Forest on uplands (the highest parts of a smooth relief field).
    relief = smooth_noise(rng, shape, 350, octaves=5)
    forest_share = rng.uniform(0.06, 0.16)
    forest = relief > np.quantile(relief, 1 - forest_share)
    forest &= smooth_noise(rng, shape, 40, octaves=2) > -0.8
    classes[forest] = FOREST

    # Villages and the roads between them; grid roads and highways; dark yards and kilns.
    built = np.zeros(shape, dtype=bool)
    n_villages = max(int(rng.uniform(5, 9) * n_pixels / 1024**2), 1)
    centres = rng.uniform(0.05, 0.95, (n_villages, 2)) * (height, width)
    for centre in centres:
        built |= blob(rng, shape, tuple(centre), rng.uniform(12, 40), 0.35)
    roads = _roads_between(rng, shape, centres)
    if "roads" in confusers:
        grid_roads = ((lines == ASPHALT_ROAD) | (lines == EARTH_ROAD)) & ~forest
        roads |= grid_roads | _highways(rng, shape)
        surface[roads] = ASPHALT
        surface[(lines == EARTH_ROAD) & ~forest] = EARTH
    if "asphalt" in confusers:
        yards = built & (smooth_noise(rng, shape, 6, octaves=2) > 0.6)
        surface[yards] = ASPHALT
        for centre in centres[rng.uniform(size=len(centres)) < 0.5]:
            offset = rng.uniform(-60, 60, 2)
            kiln = blob(rng, shape, tuple(centre + offset), rng.uniform(4, 9), 0.2)
            built |= kiln
            surface[kiln] = ASPHALT
    built |= roads
    classes[built] = BUILT_UP

    # Water: rivers first, then canals, farm ponds, then tanks/lakes until the target share is met.
    n_rivers = int(rng.choice([1, 1, 2]))
    river, _ = _channels(rng, shape, n_rivers, (8, 26))
    stream, _ = _channels(rng, shape, int(rng.integers(0, 3)), (3, 6))
    natural = river | stream
    if natural.mean() > water_fraction:
        natural = stream if stream.mean() < water_fraction else np.zeros(shape, dtype=bool)
    canals = (lines == WATER_CANAL) & ~forest & ~built
    if canals.mean() > 0.3 * water_fraction:
        canals[:] = False
    ponds = np.zeros(shape, dtype=bool)
    if "water-variety" in confusers:
        for _ in range(int(rng.uniform(20, 40) * n_pixels / 1024**2)):
            centre = tuple(rng.uniform(0.02, 0.98, 2) * (height, width))
            ponds |= blob(rng, shape, centre, rng.uniform(2, 5), 0.2)
        ponds &= ~built & ~forest
    attempts = 0
    while (natural | canals | ponds).mean() < water_fraction and attempts < 200:
        attempts += 1
        centre = tuple(rng.uniform(0.03, 0.97, 2) * (height, width))
        remaining_px = (water_fraction - (natural | canals | ponds).mean()) * n_pixels
        radius = float(np.clip(rng.lognormal(np.log(28), 0.5), 4, max(np.sqrt(remaining_px / np.pi) * 1.2, 4)))
        natural |= blob(rng, shape, centre, radius, 0.25) & ~built
    water = natural | canals | ponds
    turbidity = np.clip(0.5 + 0.35 * smooth_noise(rng, shape, 250), 0, 1).astype(np.float32)
    turbidity[river] = np.clip(turbidity[river] + 0.3, 0, 1)

    # Wetland: marsh fringes whose width varies along the shore of natural water, plus marsh
    # patches inside shallow water bodies; grown to the scene's target share.
    distance_to_water = ndimage.distance_transform_edt(~natural).astype(np.float32)
    fringe_noise = smooth_noise(rng, shape, 35, octaves=3)
    potential = distance_to_water * np.exp(-0.9 * fringe_noise)
    shallow = natural & (ndimage.distance_transform_edt(natural) < 4) & (smooth_noise(rng, shape, 20) > 1.0)
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
    surface[water | wetland] = NATURAL

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

    fields = (classes == CROPLAND) | (classes == FALLOW)
    if "canals" in confusers:
        weedy = (lines == WEEDY_CANAL) & fields
        classes[weedy] = FALLOW
        surface[weedy] = WEEDY
        moisture[weedy] = 0.8
    if "margins" in confusers:
        irrigated = ndimage.binary_dilation(paddy | canals | natural, iterations=3)
        margin_parcel = np.bincount(parcel_ids[irrigated], minlength=n_parcels) > 0
        margins = ndimage.binary_dilation(parcel_edges, iterations=1) & fields & margin_parcel[parcel_ids]
        margins &= smooth_noise(rng, shape, 25, octaves=2) > -0.3
        surface[margins] = WEEDY
        moisture[margins] = np.maximum(moisture[margins], 0.7)
    algae = np.zeros(shape, dtype=np.float32)
    if "water-variety" in confusers:
        bodies, n_bodies = ndimage.label(classes == WATER)
        green = np.where(rng.uniform(size=n_bodies + 1) < 0.35, rng.uniform(0.3, 1.0, n_bodies + 1), 0.0)
        algae = np.where(bodies > 0, green[bodies], 0.0).astype(np.float32)
        plants_in = (rng.uniform(size=n_bodies + 1) < 0.3)[bodies] & (bodies > 0) & ~river
        floating = plants_in & (smooth_noise(rng, shape, 8, octaves=2) > 0.4)
        surface[floating] = FLOATING_PLANTS
        vigour[floating] = rng.uniform(0.5, 0.9)
        depth = ndimage.distance_transform_edt(river)
        bars = river & (classes == WATER) & (depth > 3) & (smooth_noise(rng, shape, 15, octaves=2) > 1.2)
        classes[bars] = FALLOW
        surface[bars] = SAND
    rows = crop_rows(rng, shape, parcel_ids, orientation) if "texture" in confusers else np.zeros(shape, np.float32)
    rows[~fields] = 0.0
    light = illumination(rng, shape, relief) if "shadows" in confusers else np.ones(shape, np.float32)

    return LandCover(
        classes,
        vigour.astype(np.float32),
        flooded,
        turbidity,
        parcel_edges & ~water & ~wetland,
        moisture,
        surface,
        algae,
        rows,
        light,
    )
