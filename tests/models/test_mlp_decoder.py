"""Tests for rareseg.models.mlp_decoder."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rareseg.models import AllMLPDecoder


def _projection_numpy(decoder: AllMLPDecoder, stage: int, feature: torch.Tensor) -> np.ndarray:
    """Per-pixel linear map W x + b of one stage, in float64 numpy, as (B, C, H, W)."""
    conv = decoder.projections[stage]
    weight = conv.weight.detach().double().numpy()[:, :, 0, 0]
    bias = conv.bias.detach().double().numpy()
    return np.einsum("cd,bdhw->bchw", weight, feature.double().numpy()) + bias[None, :, None, None]


def test_concatenates_deepest_stage_first_at_quarter_resolution() -> None:
    decoder = AllMLPDecoder(stage_channels=(3, 5, 7), decoder_channels=4)
    generator = torch.Generator().manual_seed(0)
    # Spatially constant deep stages stay constant under bilinear upsampling, so their part of F
    # is the hand-computable W e + b at every pixel.
    shallow = torch.randn(2, 3, 8, 12, generator=generator)
    middle = torch.randn(2, 5, 1, 1, generator=generator).expand(2, 5, 4, 6)
    deep = torch.randn(2, 7, 1, 1, generator=generator).expand(2, 7, 2, 3)
    features = decoder([shallow, middle, deep]).detach().double().numpy()

    assert features.shape == (2, 12, 8, 12)
    assert decoder.out_channels == 12
    deep_value = _projection_numpy(decoder, 2, deep)[..., :1, :1]
    middle_value = _projection_numpy(decoder, 1, middle)[..., :1, :1]
    np.testing.assert_allclose(features[:, 0:4], np.broadcast_to(deep_value, (2, 4, 8, 12)), atol=1e-5)
    np.testing.assert_allclose(features[:, 4:8], np.broadcast_to(middle_value, (2, 4, 8, 12)), atol=1e-5)
    np.testing.assert_allclose(features[:, 8:12], _projection_numpy(decoder, 0, shallow), atol=1e-5)


def test_rejects_wrong_number_of_stages() -> None:
    decoder = AllMLPDecoder(stage_channels=(3, 5), decoder_channels=4)
    with pytest.raises(ValueError, match="expects 2 stage features, got 1"):
        decoder([torch.zeros(1, 3, 4, 4)])


@pytest.mark.parametrize(("stage_channels", "decoder_channels"), [((), 4), ((3,), 0)])
def test_rejects_bad_construction(stage_channels: tuple[int, ...], decoder_channels: int) -> None:
    with pytest.raises(ValueError):
        AllMLPDecoder(stage_channels, decoder_channels)
