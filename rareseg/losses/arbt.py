"""Adaptive Rare-class Balanced Tversky (ARBT) loss."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from rareseg.core.conventions import IGNORE_INDEX

from ._checks import check_logits_target, frequency_tensor
from ._functional import (
    AlphaOn,
    arbt_alpha,
    arbt_class_terms,
    arbt_loss,
    class_flags,
    inverse_frequency_weights,
    one_hot_valid,
    split_by_truth,
)

FocalOn = Literal["all", "rare"]

__all__ = ["ARBTLoss"]


class ARBTLoss(nn.Module):
    """Tversky loss whose FP/FN balance and class weight adapt to training class frequencies.

    With ``P = softmax(logits)``, one-hot labels ``G``, training class pixel frequencies ``f_c``,
    sums over the valid pixels of the whole batch and ``N`` the number of valid pixels::

        alpha_c = min(1 - (f_c / max_k f_k) ** eta, alpha_max)
        w_c     = (f_c + eps) ** -delta, normalised to mean 1 over classes with f_c > 0 (else 0)
        T_c     = TP_c / (TP_c + alpha_c FP_c + (1 - alpha_c) FN_c + eps)                (alpha_on="fp")
        T_c     = TP_c / (TP_c + (1 - alpha_c) FP_c + alpha_c FN_c + eps)                (alpha_on="fn")
        T_c     = TP_c / (TP_c + (1 - alpha_c/2) FP_c + (1/2 + alpha_c/2) FN_c + eps)    (alpha_on="both")
        loss    = sum_c w_c (1 - T_c) + lam * 1/N sum_i sum_{c in S} |P_ic - G_ic| ** gamma
                  + ce_weight * 1/N sum_i -log P_{i, y_i}

    ``S`` is every class (``focal_on="all"``) or ``rare_classes`` (``focal_on="rare"``). The seed's
    form is ``alpha_on="fp"``, ``alpha_max=1``, ``focal_on="all"``, ``ce_weight=0`` (the defaults).
    ``alpha_on="fn"`` puts the class-adaptive weight on false negatives, so rare classes
    (``alpha_c`` near 1) are pushed towards recall; ``alpha_max < 1`` bounds that push, so the FP
    weight ``1 - alpha_c`` of ``"fn"`` never drops below ``1 - alpha_max``. ``alpha_on="both"``
    weighs both error counts of every class by at least 1/2 (see
    :func:`~._functional.tversky_error_weights`). ``ce_weight > 0`` pairs the region loss with
    cross-entropy, as nnU-Net pairs Dice with CE. Pixels labelled ``ignore_index`` take no part in
    any sum. A class absent from the batch contributes the constant ``w_c`` with zero gradient
    (see :func:`~._functional.arbt_loss`); a batch with no valid pixel has CE term 0.

    ``lam``, ``delta``, ``eta``, ``alpha_max`` and ``ce_weight`` may be changed during training (a
    babysitting callback turns them); setting ``delta``, ``eta`` or ``alpha_max`` recomputes the
    ``weights`` or ``alpha`` buffer.

    :meth:`split` divides the loss into the part of a set of classes and the rest (for a
    sharpness-aware step on the rare-class loss only).

    Args:
        class_frequencies: ``K`` training class pixel frequencies ``f_c >= 0`` (fractions or
            counts). Classes with ``f_c = 0`` get weight 0 and a warning.
        eta: exponent of ``alpha_c``, ``>= 0``.
        delta: exponent of the inverse-frequency class weight ``w_c``, ``>= 0``.
        lam: weight of the pixel term, ``>= 0``.
        gamma: exponent of the pixel term, ``> 0``.
        eps: added to frequencies in ``w_c`` and to every Tversky denominator, ``> 0``.
        alpha_on: ``"fp"``, ``"fn"`` or ``"both"``, how ``alpha_c`` weighs the two error counts.
        alpha_max: upper bound of ``alpha_c``, in ``[0, 1]``; 1 bounds nothing (the seed).
        focal_on: ``"all"`` (the seed) or ``"rare"``: the classes ``S`` of the pixel term.
        rare_classes: rare class ids, needed by ``focal_on="rare"``; ``None`` until a
            :class:`~rareseg.lightning_modules.RareSegModule` hands over its own.
        ce_weight: weight of the cross-entropy term, ``>= 0``; 0 is the seed's pure region loss.
        ignore_index: label of pixels that take no part in the loss.

    Shape:
        - logits: ``(B, K, H, W)`` raw class scores.
        - target: ``(B, H, W)`` integer class ids in ``[0, K)`` or ``ignore_index``.
        - output: scalar.
    """

    alpha: torch.Tensor
    weights: torch.Tensor

    def __init__(
        self,
        class_frequencies: Sequence[float] | None = None,
        eta: float = 1.0,
        delta: float = 0.5,
        lam: float = 0.1,
        gamma: float = 2.0,
        eps: float = 1e-6,
        alpha_on: AlphaOn = "fp",
        alpha_max: float = 1.0,
        focal_on: FocalOn = "all",
        rare_classes: Sequence[int] | None = None,
        ce_weight: float = 0.0,
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"ARBTLoss: lam must be >= 0, got {lam}")
        if gamma <= 0:
            raise ValueError(f"ARBTLoss: gamma must be > 0, got {gamma}")
        if eps <= 0:
            raise ValueError(f"ARBTLoss: eps must be > 0, got {eps}")
        if alpha_on not in ("fp", "fn", "both"):
            raise ValueError(f"ARBTLoss: alpha_on must be 'fp' or 'fn' or 'both', got {alpha_on!r}")
        if focal_on not in ("all", "rare"):
            raise ValueError(f"ARBTLoss: focal_on must be 'all' or 'rare', got {focal_on!r}")
        if not (math.isfinite(ce_weight) and ce_weight >= 0):
            raise ValueError(f"ARBTLoss: ce_weight must be a finite number >= 0, got {ce_weight}")
        self._frequencies = frequency_tensor(class_frequencies, "ARBTLoss")
        self.class_frequencies = tuple(self._frequencies.tolist())
        self.lam = float(lam)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.alpha_on: AlphaOn = alpha_on
        self.focal_on: FocalOn = focal_on
        self.rare_classes = rare_classes
        self.ce_weight = float(ce_weight)
        self.ignore_index = ignore_index
        self.register_buffer("alpha", None, persistent=False)
        self.register_buffer("weights", None, persistent=False)
        self._alpha_max = 1.0
        self.eta = eta
        self.alpha_max = alpha_max
        self.delta = delta

    @property
    def eta(self) -> float:
        """Exponent of ``alpha_c``; setting it recomputes the ``alpha`` buffer."""
        return self._eta

    @eta.setter
    def eta(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"ARBTLoss: eta must be >= 0, got {value}")
        self._eta = float(value)
        self._refresh_alpha()

    @property
    def alpha_max(self) -> float:
        """Upper bound of ``alpha_c``; setting it recomputes the ``alpha`` buffer."""
        return self._alpha_max

    @alpha_max.setter
    def alpha_max(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"ARBTLoss: alpha_max must lie in [0, 1], got {value}")
        self._alpha_max = float(value)
        self._refresh_alpha()

    def _refresh_alpha(self) -> None:
        self.alpha = self._like_buffer(self.alpha, arbt_alpha(self._frequencies, self._eta, self._alpha_max))

    @property
    def delta(self) -> float:
        """Exponent of the class weight ``w_c``; setting it recomputes the ``weights`` buffer."""
        return self._delta

    @delta.setter
    def delta(self, value: float) -> None:
        if value < 0:
            raise ValueError(f"ARBTLoss: delta must be >= 0, got {value}")
        self._delta = float(value)
        weights = inverse_frequency_weights(self._frequencies, self._delta, self.eps)
        self.weights = self._like_buffer(self.weights, weights)

    @property
    def rare_classes(self) -> tuple[int, ...] | None:
        """Rare class ids (the pixel term's classes under ``focal_on="rare"``), or ``None``."""
        return self._rare_classes

    @rare_classes.setter
    def rare_classes(self, value: Sequence[int] | None) -> None:
        if value is None:
            self._rare_classes = None
            return
        ids = tuple(int(c) for c in value)
        classes = len(self.class_frequencies)
        if not ids or len(set(ids)) != len(ids) or not all(0 <= c < classes for c in ids):
            raise ValueError(f"ARBTLoss: rare_classes must be distinct class ids in [0, {classes}), got {list(value)}")
        self._rare_classes = ids

    @staticmethod
    def _like_buffer(current: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        """``value`` on the device and in the dtype of the buffer it replaces (float32 at first)."""
        return value.float() if current is None else value.to(current)

    def _prepared(self, logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Checked logits in at least float32, one-hot target and valid mask."""
        check_logits_target(logits, target, self.ignore_index, num_classes=self.alpha.numel())
        if self.focal_on == "rare" and self.rare_classes is None:
            raise ValueError(
                "ARBTLoss: focal_on='rare' needs rare_classes: pass them to ARBTLoss, or train it inside "
                "RareSegModule, which hands over its own"
            )
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        onehot, valid = one_hot_valid(target, logits.shape[1], self.ignore_index)
        return logits, onehot, valid

    def _pixel_classes(self, num_classes: int, device: torch.device) -> torch.Tensor | None:
        """``(K,)`` flags of the pixel term's classes, or ``None`` for all classes."""
        return None if self.focal_on == "all" else class_flags(self.rare_classes, num_classes, device)

    def _cross_entropy(
        self, logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-pixel CE ``-log P_{i, y_i}`` (0 at ignored pixels) and its normaliser ``max(N, 1)``."""
        per_pixel = F.cross_entropy(logits, target.masked_fill(~valid, 0), reduction="none") * valid
        return per_pixel, valid.sum().clamp_min(1).to(logits.dtype)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """ARBT loss of a batch.

        Args:
            logits: ``(B, K, H, W)`` raw class scores; computed in at least float32.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.

        Returns:
            Scalar loss.
        """
        logits, onehot, valid = self._prepared(logits, target)
        loss = arbt_loss(
            logits.softmax(dim=1),
            onehot,
            valid,
            self.alpha,
            self.weights,
            self.lam,
            self.gamma,
            self.eps,
            self.alpha_on,
            self._pixel_classes(logits.shape[1], logits.device),
        )
        if self.ce_weight > 0:
            per_pixel, count = self._cross_entropy(logits, target, valid)
            loss = loss + self.ce_weight * (per_pixel.sum() / count)
        return loss

    def split(
        self, logits: torch.Tensor, target: torch.Tensor, classes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss as ``(part, rest)`` with ``part + rest = forward(logits, target)``.

        ``part`` holds, for every class ``c`` in ``classes``, its region term
        ``w_c (1 - T_c)`` and its pixel term ``lam/N sum_i |P_ic - G_ic| ** gamma`` (if ``c`` is in
        ``S``), plus ``ce_weight/N`` times the cross-entropy of the pixels whose truth is in
        ``classes``; ``rest`` holds the same terms of every other class and pixel. Each part keeps
        the full loss's normalisers (``N`` = all valid pixels).

        Args:
            logits: ``(B, K, H, W)`` raw class scores; computed in at least float32.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.
            classes: class ids in ``[0, K)`` of ``part`` (usually the rare classes).

        Returns:
            ``(part, rest)``, two scalar tensors.
        """
        logits, onehot, valid = self._prepared(logits, target)
        num_classes = logits.shape[1]
        region, pixel = arbt_class_terms(
            logits.softmax(dim=1), onehot, valid, self.alpha, self.weights, self.gamma, self.eps, self.alpha_on
        )
        pixel_classes = self._pixel_classes(num_classes, logits.device)
        if pixel_classes is not None:
            pixel = pixel * pixel_classes.to(pixel.dtype)
        terms = region + self.lam * pixel
        in_part = class_flags(classes, num_classes, logits.device)
        part, rest = terms[in_part].sum(), terms[~in_part].sum()
        if self.ce_weight > 0:
            per_pixel, count = self._cross_entropy(logits, target, valid)
            ce_part, ce_rest = split_by_truth(per_pixel, target, classes, count, num_classes)
            part, rest = part + self.ce_weight * ce_part, rest + self.ce_weight * ce_rest
        return part, rest

    def extra_repr(self) -> str:
        return (
            f"classes={self.alpha.numel()}, eta={self.eta}, delta={self.delta}, lam={self.lam}, "
            f"gamma={self.gamma}, alpha_on={self.alpha_on!r}, alpha_max={self.alpha_max}, "
            f"focal_on={self.focal_on!r}, rare_classes={self.rare_classes}, ce_weight={self.ce_weight}, "
            f"ignore_index={self.ignore_index}"
        )
