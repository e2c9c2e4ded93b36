"""NonFiniteGuard: drop optimizer steps whose loss or gradients are NaN/Inf, stop after a run of them."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.utilities.rank_zero import rank_zero_info, rank_zero_warn
from torch import Tensor
from torch.optim import Optimizer
from typing_extensions import override


def all_finite(tensors: Iterable[Tensor]) -> bool:
    """Whether every element of every tensor is finite.

    ``x * 0`` is ``0`` for finite ``x`` and NaN for NaN/Inf, so the sum of ``x * 0`` over all
    tensors is finite exactly when all elements are, without the overflow a norm could hit in
    half precision.

    Args:
        tensors: tensors of any shape and floating dtype; an empty iterable counts as finite.

    Returns:
        ``True`` when no element is NaN or +-Inf.
    """
    total = None
    for tensor in tensors:
        part = tensor.detach().mul(0).sum(dtype=torch.float32)
        total = part if total is None else total + part
    return total is None or bool(torch.isfinite(total))


class NonFiniteGuard(Callback):
    r"""Skip the optimizer step of a batch whose loss (or gradient) is NaN/Inf; stop after a run.

    Mechanism (automatic and manual optimisation alike, since both reach these hooks through
    Lightning's precision plugin): ``on_before_backward`` sees every loss before its backward pass
    and remembers a non-finite one; ``on_before_optimizer_step``, which Lightning calls after the
    gradients exist and before ``optimizer.step``, then sets the ``.grad`` of every parameter of that
    optimizer to ``None``. PyTorch optimizers skip parameters without a gradient, so the step
    changes no weight and no optimizer state (momentum, Adam moments, step counts, weight decay).
    The decision is reduced over ranks (any rank skips -> all skip), so DDP replicas stay equal.
    With ``accumulate_grad_batches > 1`` the whole accumulated step is dropped.

    With ``check_gradients`` a finite loss whose gradients are not finite is skipped too, except
    under a ``GradScaler`` (``precision="16-mixed"``), where overflowing gradients are the scaler's
    business and it already skips those steps.

    A manual-optimisation module is covered when it calls ``self.manual_backward(loss)`` and
    steps through ``self.optimizers()`` (Lightning's wrapper); weight changes it makes outside
    that wrapper (e.g. a SAM ascent done directly on the wrapped optimizer) are not seen, so such
    a module should restore those weights before the final ``step`` as SAM does, or check
    ``torch.isfinite(loss)`` itself.

    ``nonfinite/skipped`` (batches skipped so far) is logged every training batch. After
    ``max_consecutive`` consecutive batches were skipped, ``trainer.should_stop`` is set and a
    warning says why; the weights are still the last finite ones, so checkpoints stay usable.

    Args:
        max_consecutive: consecutive skipped batches that stop training (``>= 1``).
        check_gradients: also skip when the loss is finite but a gradient is not.
        verbose: report every skipped batch on rank zero.

    Attributes:
        skipped: batches skipped so far.
        consecutive: skipped batches in the current run.
        stop_reason: the message given when training was stopped, else ``None``.

    Raises:
        ValueError: ``max_consecutive < 1``.
    """

    def __init__(self, max_consecutive: int = 3, check_gradients: bool = True, verbose: bool = True) -> None:
        super().__init__()
        if max_consecutive < 1:
            raise ValueError(f"NonFiniteGuard max_consecutive must be >= 1, got {max_consecutive}")
        self.max_consecutive = max_consecutive
        self.check_gradients = check_gradients
        self.verbose = verbose
        self.skipped = 0
        self.consecutive = 0
        self.stop_reason: str | None = None
        self._nonfinite_loss = False
        self._batch_stepped = False
        self._batch_skipped = False

    @override
    def state_dict(self) -> dict[str, Any]:
        return {"skipped": self.skipped, "consecutive": self.consecutive}

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped = state_dict["skipped"]
        self.consecutive = state_dict["consecutive"]

    @override
    def on_train_batch_start(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        self._batch_stepped = False
        self._batch_skipped = False

    @override
    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule, loss: Tensor) -> None:
        if not all_finite([loss]):
            self._nonfinite_loss = True

    @override
    def on_before_optimizer_step(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, optimizer: Optimizer
    ) -> None:
        parameters = [p for group in optimizer.param_groups for p in group["params"]]
        skip = self._nonfinite_loss
        if not skip and self.check_gradients and getattr(trainer.precision_plugin, "scaler", None) is None:
            skip = not all_finite(p.grad for p in parameters if p.grad is not None)
        skip = trainer.strategy.reduce_boolean_decision(skip, all=False)
        self._nonfinite_loss = False
        self._batch_stepped = True
        if skip:
            for parameter in parameters:
                parameter.grad = None
            self._batch_skipped = True

    @override
    def on_train_batch_end(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        if self._batch_stepped:
            if self._batch_skipped:
                self.skipped += 1
                self.consecutive += 1
                if self.verbose:
                    rank_zero_info(
                        f"NonFiniteGuard: non-finite loss or gradient at epoch {trainer.current_epoch}, batch"
                        f" {batch_idx}; optimizer step skipped ({self.consecutive} in a row, {self.skipped} in all)"
                    )
            else:
                self.consecutive = 0
        pl_module.log("nonfinite/skipped", float(self.skipped), on_step=True, on_epoch=False)
        if self.consecutive >= self.max_consecutive and self.stop_reason is None:
            self.stop_reason = (
                f"NonFiniteGuard: {self.consecutive} consecutive batches had a non-finite loss or gradient"
                f" (epoch {trainer.current_epoch}, batch {batch_idx}); stopping training with the last finite"
                " weights. Lower the learning rate, enable gradient clipping or check the data."
            )
            rank_zero_warn(self.stop_reason)
            trainer.should_stop = True
