"""Probability histograms and the one routine that turns them into precision, recall and F1 per threshold.

One bin convention serves threshold calibration (``ThresholdCalibrator``), the precision-recall
curves and the reliability diagrams of ``rareseg evaluate``: ``n`` equal bins of ``[0, 1]``, bin
``b`` holding the probabilities ``t_b <= p < t_{b+1}`` with lower edges ``t_b = b / n`` (the last
bin also holds ``p = 1``). The candidate thresholds of the rule "class if ``p >= t``" are the lower
edges, so the pixels with ``p >= t_b`` are exactly those in bins ``b..n-1``. Edges and
probabilities are compared in the probabilities' floating dtype, which makes that statement exact.

torchmetrics' ``MulticlassPrecisionRecallCurve`` with fixed thresholds compares every pixel with
every threshold (``O(pixels * thresholds)`` per batch) and ``BinaryCalibrationError`` keeps every
pixel until ``compute``; a histogram is ``O(pixels log n)`` and its size does not grow with the data.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def bin_edges(num_bins: int, dtype: torch.dtype = torch.float32, device: torch.device | None = None) -> Tensor:
    """Lower bin edges (= candidate thresholds) ``t_b = b / num_bins``, ``b = 0..num_bins-1``.

    Each is the value of ``dtype`` nearest to the exact fraction.

    Raises:
        ValueError: ``num_bins < 1``.
    """
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}")
    return (torch.arange(num_bins, dtype=torch.float64) / num_bins).to(dtype=dtype, device=device)


def probability_bins(probs: Tensor, num_bins: int) -> Tensor:
    """Bin of every probability: the number of lower edges ``t_b <= p``, minus one (int64, same shape).

    float32 and float64 probabilities are compared in their own dtype, others in float32; values
    below 0 fall in bin 0 and values of 1 or more in the last bin.
    """
    if probs.dtype not in (torch.float32, torch.float64):
        probs = probs.float()
    edges = bin_edges(num_bins, probs.dtype, probs.device)
    return (torch.bucketize(probs.contiguous(), edges, right=True) - 1).clamp_(min=0)


def probability_histograms(probs: Tensor, positive: Tensor, num_bins: int) -> Tensor:
    """Pixels per probability bin (:func:`probability_bins`), split by truth, for ``R`` classes at once.

    Args:
        probs: ``(R, M)`` probability of each of ``R`` classes for ``M`` pixels.
        positive: ``(R, M)`` bool, whether the pixel's truth is that class.
        num_bins: number of bins ``n``.

    Returns:
        ``(R, 2, n)`` int64 counts on the device of ``probs``; ``[:, 0]`` negatives, ``[:, 1]`` positives.
    """
    classes = probs.shape[0]
    bins = probability_bins(probs, num_bins)
    offsets = torch.arange(classes, device=probs.device).unsqueeze(1) * (2 * num_bins)
    index = offsets + positive.long() * num_bins + bins
    return torch.bincount(index.flatten(), minlength=classes * 2 * num_bins).view(classes, 2, num_bins)


def precision_recall_f1(negatives: np.ndarray, positives: np.ndarray) -> dict[str, np.ndarray]:
    """Precision, recall and F1 of the rule "class if ``p >= t_b``" at every threshold, from per-bin counts.

    With ``TP_b = sum_{j >= b} positives_j`` and ``FP_b = sum_{j >= b} negatives_j`` (suffix sums)
    and ``P = sum_j positives_j``: ``precision_b = TP_b / (TP_b + FP_b)``, ``recall_b = TP_b / P``,
    ``F1_b = 2 TP_b / (TP_b + FP_b + P)``. Precision is NaN where nothing is predicted; recall and
    F1 are NaN everywhere when ``P = 0``.

    Args:
        negatives: ``(n,)`` pixels of other classes per bin.
        positives: ``(n,)`` pixels of the class per bin.

    Returns:
        ``true_positive``, ``predicted``, ``precision``, ``recall``, ``f1``, each ``(n,)`` float64.
    """
    positives = np.asarray(positives, dtype=np.float64)
    negatives = np.asarray(negatives, dtype=np.float64)
    true_positive = np.cumsum(positives[::-1])[::-1]
    predicted = true_positive + np.cumsum(negatives[::-1])[::-1]
    total = positives.sum()
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = true_positive / predicted
    if total == 0:
        undefined = np.full_like(true_positive, np.nan)
        return {
            "true_positive": true_positive,
            "predicted": predicted,
            "precision": precision,
            "recall": undefined,
            "f1": undefined.copy(),
        }
    return {
        "true_positive": true_positive,
        "predicted": predicted,
        "precision": precision,
        "recall": true_positive / total,
        "f1": 2 * true_positive / (predicted + total),
    }


def best_f1_threshold(negatives: np.ndarray, positives: np.ndarray, thresholds: np.ndarray) -> tuple[float, float]:
    """The threshold with the highest F1 (:func:`precision_recall_f1`); ties go to the lowest threshold.

    Args:
        negatives: ``(n,)`` negative pixel counts per bin.
        positives: ``(n,)`` positive pixel counts per bin.
        thresholds: ``(n,)`` the bins' lower edges.

    Returns:
        ``(threshold, f1)``; ``(nan, nan)`` when there is no positive pixel.
    """
    f1 = precision_recall_f1(negatives, positives)["f1"]
    if np.isnan(f1).all():
        return float("nan"), float("nan")
    best = int(np.argmax(f1))
    return float(thresholds[best]), float(f1[best])
