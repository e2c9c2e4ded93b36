"""Evaluate a trained checkpoint on one split of a LISS-IV root: per-class, per-scene and calibration scores."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader
from torchgeo.datasets import IntersectionDataset, stack_samples
from torchgeo.samplers import GridGeoSampler
from torchmetrics.functional.classification import multiclass_confusion_matrix
from tqdm import tqdm

from rareseg.callbacks import per_class_scores, summary_scores
from rareseg.datamodules import IGNORE_INDEX, DataError, LissIVDataModule, LissIVImage, LissIVMask
from rareseg.datamodules.liss4 import SPLITS, MarkNodata
from rareseg.evaluation.report import write_evaluation
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve, reliability
from rareseg.inference import resolve_device
from rareseg.lightning_modules import RareSegModule


@dataclass
class SplitEvaluation:
    """Accumulated counts of one evaluated split.

    Attributes:
        class_names: names of classes ``0..K-1``.
        rare_classes: rare class ids.
        split: evaluated split name.
        confusion_matrix: ``(K, K)`` int64 pixel counts over all scenes, rows = truth, columns = prediction.
        scene_matrices: ``(K, K)`` confusion matrix per scene stem.
        calibration: reliability histogram per rare class id (coarse bins).
        ranking: precision-recall histogram per rare class id (fine bins).
    """

    class_names: list[str]
    rare_classes: list[int]
    split: str
    confusion_matrix: np.ndarray
    scene_matrices: dict[str, np.ndarray] = field(default_factory=dict)
    calibration: dict[int, ProbabilityHistogram] = field(default_factory=dict)
    ranking: dict[int, ProbabilityHistogram] = field(default_factory=dict)

    @classmethod
    def empty(
        cls,
        class_names: Sequence[str],
        rare_classes: Sequence[int],
        split: str,
        calibration_bins: int = 10,
        pr_bins: int = 100,
    ) -> SplitEvaluation:
        """Zero counts for ``K = len(class_names)`` classes."""
        count = len(class_names)
        return cls(
            class_names=list(class_names),
            rare_classes=[int(c) for c in rare_classes],
            split=split,
            confusion_matrix=np.zeros((count, count), np.int64),
            calibration={c: ProbabilityHistogram.empty(calibration_bins) for c in rare_classes},
            ranking={c: ProbabilityHistogram.empty(pr_bins) for c in rare_classes},
        )

    def update(self, scene: str, probs: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> None:
        """Add one batch of a scene.

        Args:
            scene: scene stem the batch comes from.
            probs: ``(B, K, H, W)`` class probabilities; the prediction is their argmax.
            target: ``(B, H, W)`` class ids, ``ignore_index`` for pixels that are not scored.
            ignore_index: target value of unscored pixels.
        """
        count = len(self.class_names)
        target = target.long()
        matrix = (
            multiclass_confusion_matrix(probs.argmax(dim=1), target, count, ignore_index=ignore_index)
            .cpu()
            .numpy()
            .astype(np.int64)
        )
        self.confusion_matrix += matrix
        self.scene_matrices[scene] = self.scene_matrices.get(scene, np.zeros((count, count), np.int64)) + matrix
        valid = target != ignore_index
        truth = target[valid].cpu().numpy()
        for class_id in self.rare_classes:
            class_probs = probs[:, class_id][valid].float().cpu().numpy()
            self.calibration[class_id].update(class_probs, truth == class_id)
            self.ranking[class_id].update(class_probs, truth == class_id)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready scores: per class, summary, per scene, reliability and PR curves of rare classes.

        Scores come from :func:`rareseg.callbacks.per_class_scores` / :func:`rareseg.callbacks.summary_scores`;
        undefined scores (0/0) are ``None``.
        """
        scores = per_class_scores(self.confusion_matrix)
        per_class = {
            name: {key: _number(scores[key][i]) for key in ("iou", "recall", "precision", "f1", "support")}
            | {"rare": i in self.rare_classes}
            for i, name in enumerate(self.class_names)
        }
        scenes = {}
        for stem, matrix in sorted(self.scene_matrices.items()):
            scene_scores = per_class_scores(matrix)
            scenes[stem] = {key: _number(value) for key, value in summary_scores(matrix, self.rare_classes).items()}
            for class_id in self.rare_classes:
                name = self.class_names[class_id]
                scenes[stem][f"iou/{name}"] = _number(scene_scores["iou"][class_id])
                scenes[stem][f"recall/{name}"] = _number(scene_scores["recall"][class_id])
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
            "summary": {
                key: _number(value) for key, value in summary_scores(self.confusion_matrix, self.rare_classes).items()
            },
            "per_class": per_class,
            "confusion_matrix": self.confusion_matrix.tolist(),
            "per_scene": scenes,
            "rare_probabilities": calibration,
        }


