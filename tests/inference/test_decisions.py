"""Tests for rareseg.inference.decisions."""

from __future__ import annotations

import numpy as np
import pytest

from rareseg.inference.decisions import (
    SALIENCY_LEVELS,
    assign_classes,
    deployed_classes,
    nodata_pixels,
    override_rare_classes,
    quantise_saliency,
    topk_level,
)
from rareseg.inference.tiling import BlendedRows


def _probs(*pixels: list[float]) -> np.ndarray:
    """(K, 1, N) probabilities from per-pixel lists."""
    return np.asarray(pixels, dtype=np.float32).T[:, None, :]


def test_rare_class_at_threshold_wins_over_the_argmax() -> None:
    probs = _probs(
        [0.5, 0.1, 0.05, 0.05, 0.3, 0.0],  # argmax cropland, water 0.3
        [0.6, 0.1, 0.05, 0.05, 0.2, 0.0],  # argmax cropland, water 0.2
        [0.3, 0.0, 0.05, 0.0, 0.3, 0.35],  # argmax wetland 0.35, water 0.3
        [0.1, 0.1, 0.0, 0.0, 0.3, 0.5],  # argmax wetland 0.5, water 0.3
    )
    # water t=0.25, wetland t=0.6: water passes on pixels 0, 2, 3 and wins there, even over argmax wetland
    np.testing.assert_array_equal(assign_classes(probs, [4, 5], [0.25, 0.6]), [[4, 0, 4, 4]])
    # both t=0.25: where both pass (pixels 2, 3) the higher probability, wetland, wins
    np.testing.assert_array_equal(assign_classes(probs, [4, 5], [0.25, 0.25]), [[4, 0, 5, 5]])
    # only wetland selected, t=0.3: pixels 2 and 3 are wetland, the others keep the argmax
    np.testing.assert_array_equal(assign_classes(probs, [5], [0.3]), [[0, 0, 5, 5]])


def test_calibrated_rule_gives_a_rare_class_exactly_where_it_reaches_its_threshold() -> None:
    probs = _probs(
        [0.2, 0.1, 0.05, 0.05, 0.6, 0.0],  # argmax water 0.6 < t 0.7: the best other class, cropland
        [0.1, 0.3, 0.0, 0.0, 0.3, 0.3],  # water and wetland fail; fallow 0.3 is the best other class
        [0.5, 0.1, 0.05, 0.05, 0.3, 0.0],  # argmax cropland, water 0.3 fails its 0.7
        [0.1, 0.0, 0.0, 0.0, 0.8, 0.1],  # water 0.8 passes
        [0.3, 0.0, 0.0, 0.0, 0.05, 0.65],  # wetland 0.65 passes its 0.6
    )
    thresholds = [0.7, 0.6]
    np.testing.assert_array_equal(assign_classes(probs, [4, 5], thresholds, "calibrated"), [[0, 1, 0, 4, 5]])
    # the seed's rule keeps the argmax where no rare class passes: pixels 0 and 1 stay rare
    np.testing.assert_array_equal(assign_classes(probs, [4, 5], thresholds, "override"), [[4, 1, 0, 4, 5]])
    # a rare class that is not selected is an ordinary class to the calibrated rule
    np.testing.assert_array_equal(assign_classes(probs, [5], [0.6], "calibrated"), [[4, 1, 0, 4, 5]])
    with pytest.raises(ValueError, match="decision rule must be one of override, calibrated"):
        assign_classes(probs, [4], [0.5], "two-way")


def test_calibrated_rule_on_weighted_sums_equals_the_rule_on_probabilities() -> None:
    rng = np.random.default_rng(2)
    probs = rng.dirichlet(np.ones(6), size=(8, 9)).transpose(2, 0, 1)
    weights = rng.uniform(0.01, 3.0, size=(8, 9))
    rows = BlendedRows(0, (probs * weights).astype(np.float32), None, weights.astype(np.float32), np.ones((8, 9), bool))
    for rule in ("override", "calibrated"):
        classes, rare_probs = deployed_classes(rows, [4, 5], [0.3, 0.2], rule)
        np.testing.assert_array_equal(classes, assign_classes(probs.astype(np.float32), [4, 5], [0.3, 0.2], rule))
        np.testing.assert_allclose(rare_probs, probs[[4, 5]], rtol=1e-5)


