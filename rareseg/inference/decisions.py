"""Per-pixel decisions of whole-scene prediction (pure functions): classes, encoded outputs and top-k saliency.

:func:`deployed_classes` is *the* decision rule users get: ``rareseg infer``, ``rareseg predict``,
the web page and the headline scores of ``rareseg evaluate`` all apply it to the same blended
probabilities (:class:`~rareseg.inference.tiling.BlendedRows`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rareseg.core.conventions import DECISION_RULES, IGNORE_INDEX
from rareseg.core.pixels import nodata_pixels as nodata_pixels  # re-export: the one validity rule
from rareseg.inference.rasters import PROBABILITY_SCALE
from rareseg.inference.tiling import BlendedRows

#: Saliency scores in [0, 1] are quantised to integer levels ``0..SALIENCY_LEVELS`` for the scene histogram.
SALIENCY_LEVELS = 65534
#: Level of nodata pixels in saliency-level arrays (valid levels are ``0..SALIENCY_LEVELS``).
SALIENCY_NODATA = SALIENCY_LEVELS + 1


def assign_classes(
    probs: np.ndarray, rare_classes: Sequence[int], thresholds: Sequence[float], rule: str = "override"
) -> np.ndarray:
    """Class per pixel under a decision rule of :data:`~rareseg.core.conventions.DECISION_RULES`.

    ``override``: ``c(i) = argmax_k P_k(i)``, except where some selected rare class ``r`` has
    ``P_r(i) >= t_r``: then ``c(i) = argmax_{r : P_r(i) >= t_r} P_r(i)`` even when another class has a
    higher probability (recall control). With ``t_r = 0.5`` this equals the argmax except on exact ties.

    ``calibrated``: ``c(i) = argmax_{r : P_r(i) >= t_r} P_r(i)`` when some selected rare class reaches
    its threshold, else ``argmax_{k not selected} P_k(i)``: a threshold above the argmax's level also
    removes rare pixels, so the decision is the per-class rule "``P_r >= t_r``" the thresholds were
    calibrated for.

    Args:
        probs: (K, H, W) class probabilities.
        rare_classes: ids of the selected rare classes.
        thresholds: one threshold in ``[0, 1]`` per selected rare class, same order.
        rule: ``"override"`` or ``"calibrated"``.

    Returns:
        (H, W) int64 class ids.
    """
    return override_rare_classes(
        _base_classes(probs, rare_classes, rule), probs[list(rare_classes)], rare_classes, thresholds
    )


def _base_classes(scores: np.ndarray, rare_classes: Sequence[int], rule: str) -> np.ndarray:
    """The class a pixel gets when no selected rare class reaches its threshold, from (K, ...) scores.

    Scores may be probabilities or any positive multiple of them per pixel (e.g. blended sums).
    """
    check_rule(rule)
    if rule == "override":
        return scores.argmax(axis=0)
    others = [k for k in range(scores.shape[0]) if k not in set(rare_classes)]
    if not others:
        raise ValueError("the calibrated decision rule needs at least one class that is not a selected rare class")
    return np.asarray(others)[scores[others].argmax(axis=0)]


def check_rule(rule: str) -> None:
    """Raise ValueError for a name that is not in :data:`~rareseg.core.conventions.DECISION_RULES`."""
    if rule not in DECISION_RULES:
        raise ValueError(f"decision rule must be one of {', '.join(DECISION_RULES)}, got {rule!r}")


def override_rare_classes(
    classes: np.ndarray, rare_probs: np.ndarray, rare_classes: Sequence[int], thresholds: Sequence[float]
) -> np.ndarray:
    """The threshold rule of :func:`assign_classes` applied to precomputed argmax classes.

    Lets a caller take the argmax of anything with the same per-pixel order as the probabilities
    (e.g. weighted sums before division by the positive weight) and normalise only the rare planes.

    Args:
        classes: (H, W) argmax class ids.
        rare_probs: (R, H, W) probabilities of the selected rare classes.
        rare_classes: the R class ids.
        thresholds: one threshold per selected rare class, same order.

    Returns:
        (H, W) int64 class ids.
    """
    if len(rare_classes) != len(thresholds) or len(rare_classes) != len(rare_probs):
        raise ValueError(
            f"override_rare_classes: {len(rare_classes)} rare classes, {len(rare_probs)} probability planes,"
            f" {len(thresholds)} thresholds"
        )
    result = classes.astype(np.int64)
    best = np.full(classes.shape, -np.inf, dtype=rare_probs.dtype)
    for class_id, plane, threshold in zip(rare_classes, rare_probs, thresholds):
        wins = (plane >= threshold) & (plane > best)  # ties between rare classes: the first listed
        result[wins] = class_id
        np.copyto(best, plane, where=wins)
    return result


def deployed_classes(
    rows: BlendedRows, rare_classes: Sequence[int], thresholds: Sequence[float], rule: str = "override"
) -> tuple[np.ndarray, np.ndarray]:
    """The deployed decision of a band of blended rows: :func:`assign_classes` under ``rule``.

    Args:
        rows: the blended outputs.
        rare_classes: ids of the selected rare classes.
        thresholds: one threshold per selected rare class, same order.
        rule: ``"override"`` or ``"calibrated"`` (see :func:`assign_classes`).

    Returns:
        (n, W) int64 classes (nodata pixels included; callers mask them with ``rows.valid``) and the
        (R, n, W) float32 blended probabilities of the selected rare classes.
    """
    rare_probs = rows.probabilities(rare_classes)
    base = _base_classes(rows.prob_sums, rare_classes, rule)  # the weights are positive: same argmax
    return override_rare_classes(base, rare_probs, rare_classes, thresholds), rare_probs


@dataclass(frozen=True)
class Decisions:
    """Encoded outputs of a band of rows, nodata where the input is nodata.

    Attributes:
        mask: (n, W) uint8 class ids, :data:`~rareseg.core.conventions.IGNORE_INDEX` = nodata.
        probabilities: (R, n, W) uint8 percent ``round(P / PROBABILITY_SCALE)`` of the selected rare classes.
        levels: (n, W) uint16 saliency levels (:func:`quantise_saliency`), :data:`SALIENCY_NODATA` = nodata.
        valid: (n, W) bool.
    """

    mask: np.ndarray
    probabilities: np.ndarray
    levels: np.ndarray
    valid: np.ndarray


def decide_rows(
    rows: BlendedRows, rare_classes: Sequence[int], thresholds: Sequence[float], saliency_channels: Sequence[int]
) -> Decisions:
    """Class mask (:func:`deployed_classes`), percent probabilities and saliency levels of finished rows.

    The saliency score is ``max_r`` of the blended saliency of ``saliency_channels`` (planes of
    ``rows.saliency_sums``), or ``max_r P_r`` over the selected rare classes without a saliency head.
    """
    valid = rows.valid
    classes, rare_probs = deployed_classes(rows, rare_classes, thresholds)
    mask = np.where(valid, classes, IGNORE_INDEX).astype(np.uint8)
    percent = np.where(valid, np.rint(rare_probs / PROBABILITY_SCALE), IGNORE_INDEX).astype(np.uint8)
    score = (
        rare_probs.max(axis=0)
        if rows.saliency_sums is None
        else (rows.saliency_sums[list(saliency_channels)] / rows.weights).max(axis=0)
    )
    levels = np.where(valid, quantise_saliency(score), SALIENCY_NODATA).astype(np.uint16)
    return Decisions(mask, percent, levels, valid)


def quantise_saliency(scores: np.ndarray) -> np.ndarray:
    """Saliency scores in [0, 1] to levels ``round(s * SALIENCY_LEVELS)`` as uint16 (H, W)."""
    return np.rint(np.clip(scores, 0.0, 1.0) * SALIENCY_LEVELS).astype(np.uint16)


def topk_level(histogram: np.ndarray, percent: float) -> int | None:
    """Lowest saliency level that keeps the top ``percent`` % of pixels.

    With ``N = sum(histogram)`` and ``n = ceil(percent / 100 * N)``, the result is the largest
    level ``t`` with ``#{pixels with level >= t} >= n``: thresholding at ``>= t`` selects at
    least ``percent`` % of the pixels, more only by the pixels tied at level ``t``.

    Args:
        histogram: (L,) pixel counts per level.
        percent: share of pixels to keep, in ``(0, 100]``.

    Returns:
        The level ``t``, or None when the histogram is empty.
    """
    if not 0 < percent <= 100:
        raise ValueError(f"topk_level: percent must be in (0, 100], got {percent}")
    total = int(histogram.sum())
    if total == 0:
        return None
    wanted = max(1, math.ceil(round(percent * total / 100, 9)))
    at_least = np.cumsum(histogram[::-1])[::-1]
    return int(np.flatnonzero(at_least >= wanted)[-1])
