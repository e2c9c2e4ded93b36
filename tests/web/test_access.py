"""Tests for rareseg.web.access: with a token, every route of the app answers 401 without it."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient

from rareseg.inference import Predictor
from rareseg.web import job_manager
from rareseg.web.access import COOKIE, REFUSED
from tests.web.helpers import make_app, upload, wait_for

TOKEN = "s3cret-token-of-the-lab-0123"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture()
def guarded(predictor: Predictor, tmp_path: Path) -> Iterator[Flask]:
    """An app that needs :data:`TOKEN`."""
    application = make_app(predictor, tmp_path / "jobs", token=TOKEN)
    yield application
    job_manager(application).shutdown()


def every_route(app: Flask, job_id: str) -> list[tuple[str, str]]:
    """(method, URL) of every rule of the app, with ``job_id`` and real names filled in."""
    values = {"job_id": job_id, "name": "mask.tif", "filename": "app.js"}
    routes = []
    for rule in app.url_map.iter_rules():
        url = re.sub(r"<(?:[^:>]+:)?([^>]+)>", lambda match: values[match.group(1)], rule.rule)
        routes.extend((method, url) for method in sorted(rule.methods - {"HEAD", "OPTIONS"}))
    return routes


def test_every_route_answers_401_without_the_token(guarded: Flask, scene: Path, tmp_path: Path) -> None:
    client = guarded.test_client()
    job_id = upload_with_token(client, scene)
    routes = every_route(guarded, job_id)
    assert {url for _, url in routes} >= {
        "/",
        "/static/app.js",
        "/api/config",
        "/api/jobs",
        f"/api/jobs/{job_id}",
        f"/api/jobs/{job_id}/files/mask.tif",
        f"/api/jobs/{job_id}/render",
        f"/api/jobs/{job_id}/cancel",
    }
    wrong = [{}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Authorization": f"Basic {TOKEN}"}]
    for method, url in [*routes, ("GET", "/api/nothing"), ("GET", f"{'/api/jobs'}/{job_id}/files/../../x")]:
        for headers in wrong:
            response = client.open(url, method=method, headers=headers)
            assert response.status_code == 401, (method, url, headers)
            assert response.get_json() == {"error": REFUSED, "status": 401}
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="rareseg"'
    assert client.get(f"/?token={TOKEN}x").status_code == 401
    # nothing was run or changed by the refused requests
    status = client.get(f"/api/jobs/{job_id}", headers=BEARER).get_json()
    assert (status["status"], status["version"]) == ("done", 1)
    assert [p.name for p in (tmp_path / "jobs").iterdir()] == [job_id]


def upload_with_token(client: FlaskClient, scene: Path) -> str:
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {TOKEN}"
    try:
        response = upload(client, scene)
        assert response.status_code == 202, response.get_json()
        return wait_for(client, response.get_json()["id"])["id"]
    finally:
        del client.environ_base["HTTP_AUTHORIZATION"]


def test_bearer_header_and_url_token_open_every_api_route(guarded: Flask) -> None:
    client = guarded.test_client()
    assert client.get("/api/config", headers=BEARER).status_code == 200
    assert client.get(f"/api/config?token={TOKEN}").status_code == 200
    assert client.get("/static/app.js", headers=BEARER).status_code == 200


def test_the_page_trades_the_url_token_for_a_cookie(guarded: Flask) -> None:
    client = guarded.test_client()
    response = client.get(f"/?token={TOKEN}")
    assert response.status_code == 303 and response.headers["Location"] == "/"
    cookie = client.get_cookie(COOKIE)
    assert cookie.value == hashlib.sha256(TOKEN.encode()).hexdigest() and TOKEN not in response.headers["Set-Cookie"]
    assert cookie.http_only and cookie.same_site == "Strict" and cookie.path == "/"
    page = client.get("/")
    assert page.status_code == 200 and "Upload LISS-IV image" in page.get_data(as_text=True)
    assert client.get("/api/config").get_json()["rare_classes"] == ["water", "wetland"]
    client.set_cookie(COOKIE, TOKEN)  # the raw token is not what the cookie holds
    assert client.get("/api/config").status_code == 401


def test_without_a_token_the_app_is_open(client: FlaskClient) -> None:
    assert client.get("/api/config").status_code == 200 and client.get_cookie(COOKIE) is None
    assert client.get(f"/?token={TOKEN}").status_code == 200
