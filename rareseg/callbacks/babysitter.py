"""Babysitter: turn hyperparameter knobs when a monitored metric plateaus, guarded by another metric."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks.callback import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.rank_zero import rank_zero_info
from torch import Tensor
from typing_extensions import override

from rareseg.callbacks.knob import Knob, KnobPathError


class Babysitter(Callback):
    r"""Turn named knobs when ``monitor`` plateaus; undo a turn that hurts ``guard``.

    At the end of every validation while fitting (never during the sanity check):

    1. If the latest turn has not been reverted yet and ``guard < best_guard - guard_tolerance``,
       that turn is reverted (exact previous values), the best weights are restored when
       ``restore_best_on_violation``, and ``cooldown`` validations pass before anything else; the
       violating validation does not count as an improvement.
    2. Otherwise ``monitor`` counts as improved when it beats the best so far by more than
       ``min_delta`` (``>`` in ``"max"`` mode, ``<`` in ``"min"`` mode); improvement resets the wait
       and, with a guard and ``restore_best_on_violation``, keeps a CPU copy of the module's
       ``state_dict``.
    3. During cooldown the wait is held at zero. Once the patience is used up, and
       ``trainer.global_step >= warmup_steps``, the next knob in round-robin order is turned once
       (a knob already at its bound is skipped), then ``cooldown`` validations pass.

    Patience is counted in validations (``patience``: ``wait_count >= patience``) or, when
    ``patience_steps`` is set, in optimiser steps: ``trainer.global_step - wait_start_step >=
    patience_steps``, where ``wait_start_step`` is the global step of the latest improvement, turn,
    revert or cooldown validation (0 at the start). Either way it is judged at the end of each
    validation, so with validation every ``val_check_interval`` batches a turn can come mid-epoch.
    A turn that the warm-up holds back happens at the first validation at or after
    ``warmup_steps`` at which the patience is still used up.

    ``guard`` is higher-is-better (majority-class precision by default); ``best_guard`` is its
    maximum over all validations so far. Every knob's value in effect during the epoch is logged
    as ``babysitter/<path>`` from ``on_validation_epoch_end``, and every action is reported in one
    line on rank zero when ``verbose``.

    The schedule (best scores, wait, cooldown, next knob, revertible turn and every value the
    Babysitter wrote) is the callback's ``state_dict``; on resume the written values are applied
    again at ``on_fit_start`` (or ``on_train_start`` for strategies that restore callbacks late),
    so plain attributes that are not in the module's ``state_dict`` come back too. The copy of the
    best weights is not checkpointed: after a resume a violation reverts the knob and keeps the
    weights until the next improvement is seen.

    Args:
        knobs: the knobs to turn, in round-robin order; paths must be unique.
        monitor: logged metric to improve, read from ``trainer.callback_metrics``.
        mode: ``"max"`` or ``"min"``: direction in which ``monitor`` improves.
        patience: validations without improvement before a knob is turned (``>= 1``); not used
            when ``patience_steps`` is set.
        patience_steps: optimiser steps without improvement before a knob is turned (``>= 1``), or
            ``None`` to count ``patience`` in validations (the seed).
        warmup_steps: no knob is turned before ``trainer.global_step`` reaches this (``>= 0``).
        min_delta: smallest change of ``monitor`` that counts as improvement (``>= 0``, metric units).
        guard: logged higher-is-better metric that a turn must not lower, or ``None`` for no guard.
        guard_tolerance: how far (metric units, ``>= 0``) ``guard`` may fall below its best before
            the last turn is reverted.
        cooldown: validations to wait after a turn or a revert (``>= 0``).
        restore_best_on_violation: also restore the weights from the best ``monitor`` validation
            when reverting.
        verbose: report every action on rank zero.

    Attributes:
        best_score: best ``monitor`` value so far (``-inf``/``inf`` before the first validation).
        best_guard: best ``guard`` value so far.
        wait_count: validations since the last improvement, turn or revert.
        wait_start_step: global step of the latest improvement, turn, revert or cooldown validation.
        best_step: global step of the best ``monitor`` value (``None`` before the first validation).
        cooldown_counter: validations of cooldown left.
        next_knob: index of the knob tried at the next turn.
        last_turn: ``{"knob": index, "values": values before the turn}`` of the latest turn that
            can still be reverted, else ``None``.
        applied: ``{path: values}`` for every knob the Babysitter has written.

    Example (YAML, under ``trainer.callbacks``)::

        - class_path: rareseg.callbacks.Babysitter
          init_args:
            monitor: val/rare_recall
            guard: val/majority_precision
            knobs:
              - {class_path: rareseg.callbacks.Knob, init_args: {path: criterion.lam, factor: 2.0, maximum: 1.0}}
              - {class_path: rareseg.callbacks.Knob, init_args: {path: optimizer.lr, factor: 0.5, minimum: 1.0e-6}}

    Raises:
        ValueError: bad arguments (at construction).
        MisconfigurationException: a knob's path does not resolve (at ``setup`` for module and
            datamodule paths, at ``on_fit_start`` for optimizer paths), naming the path.
        RuntimeError: ``monitor`` or ``guard`` is missing from the logged metrics.
    """

    def __init__(
        self,
        knobs: Sequence[Knob],
        monitor: str = "val/rare_recall",
        mode: str = "max",
        patience: int = 2,
        patience_steps: int | None = None,
        warmup_steps: int = 0,
        min_delta: float = 0.0,
        guard: str | None = "val/majority_precision",
        guard_tolerance: float = 0.02,
        cooldown: int = 1,
        restore_best_on_violation: bool = True,
        verbose: bool = True,
    ) -> None:
        super().__init__()
        if not knobs:
            raise ValueError("Babysitter needs at least one knob")
        paths = [knob.path for knob in knobs]
        duplicates = sorted({path for path in paths if paths.count(path) > 1})
        if duplicates:
            raise ValueError(f"Babysitter knob paths must be unique, repeated: {', '.join(duplicates)}")
        if mode not in ("min", "max"):
            raise ValueError(f"Babysitter mode must be 'min' or 'max', got {mode!r}")
        if patience < 1:
            raise ValueError(f"Babysitter patience must be >= 1, got {patience}")
        if patience_steps is not None and (
            isinstance(patience_steps, bool) or not isinstance(patience_steps, int) or patience_steps < 1
        ):
            raise ValueError(f"Babysitter patience_steps must be None or an integer >= 1, got {patience_steps!r}")
        if isinstance(warmup_steps, bool) or not isinstance(warmup_steps, int) or warmup_steps < 0:
            raise ValueError(f"Babysitter warmup_steps must be an integer >= 0, got {warmup_steps!r}")
        if min_delta < 0:
            raise ValueError(f"Babysitter min_delta must be >= 0, got {min_delta}")
        if guard_tolerance < 0:
            raise ValueError(f"Babysitter guard_tolerance must be >= 0, got {guard_tolerance}")
        if cooldown < 0:
            raise ValueError(f"Babysitter cooldown must be >= 0, got {cooldown}")
        self.knobs = list(knobs)
        self.monitor = monitor
        self.mode = mode
        self.patience = patience
        self.patience_steps = None if patience_steps is None else int(patience_steps)
        self.warmup_steps = int(warmup_steps)
        self.min_delta = min_delta
        self.guard = guard
        self.guard_tolerance = guard_tolerance
        self.cooldown = cooldown
        self.restore_best_on_violation = restore_best_on_violation
        self.verbose = verbose

        self.best_score = -math.inf if mode == "max" else math.inf
        self.best_epoch: int | None = None
        self.best_step: int | None = None
        self.best_guard = -math.inf
        self.wait_count = 0
        self.wait_start_step = 0
        self.cooldown_counter = 0
        self.next_knob = 0
        self.last_turn: dict[str, Any] | None = None
        self.applied: dict[str, list[float]] = {}
        self._best_state: dict[str, Tensor] | None = None
        self._pending: dict[str, list[float]] = {}

    @property
    @override
    def state_key(self) -> str:
        return self._generate_state_key(monitor=self.monitor, knobs=[knob.path for knob in self.knobs])

    @override
    def state_dict(self) -> dict[str, Any]:
        return {
            "best_score": self.best_score,
            "best_epoch": self.best_epoch,
            "best_step": self.best_step,
            "best_guard": self.best_guard,
            "wait_count": self.wait_count,
            "wait_start_step": self.wait_start_step,
            "cooldown_counter": self.cooldown_counter,
            "next_knob": self.next_knob,
            "last_turn": self.last_turn,
            "applied": {path: list(values) for path, values in self.applied.items()},
        }

    @override
    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.best_score = state_dict["best_score"]
        self.best_epoch = state_dict["best_epoch"]
        self.best_step = state_dict.get("best_step")
        self.best_guard = state_dict["best_guard"]
        self.wait_count = state_dict["wait_count"]
        self.wait_start_step = state_dict.get("wait_start_step", 0)
        self.cooldown_counter = state_dict["cooldown_counter"]
        self.next_knob = state_dict["next_knob"]
        self.last_turn = state_dict["last_turn"]
        self.applied = {path: list(values) for path, values in state_dict["applied"].items()}
        self._pending = dict(self.applied)
        self._best_state = None

    @override
    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # after configure_model (a task may build its loss there) and configure_optimizers
        self._validate_knobs(trainer, pl_module, ("module", "datamodule", "optimizer"))
        self._apply_pending(trainer, pl_module)

    @override
    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._apply_pending(trainer, pl_module)

    @override
    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_skip(trainer):
            return
        for knob in self.knobs:
            pl_module.log(f"babysitter/{knob.path}", knob.get(trainer, pl_module), on_epoch=True, sync_dist=True)

    @override
    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self._should_skip(trainer):
            return
        current = self._metric(trainer, self.monitor)
        guard_value = self._metric(trainer, self.guard) if self.guard is not None else None
        step = trainer.global_step

        turn = self.last_turn
        if guard_value is not None and turn is not None and guard_value < self.best_guard - self.guard_tolerance:
            self._revert(trainer, pl_module, turn, guard_value)
            self._reset_wait(step)
            self.cooldown_counter = self.cooldown
            return
        if guard_value is not None:
            self.best_guard = max(self.best_guard, guard_value)

        if self._improved(current):
            self.best_score = current
            self.best_epoch = trainer.current_epoch
            self.best_step = step
            self._reset_wait(step)
            if self.restore_best_on_violation and self.guard is not None:
                self._best_state = {
                    name: tensor.detach().to("cpu", copy=True) for name, tensor in pl_module.state_dict().items()
                }
        else:
            self.wait_count += 1

        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self._reset_wait(step)
            return
        if self._patience_used_up(step) and step >= self.warmup_steps:
            self._turn_next(trainer, pl_module)
            self._reset_wait(step)
            self.cooldown_counter = self.cooldown

    def _reset_wait(self, step: int) -> None:
        self.wait_count = 0
        self.wait_start_step = step

    def _patience_used_up(self, step: int) -> bool:
        if self.patience_steps is None:
            return self.wait_count >= self.patience
        return step - self.wait_start_step >= self.patience_steps

    def _should_skip(self, trainer: pl.Trainer) -> bool:
        return trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking

    def _validate_knobs(self, trainer: pl.Trainer, pl_module: pl.LightningModule, scopes: tuple[str, ...]) -> None:
        for knob in self.knobs:
            if knob.scope not in scopes:
                continue
            try:
                knob.validate(trainer, pl_module)
            except KnobPathError as error:
                raise MisconfigurationException(f"Babysitter knob '{error.path}': {error.reason}") from error

    def _apply_pending(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        by_path = {knob.path: knob for knob in self.knobs}
        for path, values in self._pending.items():
            by_path[path].write(trainer, pl_module, values)
        self._pending = {}

    def _metric(self, trainer: pl.Trainer, name: str) -> float:
        logs = trainer.callback_metrics
        if name not in logs:
            available = ", ".join(sorted(logs)) or "none"
            raise RuntimeError(f"Babysitter watches '{name}', which was not logged (logged: {available})")
        return float(torch.as_tensor(logs[name]).squeeze())

    def _improved(self, current: float) -> bool:
        if self.mode == "max":
            return current > self.best_score + self.min_delta
        return current < self.best_score - self.min_delta

    def _turn_next(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        waited = (
            f"{self.wait_count} validations"
            if self.patience_steps is None
            else f"{trainer.global_step - self.wait_start_step} steps"
        )
        reason = f"{self.monitor} has not improved on {self.best_score:.4g} for {waited}"
        count = len(self.knobs)
        for offset in range(count):
            index = (self.next_knob + offset) % count
            knob = self.knobs[index]
            old = knob.read(trainer, pl_module)
            new = knob.turned(old)
            if new == old:
                continue
            knob.write(trainer, pl_module, new)
            self.last_turn = {"knob": index, "values": old}
            self.applied[knob.path] = new
            self.next_knob = (index + 1) % count
            self._report(trainer, f"{reason}; turned {knob.path} {old[0]:.4g} -> {new[0]:.4g}")
            return
        self._report(trainer, f"{reason}; every knob is at its bound, nothing turned")

    def _revert(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, turn: dict[str, Any], guard_value: float
    ) -> None:
        knob = self.knobs[turn["knob"]]
        turned = knob.get(trainer, pl_module)
        previous = turn["values"]
        knob.write(trainer, pl_module, previous)
        self.applied[knob.path] = list(previous)
        self.last_turn = None
        message = (
            f"{self.guard} fell to {guard_value:.4g}, more than {self.guard_tolerance:.4g} below its best"
            f" {self.best_guard:.4g}; reverted {knob.path} {turned:.4g} -> {previous[0]:.4g}"
        )
        if self.restore_best_on_violation:
            if self._best_state is not None:
                pl_module.load_state_dict(self._best_state)
                best = f"{self.monitor} {self.best_score:.4g}"
                message += f" and restored the weights of epoch {self.best_epoch} ({best})"
            else:
                message += " (no best weights held since the resume, weights kept)"
        self._report(trainer, message)

    def _report(self, trainer: pl.Trainer, message: str) -> None:
        if self.verbose:
            rank_zero_info(f"Babysitter, epoch {trainer.current_epoch}: {message}")
