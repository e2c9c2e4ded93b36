"""Binary cross-entropy of the saliency maps against the rare-class masks."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from rareseg.core.conventions import IGNORE_INDEX

__all__ = ["SaliencyBCELoss"]


class SaliencyBCELoss(nn.Module):
    """Mean BCE of each saliency channel against its rare-class mask, over valid pixels.

    With saliency logits ``s_ri`` for rare class ``r = rare_classes[k]`` (channel ``k``),
    targets ``y_ri = [Y_i == r]`` and the ``N`` valid (not ``ignore_index``) pixels of the batch::

        loss = 1 / R * sum_k 1 / N * sum_i -(p_k y_ki log sigmoid(s_ki) + (1 - y_ki) log(1 - sigmoid(s_ki)))

    with ``p_k`` the optional ``pos_weight`` of channel ``k`` (1 if not given). A batch with no
    valid pixel gives 0 with zero gradient.

    Args:
        rare_classes: the ``R`` rare class ids, in the order of the saliency channels.
        ignore_index: label of pixels that take no part in the loss.
        pos_weight: weight of positive (rare) pixels: one number for every channel or one per
            channel, each ``> 0``; ``None`` weights positives and negatives equally.

    Shape:
        - saliency_logits: ``(B, R, H, W)`` raw saliency scores.
        - target: ``(B, H, W)`` integer class ids or ``ignore_index``.
        - output: scalar.
    """

    rare_ids: torch.Tensor
    pos_weight: torch.Tensor | None

    def __init__(
        self,
        rare_classes: Sequence[int],
        ignore_index: int = IGNORE_INDEX,
        pos_weight: float | Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        rare = [int(r) for r in rare_classes]
        if not rare or len(set(rare)) != len(rare) or min(rare) < 0 or ignore_index in rare:
            raise ValueError(
                f"SaliencyBCELoss: rare_classes must be distinct non-negative class ids other than "
                f"ignore_index={ignore_index}, got {list(rare_classes)}"
            )
        self.rare_classes = tuple(rare)
        self.ignore_index = ignore_index
        self.register_buffer("rare_ids", torch.tensor(rare).view(1, -1, 1, 1), persistent=False)
        weight = None
        if pos_weight is not None:
            weight = torch.as_tensor(pos_weight, dtype=torch.float32).reshape(-1)
            if weight.numel() not in (1, len(rare)) or not (weight > 0).all():
                raise ValueError(
                    f"SaliencyBCELoss: pos_weight must be one positive number or {len(rare)} of them, "
                    f"got {pos_weight!r}"
                )
            weight = weight.expand(len(rare)).reshape(-1, 1, 1).clone()
        self.register_buffer("pos_weight", weight, persistent=False)

    def forward(self, saliency_logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Saliency BCE of a batch.

        Args:
            saliency_logits: ``(B, R, H, W)`` raw saliency scores, channel ``k`` for ``rare_classes[k]``.
            target: ``(B, H, W)`` integer class ids or ``ignore_index``.

        Returns:
            Scalar loss.
        """
        rare = len(self.rare_classes)
        if saliency_logits.ndim != 4 or saliency_logits.shape[1] != rare:
            raise ValueError(
                f"SaliencyBCELoss: expected saliency_logits (B, {rare}, H, W), got {tuple(saliency_logits.shape)}"
            )
        if saliency_logits.shape[:1] + saliency_logits.shape[2:] != target.shape:
            raise ValueError(
                f"SaliencyBCELoss: saliency_logits {tuple(saliency_logits.shape)} and target "
                f"{tuple(target.shape)} differ in batch or spatial size"
            )
        logits = saliency_logits.to(torch.promote_types(saliency_logits.dtype, torch.float32))
        labels = target.unsqueeze(1)
        valid = (labels != self.ignore_index).to(logits.dtype)
        per_pixel = F.binary_cross_entropy_with_logits(
            logits,
            (labels == self.rare_ids).to(logits.dtype),
            reduction="none",
            pos_weight=None if self.pos_weight is None else self.pos_weight.to(logits.dtype),
        )
        return (per_pixel * valid).sum() / (valid.sum() * rare).clamp_min(1.0)
