"""Re-render a finished job's outputs from its stored network outputs, without running the network.

A job runs the network once with :func:`~rareseg.inference.predict_scene` for every rare class of
the checkpoint and the threshold :data:`ARGMAX_THRESHOLD`, which makes its ``mask.tif`` the plain
argmax (a rare class reaches probability 1 only where it is the argmax). Those *network outputs*
stay in the job's ``network/`` folder. Rendering applies the user's options to them, block row by
block row (memory ``O(256 * width)``), and writes the published outputs:

- ``mask.tif``: ``c(i) = argmax``, overridden by the selected rare class with the highest stored
  probability among those with ``p_r(i) >= t_r``
  (:func:`~rareseg.inference.override_rare_classes`), where ``p_r = value / 100`` is the percent
  stored in ``rare_prob.tif``. Thresholds act on the stored percentages, so the mask agrees
  exactly with the probability file a user downloads.
  Beside it ``mask.tif.aux.xml`` and ``mask.qml`` (class names and colours for GDAL and QGIS,
  :func:`~rareseg.inference.write_mask_sidecars`), as ``rareseg predict`` writes them.
- ``rare_prob.tif``: the selected classes' bands.
- ``saliency_topk.tif``: the network's top-k region (saliency-head score) when every rare class
  is selected and top-k is unchanged; otherwise recomputed from the stored probabilities with the
  score ``max_r p_r`` over the selected classes (:func:`~rareseg.inference.topk_level` on a
  101-level histogram; ties at the cut are included).
- ``preview_mask.png``, ``preview_prob.png``, ``preview_topk.png`` (outline of the top-k region,
  transparent elsewhere) and ``summary.json`` (areas recomputed).

Files are written to a staging folder and moved into place with ``summary.json`` last, so a
download never sees a half-written file.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Mapping
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import matplotlib.image
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from scipy import ndimage

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.core.files import publish
from rareseg.inference.decisions import override_rare_classes, topk_level
from rareseg.inference.rasters import (
    BLOCK,
    MASK_SIDECARS,
    PROBABILITY_SCALE,
    TOPK_COLORMAP,
    build_overviews,
    output_profile,
    write_mask_preview,
    write_mask_sidecars,
    write_probability_preview,
)
from rareseg.inference.summary import areas_hectares
from rareseg.web.options import RenderOptions

#: Threshold of the network run: only probability 1 overrides the argmax, where the class already is the argmax.
ARGMAX_THRESHOLD = 1.0
#: Files a render publishes, ``summary.json`` last (it marks completion).
RENDERED = (
    "mask.tif",
    *MASK_SIDECARS,
    "rare_prob.tif",
    "saliency_topk.tif",
    "preview_mask.png",
    "preview_prob.png",
    "preview_topk.png",
    "summary.json",
)
#: RGBA of the top-k outline drawn over the probability preview (cyan stands out on magma).
OUTLINE_RGBA = (0, 255, 255, 255)
#: Percent levels of the stored probabilities (0..100).
PERCENT_LEVELS = 101


def topk_outline(selected: np.ndarray) -> np.ndarray:
    """(H, W) bool border of a (H, W) bool region.

    The border is the region's pixels with a 4-neighbour outside it (or on the image edge).
    """
    interior = ndimage.binary_erosion(selected, structure=ndimage.generate_binary_structure(2, 1), border_value=0)
    return selected & ~interior


def _rows(height: int) -> list[int]:
    return list(range(0, height, BLOCK))


def _percent_histogram(
    prob_src: rasterio.DatasetReader, bands: list[int], valid_of: rasterio.DatasetReader
) -> np.ndarray:
    """(101,) counts of valid pixels per stored percent of the score ``max_r p_r`` over ``bands``."""
    histogram = np.zeros(PERCENT_LEVELS, dtype=np.int64)
    for row in _rows(prob_src.height):
        window = Window(0, row, prob_src.width, min(BLOCK, prob_src.height - row))
        valid = valid_of.read(1, window=window) != IGNORE_INDEX
        score = prob_src.read(bands, window=window).max(axis=0)
        histogram += np.bincount(score[valid], minlength=PERCENT_LEVELS)
    return histogram


def _copy_metadata(
    argmax_src: rasterio.DatasetReader,
    prob_src: rasterio.DatasetReader,
    bands: list[int],
    options: RenderOptions,
    mask_dst: rasterio.io.DatasetWriter,
    prob_dst: rasterio.io.DatasetWriter,
) -> None:
    """Colour table, class names and band descriptions of the network outputs; thresholds of the options."""
    mask_dst.write_colormap(1, argmax_src.colormap(1))
    mask_dst.update_tags(**argmax_src.tags())
    mask_dst.update_tags(1, **argmax_src.tags(1))
    mask_dst.set_band_description(1, argmax_src.descriptions[0])
    prob_dst.update_tags(**prob_src.tags())
    prob_dst.descriptions = tuple(prob_src.descriptions[b - 1] for b in bands)
    prob_dst.scales = (PROBABILITY_SCALE,) * len(bands)
    prob_dst.offsets = (0.0,) * len(bands)
    for out_band, (band, threshold) in enumerate(zip(bands, options.thresholds), start=1):
        prob_dst.update_tags(out_band, **{**prob_src.tags(band), "threshold": str(threshold)})


def _write_outline_preview(topk_path: Path, png_path: Path, shape: tuple[int, int]) -> None:
    """RGBA PNG of ``shape``: the top-k region's outline in :data:`OUTLINE_RGBA`, transparent elsewhere."""
    with rasterio.open(topk_path) as src:
        selected = src.read(1, out_shape=shape, resampling=Resampling.nearest) == 1
    rgba = np.zeros((*shape, 4), dtype=np.uint8)
    rgba[topk_outline(selected)] = OUTLINE_RGBA
    matplotlib.image.imsave(png_path, rgba)


