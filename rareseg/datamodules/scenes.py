"""The dataset root contract: ``classes.yaml``, paired scene files, and their checks.

A root holds ``images/*.tif`` (multiband GeoTIFF, LISS-IV order green, red, NIR),
``masks/*.tif`` (uint8 class ids on the same grid, 255 = ignore) with matching stems,
and ``classes.yaml``. Every problem is reported as a :class:`DataError` whose one-line
message names the file and the problem.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
import yaml
from rasterio.errors import RasterioError, RasterioIOError
from rasterio.windows import Window

from rareseg.core.conventions import IGNORE_INDEX


class DataError(ValueError):
    """Bad input data; the message is one line naming the file and the problem."""


@dataclass(frozen=True)
class ClassTable:
    """Classes of a dataset root, read from ``classes.yaml``.

    Attributes:
        bands: band names in file order (e.g. ``("green", "red", "nir")``).
        ids: class ids, ascending and contiguous from 0.
        names: class names, by id.
        colors: RGB colours, by id.
        rare: ids of the rare classes.
    """

    bands: tuple[str, ...]
    ids: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]
    rare: tuple[int, ...]

    @classmethod
    def load(cls, path: Path) -> ClassTable:
        """Read and validate ``classes.yaml``."""
        if not path.is_file():
            raise DataError(
                f"{path}: classes.yaml not found (the dataset root needs one: bands and classes with id, name, "
                "color, rare)"
            )
        try:
            doc = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise DataError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("classes"), list) or not doc["classes"]:
            raise DataError(f"{path}: expected a mapping with a non-empty 'classes' list")
        bands = tuple(str(b) for b in doc.get("bands", ("green", "red", "nir")))
        entries = sorted(doc["classes"], key=lambda c: int(c.get("id", -1)) if isinstance(c, dict) else -1)
        for expected, entry in enumerate(entries):
            if not isinstance(entry, dict) or {"id", "name"} - entry.keys():
                raise DataError(f"{path}: class entry {entry!r} needs at least 'id' and 'name'")
            if int(entry["id"]) != expected:
                raise DataError(f"{path}: class ids must be 0..{len(entries) - 1} without gaps, found id {entry['id']}")
            if int(entry["id"]) >= IGNORE_INDEX:
                raise DataError(f"{path}: class id {entry['id']} collides with the ignore index {IGNORE_INDEX}")
        rare = tuple(int(e["id"]) for e in entries if e.get("rare", False))
        if not rare:
            raise DataError(f"{path}: no class is marked 'rare: true'")
        colors = tuple(tuple(int(v) for v in e.get("color", (128, 128, 128)))[:3] for e in entries)
        return cls(bands, tuple(range(len(entries))), tuple(str(e["name"]) for e in entries), colors, rare)


@dataclass(frozen=True)
class Scene:
    """One image/mask pair on a shared grid.

    Attributes:
        stem: file stem shared by image and mask.
        image: path of the image GeoTIFF.
        mask: path of the mask GeoTIFF, or None for an unlabelled scene.
        height: rows in pixels.
        width: columns in pixels.
        nodata: image nodata value (pixels equal to it in every band are ignored).
    """

    stem: str
    image: Path
    mask: Path | None
    height: int
    width: int
    nodata: float


def open_geotiff(path: Path) -> rasterio.DatasetReader:
    """Open a GeoTIFF or raise a one-line :class:`DataError`."""
    try:
        src = rasterio.open(path)
    except RasterioIOError as err:
        raise DataError(f"{path}: not a readable GeoTIFF ({str(err).splitlines()[0]})") from None
    if src.driver != "GTiff":
        src.close()
        raise DataError(f"{path}: not a GeoTIFF (format {src.driver})")
    return src


def read_window(src: rasterio.DatasetReader, window: Window, indexes: int | list[int] | None = None) -> np.ndarray:
    """``src.read(indexes, window=window)``, with a read failure (truncated or corrupt blocks) as a one-line
    :class:`DataError` naming the file and the window (rows and columns, 0-based, end excluded)."""
    try:
        return src.read(indexes, window=window)
    except RasterioError as err:
        rows, cols = window.toranges()
        detail = " ".join(str(err).split())
        raise DataError(
            f"{src.name}: read failed in the window of rows {rows[0]}-{rows[1]}, columns {cols[0]}-{cols[1]} "
            f"(truncated or corrupt file? {detail})"
        ) from None


def check_image(path: Path, n_bands: int | None) -> rasterio.DatasetReader:
    """Open an image and check its band count and CRS; the caller closes it."""
    src = open_geotiff(path)
    if n_bands is not None and src.count != n_bands:
        src.close()
        raise DataError(f"{path}: has {src.count} bands, expected {n_bands}")
    if src.crs is None:
        src.close()
        raise DataError(f"{path}: has no CRS (georeference the scene first, e.g. gdal_edit.py -a_srs EPSG:32644)")
    return src


def scan_root(root: Path, classes: ClassTable, require_masks: bool = True) -> list[Scene]:
    """List and check the scenes of a dataset root.

    Args:
        root: dataset root.
        classes: its class table (gives the expected band count).
        require_masks: every image must have a mask with the same stem.

    Returns:
        Scenes sorted by stem.
    """
    image_dir = root / "images"
    images = sorted(image_dir.glob("*.tif")) + sorted(image_dir.glob("*.tiff"))
    if not images:
        raise DataError(f"{image_dir}: no images (*.tif) found")
    scenes = []
    for image_path in images:
        with check_image(image_path, len(classes.bands)) as img:
            mask_path = next(
                (
                    p
                    for p in (root / "masks" / f"{image_path.stem}.tif", root / "masks" / f"{image_path.stem}.tiff")
                    if p.exists()
                ),
                None,
            )
            if mask_path is None:
                if require_masks:
                    raise DataError(
                        f"{image_path}: no matching mask (expected {root / 'masks' / (image_path.stem + '.tif')})"
                    )
            else:
                with open_geotiff(mask_path) as msk:
                    if msk.count != 1:
                        raise DataError(f"{mask_path}: has {msk.count} bands, a mask needs 1")
                    if (
                        (msk.height, msk.width) != (img.height, img.width)
                        or msk.crs != img.crs
                        or not msk.transform.almost_equals(img.transform)
                    ):
                        raise DataError(
                            f"{mask_path}: grid differs from its image {image_path.name} "
                            f"({msk.width}x{msk.height} {msk.crs} vs {img.width}x{img.height} {img.crs}, or a "
                            "different transform)"
                        )
            nodata = img.nodata if img.nodata is not None else 0
            scenes.append(Scene(image_path.stem, image_path, mask_path, img.height, img.width, float(nodata)))
    return scenes
