"""Catalogue of bad web API requests: each gets its status, one line naming the field or file, and changes nothing.

The app needs an access token, so every request below carries it except the ones about the token.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from rareseg.inference import Predictor
from rareseg.web import job_manager
from tests.web.helpers import make_app, truncated_copy, upload, wait_for, write_tiff

TOKEN = "catalogue-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
#: Upload limit of the app, small enough to exceed cheaply, large enough for the 256 px scene.
MAX_UPLOAD_MB = 1.0


@dataclass(frozen=True)
class Served:
    """The app, a finished job of it, and the files the catalogue uploads."""

    app: Flask
    job_id: str
    jobs_dir: Path
    files: Path
    scene: Path


@pytest.fixture(scope="module")
def served(predictor: Predictor, scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("bad-requests")
    app = make_app(predictor, root / "jobs", token=TOKEN, max_upload_mb=MAX_UPLOAD_MB, tile=256)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = BEARER["Authorization"]
    response = upload(client, scene, name="scene.tif")
    assert response.status_code == 202, response.get_json()
    job_id = wait_for(client, response.get_json()["id"])["id"]
    files = root / "files"
    files.mkdir()
    (files / "notes.txt").write_text("field notes, not an image\n")
    (files / "empty.tif").write_bytes(b"")
    truncated_copy(scene, files / "truncated.tif")
    write_tiff(files / "four_bands.tif", np.ones((4, 32, 32), dtype=np.uint16))
    (files / "huge.tif").write_bytes(b"II*\x00" + bytes(int(1.5 * MAX_UPLOAD_MB * 2**20)))
    yield Served(app, job_id, root / "jobs", files, scene)
    job_manager(app).shutdown()


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with the SHA-256 of its bytes."""
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def post_file(name: str, **fields: Any) -> Callable[[FlaskClient, Served], TestResponse]:
    def send(client: FlaskClient, served: Served) -> TestResponse:
        data: dict[str, Any] = dict(fields)
        data["image"] = (io.BytesIO((served.files / name).read_bytes()), name)
        return client.post("/api/jobs", data=data, content_type="multipart/form-data", headers=BEARER)

    return send


def post_scene(**fields: Any) -> Callable[[FlaskClient, Served], TestResponse]:
    def send(client: FlaskClient, served: Served) -> TestResponse:
        data: dict[str, Any] = dict(fields)
        data["image"] = (io.BytesIO(served.scene.read_bytes()), "scene.tif")
        return client.post("/api/jobs", data=data, content_type="multipart/form-data", headers=BEARER)

    return send


def render(
    body: str, content_type: str = "application/json", path: str = "/api/jobs/{job}/render"
) -> Callable[[FlaskClient, Served], TestResponse]:
    def send(client: FlaskClient, served: Served) -> TestResponse:
        return client.post(path.format(job=served.job_id), data=body, content_type=content_type, headers=BEARER)

    return send


def call(
    method: str, path: str, headers: dict[str, str] | None = None
) -> Callable[[FlaskClient, Served], TestResponse]:
    def send(client: FlaskClient, served: Served) -> TestResponse:
        return client.open(
            path.format(job=served.job_id), method=method, headers=BEARER if headers is None else headers
        )

    return send


