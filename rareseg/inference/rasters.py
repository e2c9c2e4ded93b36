"""Output rasters of whole-scene prediction: the files, their description, row writing, COG layout, previews.

Every output GeoTIFF is written tiled, row by row, into a staging folder; :func:`build_overviews`
then adds its overviews and rewrites it with GDAL's COG driver, so the published files are
Cloud-Optimized GeoTIFFs (IFDs first, smallest overview's tiles next, full resolution last).
``mask.tif`` gets two sidecars GIS software reads (:func:`write_mask_sidecars`): ``mask.tif.aux.xml``
(GDAL category names and raster attribute table) and ``mask.qml`` (the QGIS paletted style QGIS
loads by default for ``mask.tif``).
"""

from __future__ import annotations

import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
import PIL.Image
import rasterio
import rasterio.shutil
from rasterio.enums import Resampling
from rasterio.windows import Window

from rareseg.core.conventions import IGNORE_INDEX

#: Sidecars of ``mask.tif``: GDAL's PAM file (category names, attribute table) and the default QGIS style.
MASK_SIDECARS = ("mask.tif.aux.xml", "mask.qml")
#: Output files of a scene, in the order they are moved into place (``summary.json`` last marks completion).
OUTPUTS = (
    "mask.tif",
    *MASK_SIDECARS,
    "rare_prob.tif",
    "saliency_topk.tif",
    "preview_mask.png",
    "preview_prob.png",
    "summary.json",
)
#: Rare-class probabilities are stored as uint8 ``value = round(P / PROBABILITY_SCALE)`` (0..100) with GDAL scale
#: ``PROBABILITY_SCALE`` and offset 0, so ``value * scale + offset`` is the probability P in [0, 1].
PROBABILITY_SCALE = 0.01
#: The ``encoding`` tag of ``rare_prob.tif``: how stored values map to probabilities.
PROBABILITY_ENCODING = (
    f"probability = value * {PROBABILITY_SCALE} (GDAL scale, offset 0), in [0, 1]; "
    f"value = round(probability / {PROBABILITY_SCALE}); {IGNORE_INDEX} = nodata"
)
#: Colour table of ``saliency_topk.tif``: 0 black, 1 gold, nodata transparent.
TOPK_COLORMAP = {0: (0, 0, 0, 255), 1: (255, 215, 0, 255), IGNORE_INDEX: (0, 0, 0, 0)}
#: Side of the square internal tiles of every output GeoTIFF, in pixels.
BLOCK = 256
#: Smallest overview side: overviews halve the scene until its longer side would drop below this.
MIN_OVERVIEW_SIDE = 128
#: Deflate level of outputs and their overviews: 1 writes ~2.5x faster than the default 6 for ~25 % larger files.
DEFLATE_LEVEL = 1
#: Fast PNG compression for previews (they are small; encoding speed matters more than size).
PNG_OPTIONS = {"compress_level": 1}


def output_profile(src: rasterio.DatasetReader, count: int, dtype: str, nodata: float) -> dict[str, Any]:
    """Creation options of an output on the grid of ``src``: same size, CRS and transform; tiled, deflate level 1."""
    return {
        "driver": "GTiff",
        "width": src.width,
        "height": src.height,
        "count": count,
        "dtype": dtype,
        "nodata": nodata,
        "crs": src.crs,
        "transform": src.transform,
        "tiled": True,
        "blockxsize": BLOCK,
        "blockysize": BLOCK,
        "compress": "deflate",
        "zlevel": DEFLATE_LEVEL,
        "BIGTIFF": "IF_SAFER",
    }


def describe_outputs(
    mask: rasterio.io.DatasetWriter,
    probs: rasterio.io.DatasetWriter,
    class_names: Sequence[str],
    class_colors: Sequence[tuple[int, int, int]],
    rare_classes: Sequence[int],
    thresholds: Sequence[float],
) -> None:
    """Colour table, class names, band descriptions, scales and thresholds of ``mask.tif`` and ``rare_prob.tif``.

    ``mask.tif`` keeps its class names in the band tags ``class_<id>`` and the ``class_names`` tag
    (QGIS's legend reads them from the sidecars of :func:`write_mask_sidecars`). ``rare_prob.tif``
    stores ``round(100 P)`` with GDAL scale ``PROBABILITY_SCALE`` and offset 0, so the scaled value
    is the probability in [0, 1] (dimensionless; no unit type).
    """
    mask.set_band_description(1, "class")
    mask.update_tags(class_names=json.dumps(list(class_names)))
    mask.update_tags(1, **{f"class_{i}": name for i, name in enumerate(class_names)})
    mask.write_colormap(1, {**{i: (*colour, 255) for i, colour in enumerate(class_colors)}, IGNORE_INDEX: (0, 0, 0, 0)})
    probs.descriptions = tuple(class_names[c] for c in rare_classes)
    probs.scales = (PROBABILITY_SCALE,) * len(rare_classes)
    probs.offsets = (0.0,) * len(rare_classes)
    probs.update_tags(encoding=PROBABILITY_ENCODING)
    for band, (class_id, threshold) in enumerate(zip(rare_classes, thresholds), start=1):
        probs.update_tags(band, class_id=str(class_id), threshold=str(threshold))


