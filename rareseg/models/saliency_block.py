"""Rare-class saliency block: per-rare-class saliency maps and the gate they induce."""

from __future__ import annotations

import torch
from torch import nn


def saliency_gate(saliency_logits: torch.Tensor) -> torch.Tensor:
    """Gate of the decoder features: the strongest rare-class saliency at each pixel.

    ``g = max_r sigmoid(saliency_logits_r)``, in [0, 1]; the features are then amplified as
    ``F' = F * (1 + g)``.

    Args:
        saliency_logits: pre-sigmoid saliency of shape (B, R, h, w), R >= 1.

    Returns:
        ``g`` of shape (B, 1, h, w).
    """
    return torch.sigmoid(saliency_logits).amax(dim=1, keepdim=True)


class SaliencyBlock(nn.Module):
    """Predict one saliency map per rare class from the decoder map ``F`` and derive the gate.

    ``saliency_logits = Conv1x1(F)`` with one output channel per rare class and
    ``g = saliency_gate(saliency_logits)``.

    Args:
        in_channels: channels ``D`` of the decoder map ``F``.
        num_rare_classes: number ``R`` of rare classes (saliency channels), at least 1.
    """

    def __init__(self, in_channels: int, num_rare_classes: int) -> None:
        super().__init__()
        if in_channels < 1:
            raise ValueError(f"SaliencyBlock in_channels must be >= 1, got {in_channels}")
        if num_rare_classes < 1:
            raise ValueError(f"SaliencyBlock needs at least one rare class, got {num_rare_classes}")
        self.saliency_conv = nn.Conv2d(in_channels, num_rare_classes, kernel_size=1)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Compute the saliency of ``F``.

        Args:
            features: ``F`` of shape (B, D, h, w).

        Returns:
            ``(g, saliency_logits)`` with shapes (B, 1, h, w) and (B, R, h, w).
        """
        saliency_logits = self.saliency_conv(features)
        return saliency_gate(saliency_logits), saliency_logits
