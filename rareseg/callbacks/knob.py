"""A named hyperparameter that a callback may read and turn within bounds."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor


class KnobPathError(ValueError):
    """A knob's path does not lead to a number.

    Attributes:
        path: the knob's dotted path.
        reason: what is wrong, e.g. ``"LitModule has no attribute 'lamb'"``.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"Knob '{path}': {reason}")
        self.path = path
        self.reason = reason


def turn_value(
    value: float,
    factor: float | None,
    step: float | None,
    minimum: float | None,
    maximum: float | None,
) -> float:
    """One turn of a knob: ``clamp(value * factor)`` or ``clamp(value + step)``.

    Args:
        value: the current value.
        factor: multiplier, or ``None`` when ``step`` is used.
        step: additive increment, or ``None`` when ``factor`` is used.
        minimum: lower bound, or ``None`` for none.
        maximum: upper bound, or ``None`` for none.

    Returns:
        The turned value, clamped to ``[minimum, maximum]``.
    """
    return clamp_value(value * factor if factor is not None else value + step, minimum, maximum)


def clamp_value(value: float, minimum: float | None, maximum: float | None) -> float:
    """``value`` limited to ``[minimum, maximum]`` (a ``None`` bound is open)."""
    if minimum is not None:
        value = max(value, minimum)
    if maximum is not None:
        value = min(value, maximum)
    return value


