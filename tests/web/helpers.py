"""Helpers for web tests: apps with small tiles, upload/poll shortcuts, test networks and GeoTIFF writers."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
import rasterio.shutil
import torch
from flask import Flask
from flask.testing import FlaskClient
from rasterio.transform import from_origin
from torch import nn

from rareseg.inference import Predictor
from rareseg.synth.scene import CLASSES
from rareseg.web import STATUSES, WebConfig, create_app

#: Small tiles so a 256 px scene has several tiles and batches.
TILING = {"tile": 128, "overlap": 16, "batch_size": 2}
FINAL = set(STATUSES[2:])


def make_app(predictor: Predictor, jobs_dir: Path, **settings: Any) -> Flask:
    """An app on ``jobs_dir`` with small tiles; ``settings`` override :class:`WebConfig` fields."""
    return create_app(WebConfig(jobs_dir=jobs_dir, device="cpu", **{**TILING, **settings}), predictor=predictor)


def upload(client: FlaskClient, path: Path | None, name: str = "scene.tif", **fields: str) -> Any:
    """POST a file (or no file when ``path`` is None) with form fields to ``/api/jobs``."""
    data: dict[str, Any] = dict(fields)
    if path is not None:
        data["image"] = (io.BytesIO(path.read_bytes()), name)
    return client.post("/api/jobs", data=data, content_type="multipart/form-data")


def wait_for(client: FlaskClient, job_id: str, timeout: float = 60.0) -> dict[str, Any]:
    """Poll a job until it reaches a final status; returns its last status JSON."""
    deadline = time.monotonic() + timeout
    while True:
        status = client.get(f"/api/jobs/{job_id}").get_json()
        if status["status"] in FINAL:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} did not finish in {timeout} s: {status}")
        time.sleep(0.05)


def read_band(path: Path, band: int = 1) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(band)


class GatedNet(nn.Module):
    """Constant class probabilities; each forward pass first waits for ``gate`` (and raises when ``fail``)."""

    def __init__(self, probs: list[float], fail: bool = False) -> None:
        super().__init__()
        self.register_buffer("log_probs", torch.log(torch.tensor(probs)))
        self.gate = threading.Event()
        self.fail = fail
        self.calls = 0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if not self.gate.wait(timeout=30):
            raise RuntimeError("gate never opened")
        if self.fail:
            raise RuntimeError("injected failure")
        batch, _, height, width = image.shape
        return self.log_probs[None, :, None, None].expand(batch, -1, height, width)


def predictor_of(net: nn.Module, rare_classes: tuple[int, ...] = (4, 5)) -> Predictor:
    """A CPU predictor of the synthetic classes around ``net`` (no normalisation, no calibration)."""
    return Predictor(
        model=net.eval(),
        device=torch.device("cpu"),
        precision="32",
        class_names=tuple(name for _, name, _, _ in CLASSES),
        class_colors=tuple(colour for _, _, colour, _ in CLASSES),
        rare_classes=rare_classes,
        band_mean=np.zeros(3, dtype=np.float32),
        band_std=np.ones(3, dtype=np.float32),
    )


def write_tiff(path: Path, image: np.ndarray, crs: str | None = "EPSG:32644") -> Path:
    """A GeoTIFF of a (C, H, W) uint16 image at 5.8 m."""
    profile = {
        "driver": "GTiff",
        "count": image.shape[0],
        "height": image.shape[1],
        "width": image.shape[2],
        "dtype": "uint16",
        "nodata": 0,
    }
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(400000.0, 2300000.0, 5.8, 5.8))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path


def truncated_copy(source: Path, path: Path, cog: bool = False) -> Path:
    """The first half of ``source``'s bytes, or of a COG copy of it.

    A plain GeoTIFF keeps its header at the end, so it is lost; a COG has it first, so only pixels are lost.
    """
    if cog:
        rasterio.shutil.copy(source, path, driver="COG", compress="deflate", blocksize=128)
    data = (path if cog else source).read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path