CATALOGUE = [
    # uploads
    ("no-file", call("POST", "/api/jobs"), 400, "no file in the form field 'image'"),
    ("json-upload", render('{"image": "scene.tif"}', path="/api/jobs"), 400, "no file in the form field 'image'"),
    ("text-file", post_file("notes.txt"), 400, "notes.txt: not a GeoTIFF (it cannot be read as a raster image)"),
    ("empty-file", post_file("empty.tif"), 400, "empty.tif: not a GeoTIFF (it cannot be read as a raster image)"),
    ("truncated", post_file("truncated.tif"), 400, "truncated.tif: corrupt or truncated GeoTIFF"),
    ("four-bands", post_file("four_bands.tif"), 400, "four_bands.tif: has 4 bands, the model expects 3"),
    ("too-large", post_file("huge.tif"), 413, "upload too large: the limit is 1 MB"),
    ("unknown-field", post_scene(thresh="0.3"), 400, "unknown field 'thresh' (known fields: rare_classes, threshold"),
    ("threshold-text", post_scene(threshold="high"), 400, "threshold must be a number in [0, 1], got 'high'"),
    ("threshold-nan", post_scene(threshold="nan"), 400, "threshold must be a number in [0, 1], got 'nan'"),
    ("empty-classes", post_scene(rare_classes=" , "), 400, "rare_classes: give at least one rare class name"),
    ("unknown-class", post_scene(rare_classes="forest"), 400, "unknown rare class 'forest'"),
    ("repeated-field", post_scene(topk=["5", "6"]), 400, "topk: given 2 times, give it once"),
    ("topk-zero", post_scene(topk="0"), 400, "topk must be a number in (0, 100], got '0'"),
    # re-rendering
    ("malformed-json", render('{"threshold": 0.2'), 400, "request body: malformed JSON (Expecting ',' delimiter"),
    ("json-array", render("[0.2]"), 400, "request body: expected a JSON object with the fields rare_classes"),
    ("json-boolean", render('{"threshold": true}'), 400, "threshold must be a number, a string or an object"),
    ("json-out-of-range", render('{"topk": 101}'), 400, "topk must be a number in (0, 100], got '101'"),
    ("json-no-class", render('{"rare_classes": []}'), 400, "rare_classes: give at least one rare class name"),
    ("json-unknown-field", render('{"colour": "red"}'), 400, "unknown field 'colour'"),
    ("plain-text-body", render("threshold=0.2", "text/plain"), 400, "request body: send the fields as JSON"),
    ("form-threshold", render("threshold=2", "application/x-www-form-urlencoded"), 400, "threshold must be a number"),
    # access, jobs and files
    ("no-token", call("GET", "/api/jobs/{job}", {}), 401, "access token missing or wrong"),
    ("wrong-token", call("GET", "/api/config", {"Authorization": "Bearer not-the-token-123456"}), 401, "access token"),
    ("upload-without-token", call("POST", "/api/jobs", {}), 401, "access token missing or wrong"),
    ("unknown-job", call("GET", "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA"), 404, "unknown job"),
    ("render-unknown-job", call("POST", "/api/jobs/AAAAAAAAAAAAAAAAAAAAAA/render"), 404, "unknown job"),
    ("unknown-file", call("GET", "/api/jobs/{job}/files/input.tif"), 404, "no such file in this job (available:"),
    ("path-traversal", call("GET", "/api/jobs/{job}/files/..%2f..%2fetc%2fpasswd"), 404, "no such page or API route"),
    ("cancel-finished", call("POST", "/api/jobs/{job}/cancel"), 409, "is already done"),
    ("wrong-method", call("GET", "/api/jobs/{job}/render"), 405, "GET is not allowed on /api/jobs/"),
]


@pytest.mark.parametrize(("send", "status", "message"), [case[1:] for case in CATALOGUE], ids=[c[0] for c in CATALOGUE])
def test_bad_request_gets_its_status_one_line_and_changes_nothing(
    served: Served, send: Callable[[FlaskClient, Served], TestResponse], status: int, message: str
) -> None:
    client = served.app.test_client()
    before = snapshot(served.jobs_dir)
    response = send(client, served)
    body = response.get_json()
    assert (response.status_code, body["status"]) == (status, status), body
    assert message in body["error"] and "\n" not in body["error"], body["error"]
    assert str(served.jobs_dir) not in body["error"]  # server paths never leak
    assert snapshot(served.jobs_dir) == before  # nothing half-written, nothing changed
    job = client.get(f"/api/jobs/{served.job_id}", headers=BEARER).get_json()
    assert (job["status"], job["version"]) == ("done", 1)
    assert [path.name for path in served.jobs_dir.iterdir()] == [served.job_id]


def test_the_catalogue_holds_at_least_ten_distinct_bad_requests() -> None:
    assert len({case[0] for case in CATALOGUE}) == len(CATALOGUE) >= 10
