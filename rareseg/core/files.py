"""Write-then-rename: the one way rareseg writes files that others may read while they are written.

Files and folders in the making have hidden names that carry the writing process's id:
``.rareseg-<kind>-<pid>-<random>`` (:func:`staging_name`). A run that is killed outright (SIGKILL,
power loss) cannot remove its own; the next run of the same kind in the same folder removes
those whose process is gone (:func:`remove_stale`), and never one of a live process.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path

from rareseg.core.interrupt import signals_deferred

_PREFIX = ".rareseg-"


def staging_name(kind: str) -> str:
    """Prefix of this process's staging names of ``kind``: ``.rareseg-<kind>-<pid>-``."""
    return f"{_PREFIX}{kind}-{os.getpid()}-"


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale(folder: Path, kind: str) -> list[Path]:
    """Remove staging files and folders of ``kind`` in ``folder`` whose process no longer runs.

    Returns:
        The removed paths (none when ``folder`` does not exist).
    """
    pattern = re.compile(re.escape(f"{_PREFIX}{kind}-") + r"(\d+)-")
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or _process_alive(int(match.group(1))):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)
        removed.append(entry)
    return removed


def staging_dir(folder: Path, kind: str) -> Path:
    """A new hidden staging folder ``.rareseg-<kind>-<pid>-<random>`` in ``folder`` (created when missing).

    Stale staging folders of the same kind (see :func:`remove_stale`) are removed first.
    """
    folder.mkdir(parents=True, exist_ok=True)
    remove_stale(folder, kind)
    return Path(tempfile.mkdtemp(prefix=staging_name(kind), dir=folder))


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the complete new one, never a partial write; a failed write
    leaves the old file and no temporary behind. The folder is created when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = f"part-{path.name}"
    remove_stale(path.parent, kind)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=staging_name(kind), suffix=".part")
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def publish(staging: Path, out_dir: Path, names: Sequence[str]) -> dict[str, Path]:
    """Move finished files from a staging folder (in ``out_dir``, same file system) to their final names.

    Files move in the order of ``names``, so the last one (e.g. ``summary.json``) marks a complete
    set; then the emptied staging folder is removed. SIGINT and SIGTERM wait until all is moved.

    Returns:
        The final path of every file, by name.
    """
    outputs = {}
    with signals_deferred():  # a Ctrl+C or SIGTERM lands after the whole set is in place
        for name in names:
            outputs[name] = out_dir / name
            os.replace(staging / name, outputs[name])
        staging.rmdir()
    return outputs
