"""Tests for rareseg.models.gated_fusion."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from rareseg.models import GatedFusion


def _literal_fusion(fusion: GatedFusion, gated_features: torch.Tensor, training: bool) -> torch.Tensor:
    """ReLU(BN(Conv1x1(F'))) in float64, with the gain applied to F' before the convolution."""
    norm = fusion.norm
    projected = F.conv2d(gated_features.double(), fusion.conv.weight.detach().double())
    normalised = F.batch_norm(
        projected,
        norm.running_mean.double(),
        norm.running_var.double(),
        norm.weight.detach().double(),
        norm.bias.detach().double(),
        training=training,
        eps=norm.eps,
    )
    return normalised.clamp_min(0)


@pytest.mark.parametrize("training", [True, False])
def test_gain_after_the_convolution_equals_gating_the_input(training: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    fusion = GatedFusion(in_channels=12, out_channels=5)
    with torch.no_grad():
        fusion.norm.running_mean.copy_(torch.randn(5, generator=generator))
        fusion.norm.running_var.copy_(torch.rand(5, generator=generator) + 0.5)
        fusion.norm.weight.copy_(torch.randn(5, generator=generator))
    features = torch.randn(2, 12, 6, 7, generator=generator)
    gate = torch.rand(2, 1, 6, 7, generator=generator)
    expected = _literal_fusion(fusion, features * (1 + gate), training)
    running_mean_before = fusion.norm.running_mean.clone()

    fused = fusion.train(training)(features, gate)

    assert fused.shape == (2, 5, 6, 7)
    torch.testing.assert_close(fused.double(), expected, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(fused.double(), _literal_fusion(fusion, features, training), atol=1e-3)
    if training:  # BatchNorm statistics are those of the gated map, as in the literal formula
        batch_mean = F.conv2d((features * (1 + gate)).double(), fusion.conv.weight.detach().double()).mean((0, 2, 3))
        expected_running_mean = 0.9 * running_mean_before.double() + 0.1 * batch_mean
        torch.testing.assert_close(fusion.norm.running_mean.double(), expected_running_mean, rtol=1e-5, atol=1e-6)


def test_without_gate_it_is_the_plain_fusion() -> None:
    fusion = GatedFusion(in_channels=6, out_channels=3).eval()
    features = torch.randn(1, 6, 4, 4, generator=torch.Generator().manual_seed(1))
    expected = _literal_fusion(fusion, features, training=False)
    torch.testing.assert_close(fusion(features).double(), expected, rtol=1e-5, atol=1e-6)
