"""All-MLP decoder of SegFormer, stopped before the fusion layer so the concatenated map is visible."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class AllMLPDecoder(nn.Module):
    """Project every encoder stage to ``C`` channels, upsample to 1/4 resolution and concatenate.

    For stage features ``E_s`` (B, C_s, H/2^(s+1), W/2^(s+1)), s = 1..S, the output is

        F = concat_s( upsample_bilinear( Linear_s(E_s), (H/4, W/4) ) )   shape (B, S*C, H/4, W/4)

    where ``Linear_s`` is a per-pixel linear map C_s -> C (a 1x1 convolution with bias). The
    stages are concatenated from the deepest to the shallowest, as in SegFormer. Fusing ``F``
    to ``C`` channels is left to the caller so a saliency gate can act on ``F`` first.

    The work runs in channels-last memory layout (``F`` comes out channels-last), where 1x1
    convolutions, bilinear resizing and the following per-pixel layers run several times faster
    on CPU; values do not depend on the layout.

    Args:
        stage_channels: channels ``C_s`` of the encoder stages at strides 4, 8, ..., in that order.
        decoder_channels: embedding width ``C`` of every projected stage.
    """

    def __init__(self, stage_channels: Sequence[int], decoder_channels: int) -> None:
        super().__init__()
        if len(stage_channels) == 0:
            raise ValueError("AllMLPDecoder needs at least one encoder stage, got none")
        if decoder_channels < 1:
            raise ValueError(f"decoder_channels must be >= 1, got {decoder_channels}")
        self.stage_channels = tuple(int(c) for c in stage_channels)
        self.decoder_channels = decoder_channels
        self.projections = nn.ModuleList(
            nn.Conv2d(channels, decoder_channels, kernel_size=1) for channels in self.stage_channels
        )

    @property
    def out_channels(self) -> int:
        """Channels of the concatenated map ``F``: number of stages times ``decoder_channels``."""
        return len(self.stage_channels) * self.decoder_channels

    def forward(self, stage_features: Sequence[torch.Tensor]) -> torch.Tensor:
        """Build the concatenated map ``F``.

        Args:
            stage_features: encoder features at strides 4, 8, ..., each (B, C_s, H_s, W_s); the
                first one sets the output size (H/4, W/4).

        Returns:
            ``F`` of shape (B, S*C, H/4, W/4).
        """
        if len(stage_features) != len(self.projections):
            raise ValueError(f"AllMLPDecoder expects {len(self.projections)} stage features, got {len(stage_features)}")
        target_size = stage_features[0].shape[-2:]
        projected = [
            F.interpolate(
                projection(feature.contiguous(memory_format=torch.channels_last)),
                size=target_size,
                mode="bilinear",
                align_corners=False,
            )
            for projection, feature in zip(self.projections, stage_features)
        ]
        return torch.cat(projected[::-1], dim=1)