class BlockRowWriter:
    """Append rows to a GeoTIFF top to bottom, writing whole rows of internal blocks only.

    Rows arrive in strips of any height; each write covers complete block rows (``BLOCK`` rows,
    the last one shorter), so no compressed block is ever written twice. At most ``BLOCK - 1``
    pending rows stay in memory.

    Args:
        dataset: a GeoTIFF opened for writing.
    """

    def __init__(self, dataset: rasterio.io.DatasetWriter) -> None:
        self.dataset = dataset
        self.next_row = 0
        self._pending: np.ndarray | None = None

    def append(self, rows: np.ndarray) -> None:
        """Queue (count, n, width) rows below the ones already given and write complete block rows."""
        pending = rows if self._pending is None else np.concatenate([self._pending, rows], axis=1)
        end = self.next_row + pending.shape[1]
        ready = end - self.next_row if end == self.dataset.height else (end // BLOCK) * BLOCK - self.next_row
        if ready > 0:
            self.dataset.write(pending[:, :ready], window=Window(0, self.next_row, self.dataset.width, ready))
            self.next_row += ready
        self._pending = pending[:, ready:].copy() if ready < pending.shape[1] else None


def overview_factors(height: int, width: int, min_side: int = MIN_OVERVIEW_SIDE) -> list[int]:
    """Decimation factors ``2, 4, 8, ...`` while ``max(height, width) / factor >= min_side``."""
    factors = []
    factor = 2
    while max(height, width) / factor >= min_side:
        factors.append(factor)
        factor *= 2
    return factors


def build_overviews(path: Path, resampling: Resampling) -> None:
    """Add internal overviews (:func:`overview_factors`) to a finished GeoTIFF and make it a Cloud-Optimized GeoTIFF.

    The overviews are built in place (their resampling goes into the ``overview_resampling`` tag);
    then GDAL's COG driver copies the file (same tile size, deflate level, overviews and metadata)
    into a temporary sibling that replaces it, so ``path`` is either the old file or the complete
    COG. GDAL's ``.aux.xml`` side files are switched off meanwhile, so nothing else appears beside
    ``path``.
    """
    path = Path(path)
    with rasterio.Env(ZLEVEL_OVERVIEW=DEFLATE_LEVEL, GDAL_PAM_ENABLED="NO"):
        with rasterio.open(path, "r+") as dst:
            factors = overview_factors(dst.height, dst.width)
            if factors:
                dst.build_overviews(factors, resampling)
                dst.update_tags(overview_resampling=resampling.name)
        cog = path.with_name(f".{path.name}.cog")
        try:
            rasterio.shutil.copy(
                path,
                cog,
                driver="COG",
                BLOCKSIZE=BLOCK,
                COMPRESS="DEFLATE",
                LEVEL=DEFLATE_LEVEL,
                OVERVIEWS="FORCE_USE_EXISTING" if factors else "NONE",
                BIGTIFF="IF_SAFER",
            )
            os.replace(cog, path)
        except BaseException:
            cog.unlink(missing_ok=True)
            raise


def write_mask_sidecars(
    mask_path: Path, class_names: Sequence[str], class_colors: Sequence[tuple[int, int, int]]
) -> None:
    """Write ``mask.tif.aux.xml`` and ``mask.qml`` beside ``mask_path`` for the K classes.

    - ``<mask>.aux.xml``: GDAL's PAM file with the band's category names (``GetCategoryNames``:
      name of class ``i`` at index ``i``) and a thematic raster attribute table (value, class name,
      red, green, blue). QGIS labels the colour table with the category names.
    - ``<mask stem>.qml``: a QGIS paletted style with exactly the K classes (name, colour); QGIS
      applies it when the layer is added. Values without an entry (nodata 255) are transparent.

    Args:
        mask_path: the class mask GeoTIFF.
        class_names: name of class ``i`` at index ``i`` (K names).
        class_colors: RGB of class ``i`` at index ``i``.
    """
    mask_path = Path(mask_path)
    _write_xml(mask_path.with_name(mask_path.name + ".aux.xml"), _pam_categories(class_names, class_colors))
    qml = _qgis_paletted_style(class_names, class_colors)
    _write_xml(mask_path.with_suffix(".qml"), qml, doctype="<!DOCTYPE qgis PUBLIC 'http://mrcc.com/qgis.dtd' 'SYSTEM'>")


def _pam_categories(class_names: Sequence[str], class_colors: Sequence[tuple[int, int, int]]) -> ET.Element:
    """``<PAMDataset>`` with band 1's ``CategoryNames`` and a thematic ``GDALRasterAttributeTable``."""
    dataset = ET.Element("PAMDataset")
    band = ET.SubElement(dataset, "PAMRasterBand", band="1")
    categories = ET.SubElement(band, "CategoryNames")
    for name in class_names:
        ET.SubElement(categories, "Category").text = name
    table = ET.SubElement(band, "GDALRasterAttributeTable", tableType="thematic")
    # (name, GDALRATFieldType: 0 integer / 2 string, GDALRATFieldUsage: 5 MinMax, 2 Name, 6-8 Red/Green/Blue)
    fields = [("Value", 0, 5), ("Class", 2, 2), ("Red", 0, 6), ("Green", 0, 7), ("Blue", 0, 8)]
    for index, (name, field_type, usage) in enumerate(fields):
        definition = ET.SubElement(table, "FieldDefn", index=str(index))
        ET.SubElement(definition, "Name").text = name
        ET.SubElement(definition, "Type").text = str(field_type)
        ET.SubElement(definition, "Usage").text = str(usage)
    for class_id, (name, colour) in enumerate(zip(class_names, class_colors)):
        row = ET.SubElement(table, "Row", index=str(class_id))
        for value in (class_id, name, *colour[:3]):
            ET.SubElement(row, "F").text = str(value)
    return dataset


def _qgis_paletted_style(class_names: Sequence[str], class_colors: Sequence[tuple[int, int, int]]) -> ET.Element:
    """QGIS layer style (``.qml``): band 1 rendered paletted, one entry per class, nodata transparent."""
    style = ET.Element("qgis", version="3.28.0", styleCategories="Symbology")
    pipe = ET.SubElement(style, "pipe")
    renderer = ET.SubElement(
        pipe, "rasterrenderer", type="paletted", band="1", opacity="1", alphaBand="-1", nodataColor=""
    )
    ET.SubElement(renderer, "rasterTransparency")
    palette = ET.SubElement(renderer, "colorPalette")
    for class_id, (name, colour) in enumerate(zip(class_names, class_colors)):
        red, green, blue = colour[:3]
        ET.SubElement(
            palette,
            "paletteEntry",
            value=str(class_id),
            color=f"#{red:02x}{green:02x}{blue:02x}",
            alpha="255",
            label=name,
        )
    ET.SubElement(pipe, "brightnesscontrast", brightness="0", contrast="0", gamma="1")
    ET.SubElement(pipe, "huesaturation", saturation="0", grayscaleMode="0", colorizeOn="0")
    ET.SubElement(pipe, "rasterresampler", maxOversample="2")
    ET.SubElement(style, "blendMode").text = "0"
    return style


def _write_xml(path: Path, root: ET.Element, doctype: str | None = None) -> None:
    """Write ``root`` as indented UTF-8 XML (optionally after a DOCTYPE line)."""
    ET.indent(root)
    text = ET.tostring(root, encoding="unicode")
    path.write_text("\n".join(line for line in (doctype, text) if line) + "\n", encoding="utf-8")


def _decimated_shape(height: int, width: int, max_side: int) -> tuple[int, int]:
    step = max(1, int(np.ceil(max(height, width) / max_side)))
    return max(1, height // step), max(1, width // step)


def _write_palette_png(png_path: Path, indices: np.ndarray, palette: np.ndarray, transparent: int) -> None:
    """Write (H, W) uint8 ``indices`` as a palette PNG of colours ``palette[i]`` (N <= 256, RGB).

    Index ``transparent`` is see-through.

    A palette image is a quarter of the bytes of RGBA, and encodes about 10x faster.
    """
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = palette
    image = PIL.Image.fromarray(np.ascontiguousarray(indices, dtype=np.uint8), mode="P")
    image.putpalette(table.tobytes())
    image.save(png_path, format="png", transparency=transparent, **PNG_OPTIONS)


def write_mask_preview(
    mask_path: Path,
    png_path: Path,
    colours: Sequence[tuple[int, int, int]],
    max_side: int,
    nodata: int = IGNORE_INDEX,
) -> None:
    """Palette PNG of the class mask in its class colours (``nodata`` transparent), longer side at most ``max_side``."""
    with rasterio.open(mask_path) as src:
        mask = src.read(1, out_shape=_decimated_shape(src.height, src.width, max_side), resampling=Resampling.nearest)
    _write_palette_png(png_path, mask, np.array([colour[:3] for colour in colours], dtype=np.uint8), transparent=nodata)


def write_probability_preview(prob_path: Path, png_path: Path, max_side: int, nodata: int = IGNORE_INDEX) -> None:
    """Palette PNG of the highest rare-class probability per pixel (magma colour map, ``nodata`` transparent).

    The bands hold integer percent (0..100), so the preview is exact with one palette entry per percent.
    """
    with rasterio.open(prob_path) as src:
        percent = src.read(
            out_shape=(src.count, *_decimated_shape(src.height, src.width, max_side)), resampling=Resampling.nearest
        )
        scale = src.scales[0]
    # nodata is shared by every band, and valid percentages are <= 100 < nodata
    highest = np.where(percent[0] != nodata, percent.max(axis=0), nodata)
    levels = np.arange(256) * scale
    palette = matplotlib.colormaps["magma"](np.clip(levels, 0.0, 1.0), bytes=True)[:, :3]
    _write_palette_png(png_path, highest, palette, transparent=nodata)
