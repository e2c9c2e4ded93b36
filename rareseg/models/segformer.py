"""Spatial-aware SegFormer: smp encoder, all-MLP decoder, rare-class saliency block and heads."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import segmentation_models_pytorch as smp
import timm
import torch
import torch.nn.functional as F
from torch import nn

from rareseg.models.gated_fusion import GatedFusion
from rareseg.models.local_weights import WeightsReport, load_local_weights, resolve_weights_path
from rareseg.models.mlp_decoder import AllMLPDecoder
from rareseg.models.pretrained import initial_weights_skipped, is_pretrained_name, pretrained_encoder
from rareseg.models.saliency_block import SaliencyBlock

INPUT_MULTIPLE = 32
"""Inputs are zero-padded to a multiple of this many pixels per side: the deepest encoder stride,
and the smallest side MiT's spatial-reduction attention accepts."""


class SegmentationOutput(NamedTuple):
    """Result of :class:`SpatialAwareSegFormer`.

    Attributes:
        logits: class scores before softmax, (B, K, H, W) at the input size.
        saliency_logits: rare-class saliency before sigmoid, (B, R, H, W) at the input size, channel
            ``r`` for ``rare_classes[r]``; ``None`` when the model has no saliency block.
    """

    logits: torch.Tensor
    saliency_logits: torch.Tensor | None


class SpatialAwareSegFormer(nn.Module):
    """SegFormer whose decoder features are amplified where a rare class is salient.

    Wiring, for an input ``x`` of shape (B, in_channels, H, W) zero-padded at the bottom/right to
    a multiple of 32 (``INPUT_MULTIPLE``) and cropped back at the end:

    - encoder stages at strides 4, 8, 16, 32 (``E_1..E_4``) from ``smp.encoders.get_encoder``;
    - ``F = concat_s(upsample(Linear_s(E_s)))`` of shape (B, 4C, H/4, W/4) (:class:`AllMLPDecoder`);
    - ``saliency_logits = Conv1x1(F)`` (B, R, H/4, W/4), ``g = max_r sigmoid(saliency_logits)_r``
      (:class:`SaliencyBlock`) and ``F' = F * (1 + g)``;
    - ``logits = Classifier(Dropout(ReLU(BN(Conv1x1(F')))))`` with ``Conv1x1: 4C -> C`` and
      ``Classifier: C -> K`` (:class:`GatedFusion` applies the gain after the bias-free
      ``Conv1x1``, which is the same map and 4x less memory traffic);
    - ``logits`` and ``saliency_logits`` upsampled bilinearly to (H, W).

    With ``saliency=False`` or no rare classes, ``F' = F`` and the network is a plain SegFormer
    without saliency parameters.

    Args:
        num_classes: number of classes ``K`` (at least 2).
        rare_classes: class ids of the rare classes, one saliency channel each, in this order.
        in_channels: number of input bands.
        encoder_name: any smp encoder name (``"mit_b0"``..``"mit_b5"``, ``"resnet18"``, ``"tu-..."``).
        encoder_depth: number of encoder stages used, 3..5 (5 gives strides 4..32 and ``F`` with 4C
            channels).
        decoder_channels: embedding width ``C`` of the decoder.
        saliency: whether to build the saliency block.
        dropout: channel dropout probability before the classifier, in [0, 1).
        encoder_weights: ``None`` (random initialisation), a local file holding the state dict of
            the encoder or of the whole network (its load report is kept in ``weights_report``), or
            a pretrained-weights name smp knows for the encoder, such as ``"imagenet"``, which smp
            downloads once and caches (:mod:`rareseg.models.pretrained`; offline, the one-line error
            says how to save the file elsewhere). Ignored inside
            :func:`~rareseg.models.pretrained.skip_initial_weights` (a checkpoint is loaded next).
    """

    def __init__(
        self,
        num_classes: int,
        rare_classes: Sequence[int] = (),
        in_channels: int = 3,
        encoder_name: str = "mit_b0",
        encoder_depth: int = 5,
        decoder_channels: int = 256,
        saliency: bool = True,
        dropout: float = 0.1,
        encoder_weights: str | None = None,
    ) -> None:
        super().__init__()
        _validate_arguments(num_classes, in_channels, encoder_name, encoder_depth, decoder_channels, dropout)
        self.num_classes = num_classes
        self.rare_classes = _validated_rare_classes(rare_classes, num_classes)
        self.in_channels = in_channels
        self.encoder_name = encoder_name
        if initial_weights_skipped():
            encoder_weights = None
        download = encoder_weights is not None and is_pretrained_name(encoder_name, encoder_weights)
        weights_path = None if encoder_weights is None or download else resolve_weights_path(encoder_weights)

        self.encoder = (
            pretrained_encoder(encoder_name, encoder_weights, in_channels=in_channels, depth=encoder_depth)
            if download
            else smp.encoders.get_encoder(encoder_name, in_channels=in_channels, depth=encoder_depth, weights=None)
        )
        self.decoder = AllMLPDecoder(self.encoder.out_channels[2:], decoder_channels)
        self.saliency_block = (
            SaliencyBlock(self.decoder.out_channels, len(self.rare_classes)) if saliency and self.rare_classes else None
        )
        self.fuse = GatedFusion(self.decoder.out_channels, decoder_channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)
        self.weights_report: WeightsReport | None = (
            None if weights_path is None else load_local_weights(self, weights_path)
        )

    @property
    def has_saliency(self) -> bool:
        """Whether the network has a saliency block (and returns ``saliency_logits``)."""
        return self.saliency_block is not None

    def forward(self, x: torch.Tensor) -> SegmentationOutput:
        """Segment a batch of images.

        Args:
            x: images of shape (B, in_channels, H, W); any H, W >= 1.

        Returns:
            :class:`SegmentationOutput` with ``logits`` (B, K, H, W) and ``saliency_logits``
            (B, R, H, W) or ``None``.
        """
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"SpatialAwareSegFormer expects input (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        height, width = x.shape[-2:]
        pad_bottom, pad_right = -height % INPUT_MULTIPLE, -width % INPUT_MULTIPLE
        if pad_bottom or pad_right:
            x = F.pad(x, (0, pad_right, 0, pad_bottom))
        features = self.decoder(self.encoder(x)[2:])
        gate = saliency_logits = None
        if self.saliency_block is not None:
            gate, saliency_logits = self.saliency_block(features)
        logits = self.classifier(self.dropout(self.fuse(features, gate)))
        padded_size = x.shape[-2:]
        return SegmentationOutput(
            logits=_resize_and_crop(logits, padded_size, height, width),
            saliency_logits=None
            if saliency_logits is None
            else _resize_and_crop(saliency_logits, padded_size, height, width),
        )


