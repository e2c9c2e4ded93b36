"""Tests for rareseg.web.jobs: the worker pool, shared model, cancelling, failures and retention."""

from __future__ import annotations

import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from flask.testing import FlaskClient
from rasterio.errors import RasterioIOError
from torch import nn

from rareseg.datamodules import DataError
from rareseg.inference import Predictor, predict_scene
from rareseg.web import ARGMAX_THRESHOLD, SerialPredictor, job_manager, parse_options, render_outputs
from rareseg.web.jobs import INPUT_FILE
from tests.web.helpers import TILING, GatedNet, make_app, predictor_of, read_band, upload, wait_for

#: Constant probabilities of the gated network: cropland wins, water 0.3, wetland 0.1.
GATED_PROBS = [0.5, 0.05, 0.025, 0.025, 0.3, 0.1]


class CountingNet(nn.Module):
    """Zero logits; records the most forward passes ever running at the same time."""

    def __init__(self) -> None:
        super().__init__()
        self.lock = threading.Lock()
        self.active = 0
        self.most = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.active += 1
            self.most = max(self.most, self.active)
        time.sleep(0.01)
        with self.lock:
            self.active -= 1
        return torch.zeros(image.shape[0], 6, *image.shape[2:])


def test_serial_predictor_shares_the_model_and_runs_one_forward_at_a_time() -> None:
    net = CountingNet()
    plain = predictor_of(net)
    serial = SerialPredictor.sharing(plain)
    assert serial.model is plain.model and serial.class_names == plain.class_names and serial.rare_classes == (4, 5)
    tiles = np.ones((1, 3, 8, 8), dtype=np.float32)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: serial.predict(tiles)[0], range(12)))
    assert net.most == 1
    np.testing.assert_allclose(results[0][0, :, 0, 0], [1 / 6] * 6, rtol=1e-6)


