"""CASM against hand-written SAM updates (float64, pure torch)."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from rareseg.optim import CASM, casm_rho, rare_pixel_counts


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()


def _batch(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 3, (8,), generator=g)


def _loss(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return nn.functional.cross_entropy(model(x), y)


def _grads(model, x, y) -> list[torch.Tensor]:
    model.zero_grad()
    _loss(model, x, y).backward()
    return [p.grad.clone() for p in model.parameters()]


def _casm_step(model, opt, x, y, p_r) -> None:
    opt.zero_grad()
    _loss(model, x, y).backward()
    opt.first_step(p_r, zero_grad=True)
    _loss(model, x, y).backward()
    opt.second_step(zero_grad=True)


def test_kappa_zero_equals_hand_written_sam_with_sgd() -> None:
    x, y = _batch()
    model, reference = _model(), _model()
    rho, lr = 0.05, 0.1
    opt = CASM(model.parameters(), base_optimizer=torch.optim.SGD, rho0=rho, kappa=0.0, lr=lr)
    _casm_step(model, opt, x, y, p_r=0.3)

    params = [p.detach().clone() for p in reference.parameters()]
    g = _grads(reference, x, y)
    norm = torch.sqrt(sum((gi**2).sum() for gi in g))
    with torch.no_grad():
        for p, gi in zip(reference.parameters(), g):
            p.add_(rho * gi / (norm + 1e-12))
    g_plus = _grads(reference, x, y)
    expected = [w - lr * gp for w, gp in zip(params, g_plus)]
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=0, atol=1e-14)


@pytest.mark.parametrize("p_r", [0.0, 0.02, 0.5, 1.0])
def test_perturbation_norm_is_the_formula_radius(p_r: float) -> None:
    x, y = _batch()
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = CASM(model.parameters(), rho0=0.05, kappa=2.0, lr=1e-3)
    _loss(model, x, y).backward()
    assert opt.first_step(p_r)
    moved = math.sqrt(sum(((p.detach() - b) ** 2).sum().item() for p, b in zip(model.parameters(), before)))
    expected = 0.05 * (1 + 2.0 * (1 - p_r))
    assert moved == pytest.approx(expected, rel=1e-9)
    assert opt.last_rho == pytest.approx(expected) == casm_rho(p_r, 0.05, 2.0)


def test_adaptive_perturbation_matches_asam_formula() -> None:
    x, y = _batch()
    model = _model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = CASM(model.parameters(), rho0=0.1, kappa=0.0, adaptive=True, lr=1e-3)
    g = _grads(model, x, y)
    opt.first_step(0.5)
    norm = torch.sqrt(sum(((b.abs() * gi) ** 2).sum() for b, gi in zip(before, g)))
    for p, b, gi in zip(model.parameters(), before, g):
        torch.testing.assert_close(p.detach() - b, 0.1 * b**2 * gi / (norm + 1e-12), rtol=1e-10, atol=1e-15)


def test_step_with_closure_equals_second_step() -> None:
    x, y = _batch()
    a, b = _model(), _model()
    opt_a = CASM(a.parameters(), rho0=0.05, kappa=1.0, lr=1e-2)
    opt_b = CASM(b.parameters(), rho0=0.05, kappa=1.0, lr=1e-2)
    _casm_step(a, opt_a, x, y, p_r=0.1)

    _loss(b, x, y).backward()
    opt_b.first_step(0.1, zero_grad=True)

    def closure():
        loss = _loss(b, x, y)
        loss.backward()
        return loss

    loss = opt_b.step(closure)
    assert torch.isfinite(loss)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    batches = [_batch(s) for s in range(5)]
    model = _model()
    opt = CASM(model.parameters(), rho0=0.05, kappa=1.0, lr=1e-2, weight_decay=0.01)
    for x, y in batches[:2]:
        _casm_step(model, opt, x, y, 0.2)
    saved_model, saved_opt = copy.deepcopy(model.state_dict()), copy.deepcopy(opt.state_dict())
    assert "exp_avg" in next(iter(saved_opt["state"].values()))  # AdamW moments are in it
    for x, y in batches[2:]:
        _casm_step(model, opt, x, y, 0.2)

    resumed = _model(seed=99)
    resumed.load_state_dict(saved_model)
    opt2 = CASM(resumed.parameters(), rho0=0.05, kappa=1.0, lr=1e-2, weight_decay=0.01)
    opt2.load_state_dict(saved_opt)
    for x, y in batches[2:]:
        _casm_step(resumed, opt2, x, y, 0.2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_non_finite_gradient_skips_without_touching_weights() -> None:
    x, y = _batch()
    model = _model()
    opt = CASM(model.parameters(), rho0=0.05, lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    _loss(model, x, y).backward()
    next(model.parameters()).grad[0, 0] = float("nan")
    assert opt.first_step(0.5, zero_grad=True) is False
    _loss(model, x, y).backward()
    opt.second_step()
    assert opt.skipped_steps == 1
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert all(not s for s in opt.state.values())  # no AdamW moments were created
    _casm_step(model, opt, x, y, 0.5)
    assert any(not torch.equal(p, b) for p, b in zip(model.parameters(), before))


def test_scheduler_and_param_groups_are_the_base_optimisers() -> None:
    model = _model()
    opt = CASM(model.parameters(), base_optimizer=torch.optim.SGD, lr=1.0)
    assert opt.param_groups is opt.base_optimizer.param_groups
    scheduler = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    x, y = _batch()
    _casm_step(model, opt, x, y, 0.0)
    scheduler.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == pytest.approx(0.5)
    opt.param_groups[0]["rho0"] = 0.2
    assert opt.rho(1.0) == pytest.approx(0.2)


def test_bad_arguments_are_refused() -> None:
    params = list(_model().parameters())
    with pytest.raises(ValueError, match="rho0"):
        CASM(params, rho0=-0.1)
    with pytest.raises(ValueError, match="kappa"):
        CASM(params, kappa=-1)
    with pytest.raises(TypeError, match="base_optimizer"):
        CASM(params, base_optimizer=lambda p: object())
    with pytest.raises(ValueError, match="p_r"):
        casm_rho(1.5, 0.05, 1.0)


def test_rare_pixel_counts() -> None:
    target = torch.tensor([[0, 4, 5, 255], [1, 4, 255, 2]])
    assert rare_pixel_counts(target, (4, 5)).tolist() == [3, 6]
