"""Baseline losses: common interface, ignore handling, and values against numpy / torch."""

from __future__ import annotations

import inspect
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from rareseg.losses import (
    ARBTLoss,
    CrossEntropyLoss,
    CrossEntropyLovaszLoss,
    DiceLoss,
    FocalLoss,
    LovaszLoss,
    TverskyLoss,
    WeightedCrossEntropyLoss,
)

IGNORE = 255
FREQS = [0.5, 0.3, 0.15, 0.05]
BASELINES = [
    CrossEntropyLoss,
    WeightedCrossEntropyLoss,
    DiceLoss,
    FocalLoss,
    TverskyLoss,
    LovaszLoss,
    CrossEntropyLovaszLoss,
]


def batch_with_ignore(seed=0, classes=4):
    gen = torch.Generator().manual_seed(seed)
    logits = 2.0 * torch.randn(2, classes, 5, 6, generator=gen, dtype=torch.float64)
    target = torch.randint(0, classes, (2, 5, 6), generator=gen)
    target[:, 0, :] = IGNORE
    target[1, :, -1] = IGNORE
    return logits, target


def numpy_softmax(logits):
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def soft_counts(logits, target):
    """Per-class soft TP, FP, FN and label counts over the valid pixels, in numpy."""
    probs = numpy_softmax(logits)
    target = np.asarray(target)
    valid = target != IGNORE
    tp, fp, fn, count = [], [], [], []
    for c in range(probs.shape[1]):
        p, g = probs[:, c][valid], (target[valid] == c).astype(np.float64)
        tp.append((p * g).sum())
        fp.append((p * (1 - g)).sum())
        fn.append(((1 - p) * g).sum())
        count.append(g.sum())
    return map(np.array, (tp, fp, fn, count))


@pytest.mark.parametrize("loss_class", [*BASELINES, ARBTLoss])
def test_class_frequencies_is_the_first_argument(loss_class):
    parameters = list(inspect.signature(loss_class).parameters.values())
    assert parameters[0].name == "class_frequencies" and parameters[0].default is None
    assert inspect.signature(loss_class).parameters["ignore_index"].default == 255


@pytest.mark.parametrize("loss_class", BASELINES)
def test_ignored_pixels_take_no_part(loss_class):
    logits, target = batch_with_ignore()
    loss = loss_class(FREQS)
    logits = logits.requires_grad_()
    value = loss(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    ignored = (target == IGNORE).unsqueeze(1).expand_as(grad)
    assert torch.isfinite(value) and value.item() > 0
    assert (grad[ignored] == 0).all() and grad[~ignored].abs().sum() > 0
    scrambled = logits.detach().clone()
    scrambled[ignored] = 50.0 * torch.randn(int(ignored.sum()), dtype=torch.float64)
    assert loss(scrambled, target).item() == pytest.approx(value.item(), rel=1e-6)


@pytest.mark.parametrize("loss_class", BASELINES)
def test_all_ignore_batch_gives_zero_with_finite_gradient(loss_class):
    logits = torch.randn(2, 4, 3, 3, requires_grad=True)
    value = loss_class(FREQS)(logits, torch.full((2, 3, 3), IGNORE))
    (grad,) = torch.autograd.grad(value, logits)
    assert value.shape == () and value.item() == 0.0
    assert torch.isfinite(grad).all() and (grad == 0).all()


def test_cross_entropy_equals_torch():
    logits, target = batch_with_ignore(seed=1)
    expected = F.cross_entropy(logits, target, ignore_index=IGNORE)
    assert CrossEntropyLoss()(logits, target).item() == pytest.approx(expected.item(), rel=1e-12)


def test_weighted_cross_entropy_weights_and_value():
    freqs = [0.5, 0.25, 0.25, 0.0]
    with pytest.warns(UserWarning, match=r"classes \[3\] have training frequency 0"):
        loss = WeightedCrossEntropyLoss(freqs, power=1.0, eps=1e-6)
    documented = np.array([(f + 1e-6) ** -1.0 if f > 0 else 0.0 for f in freqs])
    documented *= 3 / documented.sum()
    np.testing.assert_allclose(loss.class_weights.numpy(), [0.6, 1.2, 1.2, 0.0], rtol=1e-5)
    logits, target = batch_with_ignore(seed=2)
    expected = F.cross_entropy(logits, target, weight=torch.tensor(documented), ignore_index=IGNORE)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-6)
    # power=1 is median-frequency balancing up to a scale the weighted mean cancels
    median_frequency = torch.tensor([0.25 / 0.5, 0.25 / 0.25, 0.25 / 0.25, 0.0], dtype=torch.float64)
    expected = F.cross_entropy(logits, target, weight=median_frequency, ignore_index=IGNORE)
    assert loss(logits, target).item() == pytest.approx(expected.item(), rel=1e-5)


def test_weighted_cross_entropy_power():
    loss = WeightedCrossEntropyLoss([0.64, 0.16, 0.04, 0.16], power=0.5)
    np.testing.assert_allclose(loss.class_weights.numpy(), [4 / 9, 8 / 9, 16 / 9, 8 / 9], rtol=1e-4)


