"""Whole-scene prediction to georeferenced GeoTIFFs, with memory independent of the scene size.

The scene is covered by overlapping tiles (:func:`~rareseg.inference.tiling.tile_origins`) read
row of tiles by row of tiles as full-width strips. Tile probabilities are multiplied by the
blending window (:func:`~rareseg.inference.tiling.blend_window`) and summed into accumulators
that span one tile height of full-width rows. When a row of tiles is done, every row above the
next row of tiles is final: in bands of ``DECIDE_ROWS`` rows it is divided by its weight sum
(separable: :func:`~rareseg.inference.tiling.coverage_weights`), decided
(:func:`~rareseg.inference.decisions.assign_classes`) and appended to the outputs, and the
accumulators move up. Peak memory is ``O(tile * width)``, whatever the scene height.

The calling thread runs only the network. Everything else of the pass (reading strips, softmax,
blending into the accumulators, deciding and writing finished rows) runs in order on one
background thread (:class:`_Worker`) that owns the accumulators, with at most
``MAX_PENDING_JOBS`` jobs in flight. GDAL, numpy and torch release the GIL while they work, so
on a CPU that thread uses a core the network leaves idle, and on a GPU it overlaps the device's work.

The top-k saliency mask needs a threshold over the whole scene: saliency levels of every pixel
go to a scratch file and into a histogram during the pass; afterwards the scratch file is
thresholded at :func:`~rareseg.inference.decisions.topk_level`, and the overviews and previews are
added. That tail runs on the calling thread alone: rasterio holds the GIL while GDAL builds
overviews, so a second thread would only wait for it.

Everything is written into a hidden staging folder inside the output folder and moved to its
final name only when all outputs are complete (``summary.json`` last), so an interrupted run leaves
no file that looks finished and keeps the outputs of an earlier run until the new ones replace them.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
import warnings
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.errors import NotGeoreferencedWarning
from rasterio.windows import Window

from rareseg.datamodules.scenes import DataError, open_geotiff
from rareseg.inference.decisions import (
    SALIENCY_LEVELS,
    nodata_pixels,
    override_rare_classes,
    quantise_saliency,
    topk_level,
)
from rareseg.inference.predictor import Predictor
from rareseg.inference.rasters import (
    BLOCK,
    BlockRowWriter,
    build_overviews,
    output_profile,
    write_mask_preview,
    write_probability_preview,
)
from rareseg.inference.summary import areas_hectares, pixel_area_m2
from rareseg.inference.tiling import blend_window, coverage_weights, tile_origins
from rareseg.models import SegmentationOutput

#: Output files, in the order they are moved into place (``summary.json`` last marks completion).
OUTPUTS = ("mask.tif", "rare_prob.tif", "saliency_topk.tif", "preview_mask.png", "preview_prob.png", "summary.json")
#: Nodata value of the uint8 outputs.
NODATA = 255
#: Rare-class probabilities are stored as uint8 percent: ``value = round(100 * P)``, GDAL scale 0.01.
PROBABILITY_SCALE = 0.01
#: Nodata level of the saliency scratch file (valid levels are ``0..SALIENCY_LEVELS``).
SALIENCY_NODATA = SALIENCY_LEVELS + 1
#: GDAL block cache in MB: bounded so the cache does not grow with the scene.
GDAL_CACHE_MB = 64
#: Rows decided and written at a time (bounds the temporaries).
DECIDE_ROWS = 32
#: Jobs of the prediction pass's background thread that may be unfinished at once (bounds the
#: network outputs in flight: a job holds at most one batch of them).
MAX_PENDING_JOBS = 3
#: Progress fraction reported when the prediction pass is done, and when the top-k pass is done
#: (overviews, previews and the summary take the rest).
PREDICTION_SHARE = 0.9
TOPK_DONE = 0.95
_SCRATCH = "saliency_levels.u16"


class InferenceCancelled(Exception):
    """The ``cancel`` callback asked :func:`predict_scene` to stop; no output was written."""


@dataclass(frozen=True)
class SceneResult:
    """Outputs of :func:`predict_scene`.

    Attributes:
        out_dir: the output folder.
        outputs: final path of every output, by file name.
        summary: the content of ``summary.json``.
    """

    out_dir: Path
    outputs: dict[str, Path]
    summary: dict[str, Any]


def check_options(
    tile: int, overlap: int, batch_size: int, topk: float, threshold: float | None = None, preview_max_side: int = 1024
) -> None:
    """Validate the tiling and output options of :func:`predict_scene`; raises a one-line ValueError."""
    if tile < 16:
        raise ValueError(f"tile must be >= 16 pixels, got {tile}")
    if not 0 <= overlap <= tile // 2:
        raise ValueError(f"overlap must be in [0, tile / 2] = [0, {tile // 2}] pixels, got {overlap}")
    if batch_size < 1:
        raise ValueError(f"batch size must be >= 1, got {batch_size}")
    if not 0 < topk <= 100:
        raise ValueError(f"topk must be a percentage in (0, 100], got {topk}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise ValueError(f"threshold must be a probability in [0, 1], got {threshold}")
    if preview_max_side < 16:
        raise ValueError(f"preview side must be >= 16 pixels, got {preview_max_side}")


def open_scene(path: Path, bands: int) -> rasterio.DatasetReader:
    """Open an input scene, checking it is a GeoTIFF with ``bands`` bands; warn when it has no CRS."""
    src = open_geotiff(path)
    if src.count != bands:
        src.close()
        raise DataError(f"{path}: has {src.count} bands, the checkpoint expects {bands}")
    if src.crs is None:
        warnings.warn(f"{path}: has no CRS; the outputs will have none and areas are not reported", stacklevel=3)
    return src


def _staging_dir(out_dir: Path) -> Path:
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=".rareseg-infer-", dir=out_dir))
    except OSError as err:
        raise DataError(f"{out_dir}: output directory is not writable ({err.strerror or err})") from None


@dataclass
class _Rows:
    """Finished rows: probability sums (K, n, W), saliency sums (S, n, W) or None, weight sums and validity (n, W)."""

    probs: np.ndarray
    saliency: np.ndarray | None
    weights: np.ndarray
    valid: np.ndarray


class _RowAccumulator:
    """Blended sums over ``height`` full-width rows: class probabilities and saliency.

    The weights need no accumulator: their sums are separable (:func:`~rareseg.inference.tiling.coverage_weights`).
    """

    def __init__(self, num_classes: int, height: int, width: int) -> None:
        self.probs = np.zeros((num_classes, height, width), dtype=np.float32)
        self.saliency: np.ndarray | None = None

    def add(self, x0: int, probs: np.ndarray, saliency: np.ndarray | None) -> None:
        """Add one tile's weighted outputs (K, h, w) and (S, h, w) at column ``x0`` of the top rows."""
        height, width = probs.shape[1:]
        self.probs[:, :height, x0 : x0 + width] += probs
        if saliency is not None:
            if self.saliency is None:
                self.saliency = np.zeros((saliency.shape[0], *self.probs.shape[1:]), dtype=np.float32)
            self.saliency[:, :height, x0 : x0 + width] += saliency

    def rows(self, start: int, stop: int, weights: np.ndarray, valid: np.ndarray) -> _Rows:
        """Views of rows ``start:stop`` with their (stop - start, W) weight sums and validity."""
        saliency = None if self.saliency is None else self.saliency[:, start:stop]
        return _Rows(self.probs[:, start:stop], saliency, weights, valid)

    def advance(self, rows: int) -> None:
        """Drop the top ``rows`` rows and move the rest up, zeroing the freed rows."""
        for array in (self.probs, self.saliency):
            if array is not None:
                keep = array.shape[1] - rows
                array[:, :keep] = array[:, rows:]
                array[:, keep:] = 0


