"""Paired bootstrap comparisons: checked against exact enumeration and float64 hand computation."""

from __future__ import annotations

import itertools
from collections import Counter

import numpy as np
import pytest

from rareseg.core.scores import per_class_scores, summary_scores
from rareseg.evaluation.paired import (
    Interval,
    bootstrap_weights,
    class_scores,
    paired_interval,
    replicate_differences,
    score_functions,
)


def _random_matrices(rng: np.random.Generator, seeds: int, scenes: int, classes: int = 4) -> np.ndarray:
    return rng.integers(0, 50, (seeds, scenes, classes, classes)) + np.eye(classes, dtype=np.int64) * 200


def test_scores_match_the_callbacks_scores_in_float64() -> None:
    matrices = _random_matrices(np.random.default_rng(0), 3, 2, 5)
    functions = score_functions([3, 4], majority_class=0, class_names=list("abcde"))
    for s in range(3):
        pooled = matrices[s].sum(axis=0)
        expected = summary_scores(pooled, [3, 4], majority_class=0)
        for key in ("rare_iou", "rare_recall", "majority_precision", "miou"):
            assert functions[key](pooled) == pytest.approx(expected[key], rel=1e-12)
        assert functions["iou/e"](pooled) == pytest.approx(per_class_scores(pooled)["iou"][4], rel=1e-12)
    stacked = functions["rare_iou"](matrices.sum(axis=1))
    assert stacked.shape == (3,)


def test_undefined_scores_are_nan() -> None:
    matrix = np.array([[5, 0], [0, 0]])
    assert np.isnan(class_scores(matrix)["recall"][1]) and np.isnan(class_scores(matrix)["iou"][1])
    assert np.isnan(score_functions([1], 0, ["a", "b"])["rare_iou"](matrix))


def test_observed_difference_is_the_mean_of_per_seed_pooled_differences() -> None:
    rng = np.random.default_rng(1)
    first, second = _random_matrices(rng, 4, 3), _random_matrices(rng, 4, 3)
    score = score_functions([2, 3], 0, list("abcd"))["rare_iou"]
    expected = np.mean(
        [
            summary_scores(first[s].sum(0), [2, 3])["rare_iou"] - summary_scores(second[s].sum(0), [2, 3])["rare_iou"]
            for s in range(4)
        ]
    )
    interval = paired_interval(first, second, score, replicates=500)
    assert interval.value == pytest.approx(expected, rel=1e-12)
    assert interval.low <= interval.value <= interval.high
    assert (interval.seeds, interval.scenes) == (4, 3)


def test_bootstrap_distribution_matches_exact_enumeration() -> None:
    """S = 2 seeds and J = 2 scenes: 16 equally likely (seed draw, scene draw) pairs give the exact distribution."""
    rng = np.random.default_rng(2)
    first, second = _random_matrices(rng, 2, 2, 3), _random_matrices(rng, 2, 2, 3)
    score = score_functions([2], 0, list("abc"))["rare_iou"]
    exact: Counter[float] = Counter()
    for seeds in itertools.product(range(2), repeat=2):
        for scenes in itertools.product(range(2), repeat=2):
            per_seed = [score(first[s, list(scenes)].sum(0)) - score(second[s, list(scenes)].sum(0)) for s in seeds]
            exact[round(float(np.mean(per_seed)), 12)] += 1
    seed_counts, scene_counts = bootstrap_weights(2, 2, 40000, seed=3)
    samples = replicate_differences(first, second, score, seed_counts, scene_counts)
    observed = Counter(np.round(samples, 12).tolist())
    assert set(observed) <= set(exact)
    for value, ways in exact.items():
        assert observed[value] / samples.size == pytest.approx(ways / 16, abs=0.01)


def test_a_constant_paired_difference_has_a_point_interval() -> None:
    """A linear score (true positives of class 0) with the same extra count per (seed, scene)."""
    rng = np.random.default_rng(4)
    second = _random_matrices(rng, 5, 3)
    first = second.copy()
    first[:, :, 0, 0] += 10

    def true_positives(matrices: np.ndarray) -> np.ndarray:
        return np.asarray(matrices, dtype=np.float64)[..., 0, 0]

    interval = paired_interval(first, second, true_positives, replicates=300)
    assert interval.value == interval.low == interval.high == pytest.approx(30.0)
    assert interval.verdict == "helps"


def test_verdicts() -> None:
    assert Interval(0.1, 0.02, 0.2, 5, 5).verdict == "helps"
    assert Interval(-0.1, -0.2, -0.01, 5, 5).verdict == "hurts"
    assert Interval(0.05, -0.01, 0.1, 5, 5).verdict == "no effect"


def test_single_row_mean_and_shape_check() -> None:
    rng = np.random.default_rng(5)
    first = _random_matrices(rng, 3, 2)
    score = score_functions([3], 0, list("abcd"))["iou/d"]
    interval = paired_interval(first, None, score, replicates=200)
    assert interval.value == pytest.approx(np.mean([per_class_scores(first[s].sum(0))["iou"][3] for s in range(3)]))
    with pytest.raises(ValueError, match="same seeds and scenes"):
        paired_interval(first, first[:2], score)
