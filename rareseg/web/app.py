"""Flask application: one page and a JSON API to predict uploaded LISS-IV scenes.

API (every error is JSON ``{"error": reason, "status": code}``):

- ``GET /api/config``: classes (names, colours, which are rare), default thresholds and top-k,
  upload limit, colour bar of the probability map.
- ``POST /api/jobs`` (multipart: file ``image``; optional ``threshold``, ``rare_classes``,
  ``topk``, see :func:`~rareseg.web.options.parse_options`): 202 ``{"id": ..., "status": "queued"}``.
- ``GET /api/jobs/<id>``: status, progress 0..1, error, downloadable files, options.
- ``GET /api/jobs/<id>/files/<name>``: one of the job's files (:data:`~rareseg.web.jobs.FILES`).
- ``POST /api/jobs/<id>/render``: re-render a finished job with new options from its stored
  probabilities: the fields above as form data or as a JSON object (``{"threshold": 0.4}``,
  see :func:`~rareseg.web.options.fields_from_json`); missing ones keep their current value.

When the app has an access token (:attr:`~rareseg.web.config.WebConfig.token`), every route,
the page and static files included, answers 401 without it (:mod:`rareseg.web.access`).

A malformed body (bad JSON, an unknown or repeated field, a value of the wrong type or out of
range) gets 400 with one line naming the field.
- ``POST /api/jobs/<id>/cancel``: 202, stop a queued or running job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from flask import Blueprint, Flask, Response, abort, current_app, jsonify, render_template, request, send_file, url_for
from werkzeug.exceptions import HTTPException, InternalServerError, MethodNotAllowed, NotFound, RequestEntityTooLarge
from werkzeug.utils import secure_filename

from rareseg.inference import Predictor, load_predictor, parse_input_scale
from rareseg.web.access import require_token
from rareseg.web.config import WebConfig
from rareseg.web.jobs import Job, JobManager, JobStateError
from rareseg.web.options import check_field_names, fields_from_json, parse_options

#: Key of the :class:`JobManager` in ``app.extensions``.
EXTENSION = "rareseg.jobs"
#: Stops of the probability colour bar sent to the page (the magma map of ``preview_prob.png``).
COLORBAR_STOPS = 11
#: Name shown for an upload whose name has nothing usable left after sanitising.
FALLBACK_NAME = "upload.tif"
#: Content types of form data (``request.form``).
FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")
#: Headers of every response: nothing may load from outside the server, no sniffing, no framing.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}

api = Blueprint("api", __name__, url_prefix="/api")
page = Blueprint("page", __name__)


def job_manager(app: Flask) -> JobManager:
    """The :class:`~rareseg.web.jobs.JobManager` of an app made by :func:`create_app` (e.g. to shut it down)."""
    return app.extensions[EXTENSION]


def _manager() -> JobManager:
    return job_manager(current_app)


def _hex(colour: tuple[int, ...]) -> str:
    return "#" + "".join(f"{int(value):02x}" for value in colour[:3])


def _job(job_id: str) -> Job:
    job = _manager().get(job_id)
    if job is None:
        abort(404, description="unknown job (it never existed or was deleted)")
    return job


def _describe(job: Job) -> dict[str, Any]:
    return job.describe(_manager().predictor.class_names)


def display_name(filename: str | None) -> str:
    """The uploaded file's name made safe to show (no folders, only ``[A-Za-z0-9_.-]``); never used as a path."""
    return secure_filename(filename or "")[:100] or FALLBACK_NAME


def _option_fields(extra: Sequence[str] = ()) -> dict[str, str]:
    """The option fields of the request body: form data or a JSON object; 400 with one line otherwise.

    ``extra`` names form fields accepted besides the rendering options (the upload's ``input_scale``).
    """
    try:
        if request.is_json:
            try:
                body = json.loads(request.get_data(cache=False))
            except ValueError as err:
                raise ValueError(f"request body: malformed JSON ({str(err).splitlines()[0]})") from None
            return fields_from_json(body)
        if request.mimetype in FORM_TYPES:
            check_field_names([name for name in request.form if name not in extra])
            for name in request.form:
                if len(request.form.getlist(name)) > 1:
                    raise ValueError(f"{name}: given {len(request.form.getlist(name))} times, give it once")
            return request.form.to_dict()
        if request.get_data(cache=False):
            kind = request.mimetype or "data without a Content-Type"
            raise ValueError(f"request body: send the fields as JSON (application/json) or form data, not {kind}")
        return {}
    except ValueError as err:
        abort(400, description=str(err))


@page.get("/")
def index() -> str:
    """The single page."""
    return render_template("index.html")


@api.get("/config")
def config() -> Response:
    """Classes, colours, rare classes, default thresholds and top-k, upload limit, colour bar."""
    manager = _manager()
    predictor = manager.predictor
    defaults = parse_options({}, predictor, manager.config.topk)
    names = predictor.class_names
    return jsonify(
        classes=[
            {"id": i, "name": name, "colour": _hex(colour), "rare": i in predictor.rare_classes}
            for i, (name, colour) in enumerate(zip(names, predictor.class_colors))
        ],
        rare_classes=[names[c] for c in predictor.rare_classes],
        thresholds={names[c]: t for c, t in zip(defaults.rare_classes, defaults.thresholds)},
        threshold_sources={names[c]: s for c, s in zip(defaults.rare_classes, defaults.sources)},
        topk=defaults.topk,
        bands=predictor.in_channels,
        max_upload_mb=manager.config.max_upload_mb,
        checkpoint=None if predictor.checkpoint is None else predictor.checkpoint.name,
        colorbar=[
            _hex(tuple(rgba))
            for rgba in matplotlib.colormaps["magma"](np.linspace(0.0, 1.0, COLORBAR_STOPS), bytes=True)
        ],
    )


