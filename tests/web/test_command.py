"""Tests for rareseg.web.command: ``rareseg serve``."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
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


def test_serve_answers_on_its_port_and_stops_on_ctrl_c(web_checkpoint: Path, tmp_path: Path) -> None:
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
        str(web_checkpoint),
        "--port",
        "0",
        "--device",
        "cpu",
        "--jobs-dir",
        str(tmp_path / "jobs"),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = server.stdout.readline()
        url = re.match(r"rareseg serve: (http://127\.0\.0\.1:\d+/) \(jobs in (.+)\); Ctrl\+C stops", line)
        assert url, line + server.stderr.read()
        assert url.group(2) == str(tmp_path / "jobs")
        with urllib.request.urlopen(url.group(1) + "api/config", timeout=30) as response:
            assert json.load(response)["checkpoint"] == "model.ckpt"
        with urllib.request.urlopen(url.group(1), timeout=30) as response:
            assert b"Upload LISS-IV image" in response.read()
        server.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        while server.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if server.poll() is None:
            server.send_signal(signal.SIGUSR1)
            time.sleep(2)
            server.kill()
            pytest.fail(
                "rareseg serve did not stop within 30 s of SIGINT; its threads:\n" + server.communicate()[1][-6000:]
            )
        assert server.returncode == 0
        assert server.stdout.read() == "rareseg serve: stopping\n"
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
