"""Tests for rareseg.web.command: ``rareseg serve``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path

import pytest

from rareseg.cli import TOOLS, main
from rareseg.web.command import is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("localhost", True),
        ("::1", True),
        ("127.0.0.2", True),
        ("0.0.0.0", False),
        ("192.168.1.5", False),
        ("example.org", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_serve_is_a_rareseg_tool_with_documented_flags(capsys: pytest.CaptureFixture[str]) -> None:
    assert "serve" in TOOLS
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--help"])
    assert exit_info.value.code == 0
    help_text = capsys.readouterr().out
    for flag in ("--checkpoint", "--host", "--port", "--max-upload-mb", "--jobs-dir", "--workers", "--device"):
        assert flag in help_text
    assert "127.0.0.1" in help_text and "1024" in help_text


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--workers", "0"], "workers must be >= 1, got 0"),
        (["--port", "70000"], r"--port must be in \[0, 65535\], got 70000"),
    ],
)
def test_bad_flags_exit_with_a_usage_error(
    arguments: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", "x.ckpt", *arguments])
    assert exit_info.value.code == 2
    assert re.search(message, capsys.readouterr().err)


def test_a_missing_checkpoint_is_a_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", str(tmp_path / "missing.ckpt")])
    assert exit_info.value.code == f"rareseg: error: {tmp_path / 'missing.ckpt'}: checkpoint not found"


TOKEN = "lab-token-0123456789abcdef"


def start_server(checkpoint: Path, *arguments: str, token_variable: str | None = None) -> subprocess.Popen[str]:
    """``rareseg serve --port 0 --device cpu ARGUMENTS`` in a subprocess with Python's Ctrl+C handler."""
    # A test run started in the background by a shell without job control (`make test &`) inherits
    # SIGINT ignored, and so would the server: give it Python's Ctrl+C handler, as a terminal would.
    # SIGUSR1 dumps every thread's stack to stderr: the diagnosis if the server ever fails to stop.
    launcher = (
        "import faulthandler, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "faulthandler.register(signal.SIGUSR1, all_threads=True); from rareseg.cli import main; main()"
    )
    command = [
        sys.executable,
        "-u",
        "-c",
        launcher,
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        "0",
        "--device",
        "cpu",
        *arguments,
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    env.pop("RARESEG_TOKEN", None)
    if token_variable is not None:
        env["RARESEG_TOKEN"] = token_variable
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def stop_server(server: subprocess.Popen[str], signum: int) -> tuple[str, str]:
    """Send ``signum``, wait up to 30 s for the exit; returns the rest of stdout and stderr."""
    server.send_signal(signum)
    deadline = time.monotonic() + 30
    while server.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    if server.poll() is None:
        server.send_signal(signal.SIGUSR1)
        time.sleep(2)
        server.kill()
        pytest.fail(
            f"rareseg serve did not stop within 30 s of {signum}; its threads:\n" + server.communicate()[1][-6000:]
        )
    return server.communicate()


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, Message, bytes]:
    """Status, headers (names in any case) and body of a GET (4xx/5xx answers included)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=30) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers, err.read()


SERVING = re.compile(r"rareseg serve: (http://127\.0\.0\.1:\d+/) \(jobs in (.+)\); Ctrl\+C stops")


@pytest.mark.parametrize(("signum", "given_jobs_dir"), [(signal.SIGINT, True), (signal.SIGTERM, False)])
def test_serve_runs_on_waitress_and_stops_cleanly_on_ctrl_c_or_sigterm(
    web_checkpoint: Path, tmp_path: Path, signum: int, given_jobs_dir: bool
) -> None:
    arguments = ["--jobs-dir", str(tmp_path / "jobs")] if given_jobs_dir else []
    server = start_server(web_checkpoint, *arguments)
    try:
        line = server.stdout.readline()
        serving = SERVING.match(line)
        assert serving, line + server.stderr.read()
        url, jobs_dir = serving.group(1), Path(serving.group(2))
        if given_jobs_dir:
            assert jobs_dir == tmp_path / "jobs"
        else:
            assert jobs_dir.name.startswith("rareseg-web-") and jobs_dir.is_dir()
        status, headers, body = get(url + "api/config")
        assert status == 200 and json.loads(body)["checkpoint"] == "model.ckpt"
        assert headers["Server"] == "waitress"  # not werkzeug's development server
        status, _, body = get(url)
        assert status == 200 and b"Upload LISS-IV image" in body
        (jobs_dir / ("J" * 22)).mkdir()  # a job's folder, with a file in it
        (jobs_dir / ("J" * 22) / "mask.tif").write_bytes(b"x")
        out, err = stop_server(server, signum)
        assert server.returncode == 0, err
        assert out == "rareseg serve: stopping\n"
        assert "Traceback" not in err
        assert jobs_dir.is_dir() is given_jobs_dir  # a temporary jobs folder is removed, a given one kept
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


def test_serve_on_a_network_address_requires_the_token_on_every_route(web_checkpoint: Path, tmp_path: Path) -> None:
    server = start_server(web_checkpoint, "--host", "0.0.0.0", token_variable=TOKEN)
    try:
        line = server.stdout.readline()
        serving = re.match(r"rareseg serve: http://0\.0\.0\.0:(\d+)/ \(jobs in .+\); Ctrl\+C stops", line)
        assert serving, line + server.stderr.read()
        assert server.stdout.readline().startswith("rareseg serve: open the page once as http://0.0.0.0:")
        url = f"http://127.0.0.1:{serving.group(1)}/"
        for path in ("", "static/app.js", "api/config", "api/jobs/AAAAAAAAAAAAAAAAAAAAAA/files/mask.tif"):
            status, headers, body = get(url + path)
            assert status == 401 and headers["WWW-Authenticate"] == 'Bearer realm="rareseg"', path
            assert json.loads(body)["status"] == 401
        status, _, body = get(url + "api/config", {"Authorization": f"Bearer {TOKEN}"})
        assert status == 200 and json.loads(body)["rare_classes"] == ["water", "wetland"]
        out, err = stop_server(server, signal.SIGINT)
        assert server.returncode == 0
        assert err.splitlines()[0] == (
            "rareseg serve: warning: listening on 0.0.0.0: other machines can reach this server; "
            "every request needs the access token"
        )
        assert TOKEN not in out + err
    finally:
        if server.poll() is None:
            server.kill()
            server.communicate()


@pytest.mark.parametrize(
    ("arguments", "variable", "message"),
    [
        (["--host", "0.0.0.0"], None, "--host 0.0.0.0 lets other machines connect: give an access token with --token"),
        (["--host", "192.168.1.5"], "", "--host 192.168.1.5 lets other machines connect: give an access token"),
        (["--host", "0.0.0.0"], "short", "the access token must be at least 16 printable characters"),
        (["--token", "short"], None, "the access token must be at least 16 printable characters"),
        (["--max-job-age", "0"], None, "max_job_age_hours must be > 0, got 0"),
        (["--threads", "0"], None, "--threads must be >= 1, got 0"),
    ],
)
def test_serve_refuses_an_open_network_server_and_bad_settings(
    arguments: list[str],
    variable: str | None,
    message: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("RARESEG_TOKEN", raising=False)
    if variable is not None:
        monkeypatch.setenv("RARESEG_TOKEN", variable)
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", "--checkpoint", "x.ckpt", *arguments])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("rareseg serve: error: ") and message in error
