"""Evaluate a trained checkpoint on one split of a LISS-IV root, scoring exactly the masks ``rareseg infer`` writes.

Every scene of the split goes through the one inference pass
(:func:`~rareseg.inference.scene.blend_scene`: the checkpoint's normalisation, overlapping tiles,
blending) and every band of blended rows is scored under two decision rules:

* ``deployed`` (the headline): :func:`~rareseg.inference.decisions.deployed_classes` with the
  checkpoint's calibrated thresholds (or ``threshold`` for every rare class), the rule whose mask
  ``rareseg infer`` / ``rareseg predict`` / the web page write with the same tile options;
* ``argmax``: the plain argmax of the same blended probabilities.

Pixels whose truth is 255 (or the mask file's nodata) or whose bands are all nodata are not
scored. Roots with fewer than three scenes are split by row blocks: the whole scene is predicted
(as ``infer`` does) and the split's rows are scored.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm import tqdm

from rareseg.core.conventions import IGNORE_INDEX
from rareseg.core.scores import confusion_matrix, per_class_scores, summary_scores
from rareseg.datamodules import DataError, LissIVDataModule
from rareseg.datamodules.liss4 import SPLITS
from rareseg.evaluation.report import write_evaluation
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability
from rareseg.inference.checkpoint import load_module as load_module  # re-export of the one checkpoint loader
from rareseg.inference.checkpoint import load_predictor
from rareseg.inference.decisions import check_rule, deployed_classes
from rareseg.inference.predictor import Predictor
from rareseg.inference.radiometry import prepare_scene
from rareseg.inference.scene import GDAL_CACHE_MB, blend_scene, check_options, open_scene
from rareseg.inference.tiling import BlendedRows
from rareseg.lightning_modules import RareSegModule

#: Decision rules scored side by side; the first is the headline.
DECISIONS = ("deployed", "argmax")


@dataclass(frozen=True)
class ScoredScene:
    """A scene to score: its image, its truth mask on the same grid and the rows to score.

    Attributes:
        image: the scene GeoTIFF (predicted whole, as ``rareseg infer`` does).
        mask: uint8 class ids, 255 (or the file's nodata) = not scored.
        rows: scored pixel rows ``[start, stop)``, or None for all of them.
    """

    image: Path
    mask: Path
    rows: tuple[int, int] | None = None


@dataclass
class SplitEvaluation:
    """Accumulated counts of one evaluated split.

    Attributes:
        class_names: names of classes ``0..K-1``.
        rare_classes: rare class ids (the checkpoint's).
        split: evaluated split name.
        thresholds: ``{class_id: threshold}`` of the ``deployed`` rule.
        threshold_source: where they came from (see :meth:`~rareseg.inference.Predictor.thresholds_for`).
        matrices: per decision rule (:data:`DECISIONS`, then any extra rules of
            :data:`~rareseg.core.conventions.DECISION_RULES` scored beside them), the ``(K, K)`` int64
            pixel counts over all scenes, rows = truth, columns = prediction.
        scene_matrices: per scene stem, per decision rule, the scene's ``(K, K)`` counts.
        calibration: reliability histogram of the blended probability per rare class id (coarse bins).
        ranking: precision-recall histogram per rare class id (fine bins).
        radiometry: per scene stem, the radiometry check of the scene
            (:meth:`~rareseg.inference.radiometry.RadiometryCheck.summary`).
    """

    class_names: list[str]
    rare_classes: list[int]
    split: str
    thresholds: dict[int, float]
    threshold_source: str
    matrices: dict[str, np.ndarray]
    scene_matrices: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    calibration: dict[int, ProbabilityHistogram] = field(default_factory=dict)
    ranking: dict[int, ProbabilityHistogram] = field(default_factory=dict)
    radiometry: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def empty(
        cls,
        class_names: Sequence[str],
        rare_classes: Sequence[int],
        split: str,
        thresholds: Mapping[int, float] | None = None,
        threshold_source: str = "default",
        calibration_bins: int = 10,
        pr_bins: int = 100,
        extra_rules: Sequence[str] = (),
    ) -> SplitEvaluation:
        """Zero counts for ``K = len(class_names)`` classes (``extra_rules``: rules scored beside :data:`DECISIONS`)."""
        count = len(class_names)
        return cls(
            class_names=list(class_names),
            rare_classes=[int(c) for c in rare_classes],
            split=split,
            thresholds={int(c): float(t) for c, t in (thresholds or {}).items()},
            threshold_source=threshold_source,
            matrices={rule: np.zeros((count, count), np.int64) for rule in (*DECISIONS, *extra_rules)},
            calibration={c: ProbabilityHistogram.empty(calibration_bins) for c in rare_classes},
            ranking={c: ProbabilityHistogram.empty(pr_bins) for c in rare_classes},
        )

    @property
    def confusion_matrix(self) -> np.ndarray:
        """The headline ``(K, K)`` counts: the ``deployed`` rule over all scenes."""
        return self.matrices["deployed"]

    def update(
        self, scene: str, truth: np.ndarray, predictions: Mapping[str, np.ndarray], rare_probs: np.ndarray
    ) -> None:
        """Add scored pixels of a scene.

        Args:
            scene: the scene's stem.
            truth: (N,) class ids of the scored pixels (ignored pixels already dropped).
            predictions: per decision rule of :attr:`matrices`, the (N,) predicted class ids.
            rare_probs: (R, N) blended probabilities of the rare classes, in :attr:`rare_classes` order.
        """
        count = len(self.class_names)
        per_rule = self.scene_matrices.setdefault(
            scene, {rule: np.zeros((count, count), np.int64) for rule in self.matrices}
        )
        for rule in self.matrices:
            matrix = confusion_matrix(truth, predictions[rule], count)
            self.matrices[rule] += matrix
            per_rule[rule] += matrix
        for row, class_id in enumerate(self.rare_classes):
            self.calibration[class_id].update(rare_probs[row], truth == class_id)
            self.ranking[class_id].update(rare_probs[row], truth == class_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores of both decision rules, per scene, and the rare-class probability curves.

        Returns:
            ``split``, ``class_names``, ``rare_classes`` (names), ``decision`` (the deployed rule's
            ``thresholds`` by class name and ``threshold_source``); the headline ``summary``,
            ``per_class`` and ``confusion_matrix`` ((K, K) list, rows = truth) of the ``deployed``
            rule and the same three under ``argmax``; ``per_scene`` (per stem: the deployed
            summary and rare-class IoU/recall, ``argmax`` with the same keys, and
            ``confusion_matrix`` = ``{"deployed": (K, K), "argmax": (K, K)}`` lists); and
            ``rare_probabilities`` (per rare class: ECE, reliability bins, average precision, PR
            curve), and ``radiometry`` (per stem: the scene's radiometry check). Scores come from
            :mod:`rareseg.core.scores`; undefined scores (0/0) are ``None``.
        """
        scenes = {}
        for stem, per_rule in sorted(self.scene_matrices.items()):
            scenes[stem] = self._scene_scores(per_rule["deployed"])
            scenes[stem]["argmax"] = self._scene_scores(per_rule["argmax"])
            scenes[stem]["confusion_matrix"] = {rule: matrix.tolist() for rule, matrix in per_rule.items()}
        calibration = {}
        for class_id in self.rare_classes:
            table = reliability(self.calibration[class_id])
            curve = precision_recall_curve(self.ranking[class_id])
            calibration[self.class_names[class_id]] = {
                "ece": _number(table["ece"]),
                "bin_edges": _numbers(table["bin_edges"]),
                "confidence": _numbers(table["confidence"]),
                "frequency": _numbers(table["frequency"]),
                "count": [int(c) for c in table["count"]],
                "average_precision": _number(curve["average_precision"]),
                "pr_thresholds": _numbers(curve["thresholds"]),
                "pr_precision": _numbers(curve["precision"]),
                "pr_recall": _numbers(curve["recall"]),
            }
        return {
            "split": self.split,
            "class_names": self.class_names,
            "rare_classes": [self.class_names[c] for c in self.rare_classes],
            "decision": {
                "thresholds": {self.class_names[c]: t for c, t in self.thresholds.items()},
                "threshold_source": self.threshold_source,
            },
            **self._split_scores(self.matrices["deployed"]),
            "argmax": self._split_scores(self.matrices["argmax"]),
            "per_scene": scenes,
            "rare_probabilities": calibration,
            "radiometry": dict(sorted(self.radiometry.items())),
        }

    def _split_scores(self, matrix: np.ndarray) -> dict[str, Any]:
        scores = per_class_scores(matrix)
        per_class = {
            name: {key: _number(scores[key][i]) for key in ("iou", "recall", "precision", "f1", "support")}
            | {"rare": i in self.rare_classes}
            for i, name in enumerate(self.class_names)
        }
        summary = {key: _number(value) for key, value in summary_scores(matrix, self.rare_classes).items()}
        return {"summary": summary, "per_class": per_class, "confusion_matrix": matrix.tolist()}

    def _scene_scores(self, matrix: np.ndarray) -> dict[str, Any]:
        scores = per_class_scores(matrix)
        row = {key: _number(value) for key, value in summary_scores(matrix, self.rare_classes).items()}
        for class_id in self.rare_classes:
            name = self.class_names[class_id]
            row[f"iou/{name}"] = _number(scores["iou"][class_id])
            row[f"recall/{name}"] = _number(scores["recall"][class_id])
        return row


def evaluate_predictor(
    predictor: Predictor, data_root: str | Path, split: str = "test", **options: Any
) -> SplitEvaluation:
    """Score a predictor on one split of a dataset root: :func:`evaluate_scenes` on the split's scenes.

    Roots split by row blocks score each scene's rows of the split (the whole scene is predicted).

    Args:
        predictor: the loaded model (:func:`~rareseg.inference.load_predictor` or
            :meth:`~rareseg.inference.Predictor.from_module`).
        data_root: dataset root (images/, masks/, classes.yaml).
        split: ``"train"``, ``"val"`` or ``"test"``.
        **options: ``tile``, ``overlap``, ``batch_size``, ``threshold``, ``calibration_bins``,
            ``pr_bins``, ``progress`` of :func:`evaluate_scenes`.

    Raises:
        DataError: bad root, a split without scenes, or classes/bands that do not match the checkpoint.
        ValueError: bad arguments.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    data = LissIVDataModule(root=str(data_root), num_workers=0, generate_if_missing=False, augment=False)
    if data.num_classes != predictor.num_classes or data.in_channels != predictor.in_channels:
        raise DataError(
            f"{data_root}: {data.num_classes} classes and {data.in_channels} bands, the checkpoint has"
            f" {predictor.num_classes} classes and {predictor.in_channels} bands"
        )
    scenes = data.scenes_of(split)
    if not scenes:
        raise DataError(f"{data_root}: the {split} split has no scenes")
    scored = [ScoredScene(scene.image, scene.mask, data.split_rows(split, scene.height)) for scene in scenes]
    return evaluate_scenes(predictor, scored, class_names=data.class_names, split=split, **options)


def evaluate_scenes(
    predictor: Predictor,
    scenes: Sequence[ScoredScene],
    *,
    class_names: Sequence[str] | None = None,
    split: str = "",
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    threshold: float | None = None,
    calibration_bins: int = 10,
    pr_bins: int = 100,
    progress: bool = True,
    extra_rules: Sequence[str] = (),
) -> SplitEvaluation:
    """Score a predictor on scenes, each predicted whole through the inference pass, under both :data:`DECISIONS`.

    Args:
        predictor: the loaded model.
        scenes: the scenes, their truth and scored rows; stems must be unique.
        class_names: names of the classes (default: the checkpoint's).
        split: name reported as the split.
        tile: tile side in pixels (as ``rareseg infer --tile``).
        overlap: pixels shared by neighbouring tiles (as ``rareseg infer --overlap``).
        batch_size: tiles per forward pass.
        threshold: one threshold for every rare class in the deployed rule (default: the
            predictor's calibrated thresholds, else 0.5, as ``rareseg infer``).
        calibration_bins: reliability bins over ``[0, 1]``.
        pr_bins: bins (thresholds) of the precision-recall curves.
        progress: show a tqdm bar over the scenes.
        extra_rules: decision rules of :data:`~rareseg.core.conventions.DECISION_RULES` also scored,
            with the same thresholds, each under its own name in the result's matrices.

    Raises:
        DataError: a scene that is not a readable GeoTIFF with the checkpoint's band count.
        ValueError: bad options.
    """
    check_options(tile, overlap, batch_size, 10.0, threshold)
    for rule in extra_rules:
        check_rule(rule)
    rare = predictor.select_rare_classes(None)
    thresholds, source = predictor.thresholds_for(rare, threshold)
    names = list(class_names) if class_names is not None else list(predictor.class_names)
    result = SplitEvaluation.empty(
        names, rare, split, dict(zip(rare, thresholds)), source, calibration_bins, pr_bins, extra_rules
    )
    options = {"tile": tile, "overlap": overlap, "batch_size": batch_size}
    with tqdm(total=len(scenes), desc=f"evaluate {split}".strip(), unit="scene", disable=not progress) as bar:
        for index, scene in enumerate(scenes):

            def advance(fraction: float, done: int = index) -> None:
                bar.n = round(done + fraction, 2)
                bar.refresh()

            _score_scene(predictor, scene, result, thresholds, advance, options)
        bar.n = len(scenes)
        bar.refresh()
    return result


def _score_scene(
    predictor: Predictor,
    scene: ScoredScene,
    result: SplitEvaluation,
    thresholds: Sequence[float],
    progress: Callable[[float], None],
    options: Mapping[str, int],
) -> None:
    """Run one scene through the pass (``options``: tile, overlap, batch_size) and score its rows."""
    rare, stem = result.rare_classes, Path(scene.image).stem
    with (
        rasterio.Env(GDAL_CACHEMAX=GDAL_CACHE_MB),
        open_scene(scene.image, predictor.in_channels) as src,
        rasterio.open(scene.mask) as truth_src,
    ):
        predictor, radiometry = prepare_scene(predictor, src, str(scene.image))
        result.radiometry[stem] = radiometry.summary()
        mask_nodata = truth_src.nodata
        first, last = scene.rows if scene.rows is not None else (0, src.height)

        def score_rows(rows: BlendedRows) -> None:  # runs on the pass's background thread
            start, stop = max(rows.start, first), min(rows.stop, last)
            if start >= stop:
                return
            band = slice(start - rows.start, stop - rows.start)
            truth = truth_src.read(1, window=Window(0, start, src.width, stop - start))
            scored = rows.valid[band] & (truth != IGNORE_INDEX)
            if mask_nodata is not None:
                scored &= truth != mask_nodata
            deployed, rare_probs = deployed_classes(rows, rare, thresholds)
            predictions = {"deployed": deployed[band][scored], "argmax": rows.argmax()[band][scored]}
            for rule in result.matrices.keys() - predictions.keys():
                predictions[rule] = deployed_classes(rows, rare, thresholds, rule)[0][band][scored]
            result.update(stem, truth[scored], predictions, rare_probs[:, band][:, scored])

        blend_scene(predictor, src, score_rows, progress=progress, **options)


def evaluate_module(
    module: RareSegModule,
    data_root: str | Path,
    split: str = "test",
    *,
    thresholds: Mapping[int, float] | None = None,
    **options: Any,
) -> SplitEvaluation:
    """:func:`evaluate_predictor` of a module in memory, on its device (``thresholds``: calibrated ``{class_id: t}``).

    ``options`` are those of :func:`evaluate_predictor`.
    """
    predictor = Predictor.from_module(module, device=module.device, thresholds=thresholds)
    return evaluate_predictor(predictor, data_root, split, **options)


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    *,
    tile: int = 512,
    overlap: int = 64,
    batch_size: int = 8,
    threshold: float | None = None,
    device: str = "auto",
    precision: str = "32",
    progress: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint, score it on a split and (with ``out``) write metrics.json, report.md and plots.

    Args:
        checkpoint: Lightning checkpoint of a RareSegModule.
        data_root: dataset root.
        split: split to score.
        out: output folder, or None to only return the scores.
        tile: tile side in pixels.
        overlap: pixels shared by neighbouring tiles.
        batch_size: tiles per forward pass.
        threshold: one threshold for every rare class (default: the checkpoint's calibrated ones).
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        precision: ``32`` or ``bf16``.
        progress: show a tqdm bar.

    Returns:
        The :meth:`SplitEvaluation.to_dict` scores, plus ``checkpoint``, ``data_root`` and ``tiles``
        (``size``, ``overlap``, ``batch_size``).

    Raises:
        DataError: bad checkpoint, root or split.
    """
    predictor = load_predictor(checkpoint, device=device, precision=precision)
    result = evaluate_predictor(
        predictor,
        data_root,
        split,
        tile=tile,
        overlap=overlap,
        batch_size=batch_size,
        threshold=threshold,
        progress=progress,
    )
    tiles = {"size": tile, "overlap": overlap, "batch_size": batch_size}
    scores = {"checkpoint": str(checkpoint), "data_root": str(data_root), "tiles": tiles} | result.to_dict()
    if out is not None:
        write_evaluation(scores, Path(out))
    return scores


def _number(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _numbers(values: np.ndarray) -> list[float | None]:
    return [_number(v) for v in values]
