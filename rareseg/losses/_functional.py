"""Pure tensor functions behind the rareseg losses (no module state, callable from tests).

Shapes: ``B`` batch, ``K`` classes, ``*`` any number of spatial dimensions (usually ``H, W``).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

AlphaOn = Literal["fp", "fn"]


def arbt_alpha(frequencies: torch.Tensor, eta: float) -> torch.Tensor:
    """Class-adaptive Tversky weight ``alpha_c = 1 - (f_c / max_k f_k) ** eta``.

    The most frequent class gets 0, rarer classes approach 1, a class with ``f_c = 0`` gets 1.

    Args:
        frequencies: ``(K,)`` non-negative class pixel frequencies (fractions or counts; only
            ratios matter), at least one positive.
        eta: exponent ``>= 0``; larger values push every class but the most frequent towards 1.

    Returns:
        ``(K,)`` tensor of ``alpha_c`` in ``[0, 1]``, same dtype and device as ``frequencies``.
    """
    return 1.0 - (frequencies / frequencies.max()) ** eta


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
) -> torch.Tensor:
    """Adaptive Rare-class Balanced Tversky (ARBT) loss of one batch.

    With sums over the valid pixels ``i`` of the whole batch,
    ``TP_c = sum_i P_ic G_ic``, ``FP_c = sum_i P_ic (1 - G_ic)``, ``FN_c = sum_i (1 - P_ic) G_ic``::

        T_c  = TP_c / (TP_c + a_c FP_c + b_c FN_c + eps)
        loss = sum_c w_c (1 - T_c) + lam * mean_i sum_c |P_ic - G_ic| ** gamma

    where ``(a_c, b_c) = (alpha_c, 1 - alpha_c)`` for ``alpha_on="fp"`` (the seed's formula as
    written) and ``(1 - alpha_c, alpha_c)`` for ``alpha_on="fn"`` (the class-adaptive weight on
    false negatives, so rare classes are pushed towards recall). A class absent from the batch has
    ``T_c = 0`` and contributes the constant ``w_c`` (zero gradient). A batch with no valid pixel
    gives ``sum_c w_c`` with zero gradient (the empty mean is taken as 0).

    Args:
        probs: ``(B, K, *)`` class probabilities (softmax of the logits).
        onehot: ``(B, K, *)`` one-hot ground truth ``G``.
        valid: ``(B, *)`` boolean, False at ignored pixels (they enter no sum).
        alpha: ``(K,)`` class-adaptive Tversky weights (see :func:`arbt_alpha`).
        weights: ``(K,)`` class weights ``w_c`` (see :func:`inverse_frequency_weights`).
        lam: weight of the pixel term, ``>= 0``.
        gamma: exponent of the pixel term, ``> 0``.
        eps: added to every Tversky denominator, ``> 0``.
        alpha_on: ``"fp"`` or ``"fn"``, which error count ``alpha_c`` multiplies.

    Returns:
        Scalar loss tensor in the dtype of ``probs``.
    """
    mask = valid.unsqueeze(1).to(probs.dtype)
    pred = probs * mask
    truth = onehot.to(probs.dtype) * mask
    dims = [0, *range(2, probs.ndim)]
    tp = (pred * truth).sum(dims)
    fp = pred.sum(dims) - tp
    fn = truth.sum(dims) - tp
    alpha = alpha.to(probs.dtype)
    fp_weight, fn_weight = (alpha, 1.0 - alpha) if alpha_on == "fp" else (1.0 - alpha, alpha)
    tversky = tp / (tp + fp_weight * fp + fn_weight * fn + eps)
    region = (weights.to(probs.dtype) * (1.0 - tversky)).sum()
    pixel = _power_of_abs(pred - truth, gamma).sum() / mask.sum().clamp_min(1.0)
    return region + lam * pixel
