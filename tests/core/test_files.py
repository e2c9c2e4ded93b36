"""Tests for rareseg.core.files: write-then-rename of one file and of a staged set."""

from pathlib import Path

import pytest

from rareseg.core import files
from rareseg.core.files import publish, write_atomically


def test_write_atomically_replaces_and_a_failed_write_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "new" / "metrics.json"
    write_atomically(target, b"old")
    write_atomically(target, b"new")
    assert target.read_bytes() == b"new"

    def failing_replace(source: str, destination: Path) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(files.os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        write_atomically(target, b"half")
    assert target.read_bytes() == b"new" and sorted(p.name for p in target.parent.iterdir()) == ["metrics.json"]


def test_publish_moves_in_order_and_removes_the_staging_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    staging = tmp_path / ".staging"
    staging.mkdir()
    for name in ("a.tif", "summary.json"):
        (staging / name).write_text(name)
    moved = []
    replace = files.os.replace
    monkeypatch.setattr(
        files.os, "replace", lambda source, target: moved.append(Path(target).name) or replace(source, target)
    )
    outputs = publish(staging, tmp_path, ["a.tif", "summary.json"])
    assert moved == ["a.tif", "summary.json"] and not staging.exists()
    assert outputs == {"a.tif": tmp_path / "a.tif", "summary.json": tmp_path / "summary.json"}
    assert (tmp_path / "summary.json").read_text() == "summary.json"


def _dead_pid() -> int:
    import subprocess

    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_remove_stale_removes_dead_processes_staging_of_its_kind_only(tmp_path: Path) -> None:
    import os
    import subprocess

    dead = _dead_pid()
    live = subprocess.Popen(["sleep", "30"])
    try:
        for name in (
            f".rareseg-infer-{dead}-abc",
            f".rareseg-infer-{live.pid}-def",
            f".rareseg-infer-{os.getpid()}-ghi",
            f".rareseg-synth-root-{dead}-jkl",
            ".rareseg-infer-notapid",
        ):
            (tmp_path / name).mkdir()
            (tmp_path / name / "mask.tif").write_bytes(b"")
        (tmp_path / f".rareseg-part-metrics.json-{dead}-xyz.part").write_bytes(b"half")
        assert files.remove_stale(tmp_path, "infer") == [tmp_path / f".rareseg-infer-{dead}-abc"]
        assert files.remove_stale(tmp_path, "part-metrics.json") == [
            tmp_path / f".rareseg-part-metrics.json-{dead}-xyz.part"
        ]
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
            [
                f".rareseg-infer-{live.pid}-def",
                f".rareseg-infer-{os.getpid()}-ghi",
                f".rareseg-synth-root-{dead}-jkl",
                ".rareseg-infer-notapid",
            ]
        )
        # the output "root-2" of a live run is not the output "root" of process 2
        (tmp_path / f".rareseg-synth-root-2-{live.pid}-mno").mkdir()
        assert files.remove_stale(tmp_path, "synth-root") == [tmp_path / f".rareseg-synth-root-{dead}-jkl"]
        assert (tmp_path / f".rareseg-synth-root-2-{live.pid}-mno").is_dir()
    finally:
        live.kill()
        live.wait()


def test_staging_names_carry_the_process_id_and_a_new_run_sweeps_stale_ones(tmp_path: Path) -> None:
    import os

    stale = tmp_path / f".rareseg-infer-{_dead_pid()}-old"
    stale.mkdir()
    staging = files.staging_dir(tmp_path, "infer")
    assert staging.name.startswith(f".rareseg-infer-{os.getpid()}-") and staging.is_dir()
    assert not stale.exists()
    write_atomically(tmp_path / "metrics.json", b"{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == [staging.name, "metrics.json"]
