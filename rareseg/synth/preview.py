"""False-colour previews of LISS-IV scenes (NIR-R-G, the standard composite)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio


def stretch(bands: np.ndarray, valid: np.ndarray | None = None, low: float = 2, high: float = 98) -> np.ndarray:
    """Per-band percentile stretch to uint8.

    Args:
        bands: (C, H, W) values.
        valid: (H, W) bool of pixels used for the percentiles (all when None).
        low: lower percentile.
        high: upper percentile.

    Returns:
        (H, W, C) uint8 image; invalid pixels are black.
    """
    valid = np.ones(bands.shape[1:], dtype=bool) if valid is None else valid
    out = np.zeros((*bands.shape[1:], bands.shape[0]), dtype=np.uint8)
    if not valid.any():
        return out
    for channel, band in enumerate(bands.astype(np.float32)):
        lo, hi = np.percentile(band[valid], [low, high])
        scaled = np.clip((band - lo) / max(hi - lo, 1e-6), 0, 1)
        out[..., channel] = np.where(valid, np.round(scaled * 255), 0).astype(np.uint8)
    return out


def false_colour(image: np.ndarray, nodata: float | None) -> np.ndarray:
    """NIR-R-G composite of a (3, H, W) green/red/NIR array as (H, W, 3) uint8."""
    valid = np.ones(image.shape[1:], dtype=bool) if nodata is None else ~np.all(image == nodata, axis=0)
    return stretch(image[[2, 1, 0]], valid)


def colourise(mask: np.ndarray, colours: dict[int, tuple[int, ...]]) -> np.ndarray:
    """Class mask (H, W) to (H, W, 3) uint8 using a {class id: RGB(A)} table; others black."""
    out = np.zeros((*mask.shape, 3), dtype=np.uint8)
    for class_id, colour in colours.items():
        out[mask == class_id] = colour[:3]
    return out


def write_preview(image_path: Path, png_path: Path, mask_path: Path | None = None, max_side: int = 1024) -> None:
    """Write a false-colour PNG of a scene, with its colourised mask beside it when given.

    Args:
        image_path: 3-band green/red/NIR GeoTIFF.
        png_path: output PNG.
        mask_path: optional class mask GeoTIFF with a colour table.
        max_side: the preview is decimated so its longer side is at most this many pixels.
    """
    import matplotlib.image

    with rasterio.open(image_path) as src:
        step = max(1, int(np.ceil(max(src.height, src.width) / max_side)))
        shape = (src.count, src.height // step, src.width // step)
        panels = [false_colour(src.read(out_shape=shape), src.nodata)]
    if mask_path is not None:
        with rasterio.open(mask_path) as src:
            mask = src.read(1, out_shape=shape[1:], resampling=rasterio.enums.Resampling.nearest)
            panels.append(colourise(mask, src.colormap(1)))
    matplotlib.image.imsave(png_path, np.concatenate(panels, axis=1))
