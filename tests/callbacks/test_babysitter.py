"""Tests for rareseg.callbacks.babysitter on a plain Lightning module that is not rareseg's."""

import logging
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from rareseg.callbacks import Babysitter, Knob, RareClassMetrics


class ScriptedRegression(LightningModule):
    """Linear regression ``y = gain * (w x + b)``; validation logs scripted scores per epoch."""

    def __init__(self, scores: list[float], guards: list[float]) -> None:
        super().__init__()
        self.linear = nn.Linear(2, 1)
        self.gain = 1.0
        self.scores = scores
        self.guards = guards

    def training_step(self, batch, batch_idx):
        x, y = batch
        return F.mse_loss(self.gain * self.linear(x), y)

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.scores[self.current_epoch])
        self.log("val/guard", self.guards[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class History(Callback):
    """Records the knob values in effect for each training epoch and the weights after it."""

    def __init__(self) -> None:
        self.gain: dict[int, float] = {}
        self.lr: dict[int, float] = {}
        self.weights: dict[int, torch.Tensor] = {}

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.gain[trainer.current_epoch] = pl_module.gain
        self.lr[trainer.current_epoch] = trainer.optimizers[0].param_groups[0]["lr"]

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self.weights[trainer.current_epoch] = pl_module.linear.weight.detach().clone()


def _loader() -> DataLoader:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(8, 2, generator=generator)
    y = x @ torch.tensor([[1.5], [-0.5]]) + 0.3
    return DataLoader(TensorDataset(x, y), batch_size=4)


def _fit(
    tmp_path: Path, module: ScriptedRegression, callbacks: list, max_epochs: int, ckpt_path=None, **kwargs
) -> Trainer:
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=max_epochs,
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
        **kwargs,
    )
    trainer.fit(module, train_dataloaders=_loader(), val_dataloaders=_loader(), ckpt_path=ckpt_path)
    return trainer


def test_plateau_turns_knobs_round_robin_within_bounds(tmp_path: Path) -> None:
    # best 0.5 at epoch 0; plateau -> turn after epochs 2, 5, 8 (patience 2, one cooldown epoch)
    module = ScriptedRegression(scores=[0.5] * 10, guards=[0.9] * 10)
    babysitter = Babysitter(
        knobs=[Knob("gain", factor=2.0, maximum=2.0), Knob("optimizer.lr", factor=0.5, minimum=0.03)],
        monitor="val/score",
        guard="val/guard",
        patience=2,
        cooldown=1,
    )
    history = History()
    trainer = _fit(tmp_path, module, [babysitter, history], max_epochs=10)

    # turn 1 (end of epoch 2): gain 1 -> 2; turn 2 (epoch 5): lr 0.1 -> 0.05;
    # turn 3 (epoch 8): gain is at its bound, so lr 0.05 -> 0.03 (clamped from 0.025)
    assert history.gain == {0: 1.0, 1: 1.0, 2: 1.0, 3: 2.0, 4: 2.0, 5: 2.0, 6: 2.0, 7: 2.0, 8: 2.0, 9: 2.0}
    assert [history.lr[e] for e in range(10)] == pytest.approx([0.1] * 6 + [0.05] * 3 + [0.03])
    assert babysitter.applied == {"gain": [2.0], "optimizer.lr": [pytest.approx(0.03)]}
    assert babysitter.next_knob == 0
    # the value logged at the last validation is the one in effect during that epoch
    assert trainer.callback_metrics["babysitter/gain"].item() == 2.0
    assert trainer.callback_metrics["babysitter/optimizer.lr"].item() == pytest.approx(0.03)


def test_improvement_resets_the_wait(tmp_path: Path) -> None:
    module = ScriptedRegression(scores=[0.5, 0.5, 0.6, 0.6, 0.7, 0.7], guards=[0.9] * 6)
    babysitter = Babysitter(knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard=None, patience=2)
    history = History()
    _fit(tmp_path, module, [babysitter, history], max_epochs=6)
    assert set(history.gain.values()) == {1.0}
    assert babysitter.best_score == pytest.approx(0.7)
    assert babysitter.wait_count == 1


def test_min_mode_and_min_delta(tmp_path: Path) -> None:
    # decreases of 0.005 are below min_delta=0.01, so they do not count as improvement
    module = ScriptedRegression(scores=[1.0, 0.995, 0.99, 0.985], guards=[0.9] * 4)
    babysitter = Babysitter(
        knobs=[Knob("gain", step=0.5)], monitor="val/score", mode="min", min_delta=0.01, guard=None, patience=2
    )
    history = History()
    _fit(tmp_path, module, [babysitter, history], max_epochs=4)
    assert history.gain == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.5}