def _write_rasters(
    network_dir: Path, staging: Path, options: RenderOptions, network_summary: Mapping[str, Any]
) -> tuple[np.ndarray, dict[str, Any], list[tuple[int, int, int]]]:
    """Write ``mask.tif``, ``rare_prob.tif`` and ``saliency_topk.tif`` into ``staging``.

    Returns:
        Pixel count per class (K,), the ``topk`` entry of the summary and the class colours.
    """
    network_topk = network_summary["topk"]
    num_classes = len(network_summary["classes"])
    counts = np.zeros(num_classes, dtype=np.int64)
    selected = 0
    with ExitStack() as stack:
        argmax_src = stack.enter_context(rasterio.open(network_dir / "mask.tif"))
        prob_src = stack.enter_context(rasterio.open(network_dir / "rare_prob.tif"))
        band_of = {int(prob_src.tags(band)["class_id"]): band for band in range(1, prob_src.count + 1)}
        bands = [band_of[c] for c in options.rare_classes]
        reuse_topk = set(options.rare_classes) == set(band_of) and options.topk == network_topk["percent"]
        level = None if reuse_topk else topk_level(_percent_histogram(prob_src, bands, argmax_src), options.topk)
        mask_dst = stack.enter_context(
            rasterio.open(staging / "mask.tif", "w", **output_profile(argmax_src, 1, "uint8", IGNORE_INDEX))
        )
        prob_dst = stack.enter_context(
            rasterio.open(
                staging / "rare_prob.tif", "w", **output_profile(argmax_src, len(bands), "uint8", IGNORE_INDEX)
            )
        )
        _copy_metadata(argmax_src, prob_src, bands, options, mask_dst, prob_dst)
        topk_dst = None
        if not reuse_topk:
            topk_dst = stack.enter_context(
                rasterio.open(
                    staging / "saliency_topk.tif", "w", **output_profile(argmax_src, 1, "uint8", IGNORE_INDEX)
                )
            )
            topk_dst.set_band_description(1, "top-k salient")
            topk_dst.write_colormap(1, TOPK_COLORMAP)
        for row in _rows(argmax_src.height):
            window = Window(0, row, argmax_src.width, min(BLOCK, argmax_src.height - row))
            argmax = argmax_src.read(1, window=window)
            percent = prob_src.read(bands, window=window)
            valid = argmax != IGNORE_INDEX
            classes = override_rare_classes(argmax, percent / 100.0, options.rare_classes, options.thresholds)
            mask = np.where(valid, classes, IGNORE_INDEX).astype(np.uint8)
            counts += np.bincount(mask[valid], minlength=num_classes)
            mask_dst.write(mask, 1, window=window)
            prob_dst.write(percent, window=window)
            if topk_dst is not None:
                # level is None only when no pixel is valid, and then nothing is selected
                top = valid & (percent.max(axis=0) >= (level or 0))
                selected += int(np.count_nonzero(top))
                topk_dst.write(np.where(valid, top, IGNORE_INDEX).astype(np.uint8), 1, window=window)
        colours = [argmax_src.colormap(1)[c][:3] for c in range(num_classes)]
    if reuse_topk:
        shutil.copyfile(network_dir / "saliency_topk.tif", staging / "saliency_topk.tif")
        return counts, network_topk, colours
    build_overviews(staging / "saliency_topk.tif", Resampling.nearest)
    cut = None if level is None else level / 100
    return (
        counts,
        {"percent": options.topk, "score": "max rare probability (stored percent)", "cut": cut, "pixels": selected},
        colours,
    )


