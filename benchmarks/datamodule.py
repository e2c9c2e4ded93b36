"""Training-loader throughput of LissIVDataModule versus raw rasterio windowed reads.

Both read the same crops (the training sampler's queries); the ratio shows what
torchgeo's indexing, merging and collation cost over the bare I/O.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import from_bounds

from common import record
from rareseg.datamodules import LissIVDataModule
from rareseg.synth import generate_dataset


def _raw_reads(dm: LissIVDataModule, queries: list) -> float:
    """Seconds to read the queries' image and mask windows with plain rasterio."""
    scenes = dm.scenes_of("train")
    handles = [(rasterio.open(s.image), rasterio.open(s.mask)) for s in scenes]
    start = time.perf_counter()
    for x, y, _ in queries:
        for img, msk in handles:
            b = img.bounds
            if b.left <= x.start < b.right and b.bottom <= y.start < b.top:
                window = from_bounds(x.start, y.start, x.stop, y.stop, img.transform)
                image = img.read(window=window, boundless=True, fill_value=0).astype(np.float32)
                mask = msk.read(1, window=window, boundless=True, fill_value=255).astype(np.int64)
                assert image.shape[1:] == mask.shape
                break
    elapsed = time.perf_counter() - start
    for img, msk in handles:
        img.close()
        msk.close()
    return elapsed


def _loader(dm: LissIVDataModule) -> float:
    """Seconds to iterate the training DataLoader once (same queries, batch collation included)."""
    start = time.perf_counter()
    for _ in dm.train_dataloader():
        pass
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--crops", type=int, default=256, help="crops per measurement")
    parser.add_argument("--patch", type=int, default=256, help="crop side in pixels")
    parser.add_argument("--scene-size", type=int, default=1024, help="synthetic scene side in pixels")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate_dataset(Path(tmp) / "root", num_scenes=4, size=args.scene_size, seed=0, progress=False)
        dm = LissIVDataModule(str(root), batch_size=8, patch_size=args.patch, length=args.crops, num_workers=0, seed=0)
        dm.setup("fit")
        _loader(dm)  # warm the file-handle cache
        queries = list(dm.train_sampler)
        dm.setup("fit")
        loader_s = _loader(dm)
        raw_s = _raw_reads(dm, queries)
    rows = [
        "| reader | crops/s (relative) |",
        "|---|---|",
        "| raw rasterio windowed read (image + mask) | 1.00 |",
        f"| LissIVDataModule train loader, random sampler (num_workers=0) | {raw_s / loader_s:.2f} |",
    ]
    record(
        "Datamodule: training loader vs raw rasterio reads",
        "\n".join(rows),
        f"{args.crops} crops of {args.patch} px from 4 synthetic {args.scene_size} px scenes, one process. "
        "Raw reads are the floor; the loader adds torchgeo's index query, WarpedVRT merge and collation.",
    )


if __name__ == "__main__":
    main()
