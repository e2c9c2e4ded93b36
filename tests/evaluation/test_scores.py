"""Tests for rareseg.evaluation.scores against float64 recomputations from the pixels."""

import numpy as np
import pytest

from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability


def _pixels(seed: int = 0, count: int = 5000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    probs = rng.random(count)
    probs[:7] = 1.0  # exactly 1 belongs to the last bin
    probs[7:11] = 0.0
    positive = rng.random(count) < probs**2
    return probs, positive


def test_histogram_bins_match_a_direct_count_and_adding_is_pixelwise() -> None:
    probs, positive = _pixels()
    histogram = ProbabilityHistogram.empty(10)
    histogram.update(probs[:2000], positive[:2000])
    second = ProbabilityHistogram.empty(10)
    second.update(probs[2000:], positive[2000:])
    total = histogram + second
    bins = np.minimum(np.floor(probs * 10), 9).astype(int)
    for b in range(10):
        assert total.counts[b] == np.sum(bins == b)
        assert total.positives[b] == np.sum(positive & (bins == b))
        assert total.prob_sums[b] == pytest.approx(probs[bins == b].sum(), rel=1e-12)
    assert total.counts[9] >= 7 and total.counts.sum() == probs.size


def test_reliability_and_ece_match_float64_recomputation() -> None:
    probs, positive = _pixels(1)
    histogram = ProbabilityHistogram.empty(8)
    histogram.update(probs, positive)
    table = reliability(histogram)
    bins = np.minimum(np.floor(probs * 8), 7).astype(int)
    expected_ece = 0.0
    for b in range(8):
        members = bins == b
        confidence, frequency = probs[members].mean(), positive[members].mean()
        assert table["confidence"][b] == pytest.approx(confidence, rel=1e-12)
        assert table["frequency"][b] == pytest.approx(frequency, rel=1e-12)
        expected_ece += members.mean() * abs(confidence - frequency)
    assert table["ece"] == pytest.approx(expected_ece, rel=1e-12)
    assert table["bin_edges"][[0, 4, 8]] == pytest.approx([0.0, 0.5, 1.0])


def test_reliability_of_a_perfectly_calibrated_hand_case_and_of_nothing() -> None:
    histogram = ProbabilityHistogram.empty(2)
    # bin 0: probabilities 0.25 x4, one positive -> calibrated; bin 1: 0.75 x4, two positives -> off by 0.25
    histogram.update(np.array([0.25] * 4 + [0.75] * 4), np.array([1, 0, 0, 0, 1, 1, 0, 0], bool))
    table = reliability(histogram)
    assert table["ece"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.25)
    empty = reliability(ProbabilityHistogram.empty(3))
    assert np.isnan(empty["ece"]) and np.isnan(empty["confidence"]).all()


def test_pr_curve_matches_thresholding_the_pixels_at_bin_edges() -> None:
    probs, positive = _pixels(2)
    histogram = ProbabilityHistogram.empty(20)
    histogram.update(probs, positive)
    curve = precision_recall_curve(histogram)
    for b, threshold in enumerate(curve["thresholds"]):
        # the bin of p is floor(20 p) (1.0 in the last); p is in a bin >= b exactly when bin(p) >= b
        selected = np.minimum(np.floor(probs * 20), 19) >= b
        true_positive = np.sum(selected & positive)
        assert threshold == pytest.approx(b / 20)
        assert curve["precision"][b] == pytest.approx(true_positive / selected.sum(), rel=1e-12)
        assert curve["recall"][b] == pytest.approx(true_positive / positive.sum(), rel=1e-12)
    recall, precision = curve["recall"], curve["precision"]
    expected_ap = sum((recall[b] - (recall[b + 1] if b < 19 else 0.0)) * precision[b] for b in range(20))
    assert curve["average_precision"] == pytest.approx(expected_ap, rel=1e-12)
    assert curve["recall"][0] == 1.0


def test_pr_curve_hand_case_and_a_class_without_pixels() -> None:
    histogram = ProbabilityHistogram.empty(2)
    histogram.update(np.array([0.2, 0.2, 0.9, 0.9]), np.array([1, 0, 1, 1], bool))
    curve = precision_recall_curve(histogram)
    assert curve["precision"].tolist() == pytest.approx([0.75, 1.0])
    assert curve["recall"].tolist() == pytest.approx([1.0, 2 / 3])
    assert curve["average_precision"] == pytest.approx((1 - 2 / 3) * 0.75 + 2 / 3 * 1.0)
    none = ProbabilityHistogram.empty(2)
    none.update(np.array([0.1, 0.7]), np.array([0, 0], bool))
    assert np.isnan(precision_recall_curve(none)["average_precision"])


def test_empty_histogram_needs_a_bin() -> None:
    with pytest.raises(ValueError, match="num_bins must be >= 1"):
        ProbabilityHistogram.empty(0)
