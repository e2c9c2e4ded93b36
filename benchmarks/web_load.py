"""Web server under load: N simultaneous jobs of a 1024 px scene, status codes and the server's peak memory.

For every job count, a fresh ``rareseg serve`` (waitress, CPU, a tiny untrained checkpoint written
here: the default SpatialAwareSegFormer mit_b0, no download) is started on a free loopback port;
N client threads upload the scene at the same moment and poll their job until it finishes. The
report counts every HTTP answer by status class, the jobs that ended ``done``, the wall time from
the first upload to the last finished job, and the server's resident memory: after start-up
(model loaded) and its peak (``VmHWM`` of the server process). Memory is bounded when the peak
with 16 jobs stays close to the peak with 1: at most ``--workers`` scenes are predicted at once,
the others wait on disk. The server is then stopped with SIGTERM, and its temporary jobs folder
must be gone.

Run it under ``nice``: the server and the clients share the machine's cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path

from common import record

SERVING = re.compile(r"rareseg serve: (http://\S+/) \(jobs in (.+)\); Ctrl\+C stops")
FINAL = {"done", "failed", "cancelled"}


def _write_checkpoint(path: Path) -> None:
    """An untrained RareSegModule (default network) with the synthetic classes, saved as Lightning does."""
    import lightning
    import torch

    from rareseg.lightning_modules import RareSegModule
    from rareseg.synth.scene import CLASSES

    torch.manual_seed(0)
    module = RareSegModule(
        num_classes=len(CLASSES),
        rare_classes=tuple(i for i, _, _, rare in CLASSES if rare),
        class_names=[name for _, name, _, _ in CLASSES],
        class_colors=[list(colour) for _, _, colour, _ in CLASSES],
        band_mean=[250.0, 200.0, 350.0],
        band_std=[60.0, 70.0, 110.0],
    )
    content = {
        "state_dict": module.state_dict(),
        "hyper_parameters": dict(module.hparams),
        "pytorch-lightning_version": lightning.__version__,
    }
    torch.save(content, path)


def _write_scene(folder: Path, size: int) -> Path:
    from rareseg.synth import generate_scene
    from rareseg.synth.scene import scene_transform, write_scene

    path = folder / f"scene_{size}.tif"
    write_scene(generate_scene(size, seed=5), path, folder / f"scene_{size}_mask.tif", scene_transform(0, size))
    return path


def _rss_mib(pid: int) -> tuple[float, float]:
    """Current (``VmRSS``) and peak (``VmHWM``) resident memory of process ``pid`` in MiB."""
    values = {}
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _multipart(path: Path) -> tuple[bytes, str]:
    boundary = uuid.uuid4().hex
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{path.name}"\r\n'
        "Content-Type: image/tiff\r\n\r\n"
    ).encode()
    return head + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


class Client:
    """HTTP calls to the server, counting every answer by status class (2xx, 4xx, 5xx, or ``error``)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.answers: Counter[str] = Counter()
        self.lock = threading.Lock()

    def call(self, path: str, body: bytes | None = None, content_type: str | None = None) -> dict:
        request = urllib.request.Request(self.url + path, data=body, method="POST" if body is not None else "GET")
        if content_type:
            request.add_header("Content-Type", content_type)
        try:
            with urllib.request.urlopen(request, timeout=600) as response:
                status, payload = response.status, json.load(response)
        except urllib.error.HTTPError as err:
            status, payload = err.code, json.load(err)
        except OSError as err:
            status, payload = None, {"error": str(err)}
        with self.lock:
            self.answers["error" if status is None else f"{status // 100}xx"] += 1
        return payload

    def run_job(self, body: bytes, content_type: str, start: threading.Barrier, results: list) -> None:
        start.wait()
        job = self.call("api/jobs", body, content_type)
        while "id" in job and job.get("status") not in FINAL:
            time.sleep(0.5)
            job = self.call(f"api/jobs/{job['id']}")
        results.append(job)