def test_guard_drop_reverts_the_turn_and_restores_best_weights(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # turn after epoch 2; at epoch 3 the score rises but the guard falls 0.1 > tolerance 0.02
    module = ScriptedRegression(scores=[0.5, 0.5, 0.5, 0.7], guards=[0.9, 0.92, 0.9, 0.8])
    babysitter = Babysitter(
        knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard="val/guard", guard_tolerance=0.02, patience=2
    )
    history = History()
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, module, [babysitter, history], max_epochs=4)

    assert history.gain[3] == 2.0
    assert module.gain == 1.0
    assert babysitter.last_turn is None
    assert babysitter.applied == {"gain": [1.0]}
    # the violating epoch is not an improvement, the best stays at epoch 0
    assert babysitter.best_score == 0.5
    assert babysitter.best_guard == pytest.approx(0.92)
    assert babysitter.cooldown_counter == 1
    assert not torch.equal(history.weights[0], history.weights[2])
    torch.testing.assert_close(module.linear.weight, history.weights[0], rtol=0, atol=0)
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Babysitter")]
    assert messages == [
        "Babysitter, epoch 2: val/score has not improved on 0.5 for 2 validations; turned gain 1 -> 2",
        "Babysitter, epoch 3: val/guard fell to 0.8, more than 0.02 below its best 0.92; reverted gain 2 -> 1"
        " and restored the weights of epoch 0 (val/score 0.5)",
    ]


def test_guard_within_tolerance_keeps_the_turn(tmp_path: Path) -> None:
    module = ScriptedRegression(scores=[0.5, 0.5, 0.5, 0.5], guards=[0.9, 0.9, 0.9, 0.885])
    babysitter = Babysitter(knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard="val/guard", patience=2)
    _fit(tmp_path, module, [babysitter], max_epochs=4)
    assert module.gain == 2.0
    assert babysitter.last_turn == {"knob": 0, "values": [1.0]}


def test_resume_continues_the_same_schedule(tmp_path: Path) -> None:
    scores, guards = [0.5] * 8, [0.9] * 8

    def make() -> tuple[ScriptedRegression, Babysitter, History]:
        knob = Knob("gain", factor=2.0, maximum=8.0)
        babysitter = Babysitter(knobs=[knob], monitor="val/score", guard="val/guard")
        return ScriptedRegression(scores, guards), babysitter, History()

    module, babysitter_full, full = make()
    _fit(tmp_path / "full", module, [babysitter_full, full], max_epochs=8)
    assert full.gain == {0: 1.0, 1: 1.0, 2: 1.0, 3: 2.0, 4: 2.0, 5: 2.0, 6: 4.0, 7: 4.0}

    module, babysitter, first = make()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "part", module, [babysitter, first, checkpoint], max_epochs=5)
    assert first.gain == {e: full.gain[e] for e in range(5)}
    saved = torch.load(checkpoint.last_model_path, weights_only=False)
    assert saved["callbacks"][babysitter.state_key]["wait_count"] == 1
    assert saved["callbacks"][babysitter.state_key]["applied"] == {"gain": [2.0]}

    module, babysitter_resumed, second = make()
    assert module.gain == 1.0
    resumed_checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(
        tmp_path / "part",
        module,
        [babysitter_resumed, second, resumed_checkpoint],
        max_epochs=8,
        ckpt_path=checkpoint.last_model_path,
    )
    # the knob value turned before the checkpoint is back on the fresh module from the first resumed epoch
    assert second.gain == {5: 2.0, 6: 4.0, 7: 4.0}
    assert babysitter_resumed.state_dict() == babysitter_full.state_dict()


def test_bad_module_path_fails_at_setup_naming_it(tmp_path: Path) -> None:
    module = ScriptedRegression([0.5], [0.9])
    babysitter = Babysitter(knobs=[Knob("gian", factor=2.0)], monitor="val/score", guard="val/guard")
    message = "^Babysitter knob 'gian': ScriptedRegression has no attribute 'gian'$"
    with pytest.raises(MisconfigurationException, match=message):
        _fit(tmp_path, module, [babysitter], max_epochs=1)


