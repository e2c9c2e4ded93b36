"""Baseline segmentation losses as config plug-ins: thin wrappers over torch and smp.

Every class takes ``class_frequencies`` first (the CLI links the datamodule's training class
pixel frequencies into it) and ``ignore_index``; ``forward(logits (B, K, H, W), target (B, H, W))``
returns a scalar. Only :class:`WeightedCrossEntropyLoss` uses the frequencies; the others accept
and ignore them. Every loss gives a finite value and zero gradient on a batch with no valid pixel.
The pixel-mean losses (:class:`CrossEntropyLoss`, :class:`WeightedCrossEntropyLoss`,
:class:`FocalLoss`) also ``split(logits, target, classes)`` into the share of the pixels whose
truth is in ``classes`` and the rest (see :mod:`rareseg.losses`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from segmentation_models_pytorch import losses as smp_losses
from segmentation_models_pytorch.losses._functional import softmax_focal_loss_with_logits
from torch import nn

from rareseg.core.conventions import IGNORE_INDEX

from ._checks import check_logits_target, frequency_tensor
from ._functional import inverse_frequency_weights, split_by_truth

__all__ = [
    "CrossEntropyLoss",
    "CrossEntropyLovaszLoss",
    "DiceLoss",
    "FocalLoss",
    "LovaszLoss",
    "TverskyLoss",
    "WeightedCrossEntropyLoss",
]


class CrossEntropyLoss(nn.Module):
    """Pixel-wise softmax cross-entropy, mean over valid pixels (``torch.nn.functional.cross_entropy``).

    ``loss = -1/N * sum_i log softmax(logits_i)[y_i]`` over the ``N`` pixels whose label is not
    ``ignore_index``; equals ``F.cross_entropy(..., ignore_index=ignore_index)`` except that a
    batch with no valid pixel gives 0 instead of NaN.

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        ignore_index: label of pixels that take no part in the loss.
    """

    class_weights: torch.Tensor | None

    def __init__(self, class_frequencies: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__()
        self.ignore_index = ignore_index
        self.register_buffer("class_weights", None, persistent=False)

    def _prepared(
        self, logits: torch.Tensor, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Checked logits in at least float32, class weights in their dtype (or None) and the normaliser."""
        weights = self.class_weights
        num_classes = None if weights is None else weights.numel()
        check_logits_target(logits, target, self.ignore_index, num_classes)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        valid = target != self.ignore_index
        pixel_weights = valid.to(logits.dtype)
        if weights is not None:
            weights = weights.to(logits.dtype)
            pixel_weights = pixel_weights * weights[target.masked_fill(~valid, 0)]
        return logits, weights, pixel_weights.sum().clamp_min(torch.finfo(logits.dtype).tiny)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of a batch: logits ``(B, K, H, W)``, target ``(B, H, W)`` -> scalar."""
        logits, weights, denominator = self._prepared(logits, target)
        total = F.cross_entropy(logits, target, weight=weights, ignore_index=self.ignore_index, reduction="sum")
        return total / denominator

    def split(
        self, logits: torch.Tensor, target: torch.Tensor, classes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss as ``(part, rest)`` with ``part + rest = forward(logits, target)``.

        ``part`` is the (weighted) CE sum of the valid pixels whose truth is in ``classes``,
        ``rest`` that of the other valid pixels, each divided by the full loss's normaliser.

        Args:
            logits: ``(B, K, H, W)`` raw class scores.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.
            classes: class ids in ``[0, K)`` of ``part`` (usually the rare classes).
        """
        logits, weights, denominator = self._prepared(logits, target)
        per_pixel = F.cross_entropy(logits, target, weight=weights, ignore_index=self.ignore_index, reduction="none")
        return split_by_truth(per_pixel, target, classes, denominator, logits.shape[1])