@dataclass
class _Decisions:
    """Final outputs of a band of rows: (n, W) mask, (R, n, W) percent probabilities, (n, W) saliency levels and validity."""

    mask: np.ndarray
    probabilities: np.ndarray
    levels: np.ndarray
    valid: np.ndarray


def _decide(
    rows: _Rows, rare: Sequence[int], thresholds: Sequence[float], saliency_channels: Sequence[int]
) -> _Decisions:
    """Final outputs of finished rows: class mask, percent probabilities and saliency levels (nodata where invalid)."""
    valid = rows.valid
    rare_probs = rows.probs[list(rare)] / rows.weights  # weight sums are >= the window's floor > 0
    # the weight sum is positive, so the argmax of the sums is the argmax of the probabilities
    mask = np.where(
        valid, override_rare_classes(rows.probs.argmax(axis=0), rare_probs, rare, thresholds), NODATA
    ).astype(np.uint8)
    percent = np.where(valid, np.rint(rare_probs / PROBABILITY_SCALE), NODATA).astype(np.uint8)
    score = (
        rare_probs.max(axis=0)
        if rows.saliency is None
        else (rows.saliency[list(saliency_channels)] / rows.weights).max(axis=0)
    )
    levels = np.where(valid, quantise_saliency(score), SALIENCY_NODATA).astype(np.uint16)
    return _Decisions(mask, percent, levels, valid)


