"""Checks of an uploaded scene, made by reading it with rasterio (never by its file name)."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib.image
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning, RasterioIOError

from rareseg.datamodules import DataError
from rareseg.synth.preview import false_colour

#: First bytes of a TIFF (classic and BigTIFF, little and big endian).
TIFF_SIGNATURES = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


@dataclass(frozen=True)
class UploadInfo:
    """What the page shows about an accepted upload.

    Attributes:
        width: scene width in pixels.
        height: scene height in pixels.
        bands: band count.
        crs: the CRS as a string, or None (the outputs then carry none and areas are not reported).
    """

    width: int
    height: int
    bands: int
    crs: str | None


def preview_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    """Shape ``(height // s, width // s)`` of a preview decimated by ``s = ceil(max(height, width) / max_side)``.

    The same decimation as the prediction previews, so the input preview lies exactly under them.
    """
    step = max(1, math.ceil(max(height, width) / max_side))
    return max(1, height // step), max(1, width // step)


def inspect_upload(path: Path, display_name: str, bands: int, preview_png: Path, preview_side: int) -> UploadInfo:
    """Check that an uploaded file is a readable GeoTIFF with ``bands`` bands and write its false-colour preview.

    The preview (NIR-R-G, 2-98 % stretch; the first band in grey for fewer than three bands) is
    read decimated from the full-resolution pixels (internal overviews are ignored), which decodes
    every internal tile of a tiled file, so a truncated or corrupt file fails here rather than in
    the middle of a prediction.

    Args:
        path: where the upload was saved.
        display_name: the name the user gave the file, used only in messages.
        bands: band count of the checkpoint.
        preview_png: PNG to write.
        preview_side: longer side of the preview in pixels.

    Returns:
        Size, band count and CRS of the scene.

    Raises:
        DataError: one line naming ``display_name``: not a GeoTIFF, corrupt, wrong band count.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        try:
            src = rasterio.open(
                path, OVERVIEW_LEVEL="NONE"
            )  # decimate the full-resolution pixels, not internal overviews
        except RasterioIOError:
            with open(path, "rb") as head:
                if head.read(4) in TIFF_SIGNATURES:
                    raise DataError(
                        f"{display_name}: corrupt or truncated GeoTIFF (its header cannot be read)"
                    ) from None
            raise DataError(f"{display_name}: not a GeoTIFF (it cannot be read as a raster image)") from None
        with src:
            if src.driver != "GTiff":
                raise DataError(f"{display_name}: not a GeoTIFF (it is a {src.driver} image)")
            if src.count != bands:
                raise DataError(f"{display_name}: has {src.count} bands, the model expects {bands}")
            try:
                image = src.read(
                    out_shape=(src.count, *preview_shape(src.height, src.width, preview_side)),
                    resampling=Resampling.nearest,
                )
            except RasterioIOError:
                raise DataError(f"{display_name}: corrupt or truncated GeoTIFF (its pixels cannot be read)") from None
            info = UploadInfo(src.width, src.height, src.count, None if src.crs is None else src.crs.to_string())
            nodata = src.nodata
    composite = false_colour(image if bands >= 3 else np.repeat(image[:1], 3, axis=0), nodata)
    matplotlib.image.imsave(preview_png, composite)
    return info
