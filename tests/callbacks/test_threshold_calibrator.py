"""Tests for rareseg.callbacks.threshold_calibrator against a brute-force numpy search."""

from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rareseg.callbacks import ThresholdCalibrator
from rareseg.core.conventions import THRESHOLDS_KEY
from rareseg.evaluation.scores import ProbabilityHistogram, precision_recall_curve
from tests.ddp import CloseProcessGroupAtExit

IGNORE = 255


def _batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities (10, 3, 6, 6) that lean towards the true class, and targets with ignores."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.multinomial(torch.tensor([0.8, 0.12, 0.08]), 10 * 36, replacement=True, generator=generator)
    target = target.view(10, 6, 6)
    logits = torch.randn(10, 3, 6, 6, generator=generator) * 1.5
    logits += 1.2 * nn.functional.one_hot(target, 3).permute(0, 3, 1, 2)
    target[torch.rand(10, 6, 6, generator=generator) < 0.1] = IGNORE
    return logits.softmax(dim=1), target


class FixedProbabilities(LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        probs, target = batch
        return {"probs": probs, "target": target}

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(*_batches()), batch_size=4)


def _brute_force(class_id: int, num_bins: int) -> tuple[float, float]:
    probs, target = (t.numpy() for t in _batches())
    valid = target != IGNORE
    p = probs[:, class_id][valid]
    truth = target[valid] == class_id
    best = (-1.0, None)
    for t in (np.arange(num_bins) / num_bins).astype(np.float32):  # the lower bin edges b / n
        predicted = p >= t
        tp = np.sum(predicted & truth)
        f1 = 2 * tp / (2 * tp + np.sum(predicted & ~truth) + np.sum(~predicted & truth))
        if f1 > best[0]:
            best = (f1, float(t))
    return best[1], best[0]


@pytest.mark.parametrize("num_bins", [100, 7])
def test_fit_picks_the_f1_optimal_threshold_and_checkpoints_it(tmp_path: Path, num_bins: int) -> None:
    calibrator = ThresholdCalibrator(
        rare_classes=["water", "wetland"], class_names=["land", "water", "wetland"], num_bins=num_bins
    )
    checkpoint = ModelCheckpoint(dirpath=tmp_path)
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=2,
        callbacks=[calibrator, checkpoint],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(FixedProbabilities(), train_dataloaders=_loader(), val_dataloaders=_loader())

    expected = {c: _brute_force(c, num_bins) for c in (1, 2)}
    assert calibrator.thresholds == {c: expected[c][0] for c in (1, 2)}
    assert 0.0 < calibrator.thresholds[1] < 1.0
    assert trainer.callback_metrics["val/threshold/wetland"].item() == pytest.approx(expected[2][0])

    saved = torch.load(checkpoint.best_model_path, weights_only=False)
    assert saved[THRESHOLDS_KEY] == calibrator.thresholds
    assert saved["callbacks"][calibrator.state_key] == {"thresholds": calibrator.thresholds}
    restored = ThresholdCalibrator(rare_classes=[1, 2])
    restored.load_state_dict(saved["callbacks"][calibrator.state_key])
    assert restored.thresholds == calibrator.thresholds


@pytest.mark.slow
def test_two_process_ddp_calibrates_on_the_whole_validation_set(tmp_path: Path) -> None:
    calibrator = ThresholdCalibrator(rare_classes=["water", "wetland"], class_names=["land", "water", "wetland"])
    trainer = Trainer(
        accelerator="cpu",
        strategy="ddp_spawn",
        devices=2,
        callbacks=[calibrator, CloseProcessGroupAtExit()],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    loader = DataLoader(TensorDataset(*_batches()), batch_size=5)
    trainer.validate(FixedProbabilities(), dataloaders=loader, verbose=False)
    # each rank saw half of the tiles; the thresholds come from the histograms summed over ranks
    for class_id, name in ((1, "water"), (2, "wetland")):
        assert trainer.callback_metrics[f"val/threshold/{name}"].item() == pytest.approx(_brute_force(class_id, 100)[0])


def test_calibrated_threshold_is_the_f1_optimum_of_the_evaluation_pr_curve(tmp_path: Path) -> None:
    """ThresholdCalibrator and rareseg evaluate bin the same pixels alike: one convention, one F1 routine."""
    calibrator = ThresholdCalibrator(rare_classes=[1, 2], num_bins=20)
    trainer = Trainer(
        accelerator="cpu", callbacks=[calibrator], logger=False, enable_progress_bar=False, default_root_dir=tmp_path
    )
    trainer.validate(FixedProbabilities(), dataloaders=_loader(), verbose=False)
    probs, target = (t.numpy() for t in _batches())
    valid = target != IGNORE
    for class_id in (1, 2):
        histogram = ProbabilityHistogram.empty(20)
        histogram.update(probs[:, class_id][valid], target[valid] == class_id)
        curve = precision_recall_curve(histogram)
        best = int(np.nanargmax(curve["f1"]))
        assert calibrator.thresholds[class_id] == pytest.approx(curve["thresholds"][best])


def test_class_without_positives_is_left_out(tmp_path: Path) -> None:
    calibrator = ThresholdCalibrator(rare_classes=[1, 2])
    probs, target = _batches()
    target[target == 2] = 0
    trainer = Trainer(
        accelerator="cpu",
        callbacks=[calibrator],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    with pytest.warns(UserWarning, match="no validation pixel of class 2; not calibrated"):
        loader = DataLoader(TensorDataset(probs, target), batch_size=4)
        trainer.validate(FixedProbabilities(), dataloaders=loader, verbose=False)
    assert set(calibrator.thresholds) == {1}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rare_classes": [1], "num_bins": 1}, "num_bins must be >= 2"),
        ({"rare_classes": ["water"]}, "names class 'water' but no class_names"),
        ({"rare_classes": []}, "at least one rare class"),
        ({"rare_classes": [1, 1]}, "lists class 1 twice"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ThresholdCalibrator(**kwargs)
