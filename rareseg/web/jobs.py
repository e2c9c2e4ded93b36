"""Prediction jobs: one uploaded scene each, run in a bounded thread pool, re-rendered on request.

A job lives in ``<jobs_dir>/<id>/`` where ``id`` is random (``secrets.token_urlsafe``); the
uploaded file is saved as ``input.tif`` whatever its name, and deleted when the job ends. The
network outputs go to ``network/`` and the published outputs (:data:`FILES`) next to it.

Finished jobs are deleted beyond ``keep_jobs`` (oldest first) and ``max_job_age_hours`` after they
finished; job folders an earlier server left in ``jobs_dir`` go once they are that old. A jobs
folder the manager made itself (the default temporary one) is removed by :meth:`JobManager.shutdown`,
or at interpreter exit when nobody called it.
"""

from __future__ import annotations

import logging
import re
import secrets
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
from rasterio.errors import RasterioError

from rareseg.datamodules import DataError
from rareseg.inference import InferenceCancelled, Predictor, predict_scene
from rareseg.models import SegmentationOutput
from rareseg.web.config import WebConfig
from rareseg.web.options import RenderOptions
from rareseg.web.render import ARGMAX_THRESHOLD, RENDERED, render_outputs
from rareseg.web.uploads import UploadInfo, inspect_upload

#: Job states; the last three are final.
STATUSES = ("queued", "running", "done", "failed", "cancelled")
FINISHED = frozenset(STATUSES[2:])
#: Random bytes of a job id (``token_urlsafe`` gives 22 characters).
JOB_ID_BYTES = 16
#: Share of the progress bar taken by the network pass; rendering takes the rest.
NETWORK_SHARE = 0.9
INPUT_FILE = "input.tif"
INPUT_PREVIEW = "preview_input.png"
NETWORK_DIR = "network"
#: Names of job folders (``secrets.token_urlsafe(JOB_ID_BYTES)``).
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")
#: Most seconds between two sweeps for jobs past their age.
SWEEP_SECONDS = 60.0
#: The only files of a job that can be downloaded.
FILES = (INPUT_PREVIEW, *RENDERED)


class JobStateError(RuntimeError):
    """The request does not fit the job's state (re-render a running job, cancel a finished one)."""


@dataclass
class SerialPredictor(Predictor):
    """A :class:`~rareseg.inference.Predictor` whose forward passes run one at a time.

    Jobs in several worker threads share one model; each batch of tiles takes the lock, so
    reading, blending and writing of one job overlap with the network pass of another.
    """

    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @classmethod
    def sharing(cls, predictor: Predictor) -> SerialPredictor:
        """A serialised predictor sharing ``predictor``'s model and metadata."""
        return cls(**{item.name: getattr(predictor, item.name) for item in fields(Predictor)})

    def network_outputs(self, tiles: np.ndarray) -> SegmentationOutput:
        """:meth:`Predictor.network_outputs` under the lock (every prediction goes through it)."""
        with self.lock:
            return super().network_outputs(tiles)


@dataclass
class Job:
    """One uploaded scene and its outputs.

    Attributes:
        id: random URL-safe id.
        directory: the job's folder.
        input_name: the uploaded file's name (shown to the user only, never used as a path).
        upload: size, bands and CRS of the upload.
        options: the options the outputs were (or will be) rendered with.
        status: one of :data:`STATUSES`.
        progress: fraction done, 0..1.
        error: one-line reason when failed.
        version: number of renders so far (changes whenever the outputs change).
        created: ``time.monotonic()`` when the job was submitted.
        finished: ``time.monotonic()`` when it reached a final status, else None.
        input_scale: factor multiplying the bands before normalisation, or ``"auto"``.
        radiometry: the scene's radiometry check (``summary.json``'s entry, the upload's name in its warning).
    """

    id: str
    directory: Path
    input_name: str
    upload: UploadInfo
    options: RenderOptions
    status: str = "queued"
    progress: float = 0.0
    error: str | None = None
    version: int = 0
    created: float = field(default_factory=time.monotonic)
    finished: float | None = None
    cancel_requested: threading.Event = field(default_factory=threading.Event)
    render_lock: threading.Lock = field(default_factory=threading.Lock)
    future: Future[None] | None = None
    input_scale: float | str = 1.0
    radiometry: dict[str, Any] | None = None

    def files(self) -> list[str]:
        """Names of the downloadable files (:data:`FILES`) the job has produced so far."""
        return [name for name in FILES if (self.directory / name).is_file()]

    def end(self, status: str, error: str | None = None) -> None:
        """Set a final status (and the error of a failed job) and note when it happened."""
        self.status, self.error, self.finished = status, error, time.monotonic()

    def advance(self, progress: float) -> None:
        """Raise the progress to ``progress`` (never lowers it)."""
        self.progress = max(self.progress, min(1.0, progress))

    def describe(self, class_names: tuple[str, ...]) -> dict[str, Any]:
        """The JSON answer of ``GET /api/jobs/<id>``."""
        return {
            "id": self.id,
            "status": self.status,
            "progress": round(self.progress, 4),
            "error": self.error,
            "files": self.files(),
            "version": self.version,
            "cancel_requested": self.cancel_requested.is_set(),
            "options": self.options.describe(class_names),
            "input": {
                "name": self.input_name,
                "width": self.upload.width,
                "height": self.upload.height,
                "bands": self.upload.bands,
                "crs": self.upload.crs,
            },
        }


