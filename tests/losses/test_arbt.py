"""ARBTLoss and its pure functions against hand-worked values and a float64 loop reference."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch

from rareseg.losses import (
    ARBTLoss,
    arbt_alpha,
    arbt_loss,
    inverse_frequency_weights,
    one_hot_valid,
    tversky_error_weights,
)

IGNORE = 255
# classes 0-2 occur in the batches below, class 3 is rare in training but absent from them,
# class 4 never occurs in training (frequency 0)
FREQS = [0.5, 0.3, 0.15, 0.05, 0.0]


def reference_arbt_parts(
    logits, target, freqs, eta, delta, lam, gamma, eps, alpha_on, *, alpha_max=1.0, focal=None, ce_weight=0.0, part=()
):
    """The ARBT formula as rareseg.losses.ARBTLoss (and arbt_loss) state it, and its variants, in float64 loops.

    ``focal``: classes of the pixel term (None: all); ``part``: classes whose region and pixel terms,
    and whose pixels' CE, go to the first returned value, everything else to the second.
    """
    logits = np.asarray(logits, dtype=np.float64)
    target = np.asarray(target)
    batch, classes, height, width = logits.shape
    f = np.asarray(freqs, dtype=np.float64)
    alpha = [min(1.0 - (f[c] / f.max()) ** eta, alpha_max) for c in range(classes)]
    raw = [(f[c] + eps) ** -delta if f[c] > 0 else 0.0 for c in range(classes)]
    present = sum(1 for c in range(classes) if f[c] > 0)
    w = [r * present / sum(raw) for r in raw]
    focal = range(classes) if focal is None else focal
    tp, fp, fn, pixel_sum = [0.0] * classes, [0.0] * classes, [0.0] * classes, [0.0] * classes
    ce_part, ce_rest, n_valid = 0.0, 0.0, 0
    for b in range(batch):
        for y in range(height):
            for x in range(width):
                label = target[b, y, x]
                if label == IGNORE:
                    continue
                n_valid += 1
                scores = logits[b, :, y, x]
                e = [math.exp(s - scores.max()) for s in scores]
                p = [v / sum(e) for v in e]
                if label in part:
                    ce_part -= math.log(p[label])
                else:
                    ce_rest -= math.log(p[label])
                for c in range(classes):
                    g = 1.0 if label == c else 0.0
                    tp[c] += p[c] * g
                    fp[c] += p[c] * (1.0 - g)
                    fn[c] += (1.0 - p[c]) * g
                    pixel_sum[c] += abs(p[c] - g) ** gamma
    first = ce_weight * (ce_part / n_valid if n_valid else 0.0)
    second = ce_weight * (ce_rest / n_valid if n_valid else 0.0)
    for c in range(classes):
        if alpha_on == "fp":
            a_fp, a_fn = alpha[c], 1.0 - alpha[c]
        elif alpha_on == "fn":
            a_fp, a_fn = 1.0 - alpha[c], alpha[c]
        else:
            a_fp, a_fn = 1.0 - alpha[c] / 2, 0.5 + alpha[c] / 2
        term = w[c] * (1.0 - tp[c] / (tp[c] + a_fp * fp[c] + a_fn * fn[c] + eps))
        if c in focal:
            term += lam * (pixel_sum[c] / n_valid if n_valid else 0.0)
        if c in part:
            first += term
        else:
            second += term
    return first, second


def reference_arbt(logits, target, freqs, eta, delta, lam, gamma, eps, alpha_on, **variant):
    """The whole loss of :func:`reference_arbt_parts`."""
    return sum(reference_arbt_parts(logits, target, freqs, eta, delta, lam, gamma, eps, alpha_on, **variant))


def random_batch(seed, classes=5, occurring=3, size=(2, 6, 7), scale=3.0):
    gen = torch.Generator().manual_seed(seed)
    logits = scale * torch.randn(size[0], classes, *size[1:], generator=gen, dtype=torch.float64)
    target = torch.randint(0, occurring, size, generator=gen)
    target[torch.rand(size, generator=gen) < 0.25] = IGNORE
    return logits, target


def test_alpha_hand_values():
    f = torch.tensor([0.64, 0.16, 0.04, 0.16, 0.0], dtype=torch.float64)
    expected = {1.0: [0, 0.75, 0.9375, 0.75, 1], 0.5: [0, 0.5, 0.75, 0.5, 1]}
    for eta, alpha in expected.items():
        torch.testing.assert_close(arbt_alpha(f, eta), torch.tensor(alpha, dtype=torch.float64))


def test_weights_hand_values():
    f = torch.tensor([0.64, 0.16, 0.04, 0.16, 0.0], dtype=torch.float64)
    expected = {
        0.0: [1, 1, 1, 1, 0],
        0.5: [4 / 9, 8 / 9, 16 / 9, 8 / 9, 0],
        1.0: [0.16, 0.64, 2.56, 0.64, 0],
    }
    for delta, w in expected.items():
        expected_w = torch.tensor(w, dtype=torch.float64)
        torch.testing.assert_close(inverse_frequency_weights(f, delta, 0.0), expected_w)


def test_module_buffers_and_zero_frequency_warning():
    with pytest.warns(UserWarning, match=r"classes \[4\] have training frequency 0"):
        loss = ARBTLoss([0.64, 0.16, 0.04, 0.16, 0.0], eta=0.5, delta=1.0, eps=1e-9)
    torch.testing.assert_close(loss.alpha, torch.tensor([0, 0.5, 0.75, 0.5, 1]))
    torch.testing.assert_close(loss.weights, torch.tensor([0.16, 0.64, 2.56, 0.64, 0]))
    assert {"alpha", "weights"} <= {name for name, _ in loss.named_buffers()}


@pytest.mark.parametrize("alpha_on", ["fp", "fn"])
@pytest.mark.parametrize(
    ("eta", "delta", "lam", "gamma", "eps"),
    [(1.0, 0.5, 0.1, 2.0, 1e-6), (2.0, 1.0, 0.5, 0.5, 1e-3), (0.5, 0.0, 0.0, 1.0, 1e-6)],
)
def test_matches_float64_reference(alpha_on, eta, delta, lam, gamma, eps):
    logits, target = random_batch(seed=int(10 * eta + delta))
    expected = reference_arbt(logits, target, FREQS, eta, delta, lam, gamma, eps, alpha_on)
    with pytest.warns(UserWarning):
        criterion = ARBTLoss(FREQS, eta=eta, delta=delta, lam=lam, gamma=gamma, eps=eps, alpha_on=alpha_on)
    assert abs(criterion(logits, target).item() - expected) < 1e-6 * abs(expected)

    f = torch.tensor(FREQS, dtype=torch.float64)
    onehot, valid = one_hot_valid(target, len(FREQS), IGNORE)
    pure = arbt_loss(
        logits.softmax(1),
        onehot,
        valid,
        arbt_alpha(f, eta),
        inverse_frequency_weights(f, delta, eps),
        lam,
        gamma,
        eps,
        alpha_on,
    )
    assert abs(pure.item() - expected) < 1e-12 * abs(expected)


def test_alpha_on_hand_worked_case():
    # two pixels: label 0 with P = (0.75, 0.25), label 1 with P = (0.5, 0.5); alpha = (0, 0.75), w = (1, 1)
    probs = torch.tensor([[0.75, 0.5], [0.25, 0.5]], dtype=torch.float64).view(1, 2, 1, 2)
    onehot, valid = one_hot_valid(torch.tensor([[[0, 1]]]), 2, IGNORE)
    alpha = torch.tensor([0.0, 0.75], dtype=torch.float64)
    weights = torch.ones(2, dtype=torch.float64)
    fp = arbt_loss(probs, onehot, valid, alpha, weights, 0.0, 2.0, 0.0, "fp")
    fn = arbt_loss(probs, onehot, valid, alpha, weights, 0.0, 2.0, 0.0, "fn")
    with_pixel_term = arbt_loss(probs, onehot, valid, alpha, weights, 0.1, 2.0, 0.0, "fp")
    assert fp.item() == pytest.approx(0.25 + 5 / 13, rel=1e-12)  # T = (3/4, 8/13)
    assert fn.item() == pytest.approx(0.4 + 7 / 15, rel=1e-12)  # T = (3/5, 8/15)
    assert with_pixel_term.item() == pytest.approx(0.25 + 5 / 13 + 0.1 * 0.3125, rel=1e-12)


@pytest.mark.parametrize(("alpha_on", "smp_alpha", "smp_beta"), [("fp", 0.0, 1.0), ("fn", 1.0, 0.0)])
def test_equal_frequencies_is_k_times_smp_tversky(alpha_on, smp_alpha, smp_beta):
    classes = 4
    logits, target = random_batch(seed=7, classes=classes, occurring=classes)
    assert set(target[target != IGNORE].unique().tolist()) == set(range(classes))
    # equal frequencies: alpha_c = 0 and w_c = 1; smp clamps its denominator at eps instead of adding it,
    # which is inactive here (every denominator >= 1), so a negligible ARBT eps makes both identical
    criterion = ARBTLoss([0.25] * classes, lam=0.0, eps=1e-15, alpha_on=alpha_on)
    torch.testing.assert_close(criterion.alpha, torch.zeros(classes))
    torch.testing.assert_close(criterion.weights, torch.ones(classes))
    smp_loss = smp.losses.TverskyLoss(
        mode="multiclass", alpha=smp_alpha, beta=smp_beta, from_logits=True, ignore_index=IGNORE
    )
    ours, theirs = criterion(logits, target), classes * smp_loss(logits, target)
    assert abs(ours.item() - theirs.item()) < 1e-12 * theirs.item()


def test_all_ignore_batch_is_constant_with_zero_gradient():
    logits = torch.randn(2, 5, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), IGNORE)
    with pytest.warns(UserWarning):
        criterion = ARBTLoss(FREQS, alpha_on="fn")
    value = criterion(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert value.item() == pytest.approx(criterion.weights.sum().item())
    assert torch.isfinite(grad).all() and (grad == 0).all()


@pytest.mark.parametrize("alpha_on", ["fp", "fn"])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_extreme_logits_give_finite_gradients(alpha_on, gamma):
    _, target = random_batch(seed=3)
    gen = torch.Generator().manual_seed(4)
    logits = (1e4 * torch.randint(-1, 2, (2, 5, 6, 7), generator=gen).float()).requires_grad_()
    with pytest.warns(UserWarning):
        criterion = ARBTLoss(FREQS, gamma=gamma, lam=0.5, alpha_on=alpha_on)
    value = criterion(logits, target)
    (grad,) = torch.autograd.grad(value, logits)
    assert torch.isfinite(value) and torch.isfinite(grad).all()


@pytest.mark.parametrize("alpha_on", ["fp", "fn"])
def test_true_one_hot_beats_uniform_prediction(alpha_on):
    _, target = random_batch(seed=5)
    onehot, _ = one_hot_valid(target, 5, IGNORE)
    with pytest.warns(UserWarning):
        criterion = ARBTLoss(FREQS, alpha_on=alpha_on)
    perfect = criterion(30.0 * onehot.double(), target)
    uniform = criterion(torch.zeros(2, 5, 6, 7, dtype=torch.float64), target)
    # classes 3 and 4 are absent from the batch and contribute their constant w_c to both
    absent = criterion.weights[3:].sum().item()
    assert perfect.item() == pytest.approx(absent, abs=1e-6)
    assert uniform.item() > perfect.item() + 1.0


@pytest.mark.parametrize("alpha_on", ["fp", "fn"])
def test_misclassified_rare_pixel_gets_larger_gradient_than_majority(alpha_on):
    # 100 pixels: 90 majority (class 0), 8 of class 1, 2 rare (class 2); every pixel predicted with the
    # same confidence (logit 2 vs -2), one majority and one rare pixel predicted as the wrong class
    target = torch.tensor([0] * 90 + [1] * 8 + [2] * 2).view(1, 10, 10)
    wrong = target.clone().view(-1)
    wrong[0], wrong[99] = 2, 0
    logits = (4.0 * torch.nn.functional.one_hot(wrong, 3).T.double() - 2.0).view(1, 3, 10, 10)
    logits.requires_grad_()
    criterion = ARBTLoss([0.90, 0.08, 0.02], alpha_on=alpha_on).double()
    (grad,) = torch.autograd.grad(criterion(logits, target), logits)
    per_pixel = grad.view(3, 100).norm(dim=0)
    majority_error, rare_error = per_pixel[0].item(), per_pixel[99].item()
    assert rare_error > 1.5 * majority_error


def test_delta_eta_lam_can_be_changed_during_training():
    logits, target = random_batch(seed=11)
    with pytest.warns(UserWarning):
        criterion = ARBTLoss(FREQS, eta=1.0, delta=0.5, lam=0.1, alpha_on="fn").double()
    criterion.delta, criterion.eta, criterion.lam = 1.0, 2.0, 0.3
    f = torch.tensor(FREQS, dtype=torch.float64)
    assert criterion.weights.dtype == torch.float64
    torch.testing.assert_close(criterion.weights, inverse_frequency_weights(f, 1.0, 1e-6))
    torch.testing.assert_close(criterion.alpha, arbt_alpha(f, 2.0))
    expected = reference_arbt(logits, target, FREQS, 2.0, 1.0, 0.3, 2.0, 1e-6, "fn")
    assert criterion(logits, target).item() == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"class_frequencies": None}, "needs class_frequencies"),
        ({"class_frequencies": [0.5, -0.1, 0.6]}, "finite and >= 0"),
        ({"class_frequencies": [0.0, 0.0]}, "all 0"),
        ({"class_frequencies": [[0.5, 0.5]]}, "1-D"),
        ({"class_frequencies": [0.5, 0.5], "gamma": 0.0}, "gamma must be > 0"),
        ({"class_frequencies": [0.5, 0.5], "alpha_on": "tp"}, "alpha_on must be 'fp' or 'fn'"),
        ({"class_frequencies": [0.5, 0.5], "eta": -1.0}, "eta must be >= 0"),
        ({"class_frequencies": [0.5, 0.5], "delta": -0.5}, "delta must be >= 0"),
        ({"class_frequencies": [0.5, 0.5], "lam": -0.1}, "lam must be >= 0"),
        ({"class_frequencies": [0.5, 0.5], "eps": 0.0}, "eps must be > 0"),
    ],
)
def test_bad_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ARBTLoss(**kwargs)


def test_bad_inputs_raise_at_forward():
    criterion = ARBTLoss([0.5, 0.3, 0.2])
    target = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="logits have 4 classes but class_frequencies has 3"):
        criterion(torch.zeros(1, 4, 4, 4), target)
    with pytest.raises(ValueError, match="class id 7 outside"):
        criterion(torch.zeros(1, 3, 4, 4), target.fill_(7))
    with pytest.raises(ValueError, match="differ in batch or spatial size"):
        criterion(torch.zeros(1, 3, 4, 5), target)
    with pytest.raises(ValueError, match="eta must be >= 0"):
        criterion.eta = -1.0


def test_frequencies_are_linked_by_keyword():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        criterion = ARBTLoss(class_frequencies=(0.7, 0.2, 0.1))
    assert criterion.class_frequencies == pytest.approx((0.7, 0.2, 0.1))


# --- variants: bounded alpha, both error terms weighted, focal term on rare classes, compound CE, split


VARIANTS = [
    {"alpha_on": "fn", "alpha_max": 0.7},
    {"alpha_on": "both"},
    {"alpha_on": "both", "alpha_max": 0.6},
    {"alpha_on": "fp", "focal_on": "rare", "rare_classes": (2, 3)},
    {"alpha_on": "fp", "ce_weight": 1.0},
    {"alpha_on": "fn", "alpha_max": 0.8, "focal_on": "rare", "rare_classes": (1, 2), "ce_weight": 0.5},
]


def in_float64(criterion):
    """The loss with its buffers recomputed in float64 (they are created in float32; the setters recompute)."""
    criterion = criterion.double()
    criterion.eta, criterion.delta = criterion.eta, criterion.delta
    return criterion


def _reference_kwargs(variant):
    return {
        "alpha_max": variant.get("alpha_max", 1.0),
        "focal": variant.get("rare_classes") if variant.get("focal_on") == "rare" else None,
        "ce_weight": variant.get("ce_weight", 0.0),
    }


@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_variants_match_float64_reference(variant):
    logits, target = random_batch(seed=21)
    eta, delta, lam, gamma, eps = 1.5, 0.5, 0.3, 2.0, 1e-6
    with pytest.warns(UserWarning):
        criterion = in_float64(ARBTLoss(FREQS, eta=eta, delta=delta, lam=lam, gamma=gamma, eps=eps, **variant))
    alpha_on = variant["alpha_on"]
    expected = reference_arbt(
        logits, target, FREQS, eta, delta, lam, gamma, eps, alpha_on, **_reference_kwargs(variant)
    )
    assert criterion(logits, target).item() == pytest.approx(expected, rel=1e-12)
    for seed_alpha_on in ("fp", "fn"):  # the variant differs from both seed forms on this batch
        assert abs(expected - reference_arbt(logits, target, FREQS, eta, delta, lam, gamma, eps, seed_alpha_on)) > 1e-3


@pytest.mark.parametrize("variant", [{"alpha_on": "fp"}, *VARIANTS], ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
@pytest.mark.parametrize("part", [(3, 4), (1, 2), (0,)])
def test_split_parts_match_reference_and_sum_to_the_loss(variant, part):
    logits, target = random_batch(seed=22)
    eta, delta, lam, gamma, eps = 1.0, 0.5, 0.2, 1.5, 1e-6
    with pytest.warns(UserWarning):
        criterion = in_float64(ARBTLoss(FREQS, eta=eta, delta=delta, lam=lam, gamma=gamma, eps=eps, **variant))
    first, second = reference_arbt_parts(
        logits, target, FREQS, eta, delta, lam, gamma, eps, variant["alpha_on"], part=part, **_reference_kwargs(variant)
    )
    rare, rest = criterion.split(logits, target, part)
    assert rare.item() == pytest.approx(first, rel=1e-12)
    assert rest.item() == pytest.approx(second, rel=1e-12)
    assert (rare + rest).item() == pytest.approx(criterion(logits, target).item(), rel=1e-12)


def test_bounded_alpha_hand_values():
    f = torch.tensor([0.64, 0.16, 0.04, 0.16, 0.0], dtype=torch.float64)
    torch.testing.assert_close(
        arbt_alpha(f, 1.0, alpha_max=0.8), torch.tensor([0, 0.75, 0.8, 0.75, 0.8], dtype=f.dtype)
    )
    assert torch.equal(arbt_alpha(f, 1.0, alpha_max=1.0), arbt_alpha(f, 1.0))
    criterion = ARBTLoss([0.8, 0.2], eta=1.0, alpha_on="fn", alpha_max=0.5)
    torch.testing.assert_close(criterion.alpha, torch.tensor([0.0, 0.5]))
    criterion.alpha_max = 0.6  # a knob may turn it: the buffer follows
    torch.testing.assert_close(criterion.alpha, torch.tensor([0.0, 0.6]))
    criterion.eta = 2.0  # 1 - 0.25^2 = 0.9375, still capped
    torch.testing.assert_close(criterion.alpha, torch.tensor([0.0, 0.6]))


def test_tversky_error_weights_hand_values():
    alpha = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)
    expected = {
        "fp": ([0, 0.5, 1], [1, 0.5, 0]),
        "fn": ([1, 0.5, 0], [0, 0.5, 1]),
        "both": ([1, 0.75, 0.5], [0.5, 0.75, 1]),
    }
    for alpha_on, (a, b) in expected.items():
        fp_weight, fn_weight = tversky_error_weights(alpha, alpha_on)
        torch.testing.assert_close(fp_weight, torch.tensor(a, dtype=torch.float64))
        torch.testing.assert_close(fn_weight, torch.tensor(b, dtype=torch.float64))


def _two_pixel_case():
    # label 0 with P = (0.75, 0.25), label 1 with P = (0.5, 0.5); frequencies (0.8, 0.2), eta 1: alpha = (0, 0.75)
    probs = torch.tensor([[0.75, 0.5], [0.25, 0.5]], dtype=torch.float64).view(1, 2, 1, 2)
    return probs.log(), torch.tensor([[[0, 1]]])


@pytest.mark.parametrize(
    ("variant", "expected"),
    [
        # class 0: TP 0.75, FP 0.5, FN 0.25; class 1: TP 0.5, FP 0.25, FN 0.5
        ({"alpha_on": "both"}, 5 / 11 + 19 / 35),  # T = (0.75/1.375, 0.5/1.09375) = (6/11, 16/35)
        ({"alpha_on": "fn", "alpha_max": 0.5}, 2 / 5 + 3 / 7),  # alpha = (0, 0.5): T = (3/5, 4/7)
        ({"alpha_on": "fp", "alpha_max": 0.5}, 1 / 4 + 3 / 7),  # T = (3/4, 0.5/0.875)
        # pixel term of class 1 only: (0.25^2 + 0.5^2) / 2 = 0.15625 (all classes: 0.3125)
        ({"alpha_on": "fp", "lam": 0.1, "focal_on": "rare", "rare_classes": [1]}, 0.25 + 5 / 13 + 0.015625),
        # CE: -(log 0.75 + log 0.5) / 2
        ({"alpha_on": "fp", "ce_weight": 0.5}, 0.25 + 5 / 13 - 0.25 * (math.log(0.75) + math.log(0.5))),
    ],
)
def test_variants_hand_worked_case(variant, expected):
    logits, target = _two_pixel_case()
    criterion = in_float64(ARBTLoss([0.8, 0.2], eta=1.0, delta=0.0, eps=1e-15, **{"lam": 0.0, **variant}))
    assert criterion(logits, target).item() == pytest.approx(expected, rel=1e-12)


def test_split_hand_worked_case():
    logits, target = _two_pixel_case()
    criterion = in_float64(ARBTLoss([0.8, 0.2], eta=1.0, delta=0.0, eps=1e-15, lam=0.1, ce_weight=0.5))
    rare, rest = criterion.split(logits, target, [1])
    # alpha_on fp, alpha = (0, 0.75): T = (3/4, 8/13); pixel term of each class (0.25^2 + 0.5^2) / 2 = 0.15625;
    # CE / N of pixel 1 (label 0) -log 0.75 / 2, of pixel 2 (label 1) -log 0.5 / 2
    assert rare.item() == pytest.approx(5 / 13 + 0.1 * 0.15625 - 0.25 * math.log(0.5), rel=1e-12)
    assert rest.item() == pytest.approx(0.25 + 0.1 * 0.15625 - 0.25 * math.log(0.75), rel=1e-12)


@pytest.mark.parametrize("variant", VARIANTS[1:], ids=lambda v: "-".join(f"{k}={v[k]}" for k in v))
def test_variant_gradients_pass_gradcheck(variant):
    logits, target = random_batch(seed=23, size=(1, 3, 3), scale=1.0)
    with pytest.warns(UserWarning):
        criterion = in_float64(ARBTLoss(FREQS, lam=0.3, **variant))
    logits.requires_grad_()
    assert torch.autograd.gradcheck(lambda z: criterion(z, target), (logits,))
    assert torch.autograd.gradcheck(lambda z: criterion.split(z, target, (1, 3))[0], (logits,))
    assert torch.autograd.gradcheck(lambda z: criterion.split(z, target, (1, 3))[1], (logits,))


def test_focal_on_rare_without_rare_classes_fails_at_forward():
    criterion = ARBTLoss([0.5, 0.3, 0.2], focal_on="rare")
    assert criterion.rare_classes is None
    with pytest.raises(ValueError, match="focal_on='rare' needs rare_classes"):
        criterion(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long))
    criterion.rare_classes = [2]
    assert criterion.rare_classes == (2,)
    assert torch.isfinite(criterion(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha_max": 1.5}, r"alpha_max must lie in \[0, 1\]"),
        ({"alpha_max": -0.1}, r"alpha_max must lie in \[0, 1\]"),
        ({"focal_on": "rares"}, "focal_on must be 'all' or 'rare'"),
        ({"ce_weight": -1.0}, "ce_weight must be a finite number >= 0"),
        ({"rare_classes": [3]}, r"rare_classes must be distinct class ids in \[0, 3\)"),
        ({"rare_classes": [1, 1]}, "rare_classes must be distinct"),
        ({"rare_classes": []}, "rare_classes must be distinct"),
    ],
)
def test_bad_variant_arguments_raise_at_construction(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ARBTLoss([0.5, 0.3, 0.2], **kwargs)


def test_split_refuses_classes_outside_the_range():
    criterion = ARBTLoss([0.5, 0.3, 0.2])
    with pytest.raises(ValueError, match=r"class ids \[5\] must lie in \[0, 3\)"):
        criterion.split(torch.zeros(1, 3, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), [5])
