"""SIGINT and SIGTERM during long commands: one line, exit 130/143, no staging folder, no final-named partial file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from tests.inference.helpers import write_geotiff

EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


def _interrupt(argv: list[str], ready: Callable[[str], bool], signum: int, tmp_path: Path) -> tuple[int, str]:
    """Run ``rareseg argv``, send ``signum`` once ``ready(stderr so far)`` holds; return the exit status and stderr."""
    log = tmp_path / "stderr.txt"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled"}
    with open(log, "w") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-c", "from rareseg.cli import main; main()", *argv],
            stdout=subprocess.DEVNULL,
            stderr=stderr,
            env=env,
        )
        deadline = time.monotonic() + 300
        while not ready(log.read_text()):
            assert process.poll() is None, f"finished before the signal: {log.read_text()}"
            assert time.monotonic() < deadline, "never became ready"
            time.sleep(0.02)
        process.send_signal(signum)
        status = process.wait(timeout=120)
    return status, log.read_text()


def _only_line(stderr: str) -> str:
    """The last line of stderr, checked to be the only thing after any progress output (no traceback)."""
    assert "Traceback" not in stderr, stderr
    return stderr.strip().splitlines()[-1].split("\r")[-1].strip()


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_infer_interrupted_leaves_nothing(checkpoint_path: Path, tmp_path: Path, signum: int) -> None:
    rng = np.random.default_rng(0)
    scene = write_geotiff(tmp_path / "scene.tif", rng.integers(1, 600, (3, 640, 640), dtype=np.uint16))
    out = tmp_path / "out"
    argv = ["infer", "--checkpoint", str(checkpoint_path), "--input", str(scene), "--out", str(out)]
    argv += ["--tile", "64", "--overlap", "16", "--batch-size", "1", "--quiet"]
    staged = lambda _: out.is_dir() and any(out.iterdir())  # noqa: E731 - the staging folder exists: the pass runs
    status, stderr = _interrupt(argv, staged, signum, tmp_path)
    assert status == EXIT[signum]
    name = signal.Signals(signum).name
    assert _only_line(stderr) == f"rareseg infer: interrupted ({name}); unfinished outputs were removed"
    assert list(out.iterdir()) == []


@pytest.mark.slow
def test_synth_terminated_leaves_nothing(tmp_path: Path) -> None:
    parent = tmp_path / "data"
    argv = ["synth", "--out", str(parent / "root"), "--scenes", "6", "--size", "512"]
    status, stderr = _interrupt(argv, lambda _: parent.is_dir() and any(parent.iterdir()), signal.SIGTERM, tmp_path)
    assert status == 143
    assert _only_line(stderr) == "rareseg synth: interrupted (SIGTERM); unfinished outputs were removed"
    assert list(parent.iterdir()) == []


@pytest.mark.slow
def test_evaluate_interrupted_writes_no_report(checkpoint_path: Path, synth_root: Path, tmp_path: Path) -> None:
    out = tmp_path / "evaluation"
    argv = ["evaluate", "--checkpoint", str(checkpoint_path), "--data-root", str(synth_root), "--split", "train"]
    argv += ["--out", str(out), "--tile", "32", "--overlap", "8", "--batch-size", "1"]
    status, stderr = _interrupt(argv, lambda text: "evaluate train" in text, signal.SIGINT, tmp_path)
    assert status == 130
    assert _only_line(stderr) == "rareseg evaluate: interrupted (SIGINT); unfinished outputs were removed"
    assert not out.exists() or list(out.iterdir()) == []