@pytest.mark.parametrize("gamma", [0.0, 2.0])
def test_focal_loss_matches_numpy(gamma):
    logits, target = batch_with_ignore(seed=3)
    probs, labels = numpy_softmax(logits), target.numpy()
    terms = [
        -((1 - probs[b, labels[b, y, x], y, x]) ** gamma) * math.log(probs[b, labels[b, y, x], y, x])
        for b, y, x in zip(*np.nonzero(labels != IGNORE))
    ]
    value = FocalLoss(gamma=gamma)(logits, target).item()
    assert value == pytest.approx(sum(terms) / len(terms), rel=1e-10)
    if gamma == 0.0:
        assert value == pytest.approx(F.cross_entropy(logits, target, ignore_index=IGNORE).item(), rel=1e-10)


def test_dice_loss_matches_numpy():
    logits, target = batch_with_ignore(seed=4, classes=5)  # class 4 is absent from the labels
    target[target == 4] = 0
    tp, fp, fn, count = soft_counts(logits, target)
    expected = np.mean((count > 0) * (1 - 2 * tp / (2 * tp + fp + fn)))
    assert DiceLoss()(logits, target).item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize(("alpha", "beta", "gamma"), [(0.3, 0.7, 1.0), (0.7, 0.3, 4 / 3)])
def test_tversky_and_focal_tversky_match_numpy(alpha, beta, gamma):
    logits, target = batch_with_ignore(seed=5, classes=5)
    target[target == 4] = 1
    tp, fp, fn, count = soft_counts(logits, target)
    expected = np.mean((count > 0) * (1 - tp / (tp + alpha * fp + beta * fn))) ** gamma
    value = TverskyLoss(alpha=alpha, beta=beta, gamma=gamma)(logits, target)
    assert value.item() == pytest.approx(expected, rel=1e-10)


def test_lovasz_loss_hand_worked_case():
    # two valid pixels of class 0 with P_0 = 0.9 and 0.6, one ignored pixel; only class 0 is present.
    # errors sorted (0.4, 0.1), Jaccard increments (0.5, 0.5): loss = 0.4 * 0.5 + 0.1 * 0.5
    probs = torch.tensor([[0.9, 0.6, 0.01], [0.1, 0.4, 0.99]], dtype=torch.float64)
    logits = probs.log().view(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, IGNORE]]])
    assert LovaszLoss()(logits, target).item() == pytest.approx(0.25, rel=1e-6)


def numpy_lovasz_softmax(logits, target):
    """Lovasz-Softmax in float64 numpy, written from Berman et al. (2018), Algorithm 1 and eq. 9."""
    probs = numpy_softmax(logits).transpose(0, 2, 3, 1).reshape(-1, np.shape(logits)[1])
    labels = np.asarray(target).reshape(-1)
    probs, labels = probs[labels != IGNORE], labels[labels != IGNORE]
    losses = []
    for c in range(probs.shape[1]):
        fg = (labels == c).astype(np.float64)
        if fg.sum() == 0:
            continue  # only classes present in the labels count
        errors = np.abs(fg - probs[:, c])
        order = np.argsort(-errors, kind="stable")
        fg_sorted = fg[order]
        # Jaccard loss of the first i pixels predicted as c, then its increments
        intersection = fg.sum() - np.cumsum(fg_sorted)
        union = fg.sum() + np.cumsum(1 - fg_sorted)
        jaccard = 1 - intersection / union
        jaccard[1:] = jaccard[1:] - jaccard[:-1]
        losses.append(float(errors[order] @ jaccard))
    return float(np.mean(losses))


def test_cross_entropy_lovasz_against_float64_numpy():
    logits, target = batch_with_ignore(seed=9, classes=5)
    probs = numpy_softmax(logits.numpy())
    valid = target.numpy() != IGNORE
    picked = np.take_along_axis(probs, np.where(valid, target.numpy(), 0)[:, None], axis=1)[:, 0]
    cross_entropy = -np.log(picked[valid]).mean()
    lovasz = numpy_lovasz_softmax(logits.numpy(), target.numpy())
    assert 0.05 < lovasz < 1 and cross_entropy > 0.5  # both terms matter in this batch
    for weight in (0.0, 1.0, 0.3):
        value = CrossEntropyLovaszLoss(FREQS + [0.0], lovasz_weight=weight)(logits, target)
        assert value.item() == pytest.approx(cross_entropy + weight * lovasz, rel=1e-6)
    assert LovaszLoss()(logits, target).item() == pytest.approx(lovasz, rel=1e-6)
    with pytest.raises(ValueError, match="lovasz_weight must be >= 0"):
        CrossEntropyLovaszLoss(lovasz_weight=-1.0)


def test_cross_entropy_lovasz_hand_worked_case():
    # the Lovasz case above (0.25) plus CE -(ln 0.9 + ln 0.6) / 2 of the two valid pixels, weight 0.5
    probs = torch.tensor([[0.9, 0.6, 0.01], [0.1, 0.4, 0.99]], dtype=torch.float64)
    logits = probs.log().view(1, 2, 1, 3)
    target = torch.tensor([[[0, 0, IGNORE]]])
    expected = -(math.log(0.9) + math.log(0.6)) / 2 + 0.5 * 0.25
    assert CrossEntropyLovaszLoss(lovasz_weight=0.5)(logits, target).item() == pytest.approx(expected, rel=1e-6)