class Knob:
    """A named, bounded hyperparameter reached by a dotted path.

    The path is one of:

    * ``"<attr>.<attr>..."``: an attribute of the LightningModule, e.g. ``"criterion.lam"``;
    * ``"optimizer.<key>"``: a param-group key of every group of every optimizer, e.g.
      ``"optimizer.lr"`` or ``"optimizer.rho0"`` (an LR scheduler that rewrites ``lr`` each step
      overrides a turned ``lr``);
    * ``"datamodule.<attr>..."``: an attribute of ``trainer.datamodule``, e.g.
      ``"datamodule.sampler.salient_fraction"``.

    The value may be a Python number (written back as ``float``) or a one-element tensor (written
    in place, so buffers keep their device and registration). One turn multiplies by ``factor`` or
    adds ``step`` and clamps the result to ``[minimum, maximum]``; when the path reaches several values
    (several param groups), each is turned on its own, so their ratios survive until a bound.

    Args:
        path: dotted path as above.
        factor: multiplier per turn, ``> 0`` and ``!= 1``; exclusive with ``step``.
        step: increment per turn, ``!= 0``; exclusive with ``factor``.
        minimum: lower bound of the value, or ``None``.
        maximum: upper bound of the value, or ``None``.

    Raises:
        ValueError: the path is malformed, both or neither of ``factor``/``step`` are given, or a
            number is out of range.

    Example (YAML, inside a ``Babysitter``'s ``knobs`` list)::

        - class_path: rareseg.callbacks.Knob
          init_args: {path: criterion.lam, factor: 2.0, maximum: 1.0}
    """

    def __init__(
        self,
        path: str,
        factor: float | None = None,
        step: float | None = None,
        minimum: float | None = None,
        maximum: float | None = None,
    ) -> None:
        parts = path.split(".")
        if not path or any(not part for part in parts):
            raise ValueError(f"Knob path {path!r} must be dotted attribute names, e.g. 'criterion.lam'")
        if parts[0] in ("optimizer", "datamodule") and len(parts) < 2:
            raise ValueError(f"Knob path {path!r} needs a key after '{parts[0]}.'")
        if parts[0] == "optimizer" and len(parts) != 2:
            raise ValueError(f"Knob path {path!r}: optimizer knobs take one param-group key, e.g. 'optimizer.lr'")
        if (factor is None) == (step is None):
            raise ValueError(f"Knob '{path}': give exactly one of factor or step")
        if factor is not None and (not math.isfinite(factor) or factor <= 0 or factor == 1):
            raise ValueError(f"Knob '{path}': factor must be a finite number > 0 and != 1, got {factor}")
        if step is not None and (not math.isfinite(step) or step == 0):
            raise ValueError(f"Knob '{path}': step must be a finite non-zero number, got {step}")
        if minimum is not None and maximum is not None and minimum > maximum:
            raise ValueError(f"Knob '{path}': minimum ({minimum}) is above maximum ({maximum})")
        self.path = path
        self.factor = factor
        self.step = step
        self.minimum = minimum
        self.maximum = maximum

    def __repr__(self) -> str:
        change = f"factor={self.factor}" if self.factor is not None else f"step={self.step}"
        return f"Knob({self.path!r}, {change}, minimum={self.minimum}, maximum={self.maximum})"

    @property
    def scope(self) -> str:
        """Where the path starts: ``"module"``, ``"optimizer"`` or ``"datamodule"``."""
        head = self.path.split(".", 1)[0]
        return head if head in ("optimizer", "datamodule") else "module"

    def validate(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Check that the path leads to numbers now.

        Raises:
            KnobPathError: naming the path and the object that lacks the attribute or key.
        """
        self.read(trainer, pl_module)

    def read(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[float]:
        """Every value the path reaches (one per param group for optimizer knobs, else one)."""
        return [_as_number(self.path, container, key) for container, key in self._slots(trainer, pl_module)]

    def write(self, trainer: pl.Trainer, pl_module: pl.LightningModule, values: Sequence[float]) -> None:
        """Write ``values`` exactly (no clamping), one per slot as returned by :meth:`read`.

        Raises:
            KnobPathError: the number of values does not match the number of slots.
        """
        slots = self._slots(trainer, pl_module)
        if len(values) != len(slots):
            raise KnobPathError(self.path, f"got {len(values)} values for {len(slots)} slots")
        for (container, key), value in zip(slots, values):
            _assign(container, key, float(value))

    def get(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> float:
        """The current value (for optimizer knobs: the first param group of the first optimizer)."""
        return self.read(trainer, pl_module)[0]

    def set(self, trainer: pl.Trainer, pl_module: pl.LightningModule, value: float) -> None:
        """Write ``value``, clamped to the bounds, to every slot."""
        clamped = clamp_value(value, self.minimum, self.maximum)
        self.write(trainer, pl_module, [clamped] * len(self._slots(trainer, pl_module)))

    def turned(self, values: Sequence[float]) -> list[float]:
        """The values one turn would produce from ``values`` (nothing is written)."""
        return [turn_value(value, self.factor, self.step, self.minimum, self.maximum) for value in values]

    def turn(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[float, float]:
        """Turn the knob once.

        Returns:
            ``(old, new)`` of the first slot; equal when the knob already sits at its bound.
        """
        old = self.read(trainer, pl_module)
        new = self.turned(old)
        self.write(trainer, pl_module, new)
        return old[0], new[0]

    def _slots(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> list[tuple[Any, str]]:
        """``(container, key)`` pairs the path reaches; dict keys for param groups, else attributes."""
        parts = self.path.split(".")
        if self.scope == "optimizer":
            key = parts[1]
            optimizers = trainer.optimizers
            if not optimizers:
                raise KnobPathError(self.path, "the Trainer has no optimizers")
            slots: list[tuple[Any, str]] = []
            for optimizer in optimizers:
                for index, group in enumerate(optimizer.param_groups):
                    if key not in group:
                        keys = ", ".join(k for k in group if k != "params")
                        name = type(optimizer).__name__
                        reason = f"{name} param group {index} has no key '{key}' (keys: {keys})"
                        raise KnobPathError(self.path, reason)
                    slots.append((group, key))
            return slots
        if self.scope == "datamodule":
            owner = trainer.datamodule
            if owner is None:
                raise KnobPathError(self.path, "the Trainer has no datamodule (dataloaders were passed directly)")
            parts = parts[1:]
        else:
            owner = pl_module
        for name in parts[:-1]:
            owner = _attribute(self.path, owner, name)
        _attribute(self.path, owner, parts[-1])
        return [(owner, parts[-1])]


def _attribute(path: str, owner: Any, name: str) -> Any:
    if not hasattr(owner, name):
        raise KnobPathError(path, f"{type(owner).__name__} has no attribute '{name}'")
    return getattr(owner, name)


def _fetch(container: Any, key: str) -> Any:
    return container[key] if isinstance(container, dict) else getattr(container, key)


def _as_number(path: str, container: Any, key: str) -> float:
    value = _fetch(container, key)
    if isinstance(value, Tensor) and value.numel() == 1:
        return float(value.item())
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    raise KnobPathError(path, f"'{key}' holds {type(value).__name__}, not a number")


def _assign(container: Any, key: str, value: float) -> None:
    current = _fetch(container, key)
    if isinstance(current, Tensor):
        with torch.no_grad():
            current.fill_(value)
    elif isinstance(container, dict):
        container[key] = value
    else:
        setattr(container, key, value)
