"""Shared helpers for the benchmark scripts: machine description and the RESULTS.md writer."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import sys
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")


def machine_description() -> str:
    """One line naming the CPU, core count, memory and (if present) the GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    desc = f"{cpu}, {os.cpu_count()} cores, {mem_gib:.0f} GiB RAM, torch {torch.__version__}"
    if torch.cuda.is_available():
        desc += f", GPU {torch.cuda.get_device_name(0)}"
    return desc


def record(title: str, table: str, notes: str = "") -> str:
    """Print a results section and append it to ``benchmarks/RESULTS.md``.

    Args:
        title: section heading, e.g. ``"Model: SpatialAwareSegFormer vs smp.Segformer"``.
        table: a Markdown table with the measured numbers.
        notes: optional free text below the table (targets, caveats).

    Returns:
        The Markdown section that was written.
    """
    command = " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *sys.argv])
    when = _dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    section = (
        f"\n## {title}\n\n"
        f"- date: {when}\n- machine: {machine_description()}\n- command: `{command}`\n\n"
        f"{table.strip()}\n"
    )
    if notes:
        section += f"\n{notes.strip()}\n"
    print(section)
    if os.environ.get("RARESEG_BENCH_NO_RECORD") != "1":
        if not RESULTS.exists():
            RESULTS.write_text("# Benchmark results\n\nEach section is appended by a script in `benchmarks/` (`make bench`).\n")
        with RESULTS.open("a") as fh:
            fh.write(section)
    return section
