"""The one inference pass: a whole scene through the network in overlapping tiles, blended, with bounded memory.

:func:`blend_scene` covers the scene with overlapping tiles (:func:`~rareseg.inference.tiling.tile_origins`)
read row of tiles by row of tiles as full-width strips. The :class:`~rareseg.inference.predictor.Predictor`
normalises each tile and runs the network; tile probabilities (and saliency) are multiplied by
the blending window (:func:`~rareseg.inference.tiling.blend_window`) and summed into accumulators
that span one tile height of full-width rows. When a row of tiles is done, every row above the
next row of tiles is final: it goes, in bands of ``DECIDE_ROWS`` rows, to the caller's ``consume``
as :class:`~rareseg.inference.tiling.BlendedRows`, and the accumulators move up. Peak memory is
``O(tile * width)``, whatever the scene height.

Every user of a trained network goes through this pass and differs only in what ``consume`` does:
:func:`predict_scene` (``rareseg infer``, ``rareseg predict``, the web page) decides and writes
GeoTIFFs; ``rareseg evaluate`` (:mod:`rareseg.evaluation.evaluate`) scores the same decisions
against the truth; the saliency maps of the training sampler
(:mod:`rareseg.inference.saliency_map`) average the blended saliency over cells.

The calling thread runs only the network. Everything else of the pass (reading strips, softmax,
blending into the accumulators, ``consume``) runs in order on one background thread
(:class:`_Worker`) that owns the accumulators, with at most ``MAX_PENDING_JOBS`` jobs in flight.
GDAL, numpy and torch release the GIL while they work, so on a CPU that thread uses a core the
network leaves idle, and on a GPU it overlaps the device's work.

:func:`predict_scene` also writes a top-k saliency mask, which needs a threshold over the whole
scene: saliency levels of every pixel go to a scratch file and into a histogram during the pass;
afterwards the scratch file is thresholded at :func:`~rareseg.inference.decisions.topk_level`,
and the overviews and previews are added. That tail runs on the calling thread alone: rasterio
holds the GIL while GDAL builds overviews, so a second thread would only wait for it.

Everything is written into a hidden staging folder inside the output folder
(``.rareseg-infer-<pid>-*``) and moved to its final name only when all outputs are complete
(``summary.json`` last), so an interrupted run leaves no file that looks finished and keeps the
outputs of an earlier run until the new ones replace them. A run killed outright leaves its
staging folder; the next run into the same folder removes it (:func:`~rareseg.core.files.remove_stale`).
"""

from __future__ import annotations

import json
import shutil
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

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.core.files import publish, staging_dir
from rareseg.core.pixels import non_finite_pixels
from rareseg.datamodules.scenes import DataError, open_geotiff, read_window
from rareseg.inference.decisions import (
    SALIENCY_LEVELS,
    SALIENCY_NODATA,
    Decisions,
    decide_rows,
    nodata_pixels,
    topk_level,
)
from rareseg.inference.predictor import Predictor
from rareseg.inference.radiometry import parse_input_scale, prepare_scene
from rareseg.inference.rasters import (
    BLOCK,
    OUTPUTS,
    TOPK_COLORMAP,
    BlockRowWriter,
    build_overviews,
    describe_outputs,
    output_profile,
    write_mask_preview,
    write_mask_sidecars,
    write_probability_preview,
)
from rareseg.inference.summary import grid_summary
from rareseg.inference.tiling import BlendedRows, blend_window, coverage_weights, tile_origins
from rareseg.models import SegmentationOutput

#: GDAL block cache in MB: bounded so the cache does not grow with the scene.
GDAL_CACHE_MB = 64
#: Rows handed to ``consume`` at a time (bounds the temporaries).
DECIDE_ROWS = 32
#: Jobs of the pass's background thread that may be unfinished at once (bounds the network
#: outputs in flight: a job holds at most one batch of them).
MAX_PENDING_JOBS = 3
#: Progress fraction :func:`predict_scene` reports when the prediction pass is done, and when the
#: top-k pass is done (overviews, previews and the summary take the rest).
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
    """A staging folder ``.rareseg-infer-<pid>-*`` in ``out_dir``; stale ones of dead processes are removed first."""
    try:
        return staging_dir(out_dir, "infer")
    except OSError as err:
        raise DataError(f"{out_dir}: output directory is not writable ({err.strerror or err})") from None


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

    def rows(self, y0: int, start: int, stop: int, weights: np.ndarray, valid: np.ndarray) -> BlendedRows:
        """Views of rows ``start:stop`` (scene rows ``y0 + start`` on) with their weight sums and validity."""
        saliency = None if self.saliency is None else self.saliency[:, start:stop]
        return BlendedRows(y0 + start, self.probs[:, start:stop], saliency, weights, valid)

    def advance(self, rows: int) -> None:
        """Drop the top ``rows`` rows and move the rest up, zeroing the freed rows."""
        for array in (self.probs, self.saliency):
            if array is not None:
                keep = array.shape[1] - rows
                array[:, :keep] = array[:, rows:]
                array[:, keep:] = 0


