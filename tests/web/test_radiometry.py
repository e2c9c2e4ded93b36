"""The web page's radiometry warning and input scale: API (Flask client) and page (Chromium)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from flask.testing import FlaskClient

from rareseg.inference import Predictor
from tests.web.helpers import make_app, upload, wait_for
from tests.web.test_browser import CHROMIUM, CHROMIUM_ARGS, serve


@pytest.fixture(scope="module")
def scaled_scene(scene: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web tests' synthetic scene with every band x 10 (reflectance-like scale)."""
    path = tmp_path_factory.mktemp("radiometry") / "x10.tif"
    with rasterio.open(scene) as src:
        image, profile = src.read(), src.profile
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image * 10)
    return path


def _mask(client: FlaskClient, job_id: str) -> bytes:
    return client.get(f"/api/jobs/{job_id}/files/mask.tif").data


def _summary(client: FlaskClient, job_id: str) -> dict:
    return client.get(f"/api/jobs/{job_id}/files/summary.json").get_json()


def _run(client: FlaskClient, path: Path, name: str, **fields: str) -> str:
    response = upload(client, path, name=name, **fields)
    assert response.status_code == 202, response.get_json()
    job_id = response.get_json()["id"]
    assert wait_for(client, job_id)["status"] == "done"
    return job_id


def _pixels(data: bytes) -> np.ndarray:
    with rasterio.MemoryFile(data) as memory, memory.open() as src:
        return src.read(1)


def test_the_warning_names_the_upload_and_the_input_scale_field_fixes_it(
    client: FlaskClient, scene: Path, scaled_scene: Path
) -> None:
    reference = _run(client, scene, "plain.tif")
    assert _summary(client, reference)["radiometry"]["warning"] is None
    scaled = _run(client, scaled_scene, "reflectance.tif")
    warning = _summary(client, scaled)["radiometry"]["warning"]
    assert warning.startswith("reflectance.tif: the radiometry does not match") and "--input-scale 0.1" in warning
    assert "input.tif" not in warning  # no server path
    for scale in ("0.1", "auto"):
        fixed = _run(client, scaled_scene, "reflectance.tif", input_scale=scale)
        record = _summary(client, fixed)["radiometry"]
        assert record["input_scale"] == pytest.approx(0.1)
        np.testing.assert_array_equal(_pixels(_mask(client, fixed)), _pixels(_mask(client, reference)))


def test_a_bad_input_scale_is_a_400(client: FlaskClient, scene: Path) -> None:
    response = upload(client, scene, input_scale="ten")
    assert response.status_code == 400
    assert response.get_json()["error"] == "input scale must be a positive number or auto, got 'ten'"


@pytest.fixture()
def live_server(predictor: Predictor, tmp_path: Path) -> Iterator[str]:
    yield from serve(make_app(predictor, tmp_path / "jobs"))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (apt-get install chromium)")
def test_the_page_shows_the_warning_beside_the_result(live_server: str, scaled_scene: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(live_server + "/")
            page.wait_for_selector("body[data-status=ready]")
            assert page.input_value("#input-scale") == "1"
            page.set_input_files("#image-input", str(scaled_scene))
            page.click("#run")
            page.wait_for_selector("body[data-status=done]", timeout=60_000)
            page.wait_for_selector("#radiometry-warning:not([hidden])")
            text = page.inner_text("#radiometry-warning")
            assert text.startswith("Radiometry: x10.tif: the radiometry does not match")
            assert "--input-scale 0.1" in text
            assert page.is_visible("#results") and page.is_visible("#img-mask")
            page.screenshot(path=str(tmp_path / "warning.png"), full_page=True)

            page.fill("#input-scale", "0.1")
            page.click("#run")
            page.wait_for_selector("body[data-status=done]", timeout=60_000)
            page.wait_for_selector("#results:not([hidden])")
            assert page.is_hidden("#radiometry-warning")
        finally:
            browser.close()
    assert (tmp_path / "warning.png").stat().st_size > 10_000
