"""What makes real LISS-IV scenes hard: look-alikes of water and wetland that belong to other classes.

Real farmland is not a field of irregular polygons with one road: it is cut into rectangular
parcels by a dense grid of roads and canals, and a scene is full of surfaces that a threshold on
NIR would call water or marsh. Each confuser below can be switched on or off by name
(``rareseg synth --confusers``); every one of them is labelled with the class it really is, never
water or wetland, except where noted.

Sizes are in pixels of 5.8 m.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from rareseg.synth.noise import blob, smooth_noise

#: Every confuser by name, with what it adds and how it is labelled (shown by ``rareseg synth --help``).
CONFUSERS: dict[str, str] = {
    "grid": "rectangular parcels in blocks cut by a regular road/canal grid (canal-command farmland) beside "
    "irregular fields",
    "roads": "dense asphalt and earthen roads on the grid, village streets and highways: dark, flat asphalt looks like "
    "turbid water (built_up)",
    "canals": "irrigation canals on the grid: water-filled ones are narrow water (water), silted weedy ones look like "
    "marsh (fallow)",
    "margins": "damp, weedy field margins beside irrigated parcels: vegetation on wet soil looks like wetland "
    "(the parcel's cropland or fallow)",
    "wet-soil": "freshly irrigated or ploughed fallow parcels: dark moist soil looks like shallow water (fallow)",
    "shadows": "cloud shadows and terrain shade on hill slopes: darkened fields and forest look like water (their own "
    "class)",
    "asphalt": "dark roofs, yards and brick-kiln patches in and beside villages (built_up)",
    "water-variety": "water that NIR alone misses: algae-green and turbid tanks, floating vegetation, tiny farm ponds "
    "(water), sand bars in rivers (fallow)",
    "texture": "crop-row striping inside parcels and patchy thin haze",
}


def check_confusers(names: Iterable[str]) -> frozenset[str]:
    """The confuser names as a set; ``"all"`` means every one, ``"none"`` or nothing means none.

    Raises:
        ValueError: an unknown name.
    """
    chosen = {name.strip() for name in names if name.strip()}
    if chosen == {"all"}:
        return frozenset(CONFUSERS)
    if chosen == {"none"}:
        return frozenset()
    unknown = sorted(chosen - set(CONFUSERS))
    if unknown:
        raise ValueError(f"unknown confusers {', '.join(unknown)} (choose from all, none, {', '.join(CONFUSERS)})")
    return frozenset(chosen)


#: Line kinds on the field grid, with their half width in pixels.
BUND, ASPHALT_ROAD, EARTH_ROAD, WATER_CANAL, WEEDY_CANAL = range(5)
_HALF_WIDTH = {BUND: 0.0, ASPHALT_ROAD: 0.9, EARTH_ROAD: 0.6, WATER_CANAL: 1.1, WEEDY_CANAL: 0.9}


@dataclass
class GridLayout:
    """Rectangular field parcels and the lines between their blocks.

    Attributes:
        zone: (H, W) bool, where the grid layout replaces the irregular parcels.
        parcel_ids: (H, W) int32 parcel id inside the zone (-1 outside).
        lines: (H, W) int8 line kind (:data:`ASPHALT_ROAD` ...) on block boundaries, -1 elsewhere.
        orientation: angle of the grid in radians (parcel strips run along it).
    """

    zone: np.ndarray
    parcel_ids: np.ndarray
    lines: np.ndarray
    orientation: float


def grid_layout(rng: np.random.Generator, shape: tuple[int, int], confusers: Collection[str]) -> GridLayout:
    """Blocks of 45-130 px split into strip parcels of 7-18 px, on a rotated grid over part of the scene.

    Block boundaries carry roads (``roads``), canals (``canals``) or plain bunds. Without ``grid``
    the zone is empty.
    """
    height, width = shape
    empty = GridLayout(np.zeros(shape, bool), np.full(shape, -1, np.int32), np.full(shape, -1, np.int8), 0.0)
    if "grid" not in confusers:
        return empty
    coverage = rng.uniform(0.35, 0.75)
    zone_field = smooth_noise(rng, shape, 700, octaves=2)
    zone = zone_field > np.quantile(zone_field, 1 - coverage)
    angle = float(rng.uniform(-0.4, 0.4) + rng.choice([0.0, np.pi / 2]))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    block_u, block_v = rng.uniform(70, 130), rng.uniform(45, 90)
    u = u - u.min() + rng.uniform(0, block_u)
    v = v - v.min() + rng.uniform(0, block_v)
    bu, bv = np.floor(u / block_u).astype(np.int32), np.floor(v / block_v).astype(np.int32)
    n_u, n_v = int(bu.max()) + 2, int(bv.max()) + 2
    block = bu * n_v + bv
    strip_width = rng.uniform(7, 18, n_u * n_v).astype(np.float32)
    splits = rng.choice([1, 1, 2, 3], n_u * n_v)
    du, dv = u - bu * block_u, v - bv * block_v
    strip = np.floor(dv / strip_width[block]).astype(np.int32)
    part = np.minimum(np.floor(du / (block_u / splits[block])).astype(np.int32), 3)
    raw = (block.astype(np.int64) * 64 + np.minimum(strip, 15)) * 4 + part
    _, compact = np.unique(raw, return_inverse=True)
    parcel_ids = np.where(zone, compact.reshape(shape).astype(np.int32), -1)

    kinds = [BUND]
    weights = [0.3]
    if "roads" in confusers:
        kinds += [ASPHALT_ROAD, EARTH_ROAD]
        weights += [0.25, 0.2]
    if "canals" in confusers:
        kinds += [WATER_CANAL, WEEDY_CANAL]
        weights += [0.12, 0.13]
    probabilities = np.array(weights) / np.sum(weights)
    lines = np.full(shape, -1, np.int8)
    for coordinate, spacing, count in ((u, block_u, n_u), (v, block_v, n_v)):
        nearest = np.rint(coordinate / spacing).astype(np.int32)
        offset = np.abs(coordinate - nearest * spacing)
        kind_of_line = rng.choice(kinds, count + 1, p=probabilities).astype(np.int8)
        kind = kind_of_line[np.clip(nearest, 0, count)]
        half = np.array([_HALF_WIDTH[k] for k in range(5)], np.float32)[kind]
        on_line = zone & (kind != BUND) & (offset <= half)
        lines[on_line] = kind[on_line]
    return GridLayout(zone, parcel_ids, lines, angle)


def crop_rows(
    rng: np.random.Generator, shape: tuple[int, int], parcel_ids: np.ndarray, orientation: np.ndarray
) -> np.ndarray:
    """Crop-row striping: a sinusoid of period 2.5-6 px along each parcel's direction, amplitude 0..1.

    Args:
        rng: random generator.
        shape: (H, W).
        parcel_ids: (H, W) compact parcel ids.
        orientation: per parcel id, the row direction in radians.

    Returns:
        (H, W) float32 in [-1, 1] (multiply by the wanted relative amplitude).
    """
    height, width = shape
    n_parcels = int(parcel_ids.max()) + 1
    period = rng.uniform(2.5, 6.0, n_parcels).astype(np.float32)
    phase = rng.uniform(0, 2 * np.pi, n_parcels).astype(np.float32)
    strength = (rng.uniform(size=n_parcels) < 0.6).astype(np.float32) * rng.uniform(0.4, 1.0, n_parcels).astype(
        np.float32
    )
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    theta = orientation[parcel_ids]
    across = -xx * np.sin(theta) + yy * np.cos(theta)
    return (strength[parcel_ids] * np.sin(2 * np.pi * across / period[parcel_ids] + phase[parcel_ids])).astype(
        np.float32
    )


def illumination(rng: np.random.Generator, shape: tuple[int, int], relief: np.ndarray) -> np.ndarray:
    """Direct-sun share per pixel: terrain shade on slopes facing away from the sun times cloud shadows.

    The relief field is scaled so that its steepest hills reach about 35 degrees; the sun stands
    45-65 degrees high in the south-east (a morning LISS-IV overpass over India). Cloud shadows are
    0-6 soft blobs per 1024 x 1024 px of 10-45 px radius that keep 25-45 % of the light.

    Returns:
        (H, W) float32 in about [0.25, 1.15]; 1 is flat ground in full sun.
    """
    height, width = shape
    gy, gx = np.gradient(relief.astype(np.float32))
    steepness = np.hypot(gx, gy)
    scale = np.tan(np.deg2rad(35)) / max(float(np.quantile(steepness, 0.999)), 1e-6)
    gx, gy = gx * scale, gy * scale
    elevation = np.deg2rad(rng.uniform(45, 65))
    azimuth = np.deg2rad(rng.uniform(120, 160))  # from north, clockwise; rows grow southwards
    sun = np.array([np.cos(elevation) * np.sin(azimuth), -np.cos(elevation) * np.cos(azimuth), np.sin(elevation)])
    normal_z = 1.0 / np.sqrt(1 + gx**2 + gy**2)
    incidence = (-gx * sun[0] - gy * sun[1] + sun[2]) * normal_z
    light = np.clip(incidence / sun[2], 0.3, 1.15).astype(np.float32)
    n_clouds = int(rng.poisson(rng.choice([0.0, 2.0, 5.0]) * height * width / 1024**2))
    shade = np.ones(shape, np.float32)
    for _ in range(n_clouds):
        centre = tuple(rng.uniform(0, 1, 2) * (height, width))
        cloud = blob(rng, shape, centre, rng.uniform(10, 45), 0.45)
        shade = np.where(cloud, np.minimum(shade, rng.uniform(0.25, 0.45)), shade)
    if n_clouds:
        from scipy import ndimage

        shade = ndimage.gaussian_filter(shade, 1.5)
    return light * shade
