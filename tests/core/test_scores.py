"""Tests for rareseg.core.scores: hand-worked confusion matrices."""

import math

import numpy as np
import pytest

from rareseg.core.scores import confusion_matrix, per_class_scores, summary_scores


def test_pure_scores_hand_case() -> None:
    matrix = np.array([[5, 1, 0], [2, 2, 0], [0, 0, 0]])
    scores = per_class_scores(matrix)
    np.testing.assert_allclose(scores["recall"][:2], [5 / 6, 2 / 4])
    np.testing.assert_allclose(scores["precision"][:2], [5 / 7, 2 / 3])
    np.testing.assert_allclose(scores["iou"][:2], [5 / 8, 2 / 5])
    np.testing.assert_allclose(scores["f1"][:2], [10 / 13, 4 / 7])
    assert np.isnan(scores["iou"][2]) and np.isnan(scores["recall"][2])
    summary = summary_scores(matrix, rare_classes=[1, 2])
    assert summary["rare_recall"] == pytest.approx(0.5)
    assert summary["miou"] == pytest.approx((5 / 8 + 2 / 5) / 2)
    assert summary["majority_precision"] == pytest.approx(5 / 7)
    assert math.isnan(summary_scores(matrix, rare_classes=[2])["rare_iou"])


def test_confusion_matrix_counts_truth_rows_and_prediction_columns() -> None:
    truth = np.array([0, 0, 1, 2, 2, 2])
    prediction = np.array([0, 1, 1, 2, 0, 2])
    np.testing.assert_array_equal(
        confusion_matrix(truth, prediction, 4), [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 2, 0], [0] * 4]
    )
