"""Rare-pixel share of a label batch: the ``p_r`` that sets CASM's radius.

``p_r = (# valid pixels whose class is rare) / (# valid pixels)``, valid meaning not
``ignore_index``. Under DDP the fraction must be taken over the whole global batch, so
:func:`rare_pixel_counts` returns the two counts for the caller to sum over ranks (e.g.
``trainer.strategy.reduce(counts, reduce_op="sum")``) before dividing;
:func:`rare_pixel_fraction` is the single-process shortcut.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from rareseg.core.conventions import IGNORE_INDEX


def rare_pixel_counts(target: Tensor, rare_classes: Sequence[int], ignore_index: int = IGNORE_INDEX) -> Tensor:
    """Rare and valid pixel counts of a label batch.

    Args:
        target: integer class ids of any shape, e.g. ``(B, H, W)``.
        rare_classes: ids of the rare classes.
        ignore_index: id of unlabelled pixels, excluded from both counts.

    Returns:
        int64 tensor ``(2,)`` on ``target``'s device: ``[rare_count, valid_count]``.

    Raises:
        TypeError: ``target`` is not an integer tensor.
        ValueError: ``ignore_index`` is listed among ``rare_classes``.
    """
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise TypeError(f"rare_pixel_counts needs integer class ids, got a {target.dtype} target")
    if ignore_index in rare_classes:
        raise ValueError(
            f"rare_pixel_counts: ignore_index {ignore_index} is also listed as a rare class {list(rare_classes)}"
        )
    rare_ids = torch.as_tensor(list(rare_classes), dtype=target.dtype, device=target.device)
    rare = torch.isin(target, rare_ids).sum()
    valid = (target != ignore_index).sum()
    return torch.stack([rare, valid]).to(torch.int64)


def rare_pixel_fraction(target: Tensor, rare_classes: Sequence[int], ignore_index: int = IGNORE_INDEX) -> Tensor:
    """``p_r = rare_count / valid_count`` of one process's batch (see :func:`rare_pixel_counts`).

    Args:
        target: integer class ids of any shape, e.g. ``(B, H, W)``.
        rare_classes: ids of the rare classes.
        ignore_index: id of unlabelled pixels.

    Returns:
        float64 scalar tensor in ``[0, 1]``; ``0`` when no pixel is valid (no rare pixel seen).
    """
    rare, valid = rare_pixel_counts(target, rare_classes, ignore_index).to(torch.float64)
    return rare / valid.clamp_min(1)