def _write_previews(staging: Path, colours: list[tuple[int, int, int]], preview_side: int) -> None:
    """Overviews of the mask and probabilities, and the three preview PNGs."""
    build_overviews(staging / "mask.tif", Resampling.nearest)
    build_overviews(staging / "rare_prob.tif", Resampling.average)
    write_mask_preview(staging / "mask.tif", staging / "preview_mask.png", colours, preview_side)
    write_probability_preview(staging / "rare_prob.tif", staging / "preview_prob.png", preview_side)
    shape = matplotlib.image.imread(staging / "preview_prob.png").shape[:2]
    _write_outline_preview(staging / "saliency_topk.tif", staging / "preview_topk.png", shape)


def render_outputs(
    network_dir: Path, out_dir: Path, options: RenderOptions, preview_side: int, summary_fields: Mapping[str, Any]
) -> dict[str, Any]:
    """Write the published outputs (:data:`RENDERED`) of a job into ``out_dir`` from its network outputs.

    Args:
        network_dir: outputs of ``predict_scene`` run with every rare class and :data:`ARGMAX_THRESHOLD`.
        out_dir: the job folder.
        options: selected rare classes (ids among the network's), thresholds and top-k.
        preview_side: longer side of the PNG previews in pixels.
        summary_fields: entries replacing those of the network summary (e.g. ``input``, ``checkpoint``).

    Returns:
        The content of the new ``summary.json``: the network summary with class pixels and areas
        (``count * pixel area / 10^4`` ha), rare-class thresholds and top-k of this rendering.
    """
    network_summary = json.loads((network_dir / "summary.json").read_text())
    staging = Path(tempfile.mkdtemp(prefix=".render-", dir=out_dir))
    try:
        counts, topk_summary, colours = _write_rasters(network_dir, staging, options, network_summary)
        _write_previews(staging, colours, preview_side)
        names = [entry["name"] for entry in network_summary["classes"]]
        write_mask_sidecars(staging / "mask.tif", names, colours)  # QGIS and GDAL show class names, not numbers
        areas = areas_hectares(counts, network_summary["pixel_area_m2"])
        summary = {
            **network_summary,
            **summary_fields,
            "classes": [
                {"id": c, "name": name, "pixels": int(counts[c]), "area_ha": areas[c]} for c, name in enumerate(names)
            ],
            "rare_classes": [
                {"id": c, "name": names[c], "threshold": t} for c, t in zip(options.rare_classes, options.thresholds)
            ],
            "threshold_source": options.threshold_source,
            "topk": topk_summary,
            "outputs": list(RENDERED),
        }
        (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        publish(staging, out_dir, RENDERED)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