def test_bad_optimizer_key_fails_at_fit_start_naming_it(tmp_path: Path) -> None:
    module = ScriptedRegression([0.5], [0.9])
    babysitter = Babysitter(knobs=[Knob("optimizer.rho0", factor=2.0)], monitor="val/score", guard="val/guard")
    message = "^Babysitter knob 'optimizer.rho0': SGD param group 0 has no key 'rho0'"
    with pytest.raises(MisconfigurationException, match=message):
        _fit(tmp_path, module, [babysitter], max_epochs=1)


def test_missing_monitor_is_named(tmp_path: Path) -> None:
    module = ScriptedRegression([0.5], [0.9])
    babysitter = Babysitter(knobs=[Knob("gain", factor=2.0)], monitor="val/rare_recall", guard=None)
    message = "'val/rare_recall', which was not logged \\(logged: babysitter/gain, val/guard, val/score\\)"
    with pytest.raises(RuntimeError, match=message):
        _fit(tmp_path, module, [babysitter], max_epochs=1)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"knobs": []}, "at least one knob"),
        ({"knobs": [Knob("a", factor=2.0), Knob("a", step=1.0)]}, "repeated: a"),
        ({"mode": "up"}, "mode must be 'min' or 'max'"),
        ({"patience": 0}, "patience must be >= 1"),
        ({"min_delta": -0.1}, "min_delta must be >= 0"),
        ({"guard_tolerance": -0.1}, "guard_tolerance must be >= 0"),
        ({"cooldown": -1}, "cooldown must be >= 0"),
    ],
)
def test_bad_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    kwargs = {"knobs": [Knob("gain", factor=2.0)], **kwargs}
    with pytest.raises(ValueError, match=message):
        Babysitter(**kwargs)


class FixedSegmentation(ScriptedRegression):
    """Validation returns the same predictions every epoch, for RareClassMetrics to score."""

    def validation_step(self, batch, batch_idx):
        target = torch.tensor([[[0, 0, 1], [0, 2, 2]]])
        preds = torch.tensor([[[0, 0, 0], [0, 2, 1]]])
        return {"preds": preds, "target": target}


def test_reads_the_metrics_rare_class_metrics_logs(tmp_path: Path) -> None:
    metrics = RareClassMetrics(["land", "water", "wetland"], rare_classes=["water", "wetland"])
    babysitter = Babysitter(knobs=[Knob("gain", factor=2.0)], patience=1, cooldown=0)
    history = History()
    _fit(tmp_path, FixedSegmentation([], []), [babysitter, metrics, history], max_epochs=4)
    # rare recall (0/1 + 1/2) / 2 never improves on epoch 0, so the validations of epochs 1 and 2 turn the knob;
    # majority precision: 3 of the 4 pixels predicted "land" are land
    assert babysitter.best_score == pytest.approx(0.25)
    assert babysitter.best_guard == pytest.approx(0.75)
    assert history.gain == {0: 1.0, 1: 1.0, 2: 2.0, 3: 4.0}


# --- patience in optimiser steps and a warm-up