@api.post("/jobs")
def create_job() -> tuple[Response, int, dict[str, str]]:
    """Accept an uploaded scene and queue its prediction (202)."""
    manager = _manager()
    upload = request.files.get("image")
    if upload is None or not upload.filename:
        abort(400, description="no file in the form field 'image'")
    fields = _option_fields(extra=("input_scale",))
    try:
        input_scale = parse_input_scale(fields.pop("input_scale", "") or "1")
        options = parse_options(fields, manager.predictor, manager.config.topk)
        job = manager.submit(upload.save, display_name(upload.filename), options, input_scale)
    except ValueError as err:
        abort(400, description=str(err))
    return jsonify(id=job.id, status=job.status), 202, {"Location": url_for(".job_status", job_id=job.id)}


@api.get("/jobs/<job_id>")
def job_status(job_id: str) -> Response:
    """Status, progress, error and files of a job."""
    return jsonify(_describe(_job(job_id)))


@api.get("/jobs/<job_id>/files/<name>")
def job_file(job_id: str, name: str) -> Response:
    """A file the job produced; GeoTIFFs, their QGIS/GDAL sidecars (and anything with ``?download``) as attachments."""
    job = _job(job_id)
    produced = {file: file for file in job.files()}
    if name not in produced:
        abort(404, description=f"no such file in this job (available: {', '.join(produced) or 'none yet'})")
    path = job.directory / produced[name]
    attachment = path.suffix in {".tif", ".qml", ".xml"} or "download" in request.args
    return send_file(
        path, as_attachment=attachment, download_name=f"{Path(job.input_name).stem}_{path.name}", max_age=0
    )


@api.post("/jobs/<job_id>/render")
def render_job(job_id: str) -> Response:
    """Re-render a finished job's outputs with new options, without running the network."""
    manager = _manager()
    job = _job(job_id)
    fields = _option_fields()
    try:
        options = parse_options(fields, manager.predictor, manager.config.topk, current=job.options)
    except ValueError as err:
        abort(400, description=str(err))
    manager.render(job, options)
    return jsonify(_describe(job))


@api.post("/jobs/<job_id>/cancel")
def cancel_job(job_id: str) -> tuple[Response, int]:
    """Ask a queued or running job to stop (202)."""
    job = _job(job_id)
    _manager().cancel(job)
    return jsonify(_describe(job)), 202


def _error(status: int, reason: str) -> tuple[Response, int]:
    return jsonify(error=reason, status=status), status


def create_app(config: WebConfig | Mapping[str, Any] | None = None, predictor: Predictor | None = None) -> Flask:
    """Build the web application; the model is loaded once here and shared by all jobs.

    Args:
        config: :class:`WebConfig` or a dict of its attribute names.
        predictor: an already loaded model (default: loaded from ``config.checkpoint``).

    Returns:
        The Flask app; ``job_manager(app).shutdown()`` stops its workers.

    Raises:
        ValueError: bad settings, no checkpoint, or a checkpoint without rare classes
            (:class:`~rareseg.datamodules.DataError`, one line).
    """
    settings = config if isinstance(config, WebConfig) else WebConfig.from_mapping(config or {})
    if predictor is None:
        if settings.checkpoint is None:
            raise ValueError("create_app: give a checkpoint in the settings or a loaded predictor")
        predictor = load_predictor(settings.checkpoint, device=settings.device, precision=settings.precision)
    predictor.select_rare_classes(None)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_upload_bytes
    app.extensions[EXTENSION] = JobManager(predictor, settings, app.logger)
    if settings.token is not None:
        require_token(app, settings.token)
    app.register_blueprint(page)
    app.register_blueprint(api)

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(err: RequestEntityTooLarge) -> tuple[Response, int]:
        return _error(413, f"upload too large: the limit is {settings.max_upload_mb:g} MB")

    @app.errorhandler(JobStateError)
    def conflict(err: JobStateError) -> tuple[Response, int]:
        return _error(409, str(err))

    @app.errorhandler(InternalServerError)
    def internal(err: InternalServerError) -> tuple[Response, int]:
        return _error(500, "internal server error (see the server log)")

    @app.errorhandler(HTTPException)
    def http_error(err: HTTPException) -> tuple[Response, int]:
        reason = err.description or err.name
        if isinstance(err, NotFound) and reason == NotFound.description:
            reason = f"no such page or API route: {request.path}"
        elif isinstance(err, MethodNotAllowed):
            reason = (
                f"{request.method} is not allowed on {request.path} (allowed: {', '.join(err.valid_methods or [])})"
            )
        response, status = _error(err.code or 500, reason)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="rareseg"'
        return response, status

    @app.after_request
    def security_headers(response: Response) -> Response:
        response.headers.update(SECURITY_HEADERS)
        if request.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