def test_eight_simultaneous_jobs_all_finish_with_their_own_outputs(
    predictor: Predictor, synth_root: Path, tmp_path: Path
) -> None:
    app = make_app(predictor, tmp_path / "jobs", workers=2)
    scenes = sorted((synth_root / "images").glob("*.tif"))
    requests = [
        (scenes[i % 4], {"threshold": ["0.2", "water:0.6,wetland:0.25"][i // 4], "topk": str(2 + i)}) for i in range(8)
    ]
    start = threading.Barrier(len(requests))

    def submit(index: int) -> str:
        scene, fields = requests[index]
        client = app.test_client()
        start.wait()
        response = upload(client, scene, name=f"job{index}.tif", **fields)
        assert response.status_code == 202, response.get_json()
        return response.get_json()["id"]

    try:
        with ThreadPoolExecutor(len(requests)) as pool:
            ids = list(pool.map(submit, range(len(requests))))
        client = app.test_client()
        statuses = [wait_for(client, job_id, timeout=120) for job_id in ids]
    finally:
        job_manager(app).shutdown()
    assert len(set(ids)) == 8 and [s["status"] for s in statuses] == ["done"] * 8
    for index, (job_id, (scene, fields)) in enumerate(zip(ids, requests)):
        reference = tmp_path / f"reference{index}"
        predict_scene(
            predictor, scene, reference / "network", threshold=ARGMAX_THRESHOLD, topk=float(fields["topk"]), **TILING
        )
        render_outputs(
            reference / "network",
            reference,
            parse_options(fields, predictor, 10.0),
            preview_side=1024,
            summary_fields={},
        )
        job_dir = tmp_path / "jobs" / job_id
        for name in ("mask.tif", "rare_prob.tif", "saliency_topk.tif"):
            np.testing.assert_array_equal(read_band(job_dir / name), read_band(reference / name))
        summary = json.loads((job_dir / "summary.json").read_text())
        assert summary["input"] == f"job{index}.tif" and summary["topk"]["percent"] == float(fields["topk"])
        assert summary["classes"] == json.loads((reference / "summary.json").read_text())["classes"]
        assert not (job_dir / INPUT_FILE).exists()


def gated_app(tmp_path: Path, net: GatedNet, **settings: Any) -> tuple[Any, FlaskClient]:
    app = make_app(predictor_of(net), tmp_path / "jobs", **{"tile": 64, "overlap": 0, "batch_size": 1, **settings})
    return app, app.test_client()


def wait_until(condition: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def test_cancel_a_queued_and_a_running_job(scene: Path, tmp_path: Path) -> None:
    net = GatedNet(GATED_PROBS)
    app, client = gated_app(tmp_path, net, workers=1)
    try:
        running = upload(client, scene).get_json()["id"]
        queued = upload(client, scene).get_json()["id"]
        wait_until(lambda: net.calls == 1)
        assert client.get(f"/api/jobs/{queued}").get_json()["status"] == "queued"
        response = client.post(f"/api/jobs/{queued}/cancel")
        assert response.status_code == 202 and response.get_json()["status"] == "cancelled"
        response = client.post(f"/api/jobs/{running}/cancel")
        assert response.status_code == 202
        assert response.get_json()["status"] == "running" and response.get_json()["cancel_requested"]
        render = client.post(f"/api/jobs/{running}/render", data={"threshold": "0.2"})
        assert render.status_code == 409 and "only a finished job can be re-rendered" in render.get_json()["error"]
        net.gate.set()
        assert wait_for(client, running)["status"] == "cancelled"
        assert net.calls == 1  # stopped at the next batch: 16 tiles, one forward pass
        again = client.post(f"/api/jobs/{running}/cancel")
        assert again.status_code == 409 and again.get_json()["error"] == f"job {running} is already cancelled"
        for job_id in (running, queued):
            assert sorted(p.name for p in (tmp_path / "jobs" / job_id).iterdir()) == ["preview_input.png"]
            assert client.get(f"/api/jobs/{job_id}").get_json()["files"] == ["preview_input.png"]
    finally:
        net.gate.set()
        job_manager(app).shutdown()


def test_a_failing_job_reports_its_error_and_the_server_keeps_working(scene: Path, tmp_path: Path) -> None:
    net = GatedNet(GATED_PROBS, fail=True)
    net.gate.set()
    app, client = gated_app(tmp_path, net, tile=256)
    try:
        failed = wait_for(client, upload(client, scene).get_json()["id"])
        assert (failed["status"], failed["error"]) == ("failed", "internal error: RuntimeError: injected failure")
        assert failed["files"] == ["preview_input.png"]
        net.fail = False
        done = wait_for(client, upload(client, scene).get_json()["id"])
        assert done["status"] == "done" and done["error"] is None and done["progress"] == 1.0
        assert client.get("/api/config").status_code == 200
        # constant probabilities: cropland (0.5) wins until water's 0.3 reaches its threshold
        job_dir = tmp_path / "jobs" / done["id"]
        assert set(np.unique(read_band(job_dir / "mask.tif"))) == {0, 255}
        client.post(f"/api/jobs/{done['id']}/render", data={"threshold": "water:0.3"})
        assert set(np.unique(read_band(job_dir / "mask.tif"))) == {4, 255}
    finally:
        job_manager(app).shutdown()


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (
            lambda path: DataError(f"{path}: has 4 bands, the checkpoint expects 3"),
            "upload.tif: has 4 bands, the checkpoint expects 3",
        ),
        (
            lambda path: RasterioIOError(f"{path}: Read failed.\nmore detail"),
            "upload.tif: raster read or write failed, the upload may be corrupt or truncated (upload.tif: Read "
            "failed.)",
        ),
    ],
)
def test_job_errors_name_the_upload_not_server_paths(
    scene: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, error: Any, expected: str
) -> None:
    def broken_predict_scene(predictor: Predictor, image_path: Path, out_dir: Path, **options: Any) -> None:
        raise error(image_path)

    monkeypatch.setattr("rareseg.web.jobs.predict_scene", broken_predict_scene)
    app, client = gated_app(tmp_path, GatedNet(GATED_PROBS))
    try:
        status = wait_for(client, upload(client, scene, name="upload.tif").get_json()["id"])
    finally:
        job_manager(app).shutdown()
    assert (status["status"], status["error"]) == ("failed", expected)


def test_only_keep_jobs_finished_jobs_stay_on_disk(predictor: Predictor, scene: Path, tmp_path: Path) -> None:
    app = make_app(predictor, tmp_path / "jobs", keep_jobs=2, tile=256)
    client = app.test_client()
    try:
        ids = [wait_for(client, upload(client, scene).get_json()["id"])["id"] for _ in range(3)]
    finally:
        job_manager(app).shutdown()
    assert client.get(f"/api/jobs/{ids[0]}").status_code == 404
    assert [client.get(f"/api/jobs/{job_id}").get_json()["status"] for job_id in ids[1:]] == ["done", "done"]
    assert sorted(p.name for p in (tmp_path / "jobs").iterdir()) == sorted(ids[1:])


def test_finished_jobs_are_deleted_once_older_than_max_job_age(
    predictor: Predictor, scene: Path, tmp_path: Path
) -> None:
    app = make_app(predictor, tmp_path / "jobs", tile=256, max_job_age_hours=1.5 / 3600)
    client = app.test_client()
    try:
        job_id = wait_for(client, upload(client, scene).get_json()["id"])["id"]
        finished = time.monotonic()
        assert (tmp_path / "jobs" / job_id / "mask.tif").is_file()
        while client.get(f"/api/jobs/{job_id}").status_code == 200:
            assert time.monotonic() - finished < 30, "the job outlived its age"
            time.sleep(0.05)
        assert time.monotonic() - finished >= 1.4  # not before its age (less the 0.05 s polling step)
        assert list((tmp_path / "jobs").iterdir()) == []
    finally:
        job_manager(app).shutdown()


def test_job_folders_left_by_an_earlier_server_go_once_past_their_age(predictor: Predictor, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs"
    old, fresh = jobs / ("A" * 22), jobs / ("B" * 22)
    for folder in (old, fresh, jobs / "notes"):
        folder.mkdir(parents=True)
        (folder / "mask.tif").write_bytes(b"x")
    two_hours_ago = time.time() - 7200
    for path in (old, jobs / "notes"):
        os.utime(path, (two_hours_ago, two_hours_ago))
    app = make_app(predictor, jobs, max_job_age_hours=1.0)
    job_manager(app).shutdown()
    assert sorted(p.name for p in jobs.iterdir()) == sorted([fresh.name, "notes"])