class ScriptedPerValidation(ScriptedRegression):
    """Logs ``scores[k]`` at the ``k``-th validation (0-based), however often validation runs."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__(scores, [])
        self.validations = 0

    def validation_step(self, batch, batch_idx):
        self.log("val/score", self.scores[self.validations])

    def on_validation_epoch_end(self) -> None:
        self.validations += 1


class GainPerStep(Callback):
    """The knob value in effect for each optimiser step (keyed by the global step it starts from)."""

    def __init__(self) -> None:
        self.gain: dict[int, float] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.gain[trainer.global_step] = pl_module.gain


@pytest.mark.parametrize(("warmup_steps", "turn_steps"), [(0, (5, 8)), (7, (7, 10))])
def test_patience_in_steps_with_validation_after_every_step(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, warmup_steps: int, turn_steps: tuple[int, int]
) -> None:
    # validation after every batch, so validation k (1-based) sees global_step k. Improvements at steps 1 and 2;
    # patience 3 steps: 5 - 2 >= 3 turns at step 5 and, the wait restarting there, again at step 8.
    # With warm-up 7 the turn due at step 5 waits until step 7 (7 - 2 >= 3), the next comes at 10.
    module = ScriptedPerValidation([0.5, 0.6] + [0.6] * 10)
    babysitter = Babysitter(
        knobs=[Knob("gain", factor=2.0)],
        monitor="val/score",
        guard=None,
        patience=100,
        patience_steps=3,
        warmup_steps=warmup_steps,
        cooldown=0,
    )
    history = GainPerStep()
    with caplog.at_level(logging.INFO):
        _fit(tmp_path, module, [babysitter, history], max_epochs=5, val_check_interval=1, num_sanity_val_steps=0)
    first, second = turn_steps
    expected = {step: 1.0 if step < first else 2.0 if step < second else 4.0 for step in range(10)}
    assert history.gain == expected
    assert babysitter.best_step == 2 and babysitter.best_score == pytest.approx(0.6)
    assert babysitter.wait_start_step == second
    messages = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Babysitter")]
    assert messages[0].endswith(f"val/score has not improved on 0.6 for {first - 2} steps; turned gain 1 -> 2")


def test_warmup_holds_back_validation_count_patience(tmp_path: Path) -> None:
    # two steps per epoch: validation e sees step 2(e + 1). Patience 1 is used up from epoch 1 (step 4),
    # but the warm-up of 7 steps holds every turn back until epoch 3 (step 8); cooldown 0 turns again at 4, 5.
    module = ScriptedRegression(scores=[0.5] * 6, guards=[0.9] * 6)
    babysitter = Babysitter(
        knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard=None, patience=1, cooldown=0, warmup_steps=7
    )
    history = History()
    _fit(tmp_path, module, [babysitter, history], max_epochs=6)
    assert history.gain == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 2.0, 5: 4.0}


def test_resume_continues_the_step_schedule(tmp_path: Path) -> None:
    # two steps per epoch, best at epoch 0 (step 2), patience 3 steps, warm-up 9 steps, cooldown 1:
    # turn at epoch 4 (step 10), cooldown at epoch 5 (step 12), turn at epoch 7 (step 16)
    scores, guards = [0.5] * 8, [0.9] * 8

    def make() -> tuple[ScriptedRegression, Babysitter, History]:
        knob = Knob("gain", factor=2.0, maximum=8.0)
        babysitter = Babysitter(
            knobs=[knob], monitor="val/score", guard="val/guard", patience_steps=3, warmup_steps=9, cooldown=1
        )
        return ScriptedRegression(scores, guards), babysitter, History()

    module, babysitter_full, full = make()
    _fit(tmp_path / "full", module, [babysitter_full, full], max_epochs=8)
    assert full.gain == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0, 4: 1.0, 5: 2.0, 6: 2.0, 7: 2.0}
    assert babysitter_full.applied == {"gain": [4.0]} and babysitter_full.wait_start_step == 16

    module, babysitter, first = make()
    checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(tmp_path / "part", module, [babysitter, first, checkpoint], max_epochs=5)
    saved = torch.load(checkpoint.last_model_path, weights_only=False)["callbacks"][babysitter.state_key]
    assert (saved["wait_start_step"], saved["best_step"], saved["cooldown_counter"]) == (10, 2, 1)

    module, babysitter_resumed, second = make()
    resumed_checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
    _fit(
        tmp_path / "part",
        module,
        [babysitter_resumed, second, resumed_checkpoint],
        max_epochs=8,
        ckpt_path=checkpoint.last_model_path,
    )
    assert second.gain == {5: 2.0, 6: 2.0, 7: 2.0}
    assert babysitter_resumed.state_dict() == babysitter_full.state_dict()


def test_state_saved_before_step_patience_existed_loads() -> None:
    babysitter = Babysitter(knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard=None, patience_steps=4)
    old = Babysitter(knobs=[Knob("gain", factor=2.0)], monitor="val/score", guard=None).state_dict()
    del old["wait_start_step"], old["best_step"]
    babysitter.load_state_dict(old)
    assert (babysitter.wait_start_step, babysitter.best_step) == (0, None)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"patience_steps": 0}, "patience_steps must be None or an integer >= 1"),
        ({"patience_steps": 2.5}, "patience_steps must be None or an integer >= 1"),
        ({"patience_steps": True}, "patience_steps must be None or an integer >= 1"),
        ({"warmup_steps": -1}, "warmup_steps must be an integer >= 0"),
        ({"warmup_steps": 1.5}, "warmup_steps must be an integer >= 0"),
    ],
)
def test_bad_step_arguments_fail_at_construction(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Babysitter(knobs=[Knob("gain", factor=2.0)], **kwargs)
