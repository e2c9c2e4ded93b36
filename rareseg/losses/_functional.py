"""Pure tensor functions behind the rareseg losses (no module state, callable from tests).

Shapes: ``B`` batch, ``K`` classes, ``*`` any number of spatial dimensions (usually ``H, W``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F

AlphaOn = Literal["fp", "fn", "both"]


def arbt_alpha(frequencies: torch.Tensor, eta: float, alpha_max: float = 1.0) -> torch.Tensor:
    """Class-adaptive Tversky weight ``alpha_c = min(1 - (f_c / max_k f_k) ** eta, alpha_max)``.

    The most frequent class gets 0, rarer classes approach 1, a class with ``f_c = 0`` gets 1;
    ``alpha_max`` caps every class (``alpha_max = 1``, the default, caps nothing: the seed's form).

    Args:
        frequencies: ``(K,)`` non-negative class pixel frequencies (fractions or counts; only
            ratios matter), at least one positive.
        eta: exponent ``>= 0``; larger values push every class but the most frequent towards 1.
        alpha_max: upper bound of ``alpha_c``, in ``[0, 1]``.

    Returns:
        ``(K,)`` tensor of ``alpha_c`` in ``[0, alpha_max]``, same dtype and device as ``frequencies``.
    """
    return (1.0 - (frequencies / frequencies.max()) ** eta).clamp(max=alpha_max)


def inverse_frequency_weights(frequencies: torch.Tensor, power: float, eps: float) -> torch.Tensor:
    """Per-class weights ``w_c = (f_c + eps) ** -power``, normalised to mean 1 over present classes.

    Classes with ``f_c = 0`` get weight 0 and do not enter the mean. This is ARBT's ``w_c``
    (``power = delta``) and the class weighting of ``WeightedCrossEntropyLoss``.

    Args:
        frequencies: ``(K,)`` non-negative class pixel frequencies, at least one positive.
        power: exponent ``>= 0``; 0 gives 1 for every present class, 1 is inverse frequency.
        eps: added to every frequency before the power (keeps tiny classes finite).

    Returns:
        ``(K,)`` tensor of weights, same dtype and device as ``frequencies``.
    """
    present = frequencies > 0
    raw = torch.where(present, (frequencies + eps) ** -power, torch.zeros_like(frequencies))
    return raw * (present.sum() / raw.sum())


def one_hot_valid(target: torch.Tensor, num_classes: int, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One-hot encode a label map, zeroing ignored pixels.

    Args:
        target: ``(B, *)`` integer class ids in ``[0, K)`` or ``ignore_index``.
        num_classes: ``K``.
        ignore_index: label of pixels that take no part in the loss.

    Returns:
        ``onehot`` ``(B, K, *)`` (0/1, integer dtype; all zeros at ignored pixels) and
        ``valid`` ``(B, *)`` boolean.
    """
    valid = target != ignore_index
    onehot = F.one_hot(target.masked_fill(~valid, 0), num_classes).movedim(-1, 1)
    return onehot * valid.unsqueeze(1), valid


def _power_of_abs(diff: torch.Tensor, gamma: float) -> torch.Tensor:
    """``|diff| ** gamma`` with 0 at ``diff = 0`` and a finite gradient there for any ``gamma > 0``."""
    magnitude = diff.abs()
    nonzero = magnitude > 0
    safe = torch.where(nonzero, magnitude, torch.ones_like(magnitude))
    return torch.where(nonzero, safe**gamma, torch.zeros_like(magnitude))


def tversky_error_weights(alpha: torch.Tensor, alpha_on: AlphaOn) -> tuple[torch.Tensor, torch.Tensor]:
    """ARBT's per-class weights ``(a_c, b_c)`` of false positives and false negatives.

    ============  ====================  ====================
    ``alpha_on``  ``a_c`` (FP)          ``b_c`` (FN)
    ============  ====================  ====================
    ``"fp"``      ``alpha_c``           ``1 - alpha_c``
    ``"fn"``      ``1 - alpha_c``       ``alpha_c``
    ``"both"``    ``1 - alpha_c / 2``   ``1/2 + alpha_c / 2``
    ============  ====================  ====================

    ``"fp"`` is the seed's formula as written; ``"fn"`` puts the class-adaptive weight on false
    negatives. ``"both"`` is ``1/2 + 1/2 *`` the ``"fn"`` weights: both error counts of every class
    carry a weight in ``[1/2, 1]``, the most frequent class leans towards precision
    (``T = TP / (TP + FP + FN/2)``) and a class with ``alpha_c = 1`` towards recall
    (``T = TP / (TP + FP/2 + FN)``), so no class can trade its false positives away for free.

    Args:
        alpha: ``(K,)`` class-adaptive weights ``alpha_c`` in ``[0, 1]`` (see :func:`arbt_alpha`).
        alpha_on: ``"fp"``, ``"fn"`` or ``"both"``.

    Returns:
        ``(a, b)``, two ``(K,)`` tensors like ``alpha``.
    """
    if alpha_on == "fp":
        return alpha, 1.0 - alpha
    if alpha_on == "fn":
        return 1.0 - alpha, alpha
    if alpha_on == "both":
        return 1.0 - 0.5 * alpha, 0.5 + 0.5 * alpha
    raise ValueError(f"alpha_on must be 'fp', 'fn' or 'both', got {alpha_on!r}")


def arbt_class_terms(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    valid: torch.Tensor,
    alpha: torch.Tensor,
    weights: torch.Tensor,
    gamma: float,
    eps: float,
    alpha_on: AlphaOn = "fp",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-class terms of the ARBT loss: the region term and the (unweighted) pixel term of each class.

    With ``N`` valid pixels in the batch, soft counts as in :func:`arbt_loss` and ``(a_c, b_c)`` from
    :func:`tversky_error_weights`::

        region_c = w_c (1 - TP_c / (TP_c + a_c FP_c + b_c FN_c + eps))
        pixel_c  = 1/N sum_i |P_ic - G_ic| ** gamma          (0 when N = 0)

    Args:
        probs: ``(B, K, *)`` class probabilities (softmax of the logits).
        onehot: ``(B, K, *)`` one-hot ground truth ``G``.
        valid: ``(B, *)`` boolean, False at ignored pixels (they enter no sum).
        alpha: ``(K,)`` class-adaptive Tversky weights (see :func:`arbt_alpha`).
        weights: ``(K,)`` class weights ``w_c`` (see :func:`inverse_frequency_weights`).
        gamma: exponent of the pixel term, ``> 0``.
        eps: added to every Tversky denominator, ``> 0``.
        alpha_on: ``"fp"``, ``"fn"`` or ``"both"`` (see :func:`tversky_error_weights`).

    Returns:
        ``(region, pixel)``, two ``(K,)`` tensors in the dtype of ``probs``.
    """
    mask = valid.unsqueeze(1).to(probs.dtype)
    pred = probs * mask
    truth = onehot.to(probs.dtype) * mask
    dims = [0, *range(2, probs.ndim)]
    tp = (pred * truth).sum(dims)
    fp = pred.sum(dims) - tp
    fn = truth.sum(dims) - tp
    fp_weight, fn_weight = tversky_error_weights(alpha.to(probs.dtype), alpha_on)
    tversky = tp / (tp + fp_weight * fp + fn_weight * fn + eps)
    region = weights.to(probs.dtype) * (1.0 - tversky)
    pixel = _power_of_abs(pred - truth, gamma).sum(dims) / mask.sum().clamp_min(1.0)
    return region, pixel


def arbt_loss(
    probs: torch.Tensor,
    onehot: torch.Tensor,
    valid: torch.Tensor,
    alpha: torch.Tensor,
    weights: torch.Tensor,
    lam: float,
    gamma: float,
    eps: float,
    alpha_on: AlphaOn = "fp",
    pixel_classes: torch.Tensor | None = None,
) -> torch.Tensor:
    """Adaptive Rare-class Balanced Tversky (ARBT) loss of one batch.

    With sums over the valid pixels ``i`` of the whole batch,
    ``TP_c = sum_i P_ic G_ic``, ``FP_c = sum_i P_ic (1 - G_ic)``, ``FN_c = sum_i (1 - P_ic) G_ic``::

        T_c  = TP_c / (TP_c + a_c FP_c + b_c FN_c + eps)
        loss = sum_c w_c (1 - T_c) + lam * mean_i sum_{c in S} |P_ic - G_ic| ** gamma

    where ``(a_c, b_c) = (alpha_c, 1 - alpha_c)`` for ``alpha_on="fp"`` (the seed's formula as
    written), ``(1 - alpha_c, alpha_c)`` for ``alpha_on="fn"`` (the class-adaptive weight on
    false negatives, so rare classes are pushed towards recall) and ``(1 - alpha_c/2, 1/2 + alpha_c/2)``
    for ``alpha_on="both"`` (see :func:`tversky_error_weights`). ``S`` is every class (the seed's
    form) or the classes flagged in ``pixel_classes``; the mean is over all valid pixels either way.
    A class absent from the batch has ``T_c = 0`` and contributes the constant ``w_c`` (zero
    gradient). A batch with no valid pixel gives ``sum_c w_c`` with zero gradient (the empty mean is
    taken as 0).

    Args:
        probs: ``(B, K, *)`` class probabilities (softmax of the logits).
        onehot: ``(B, K, *)`` one-hot ground truth ``G``.
        valid: ``(B, *)`` boolean, False at ignored pixels (they enter no sum).
        alpha: ``(K,)`` class-adaptive Tversky weights (see :func:`arbt_alpha`).
        weights: ``(K,)`` class weights ``w_c`` (see :func:`inverse_frequency_weights`).
        lam: weight of the pixel term, ``>= 0``.
        gamma: exponent of the pixel term, ``> 0``.
        eps: added to every Tversky denominator, ``> 0``.
        alpha_on: ``"fp"``, ``"fn"`` or ``"both"``, how ``alpha_c`` weighs the two error counts.
        pixel_classes: ``(K,)`` boolean, the classes ``S`` of the pixel term; ``None`` for all.

    Returns:
        Scalar loss tensor in the dtype of ``probs``.
    """
    region, pixel = arbt_class_terms(probs, onehot, valid, alpha, weights, gamma, eps, alpha_on)
    if pixel_classes is not None:
        pixel = pixel * pixel_classes.to(pixel.dtype)
    return region.sum() + lam * pixel.sum()


def class_flags(classes: Sequence[int], num_classes: int, device: torch.device | None = None) -> torch.Tensor:
    """``(K,)`` boolean tensor, True at the ids in ``classes``.

    Args:
        classes: class ids in ``[0, K)``.
        num_classes: ``K``.
        device: device of the result.

    Raises:
        ValueError: an id is outside ``[0, K)``.
    """
    ids = [int(c) for c in classes]
    if any(not 0 <= c < num_classes for c in ids):
        raise ValueError(f"class ids {ids} must lie in [0, {num_classes})")
    flags = torch.zeros(num_classes, dtype=torch.bool, device=device)
    flags[ids] = True
    return flags


def split_by_truth(
    per_pixel: torch.Tensor,
    target: torch.Tensor,
    classes: Sequence[int],
    denominator: torch.Tensor,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split a pixel-sum loss ``sum_i l_i / D`` by the true class of each pixel.

    ``part = sum_{i: y_i in classes} l_i / D`` and ``rest = sum_{i: y_i not in classes} l_i / D``,
    so ``part + rest`` is the whole loss. Both keep the full loss's normaliser ``D`` (all valid
    pixels, or their weight sum), so each is exactly that pixel set's share of the loss.

    Args:
        per_pixel: ``(B, *)`` per-pixel losses ``l_i``, 0 at ignored pixels.
        target: ``(B, *)`` integer class ids (ignored pixels may hold any id not in ``classes``).
        classes: the class ids of ``part``, in ``[0, K)``.
        denominator: scalar normaliser ``D > 0`` of the full loss.
        num_classes: ``K``.

    Returns:
        ``(part, rest)``, two scalar tensors.

    Raises:
        ValueError: a class id is outside ``[0, K)``.
    """
    ids = class_flags(classes, num_classes, target.device).nonzero().flatten().to(target.dtype)
    in_classes = torch.isin(target, ids)
    zero = torch.zeros_like(per_pixel)
    part = torch.where(in_classes, per_pixel, zero).sum() / denominator
    rest = torch.where(in_classes, zero, per_pixel).sum() / denominator
    return part, rest