class _OutputRows:
    """Appends decided rows to ``mask.tif``, ``rare_prob.tif`` and the saliency scratch file; counts classes and saliency levels."""

    def __init__(
        self, mask_rows: BlockRowWriter, prob_rows: BlockRowWriter, scratch: BinaryIO, num_classes: int
    ) -> None:
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self.histogram = np.zeros(SALIENCY_LEVELS + 1, dtype=np.int64)
        self.mask_rows, self.prob_rows, self.scratch = mask_rows, prob_rows, scratch

    def append(self, decided: _Decisions) -> None:
        """Write one band of decided rows below the previous ones."""
        self.mask_rows.append(decided.mask[None])
        self.prob_rows.append(decided.probabilities)
        decided.levels.tofile(self.scratch)
        self.class_counts += np.bincount(decided.mask[decided.valid], minlength=len(self.class_counts))
        self.histogram += np.bincount(decided.levels[decided.valid], minlength=SALIENCY_LEVELS + 1)


@dataclass
class _PassResult:
    class_counts: np.ndarray
    histogram: np.ndarray
    tiles: int
    tiles_predicted: int
    saliency_head: bool


def _describe_outputs(
    mask: rasterio.io.DatasetWriter,
    probs: rasterio.io.DatasetWriter,
    predictor: Predictor,
    rare: Sequence[int],
    thresholds: Sequence[float],
) -> None:
    """Colour table, class names, band descriptions, scales and thresholds of the mask and probability files."""
    names = predictor.class_names
    mask.set_band_description(1, "class")
    mask.update_tags(class_names=json.dumps(list(names)))
    mask.update_tags(1, **{f"class_{i}": name for i, name in enumerate(names)})
    mask.write_colormap(
        1, {**{i: (*colour, 255) for i, colour in enumerate(predictor.class_colors)}, NODATA: (0, 0, 0, 0)}
    )
    probs.descriptions = tuple(names[c] for c in rare)
    probs.scales = (PROBABILITY_SCALE,) * len(rare)
    probs.offsets = (0.0,) * len(rare)
    probs.update_tags(units="percent", scale="probability = value * 0.01")
    for band, (class_id, threshold) in enumerate(zip(rare, thresholds), start=1):
        probs.update_tags(band, class_id=str(class_id), threshold=str(threshold))