class _OutputRows:
    """Appends decided rows to ``mask.tif``, ``rare_prob.tif`` and the saliency scratch file.

    Also counts the valid pixels of each class and of each saliency level.
    """

    def __init__(
        self, mask_rows: BlockRowWriter, prob_rows: BlockRowWriter, scratch: BinaryIO, num_classes: int
    ) -> None:
        self.class_counts = np.zeros(num_classes, dtype=np.int64)
        self.histogram = np.zeros(SALIENCY_LEVELS + 1, dtype=np.int64)
        self.mask_rows, self.prob_rows, self.scratch = mask_rows, prob_rows, scratch

    def append(self, decided: Decisions) -> None:
        """Write one band of decided rows below the previous ones."""
        self.mask_rows.append(decided.mask[None])
        self.prob_rows.append(decided.probabilities)
        decided.levels.tofile(self.scratch)
        self.class_counts += np.bincount(decided.mask[decided.valid], minlength=len(self.class_counts))
        self.histogram += np.bincount(decided.levels[decided.valid], minlength=SALIENCY_LEVELS + 1)


@dataclass(frozen=True)
class PassStats:
    """What :func:`blend_scene` did.

    Attributes:
        tiles: tiles of the scene's grid.
        tiles_predicted: tiles with at least one valid pixel (the others are not run through the network).
        saliency_head: whether the network has a saliency head.
    """

    tiles: int
    tiles_predicted: int
    saliency_head: bool


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


