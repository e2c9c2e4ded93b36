"""Shared helpers for the benchmark scripts: machine description and the RESULTS.md writer."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable
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
            RESULTS.write_text(
                "# Benchmark results\n\nEach section is appended by a script in `benchmarks/` (`make bench`).\n"
            )
        with RESULTS.open("a") as fh:
            fh.write(section)
    return section


def interleaved_seconds(
    runs: dict[str, Callable[[], None]], warmup: int, repeats: int, device: str = "cpu"
) -> dict[str, list[float]]:
    """Wall time of each run per round, rounds interleaved so machine noise hits all runs alike.

    Args:
        runs: name -> a call that does one timed unit of work (e.g. one training step).
        warmup: untimed rounds first.
        repeats: timed rounds; the order of the runs rotates every round.
        device: ``"cuda..."`` synchronises the GPU around every timing.

    Returns:
        Seconds per run, one entry per round.
    """
    import torch

    def sync() -> None:
        if str(device).startswith("cuda"):
            torch.cuda.synchronize()

    names = list(runs)
    for _ in range(warmup):
        for name in names:
            runs[name]()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            runs[name]()
            sync()
            samples[name].append(time.perf_counter() - start)
    return samples


def paired_ratio(samples: dict[str, list[float]], name: str, reference: str) -> float:
    """Median over rounds of ``time(name) / time(reference)`` measured in the same round."""
    return statistics.median(ours / theirs for ours, theirs in zip(samples[name], samples[reference]))
