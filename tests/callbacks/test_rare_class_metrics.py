"""Tests for rareseg.callbacks.rare_class_metrics against a numpy confusion matrix."""

import math
from pathlib import Path

import matplotlib.image
import numpy as np
import pytest
import torch
from lightning.pytorch import LightningModule, Trainer
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from rareseg.callbacks import RareClassMetrics
from rareseg.core.conventions import DEFAULT_PALETTE
from tests.ddp import CloseProcessGroupAtExit

NAMES = ["cropland", "forest", "water", "wetland"]
IGNORE = 255


def _fixed_batches(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images, saliency, predictions and targets (6 tiles of 8x8); class 3 never occurs anywhere."""
    generator = torch.Generator().manual_seed(seed)
    target = torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), 6 * 64, replacement=True, generator=generator)
    target = target.view(6, 8, 8)
    noise = torch.randint(0, 3, (6, 8, 8), generator=generator)
    keep = torch.rand(6, 8, 8, generator=generator) < 0.7
    preds = torch.where(keep, target, noise)
    target[torch.rand(6, 8, 8, generator=generator) < 0.1] = IGNORE
    images = torch.randn(6, 3, 8, 8, generator=generator)
    saliency = torch.rand(6, 2, 8, 8, generator=generator)
    return images, saliency, preds, target


class FixedPredictions(LightningModule):
    """Returns the predictions stored in the batch; one weight so that fit has something to train."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))

    def training_step(self, batch, batch_idx):
        return (self.weight - 1.0).pow(2).sum()

    def validation_step(self, batch, batch_idx):
        image, saliency, preds, target = batch
        return {"image": image, "saliency": saliency, "preds": preds, "target": target}

    test_step = validation_step

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


def _loader() -> DataLoader:
    return DataLoader(TensorDataset(*_fixed_batches()), batch_size=4)


def _trainer(tmp_path: Path, callbacks: list, logger=False, **kwargs) -> Trainer:
    return Trainer(
        accelerator="cpu",
        callbacks=callbacks,
        logger=logger,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )


def _numpy_confusion() -> np.ndarray:
    _, _, preds, target = (t.numpy() for t in _fixed_batches())
    valid = target != IGNORE
    matrix = np.zeros((4, 4), dtype=np.int64)
    np.add.at(matrix, (target[valid], preds[valid]), 1)
    return matrix


def _expected(matrix: np.ndarray, prefix: str) -> dict[str, float]:
    expected = {}
    tp_all = np.diag(matrix).astype(float)
    for c, name in enumerate(NAMES):
        tp, fn, fp = matrix[c, c], matrix[c].sum() - matrix[c, c], matrix[:, c].sum() - matrix[c, c]
        expected[f"{prefix}/iou/{name}"] = tp / (tp + fp + fn) if tp + fp + fn else math.nan
        expected[f"{prefix}/recall/{name}"] = tp / (tp + fn) if tp + fn else math.nan
        expected[f"{prefix}/precision/{name}"] = tp / (tp + fp) if tp + fp else math.nan
        expected[f"{prefix}/f1/{name}"] = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    assert tp_all[3] == 0 and matrix[3].sum() == 0 and matrix[:, 3].sum() == 0
    # class 3 (wetland) is absent: its scores are NaN and the means skip it
    expected[f"{prefix}/rare_recall"] = expected[f"{prefix}/recall/water"]
    expected[f"{prefix}/rare_iou"] = expected[f"{prefix}/iou/water"]
    expected[f"{prefix}/miou"] = np.mean([expected[f"{prefix}/iou/{n}"] for n in NAMES[:3]])
    expected[f"{prefix}/majority_precision"] = expected[f"{prefix}/precision/cropland"]
    return expected


def _assert_metrics(trainer: Trainer, expected: dict[str, float]) -> None:
    for key, value in expected.items():
        logged = trainer.callback_metrics[key].item()
        if math.isnan(value):
            assert math.isnan(logged), key
        else:
            assert logged == pytest.approx(value, rel=1e-6), key


def test_validate_and_test_match_numpy(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water", "wetland"], ignore_index=IGNORE)
    trainer = _trainer(tmp_path, [callback])
    matrix = _numpy_confusion()

    trainer.validate(FixedPredictions(), dataloaders=_loader(), verbose=False)
    _assert_metrics(trainer, _expected(matrix, "val"))
    np.testing.assert_array_equal(callback.confusion_matrix, matrix)

    trainer.test(FixedPredictions(), dataloaders=_loader(), verbose=False)
    _assert_metrics(trainer, _expected(matrix, "test"))
    np.testing.assert_array_equal(callback.confusion_matrix, matrix)


def test_majority_class_given(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=[2, 3], majority_class="forest")
    trainer = _trainer(tmp_path, [callback])
    trainer.validate(FixedPredictions(), dataloaders=_loader(), verbose=False)
    matrix = _numpy_confusion()
    assert trainer.callback_metrics["val/majority_precision"].item() == pytest.approx(matrix[1, 1] / matrix[:, 1].sum())


def test_checkpoint_and_early_stopping_can_monitor_rare_iou(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water"])
    checkpoint = ModelCheckpoint(dirpath=tmp_path, monitor="val/rare_iou", mode="max")
    stopping = EarlyStopping(monitor="val/rare_iou", mode="max", patience=1)
    trainer = _trainer(tmp_path, [callback, checkpoint, stopping], max_epochs=4)
    trainer.fit(FixedPredictions(), train_dataloaders=_loader(), val_dataloaders=_loader())
    expected = _expected(_numpy_confusion(), "val")["val/iou/water"]
    assert checkpoint.best_model_score.item() == pytest.approx(expected, rel=1e-6)
    # the score never improves after epoch 0, so patience 1 stops after epoch 1
    assert trainer.current_epoch == 2
    assert stopping.wait_count == 1


def test_per_class_table(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water", "wetland"])
    with pytest.raises(RuntimeError, match="no confusion matrix yet"):
        callback.per_class_table()
    _trainer(tmp_path, [callback]).validate(FixedPredictions(), dataloaders=_loader(), verbose=False)
    matrix = _numpy_confusion()
    lines = callback.per_class_table().splitlines()
    assert lines[0].split() == ["class", "IoU", "recall", "prec.", "F1", "pixels"]
    water = lines[3].split()
    assert water[0] == "water*"
    assert float(water[2]) == pytest.approx(matrix[2, 2] / matrix[2].sum(), abs=5e-5)
    assert int(water[5]) == matrix[2].sum()
    assert lines[4].split()[1:5] == ["nan"] * 4
    assert lines[5].startswith("* rare; rare_recall ")


def test_figures_reach_tensorboard(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water"], log_images=3)
    logger = TensorBoardLogger(tmp_path, name="tb")
    trainer = _trainer(tmp_path, [callback], logger=logger)
    trainer.validate(FixedPredictions(), dataloaders=_loader(), verbose=False)
    logger.experiment.flush()
    events = b"".join(path.read_bytes() for path in Path(logger.log_dir).glob("events.out.tfevents.*"))
    assert b"val/confusion_matrix" in events
    assert b"val/samples" in events


def test_figures_reach_wandb_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wandb = pytest.importorskip("wandb")
    from lightning.pytorch.loggers import WandbLogger

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    logger = WandbLogger(save_dir=tmp_path, offline=True, project="rareseg-test")
    callback = RareClassMetrics(NAMES, rare_classes=["water"], log_images=2)
    try:
        _trainer(tmp_path, [callback], logger=logger).validate(FixedPredictions(), dataloaders=_loader(), verbose=False)
    finally:
        wandb.finish()
    images = sorted(tmp_path.glob("wandb/offline-run-*/files/media/images/**/*.png"))
    # W&B stores key "val/samples" as val/samples_<step>_<hash>.png ("val samples_..." in older versions)
    by_name = {path.name.rsplit("_", 2)[0].split(" ")[-1]: path for path in images}
    assert sorted(by_name) == ["confusion_matrix", "samples"]
    # 2 samples x (image, truth, prediction, saliency) panels of 2.6 in at 100 dpi, plus a 0.6 in legend
    assert matplotlib.image.imread(by_name["samples"]).shape[:2] == (580, 1040)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_names": ["a"]}, "at least 2 class names"),
        ({"class_names": ["a", "a", "b"]}, "must be unique"),
        ({"rare_classes": ["marsh"]}, "unknown class 'marsh'"),
        ({"rare_classes": [7]}, "class id 7, expected 0..3"),
        ({"rare_classes": []}, "at least one rare class"),
        ({"ignore_index": 2}, "ignore_index 2 is a class id"),
        ({"log_images": -1}, "log_images must be >= 0"),
        ({"class_colors": [[0, 0, 0]]}, "1 colours for 4 classes"),
        ({"class_colors": [[0, 0, 300]] * 4}, "RGB triples"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    kwargs = {"class_names": NAMES, "rare_classes": ["water"], **kwargs}
    with pytest.raises(ValueError, match=message):
        RareClassMetrics(**kwargs)


def test_missing_output_key_is_named(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water"], preds_key="labels")
    with pytest.raises(ValueError, match="RareClassMetrics needs 'labels' in the validation_step output"):
        _trainer(tmp_path, [callback]).validate(FixedPredictions(), dataloaders=_loader(), verbose=False)


def test_default_palette_covers_many_classes() -> None:
    names = [f"c{i}" for i in range(len(DEFAULT_PALETTE) + 2)]
    callback = RareClassMetrics(names, rare_classes=[0])
    assert callback.palette.shape == (len(names), 3)
    np.testing.assert_array_equal(callback.palette[len(DEFAULT_PALETTE)], callback.palette[0])


@pytest.mark.slow
def test_two_process_ddp_scores_the_whole_validation_set(tmp_path: Path) -> None:
    callback = RareClassMetrics(NAMES, rare_classes=["water", "wetland"])
    trainer = _trainer(tmp_path, [callback, CloseProcessGroupAtExit()], strategy="ddp_spawn", devices=2)
    loader = DataLoader(TensorDataset(*_fixed_batches()), batch_size=2)
    trainer.validate(FixedPredictions(), dataloaders=loader, verbose=False)
    # each rank saw half of the tiles; the logged values are those of the summed matrix
    _assert_metrics(trainer, _expected(_numpy_confusion(), "val"))
