"""Argument and input checks shared by the rareseg losses (clear one-line errors)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch


def frequency_tensor(class_frequencies: Sequence[float] | None, owner: str) -> torch.Tensor:
    """Validate training class pixel frequencies and return them as a float64 ``(K,)`` tensor.

    Warns once for every class with frequency 0 (such a class gets loss weight 0).

    Args:
        class_frequencies: one non-negative finite number per class, at least one positive.
        owner: name of the loss, used in messages.

    Returns:
        ``(K,)`` float64 CPU tensor of the frequencies.

    Raises:
        ValueError: if the frequencies are missing, empty, not 1-D, negative, non-finite or all 0.
    """
    if class_frequencies is None:
        raise ValueError(f"{owner} needs class_frequencies (link the datamodule's class_frequencies or pass a list)")
    try:
        freqs = torch.as_tensor(class_frequencies, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"{owner}: class_frequencies must be a sequence of numbers ({err})") from None
    if freqs.ndim != 1 or freqs.numel() == 0:
        raise ValueError(f"{owner}: class_frequencies must be a non-empty 1-D sequence, got {class_frequencies!r}")
    if not torch.isfinite(freqs).all() or (freqs < 0).any():
        raise ValueError(f"{owner}: class_frequencies must be finite and >= 0, got {freqs.tolist()}")
    if freqs.max() == 0:
        raise ValueError(f"{owner}: class_frequencies are all 0; at least one class must occur")
    absent = (freqs == 0).nonzero().flatten().tolist()
    if absent:
        warnings.warn(f"{owner}: classes {absent} have training frequency 0 and get loss weight 0", stacklevel=3)
    return freqs


def check_logits_target(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: int, num_classes: int | None = None
) -> None:
    """Check a ``(B, K, H, W)`` logit / ``(B, H, W)`` label pair before a loss uses it, without a device sync.

    Shapes, dtypes and the class count are tensor metadata, checked on every call. Class ids are
    values: reading them on the host would wait for an accelerator twice per CASM step, so they
    are checked here only for CPU tensors (where nothing waits). On an accelerator the guarantee
    comes from the data -- ``LissIVDataModule`` rejects masks with an id outside ``classes.yaml``
    at construction -- and from torch's own device-side asserts in ``one_hot``/``cross_entropy``.
    Non-finite losses are not checked here either: ``NonFiniteGuard`` watches every loss before
    its backward pass and drops the step.

    Args:
        logits: ``(B, K, H, W)`` floating-point class scores.
        target: ``(B, H, W)`` integer class ids in ``[0, K)`` or ``ignore_index``.
        ignore_index: label of ignored pixels.
        num_classes: ``K`` the loss was configured for (from its class frequencies), if any.

    Raises:
        ValueError: on a shape, dtype or class-count mismatch, or (CPU tensors) a class id outside ``[0, K)``.
    """
    if logits.ndim != 4 or target.ndim != 3:
        raise ValueError(
            f"expected logits (B, K, H, W) and target (B, H, W), got {tuple(logits.shape)} and {tuple(target.shape)}"
        )
    if logits.shape[:1] + logits.shape[2:] != target.shape:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} differ in batch or spatial size"
        )
    if not logits.is_floating_point() or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"expected float logits and integer target, got {logits.dtype} and {target.dtype}")
    classes = logits.shape[1]
    if num_classes is not None and classes != num_classes:
        raise ValueError(f"logits have {classes} classes but class_frequencies has {num_classes} entries")
    if target.device.type != "cpu":
        return
    bad = (target != ignore_index) & ((target < 0) | (target >= classes))
    if bad.any():
        raise ValueError(
            f"target holds class id {int(target[bad][0])} outside [0, {classes}) "
            f"that is not ignore_index={ignore_index}"
        )