def _load(args: argparse.Namespace, checkpoint: Path, scene: Path, jobs: int) -> dict:
    """Start a server, run ``jobs`` simultaneous jobs, stop it; the measurements."""
    command = [
        sys.executable,
        "-c",
        "from rareseg.cli import main; main()",
        "serve",
        "--checkpoint",
        str(checkpoint),
        "--port",
        "0",
        "--device",
        "cpu",
        "--workers",
        str(args.workers),
        "--tile",
        str(args.tile),
    ]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        serving = SERVING.match(line)
        if not serving:
            raise RuntimeError(f"rareseg serve did not start: {line}{server.stderr.read()}")
        url, jobs_dir = serving.group(1), Path(serving.group(2))
        client = Client(url)
        client.call("api/config")
        rss_loaded, _ = _rss_mib(server.pid)
        body, content_type = _multipart(scene)
        start, results = threading.Barrier(jobs), []
        threads = [
            threading.Thread(target=client.run_job, args=(body, content_type, start, results)) for _ in range(jobs)
        ]
        begin = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - begin
        _, peak = _rss_mib(server.pid)
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=120)
    finally:
        if server.poll() is None:
            server.kill()
        server.communicate()
    return {
        "jobs": jobs,
        "done": sum(job.get("status") == "done" for job in results),
        "errors": sorted({job.get("error") for job in results if job.get("status") != "done"} - {None}),
        "answers": dict(client.answers),
        "wall_s": wall,
        "rss_loaded_mib": rss_loaded,
        "peak_rss_mib": peak,
        "exit_code": server.returncode,
        "jobs_dir_removed": not jobs_dir.exists(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, nargs="+", default=[1, 16], help="simultaneous jobs, one server each")
    parser.add_argument("--size", type=int, default=1024, help="scene side in pixels")
    parser.add_argument("--workers", type=int, default=2, help="rareseg serve --workers (scenes predicted at once)")
    parser.add_argument("--tile", type=int, default=512, help="rareseg serve --tile")
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    with tempfile.TemporaryDirectory(prefix="rareseg-web-load-") as folder:
        checkpoint = Path(folder) / "untrained.ckpt"
        _write_checkpoint(checkpoint)
        scene = _write_scene(Path(folder), args.size)
        runs = []
        for jobs in args.jobs:
            run = _load(args, checkpoint, scene, jobs)
            print(json.dumps(run), flush=True)
            runs.append(run)
    smallest = runs[0]["peak_rss_mib"]
    rows = [
        "| jobs at once | done | HTTP answers | 5xx | wall (s) | s per job | RSS after start (MiB) | peak RSS (MiB) "
        "| peak / first |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for run in runs:
        answers = ", ".join(f"{key}: {count}" for key, count in sorted(run["answers"].items()))
        rows.append(
            f"| {run['jobs']} | {run['done']}/{run['jobs']} | {answers} | {run['answers'].get('5xx', 0)} "
            f"| {run['wall_s']:.1f} | {run['wall_s'] / run['jobs']:.1f} | {run['rss_loaded_mib']:.0f} "
            f"| {run['peak_rss_mib']:.0f} | {run['peak_rss_mib'] / smallest:.2f} |"
        )
    clean = all(run["exit_code"] == 0 and run["jobs_dir_removed"] for run in runs)
    record(
        f"Web: {' and '.join(str(run['jobs']) for run in runs)} simultaneous jobs of a {args.size} px scene",
        "\n".join(rows),
        f"`rareseg serve` (waitress) on the CPU, untrained SpatialAwareSegFormer mit_b0, --workers {args.workers}, "
        f"--tile {args.tile}, OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}; a fresh server per row; all uploads "
        "sent at the same moment, each job polled every 0.5 s until it finished. Peak RSS is the server's VmHWM "
        "(model load included). Targets: no 5xx, every job done, peak with 16 jobs < 1.5x the peak with 1 (at most "
        f"--workers scenes are predicted at once, the rest wait on disk). Server stopped by SIGTERM with exit 0 and "
        f"its temporary jobs folder removed: {'yes' if clean else 'NO'}.",
    )


if __name__ == "__main__":
    main()