class JobManager:
    """Creates, runs, re-renders, cancels and prunes jobs.

    Args:
        predictor: the loaded model, shared by every job (wrapped in a :class:`SerialPredictor`).
        config: the web settings (workers, tiling, previews, retention).
        logger: where unexpected job errors are logged with their traceback.
    """

    def __init__(self, predictor: Predictor, config: WebConfig, logger: logging.Logger) -> None:
        self.predictor = SerialPredictor.sharing(predictor)
        self.config = config
        self.logger = logger
        self.owns_jobs_dir = config.jobs_dir is None
        if self.owns_jobs_dir:
            self.jobs_dir = Path(tempfile.mkdtemp(prefix="rareseg-web-"))
            self._remove_jobs_dir = weakref.finalize(self, shutil.rmtree, self.jobs_dir, ignore_errors=True)
        else:
            self.jobs_dir = Path(config.jobs_dir)
            self.jobs_dir.mkdir(parents=True, exist_ok=True)
        self._jobs: dict[str, Job] = {}
        self._saving: set[str] = set()  # ids of folders made by submit() for jobs not registered yet
        self._lock = threading.Lock()
        self._executor = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="rareseg-job")
        self._stopping = threading.Event()
        self._prune()
        self._sweeper = threading.Thread(target=self._sweep, name="rareseg-job-sweeper", daemon=True)
        self._sweeper.start()

    def submit(
        self, save: Callable[[Path], None], input_name: str, options: RenderOptions, input_scale: float | str = 1.0
    ) -> Job:
        """Save an upload into a new job folder, check it, and queue its prediction.

        Args:
            save: writes the uploaded bytes to the path it is given.
            input_name: the uploaded file's name, for messages.
            options: the options of the first rendering.
            input_scale: factor multiplying the bands before normalisation, or ``"auto"``.

        Returns:
            The queued job.

        Raises:
            DataError: the upload is not a readable GeoTIFF with the model's band count
                (the job folder is removed).
        """
        job_id = secrets.token_urlsafe(JOB_ID_BYTES)
        directory = self.jobs_dir / job_id
        with self._lock:
            self._saving.add(job_id)
        try:
            directory.mkdir()
            save(directory / INPUT_FILE)
            upload = inspect_upload(
                directory / INPUT_FILE,
                input_name,
                self.predictor.in_channels,
                directory / INPUT_PREVIEW,
                self.config.preview_side,
            )
        except BaseException:
            shutil.rmtree(directory, ignore_errors=True)
            with self._lock:
                self._saving.discard(job_id)
            raise
        job = Job(job_id, directory, input_name, upload, options, input_scale=input_scale)
        with self._lock:
            self._jobs[job_id] = job
            self._saving.discard(job_id)
        job.future = self._executor.submit(self._run, job)
        return job

    def get(self, job_id: str) -> Job | None:
        """The job with this id, or None."""
        with self._lock:
            return self._jobs.get(job_id)

    def render(self, job: Job, options: RenderOptions) -> None:
        """Re-render a finished job's outputs with new options from its stored network outputs.

        Raises:
            JobStateError: the job is not done.
        """
        with self._lock:
            if job.status != "done":
                raise JobStateError(f"job {job.id} is {job.status}; only a finished job can be re-rendered")
        with job.render_lock:
            render_outputs(
                job.directory / NETWORK_DIR, job.directory, options, self.config.preview_side, self._summary_fields(job)
            )
            job.options = options
            job.version += 1

    def cancel(self, job: Job) -> None:
        """Stop a queued job now, or a running one at its next batch of tiles.

        Raises:
            JobStateError: the job has already finished.
        """
        with self._lock:
            if job.status in FINISHED:
                raise JobStateError(f"job {job.id} is already {job.status}")
            job.cancel_requested.set()
            if job.status == "queued" and job.future is not None and job.future.cancel():
                job.end("cancelled")
                (job.directory / INPUT_FILE).unlink(missing_ok=True)

    def shutdown(self) -> None:
        """Cancel every unfinished job, wait for the workers to stop, and remove a jobs folder of our own."""
        self._stopping.set()
        with self._lock:
            for job in self._jobs.values():
                job.cancel_requested.set()
        self._executor.shutdown(wait=True, cancel_futures=True)
        self._sweeper.join()
        if self.owns_jobs_dir:
            self._remove_jobs_dir()

    def _summary_fields(self, job: Job) -> dict[str, Any]:
        checkpoint = self.predictor.checkpoint
        fields = {"input": job.input_name, "checkpoint": None if checkpoint is None else checkpoint.name}
        return fields if job.radiometry is None else {**fields, "radiometry": job.radiometry}

    def _public_message(self, err: BaseException, job: Job) -> str:
        """First line of an error, with the server's paths replaced by the upload's name."""
        lines = str(err).strip().splitlines()
        message = lines[0] if lines else type(err).__name__
        return message.replace(str(job.directory / INPUT_FILE), job.input_name).replace(
            str(job.directory), "the job folder"
        )

    def _run(self, job: Job) -> None:
        with self._lock:
            if job.cancel_requested.is_set():
                job.end("cancelled")
                (job.directory / INPUT_FILE).unlink(missing_ok=True)
                return
            job.status = "running"
        try:
            result = predict_scene(
                self.predictor,
                job.directory / INPUT_FILE,
                job.directory / NETWORK_DIR,
                tile=self.config.tile,
                overlap=self.config.overlap,
                batch_size=self.config.batch_size,
                threshold=ARGMAX_THRESHOLD,
                topk=job.options.topk,
                preview_max_side=self.config.preview_side,
                input_scale=job.input_scale,
                progress=lambda fraction: job.advance(NETWORK_SHARE * fraction),
                cancel=job.cancel_requested.is_set,
            )
            radiometry = result.summary["radiometry"]
            warning = radiometry["warning"] and radiometry["warning"].replace(
                str(job.directory / INPUT_FILE), job.input_name
            )
            job.radiometry = {**radiometry, "warning": warning}
            with job.render_lock:
                render_outputs(
                    job.directory / NETWORK_DIR,
                    job.directory,
                    job.options,
                    self.config.preview_side,
                    self._summary_fields(job),
                )
            self._finish(job, "done")
        except InferenceCancelled:
            self._finish(job, "cancelled")
        except DataError as err:
            self._finish(job, "failed", self._public_message(err, job))
        except RasterioError as err:
            self._finish(
                job,
                "failed",
                f"{job.input_name}: raster read or write failed, the upload may be corrupt or truncated "
                f"({self._public_message(err, job)})",
            )
        except Exception as err:  # a failing job must never take the server down
            self.logger.exception("job %s failed", job.id)
            self._finish(job, "failed", f"internal error: {type(err).__name__}: {self._public_message(err, job)}")
        finally:
            (job.directory / INPUT_FILE).unlink(missing_ok=True)
            if job.status != "done":
                shutil.rmtree(job.directory / NETWORK_DIR, ignore_errors=True)
            self._prune()

    def _finish(self, job: Job, status: str, error: str | None = None) -> None:
        with self._lock:
            job.end(status, error)
            if status == "done":
                job.progress, job.version = 1.0, job.version + 1

    def _sweep(self) -> None:
        """Prune every ``SWEEP_SECONDS`` (sooner for short job ages) until :meth:`shutdown`."""
        interval = min(SWEEP_SECONDS, self.config.max_job_age_seconds / 4)
        while not self._stopping.wait(interval):
            self._prune()

    def _prune(self) -> None:
        """Delete finished jobs beyond ``keep_jobs`` (oldest first) or past their age, and stale job folders.

        A job being re-rendered is skipped until the next prune.
        """
        now = time.monotonic()
        max_age = self.config.max_job_age_seconds
        with self._lock:
            finished = sorted(
                (job for job in self._jobs.values() if job.status in FINISHED), key=lambda job: job.created
            )
            surplus = max(0, len(self._jobs) - self.config.keep_jobs)
            expired = [job for job in finished[surplus:] if job.finished is not None and now - job.finished > max_age]
            for job in finished[:surplus] + expired:
                if job.render_lock.acquire(blocking=False):
                    del self._jobs[job.id]
                    shutil.rmtree(job.directory, ignore_errors=True)
                    job.render_lock.release()
            known = set(self._jobs) | self._saving
        self._remove_stale_folders(known, max_age)

    def _remove_stale_folders(self, known: set[str], max_age: float) -> None:
        """Remove job folders no job of this manager owns whose last change is older than ``max_age`` seconds."""
        try:
            entries = list(self.jobs_dir.iterdir())
        except OSError:
            return
        oldest = time.time() - max_age
        for entry in entries:
            if entry.name in known or not JOB_ID.fullmatch(entry.name):
                continue
            try:
                stale = entry.is_dir() and not entry.is_symlink() and entry.stat().st_mtime < oldest
            except OSError:
                continue
            if stale:
                shutil.rmtree(entry, ignore_errors=True)
