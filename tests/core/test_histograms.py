"""Tests for rareseg.core.histograms: the bin convention, the histograms and the precision/recall/F1 routine."""

import numpy as np
import pytest
import torch

from rareseg.core.histograms import (
    best_f1_threshold,
    bin_edges,
    precision_recall_f1,
    probability_bins,
    probability_histograms,
)


def test_bins_are_equal_fifths_with_one_in_the_last() -> None:
    probs = torch.tensor([[0.0, 0.24, 0.25, 0.99, 1.0], [0.5, 0.5, 0.74, 0.1, 0.3]])
    positive = torch.tensor([[True, False, True, True, False], [False, True, True, False, False]])
    assert probability_bins(probs, 5).tolist() == [[0, 1, 1, 4, 4], [2, 2, 3, 0, 1]]
    counts = probability_histograms(probs, positive, 5)
    assert counts.tolist() == [
        [[0, 1, 0, 0, 1], [1, 1, 0, 0, 1]],
        [[1, 1, 1, 0, 0], [0, 0, 1, 1, 0]],
    ]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probability_at_or_above_a_lower_edge_is_exactly_in_the_bins_from_there(dtype: torch.dtype) -> None:
    generator = torch.Generator().manual_seed(0)
    edges = bin_edges(10, dtype)
    near = torch.cat([edges, torch.nextafter(edges, torch.zeros_like(edges)), edges + 1e-9])
    probs = torch.cat([torch.rand(5000, generator=generator, dtype=dtype), near.to(dtype), torch.ones(3, dtype=dtype)])
    bins = probability_bins(probs, 10)
    for b, edge in enumerate(edges):
        np.testing.assert_array_equal((bins >= b).numpy(), (probs >= edge).numpy())
    assert bins.min() == 0 and bins.max() == 9


def test_precision_recall_f1_hand_case() -> None:
    # 4 positives: 1 in bin 0, 3 in bin 1; negatives: 10 in bin 0, 1 in bin 1
    scores = precision_recall_f1(np.array([10, 1, 0]), np.array([1, 3, 0]))
    np.testing.assert_allclose(scores["precision"][:2], [4 / 15, 3 / 4])
    np.testing.assert_allclose(scores["recall"], [1.0, 3 / 4, 0.0])
    np.testing.assert_allclose(scores["f1"], [8 / 19, 6 / 8, 0.0])
    assert np.isnan(scores["precision"][2])  # nothing predicted at the last threshold
    none = precision_recall_f1(np.array([3, 0]), np.zeros(2))
    assert np.isnan(none["recall"]).all() and np.isnan(none["f1"]).all()


def test_best_f1_threshold_hand_case() -> None:
    thresholds = np.array([0.0, 0.5, 1.0])
    # 4 positives: 1 in bin 0, 3 in bin 1; negatives: 10 in bin 0, 1 in bin 1
    # t=0: TP 4 FP 11 -> 8/19; t=0.5: TP 3 FP 1 FN 1 -> 6/8; t=1: TP 0 -> 0
    threshold, f1 = best_f1_threshold(np.array([10, 1, 0]), np.array([1, 3, 0]), thresholds)
    assert threshold == 0.5
    assert f1 == pytest.approx(0.75)
    assert np.isnan(best_f1_threshold(np.array([3, 0, 0]), np.zeros(3), thresholds)[0])