class WeightedCrossEntropyLoss(CrossEntropyLoss):
    """Cross-entropy with inverse-frequency class weights.

    ``w_c = (f_c + eps) ** -power``, normalised to mean 1 over classes with ``f_c > 0`` (classes
    with ``f_c = 0`` get 0), as in :func:`~._functional.inverse_frequency_weights`. The loss is
    torch's weighted mean ``sum_i w_{y_i} l_i / sum_i w_{y_i}`` over valid pixels, i.e.
    ``F.cross_entropy(logits, target, weight=w, ignore_index=ignore_index)``. Because that mean
    divides by the weight sum, ``power=1`` is equivalent to median-frequency balancing.

    Args:
        class_frequencies: ``K`` training class pixel frequencies ``f_c >= 0`` (required).
        power: exponent of the inverse frequency, ``>= 0`` (0 is plain cross-entropy).
        eps: added to every frequency before the power, ``> 0``.
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        power: float = 1.0,
        eps: float = 1e-6,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(ignore_index=ignore_index)
        if power < 0:
            raise ValueError(f"WeightedCrossEntropyLoss: power must be >= 0, got {power}")
        if eps <= 0:
            raise ValueError(f"WeightedCrossEntropyLoss: eps must be > 0, got {eps}")
        frequencies = frequency_tensor(class_frequencies, "WeightedCrossEntropyLoss")
        self.power = float(power)
        self.eps = float(eps)
        self.class_weights = inverse_frequency_weights(frequencies, self.power, self.eps).float()


class FocalLoss(nn.Module):
    """Softmax focal loss, mean over valid pixels (smp's ``softmax_focal_loss_with_logits``).

    ``loss = 1/N * sum_i -(1 - p_i) ** gamma * log p_i`` with ``p_i`` the softmax probability
    of the true class of valid pixel ``i``; ``gamma = 0`` is plain cross-entropy. (smp's
    ``FocalLoss`` class applies a one-vs-rest sigmoid per channel, which does not match a softmax
    segmentation head, so its softmax function is used instead.)

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        gamma: focusing exponent, ``>= 0``.
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(
        self, class_frequencies: Sequence[float] | None = None, gamma: float = 2.0, ignore_index: int = IGNORE_INDEX
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"FocalLoss: gamma must be >= 0, got {gamma}")
        self.gamma = float(gamma)
        self.ignore_index = ignore_index

    def _pixel_losses(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel focal losses (0 at ignored pixels) and the number of valid pixels (at least 1)."""
        check_logits_target(logits, target, self.ignore_index)
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        valid = target != self.ignore_index
        per_pixel = softmax_focal_loss_with_logits(
            logits, target.masked_fill(~valid, 0), gamma=self.gamma, reduction="none"
        )
        return per_pixel * valid, valid.sum().clamp_min(1)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Focal loss of a batch: logits ``(B, K, H, W)``, target ``(B, H, W)`` -> scalar."""
        per_pixel, count = self._pixel_losses(logits, target)
        return per_pixel.sum() / count

    def split(
        self, logits: torch.Tensor, target: torch.Tensor, classes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss as ``(part, rest)`` with ``part + rest = forward(logits, target)``.

        ``part`` is the focal-loss sum of the valid pixels whose truth is in ``classes``, ``rest``
        that of the other valid pixels, each divided by the number of valid pixels.

        Args:
            logits: ``(B, K, H, W)`` raw class scores.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.
            classes: class ids in ``[0, K)`` of ``part`` (usually the rare classes).
        """
        per_pixel, count = self._pixel_losses(logits, target)
        return split_by_truth(per_pixel, target, classes, count, logits.shape[1])


class _CheckedMulticlass:
    """Mixin for smp multiclass losses: ``forward(logits, target)`` with clear input errors."""

    ignore_index: int

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Loss of a batch: logits ``(B, K, H, W)``, target ``(B, H, W)`` -> scalar."""
        check_logits_target(logits, target, self.ignore_index)
        return super().forward(logits, target)  # type: ignore[misc]


class DiceLoss(_CheckedMulticlass, smp_losses.DiceLoss):
    """Soft Dice loss over the batch (smp ``DiceLoss(mode="multiclass", from_logits=True)``).

    ``loss = 1/K * sum_c (1 - (TP_c + smooth) / max(TP_c + (FP_c + FN_c) / 2 + smooth, eps))``
    with soft counts over the valid pixels of the batch; classes absent from the batch's labels
    contribute 0.

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        smooth: added to numerator and denominator.
        eps: lower bound of the denominator.
        log_loss: use ``-log(score)`` instead of ``1 - score``.
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        smooth: float = 0.0,
        eps: float = 1e-7,
        log_loss: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__(
            mode="multiclass",
            log_loss=log_loss,
            from_logits=True,
            smooth=smooth,
            ignore_index=ignore_index,
            eps=eps,
        )


class TverskyLoss(_CheckedMulticlass, smp_losses.TverskyLoss):
    """Tversky / Focal-Tversky loss over the batch (smp ``TverskyLoss(mode="multiclass")``).

    ``T_c = (TP_c + smooth) / max(TP_c + alpha FP_c + beta FN_c + smooth, eps)`` with soft counts
    over the valid pixels of the batch and ``loss = (1/K * sum_c (1 - T_c)) ** gamma``; classes
    absent from the batch's labels contribute 0. ``gamma > 1`` is smp's Focal-Tversky;
    ``alpha = beta = 0.5`` is Dice.

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        alpha: weight of false positives, ``>= 0``.
        beta: weight of false negatives, ``>= 0``.
        gamma: exponent of the mean loss, ``> 0``.
        smooth: added to numerator and denominator.
        eps: lower bound of the denominator.
        log_loss: use ``-log(T_c)`` instead of ``1 - T_c``.
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 1.0,
        smooth: float = 0.0,
        eps: float = 1e-7,
        log_loss: bool = False,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        if alpha < 0 or beta < 0:
            raise ValueError(f"TverskyLoss: alpha and beta must be >= 0, got {alpha} and {beta}")
        if gamma <= 0:
            raise ValueError(f"TverskyLoss: gamma must be > 0, got {gamma}")
        super().__init__(
            mode="multiclass",
            log_loss=log_loss,
            from_logits=True,
            smooth=smooth,
            ignore_index=ignore_index,
            eps=eps,
            alpha=alpha,
            beta=beta,
            gamma=gamma,
        )


class LovaszLoss(_CheckedMulticlass, smp_losses.LovaszLoss):
    """Lovasz-Softmax loss over the batch (smp ``LovaszLoss(mode="multiclass")``).

    The mean over classes present in the valid labels of the Lovasz extension of the Jaccard
    loss applied to the softmax errors ``|[y_i = c] - P_ic|`` (Berman et al., 2018).

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(self, class_frequencies: Sequence[float] | None = None, ignore_index: int = IGNORE_INDEX) -> None:
        super().__init__(mode="multiclass", per_image=False, ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Lovasz-Softmax loss of a batch: logits ``(B, K, H, W)``, target ``(B, H, W)`` -> scalar."""
        # smp returns an empty (0, K) tensor when no pixel is valid; its sum is the scalar 0.
        return super().forward(logits.float(), target).sum()


class CrossEntropyLovaszLoss(nn.Module):
    """Cross-entropy plus a weighted Lovasz-Softmax term: ``CE + lovasz_weight * Lovasz``.

    The compound loss Berman et al. (2018) and many segmentation recipes train with: the pixel-wise
    term (:class:`CrossEntropyLoss`) keeps every pixel's gradient, the Lovasz term
    (:class:`LovaszLoss`) optimises the batch's mean Jaccard index over the classes present, where a
    rare class counts as much as a common one. Has no ``split`` (the Lovasz term does not divide
    into classes' shares), so it cannot be used with ``sam_on="rare"``.

    Args:
        class_frequencies: accepted for the common loss interface and ignored.
        lovasz_weight: weight of the Lovasz term, ``>= 0`` (0 is plain cross-entropy).
        ignore_index: label of pixels that take no part in the loss.
    """

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        lovasz_weight: float = 1.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if not lovasz_weight >= 0:
            raise ValueError(f"CrossEntropyLovaszLoss: lovasz_weight must be >= 0, got {lovasz_weight}")
        self.lovasz_weight = float(lovasz_weight)
        self.ignore_index = ignore_index
        self.cross_entropy = CrossEntropyLoss(ignore_index=ignore_index)
        self.lovasz = LovaszLoss(ignore_index=ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``CE + lovasz_weight * Lovasz`` of a batch: logits ``(B, K, H, W)``, target ``(B, H, W)`` -> scalar."""
        loss = self.cross_entropy(logits, target)
        if self.lovasz_weight == 0:
            return loss
        return loss + self.lovasz_weight * self.lovasz(logits, target)
