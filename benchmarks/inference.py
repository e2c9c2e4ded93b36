"""Whole-scene inference: throughput against the bare model forward, and peak memory against scene size.

Every scene size runs in a fresh subprocess that warms the model up (one batch, as a server
would), then alternates the bare network forward on exactly the batches of tiles ``predict_scene``
runs with ``predict_scene`` itself (reading, normalising, blending, deciding, writing all outputs,
the top-k pass, overviews, previews): bare, pipeline, bare, pipeline, ..., bare. Each pipeline run
is compared with the mean of the bare runs around it, so a drift of the machine's load cancels;
the median ratio over the rounds is reported with its range. Peak resident memory (``VmHWM``,
reset after freed memory is returned to the OS) is read right after each ``predict_scene``. Scenes
larger than the generated one are tiled copies of it, written block by block.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from common import record
from rasterio.windows import Window


def _reset_peak_rss() -> None:
    """Return freed heap memory to the OS (glibc ``malloc_trim``) and reset ``VmHWM`` to the current size."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def _peak_rss_mib() -> float:
    """Peak resident set size of this process (``VmHWM``) in MiB."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("VmHWM not found in /proc/self/status")


def _write_scenes(folder: Path, base_size: int, sizes: list[int]) -> dict[int, Path]:
    """Generate one synthetic scene and write square mosaics of it for every size (multiples of the base)."""
    from rareseg.synth import generate_scene
    from rareseg.synth.scene import CRS, IMAGE_NODATA, scene_transform

    base = generate_scene(base_size, seed=11).image
    paths = {}
    for size in sizes:
        path = folder / f"scene_{size}.tif"
        profile = {
            "driver": "GTiff",
            "width": size,
            "height": size,
            "count": 3,
            "dtype": "uint16",
            "nodata": IMAGE_NODATA,
            "crs": CRS,
            "transform": scene_transform(0, size),
        }
        with rasterio.open(path, "w", tiled=True, blockxsize=256, blockysize=256, compress="deflate", **profile) as dst:
            for row in range(0, size, base_size):
                for col in range(0, size, base_size):
                    dst.write(base, window=Window(col, row, base_size, base_size))
        paths[size] = path
    return paths


def _predictor(decoder_channels: int):
    import torch

    from rareseg.inference import Predictor
    from rareseg.lightning_modules import RareSegModule
    from rareseg.models import SpatialAwareSegFormer
    from rareseg.synth.scene import CLASSES

    torch.manual_seed(0)
    net = SpatialAwareSegFormer(
        num_classes=len(CLASSES),
        rare_classes=(4, 5),
        in_channels=3,
        encoder_name="mit_b0",
        decoder_channels=decoder_channels,
    )
    module = RareSegModule(
        net=net,
        optimizer="adamw",
        num_classes=len(CLASSES),
        rare_classes=(4, 5),
        band_mean=[250.0, 200.0, 350.0],
        band_std=[60.0, 70.0, 110.0],
    )
    return Predictor.from_module(module, device="auto")


def _bare_forward_seconds(predictor, scene: Path, tile: int, overlap: int, batch_size: int) -> float:
    """Seconds of ``model(batch)`` alone over the batches ``predict_scene`` ran (reading and normalising not timed)."""
    import torch

    from rareseg.inference import nodata_pixels, tile_origins

    elapsed = 0.0
    with rasterio.open(scene) as src, torch.inference_mode():
        tile_h, tile_w = min(tile, src.height), min(tile, src.width)
        mean = torch.from_numpy(predictor.band_mean)[None, :, None, None]
        std = torch.from_numpy(predictor.band_std)[None, :, None, None]
        cols = tile_origins(src.width, tile, overlap)
        for y0 in tile_origins(src.height, tile, overlap):
            strip = src.read(window=Window(0, y0, src.width, tile_h))
            valid = ~nodata_pixels(strip, src.nodata)
            origins = [x0 for x0 in cols if valid[:, x0 : x0 + tile_w].any()]
            for start in range(0, len(origins), batch_size):
                batch = np.stack([strip[:, :, x0 : x0 + tile_w] for x0 in origins[start : start + batch_size]]).astype(
                    np.float32
                )
                batch = ((torch.from_numpy(batch) - mean) / std).to(predictor.device)
                begin = time.perf_counter()
                predictor.model(batch)
                if predictor.device.type == "cuda":
                    torch.cuda.synchronize()
                elapsed += time.perf_counter() - begin
    return elapsed


def _bf16_speedup(predictor, batch_size: int, tile: int, repeats: int = 3) -> float:
    """fp32 time / bf16-autocast time of the bare forward on one CPU batch (best of ``repeats`` each)."""
    import torch

    batch = torch.randn(batch_size, 3, tile, tile, generator=torch.Generator().manual_seed(0))
    best = {"fp32": float("inf"), "bf16": float("inf")}
    with torch.inference_mode():
        for _ in range(repeats):
            for name in best:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                    begin = time.perf_counter()
                    predictor.model(batch)
                    best[name] = min(best[name], time.perf_counter() - begin)
    return best["fp32"] / best["bf16"]


def _worker(args: argparse.Namespace) -> None:
    import statistics

    import torch

    from rareseg.inference import predict_scene

    torch.set_num_threads(args.threads)
    predictor = _predictor(args.decoder_channels)
    predictor.predict(
        np.zeros((args.batch_size, 3, args.tile, args.tile), dtype=np.float32)
    )  # one-time kernel setup, as in a server
    bare = [_bare_forward_seconds(predictor, args.scene, args.tile, args.overlap, args.batch_size)]
    pipeline, peaks = [], []
    for _ in range(args.rounds):
        _reset_peak_rss()
        with tempfile.TemporaryDirectory() as out:
            begin = time.perf_counter()
            result = predict_scene(
                predictor, args.scene, out, tile=args.tile, overlap=args.overlap, batch_size=args.batch_size
            )
            pipeline.append(time.perf_counter() - begin)
        peaks.append(_peak_rss_mib())
        bare.append(_bare_forward_seconds(predictor, args.scene, args.tile, args.overlap, args.batch_size))
    # each pipeline run is compared with the mean of the bare runs just before and after it
    ratios = [(bare[i] + bare[i + 1]) / 2 / pipeline[i] for i in range(args.rounds)]
    run = {
        "pipeline_s": statistics.median(pipeline),
        "bare_s": statistics.median(bare),
        "ratio": statistics.median(ratios),
        "ratio_min": min(ratios),
        "ratio_max": max(ratios),
        "peak_rss_mib": max(peaks),
        "tiles": result.summary["tiles"]["predicted"],
        "device": str(predictor.device),
    }
    if predictor.device.type == "cpu":
        run["bf16_speedup"] = _bf16_speedup(predictor, args.batch_size, args.tile)
    print(json.dumps(run))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--quick", action="store_true", help="scenes of 512, 1024 and 2048 px instead of 2048, 4096 and 8192"
    )
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="scene sides in pixels, multiples of the first (default 2048 4096 8192)"
    )
    parser.add_argument("--tile", type=int, default=256, help="tile side in pixels")
    parser.add_argument("--overlap", type=int, default=32, help="tile overlap in pixels")
    parser.add_argument("--batch-size", type=int, default=8, help="tiles per forward pass")
    parser.add_argument("--decoder-channels", type=int, default=64, help="SegFormer decoder width C (encoder mit_b0)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per run")
    parser.add_argument(
        "--rounds", type=int, default=3, help="pipeline runs per size, each between two bare-forward runs"
    )
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scene", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return
    sizes = args.sizes or ([512, 1024, 2048] if args.quick else [2048, 4096, 8192])
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        scenes = _write_scenes(Path(tmp), sizes[0], sizes)
        for size in sizes:
            command = [
                sys.executable,
                __file__,
                "--worker",
                "--scene",
                str(scenes[size]),
                "--tile",
                str(args.tile),
                "--overlap",
                str(args.overlap),
            ]
            command += [
                "--batch-size",
                str(args.batch_size),
                "--decoder-channels",
                str(args.decoder_channels),
                "--threads",
                str(args.threads),
                "--rounds",
                str(args.rounds),
            ]
            run = json.loads(
                subprocess.run(command, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
            )
            rows.append((size, run))
    smallest_rss = rows[0][1]["peak_rss_mib"]
    speedups = [run["bf16_speedup"] for _, run in rows if "bf16_speedup" in run]
    bf16_note = (
        f" CPU bf16 autocast vs fp32 bare forward (one batch, best of 3, per size): speedup "
        f"{', '.join(f'{v:.2f}x' for v in speedups)} (the --precision bf16 option on this CPU)."
        if speedups
        else ""
    )
    table = [
        "| scene (px) | tiles | pipeline MPix/s | bare forward MPix/s | pipeline / bare (median) | range over "
        "rounds | peak RSS (MiB) | RSS / smallest |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for size, run in rows:
        mpix = size * size / 1e6
        table.append(
            f"| {size}² | {run['tiles']} | {mpix / run['pipeline_s']:.3f} | {mpix / run['bare_s']:.3f} | "
            f"{run['ratio']:.2f} | {run['ratio_min']:.2f}-{run['ratio_max']:.2f} "
            f"| {run['peak_rss_mib']:.0f} | {run['peak_rss_mib'] / smallest_rss:.2f} |"
        )
    record(
        "Inference: whole-scene predict_scene vs bare model forward, peak memory by scene size",
        "\n".join(table),
        f"SpatialAwareSegFormer mit_b0, decoder_channels={args.decoder_channels}, tile {args.tile}, overlap "
        f"{args.overlap}, "
        f"batch {args.batch_size}, device {rows[0][1]['device']}, {args.threads} torch thread(s), fp32; each size "
        "in a fresh process, "
        f"{args.rounds} pipeline runs, each compared with the mean of the bare runs just before and after it "
        "(median ratio reported). "
        "Pipeline = predict_scene end to end (read, normalise, forward, blend, decide, write "
        "mask/rare_prob/saliency_topk, "
        "top-k pass, overviews, previews, summary); bare = model(batch) alone on the same batches. "
        "Targets: pipeline / bare >= 0.85; peak RSS growth < 1.3x from the smallest to the largest scene "
        "(accumulators hold one tile height of full-width rows, so memory grows with scene width only)." + bf16_note,
    )


if __name__ == "__main__":
    main()
