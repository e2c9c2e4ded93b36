"""The radiometry check: does a scene's radiometric scale and band order match the checkpoint's training data?

Users bring scenes as 7- or 10-bit DN, as reflectance x 10,000, or as float reflectance. A
checkpoint normalises with its training data's band statistics, so a scene in another scale is
far outside what the network has seen and is predicted as nonsense without any error. Before a
scene is predicted, :func:`prepare_scene` samples it cheaply
(:func:`~rareseg.datamodules.normalisation.sample_pixels`), compares per-band statistics with the
checkpoint's (:func:`check_radiometry`), applies ``input_scale`` and, for a checkpoint trained
with the ``"scene"`` normalisation, the scene's own robust standardisation.

The comparison, per band ``b``, in log space: the ratios ``mean_scene / mean_train`` and
``std_scene / std_train`` (scene mean and std of the winsorised sample, see
:class:`~rareseg.datamodules.normalisation.BandStatistics`).

- **Scale**: the check warns when a ratio lies outside ``[1 / SCALE_MARGIN, SCALE_MARGIN]``
  (a factor of 3). A candidate factor (a power of ten, or ``2^k``, see :data:`FACTORS`) *explains*
  the mismatch when the scene times the factor passes; of those, the one whose worst ratio is
  closest to 1 is reported, and ``input_scale="auto"`` applies it. A checkpoint trained with the
  ``"scene"`` normalisation is scale invariant: its check never warns about scale.
- **Band order**: the mismatch of an order is the half-range ``(max - min) / 2`` of its log
  ratios (the worst ratio left after the best common factor, so a scale error does not hide an
  order error). A permutation is reported when the given order's mismatch exceeds
  ``log ORDER_MARGIN`` (a factor of 2) and the best permutation's is at most
  ``ORDER_IMPROVEMENT`` (a half) of it.

Either finding gives one :class:`RadiometryWarning` naming the scene, the bands, their observed
range (2nd-98th percentile) and the expected range (training mean +- 2 std), and the factor and
option to apply when a single factor explains it. ``summary.json`` records the check
(:meth:`RadiometryCheck.summary`).
"""

from __future__ import annotations

import itertools
import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np
import rasterio

from rareseg.datamodules.normalisation import BandStatistics, robust_standardisation, sample_pixels
from rareseg.inference.predictor import Predictor

#: A band's mean or std ratio (scene / training) beyond ``[1/SCALE_MARGIN, SCALE_MARGIN]`` warns.
SCALE_MARGIN = 3.0
#: A band order whose worst ratio after the best common factor exceeds this may be permuted.
ORDER_MARGIN = 2.0
#: A permutation is reported when its log mismatch is at most this share of the given order's.
ORDER_IMPROVEMENT = 0.5
#: Orders are searched exhaustively up to this many bands (7! = 5040 permutations).
MAX_PERMUTED_BANDS = 7
#: Expected range shown in the warning: training ``mean +- EXPECTED_STDS * std``.
EXPECTED_STDS = 2.0
#: Candidate single factors: powers of ten (1e-6..1e6) and of two (2^-16..2^16), other than 1.
FACTORS = tuple(sorted({10.0**k for k in range(-6, 7)} | {2.0**k for k in range(-16, 17)} - {1.0}))

InputScale = float | Literal["auto"]


class RadiometryWarning(UserWarning):
    """A scene's radiometric scale or band order does not match the checkpoint's training data."""


