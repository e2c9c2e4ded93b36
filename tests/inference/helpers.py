"""Helpers for inference tests: tiny networks with known behaviour, a module factory and a GeoTIFF writer."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import rasterio
import torch
from rasterio.transform import from_origin
from torch import nn

from rareseg.lightning_modules import RareSegModule
from rareseg.models import SegmentationOutput
from rareseg.synth.scene import CLASSES

CLASS_NAMES = [name for _, name, _, _ in CLASSES]
CLASS_COLOURS = [list(colour) for _, _, colour, _ in CLASSES]
RARE = (4, 5)
BAND_MEAN = [300.0, 250.0, 400.0]
BAND_STD = [80.0, 90.0, 120.0]


class LocalNet(nn.Module):
    """Two 3x3 convolutions (receptive field 5x5) with a saliency head: tiles agree away from their edges."""

    def __init__(self, saliency: bool = True) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.hidden = nn.Conv2d(3, 8, 3, padding=1)
        self.classifier = nn.Conv2d(8, len(CLASS_NAMES), 3, padding=1)
        self.saliency = nn.Conv2d(8, len(RARE), 1) if saliency else None
        self.calls = 0

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        self.calls += 1
        features = torch.tanh(self.hidden(image))
        return SegmentationOutput(
            2 * self.classifier(features), None if self.saliency is None else self.saliency(features)
        )


class TileContextNet(LocalNet):
    """LocalNet plus a term from the tile's mean: tiles disagree everywhere, so unblended tiles show seams."""

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        out = super().forward(image)
        context = 4 * image.mean(dim=(2, 3), keepdim=True)
        return SegmentationOutput(out.logits + torch.cat([context, -context], dim=1), out.saliency_logits)


class ConstantNet(nn.Module):
    """Every pixel gets the same class probabilities; no saliency head."""

    def __init__(self, probs: list[float]) -> None:
        super().__init__()
        self.register_buffer("log_probs", torch.log(torch.tensor(probs, dtype=torch.float32)))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = image.shape
        return self.log_probs[None, :, None, None].expand(batch, -1, height, width)


class FailingNet(LocalNet):
    """LocalNet that raises on its ``fail_at``-th call (an injected crash in the middle of a scene)."""

    def __init__(self, fail_at: int) -> None:
        super().__init__()
        self.fail_at = fail_at

    def forward(self, image: torch.Tensor) -> SegmentationOutput:
        if self.calls + 1 == self.fail_at:
            raise RuntimeError("injected failure")
        return super().forward(image)


def make_module(net: nn.Module | None = None, **overrides: object) -> RareSegModule:
    """A RareSegModule carrying the synthetic data set's classes and fixed band statistics."""
    arguments: dict[str, object] = {
        "net": net,
        "optimizer": "adamw",
        "num_classes": len(CLASS_NAMES),
        "in_channels": 3,
        "rare_classes": RARE,
        "class_names": CLASS_NAMES,
        "class_colors": CLASS_COLOURS,
        "band_mean": BAND_MEAN,
        "band_std": BAND_STD,
    }
    arguments.update(overrides)
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r"Attribute 'net' is an instance of `nn.Module`"
        )  # the module keeps its net in hparams
        return RareSegModule(**arguments)


def write_geotiff(
    path: Path, image: np.ndarray, nodata: float | None = 0, crs: str | None = "EPSG:32644", pixel: float = 5.8
) -> Path:
    """Write a (C, H, W) image as a GeoTIFF at an arbitrary UTM 44N origin."""
    profile = {
        "driver": "GTiff",
        "count": image.shape[0],
        "height": image.shape[1],
        "width": image.shape[2],
        "dtype": str(image.dtype),
        "nodata": nodata,
    }
    if crs is not None:
        profile.update(crs=crs, transform=from_origin(400000.0, 2300000.0, pixel, pixel))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(image)
    return path