def test_threshold_at_probability_counts_as_passing_and_half_is_argmax() -> None:
    probs = _probs([0.6, 0.4], [0.3, 0.7])
    np.testing.assert_array_equal(assign_classes(probs, [1], [0.4]), [[1, 1]])
    np.testing.assert_array_equal(assign_classes(probs, [1], [0.5]), probs.argmax(axis=0))
    np.testing.assert_array_equal(assign_classes(probs, [], []), [[0, 1]])


def test_assign_classes_needs_one_threshold_per_class() -> None:
    with pytest.raises(ValueError, match="2 rare classes, 2 probability planes, 1 thresholds"):
        assign_classes(_probs([0.5, 0.5, 0.0]), [1, 2], [0.5])


def test_override_on_argmax_of_weighted_sums_equals_assign_on_probabilities() -> None:
    rng = np.random.default_rng(1)
    probs = rng.dirichlet(np.ones(6), size=(8, 9)).transpose(2, 0, 1)
    weights = rng.uniform(0.01, 3.0, size=(8, 9))
    sums = probs * weights
    classes = override_rare_classes(sums.argmax(axis=0), sums[[4, 5]] / weights, [4, 5], [0.2, 0.1])
    np.testing.assert_array_equal(classes, assign_classes(probs, [4, 5], [0.2, 0.1]))
    assert (classes != probs.argmax(axis=0)).any()


def test_quantise_saliency_rounds_to_levels_and_clips() -> None:
    levels = quantise_saliency(np.array([0.0, 0.5, 1.0, 1.5, -0.1, 1 / SALIENCY_LEVELS]))
    np.testing.assert_array_equal(levels, [0, SALIENCY_LEVELS // 2, SALIENCY_LEVELS, SALIENCY_LEVELS, 0, 1])
    assert levels.dtype == np.uint16


def test_topk_level_hand_histogram() -> None:
    histogram = np.zeros(10, dtype=np.int64)
    histogram[[2, 5, 7, 9]] = [50, 30, 15, 5]  # 100 pixels
    assert topk_level(histogram, 5) == 9  # exactly the 5 at level 9
    assert topk_level(histogram, 10) == 7  # 5 + 15 = 20 >= 10: ties at level 7 included
    assert topk_level(histogram, 20) == 7
    assert topk_level(histogram, 21) == 5
    assert topk_level(histogram, 100) == 2
    assert topk_level(np.zeros(10, dtype=np.int64), 10) is None


def test_topk_level_matches_a_sort_of_distinct_values() -> None:
    rng = np.random.default_rng(0)
    values = rng.permutation(1000)
    histogram = np.bincount(values, minlength=1000)
    level = topk_level(histogram, 10)
    assert np.count_nonzero(values >= level) == 100
    assert level == np.sort(values)[-100]
    with pytest.raises(ValueError, match="percent"):
        topk_level(histogram, 0)


def test_nodata_pixels_need_every_band_or_one_non_finite_band() -> None:
    image = np.array([[[0, 0, 5]], [[0, 3, 0]], [[0, 0, 0]]], dtype=np.uint16)
    np.testing.assert_array_equal(nodata_pixels(image, 0), [[True, False, False]])
    np.testing.assert_array_equal(nodata_pixels(image, None), [[False, False, False]])
    floats = np.array([[[np.nan, np.nan]], [[np.nan, 1.0]]])
    np.testing.assert_array_equal(nodata_pixels(floats, float("nan")), [[True, True]])  # NaN in one band: nodata
    infinite = np.array([[[1.0, np.inf, 2.0]], [[-np.inf, 1.0, 3.0]]], dtype=np.float32)
    np.testing.assert_array_equal(nodata_pixels(infinite, None), [[True, True, False]])
    np.testing.assert_array_equal(nodata_pixels(infinite, 2.0), [[True, True, False]])
