"""Segmentation scores of a confusion matrix (pure numpy): per class and the rare-class summary."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def per_class_scores(confusion_matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class scores of a confusion matrix.

    With ``TP_c = M[c, c]``, ``T_c = sum_j M[c, j]`` (pixels whose truth is ``c``) and
    ``P_c = sum_i M[i, c]`` (pixels predicted ``c``):
    ``recall = TP/T``, ``precision = TP/P``, ``iou = TP/(T + P - TP)``, ``f1 = 2 TP/(T + P)``.
    A score whose denominator is 0 is NaN.

    Args:
        confusion_matrix: ``(K, K)`` pixel counts, rows = truth, columns = prediction.

    Returns:
        ``{"iou", "recall", "precision", "f1", "support"}``, each ``(K,)`` float64;
        ``support`` is ``T_c``.
    """
    matrix = np.asarray(confusion_matrix, dtype=np.float64)
    true_positive = np.diag(matrix)
    support = matrix.sum(axis=1)
    predicted = matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "iou": true_positive / (support + predicted - true_positive),
            "recall": true_positive / support,
            "precision": true_positive / predicted,
            "f1": 2 * true_positive / (support + predicted),
            "support": support,
        }


def summary_scores(
    confusion_matrix: np.ndarray, rare_classes: Sequence[int], majority_class: int | None = None
) -> dict[str, float]:
    """The headline scores of a confusion matrix.

    Args:
        confusion_matrix: ``(K, K)`` pixel counts, rows = truth, columns = prediction.
        rare_classes: ids of the rare classes.
        majority_class: id whose precision is the guard; ``None`` picks the class with the most
            truth pixels.

    Returns:
        ``rare_recall`` and ``rare_iou`` (means over rare classes), ``miou`` (mean IoU over all
        classes) and ``majority_precision``; means skip NaN scores and are NaN when all are NaN.
    """
    scores = per_class_scores(confusion_matrix)
    rare = list(rare_classes)
    majority = int(np.argmax(scores["support"])) if majority_class is None else majority_class
    return {
        "rare_recall": _nanmean(scores["recall"][rare]),
        "rare_iou": _nanmean(scores["iou"][rare]),
        "miou": _nanmean(scores["iou"]),
        "majority_precision": float(scores["precision"][majority]),
    }


def _nanmean(values: np.ndarray) -> float:
    finite = values[~np.isnan(values)]
    return float(finite.mean()) if finite.size else float("nan")


def confusion_matrix(truth: np.ndarray, prediction: np.ndarray, num_classes: int) -> np.ndarray:
    """Pixel counts ``M[t, p]`` of truth ``t`` predicted as ``p``.

    Args:
        truth: (N,) class ids in ``[0, K)`` (drop ignored pixels first).
        prediction: (N,) class ids in ``[0, K)``.
        num_classes: ``K``.

    Returns:
        ``(K, K)`` int64, rows = truth, columns = prediction.
    """
    index = num_classes * np.asarray(truth, dtype=np.int64) + np.asarray(prediction, dtype=np.int64)
    return np.bincount(index.ravel(), minlength=num_classes * num_classes).reshape(num_classes, num_classes)