def parse_input_scale(value: str | float) -> InputScale:
    """``"auto"`` or a positive finite factor (a number or its text); else a one-line ValueError."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        factor = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"input scale must be a positive number or auto, got {value!r}") from None
    if not (math.isfinite(factor) and factor > 0):
        raise ValueError(f"input scale must be a positive number or auto, got {value!r}")
    return factor


@dataclass(frozen=True)
class RadiometryCheck:
    """The outcome of :func:`check_radiometry` for one scene.

    Attributes:
        scene: the scene's name (its file) as shown in the warning.
        observed: statistics of the scene's sample, times the requested numeric input scale.
        expected_mean: (C,) the checkpoint's band means.
        expected_std: (C,) the checkpoint's band standard deviations.
        scale_bands: 0-based bands whose mean or std ratio is beyond :data:`SCALE_MARGIN`.
        factor: the single factor (power of ten or 2^k) that explains a scale mismatch, or None.
        permutation: ``order[b]`` = the scene band that matches training band ``b``, when a
            permutation matches far better than the given order; else None.
        scale_invariant: the checkpoint normalises each scene by its own statistics.
        input_scale: the factor applied to the bands (1.0 when none).
        requested_scale: the ``input_scale`` asked for (a number or ``"auto"``).
        checked: False when there was nothing to compare (no valid pixel in the sample, or a
            checkpoint without band statistics).
    """

    scene: str
    observed: BandStatistics
    expected_mean: np.ndarray
    expected_std: np.ndarray
    scale_bands: tuple[int, ...]
    factor: float | None
    permutation: tuple[int, ...] | None
    scale_invariant: bool = False
    input_scale: float = 1.0
    requested_scale: InputScale = 1.0
    checked: bool = True

    @property
    def ok(self) -> bool:
        """True when neither the scale nor the band order is in doubt."""
        return not self.scale_bands and self.permutation is None

    @property
    def warning(self) -> str | None:
        """The one-line warning, or None when the check passed."""
        if self.ok:
            return None
        parts = [f"{self.scene}: the radiometry does not match the checkpoint's training data"]
        if self.scale_bands:
            bands = "; ".join(self._band_text(b) for b in self.scale_bands)
            parts.append(f"scale: {bands}")
            if self.requested_scale == "auto" and self.factor is not None:
                parts.append(f"--input-scale auto multiplied the bands by {_factor(self.factor)}")
            elif self.factor is not None:
                parts.append(
                    f"a single factor explains it: multiply the bands by {_factor(self.factor)} "
                    f"(--input-scale {_factor(self.factor)}, or --input-scale auto)"
                )
            else:
                parts.append("no single power-of-ten or 2^k factor explains it")
        if self.permutation is not None:
            order = ", ".join(str(b + 1) for b in self.permutation)
            parts.append(
                f"band order: the scene's bands {order} (in this order) match the training bands 1..{len(order)} far "
                "better than the given order; reorder the bands (e.g. gdal_translate "
                + " ".join(f"-b {b + 1}" for b in self.permutation)
                + ")"
            )
        return "; ".join(parts)

    def _band_text(self, band: int) -> str:
        scene_band = band if self.permutation is None else self.permutation[band]
        low = self.expected_mean[band] - EXPECTED_STDS * self.expected_std[band]
        high = self.expected_mean[band] + EXPECTED_STDS * self.expected_std[band]
        return (
            f"band {scene_band + 1} observed {_number(self.observed.low[scene_band])}-"
            f"{_number(self.observed.high[scene_band])}, "
            f"expected about {_number(low)}-{_number(high)}"
        )

    def summary(self) -> dict[str, Any]:
        """The ``radiometry`` entry of ``summary.json``."""
        return {
            "checked": self.checked,
            "ok": self.ok,
            "warning": self.warning,
            "input_scale": self.input_scale,
            "input_scale_requested": self.requested_scale,
            "detected_factor": self.factor,
            "scale_bands": [b + 1 for b in self.scale_bands],
            "band_order": None if self.permutation is None else [b + 1 for b in self.permutation],
            "scale_invariant": self.scale_invariant,
            "observed": self.observed.summary(),
            "expected": {"mean": self.expected_mean.tolist(), "std": self.expected_std.tolist()},
            "margins": {"scale": SCALE_MARGIN, "order": ORDER_MARGIN, "order_improvement": ORDER_IMPROVEMENT},
        }


def log_ratios(observed: BandStatistics, mean: np.ndarray, std: np.ndarray, order: Sequence[int]) -> np.ndarray:
    """(2, C) ``log(mean_scene[order[b]] / mean[b])`` and ``log(std_scene[order[b]] / std[b])``.

    A non-positive mean on either side gives 0 for that ratio (no evidence); stds are floored at 1e-12.
    """
    index = list(order)
    scene_mean, scene_std = observed.mean[index], observed.std[index]
    positive = (scene_mean > 0) & (mean > 0)
    location = np.where(positive, np.log(np.where(positive, scene_mean, 1.0) / np.where(positive, mean, 1.0)), 0.0)
    spread = np.log(np.maximum(scene_std, 1e-12) / np.maximum(std, 1e-12))
    return np.stack([location, spread])


def order_mismatch(ratios: np.ndarray) -> float:
    """Worst log ratio left after the best common factor: ``(max - min) / 2`` of the log ratios."""
    return float(ratios.max() - ratios.min()) / 2


def check_radiometry(
    observed: BandStatistics,
    band_mean: Sequence[float],
    band_std: Sequence[float],
    scene: str,
    *,
    scale_invariant: bool = False,
) -> RadiometryCheck:
    """Compare a scene's band statistics with the checkpoint's (see the module docstring for the rules).

    Args:
        observed: statistics of the scene's sample (times any input scale already applied).
        band_mean: (C,) the checkpoint's per-band means.
        band_std: (C,) the checkpoint's per-band standard deviations.
        scene: the scene's name for the warning.
        scale_invariant: the checkpoint uses the ``"scene"`` normalisation (no scale finding).

    Returns:
        The check; its ``factor`` is the one that explains a scale mismatch (None if none).
    """
    mean, std = np.asarray(band_mean, dtype=np.float64), np.asarray(band_std, dtype=np.float64)
    bands = len(mean)
    given = log_ratios(observed, mean, std, range(bands))
    permutation = _better_order(observed, mean, std, given)
    ratios = given if permutation is None else log_ratios(observed, mean, std, permutation)
    limit = math.log(SCALE_MARGIN)
    scale_bands: tuple[int, ...] = ()
    factor = None
    if not scale_invariant:
        scale_bands = tuple(int(b) for b in np.flatnonzero((np.abs(ratios) > limit).any(axis=0)))
        if scale_bands:
            worst = {f: float(np.abs(ratios + math.log(f)).max()) for f in FACTORS}
            best = min(worst, key=lambda f: (worst[f], abs(math.log10(f) - round(math.log10(f)))))
            factor = best if worst[best] <= limit else None
    return RadiometryCheck(scene, observed, mean, std, scale_bands, factor, permutation, scale_invariant)


def _better_order(
    observed: BandStatistics, mean: np.ndarray, std: np.ndarray, given: np.ndarray
) -> tuple[int, ...] | None:
    """The band permutation that matches far better than the given order, or None."""
    bands = len(mean)
    mismatch = order_mismatch(given)
    if bands < 2 or bands > MAX_PERMUTED_BANDS or mismatch <= math.log(ORDER_MARGIN):
        return None
    scores = {
        order: order_mismatch(log_ratios(observed, mean, std, order)) for order in itertools.permutations(range(bands))
    }
    best = min(scores, key=scores.__getitem__)
    return best if scores[best] <= ORDER_IMPROVEMENT * mismatch else None


def prepare_scene(
    predictor: Predictor, src: rasterio.DatasetReader, scene: str, input_scale: InputScale = 1.0
) -> tuple[Predictor, RadiometryCheck]:
    """Check a scene's radiometry and return the predictor to predict it with, and the check.

    The scene is sampled once (:func:`~rareseg.datamodules.normalisation.sample_pixels`). A
    numeric ``input_scale`` multiplies the bands before normalisation (the check sees the scaled
    sample); ``"auto"`` applies the factor the check finds on the unscaled sample (1 when none).
    A warning (:class:`RadiometryWarning`) is issued when the check fails. A checkpoint without band
    statistics (mean 0, std 1: its inputs are not normalised) and a scene without valid pixels are
    not checked (``auto`` then applies 1). For a checkpoint with
    the ``"scene"`` normalisation, the returned predictor standardises with the scaled sample's
    median and robust spread (:func:`~rareseg.datamodules.normalisation.robust_standardisation`).

    Args:
        predictor: the loaded model (its band statistics are the expected ones).
        src: the open scene.
        scene: the scene's name for the warning (its file name or the upload's name).
        input_scale: a positive factor or ``"auto"``.

    Returns:
        A predictor for this scene (sharing the model) and the check.

    Raises:
        ValueError: a bad ``input_scale``.
    """
    requested = parse_input_scale(input_scale)
    scale = 1.0 if requested == "auto" else requested
    pixels = sample_pixels(src)
    scale_invariant = predictor.normalisation == "scene"
    mean, std = predictor.band_mean.astype(np.float64), predictor.band_std.astype(np.float64)
    if pixels.shape[1] == 0:  # nothing valid to compare; the pass predicts nothing either
        nothing = np.full(len(mean), np.nan)
        observed = BandStatistics(nothing, nothing, nothing, nothing, nothing, 0)
        return replace(predictor, input_scale=scale), RadiometryCheck(
            scene, observed, mean, std, (), None, None, scale_invariant, scale, requested, checked=False
        )
    observed = BandStatistics.of(pixels * scale)
    if not mean.any() and (std == 1).all():  # a checkpoint without band statistics: nothing to compare with
        check = RadiometryCheck(scene, observed, mean, std, (), None, None, scale_invariant, checked=False)
    else:
        check = check_radiometry(observed, mean, std, scene, scale_invariant=scale_invariant)
    if requested == "auto" and check.factor is not None:
        scale = check.factor
    check = replace(check, input_scale=scale, requested_scale=requested)
    if check.warning is not None:
        warnings.warn(check.warning, RadiometryWarning, stacklevel=2)
    if not scale_invariant:
        return replace(predictor, input_scale=scale), check
    median, sigma = robust_standardisation(pixels * scale)
    return replace(
        predictor, band_mean=median.astype(np.float32), band_std=sigma.astype(np.float32), input_scale=scale
    ), check


def _factor(value: float) -> str:
    """A factor written exactly enough to paste as an option (``0.1``, ``0.015625``, ``10000``)."""
    return f"{value:.12g}"


def _number(value: float) -> str:
    """A short human-readable number: whole from 100 up, else 3 significant digits (``1e-05`` style when tiny)."""
    return f"{value:.0f}" if abs(value) >= 100 else f"{value:.3g}"
