"""Write-then-rename: the one way rareseg writes files that others may read while they are written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path


def write_atomically(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and ``os.replace``.

    A reader sees the old file or the complete new one, never a partial write; a failed write
    leaves the old file and no temporary behind. The folder is created when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
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
    set; then the emptied staging folder is removed.

    Returns:
        The final path of every file, by name.
    """
    outputs = {}
    for name in names:
        outputs[name] = out_dir / name
        os.replace(staging / name, outputs[name])
    staging.rmdir()
    return outputs
