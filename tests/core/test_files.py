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