def test_perfect_prediction_scores_near_zero():
    _, target = batch_with_ignore(seed=6)
    logits = 40.0 * F.one_hot(target.masked_fill(target == IGNORE, 0), 4).permute(0, 3, 1, 2).double()
    for loss_class in BASELINES:
        assert loss_class(FREQS)(logits, target).item() == pytest.approx(0.0, abs=1e-6), loss_class.__name__


@pytest.mark.parametrize(
    ("factory", "message"),
    [
        (lambda: WeightedCrossEntropyLoss(), "needs class_frequencies"),
        (lambda: WeightedCrossEntropyLoss([0.5, -0.5]), "finite and >= 0"),
        (lambda: WeightedCrossEntropyLoss(FREQS, power=-1.0), "power must be >= 0"),
        (lambda: FocalLoss(gamma=-1.0), "gamma must be >= 0"),
        (lambda: TverskyLoss(gamma=0.0), "gamma must be > 0"),
        (lambda: TverskyLoss(alpha=-0.1), "alpha and beta must be >= 0"),
    ],
)
def test_bad_arguments_raise_at_construction(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


@pytest.mark.parametrize("loss_class", BASELINES)
def test_bad_inputs_raise_clear_errors(loss_class):
    loss = loss_class(FREQS)
    with pytest.raises(ValueError, match="class id 9 outside"):
        loss(torch.zeros(1, 4, 2, 2), torch.full((1, 2, 2), 9))
    with pytest.raises(ValueError, match=r"expected logits \(B, K, H, W\)"):
        loss(torch.zeros(4, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


def test_weighted_cross_entropy_checks_class_count():
    with pytest.raises(ValueError, match="logits have 3 classes but class_frequencies has 4"):
        WeightedCrossEntropyLoss(FREQS)(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))


SPLITTABLE = [CrossEntropyLoss, WeightedCrossEntropyLoss, FocalLoss]


@pytest.mark.parametrize("loss_class", SPLITTABLE)
@pytest.mark.parametrize("part", [(3,), (1, 3), (0, 1, 2, 3)])
def test_split_parts_sum_to_the_loss(loss_class, part):
    logits, target = batch_with_ignore(seed=7)
    loss = loss_class(FREQS)
    rare, rest = loss.split(logits, target, part)
    assert (rare + rest).item() == pytest.approx(loss(logits, target).item(), rel=1e-12)
    assert rare.item() > 0
    if len(part) == 4:
        assert rest.item() == 0.0


def _split_reference(logits, target, part, pixel_loss, class_weight):
    """``sum w_y * pixel_loss(p_y) / sum w_y`` over the valid pixels with truth in ``part``, and over the others."""
    probs, labels = numpy_softmax(logits), target.numpy()
    sums, normaliser = [0.0, 0.0], 0.0
    for b, y, x in zip(*np.nonzero(labels != IGNORE)):
        label = labels[b, y, x]
        sums[0 if label in part else 1] += class_weight[label] * pixel_loss(probs[b, label, y, x])
        normaliser += class_weight[label]
    return sums[0] / normaliser, sums[1] / normaliser


@pytest.mark.parametrize(
    ("loss", "pixel_loss", "weighted"),
    [
        (CrossEntropyLoss(), lambda p: -math.log(p), False),
        (WeightedCrossEntropyLoss(FREQS, power=0.5), lambda p: -math.log(p), True),
        (FocalLoss(gamma=2.0), lambda p: -((1 - p) ** 2) * math.log(p), False),
    ],
    ids=["ce", "weighted-ce", "focal"],
)
def test_split_matches_numpy(loss, pixel_loss, weighted):
    logits, target = batch_with_ignore(seed=8)
    class_weight = loss.class_weights.double().numpy() if weighted else np.ones(4)
    expected = _split_reference(logits, target, (2, 3), pixel_loss, class_weight)
    rare, rest = loss.split(logits, target, [2, 3])
    assert rare.item() == pytest.approx(expected[0], rel=1e-10)
    assert rest.item() == pytest.approx(expected[1], rel=1e-10)


@pytest.mark.parametrize("loss_class", SPLITTABLE)
def test_split_parts_pass_gradcheck(loss_class):
    logits, target = batch_with_ignore(seed=9)
    loss = loss_class(FREQS).double()
    logits = logits[:, :, :3, :3].contiguous().requires_grad_()
    target = target[:, :3, :3].contiguous()
    for index in (0, 1):
        assert torch.autograd.gradcheck(lambda z: loss.split(z, target, (1, 3))[index], (logits,))


def test_split_refuses_classes_outside_the_range():
    logits, target = batch_with_ignore(seed=10)
    with pytest.raises(ValueError, match=r"class ids \[4\] must lie in \[0, 4\)"):
        CrossEntropyLoss().split(logits, target, [4])