class _Worker:
    """One background thread for all the work of the prediction pass but the network, so it overlaps the network.

    Jobs run in submission order: reading strips, turning network outputs into probabilities and
    adding them to the accumulators, deciding and writing finished rows. The accumulators are
    touched by this thread only. :meth:`submit` waits for the oldest job while ``max_pending`` are
    unfinished, so the network outputs in flight, and with them memory, stay bounded. GDAL, numpy
    and torch release the GIL while they work, so on a CPU this thread uses a core the network
    leaves idle, and on a GPU it runs while the device predicts the next batch.
    """

    def __init__(self, max_pending: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rareseg-io")
        self._pending: deque[Future[Any]] = deque()
        self._max_pending = max_pending

    def submit(self, job: Callable[..., Any], *args: Any) -> Future[Any]:
        """Queue ``job(*args)``; first wait (re-raising its error) for the oldest job while too many are pending."""
        while len(self._pending) >= self._max_pending:
            self._pending.popleft().result()
        future = self._pool.submit(job, *args)
        self._pending.append(future)
        return future

    def drain(self) -> None:
        """Wait for every job; re-raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        """Drop the queued jobs, wait for the running one (its error is dropped) and stop the thread."""
        self._pool.shutdown(wait=True, cancel_futures=True)


def _prediction_pass(
    predictor: Predictor,
    src: rasterio.DatasetReader,
    staging: Path,
    tile: int,
    overlap: int,
    batch_size: int,
    rare: Sequence[int],
    thresholds: Sequence[float],
    report: Callable[[float], None],
    cancelled: Callable[[], bool],
) -> _PassResult:
    """Predict every tile, blend, and write ``mask.tif``, ``rare_prob.tif`` and the saliency scratch file."""
    height, width = src.height, src.width
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    window = blend_window(tile_h, tile_w, overlap)
    row_weights, col_weights = coverage_weights(height, tile, overlap), coverage_weights(width, tile, overlap)
    saliency_channels = [predictor.rare_classes.index(c) for c in rare]
    acc = _RowAccumulator(predictor.num_classes, tile_h, width)
    total, visited, predicted = len(rows) * len(cols), 0, 0
    with (
        rasterio.open(staging / "mask.tif", "w", **output_profile(src, 1, "uint8", NODATA)) as mask_dst,
        rasterio.open(staging / "rare_prob.tif", "w", **output_profile(src, len(rare), "uint8", NODATA)) as prob_dst,
        open(staging / _SCRATCH, "wb") as scratch,
    ):
        worker = _Worker(MAX_PENDING_JOBS)  # closed before the files: its jobs write to them
        try:
            _describe_outputs(mask_dst, prob_dst, predictor, rare, thresholds)
            writer = _OutputRows(BlockRowWriter(mask_dst), BlockRowWriter(prob_dst), scratch, predictor.num_classes)

            # the jobs of the worker thread; src and acc are used on that thread only
            def read_strip(y0: int) -> tuple[np.ndarray, np.ndarray]:
                strip = src.read(window=Window(0, y0, width, tile_h))
                return strip, ~nodata_pixels(strip, src.nodata)

            def accumulate(outputs: SegmentationOutput, origins: list[int]) -> None:
                probs, saliency = predictor.probabilities(outputs, window)
                for b, x0 in enumerate(origins):
                    acc.add(x0, probs[b], None if saliency is None else saliency[b])

            def write_rows(y0: int, valid: np.ndarray) -> None:
                finished = valid.shape[0]
                for start in range(0, finished, DECIDE_ROWS):
                    stop = min(start + DECIDE_ROWS, finished)
                    weights = np.outer(row_weights[y0 + start : y0 + stop], col_weights)
                    writer.append(
                        _decide(acc.rows(start, stop, weights, valid[start:stop]), rare, thresholds, saliency_channels)
                    )
                acc.advance(finished)

            reading = worker.submit(read_strip, rows[0])
            for index, y0 in enumerate(rows):
                if cancelled():
                    raise InferenceCancelled("prediction cancelled")
                strip, valid = reading.result()
                if index + 1 < len(rows):
                    reading = worker.submit(read_strip, rows[index + 1])
                origins = [x0 for x0 in cols if valid[:, x0 : x0 + tile_w].any()]
                for start in range(0, len(origins), batch_size):
                    if cancelled():
                        raise InferenceCancelled("prediction cancelled")
                    group = origins[start : start + batch_size]
                    outputs = predictor.network_outputs(
                        np.stack([strip[:, :, x0 : x0 + tile_w] for x0 in group], dtype=np.float32)
                    )
                    worker.submit(accumulate, outputs, group)
                    predicted += len(group)
                    report(PREDICTION_SHARE * (visited + start + len(group)) / total)
                visited += len(cols)
                finished = (rows[index + 1] if index + 1 < len(rows) else height) - y0
                worker.submit(write_rows, y0, valid[:finished])
                report(PREDICTION_SHARE * visited / total)
            worker.drain()
        finally:
            worker.close()
    return _PassResult(writer.class_counts, writer.histogram, total, predicted, acc.saliency is not None)


def _topk_pass(src: rasterio.DatasetReader, staging: Path, level: int | None, cancelled: Callable[[], bool]) -> None:
    """Write ``saliency_topk.tif`` (1 where the saliency level >= ``level``, 0 below, nodata) from the scratch file."""
    # one lookup per pixel: level -> 0/1, the scratch file's nodata level -> NODATA
    top_of_level = np.zeros(SALIENCY_NODATA + 1, dtype=np.uint8)
    if level is not None:
        top_of_level[level:] = 1
    top_of_level[SALIENCY_NODATA] = NODATA
    with (
        rasterio.open(staging / "saliency_topk.tif", "w", **output_profile(src, 1, "uint8", NODATA)) as dst,
        open(staging / _SCRATCH, "rb") as scratch,
    ):
        dst.set_band_description(1, "top-k salient")
        dst.write_colormap(1, {0: (0, 0, 0, 255), 1: (255, 215, 0, 255), NODATA: (0, 0, 0, 0)})
        writer = BlockRowWriter(dst)
        for row in range(0, src.height, BLOCK):
            if cancelled():
                raise InferenceCancelled("prediction cancelled")
            count = min(BLOCK, src.height - row)
            levels = np.fromfile(scratch, dtype=np.uint16, count=count * src.width).reshape(1, count, src.width)
            writer.append(top_of_level[levels])
    (staging / _SCRATCH).unlink()


def _finish_mask_and_probabilities(
    staging: Path, class_colors: Sequence[tuple[int, int, int]], preview_max_side: int
) -> None:
    """Overviews of ``mask.tif`` and ``rare_prob.tif``, then their previews (read from the overviews)."""
    build_overviews(staging / "mask.tif", Resampling.nearest)
    build_overviews(staging / "rare_prob.tif", Resampling.average)
    write_mask_preview(staging / "mask.tif", staging / "preview_mask.png", class_colors, preview_max_side)
    write_probability_preview(staging / "rare_prob.tif", staging / "preview_prob.png", preview_max_side)


def _grid_summary(src: rasterio.DatasetReader, class_counts: np.ndarray, class_names: Sequence[str]) -> dict[str, Any]:
    """Grid, CRS and per-class pixel counts and areas (hectares, ``count * pixel area / 10^4``) of the summary."""
    pixel_area = pixel_area_m2(src.transform, src.crs)
    valid = int(class_counts.sum())
    return {
        "width": src.width,
        "height": src.height,
        "crs": None if src.crs is None else src.crs.to_string(),
        "transform": list(src.transform)[:6],
        "pixel_area_m2": pixel_area,
        "valid_pixels": valid,
        "nodata_pixels": src.width * src.height - valid,
        "classes": [
            {"id": i, "name": name, "pixels": int(count), "area_ha": area}
            for i, (name, count, area) in enumerate(
                zip(class_names, class_counts, areas_hectares(class_counts, pixel_area))
            )
        ],
    }


def _publish(staging: Path, out_dir: Path) -> dict[str, Path]:
    """Move the finished outputs to their final names (``summary.json`` last) and remove the staging folder."""
    outputs = {}
    for name in OUTPUTS:
        outputs[name] = out_dir / name
        os.replace(staging / name, outputs[name])
    staging.rmdir()
    return outputs


def predict_scene(
    predictor: Predictor,
    input: str | Path,
    out_dir: str | Path,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    rare_classes: Sequence[str | int] | None = None,
    threshold: float | None = None,
    topk: float = 10.0,
    preview_max_side: int = 1024,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SceneResult:
    """Predict a whole scene and write georeferenced outputs into ``out_dir``.

    Outputs (same size, CRS and transform as the input; nodata wherever the input is nodata in
    every band):

    - ``mask.tif``: uint8 class ids with a colour table, class names in the band tags and
      ``class_names`` metadata, 255 = nodata.
    - ``rare_prob.tif``: one band per selected rare class (description = class name), uint8
      percent ``round(100 P)`` with GDAL scale 0.01, 255 = nodata.
    - ``saliency_topk.tif``: uint8 1 for the top ``topk`` % of valid pixels by saliency score, 0
      otherwise, 255 = nodata. The score is the saliency head's ``max_r sigmoid(s_r)`` over the
      selected rare classes, or ``max_r P_r`` when the network has no saliency head; ties at the
      cut are included (see :func:`~rareseg.inference.decisions.topk_level`).
    - ``preview_mask.png``, ``preview_prob.png``: decimated renderings.
    - ``summary.json``: per-class pixels and hectares (``count * pixel area / 10^4``), CRS,
      thresholds, tiles, device and timing.

    A selected rare class whose probability reaches its threshold wins the pixel even when the
    argmax is another class (:func:`~rareseg.inference.decisions.assign_classes`). Thresholds:
    ``threshold`` for every selected class when given, else the checkpoint's calibrated ones,
    else 0.5.

    Args:
        predictor: the loaded model (:func:`~rareseg.inference.load_predictor`).
        input: the scene GeoTIFF, with the checkpoint's band count and order.
        out_dir: output folder (created when missing).
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles, at most ``tile / 2``.
        batch_size: tiles per forward pass.
        rare_classes: names or ids of the rare classes to output and threshold (default: all).
        threshold: one threshold in [0, 1] for every selected rare class.
        topk: percentage of valid pixels marked in ``saliency_topk.tif``.
        preview_max_side: longer side of the PNG previews, in pixels.
        progress: called with the fraction done, 0..1.
        cancel: polled between batches; returning True stops the run with :class:`InferenceCancelled`.

    Returns:
        The output paths and the summary.

    Raises:
        DataError: unreadable or non-GeoTIFF input, wrong band count, unknown rare class, output
            folder not writable.
        InferenceCancelled: ``cancel`` returned True; nothing was written.
    """
    check_options(tile, overlap, batch_size, topk, threshold, preview_max_side)
    rare = predictor.select_rare_classes(rare_classes)
    thresholds, threshold_source = predictor.thresholds_for(rare, threshold)
    input_path, out_dir = Path(input), Path(out_dir)
    report = progress or (lambda fraction: None)
    cancelled = cancel or (lambda: False)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # open_scene says it once, naming the file
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_scene(input_path, predictor.in_channels) as src:
            staging = _staging_dir(out_dir)
            try:
                result = _prediction_pass(
                    predictor, src, staging, tile, overlap, batch_size, rare, thresholds, report, cancelled
                )
                level = topk_level(result.histogram, topk)
                # every valid pixel is in the histogram, so the pixels at or above the cut are counted there
                selected = 0 if level is None else int(result.histogram[level:].sum())
                # one thread: rasterio holds the GIL while GDAL builds overviews, so a second thread only waits
                _topk_pass(src, staging, level, cancelled)
                report(TOPK_DONE)
                build_overviews(staging / "saliency_topk.tif", Resampling.nearest)
                _finish_mask_and_probabilities(staging, predictor.class_colors, preview_max_side)
                if cancelled():
                    raise InferenceCancelled("prediction cancelled")
                summary = {
                    "input": str(input_path),
                    "checkpoint": None if predictor.checkpoint is None else str(predictor.checkpoint),
                    **_grid_summary(src, result.class_counts, predictor.class_names),
                    "rare_classes": [
                        {"id": c, "name": predictor.class_names[c], "threshold": t} for c, t in zip(rare, thresholds)
                    ],
                    "threshold_source": threshold_source,
                    "topk": {
                        "percent": topk,
                        "score": "saliency head" if result.saliency_head else "max rare probability",
                        "cut": None if level is None else level / SALIENCY_LEVELS,
                        "pixels": selected,
                    },
                    "tiles": {
                        "size": [min(tile, src.height), min(tile, src.width)],
                        "overlap": overlap,
                        "batch_size": batch_size,
                        "count": result.tiles,
                        "predicted": result.tiles_predicted,
                    },
                    "device": str(predictor.device),
                    "precision": predictor.precision,
                    "seconds": time.perf_counter() - started,
                    "outputs": list(OUTPUTS),
                }
                summary["megapixels_per_second"] = src.width * src.height / 1e6 / summary["seconds"]
                (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                outputs = _publish(staging, out_dir)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    report(1.0)
    return SceneResult(out_dir, outputs, summary)
