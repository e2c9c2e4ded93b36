"""Tests for rareseg.web.app: every endpoint and every bad input, through Flask's test client."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import matplotlib
import matplotlib.colors
import matplotlib.image
import numpy as np
import pytest
from flask.testing import FlaskClient
from rasterio.io import MemoryFile

from rareseg.datamodules import DataError
from rareseg.inference import Predictor
from rareseg.synth.scene import CLASSES
from rareseg.web import FILES, WebConfig, create_app, display_name, job_manager
from tests.web.helpers import (
    TILING,
    GatedNet,
    make_app,
    predictor_of,
    truncated_copy,
    upload,
    wait_for,
    write_tiff,
)

JOB_ID = re.compile(r"^[A-Za-z0-9_-]{22}$")


@pytest.fixture()
def done_job(client: FlaskClient, scene: Path) -> str:
    """Id of a finished job of the 256 px scene uploaded as ``my scene.tif`` (threshold 0.2, top-k 5 %)."""
    response = upload(client, scene, name="my scene.tif", threshold="0.2", rare_classes="water,wetland", topk="5")
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    assert wait_for(client, job_id)["status"] == "done"
    return job_id


def test_page_and_static_files_load_nothing_external(client: FlaskClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for text in (
        "Upload LISS-IV Image".lower(),
        "top-k saliency (%)",
        "segmentation mask",
        "rare-class probability map",
        ">run<",
    ):
        assert text in html.lower()
    assert "default-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    for asset in re.findall(r'(?:src|href)="([^"]+)"', html):
        assert asset.startswith("/static/"), asset
        response = client.get(asset)
        assert response.status_code == 200
        text = re.sub(r'xmlns="[^"]*"', "", response.get_data(as_text=True))  # an SVG namespace is a name, not a fetch
        assert not re.search(r"(https?:)?//[a-z0-9.-]+\.[a-z]{2,}", text, re.IGNORECASE), asset
        response.close()


def test_config_describes_the_checkpoint(client: FlaskClient) -> None:
    config = client.get("/api/config").get_json()
    assert [(c["id"], c["name"], c["rare"]) for c in config["classes"]] == [
        (i, name, rare) for i, name, _, rare in CLASSES
    ]
    assert [c["colour"] for c in config["classes"]] == [
        matplotlib.colors.to_hex(np.array(rgb) / 255) for _, _, rgb, _ in CLASSES
    ]
    assert config["rare_classes"] == ["water", "wetland"]
    assert config["thresholds"] == {"water": 0.5, "wetland": 0.3}
    assert config["threshold_sources"] == {"water": "default", "wetland": "checkpoint"}
    assert (config["topk"], config["bands"], config["max_upload_mb"], config["checkpoint"]) == (
        10.0,
        3,
        1024.0,
        "model.ckpt",
    )
    magma = matplotlib.colormaps["magma"]
    # the same 8-bit colours as preview_prob.png (magma with bytes=True)
    assert config["colorbar"] == [
        "#{:02x}{:02x}{:02x}".format(*magma(x, bytes=True)[:3]) for x in np.linspace(0, 1, 11)
    ]


def test_job_runs_and_serves_its_files(client: FlaskClient, scene: Path) -> None:
    response = upload(client, scene, name="my scene.tif", threshold="0.2", topk="5")
    assert response.status_code == 202
    job_id = response.get_json()["id"]
    assert JOB_ID.match(job_id) and response.headers["Location"] == f"/api/jobs/{job_id}"
    status = wait_for(client, job_id)
    assert (status["status"], status["progress"], status["error"], status["version"]) == ("done", 1.0, None, 1)
    assert status["files"] == list(FILES)
    assert status["options"] == {
        "rare_classes": ["water", "wetland"],
        "thresholds": {"water": 0.2, "wetland": 0.2},
        "threshold_source": "override",
        "topk": 5.0,
    }
    assert status["input"] == {"name": "my_scene.tif", "width": 256, "height": 256, "bands": 3, "crs": "EPSG:32644"}
    preview = client.get(f"/api/jobs/{job_id}/files/preview_mask.png")
    assert preview.mimetype == "image/png" and "attachment" not in preview.headers.get("Content-Disposition", "")
    assert preview.data[:8] == b"\x89PNG\r\n\x1a\n"
    mask = client.get(f"/api/jobs/{job_id}/files/mask.tif")
    assert mask.headers["Content-Disposition"] == "attachment; filename=my_scene_mask.tif"
    with MemoryFile(mask.data) as memory, memory.open() as src:
        assert (src.crs.to_string(), src.width, src.height, src.count) == ("EPSG:32644", 256, 256, 1)
    style = client.get(f"/api/jobs/{job_id}/files/mask.qml")  # saved beside my_scene_mask.tif, QGIS applies it
    assert style.headers["Content-Disposition"] == "attachment; filename=my_scene_mask.qml"
    assert b"<paletteEntry" in style.data and b'label="water"' in style.data
    download = client.get(f"/api/jobs/{job_id}/files/preview_prob.png?download")
    assert download.headers["Content-Disposition"] == "attachment; filename=my_scene_preview_prob.png"
    summary = client.get(f"/api/jobs/{job_id}/files/summary.json").get_json()
    assert summary["input"] == "my_scene.tif" and summary["checkpoint"] == "model.ckpt"
    assert sum(c["pixels"] for c in summary["classes"]) == summary["valid_pixels"]


def test_render_changes_the_outputs_without_a_new_job(client: FlaskClient, done_job: str) -> None:
    before = client.get(f"/api/jobs/{done_job}/files/preview_mask.png").data
    response = client.post(f"/api/jobs/{done_job}/render", data={"threshold": "0.95", "topk": "20"})
    assert response.status_code == 200
    status = response.get_json()
    assert (status["version"], status["options"]["thresholds"], status["options"]["topk"]) == (
        2,
        {"water": 0.95, "wetland": 0.95},
        20.0,
    )
    assert client.get(f"/api/jobs/{done_job}/files/preview_mask.png").data != before
    summary = client.get(f"/api/jobs/{done_job}/files/summary.json").get_json()
    assert [c["threshold"] for c in summary["rare_classes"]] == [0.95, 0.95] and summary["topk"]["percent"] == 20.0
    only_wetland = client.post(f"/api/jobs/{done_job}/render", data={"rare_classes": "wetland"}).get_json()
    assert only_wetland["options"]["thresholds"] == {"wetland": 0.95} and only_wetland["version"] == 3


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"threshold": "2"}, r"threshold must be a number in [0, 1], got '2'"),
        ({"rare_classes": "forest"}, "unknown rare class 'forest' (the checkpoint's rare classes: water, wetland)"),
        ({"rare_classes": ""}, "rare_classes: give at least one rare class name, got ''"),
        ({"topk": "0"}, "topk must be a number in (0, 100], got '0'"),
        ({"thresh": "0.2"}, "unknown field 'thresh' (known fields: rare_classes, threshold, topk)"),
        ({"threshold": ["0.2", "0.3"]}, "threshold: given 2 times, give it once"),
    ],
)
def test_render_rejects_bad_options(client: FlaskClient, done_job: str, fields: dict[str, str], message: str) -> None:
    response = client.post(f"/api/jobs/{done_job}/render", data=fields)
    assert response.status_code == 400 and response.get_json() == {"error": message, "status": 400}
    assert client.get(f"/api/jobs/{done_job}").get_json()["version"] == 1


@pytest.mark.parametrize(
    "content_type", ["application/json", "application/x-www-form-urlencoded", "multipart/form-data"]
)
def test_render_takes_the_same_fields_as_json_or_form_data(
    client: FlaskClient, done_job: str, content_type: str
) -> None:
    fields = {"rare_classes": "wetland", "threshold": "0.01", "topk": "20"}
    if content_type == "application/json":
        response = client.post(
            f"/api/jobs/{done_job}/render", json={"rare_classes": ["wetland"], "threshold": 0.01, "topk": 20}
        )
    else:
        response = client.post(f"/api/jobs/{done_job}/render", data=fields, content_type=content_type)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["options"] == {
        "rare_classes": ["wetland"],
        "thresholds": {"wetland": 0.01},
        "threshold_source": "override",
        "topk": 20.0,
    }
    summary = client.get(f"/api/jobs/{done_job}/files/summary.json").get_json()
    assert [(c["name"], c["threshold"]) for c in summary["rare_classes"]] == [("wetland", 0.01)]


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        ('{"threshold": 0.01', "application/json", "request body: malformed JSON (Expecting ',' delimiter: line 1"),
        ("", "application/json", "request body: malformed JSON (Expecting value: line 1 column 1 (char 0))"),
        ("[0.2]", "application/json", "request body: expected a JSON object with the fields rare_classes, threshold"),
        ('{"threshold": true}', "application/json", "threshold must be a number, a string or an object of"),
        ('{"threshold": 2}', "application/json", "threshold must be a number in [0, 1], got '2'"),
        ('{"threshold": NaN}', "application/json", "threshold must be a number in [0, 1], got 'nan'"),
        ('{"threshold": {"wetland": "x"}}', "application/json", "threshold must be a number, a string or an object"),
        ('{"rare_classes": []}', "application/json", "rare_classes: give at least one rare class name, got ''"),
        ('{"rare_classes": [4]}', "application/json", "rare_classes must be a string or an array of class names"),
        ('{"topk": null}', "application/json", "topk must be a number or a string, got null"),
        (
            '{"colour": "red"}',
            "application/json",
            "unknown field 'colour' (known fields: rare_classes, threshold, topk)",
        ),
        ("threshold=0.01", "text/plain", "request body: send the fields as JSON (application/json) or form data, not"),
    ],
    ids=[
        "truncated-json",
        "empty-json",
        "array",
        "boolean",
        "out-of-range",
        "nan",
        "per-class-string",
        "no-class",
        "class-ids",
        "null",
        "unknown-field",
        "text-plain",
    ],
)
def test_render_rejects_a_malformed_body_with_one_line(
    client: FlaskClient, done_job: str, body: str, content_type: str, message: str
) -> None:
    response = client.post(f"/api/jobs/{done_job}/render", data=body, content_type=content_type)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error.startswith(message) and "\n" not in error
    assert client.get(f"/api/jobs/{done_job}").get_json()["version"] == 1


def test_render_without_a_body_keeps_the_options(client: FlaskClient, done_job: str) -> None:
    response = client.post(f"/api/jobs/{done_job}/render")
    assert response.status_code == 200 and response.get_json()["version"] == 2
    assert response.get_json()["options"]["thresholds"] == {"water": 0.2, "wetland": 0.2}


def text_file(tmp: Path, scene: Path) -> Path:
    (tmp / "n").write_text("hello\n")
    return tmp / "n"


def png_file(tmp: Path, scene: Path) -> Path:
    matplotlib.image.imsave(tmp / "p.png", np.zeros((4, 4, 3)))
    return tmp / "p.png"


def truncated_file(tmp: Path, scene: Path) -> Path:
    return truncated_copy(scene, tmp / "t.tif")


def truncated_cog(tmp: Path, scene: Path) -> Path:
    return truncated_copy(scene, tmp / "c.tif", cog=True)


def four_band_file(tmp: Path, scene: Path) -> Path:
    return write_tiff(tmp / "4.tif", np.ones((4, 32, 32), dtype=np.uint16))


def the_scene(tmp: Path, scene: Path) -> Path:
    return scene


@pytest.mark.parametrize(
    ("make_file", "fields", "message"),
    [
        (None, {}, "no file in the form field 'image'"),
        (text_file, {}, "notes.txt: not a GeoTIFF (it cannot be read as a raster image)"),
        (png_file, {}, "notes.txt: not a GeoTIFF (it is a PNG image)"),
        (truncated_file, {}, "notes.txt: corrupt or truncated GeoTIFF (its header cannot be read)"),
        (truncated_cog, {}, "notes.txt: corrupt or truncated GeoTIFF (its pixels cannot be read)"),
        (four_band_file, {}, "notes.txt: has 4 bands, the model expects 3"),
        (the_scene, {"threshold": "-1"}, "threshold must be a number in [0, 1], got '-1'"),
        (
            the_scene,
            {"rare_classes": "cropland"},
            "unknown rare class 'cropland' (the checkpoint's rare classes: water, wetland)",
        ),
        (the_scene, {"topk": "abc"}, "topk must be a number in (0, 100], got 'abc'"),
    ],
    ids=["no-file", "text", "png", "truncated", "truncated-cog", "four-bands", "threshold", "class", "topk"],
)
def test_bad_uploads_get_400_and_leave_nothing_behind(
    client: FlaskClient,
    scene: Path,
    tmp_path: Path,
    make_file: Callable[[Path, Path], Path] | None,
    fields: dict[str, str],
    message: str,
) -> None:
    path = None if make_file is None else make_file(tmp_path, scene)
    response = upload(client, path, name="notes.txt", **fields)
    assert response.status_code == 400 and response.get_json() == {"error": message, "status": 400}
    assert list((tmp_path / "jobs").iterdir()) == []


def test_empty_file_field_is_rejected(client: FlaskClient) -> None:
    response = client.post("/api/jobs", data={"image": (b"", "")}, content_type="multipart/form-data")
    assert response.status_code == 400 and response.get_json()["error"] == "no file in the form field 'image'"


def test_too_large_uploads_get_413_json(predictor: Predictor, scene: Path, tmp_path: Path) -> None:
    app = make_app(predictor, tmp_path / "jobs", max_upload_mb=0.05)
    try:
        assert scene.stat().st_size > 0.05 * 2**20
        response = upload(app.test_client(), scene)
    finally:
        job_manager(app).shutdown()
    assert response.status_code == 413 and response.get_json() == {
        "error": "upload too large: the limit is 0.05 MB",
        "status": 413,
    }
    assert list((tmp_path / "jobs").iterdir()) == []


@pytest.mark.parametrize(
    ("method", "suffix"), [("get", ""), ("get", "/files/mask.tif"), ("post", "/render"), ("post", "/cancel")]
)
def test_unknown_jobs_are_404(client: FlaskClient, method: str, suffix: str) -> None:
    response = getattr(client, method)(f"/api/jobs/AAAAAAAAAAAAAAAAAAAAAA{suffix}")
    assert response.status_code == 404 and response.get_json() == {
        "error": "unknown job (it never existed or was deleted)",
        "status": 404,
    }


@pytest.mark.parametrize(
    "path",
    [
        "/api/jobs/{id}/files/../../etc/passwd",
        "/api/jobs/{id}/files/..%2f..%2fetc%2fpasswd",
        "/api/jobs/{id}/files/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
        "/api/jobs/{id}/files/%2e%2e",
        "/api/jobs/{id}/files/..",
        "/api/jobs/{id}/files/input.tif",
        "/api/jobs/{id}/files/network",
        "/api/jobs/{id}/files/%2fetc%2fpasswd",
        "/api/jobs/%2e%2e/files/summary.json",
        "/api/jobs/..%2f{id}/files/summary.json",
        "/api/jobs/{id}%2f..%2f..%2f/files/summary.json",
    ],
)
def test_path_traversal_gets_404(client: FlaskClient, done_job: str, path: str) -> None:
    response = client.get(path.format(id=done_job))
    assert response.status_code == 404 and response.mimetype == "application/json"
    assert b"root:" not in response.data


def test_uploaded_names_are_never_used_as_paths(client: FlaskClient, scene: Path, tmp_path: Path) -> None:
    job_id = upload(client, scene, name="../../etc/passwd").get_json()["id"]
    status = wait_for(client, job_id)
    assert status["status"] == "done" and status["input"]["name"] == "etc_passwd"
    assert [p.name for p in tmp_path.iterdir()] == ["jobs"]
    assert not list(tmp_path.rglob("*passwd*"))


@pytest.mark.parametrize(
    ("name", "shown"),
    [
        ("../../etc/passwd", "etc_passwd"),
        ("my scene.tif", "my_scene.tif"),
        ("", "upload.tif"),
        ("../..", "upload.tif"),
        (None, "upload.tif"),
    ],
)
def test_display_name(name: str | None, shown: str) -> None:
    assert display_name(name) == shown


def test_wrong_methods_and_routes_answer_json(client: FlaskClient, done_job: str) -> None:
    response = client.get(f"/api/jobs/{done_job}/render")
    assert response.status_code == 405 and response.get_json()["status"] == 405
    assert client.get("/api/nothing").get_json()["status"] == 404


def test_cancel_of_a_finished_job_is_a_conflict(client: FlaskClient, done_job: str) -> None:
    response = client.post(f"/api/jobs/{done_job}/cancel")
    assert response.status_code == 409 and response.get_json() == {
        "error": f"job {done_job} is already done",
        "status": 409,
    }


def test_create_app_loads_the_checkpoint_once(web_checkpoint: Path, tmp_path: Path) -> None:
    app = create_app({"checkpoint": web_checkpoint, "device": "cpu", "jobs_dir": tmp_path / "jobs", "workers": 1})
    try:
        manager = job_manager(app)
        assert manager.predictor.thresholds == {5: 0.3} and manager.predictor.checkpoint == web_checkpoint
        assert app.config["MAX_CONTENT_LENGTH"] == 1024 * 2**20
        assert app.test_client().get("/api/config").get_json()["checkpoint"] == "model.ckpt"
    finally:
        job_manager(app).shutdown()


def test_default_jobs_folder_is_a_new_temporary_one_removed_at_shutdown(predictor: Predictor, scene: Path) -> None:
    app = create_app(WebConfig(device="cpu", **TILING), predictor=predictor)
    manager = job_manager(app)
    try:
        assert (
            manager.jobs_dir.is_dir()
            and manager.jobs_dir.name.startswith("rareseg-web-")
            and not any(manager.jobs_dir.iterdir())
        )
        client = app.test_client()
        assert wait_for(client, upload(client, scene).get_json()["id"])["status"] == "done"
        assert any(manager.jobs_dir.iterdir())
    finally:
        manager.shutdown()
    assert not manager.jobs_dir.exists()


def test_a_given_jobs_folder_is_kept_at_shutdown(predictor: Predictor, tmp_path: Path) -> None:
    app = make_app(predictor, tmp_path / "jobs")
    job_manager(app).shutdown()
    assert (tmp_path / "jobs").is_dir()


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({}, "give a checkpoint in the settings or a loaded predictor"),
        ({"colour": "red"}, "unknown web settings: colour"),
        ({"checkpoint": "x.ckpt", "workers": 0}, "workers must be >= 1, got 0"),
        ({"checkpoint": "x.ckpt", "max_upload_mb": 0}, "max_upload_mb must be > 0, got 0"),
        ({"checkpoint": "x.ckpt", "keep_jobs": 0}, "keep_jobs must be >= 1, got 0"),
        ({"checkpoint": "x.ckpt", "tile": 8}, "tile must be >= 16 pixels, got 8"),
        ({"checkpoint": "x.ckpt", "topk": 0}, r"topk must be a percentage in \(0, 100\], got 0"),
        ({"checkpoint": "x.ckpt", "max_job_age_hours": 0}, "max_job_age_hours must be > 0, got 0"),
        ({"checkpoint": "x.ckpt", "token": "short"}, "the access token must be at least 16 printable characters"),
        ({"checkpoint": "x.ckpt", "token": "a token with spaces"}, "at least 16 printable characters without spaces"),
        ({"checkpoint": "missing.ckpt"}, "missing.ckpt: checkpoint not found"),
    ],
)
def test_bad_settings_fail_at_creation(settings: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        create_app(settings)


def test_a_checkpoint_without_rare_classes_is_refused() -> None:
    with pytest.raises(DataError, match="no rare classes"):
        create_app(WebConfig(), predictor=predictor_of(GatedNet([1 / 6] * 6), rare_classes=()))


def test_max_upload_bytes() -> None:
    assert WebConfig(max_upload_mb=1.5).max_upload_bytes == 1_572_864