def load_module(checkpoint: str | Path, device: torch.device) -> RareSegModule:
    """Load a RareSegModule checkpoint for evaluation (eval mode, on ``device``).

    The checkpoint is unpickled (its hyperparameters name classes to rebuild): load only files you trust.

    Raises:
        DataError: the file is missing or is not a RareSegModule checkpoint.
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise DataError(f"{path}: checkpoint not found")
    try:
        content = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any unreadable file is reported as one line
        raise DataError(f"{path}: not a readable checkpoint ({type(err).__name__}: {_first_line(err)})") from None
    if not isinstance(content, dict) or not {"state_dict", "hyper_parameters"} <= content.keys():
        raise DataError(f"{path}: not a Lightning checkpoint of a RareSegModule (no state_dict/hyper_parameters)")
    try:
        module = RareSegModule.load_from_checkpoint(path, map_location="cpu", weights_only=False)
    except Exception as err:  # noqa: BLE001 - any failure to rebuild is reported as one line
        raise DataError(
            f"{path}: the checkpoint does not rebuild a RareSegModule ({type(err).__name__}: {_first_line(err)})"
        ) from None
    return module.to(device).eval()


def evaluate_module(
    module: RareSegModule,
    data_root: str | Path,
    split: str = "test",
    batch_size: int = 8,
    patch_size: int = 256,
    calibration_bins: int = 10,
    pr_bins: int = 100,
    progress: bool = True,
) -> SplitEvaluation:
    """Score a module on one split of a dataset root, scene by scene on a grid of tiles.

    The grid's stride is the tile side; edge tiles reach past the scene, where the fill is nodata
    and not scored, so every pixel counts once. Tiles are read raw and normalised with the module's ``band_mean``/``band_std``
    (``x' = (x - mean) / std``, the training statistics stored in the checkpoint); pixels whose
    mask is 255 or whose bands are all nodata are not scored. Roots with fewer than three scenes
    use the split's row block of every scene, as in training.

    Args:
        module: the task, in eval mode, on the device to run on.
        data_root: dataset root (images/, masks/, classes.yaml).
        split: ``"train"``, ``"val"`` or ``"test"``.
        batch_size: tiles per forward pass.
        patch_size: tile side in pixels.
        calibration_bins: reliability bins over ``[0, 1]``.
        pr_bins: thresholds of the precision-recall curves.
        progress: show a tqdm bar over tiles.

    Raises:
        DataError: bad root, a split without scenes, a scene smaller than a tile, or classes/bands
            that do not match the checkpoint.
        ValueError: bad arguments.
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if batch_size < 1 or patch_size < 1:
        raise ValueError(f"batch_size and patch_size must be >= 1, got {batch_size} and {patch_size}")
    data = LissIVDataModule(
        root=str(data_root),
        batch_size=batch_size,
        patch_size=patch_size,
        num_workers=0,
        generate_if_missing=False,
        augment=False,
    )
    hparams = module.hparams
    if data.num_classes != hparams.num_classes or data.in_channels != hparams.in_channels:
        raise DataError(
            f"{data_root}: {data.num_classes} classes and {data.in_channels} bands, the checkpoint has {hparams.num_classes} classes and {hparams.in_channels} bands"
        )
    scenes = data.scenes_of(split)
    if not scenes:
        raise DataError(f"{data_root}: the {split} split has no scenes")
    mean = torch.tensor(
        hparams.band_mean if hparams.band_mean is not None else data.band_mean,
        dtype=torch.float32,
        device=module.device,
    )
    std = torch.tensor(
        hparams.band_std if hparams.band_std is not None else data.band_std, dtype=torch.float32, device=module.device
    )
    result = SplitEvaluation.empty(data.class_names, list(module.rare_classes), split, calibration_bins, pr_bins)
    loaders = []
    for scene in scenes:
        dataset = IntersectionDataset(
            LissIVImage([scene.image]), LissIVMask([scene.mask]), transforms=MarkNodata(data.nodata)
        )
        sampler = GridGeoSampler(dataset, patch_size, patch_size, roi=data.split_roi(dataset, split))
        if len(sampler) == 0:
            raise DataError(
                f"{scene.image}: no {patch_size} px tile fits the {split} part of this scene (use a smaller --patch-size)"
            )
        loaders.append(
            (scene.stem, DataLoader(dataset, batch_size=batch_size, sampler=sampler, collate_fn=stack_samples))
        )
    with (
        tqdm(
            total=sum(len(loader.sampler) for _, loader in loaders),
            desc=f"evaluate {split}",
            unit="tile",
            disable=not progress,
        ) as bar,
        torch.no_grad(),
    ):
        for stem, loader in loaders:
            for batch in loader:
                image = (batch["image"].to(module.device, torch.float32) - mean[:, None, None]) / std[:, None, None]
                probs = F.softmax(module(image).logits.float(), dim=1)
                result.update(stem, probs, batch["mask"].to(module.device), module.ignore_index)
                bar.update(image.shape[0])
    return result


def evaluate(
    checkpoint: str | Path,
    data_root: str | Path,
    split: str = "test",
    out: str | Path | None = None,
    batch_size: int = 8,
    patch_size: int = 256,
    device: str = "auto",
    progress: bool = True,
) -> dict[str, Any]:
    """Load a checkpoint, score it on a split and (with ``out``) write metrics.json, report.md and plots.

    Args:
        checkpoint: Lightning checkpoint of a RareSegModule.
        data_root: dataset root.
        split: split to score.
        out: output folder, or None to only return the scores.
        batch_size: tiles per forward pass.
        patch_size: tile side in pixels.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        progress: show a tqdm bar.

    Returns:
        The :meth:`SplitEvaluation.to_dict` scores, plus ``checkpoint`` and ``data_root``.

    Raises:
        DataError: bad checkpoint, root or split.
    """
    module = load_module(checkpoint, resolve_device(device))
    scores = evaluate_module(module, data_root, split, batch_size, patch_size, progress=progress).to_dict()
    scores = {"checkpoint": str(checkpoint), "data_root": str(data_root)} | scores
    if out is not None:
        write_evaluation(scores, Path(out))
    return scores


def _first_line(err: BaseException) -> str:
    return str(err).splitlines()[0] if str(err) else ""


def _number(value: float) -> float | None:
    value = float(value)
    return None if np.isnan(value) else value


def _numbers(values: np.ndarray) -> list[float | None]:
    return [_number(v) for v in values]
