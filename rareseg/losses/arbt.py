"""Adaptive Rare-class Balanced Tversky (ARBT) loss."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from rareseg.core.conventions import IGNORE_INDEX

from ._checks import check_logits_target, frequency_tensor
from ._functional import AlphaOn, arbt_alpha, arbt_loss, inverse_frequency_weights, one_hot_valid

__all__ = ["ARBTLoss"]


class ARBTLoss(nn.Module):
    """Tversky loss whose FP/FN balance and class weight adapt to training class frequencies.

    With ``P = softmax(logits)``, one-hot labels ``G``, training class pixel frequencies ``f_c``
    and sums over the valid pixels of the whole batch::

        alpha_c = 1 - (f_c / max_k f_k) ** eta
        w_c     = (f_c + eps) ** -delta, normalised to mean 1 over classes with f_c > 0 (else 0)
        T_c     = TP_c / (TP_c + alpha_c FP_c + (1 - alpha_c) FN_c + eps)        (alpha_on="fp")
        T_c     = TP_c / (TP_c + (1 - alpha_c) FP_c + alpha_c FN_c + eps)        (alpha_on="fn")
        loss    = sum_c w_c (1 - T_c) + lam * mean_i sum_c |P_ic - G_ic| ** gamma

    ``alpha_on="fp"`` is the seed's formula as written; ``alpha_on="fn"`` puts the class-adaptive
    weight on false negatives, so rare classes (``alpha_c`` near 1) are pushed towards recall.
    Pixels labelled ``ignore_index`` take no part in any sum. A class absent from the batch
    contributes the constant ``w_c`` with zero gradient (see :func:`~._functional.arbt_loss`).

    ``lam``, ``delta`` and ``eta`` may be changed during training (a babysitting callback turns
    them); setting ``delta`` or ``eta`` recomputes the ``weights`` or ``alpha`` buffer.

    Args:
        class_frequencies: ``K`` training class pixel frequencies ``f_c >= 0`` (fractions or
            counts). Classes with ``f_c = 0`` get weight 0 and a warning.
        eta: exponent of ``alpha_c``, ``>= 0``.
        delta: exponent of the inverse-frequency class weight ``w_c``, ``>= 0``.
        lam: weight of the pixel term, ``>= 0``.
        gamma: exponent of the pixel term, ``> 0``.
        eps: added to frequencies in ``w_c`` and to every Tversky denominator, ``> 0``.
        alpha_on: ``"fp"`` or ``"fn"``, which error count ``alpha_c`` multiplies.
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
        ignore_index: int = IGNORE_INDEX,
    ) -> None:
        super().__init__()
        if lam < 0:
            raise ValueError(f"ARBTLoss: lam must be >= 0, got {lam}")
        if gamma <= 0:
            raise ValueError(f"ARBTLoss: gamma must be > 0, got {gamma}")
        if eps <= 0:
            raise ValueError(f"ARBTLoss: eps must be > 0, got {eps}")
        if alpha_on not in ("fp", "fn"):
            raise ValueError(f"ARBTLoss: alpha_on must be 'fp' or 'fn', got {alpha_on!r}")
        self._frequencies = frequency_tensor(class_frequencies, "ARBTLoss")
        self.class_frequencies = tuple(self._frequencies.tolist())
        self.lam = float(lam)
        self.gamma = float(gamma)
        self.eps = float(eps)
        self.alpha_on: AlphaOn = alpha_on
        self.ignore_index = ignore_index
        self.register_buffer("alpha", None, persistent=False)
        self.register_buffer("weights", None, persistent=False)
        self.eta = eta
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
        self.alpha = self._like_buffer(self.alpha, arbt_alpha(self._frequencies, self._eta))

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

    @staticmethod
    def _like_buffer(current: torch.Tensor | None, value: torch.Tensor) -> torch.Tensor:
        """``value`` on the device and in the dtype of the buffer it replaces (float32 at first)."""
        return value.float() if current is None else value.to(current)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """ARBT loss of a batch.

        Args:
            logits: ``(B, K, H, W)`` raw class scores; computed in at least float32.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.

        Returns:
            Scalar loss.
        """
        check_logits_target(logits, target, self.ignore_index, num_classes=self.alpha.numel())
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        onehot, valid = one_hot_valid(target, logits.shape[1], self.ignore_index)
        return arbt_loss(
            logits.softmax(dim=1),
            onehot,
            valid,
            self.alpha,
            self.weights,
            self.lam,
            self.gamma,
            self.eps,
            self.alpha_on,
        )

    def extra_repr(self) -> str:
        return (
            f"classes={self.alpha.numel()}, eta={self.eta}, delta={self.delta}, lam={self.lam}, "
            f"gamma={self.gamma}, alpha_on={self.alpha_on!r}, ignore_index={self.ignore_index}"
        )
