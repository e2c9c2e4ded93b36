"""The generic contract between these callbacks and any LightningModule.

The callbacks read class ids from their own arguments (else, by duck typing, from attributes of the
LightningModule or the datamodule) and per-batch tensors from the dict a module's
``validation_step``/``test_step`` returns; these helpers turn a broken contract into a one-line
error that names the callback and the missing piece.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
from torch import Tensor


def learned(name: str, given: Any, trainer: pl.Trainer, pl_module: pl.LightningModule) -> Any:
    """``given``, else the module's attribute ``name``, else the datamodule's (None when none has it).

    Args:
        name: attribute name, e.g. ``class_names``.
        given: the callback's own argument (wins when not None).
        trainer: the trainer, whose ``datamodule`` may be None.
        pl_module: the LightningModule.
    """
    for value in (given, getattr(pl_module, name, None), getattr(trainer.datamodule, name, None)):
        if value is not None:
            return value
    return None


def resolve_class_ids(
    classes: Sequence[int | str],
    class_names: Sequence[str] | None,
    owner: str,
    what: str,
) -> list[int]:
    """Turn a list of class ids or class names into class ids.

    Args:
        classes: class ids (``int``, index into ``class_names``) or class names (``str``).
        class_names: names of all classes in id order, or ``None`` when only ids are known.
        owner: name of the callback, used in error messages.
        what: name of the argument, used in error messages.

    Returns:
        The class ids in the order given, duplicates rejected.

    Raises:
        ValueError: a name is unknown, an id is out of range, or a class is listed twice.
    """
    ids: list[int] = []
    for item in classes:
        if isinstance(item, str):
            if class_names is None:
                raise ValueError(f"{owner}: {what} names class '{item}' but no class_names were given")
            if item not in class_names:
                raise ValueError(f"{owner}: {what} names unknown class '{item}' (classes: {', '.join(class_names)})")
            class_id = list(class_names).index(item)
        elif isinstance(item, int) and not isinstance(item, bool):
            class_id = item
            if class_id < 0 or (class_names is not None and class_id >= len(class_names)):
                limit = f"0..{len(class_names) - 1}" if class_names is not None else ">= 0"
                raise ValueError(f"{owner}: {what} has class id {class_id}, expected {limit}")
        else:
            raise ValueError(f"{owner}: {what} entries must be class ids or names, got {item!r}")
        if class_id in ids:
            raise ValueError(f"{owner}: {what} lists class {item!r} twice")
        ids.append(class_id)
    return ids


def step_output(outputs: Any, key: str, owner: str, stage: str) -> Tensor:
    """Fetch one tensor from what ``validation_step``/``test_step`` returned.

    Args:
        outputs: the step's return value as Lightning passes it to ``on_*_batch_end``.
        key: the dict key to read.
        owner: name of the callback, used in the error message.
        stage: ``"validation"`` or ``"test"``, used in the error message.

    Returns:
        ``outputs[key]``.

    Raises:
        ValueError: the step returned no dict or the dict lacks ``key``.
    """
    if not isinstance(outputs, Mapping):
        raise ValueError(f"{owner} needs {stage}_step to return a dict with '{key}', got {type(outputs).__name__}")
    if key not in outputs:
        raise ValueError(f"{owner} needs '{key}' in the {stage}_step output (keys: {', '.join(map(str, outputs))})")
    return outputs[key]
