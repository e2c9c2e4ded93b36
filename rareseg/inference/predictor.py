"""A trained network ready for inference: :class:`Predictor` normalises raw tiles and runs the network.

A :class:`Predictor` holds the network on its device together with what inference needs from the
checkpoint: band statistics (inputs are normalised by :meth:`Predictor.normalise`, the only place
that does it, exactly as the datamodule did in training), class names and colours, rare classes
and calibrated thresholds. It is built from a module (:meth:`Predictor.from_module`) or loaded
from a checkpoint (:func:`rareseg.inference.checkpoint.load_predictor`); a server loads one and
predicts many scenes with it. The scene pass that tiles and blends is
:func:`rareseg.inference.scene.blend_scene`.

This module does not import the Lightning task, so the task itself can wrap itself in a
Predictor (``RareSegModule.scene_saliency``).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule
from torch import nn

from rareseg.core.conventions import resolve_class_colors
from rareseg.datamodules.normalisation import check_normalisation
from rareseg.datamodules.scenes import DataError
from rareseg.models import SegmentationOutput

#: Threshold of a selected rare class when neither the user nor the checkpoint gives one.
DEFAULT_THRESHOLD = 0.5

Precision = Literal["32", "bf16"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` is ``cuda`` when available, else ``cpu``; other names must be usable here."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available (use --device cpu or auto)")
    return resolved


def resolve_precision(precision: str) -> Precision:
    """``"32"`` (also ``"fp32"``, ``"32-true"``) or ``"bf16"`` (also ``"bf16-mixed"``).

    bf16 runs the network under ``torch.autocast(dtype=torch.bfloat16)`` on CUDA and on CPU;
    softmax/sigmoid and blending stay float32. On a CPU with native bf16 (AVX512-BF16/AMX) it
    measured ~2x faster than fp32 for MiT-B0 with probabilities within 2e-3
    (``benchmarks/inference.py``); CPUs without it emulate bf16 (an AVX2-only EPYC measured 0.07-0.10x
    the fp32 speed), so fp32 is the default.
    """
    if precision in {"32", "fp32", "32-true"}:
        return "32"
    if precision in {"bf16", "bf16-mixed"}:
        return "bf16"
    raise ValueError(f"unknown precision {precision!r} (use 32 or bf16)")


@dataclass
class Predictor:
    """A network ready to predict raw tiles, with the class and band metadata of its checkpoint.

    Attributes:
        model: network taking a normalised (B, C, H, W) batch and returning a
            :class:`~rareseg.models.SegmentationOutput` or logits (B, K, H, W); in eval mode on ``device``.
        device: where the network runs.
        precision: ``"32"`` or ``"bf16"`` (autocast on the device).
        class_names: name of every class id ``0..K-1``.
        class_colors: RGB colour of every class id.
        rare_classes: the checkpoint's rare class ids; saliency channel ``r`` belongs to ``rare_classes[r]``.
        band_mean: (C,) per-band mean in file units.
        band_std: (C,) per-band standard deviation in file units.
        thresholds: calibrated ``{class_id: threshold}`` stored in the checkpoint (may be empty).
        checkpoint: the checkpoint file, when loaded from one.
        normalisation: the checkpoint's normalisation, ``"dataset"`` or ``"scene"`` (see
            :mod:`rareseg.datamodules.normalisation`); with ``"scene"``, ``band_mean``/``band_std``
            hold the training data's statistics and
            :func:`~rareseg.inference.radiometry.prepare_scene` puts each scene's own in their place.
        input_scale: factor multiplying the raw bands before normalisation (``--input-scale``).
    """

    model: nn.Module
    device: torch.device
    precision: Precision
    class_names: tuple[str, ...]
    class_colors: tuple[tuple[int, int, int], ...]
    rare_classes: tuple[int, ...]
    band_mean: np.ndarray
    band_std: np.ndarray
    thresholds: dict[int, float] = field(default_factory=dict)
    checkpoint: Path | None = None
    normalisation: str = "dataset"
    input_scale: float = 1.0

    @classmethod
    def from_module(
        cls,
        module: LightningModule,
        device: str | torch.device = "auto",
        precision: str = "32",
        thresholds: Mapping[int, float] | None = None,
        checkpoint: Path | None = None,
    ) -> Predictor:
        """Wrap a trained module for inference.

        The module needs RareSegModule's hparams ``num_classes``, ``in_channels``, ``rare_classes``
        and optionally ``class_names``, ``class_colors``, ``band_mean``, ``band_std``. Without band
        statistics the inputs are used unnormalised (mean 0, std 1), with a warning; without names or
        colours, ``class_<id>`` and :data:`~rareseg.core.conventions.DEFAULT_PALETTE` stand in.

        Args:
            module: the trained module; moved to ``device`` and put in eval mode.
            device: see :func:`resolve_device`.
            precision: see :func:`resolve_precision`.
            thresholds: calibrated ``{class_id: threshold}`` (keys and values are converted to int/float).
            checkpoint: the file the module came from, reported in summaries.

        Returns:
            The predictor.
        """
        hparams = module.hparams
        num_classes, in_channels = int(hparams["num_classes"]), int(hparams["in_channels"])
        resolved = resolve_device(device)
        mean, std = hparams.get("band_mean"), hparams.get("band_std")
        if mean is None or std is None:
            warnings.warn(
                "the checkpoint stores no band statistics (band_mean/band_std); inputs are not normalised", stacklevel=2
            )
            mean, std = [0.0] * in_channels, [1.0] * in_channels
        if len(mean) != in_channels or len(std) != in_channels:
            raise DataError(
                f"checkpoint band statistics have {len(mean)}/{len(std)} values for {in_channels} input bands"
            )
        names = hparams.get("class_names") or [f"class_{i}" for i in range(num_classes)]
        given = hparams.get("class_colors")
        colours = tuple(tuple(int(v) for v in c)[:3] for c in given) if given else resolve_class_colors(num_classes)
        return cls(
            model=module.to(resolved).eval(),
            device=resolved,
            precision=resolve_precision(precision),
            class_names=tuple(str(n) for n in names),
            class_colors=colours,
            rare_classes=tuple(int(c) for c in hparams["rare_classes"]),
            band_mean=np.asarray(mean, dtype=np.float32),
            band_std=np.asarray(std, dtype=np.float32),
            thresholds={int(k): float(v) for k, v in (thresholds or {}).items()},
            checkpoint=checkpoint,
            normalisation=check_normalisation(hparams.get("normalisation", "dataset")),
        )

    @property
    def num_classes(self) -> int:
        """Number of classes K."""
        return len(self.class_names)

    @property
    def in_channels(self) -> int:
        """Number of input bands C the network expects."""
        return len(self.band_mean)

    def select_rare_classes(self, selection: Sequence[str | int] | None = None) -> tuple[int, ...]:
        """Rare class ids from names or ids (default: all the checkpoint's rare classes, in its order).

        Raises:
            DataError: a name or id that is not one of the checkpoint's rare classes.
        """
        if selection is None or len(selection) == 0:
            if not self.rare_classes:
                raise DataError("the checkpoint has no rare classes to predict probabilities for")
            return self.rare_classes
        by_name = {self.class_names[c]: c for c in self.rare_classes}
        chosen: list[int] = []
        for item in selection:
            key = str(item).strip()
            class_id = by_name.get(key, int(key) if key.isdigit() and int(key) in self.rare_classes else None)
            if class_id is None:
                known = ", ".join(self.class_names[c] for c in self.rare_classes) or "none"
                raise DataError(f"unknown rare class {key!r} (the checkpoint's rare classes: {known})")
            if class_id not in chosen:
                chosen.append(class_id)
        return tuple(chosen)

    def thresholds_for(self, rare_classes: Sequence[int], override: float | None = None) -> tuple[list[float], str]:
        """Threshold per selected rare class and where it came from.

        ``override`` (in [0, 1]) applies to every class (source ``"override"``); otherwise the
        checkpoint's calibrated value (``"checkpoint"``) or :data:`DEFAULT_THRESHOLD` (``"default"``,
        also reported when only some classes were calibrated: ``"checkpoint+default"``).
        """
        if override is not None:
            if not 0.0 <= override <= 1.0:
                raise ValueError(f"threshold must be in [0, 1], got {override}")
            return [float(override)] * len(rare_classes), "override"
        values = [self.thresholds.get(c, DEFAULT_THRESHOLD) for c in rare_classes]
        calibrated = [c in self.thresholds for c in rare_classes]
        source = "checkpoint" if all(calibrated) else "checkpoint+default" if any(calibrated) else "default"
        return values, source

    def normalise(self, tiles: np.ndarray) -> torch.Tensor:
        """Raw tiles as the network's input: ``x' = (s * x - band_mean) / band_std`` per band, float32 on the device.

        ``s`` is :attr:`input_scale` (1 unless the user asked for another scale).

        Non-finite values (NaN, +/-Inf: nodata, see :func:`~rareseg.core.pixels.nodata_pixels`) become 0,
        the band mean, so they do not spread through the network into their valid neighbours.

        Args:
            tiles: (B, C, H, W) pixel values in file units (DN or reflectance).

        Raises:
            ValueError: the tiles do not have the checkpoint's band count.
        """
        if tiles.ndim != 4 or tiles.shape[1] != self.in_channels:
            raise ValueError(f"predict: expected tiles (B, {self.in_channels}, H, W), got {tiles.shape}")
        batch = torch.from_numpy(np.ascontiguousarray(tiles, dtype=np.float32)).to(self.device)
        if self.input_scale != 1.0:
            batch = batch * self.input_scale
        mean = torch.from_numpy(self.band_mean).to(self.device)[None, :, None, None]
        std = torch.from_numpy(self.band_std).to(self.device)[None, :, None, None]
        return torch.nan_to_num((batch - mean) / std, nan=0.0, posinf=0.0, neginf=0.0)

    @torch.inference_mode()
    def network_outputs(self, tiles: np.ndarray) -> SegmentationOutput:
        """The network's raw outputs for a batch of raw tiles (:meth:`normalise` d), on :attr:`device`.

        Args:
            tiles: (B, C, H, W) pixel values in file units (DN or reflectance).

        Returns:
            ``logits`` (B, K, H, W) and ``saliency_logits`` (B, R, H, W) or None, R = number of rare
            classes, on the device, in the autocast dtype.
        """
        batch = self.normalise(tiles)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            out = self.model(batch)
        return out if isinstance(out, SegmentationOutput) else SegmentationOutput(out, None)

    @torch.inference_mode()
    def probabilities(
        self, outputs: SegmentationOutput, weights: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and rare-class saliency of :meth:`network_outputs`, on the host.

        Needs no lock on the model, so a pipeline can run it on another thread while the network
        predicts the next batch.

        Args:
            outputs: what :meth:`network_outputs` returned.
            weights: optional (H, W) blending weights multiplied into both outputs on the device.

        Returns:
            ``softmax(logits)`` (B, K, H, W) float32 and ``sigmoid(saliency_logits)`` (B, R, H, W)
            float32, or None when the network has no saliency head; both times ``weights`` when given.
        """
        probs = F.softmax(outputs.logits.float(), dim=1)
        saliency = None if outputs.saliency_logits is None else torch.sigmoid(outputs.saliency_logits.float())
        if weights is not None:
            scale = torch.from_numpy(np.asarray(weights, dtype=np.float32)).to(probs.device)
            probs.mul_(scale)
            saliency = None if saliency is None else saliency.mul_(scale)
        return probs.cpu().numpy(), None if saliency is None else saliency.cpu().numpy()

    def predict(self, tiles: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """Class probabilities and rare-class saliency of a batch of raw (B, C, H, W) tiles.

        :meth:`network_outputs` then :meth:`probabilities`, in one call; see them for the shapes.
        """
        return self.probabilities(self.network_outputs(tiles), weights)
