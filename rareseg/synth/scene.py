"""Synthetic LISS-IV scenes: spectral model, sensor effects and the dataset writer.

Surface reflectance per class is a linear mixture of endmembers (green vegetation,
soil, water, canopy, roofs) in the three LISS-IV bands (B2 green 0.52-0.59 um,
B3 red 0.62-0.68 um, B4 NIR 0.77-0.86 um). Marsh (wetland) and flooded paddy are
both vegetation/water mixtures, so wetland is spectrally between water and
vegetation and overlaps paddy: only context separates them. The confusers of
:mod:`rareseg.synth.confusers` add asphalt, moist soil, weedy margins and canals,
floating plants, algae, sand, crop rows and shadows. Haze (patchy with the
``texture`` confuser), the sensor's point-spread function, noise and 10-bit
quantisation to DN follow.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.transform import from_origin
from scipy import ndimage
from tqdm import tqdm

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.core.files import staging_dir
from rareseg.synth.confusers import CONFUSERS
from rareseg.synth.landcover import (
    ASPHALT,
    BUILT_UP,
    CROPLAND,
    EARTH,
    FALLOW,
    FLOATING_PLANTS,
    FOREST,
    SAND,
    WATER,
    WEEDY,
    WETLAND,
    LandCover,
    generate_landcover,
)
from rareseg.synth.noise import smooth_noise

PIXEL_SIZE_M = 5.8
CRS = "EPSG:32644"
IMAGE_NODATA = 0
MASK_IGNORE = IGNORE_INDEX
BAND_NAMES = ("green", "red", "nir")

#: Classes of the embedded data set: (id, name, RGB colour, rare).
CLASSES = (
    (CROPLAND, "cropland", (240, 220, 90), False),
    (FALLOW, "fallow", (200, 160, 110), False),
    (FOREST, "forest", (30, 120, 40), False),
    (BUILT_UP, "built_up", (210, 40, 50), False),
    (WATER, "water", (30, 90, 230), True),
    (WETLAND, "wetland", (40, 200, 190), True),
)

# Radiometric gain (DN per unit reflectance) and offset of the 10-bit product, per band.
_GAIN = np.array([1050.0, 1000.0, 900.0], dtype=np.float32)
_OFFSET = np.array([18.0, 12.0, 8.0], dtype=np.float32)


def _vegetation(vigour: np.ndarray) -> np.ndarray:
    """Green-vegetation reflectance (3, ...) for a vigour in [0, 1]."""
    return np.stack([0.085 - 0.035 * vigour, 0.10 - 0.065 * vigour, 0.20 + 0.26 * vigour])


def _marsh_vegetation(vigour: np.ndarray) -> np.ndarray:
    """Emergent marsh vegetation (reeds, sedges): darker NIR than crops."""
    return np.stack([0.075 - 0.02 * vigour, 0.075 - 0.03 * vigour, 0.17 + 0.14 * vigour])


def _soil(brightness: np.ndarray) -> np.ndarray:
    """Bare/fallow soil reflectance for a brightness in [0, 1]."""
    return np.stack([0.10 + 0.06 * brightness, 0.12 + 0.09 * brightness, 0.17 + 0.11 * brightness])


def _water(turbidity: np.ndarray) -> np.ndarray:
    """Open-water reflectance for a turbidity in [0, 1]."""
    return np.stack([0.045 + 0.05 * turbidity, 0.025 + 0.06 * turbidity, 0.012 + 0.025 * turbidity])


def surface_reflectance(cover: LandCover, rng: np.random.Generator) -> np.ndarray:
    """Per-pixel surface reflectance of a land-cover layout, lit by ``cover.light``.

    Args:
        cover: the scene's land cover.
        rng: random generator.

    Returns:
        (3, H, W) float32 reflectance in band order green, red, NIR.
    """
    shape = cover.classes.shape
    classes = cover.classes
    fine = smooth_noise(rng, shape, 6, octaves=2)
    medium = smooth_noise(rng, shape, 30, octaves=2)
    brightness = np.clip(0.5 + 0.3 * smooth_noise(rng, shape, 80), 0, 1)
    turbidity = cover.turbidity
    flooded = cover.flooded
    darkening = 1 - 0.55 * cover.moisture  # moist soil is darker in every band

    crop_vigour = np.clip(cover.vigour * (1 + 0.3 * cover.rows) + 0.05 * medium, 0, 1)
    crop = (1 - flooded) * _vegetation(crop_vigour) + flooded * _water(0.6 * turbidity)
    fallow_soil = _soil(np.clip(brightness * (1 + 0.15 * cover.rows), 0, 1)) * darkening
    fallow = (1 - cover.vigour) * fallow_soil + cover.vigour * _vegetation(np.full(shape, 0.4, np.float32))
    canopy = np.array([0.045, 0.035, 0.29], np.float32)[:, None, None] * (1 + 0.12 * fine + 0.08 * medium)
    roofs = np.array([0.13, 0.145, 0.185], np.float32)[:, None, None] * (1 + 0.25 * fine)
    green_share = np.clip(0.15 + 0.1 * medium, 0, 0.4)
    built = (1 - green_share) * roofs + green_share * _vegetation(np.full(shape, 0.7, np.float32))
    algae = np.array([0.015, -0.004, 0.03], np.float32)[:, None, None] * cover.algae
    water = (_water(turbidity) + algae) * (1 + 0.04 * fine)
    marsh = (1 - flooded) * _marsh_vegetation(cover.vigour) + flooded * _water(turbidity)

    reflectance = np.empty((3, *shape), dtype=np.float32)
    spectra = (
        (CROPLAND, crop),
        (FALLOW, fallow),
        (FOREST, canopy),
        (BUILT_UP, built),
        (WATER, water),
        (WETLAND, marsh),
    )
    for class_id, spectrum in spectra:
        where = classes == class_id
        reflectance[:, where] = np.broadcast_to(spectrum, (3, *shape))[:, where]
    bunds = cover.parcel_edges & (cover.surface == 0)
    reflectance[:, bunds] = 0.5 * reflectance[:, bunds] + 0.5 * _soil(np.full(int(bunds.sum()), 0.4, np.float32))
    asphalt = np.array([0.062, 0.068, 0.078], np.float32)[:, None, None] * (1 + 0.1 * fine)
    wet_soil = _soil(np.full(shape, 0.3, np.float32)) * darkening
    weedy = 0.45 * _marsh_vegetation(np.full(shape, 0.5, np.float32)) + 0.35 * wet_soil + 0.2 * _water(turbidity)
    plants = 0.3 * _water(turbidity) + 0.7 * _marsh_vegetation(cover.vigour)
    materials = ((ASPHALT, asphalt), (EARTH, _soil(np.full(shape, 0.75, np.float32))), (WEEDY, weedy))
    materials += ((FLOATING_PLANTS, plants), (SAND, _soil(np.clip(brightness + 0.4, 0, 1))))
    for material, spectrum in materials:
        where = cover.surface == material
        reflectance[:, where] = np.broadcast_to(spectrum, (3, *shape))[:, where]
    reflectance *= 1 + 0.03 * fine[None]
    return reflectance * cover.light[None]


def to_digital_numbers(
    reflectance: np.ndarray, rng: np.random.Generator, haze: float, patchy: bool = False
) -> np.ndarray:
    """Apply haze, the sensor PSF, noise and 10-bit quantisation.

    Args:
        reflectance: (3, H, W) surface reflectance.
        rng: random generator.
        haze: scene haze strength (path-radiance reflectance added in green).
        patchy: add patches of thin haze (1-3x the scene's haze over 150 px features).

    Returns:
        (3, H, W) uint16 DN in [1, 1023] (0 is reserved for nodata).
    """
    shape = reflectance.shape[1:]
    haze_field = haze * np.clip(0.6 + 0.4 * smooth_noise(rng, shape, 700, octaves=2), 0, None)
    if patchy:
        haze_field += haze * np.clip(1.5 * smooth_noise(rng, shape, 150, octaves=3) - 0.5, 0, 2)
    at_sensor = reflectance + haze_field[None] * np.array([1.0, 0.75, 0.4], np.float32)[:, None, None]
    at_sensor = ndimage.gaussian_filter(at_sensor, sigma=(0, 0.7, 0.7))
    at_sensor += rng.normal(0, 0.003, at_sensor.shape).astype(np.float32)
    dn = at_sensor * _GAIN[:, None, None] + _OFFSET[:, None, None]
    return np.clip(np.round(dn), 1, 1023).astype(np.uint16)


def _footprint(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """Valid-data footprint: a slightly rotated rectangle as in a path-oriented LISS-IV scene."""
    height, width = shape
    if rng.uniform() < 0.5:
        return np.ones(shape, dtype=bool)
    angle = np.deg2rad(rng.uniform(5, 11))
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    yc, xc = yy - height / 2, xx - width / 2
    u = xc * np.cos(angle) + yc * np.sin(angle)
    v = -xc * np.sin(angle) + yc * np.cos(angle)
    half = 0.5 * min(height, width) / (np.cos(angle) + np.sin(angle)) * 1.12
    return (np.abs(u) <= half) & (np.abs(v) <= half)


@dataclass
class SyntheticScene:
    """One generated scene: (3, H, W) uint16 DN image and (H, W) uint8 mask (255 = nodata)."""

    image: np.ndarray
    mask: np.ndarray


def generate_scene(size: int, seed: int, confusers: Collection[str] = tuple(CONFUSERS)) -> SyntheticScene:
    """Generate one LISS-IV-like scene.

    Args:
        size: side length in pixels (5.8 m each).
        seed: seed of the scene's random stream.
        confusers: look-alikes of water and wetland to include (names of
            :data:`rareseg.synth.confusers.CONFUSERS`; default all of them).

    Returns:
        The DN image and class mask; pixels outside the footprint are nodata.
    """
    rng = np.random.default_rng(seed)
    shape = (size, size)
    cover = generate_landcover(rng, shape, rng.uniform(0.025, 0.042), rng.uniform(0.007, 0.015), confusers)
    reflectance = surface_reflectance(cover, rng)
    dn = to_digital_numbers(reflectance, rng, haze=rng.uniform(0.005, 0.04), patchy="texture" in confusers)
    valid = _footprint(rng, shape)
    dn[:, ~valid] = IMAGE_NODATA
    mask = np.where(valid, cover.classes, MASK_IGNORE).astype(np.uint8)
    return SyntheticScene(dn, mask)


def scene_transform(index: int, size: int) -> rasterio.Affine:
    """Geotransform of scene ``index``: scenes sit on a grid in UTM 44N, never overlapping."""
    spacing = size * PIXEL_SIZE_M + 5000.0
    west = 350000.0 + (index % 4) * spacing
    north = 2350000.0 - (index // 4) * spacing
    return from_origin(west, north, PIXEL_SIZE_M, PIXEL_SIZE_M)


def colormap() -> dict[int, tuple[int, int, int, int]]:
    """GeoTIFF colour table of the class mask (ignore = black, transparent)."""
    table = {class_id: (*rgb, 255) for class_id, _, rgb, _ in CLASSES}
    table[MASK_IGNORE] = (0, 0, 0, 0)
    return table


def write_scene(scene: SyntheticScene, image_path: Path, mask_path: Path, transform: rasterio.Affine) -> None:
    """Write a scene as a tiled, compressed image GeoTIFF and a mask GeoTIFF with a colour table."""
    bands, height, width = scene.image.shape
    common = dict(
        driver="GTiff",
        height=height,
        width=width,
        crs=CRS,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        compress="deflate",
    )
    with rasterio.open(image_path, "w", count=bands, dtype="uint16", nodata=IMAGE_NODATA, **common) as dst:
        dst.write(scene.image)
        dst.descriptions = BAND_NAMES
    with rasterio.open(mask_path, "w", count=1, dtype="uint8", nodata=MASK_IGNORE, **common) as dst:
        dst.write(scene.mask, 1)
        dst.write_colormap(1, colormap())


def classes_document() -> dict:
    """The ``classes.yaml`` content of the embedded data set."""
    return {
        "bands": list(BAND_NAMES),
        "pixel_size_m": PIXEL_SIZE_M,
        "classes": [{"id": i, "name": n, "color": list(c), "rare": r} for i, n, c, r in CLASSES],
    }


def generate_dataset(
    out: str | os.PathLike,
    num_scenes: int = 8,
    size: int = 2048,
    seed: int = 0,
    preview: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    confusers: Collection[str] = tuple(CONFUSERS),
) -> Path:
    """Write a synthetic LISS-IV dataset root (images/, masks/, classes.yaml).

    The root is assembled in a temporary folder beside ``out`` and moved into place
    at the end, so an interrupted run never leaves a half-written dataset.

    Args:
        out: dataset root to create.
        num_scenes: number of scenes.
        size: side of each scene in pixels.
        seed: master seed; scene ``k`` uses ``seed * 1000 + k``.
        preview: also write ``previews/<scene>.png`` false-colour (NIR-R-G) renderings.
        overwrite: replace an existing root.
        progress: show a tqdm progress bar.
        confusers: look-alikes of water and wetland to include (see :func:`generate_scene`).

    Returns:
        The dataset root.
    """
    out = Path(out)
    if num_scenes < 1 or size < 64:
        raise ValueError(f"synth: need num_scenes >= 1 and size >= 64, got {num_scenes} and {size}")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out}: already exists and is not empty (use --overwrite to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_dir(out.parent, f"synth-{out.name}")
    staging.chmod(0o755)
    try:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for index in tqdm(range(num_scenes), desc="synth scenes", disable=not progress):
            scene = generate_scene(size, seed * 1000 + index, confusers)
            name = f"scene_{index:02d}.tif"
            write_scene(scene, staging / "images" / name, staging / "masks" / name, scene_transform(index, size))
            if preview:
                from rareseg.synth.preview import write_preview

                (staging / "previews").mkdir(exist_ok=True)
                write_preview(
                    staging / "images" / name, staging / "previews" / f"scene_{index:02d}.png", staging / "masks" / name
                )
        with open(staging / "classes.yaml", "w") as fh:
            yaml.safe_dump(classes_document(), fh, sort_keys=False)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return out
