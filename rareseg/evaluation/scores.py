"""Evaluation math on binned probabilities: the histogram accumulator, reliability (ECE) and precision-recall curves.

Bins follow the one convention of :mod:`rareseg.core.histograms` (the one ``ThresholdCalibrator``
uses), and the curves come from its :func:`~rareseg.core.histograms.precision_recall_f1`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from rareseg.core.histograms import precision_recall_f1, probability_bins


@dataclass
class ProbabilityHistogram:
    """Pixel counts of one class's predicted probability in ``num_bins`` equal bins of ``[0, 1]``.

    Bin ``b`` holds probabilities in ``[b / n, (b + 1) / n)``; a probability of exactly 1 falls in the
    last bin (:func:`~rareseg.core.histograms.probability_bins`).

    Attributes:
        counts: ``(n,)`` pixels per bin.
        prob_sums: ``(n,)`` sum of the predicted probabilities of those pixels.
        positives: ``(n,)`` pixels whose truth is the class.
    """

    counts: np.ndarray
    prob_sums: np.ndarray
    positives: np.ndarray

    @classmethod
    def empty(cls, num_bins: int) -> ProbabilityHistogram:
        """A histogram with no pixels.

        Raises:
            ValueError: ``num_bins < 1``.
        """
        if num_bins < 1:
            raise ValueError(f"num_bins must be >= 1, got {num_bins}")
        return cls(np.zeros(num_bins, np.int64), np.zeros(num_bins, np.float64), np.zeros(num_bins, np.int64))

    @property
    def num_bins(self) -> int:
        """Number of bins."""
        return len(self.counts)

    def update(self, probs: np.ndarray, is_positive: np.ndarray) -> None:
        """Add pixels.

        Args:
            probs: ``(N,)`` predicted probabilities of the class, in ``[0, 1]``.
            is_positive: ``(N,)`` bool, truth is the class.
        """
        probs = np.ascontiguousarray(probs).ravel()
        if probs.dtype not in (np.float32, np.float64):
            probs = probs.astype(np.float64)
        bins = probability_bins(torch.from_numpy(probs), self.num_bins).numpy()
        self.counts += np.bincount(bins, minlength=self.num_bins)
        self.prob_sums += np.bincount(bins, weights=probs, minlength=self.num_bins)
        self.positives += np.bincount(
            bins, weights=np.asarray(is_positive, bool).ravel(), minlength=self.num_bins
        ).astype(np.int64)

    def __add__(self, other: ProbabilityHistogram) -> ProbabilityHistogram:
        """Pixel-wise sum of two histograms with the same bins."""
        return ProbabilityHistogram(
            self.counts + other.counts, self.prob_sums + other.prob_sums, self.positives + other.positives
        )


def reliability(histogram: ProbabilityHistogram) -> dict[str, np.ndarray | float]:
    """Calibration of one class's probabilities.

    Per bin ``b`` with ``n_b`` pixels: ``confidence_b = sum p / n_b`` (mean predicted probability)
    and ``frequency_b = positives_b / n_b`` (observed share of the class); the expected calibration
    error is ``ECE = sum_b (n_b / N) |confidence_b - frequency_b|`` over non-empty bins.

    Args:
        histogram: the class's :class:`ProbabilityHistogram`.

    Returns:
        ``confidence`` and ``frequency`` ``(n,)`` (NaN for empty bins), ``count`` ``(n,)``,
        ``bin_edges`` ``(n + 1,)`` and ``ece`` (NaN when there are no pixels).
    """
    counts = histogram.counts.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        confidence = histogram.prob_sums / counts
        frequency = histogram.positives / counts
    total = counts.sum()
    filled = counts > 0
    ece = (
        float(np.sum(counts[filled] / total * np.abs(confidence[filled] - frequency[filled])))
        if total
        else float("nan")
    )
    return {
        "confidence": confidence,
        "frequency": frequency,
        "count": histogram.counts.copy(),
        "bin_edges": np.linspace(0.0, 1.0, histogram.num_bins + 1),
        "ece": ece,
    }


def precision_recall_curve(histogram: ProbabilityHistogram) -> dict[str, np.ndarray | float]:
    """Precision, recall and F1 of "class if p >= t" at each bin's lower edge ``t_b = b / n``.

    ``TP(t_b) = sum_{j >= b} positives_j``, ``predicted(t_b) = sum_{j >= b} n_j``,
    ``precision = TP / predicted`` (NaN when nothing is predicted), ``recall = TP / sum positives``
    (:func:`~rareseg.core.histograms.precision_recall_f1`, the routine threshold calibration uses).
    Average precision is the step-wise area ``AP = sum_b (R_b - R_{b+1}) P_b`` over thresholds with
    a defined precision (``R_n = 0``). Pixels inside one bin share a threshold, so this is the
    exact curve of the binned scores.

    Args:
        histogram: the class's :class:`ProbabilityHistogram`.

    Returns:
        ``thresholds``, ``precision``, ``recall``, ``f1`` ``(n,)`` and ``average_precision``
        (NaN when the class has no pixels).
    """
    scores = precision_recall_f1(histogram.counts - histogram.positives, histogram.positives)
    precision, recall = scores["precision"], scores["recall"]
    next_recall = np.append(recall[1:], 0.0)
    defined = ~np.isnan(precision)
    positives = histogram.positives.sum()
    average_precision = (
        float(np.sum((recall - next_recall)[defined] * precision[defined])) if positives else float("nan")
    )
    return {
        "thresholds": np.arange(histogram.num_bins) / histogram.num_bins,
        "precision": precision,
        "recall": recall,
        "f1": scores["f1"],
        "average_precision": average_precision,
    }
