"""Real-browser test of the page: Debian's Chromium driven by Playwright against a live server."""

from __future__ import annotations

import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rasterio
from flask import Flask
from werkzeug.serving import make_server

from rareseg.inference import Predictor
from rareseg.synth.scene import generate_scene, scene_transform, write_scene
from rareseg.web import job_manager
from tests.web.helpers import make_app

CHROMIUM = shutil.which("chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
IMAGES = ["img-input", "img-mask", "img-prob", "img-topk"]
IMAGES_LOADED = (
    f"() => {IMAGES}.every(id => {{ const img = document.getElementById(id); "
    "return img.complete && img.naturalWidth > 0; })"
)

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not on PATH (apt-get install chromium)")


#: Access token of :func:`guarded_server`.
TOKEN = "browser-token-0123456789"


def serve(app: Flask) -> Iterator[str]:
    """Serve ``app`` with werkzeug on a free port of 127.0.0.1, in a thread, until the generator is closed."""
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join()
    job_manager(app).shutdown()


@pytest.fixture()
def live_server(predictor: Predictor, tmp_path: Path) -> Iterator[str]:
    """The app on a free port of 127.0.0.1."""
    yield from serve(make_app(predictor, tmp_path / "jobs"))


@pytest.fixture()
def guarded_server(predictor: Predictor, tmp_path: Path) -> Iterator[str]:
    """The app with the access token :data:`TOKEN` on a free port of 127.0.0.1."""
    yield from serve(make_app(predictor, tmp_path / "jobs", token=TOKEN))


@pytest.fixture()
def synthetic_scene(tmp_path: Path) -> Path:
    """A new 256 px LISS-IV-like scene written by rareseg.synth."""
    path = tmp_path / "upload" / "delta.tif"
    path.parent.mkdir()
    write_scene(generate_scene(256, seed=21), path, tmp_path / "upload" / "delta_mask.tif", scene_transform(0, 256))
    return path


def set_range(page: object, selector: str, value: float) -> None:
    """Move a range input the way a user does: ``input`` events while dragging, ``change`` on release."""
    page.eval_on_selector(
        selector,
        "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); el.dispatchEvent(new Event('change')); }",
        str(value),
    )


def test_upload_run_rerender_and_download_in_chromium(live_server: str, synthetic_scene: Path, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    outside: list[str] = []
    errors: list[str] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True)
            page.on(
                "request", lambda request: None if request.url.startswith(live_server) else outside.append(request.url)
            )
            page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.goto(live_server + "/")
            page.wait_for_selector("body[data-status=ready]")
            assert page.locator(".rare-row").count() == 2
            assert page.input_value("#threshold-1") == "0.3"  # wetland's calibrated threshold

            page.set_input_files("#image-input", str(synthetic_scene))
            assert "delta.tif" in page.inner_text("#drop-text")
            set_range(page, "#threshold-0", 0.4)
            page.fill("#topk", "5")
            page.click("#run")
            page.wait_for_selector("body[data-status=done]", timeout=60_000)
            page.wait_for_function(IMAGES_LOADED)
            first_mask = page.get_attribute("#img-mask", "src")
            first_png = page.request.get(live_server + first_mask).body()
            assert page.locator("#legend tbody tr").count() == 6
            assert "5 % of valid pixels" in page.inner_text("#topk-info")
            page.screenshot(path=str(tmp_path / "results.png"), full_page=True)

            set_range(page, "#threshold-1", 0.05)
            page.wait_for_selector("#results[data-version='2']", timeout=30_000)
            page.wait_for_function(IMAGES_LOADED)
            second_mask = page.get_attribute("#img-mask", "src")
            assert second_mask != first_mask
            assert page.request.get(live_server + second_mask).body() != first_png
            assert "p ≥ 0.05" in page.inner_text("#legend")
            set_range(page, "#compare", 30)
            assert page.eval_on_selector("#img-mask", "img => img.style.opacity") == "0.3"
            page.screenshot(path=str(tmp_path / "rerendered.png"), full_page=True)

            with page.expect_download() as download_info:
                page.click("#download-mask-tif")
            download = download_info.value
            assert download.suggested_filename == "delta_mask.tif"
            downloaded = tmp_path / "downloaded.tif"
            download.save_as(downloaded)

            page.set_input_files(
                "#image-input", files=[{"name": "notes.txt", "mimeType": "text/plain", "buffer": b"not an image"}]
            )
            page.click("#run")
            page.wait_for_selector("#message:not([hidden])")
            assert page.inner_text("#message") == "notes.txt: not a GeoTIFF (it cannot be read as a raster image)"
            page.screenshot(path=str(tmp_path / "error.png"), full_page=True)
        finally:
            browser.close()
    with rasterio.open(downloaded) as mask, rasterio.open(synthetic_scene) as source:
        assert (mask.crs, mask.transform, mask.shape) == (source.crs, source.transform, source.shape)
        assert mask.crs.to_epsg() == 32644
        values = mask.read(1)
    assert set(np.unique(values)) <= set(range(6)) | {255} and (values == 5).any()
    assert outside == []
    assert [error for error in errors if "400" not in error] == []  # the rejected upload logs its 400 response
    assert all((tmp_path / name).stat().st_size > 10_000 for name in ("results.png", "rerendered.png", "error.png"))


def test_the_page_opens_with_the_token_once_and_then_works_from_its_cookie(guarded_server: str) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            assert page.goto(guarded_server + "/").status == 401
            assert "access token missing or wrong" in page.inner_text("body")
            response = page.goto(f"{guarded_server}/?token={TOKEN}")
            assert response.status == 200 and page.url == guarded_server + "/"  # the token left the address bar
            page.wait_for_selector("body[data-status=ready]")
            assert page.locator(".rare-row").count() == 2
            assert page.request.get(guarded_server + "/api/config").status == 200  # the cookie carries it
            other = browser.new_page()  # a new context: no cookie
            assert other.request.get(guarded_server + "/api/config").status == 401
        finally:
            browser.close()
