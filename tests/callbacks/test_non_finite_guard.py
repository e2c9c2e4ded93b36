"""Tests for rareseg.callbacks.non_finite_guard: no weight update from a NaN batch, stop after a run."""

from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback, LightningModule, Trainer
from torch import nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, TensorDataset

from rareseg.callbacks import NonFiniteGuard
from rareseg.callbacks.non_finite_guard import all_finite


class Regression(LightningModule):
    """Linear regression; batches whose index is in ``nan_batches`` get a NaN target (NaN loss),
    those in ``nan_grad_batches`` a finite loss with NaN gradients (``sqrt`` at 0)."""

    def __init__(self, optimizer: str = "sgd", nan_batches=(), nan_grad_batches=(), manual: bool = False) -> None:
        super().__init__()
        self.linear = nn.Linear(3, 1)
        self.optimizer_name = optimizer
        self.nan_batches = set(nan_batches)
        self.nan_grad_batches = set(nan_grad_batches)
        self.automatic_optimization = not manual
        self.seen: list[int] = []

    def _loss(self, batch, batch_idx):
        x, y = batch
        if batch_idx in self.nan_batches:
            y = torch.full_like(y, float("nan"))
        loss = F.mse_loss(self.linear(x), y)
        if batch_idx in self.nan_grad_batches:
            loss = loss + torch.sqrt(self.linear.weight.sum() * 0.0)
        return loss

    def training_step(self, batch, batch_idx):
        self.seen.append(batch_idx)
        loss = self._loss(batch, batch_idx)
        if self.automatic_optimization:
            return loss
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()
        return None

    def configure_optimizers(self):
        if self.optimizer_name == "adamw":
            return torch.optim.AdamW(self.parameters(), lr=0.05, weight_decay=0.1)
        return torch.optim.SGD(self.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)


class WeightTrace(Callback):
    """Parameters before and after every training batch."""

    def __init__(self) -> None:
        self.before: dict[int, list[torch.Tensor]] = {}
        self.after: dict[int, list[torch.Tensor]] = {}

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.before[batch_idx] = [p.detach().clone() for p in pl_module.parameters()]

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self.after[batch_idx] = [p.detach().clone() for p in pl_module.parameters()]

    def unchanged(self, batch_idx: int) -> bool:
        pairs = zip(self.before[batch_idx], self.after[batch_idx])
        return all(torch.allclose(a, b, rtol=0, atol=0, equal_nan=True) for a, b in pairs)


def _fit(tmp_path: Path, module: Regression, guard: NonFiniteGuard, batches: int = 8) -> tuple[Trainer, WeightTrace]:
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(batches * 2, 3, generator=generator)
    y = x.sum(dim=1, keepdim=True)
    trace = WeightTrace()
    trainer = Trainer(
        accelerator="cpu",
        max_epochs=1,
        callbacks=[guard, trace],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=tmp_path,
    )
    trainer.fit(module, train_dataloaders=DataLoader(TensorDataset(x, y), batch_size=2))
    return trainer, trace


def test_all_finite() -> None:
    assert all_finite([torch.ones(3), torch.zeros(2, 2)])
    assert all_finite([])
    assert not all_finite([torch.ones(3), torch.tensor([1.0, float("nan")])])
    assert not all_finite([torch.tensor([float("-inf")])])
    assert all_finite([torch.full((4,), 60000.0, dtype=torch.float16)])


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_nan_batch_leaves_weights_and_training_goes_on(tmp_path: Path, optimizer: str) -> None:
    module = Regression(optimizer, nan_batches={2})
    guard = NonFiniteGuard(max_consecutive=3)
    trainer, trace = _fit(tmp_path, module, guard)
    # momentum and weight decay would move the weights if the step ran with zero gradients
    assert trace.unchanged(2)
    assert not trace.unchanged(1) and not trace.unchanged(3)
    assert module.seen == list(range(8))
    assert guard.skipped == 1 and guard.consecutive == 0
    assert guard.stop_reason is None
    assert trainer.callback_metrics["nonfinite/skipped"].item() == 1.0
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_stops_after_max_consecutive(tmp_path: Path) -> None:
    module = Regression(nan_batches={3, 4, 5, 6})
    guard = NonFiniteGuard(max_consecutive=3)
    trainer, trace = _fit(tmp_path, module, guard)
    assert module.seen == [0, 1, 2, 3, 4, 5]
    assert trainer.should_stop
    assert guard.skipped == 3 and guard.consecutive == 3
    assert "3 consecutive batches had a non-finite loss or gradient" in guard.stop_reason
    for batch_idx in (3, 4, 5):
        assert all(torch.equal(a, b) for a, b in zip(trace.after[2], trace.after[batch_idx]))


def test_finite_batch_resets_the_run(tmp_path: Path) -> None:
    module = Regression(nan_batches={1, 2, 4, 5, 7})
    guard = NonFiniteGuard(max_consecutive=3)
    trainer, _ = _fit(tmp_path, module, guard)
    assert module.seen == list(range(8))
    assert guard.skipped == 5 and guard.consecutive == 1
    assert trainer.callback_metrics["nonfinite/skipped"].item() == 5.0


@pytest.mark.parametrize("check_gradients", [True, False])
def test_nan_gradient_with_finite_loss(tmp_path: Path, check_gradients: bool) -> None:
    module = Regression(nan_grad_batches={2})
    guard = NonFiniteGuard(check_gradients=check_gradients)
    _, trace = _fit(tmp_path, module, guard, batches=4)
    if check_gradients:
        assert trace.unchanged(2)
        assert guard.skipped == 1
    else:
        assert not torch.isfinite(trace.after[2][0]).all()
        # only batch 3 is skipped: the weights made NaN by batch 2 give a NaN loss
        assert guard.skipped == 1 and trace.unchanged(3)


def test_manual_optimisation_through_lightning_optimizer(tmp_path: Path) -> None:
    module = Regression(nan_batches={1}, manual=True)
    guard = NonFiniteGuard()
    _, trace = _fit(tmp_path, module, guard, batches=4)
    assert trace.unchanged(1)
    assert not trace.unchanged(0) and not trace.unchanged(2)
    assert guard.skipped == 1


def test_state_dict_round_trip_and_bad_argument() -> None:
    guard = NonFiniteGuard()
    guard.load_state_dict({"skipped": 4, "consecutive": 2})
    assert guard.state_dict() == {"skipped": 4, "consecutive": 2}
    with pytest.raises(ValueError, match="max_consecutive must be >= 1, got 0"):
        NonFiniteGuard(max_consecutive=0)
