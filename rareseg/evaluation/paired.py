"""Paired comparisons of ablation rows: score differences over seeds x test scenes with bootstrap intervals.

Every run of a row is tested on the same test scenes, and two rows trained with the same seed see
the same data and (where the rows allow it) the same initial weights and crop order, so rows are
compared seed by seed. For runs ``s = 1..S`` and test scenes ``j = 1..J`` with confusion matrices
``A[s, j]`` and ``B[s, j]`` of the two rows, a score ``m`` (e.g. mean rare-class IoU) of the pooled
matrix gives the paired difference::

    d = 1/S * sum_s ( m(sum_j A[s, j]) - m(sum_j B[s, j]) )

Its 95 % interval is the percentile bootstrap over seeds x scenes: each replicate draws ``S``
seeds and ``J`` scenes with replacement (independently) and recomputes ``d`` with the drawn seeds
and the drawn scenes pooled; the interval is the 2.5 and 97.5 percentiles of the replicates. A
difference "holds" only when its interval excludes 0.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

#: A score of stacked confusion matrices: ``(..., K, K)`` counts -> ``(...)`` scores (NaN where undefined).
Score = Callable[[np.ndarray], np.ndarray]


def class_scores(matrices: np.ndarray) -> dict[str, np.ndarray]:
    """IoU, recall and precision per class of stacked ``(..., K, K)`` confusion matrices (rows = truth).

    Returns:
        ``{"iou", "recall", "precision"}``, each ``(..., K)`` float64; 0/0 is NaN.
    """
    matrices = np.asarray(matrices, dtype=np.float64)
    true_positive = np.diagonal(matrices, axis1=-2, axis2=-1)
    truth = matrices.sum(axis=-1)
    predicted = matrices.sum(axis=-2)
    with np.errstate(divide="ignore", invalid="ignore"):
        return {
            "iou": true_positive / (truth + predicted - true_positive),
            "recall": true_positive / truth,
            "precision": true_positive / predicted,
        }


def score_functions(rare_classes: Sequence[int], majority_class: int, class_names: Sequence[str]) -> dict[str, Score]:
    """The scores the ablation reports, as vectorised functions of stacked confusion matrices.

    ``rare_iou`` / ``rare_recall``: mean over the rare classes (NaN classes skipped);
    ``majority_precision``: precision of ``majority_class``; ``miou``: mean IoU over all classes;
    ``iou/<name>`` and ``recall/<name>`` for every rare class.
    """
    rare = list(rare_classes)

    def mean_over(key: str, classes: Sequence[int] | None) -> Score:
        def score(matrices: np.ndarray) -> np.ndarray:
            values = class_scores(matrices)[key]
            values = values if classes is None else values[..., list(classes)]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slice: NaN, as wanted
                return np.nanmean(values, axis=-1)

        return score

    def one(key: str, class_id: int) -> Score:
        return lambda matrices: class_scores(matrices)[key][..., class_id]

    scores: dict[str, Score] = {
        "rare_iou": mean_over("iou", rare),
        "rare_recall": mean_over("recall", rare),
        "majority_precision": one("precision", majority_class),
        "miou": mean_over("iou", None),
    }
    for class_id in rare:
        scores[f"iou/{class_names[class_id]}"] = one("iou", class_id)
        scores[f"recall/{class_names[class_id]}"] = one("recall", class_id)
    return scores


@dataclass(frozen=True)
class Interval:
    """A statistic with its 95 % percentile-bootstrap interval.

    Attributes:
        value: the statistic on all seeds and scenes.
        low: 2.5 percentile of the bootstrap replicates.
        high: 97.5 percentile.
        seeds: number of seeds (paired runs) it uses.
        scenes: number of test scenes.
    """

    value: float
    low: float
    high: float
    seeds: int
    scenes: int

    @property
    def verdict(self) -> str:
        """For a difference: ``"helps"`` (interval above 0), ``"hurts"`` (below 0) or ``"no effect"``."""
        if self.low > 0:
            return "helps"
        if self.high < 0:
            return "hurts"
        return "no effect"


def bootstrap_weights(seeds: int, scenes: int, replicates: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """How often each seed and each scene is drawn in every bootstrap replicate.

    Returns:
        ``(replicates, seeds)`` and ``(replicates, scenes)`` int64 counts, each row summing to
        ``seeds`` / ``scenes`` (draws with replacement, seeds and scenes independent).
    """
    rng = np.random.default_rng(seed)
    seed_counts = rng.multinomial(seeds, np.full(seeds, 1.0 / seeds), size=replicates)
    scene_counts = rng.multinomial(scenes, np.full(scenes, 1.0 / scenes), size=replicates)
    return seed_counts, scene_counts


def replicate_differences(
    first: np.ndarray, second: np.ndarray | None, score: Score, seed_counts: np.ndarray, scene_counts: np.ndarray
) -> np.ndarray:
    """The statistic of every bootstrap replicate.

    Args:
        first: ``(S, J, K, K)`` confusion matrices of one row (seed x test scene).
        second: the same for the other row, paired by seed; None gives the first row's mean score.
        score: see :data:`Score`.
        seed_counts: ``(R, S)`` draws per seed (see :func:`bootstrap_weights`).
        scene_counts: ``(R, J)`` draws per scene.

    Returns:
        ``(R,)`` values of ``1/S * sum_s count_s * (m(sum_j count_j A[s, j]) - m(sum_j count_j B[s, j]))``;
        a seed whose score is NaN in either row is left out of that replicate's mean.
    """
    per_seed = score(np.einsum("sjkl,rj->rskl", first, scene_counts))
    if second is not None:
        per_seed = per_seed - score(np.einsum("sjkl,rj->rskl", second, scene_counts))
    finite = np.isfinite(per_seed)
    weights = np.where(finite, seed_counts, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (np.where(finite, per_seed, 0.0) * weights).sum(axis=1) / weights.sum(axis=1)


def paired_interval(
    first: np.ndarray,
    second: np.ndarray | None,
    score: Score,
    replicates: int = 4000,
    seed: int = 0,
) -> Interval:
    """The paired difference of a score between two rows (or one row's mean score), with its interval.

    Args:
        first: ``(S, J, K, K)`` confusion matrices of one row, seeds in the same order as ``second``.
        second: ``(S, J, K, K)`` of the row compared with, or None for ``first``'s mean score.
        score: see :data:`Score`.
        replicates: bootstrap replicates.
        seed: seed of the bootstrap draws (the same draws for every comparison of a report).

    Returns:
        The statistic on all seeds and scenes and its 95 % percentile interval.
    """
    first = np.asarray(first, dtype=np.float64)
    second = None if second is None else np.asarray(second, dtype=np.float64)
    if second is not None and second.shape != first.shape:
        raise ValueError(f"paired rows need the same seeds and scenes, got {first.shape} and {second.shape}")
    seeds, scenes = first.shape[:2]
    everything = (np.ones((1, seeds), np.int64), np.ones((1, scenes), np.int64))
    value = float(replicate_differences(first, second, score, *everything)[0])
    samples = replicate_differences(first, second, score, *bootstrap_weights(seeds, scenes, replicates, seed))
    samples = samples[np.isfinite(samples)]
    low, high = np.percentile(samples, [2.5, 97.5]) if samples.size else (np.nan, np.nan)
    return Interval(value, float(low), float(high), seeds, scenes)
