"""Tests for rareseg.models.saliency_block."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from rareseg.models import SaliencyBlock, saliency_gate


def test_gate_hand_worked_pixel() -> None:
    # sigmoid(0) = 0.5, sigmoid(ln 3) = 0.75, sigmoid(-ln 3) = 0.25 -> g = 0.75
    saliency_logits = torch.tensor([0.0, math.log(3.0), -math.log(3.0)]).view(1, 3, 1, 1)
    assert saliency_gate(saliency_logits).flatten().tolist() == pytest.approx([0.75])


def test_gate_matches_numpy_float64() -> None:
    saliency_logits = 3 * torch.randn(2, 3, 5, 7, generator=torch.Generator().manual_seed(0))
    expected = (1 / (1 + np.exp(-saliency_logits.double().numpy()))).max(axis=1, keepdims=True)
    np.testing.assert_allclose(saliency_gate(saliency_logits).numpy(), expected, rtol=1e-6, atol=1e-7)


def test_block_predicts_one_channel_per_rare_class_and_its_gate() -> None:
    block = SaliencyBlock(in_channels=8, num_rare_classes=2)
    features = torch.randn(3, 8, 4, 6, generator=torch.Generator().manual_seed(1))
    gate, saliency_logits = block(features)
    weight = block.saliency_conv.weight.detach().double().view(2, 8)
    bias = block.saliency_conv.bias.detach().double()
    expected_logits = torch.einsum("rd,bdhw->brhw", weight, features.double()) + bias.view(1, 2, 1, 1)
    torch.testing.assert_close(saliency_logits.double(), expected_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(
        gate.double(), torch.maximum(*torch.sigmoid(expected_logits).unbind(1)).unsqueeze(1), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(("in_channels", "num_rare_classes"), [(0, 2), (8, 0)])
def test_block_rejects_bad_sizes(in_channels: int, num_rare_classes: int) -> None:
    with pytest.raises(ValueError, match="SaliencyBlock"):
        SaliencyBlock(in_channels, num_rare_classes)