def _resize_and_crop(maps: torch.Tensor, padded_size: torch.Size, height: int, width: int) -> torch.Tensor:
    """Upsample (B, N, h, w) bilinearly to the padded input size and crop to (height, width)."""
    resized = F.interpolate(maps, size=padded_size, mode="bilinear", align_corners=False)
    # Contiguous (not channels-last) outputs keep the losses' backward on fast kernels.
    return resized[..., :height, :width].contiguous()


def _validated_rare_classes(rare_classes: Sequence[int], num_classes: int) -> tuple[int, ...]:
    """Return ``rare_classes`` as a tuple after checking ids are distinct integers in [0, num_classes)."""
    rare = tuple(rare_classes)
    for class_id in rare:
        if isinstance(class_id, bool) or not isinstance(class_id, int) or not 0 <= class_id < num_classes:
            raise ValueError(f"rare_classes must be class ids in [0, {num_classes}), got {list(rare)}")
    if len(set(rare)) != len(rare):
        raise ValueError(f"rare_classes must be distinct, got {list(rare)}")
    return rare


def _validate_arguments(
    num_classes: int,
    in_channels: int,
    encoder_name: str,
    encoder_depth: int,
    decoder_channels: int,
    dropout: float,
) -> None:
    """Raise a one-line ``ValueError`` for the first bad constructor argument."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}")
    known = (
        timm.is_model(encoder_name[3:])
        if encoder_name.startswith("tu-")
        else encoder_name in smp.encoders.get_encoder_names()
    )
    if not known:
        raise ValueError(
            f"unknown encoder_name {encoder_name!r}; use an smp encoder such as 'mit_b0'..'mit_b5' or 'resnet18' "
            "(see segmentation_models_pytorch.encoders.get_encoder_names())"
        )
    if not 3 <= encoder_depth <= 5:
        raise ValueError(f"encoder_depth must be in 3..5, got {encoder_depth}")
    if decoder_channels < 1:
        raise ValueError(f"decoder_channels must be >= 1, got {decoder_channels}")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}")