def blend_scene(
    predictor: Predictor,
    src: rasterio.DatasetReader,
    consume: Callable[[BlendedRows], None],
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> PassStats:
    """Predict every tile of an open scene, blend, and hand the finished rows to ``consume`` top to bottom.

    Options are those of :func:`predict_scene` (checked there, by :func:`check_options`).
    ``consume`` runs on the pass's background thread, in row order, once per band of at most
    ``DECIDE_ROWS`` rows; the arrays it gets are views, valid only during the call. Tiles whose
    pixels are all nodata are not predicted; their rows are still handed over (with ``valid`` False).
    Pixels with a NaN or infinite band are nodata (:func:`~rareseg.core.pixels.nodata_pixels`).

    Args:
        predictor: the loaded model.
        src: the scene, with ``predictor.in_channels`` bands.
        consume: what to do with each band of blended rows.
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles.
        batch_size: tiles per forward pass.
        progress: called with the fraction of the pass done, 0..1.
        cancel: polled between batches; returning True raises :class:`InferenceCancelled`.

    Returns:
        Tile counts and whether the network has a saliency head.

    Raises:
        DataError: a read failed (truncated or corrupt file: the message names the window), or no
            pixel is valid and some are NaN or infinite.
        InferenceCancelled: ``cancel`` returned True.
    """
    report = progress or (lambda fraction: None)
    cancelled = cancel or (lambda: False)
    height, width = src.height, src.width
    tile_h, tile_w = min(tile, height), min(tile, width)
    rows, cols = tile_origins(height, tile, overlap), tile_origins(width, tile, overlap)
    window = blend_window(tile_h, tile_w, overlap)
    row_weights, col_weights = coverage_weights(height, tile, overlap), coverage_weights(width, tile, overlap)
    acc = _RowAccumulator(predictor.num_classes, tile_h, width)
    total, visited, predicted, seen_non_finite = len(rows) * len(cols), 0, 0, False
    worker = _Worker(MAX_PENDING_JOBS)
    try:
        # the jobs of the worker thread; src and acc are used on that thread only
        def read_strip(y0: int) -> tuple[np.ndarray, np.ndarray, bool]:
            strip = read_window(src, Window(0, y0, width, tile_h))
            return strip, ~nodata_pixels(strip, src.nodata), bool(non_finite_pixels(strip).any())

        def accumulate(outputs: SegmentationOutput, origins: list[int]) -> None:
            probs, saliency = predictor.probabilities(outputs, window)
            for b, x0 in enumerate(origins):
                acc.add(x0, probs[b], None if saliency is None else saliency[b])

        def finish_rows(y0: int, valid: np.ndarray) -> None:
            finished = valid.shape[0]
            for start in range(0, finished, DECIDE_ROWS):
                stop = min(start + DECIDE_ROWS, finished)
                weights = np.outer(row_weights[y0 + start : y0 + stop], col_weights)
                consume(acc.rows(y0, start, stop, weights, valid[start:stop]))
            acc.advance(finished)

        reading = worker.submit(read_strip, rows[0])
        for index, y0 in enumerate(rows):
            if cancelled():
                raise InferenceCancelled("prediction cancelled")
            strip, valid, non_finite = reading.result()
            seen_non_finite |= non_finite
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
                report((visited + start + len(group)) / total)
            visited += len(cols)
            finished = (rows[index + 1] if index + 1 < len(rows) else height) - y0
            worker.submit(finish_rows, y0, valid[:finished])
            report(visited / total)
        worker.drain()
    finally:
        worker.close()
    if predicted == 0 and seen_non_finite:
        raise DataError(f"{src.name}: no valid pixel: every pixel is nodata, NaN or infinite")
    return PassStats(total, predicted, acc.saliency is not None)


def _prediction_pass(
    predictor: Predictor,
    src: rasterio.DatasetReader,
    staging: Path,
    options: dict[str, int],
    rare: Sequence[int],
    thresholds: Sequence[float],
    report: Callable[[float], None],
    cancelled: Callable[[], bool],
) -> tuple[_OutputRows, PassStats]:
    """:func:`blend_scene` deciding each band of rows into ``mask.tif``, ``rare_prob.tif`` and the saliency scratch."""
    saliency_channels = [predictor.rare_classes.index(c) for c in rare]
    with (
        rasterio.open(staging / "mask.tif", "w", **output_profile(src, 1, "uint8", IGNORE_INDEX)) as mask_dst,
        rasterio.open(
            staging / "rare_prob.tif", "w", **output_profile(src, len(rare), "uint8", IGNORE_INDEX)
        ) as prob_dst,
        open(staging / _SCRATCH, "wb") as scratch,
    ):
        describe_outputs(mask_dst, prob_dst, predictor.class_names, predictor.class_colors, rare, thresholds)
        writer = _OutputRows(BlockRowWriter(mask_dst), BlockRowWriter(prob_dst), scratch, predictor.num_classes)
        # blend_scene joins its worker thread before returning, so no job writes to a closed file
        stats = blend_scene(
            predictor,
            src,
            lambda rows: writer.append(decide_rows(rows, rare, thresholds, saliency_channels)),
            progress=lambda fraction: report(PREDICTION_SHARE * fraction),
            cancel=cancelled,
            **options,
        )
    return writer, stats


def _topk_pass(src: rasterio.DatasetReader, staging: Path, level: int | None, cancelled: Callable[[], bool]) -> None:
    """Write ``saliency_topk.tif`` from the scratch file: 1 where the saliency level >= ``level``, 0 below, nodata."""
    # one lookup per pixel: level -> 0/1, the scratch file's nodata level -> IGNORE_INDEX
    top_of_level = np.zeros(SALIENCY_NODATA + 1, dtype=np.uint8)
    if level is not None:
        top_of_level[level:] = 1
    top_of_level[SALIENCY_NODATA] = IGNORE_INDEX
    with (
        rasterio.open(staging / "saliency_topk.tif", "w", **output_profile(src, 1, "uint8", IGNORE_INDEX)) as dst,
        open(staging / _SCRATCH, "rb") as scratch,
    ):
        dst.set_band_description(1, "top-k salient")
        dst.write_colormap(1, TOPK_COLORMAP)
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


def predict_scene(
    predictor: Predictor,
    image_path: str | Path,
    out_dir: str | Path,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    rare_classes: Sequence[str | int] | None = None,
    threshold: float | None = None,
    topk: float = 10.0,
    preview_max_side: int = 1024,
    input_scale: float | str = 1.0,
    progress: Callable[[float], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> SceneResult:
    """Predict a whole scene and write georeferenced outputs into ``out_dir``.

    Outputs (same size, CRS and transform as the input; nodata wherever the input is nodata in
    every band or NaN/infinite in any band):

    - ``mask.tif``: uint8 class ids with a colour table, class names in the band tags and
      ``class_names`` metadata, 255 = nodata; beside it ``mask.tif.aux.xml`` (GDAL category names
      and attribute table) and ``mask.qml`` (QGIS style with the K classes).
    - ``rare_prob.tif``: one band per selected rare class (description = class name), uint8
      ``round(100 P)`` with GDAL scale 0.01 (scaled value = probability), 255 = nodata.
    - ``saliency_topk.tif``: uint8 1 for the top ``topk`` % of valid pixels by saliency score, 0
      otherwise, 255 = nodata. The score is the saliency head's ``max_r sigmoid(s_r)`` over the
      selected rare classes, or ``max_r P_r`` when the network has no saliency head; ties at the
      cut are included (see :func:`~rareseg.inference.decisions.topk_level`).
    - ``preview_mask.png``, ``preview_prob.png``: decimated renderings.
    - ``summary.json``: per-class pixels and hectares (``count * pixel area / 10^4``), CRS,
      thresholds, tiles, device and timing, and the radiometry check
      (:func:`~rareseg.inference.radiometry.prepare_scene`, which warns when the scene's scale or
      band order does not match the checkpoint's training data).

    A selected rare class whose probability reaches its threshold wins the pixel even when the
    argmax is another class (:func:`~rareseg.inference.decisions.assign_classes`). Thresholds:
    ``threshold`` for every selected class when given, else the checkpoint's calibrated ones,
    else 0.5.

    Args:
        predictor: the loaded model (:func:`~rareseg.inference.load_predictor`).
        image_path: the scene GeoTIFF, with the checkpoint's band count and order.
        out_dir: output folder (created when missing).
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles, at most ``tile / 2``.
        batch_size: tiles per forward pass.
        rare_classes: names or ids of the rare classes to output and threshold (default: all).
        threshold: one threshold in [0, 1] for every selected rare class.
        topk: percentage of valid pixels marked in ``saliency_topk.tif``.
        preview_max_side: longer side of the PNG previews, in pixels.
        input_scale: factor multiplying the bands before normalisation, or ``"auto"`` (the factor
            the radiometry check detects).
        progress: called with the fraction done, 0..1.
        cancel: polled between batches; returning True stops the run with :class:`InferenceCancelled`.

    Returns:
        The output paths and the summary.

    Raises:
        DataError: unreadable or non-GeoTIFF input, wrong band count, unknown rare class, output
            folder not writable, a failed read during the pass, no valid pixel but NaN/Inf ones.
        InferenceCancelled: ``cancel`` returned True; nothing was written.
    """
    check_options(tile, overlap, batch_size, topk, threshold, preview_max_side)
    parse_input_scale(input_scale)
    rare = predictor.select_rare_classes(rare_classes)
    thresholds, threshold_source = predictor.thresholds_for(rare, threshold)
    input_path, out_dir = Path(image_path), Path(out_dir)
    report = progress or (lambda fraction: None)
    cancelled = cancel or (lambda: False)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)  # open_scene says it once, naming the file
        with rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB), open_scene(input_path, predictor.in_channels) as src:
            predictor, radiometry = prepare_scene(predictor, src, str(input_path), input_scale)
            staging = _staging_dir(out_dir)
            try:
                options = {"tile": tile, "overlap": overlap, "batch_size": batch_size}
                written, stats = _prediction_pass(predictor, src, staging, options, rare, thresholds, report, cancelled)
                level = topk_level(written.histogram, topk)
                # every valid pixel is in the histogram, so the pixels at or above the cut are counted there
                selected = 0 if level is None else int(written.histogram[level:].sum())
                # one thread: rasterio holds the GIL while GDAL builds overviews, so a second thread only waits
                _topk_pass(src, staging, level, cancelled)
                report(TOPK_DONE)
                build_overviews(staging / "saliency_topk.tif", Resampling.nearest)
                _finish_mask_and_probabilities(staging, predictor.class_colors, preview_max_side)
                write_mask_sidecars(staging / "mask.tif", predictor.class_names, predictor.class_colors)
                if cancelled():
                    raise InferenceCancelled("prediction cancelled")
                summary = {
                    "input": str(input_path),
                    "checkpoint": None if predictor.checkpoint is None else str(predictor.checkpoint),
                    **grid_summary(src, written.class_counts, predictor.class_names),
                    "rare_classes": [
                        {"id": c, "name": predictor.class_names[c], "threshold": t} for c, t in zip(rare, thresholds)
                    ],
                    "threshold_source": threshold_source,
                    "topk": {
                        "percent": topk,
                        "score": "saliency head" if stats.saliency_head else "max rare probability",
                        "cut": None if level is None else level / SALIENCY_LEVELS,
                        "pixels": selected,
                    },
                    "tiles": {
                        "size": [min(tile, src.height), min(tile, src.width)],
                        "overlap": overlap,
                        "batch_size": batch_size,
                        "count": stats.tiles,
                        "predicted": stats.tiles_predicted,
                    },
                    "device": str(predictor.device),
                    "precision": predictor.precision,
                    "radiometry": radiometry.summary(),
                    "seconds": time.perf_counter() - started,
                    "outputs": list(OUTPUTS),
                }
                summary["megapixels_per_second"] = src.width * src.height / 1e6 / summary["seconds"]
                (staging / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
                outputs = publish(staging, out_dir, OUTPUTS)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    report(1.0)
    return SceneResult(out_dir, outputs, summary)
