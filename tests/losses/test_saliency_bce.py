"""SaliencyBCELoss against BCE written out by hand."""

from __future__ import annotations

import math

import pytest
import torch

from rareseg.losses import SaliencyBCELoss

IGNORE = 255


def hand_bce(logits, target, rare_classes, pos_weight):
    """Mean over rare channels of the mean BCE over valid pixels, with plain Python math."""
    batch, channels, height, width = logits.shape
    channel_means = []
    for k in range(channels):
        terms = []
        for b in range(batch):
            for y in range(height):
                for x in range(width):
                    label = int(target[b, y, x])
                    if label == IGNORE:
                        continue
                    s = float(logits[b, k, y, x])
                    positive = label == rare_classes[k]
                    prob = 1.0 / (1.0 + math.exp(-s))
                    terms.append(-pos_weight[k] * math.log(prob) if positive else -math.log(1.0 - prob))
        channel_means.append(sum(terms) / len(terms))
    return sum(channel_means) / channels


@pytest.mark.parametrize(
    ("pos_weight", "channel_weights"), [(None, [1.0, 1.0]), (3.0, [3.0, 3.0]), ([2.0, 0.5], [2.0, 0.5])]
)
def test_matches_hand_computed_bce_with_ignore_pixels(pos_weight, channel_weights):
    target = torch.tensor([[[0, 2, 3], [IGNORE, 3, 1]], [[2, IGNORE, IGNORE], [0, 0, 3]]])
    logits = torch.tensor(
        [
            [[[0.5, 2.0, -1.0], [9.0, 0.3, -0.7]], [[-2.0, 0.1, 1.5], [-9.0, 2.5, 0.0]]],
            [[[1.2, 7.0, 7.0], [-0.4, -1.1, 0.8]], [[0.6, -7.0, 7.0], [-1.3, 0.2, 2.2]]],
        ],
        dtype=torch.float64,
    )
    expected = hand_bce(logits, target, [2, 3], channel_weights)
    value = SaliencyBCELoss([2, 3], pos_weight=pos_weight)(logits, target)
    assert value.item() == pytest.approx(expected, rel=1e-12)


def test_rare_class_absent_from_batch_is_all_negative():
    logits = torch.tensor([[[[0.0, 1.0], [-1.0, 2.0]]]])
    target = torch.tensor([[[0, 1], [IGNORE, 1]]])
    # valid pixels have logits 0, 1, 2 and target 0: mean of log(1 + e^s)
    expected = (math.log(2.0) + math.log(1 + math.e) + math.log(1 + math.e**2)) / 3
    assert SaliencyBCELoss([4])(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_ignored_pixels_get_no_gradient_and_all_ignore_gives_zero():
    logits = torch.randn(2, 2, 4, 4, requires_grad=True)
    target = torch.randint(0, 4, (2, 4, 4))
    target[:, 0] = IGNORE
    loss = SaliencyBCELoss([2, 3])
    (grad,) = torch.autograd.grad(loss(logits, target), logits)
    assert (grad[:, :, 0] == 0).all() and (grad[:, :, 1:] != 0).all()
    value = loss(logits, torch.full_like(target, IGNORE))
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == 0.0 and (grad == 0).all()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rare_classes": []}, "rare_classes must be distinct"),
        ({"rare_classes": [3, 3]}, "rare_classes must be distinct"),
        ({"rare_classes": [3, 255]}, "other than ignore_index=255"),
        ({"rare_classes": [3, 4], "pos_weight": [1.0, 2.0, 3.0]}, "one positive number or 2 of them"),
        ({"rare_classes": [3, 4], "pos_weight": -1.0}, "pos_weight must be one positive number"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SaliencyBCELoss(**kwargs)


def test_bad_inputs_raise_at_forward():
    loss = SaliencyBCELoss([4, 5])
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"expected saliency_logits \(B, 2, H, W\)"):
        loss(torch.zeros(2, 3, 8, 8), target)
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        loss(torch.zeros(2, 2, 4, 4), target)
