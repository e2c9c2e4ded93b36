"""CASM against hand-written SAM/ASAM updates on a small float64 network (pure torch)."""

from __future__ import annotations

import copy
import math
import warnings
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from rareseg.optim import CASM, casm_rho, rho_warmup_factor

EPS_PRIME = 1e-12


def _model(seed: int = 0, dtype: torch.dtype = torch.float64) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).to(dtype)


def _batch(seed: int = 1, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 4, generator=generator).to(dtype), torch.randint(0, 3, (8,), generator=generator)


def _loss(model: nn.Module, batch: tuple[Tensor, Tensor]) -> Tensor:
    x, y = batch
    return nn.functional.cross_entropy(model(x), y)


def _weights(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def _model_with(weights: list[Tensor]) -> nn.Module:
    model = _model()
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    return model


def _grads_at(model: nn.Module, weights: list[Tensor], batch: tuple[Tensor, Tensor]) -> list[Tensor]:
    """Gradient of the loss at ``weights`` (loaded into ``model``)."""
    with torch.no_grad():
        for p, w in zip(model.parameters(), weights):
            p.copy_(w)
    model.zero_grad()
    _loss(model, batch).backward()
    return [p.grad.clone() for p in model.parameters()]


def _norm(tensors: list[Tensor]) -> Tensor:
    return torch.sqrt(sum((t.double() ** 2).sum() for t in tensors))


def _casm_step(model: nn.Module, optimizer: CASM, batch: tuple[Tensor, Tensor], p_r: float) -> None:
    optimizer.zero_grad()
    _loss(model, batch).backward()
    optimizer.first_step(p_r, zero_grad=True)
    _loss(model, batch).backward()
    optimizer.second_step(zero_grad=True)


def _sgd(weights: list[Tensor], grads: list[Tensor], lr: float) -> list[Tensor]:
    return [w - lr * g for w, g in zip(weights, grads)]


def _first_adamw(weights: list[Tensor], grads: list[Tensor], lr: float) -> list[Tensor]:
    """AdamW's first step from zero moments (betas 0.9/0.999, eps 1e-8, weight decay 0.01)."""
    b1, b2, eps, decay = 0.9, 0.999, 1e-8, 0.01
    out = []
    for w, g in zip(weights, grads):
        m_hat = (1 - b1) * g / (1 - b1)
        v_hat = (1 - b2) * g * g / (1 - b2)
        out.append(w * (1 - lr * decay) - lr * m_hat / (v_hat.sqrt() + eps))
    return out


def _hand_sam(
    batch: tuple[Tensor, Tensor], rho: float, base: Callable[[list[Tensor], list[Tensor]], list[Tensor]]
) -> list[Tensor]:
    """SAM by hand: g at w, e = rho g / ||g||, g+ at w + e, base step from w with g+."""
    scratch = _model()
    w = _weights(scratch)
    g = _grads_at(scratch, w, batch)
    norm = _norm(g)
    g_plus = _grads_at(scratch, [wi + rho * gi / (norm + EPS_PRIME) for wi, gi in zip(w, g)], batch)
    return base(w, g_plus)


@pytest.mark.parametrize(
    ("base_optimizer", "base_kwargs", "hand_base"),
    [
        (torch.optim.SGD, {"lr": 0.1}, lambda w, g: _sgd(w, g, 0.1)),
        (torch.optim.AdamW, {"lr": 1e-2, "weight_decay": 0.01}, lambda w, g: _first_adamw(w, g, 1e-2)),
    ],
    ids=["sgd", "adamw"],
)
def test_kappa_zero_step_equals_hand_written_sam(base_optimizer, base_kwargs, hand_base) -> None:
    batch = _batch()
    model = _model()
    optimizer = CASM(model.parameters(), base_optimizer=base_optimizer, rho0=0.05, kappa=0.0, **base_kwargs)
    _casm_step(model, optimizer, batch, p_r=0.3)
    expected = _hand_sam(batch, rho=0.05, base=hand_base)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize(("p_r", "expected_rho"), [(0.0, 0.15), (0.02, 0.148), (0.5, 0.1), (1.0, 0.05)])
def test_perturbation_norm_is_the_rare_density_radius(p_r: float, expected_rho: float) -> None:
    model = _model()
    before = _weights(model)
    optimizer = CASM(model.parameters(), rho0=0.05, kappa=2.0, lr=1e-3)
    _loss(model, _batch()).backward()
    grad_norm = _norm([p.grad for p in model.parameters()]).item()
    assert optimizer.first_step(p_r, zero_grad=True) is True
    moved = _norm([p.detach() - b for p, b in zip(model.parameters(), before)]).item()
    assert moved == pytest.approx(expected_rho * grad_norm / (grad_norm + EPS_PRIME), rel=1e-12)
    assert optimizer.last_rho == pytest.approx(expected_rho, rel=1e-12)
    assert optimizer.rho(p_r) == pytest.approx(expected_rho, rel=1e-12)
    assert optimizer.last_grad_norm == pytest.approx(grad_norm, rel=1e-12)
    assert all(p.grad is None for p in model.parameters())


def test_casm_rho_hand_worked_values_and_range() -> None:
    assert casm_rho(0.25, 0.05, 2.0) == pytest.approx(0.125)
    assert casm_rho(0.0, 0.05, 0.0) == pytest.approx(0.05)
    assert casm_rho(1.0, 0.2, 5.0) == pytest.approx(0.2)
    for bad in (-0.01, 1.01, math.nan):
        with pytest.raises(ValueError, match="p_r"):
            casm_rho(bad, 0.05, 1.0)


def test_each_param_group_uses_its_own_radius_over_the_global_norm() -> None:
    model = _model()
    first, second = model[0], model[2]
    before = _weights(model)
    optimizer = CASM(
        [{"params": first.parameters(), "rho0": 0.1, "kappa": 0.0}, {"params": second.parameters(), "kappa": 3.0}],
        base_optimizer=torch.optim.SGD,
        rho0=0.02,
        lr=0.1,
    )
    _loss(model, _batch()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.first_step(0.5)
    norm = _norm(grads)
    radii = [0.1, 0.1, 0.02 * 2.5, 0.02 * 2.5]
    for p, b, g, rho in zip(model.parameters(), before, grads, radii):
        torch.testing.assert_close(p.detach() - b, rho * g / (norm + EPS_PRIME), rtol=1e-10, atol=1e-16)
    assert optimizer.last_rho == pytest.approx(0.1)


def test_adaptive_perturbation_matches_asam_formula() -> None:
    model = _model()
    before = _weights(model)
    optimizer = CASM(model.parameters(), rho0=0.1, kappa=1.0, adaptive=True, lr=1e-3)
    _loss(model, _batch()).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.first_step(0.4)
    rho = 0.1 * (1 + 0.6)
    scaled_norm = _norm([w.abs() * g for w, g in zip(before, grads)])
    for p, w, g in zip(model.parameters(), before, grads):
        torch.testing.assert_close(p.detach() - w, rho * w**2 * g / (scaled_norm + EPS_PRIME), rtol=1e-10, atol=1e-16)
    assert optimizer.last_grad_norm == pytest.approx(scaled_norm.item(), rel=1e-12)


def test_step_with_closure_equals_second_step() -> None:
    batch = _batch()
    a, b = _model(), _model()
    optimizer_a = CASM(a.parameters(), rho0=0.05, kappa=1.0, lr=1e-2)
    optimizer_b = CASM(b.parameters(), rho0=0.05, kappa=1.0, lr=1e-2)
    _casm_step(a, optimizer_a, batch, p_r=0.1)

    _loss(b, batch).backward()
    optimizer_b.first_step(0.1, zero_grad=True)
    perturbed = _weights(b)
    closure_grad_enabled = []

    def closure() -> Tensor:
        closure_grad_enabled.append(torch.is_grad_enabled())
        loss = _loss(b, batch)
        loss.backward()
        return loss

    with torch.no_grad():
        loss = optimizer_b.step(closure)
    assert closure_grad_enabled == [True]
    assert loss.item() == pytest.approx(_loss(_model_with(perturbed), batch).item(), rel=1e-14)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_state_dict_round_trip_resumes_bit_identically() -> None:
    batches = [_batch(seed) for seed in range(5)]
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.07, kappa=1.5, lr=1e-2, weight_decay=0.01)
    for batch in batches[:2]:
        _casm_step(model, optimizer, batch, 0.2)
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    for batch in batches[2:]:
        _casm_step(model, optimizer, batch, 0.2)

    assert set(next(iter(saved_optimizer["state"].values()))) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved_optimizer["param_groups"][0]["rho0"] == 0.07 and saved_optimizer["param_groups"][0]["kappa"] == 1.5

    resumed = _model(seed=99)
    resumed.load_state_dict(saved_model)
    resumed_optimizer = CASM(resumed.parameters(), rho0=0.3, kappa=0.0, lr=1.0, weight_decay=0.01)
    resumed_optimizer.load_state_dict(saved_optimizer)
    assert resumed_optimizer.param_groups is resumed_optimizer.base_optimizer.param_groups
    assert resumed_optimizer.state is resumed_optimizer.base_optimizer.state
    assert (resumed_optimizer.param_groups[0]["rho0"], resumed_optimizer.param_groups[0]["kappa"]) == (0.07, 1.5)
    for batch in batches[2:]:
        _casm_step(resumed, resumed_optimizer, batch, 0.2)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_plain_base_optimizer_state_dict_loads_with_casm_defaults() -> None:
    model = _model()
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _loss(model, _batch()).backward()
    adamw.step()
    optimizer = CASM(model.parameters(), rho0=0.04, kappa=2.0, lr=1.0)
    optimizer.load_state_dict(adamw.state_dict())
    group = optimizer.param_groups[0]
    assert (group["lr"], group["rho0"], group["kappa"], group["adaptive"]) == (1e-2, 0.04, 2.0, False)
    assert torch.equal(optimizer.state[model[0].weight]["exp_avg"], adamw.state[model[0].weight]["exp_avg"])


def test_non_finite_ascent_gradient_skips_without_touching_weights() -> None:
    batch = _batch()
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.05, lr=1e-2)
    before = _weights(model)
    _loss(model, batch).backward()
    model[0].weight.grad[0, 0] = math.nan
    assert optimizer.first_step(0.5, zero_grad=True) is False
    assert math.isnan(optimizer.last_grad_norm)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    _loss(model, batch).backward()
    assert optimizer.second_step() is False
    assert optimizer.skipped_steps == 1
    assert all(p.grad is None for p in model.parameters())
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert not any(optimizer.state.values())

    _casm_step(model, optimizer, batch, 0.5)
    fresh = _model()
    _casm_step(fresh, CASM(fresh.parameters(), rho0=0.05, lr=1e-2), batch, 0.5)
    for p, q, b in zip(model.parameters(), fresh.parameters(), before):
        assert torch.equal(p, q) and not torch.equal(p, b)
    assert optimizer.skipped_steps == 1


def test_non_finite_descent_gradient_skips_and_restores_weights() -> None:
    batch = _batch()
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.05, lr=1e-2)
    before = _weights(model)
    _loss(model, batch).backward()
    assert optimizer.first_step(0.5, zero_grad=True) is True
    _loss(model, batch).backward()
    model[2].bias.grad[1] = math.inf
    assert optimizer.second_step() is False
    assert optimizer.skipped_steps == 1
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    assert not any(optimizer.state.values())


def test_cosine_scheduler_sets_the_lr_the_base_optimizer_uses() -> None:
    batch = _batch()
    model = _model()
    optimizer = CASM(model.parameters(), base_optimizer=torch.optim.SGD, rho0=0.05, kappa=0.0, lr=0.4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=4)
    expected_lr = 0.4 * (1 + math.cos(math.pi / 4)) / 2

    def closure() -> Tensor:
        loss = _loss(model, batch)
        loss.backward()
        return loss

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            before = _weights(model)
            optimizer.zero_grad()
            _loss(model, batch).backward()
            lr = optimizer.base_optimizer.param_groups[0]["lr"]
            optimizer.first_step(0.0, zero_grad=True)
            optimizer.step(closure)
            scheduler.step()
    assert not [w for w in caught if "lr_scheduler" in str(w.message)]
    assert lr == pytest.approx(expected_lr, rel=1e-12)
    scratch = _model()
    g = _grads_at(scratch, before, batch)
    norm = _norm(g)
    g_plus = _grads_at(scratch, [w + 0.05 * gi / (norm + EPS_PRIME) for w, gi in zip(before, g)], batch)
    for p, e in zip(model.parameters(), _sgd(before, g_plus, expected_lr)):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.4 * (1 + math.cos(2 * math.pi / 4)) / 2, rel=1e-12)


def test_param_group_keys_are_turnable_and_groups_shared() -> None:
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.05, kappa=1.0, lr=1e-3)
    assert optimizer.param_groups is optimizer.base_optimizer.param_groups
    assert optimizer.defaults["lr"] == 1e-3 and optimizer.defaults["rho0"] == 0.05
    optimizer.param_groups[0]["kappa"] = 4.0
    assert optimizer.rho(0.5) == pytest.approx(0.05 * 3.0)
    optimizer.param_groups[0]["rho0"] = -1.0
    _loss(model, _batch()).backward()
    with pytest.raises(ValueError, match="rho0"):
        optimizer.first_step(0.5)


def test_added_param_group_gets_both_sets_of_defaults_and_is_stepped() -> None:
    model = _model()
    extra = nn.Parameter(torch.ones(3, dtype=torch.float64))
    optimizer = CASM(model.parameters(), base_optimizer=torch.optim.SGD, rho0=0.05, kappa=1.0, lr=0.1)
    optimizer.add_param_group({"params": [extra], "rho0": 0.2})
    group = optimizer.base_optimizer.param_groups[1]
    assert (group["lr"], group["rho0"], group["kappa"]) == (0.1, 0.2, 1.0)
    extra.grad = torch.full((3,), 2.0, dtype=torch.float64)
    optimizer.first_step(1.0)
    torch.testing.assert_close(extra.detach(), torch.full((3,), 1 + 0.2 / math.sqrt(3), dtype=torch.float64))
    extra.grad = torch.full((3,), 1.0, dtype=torch.float64)
    optimizer.second_step()
    torch.testing.assert_close(extra.detach(), torch.full((3,), 0.9, dtype=torch.float64))


def test_callable_base_optimizer_like_lightning_cli() -> None:
    batch = _batch()
    a, b = _model(), _model()
    _casm_step(a, CASM(a.parameters(), base_optimizer=torch.optim.SGD, kappa=0.5, lr=0.1), batch, 0.3)
    built = CASM(b.parameters(), base_optimizer=lambda params: torch.optim.SGD(params, lr=0.1), kappa=0.5)
    assert isinstance(built.base_optimizer, torch.optim.SGD)
    _casm_step(b, built, batch, 0.3)
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.equal(pa, pb)


def test_bf16_autocast_norm_in_fp32_and_low_precision_weights_restored_exactly() -> None:
    model = _model(dtype=torch.float32)
    optimizer = CASM(model.parameters(), base_optimizer=torch.optim.SGD, rho0=0.05, kappa=1.0, lr=0.1)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = _loss(model, _batch(dtype=torch.float32))
    loss.backward()
    grads = [p.grad.double() for p in model.parameters()]
    before = _weights(model)
    assert optimizer.first_step(0.0)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert optimizer.last_grad_norm == pytest.approx(_norm(grads).item(), rel=1e-6)
    assert _norm([p.detach() - b for p, b in zip(model.parameters(), before)]).item() == pytest.approx(0.1, rel=1e-4)

    bf16 = _model(dtype=torch.bfloat16)
    before = _weights(bf16)
    frozen = CASM(bf16.parameters(), base_optimizer=torch.optim.SGD, rho0=0.5, kappa=0.0, lr=0.0)
    _loss(bf16, _batch(dtype=torch.bfloat16)).backward()
    grads = [p.grad.double() for p in bf16.parameters()]
    frozen.first_step(0.0, zero_grad=True)
    assert frozen.last_grad_norm == pytest.approx(_norm(grads).item(), rel=1e-6)
    assert any(not torch.equal(p, b) for p, b in zip(bf16.parameters(), before))
    _loss(bf16, _batch(dtype=torch.bfloat16)).backward()
    frozen.second_step()
    for p, b in zip(bf16.parameters(), before):
        assert torch.equal(p, b)


def test_call_order_errors() -> None:
    model = _model()
    optimizer = CASM(model.parameters(), lr=1e-3)
    with pytest.raises(RuntimeError, match="closure"):
        optimizer.step()
    with pytest.raises(RuntimeError, match="first_step"):
        optimizer.step(lambda: None)
    with pytest.raises(RuntimeError, match="first_step"):
        optimizer.second_step()
    _loss(model, _batch()).backward()
    before = _weights(model)
    with pytest.raises(ValueError, match="p_r"):
        optimizer.first_step(1.5)
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)
    optimizer.first_step(0.5)
    with pytest.raises(RuntimeError, match="twice"):
        optimizer.first_step(0.5)


def test_bad_arguments_are_refused() -> None:
    params = list(_model().parameters())
    with pytest.raises(ValueError, match="rho0"):
        CASM(params, rho0=-0.1)
    with pytest.raises(ValueError, match="rho0"):
        CASM(params, rho0=math.inf)
    with pytest.raises(ValueError, match="kappa"):
        CASM(params, kappa=-1.0)
    with pytest.raises(ValueError, match="kappa"):
        CASM([{"params": params, "kappa": -2.0}])
    with pytest.raises(ValueError, match="eps_prime"):
        CASM(params, eps_prime=0.0)
    with pytest.raises(TypeError, match="base_optimizer"):
        CASM(params, base_optimizer=nn.Linear)
    with pytest.raises(TypeError, match="base_optimizer"):
        CASM(params, base_optimizer="adamw")
    with pytest.raises(TypeError, match="base_optimizer"):
        CASM(params, base_optimizer=lambda groups: object())


# --- variants: radius growing with the rare share, radius warm-up, large radii


def test_more_rare_radius_hand_worked_values() -> None:
    assert casm_rho(0.25, 0.05, 2.0, "more_rare") == pytest.approx(0.075)
    assert casm_rho(0.0, 0.05, 2.0, "more_rare") == pytest.approx(0.05)
    assert casm_rho(1.0, 0.05, 2.0, "more_rare") == pytest.approx(0.15)
    assert casm_rho(0.25, 0.05, 2.0, "fewer_rare") == casm_rho(0.25, 0.05, 2.0) == pytest.approx(0.125)
    with pytest.raises(ValueError, match="radius_mode must be 'fewer_rare' or 'more_rare'"):
        casm_rho(0.25, 0.05, 2.0, "rare")


@pytest.mark.parametrize(("p_r", "expected_rho"), [(0.0, 0.05), (0.02, 0.052), (0.5, 0.1), (1.0, 0.15)])
def test_more_rare_perturbation_norm(p_r: float, expected_rho: float) -> None:
    model = _model()
    before = _weights(model)
    optimizer = CASM(model.parameters(), rho0=0.05, kappa=2.0, radius_mode="more_rare", lr=1e-3)
    assert optimizer.param_groups[0]["radius_mode"] == "more_rare"
    _loss(model, _batch()).backward()
    grad_norm = _norm([p.grad for p in model.parameters()]).item()
    optimizer.first_step(p_r, zero_grad=True)
    moved = _norm([p.detach() - b for p, b in zip(model.parameters(), before)]).item()
    assert moved == pytest.approx(expected_rho * grad_norm / (grad_norm + EPS_PRIME), rel=1e-12)
    assert optimizer.last_rho == pytest.approx(expected_rho, rel=1e-12)


def test_rho_warmup_factor_hand_values() -> None:
    assert [rho_warmup_factor(t, 4) for t in range(6)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert rho_warmup_factor(0, 0) == rho_warmup_factor(7, 0) == 1.0
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match="rho_warmup_steps must be an integer >= 0"):
            rho_warmup_factor(0, bad)


def test_warmup_ramps_the_radius_linearly_over_the_first_steps() -> None:
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.05, kappa=1.0, rho_warmup_steps=4, lr=1e-3)
    radii = []
    for seed in range(6):
        _casm_step(model, optimizer, _batch(seed), p_r=0.5)
        radii.append(optimizer.last_rho)
    assert radii == pytest.approx([0.075 * f for f in (0.0, 0.25, 0.5, 0.75, 1.0, 1.0)], rel=1e-12)
    assert optimizer.step_count == 6


def test_warmup_first_step_is_the_plain_base_step_and_third_is_sam_at_half_radius() -> None:
    batch = _batch()
    model = _model()
    optimizer = CASM(
        model.parameters(), base_optimizer=torch.optim.SGD, rho0=0.2, kappa=0.0, rho_warmup_steps=2, lr=0.1
    )
    w0 = _weights(model)
    _casm_step(model, optimizer, batch, p_r=0.3)  # t = 0: radius 0, the descent gradient is the one at w
    for p, e in zip(model.parameters(), _sgd(w0, _grads_at(_model(), w0, batch), 0.1)):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)
    _casm_step(model, optimizer, batch, p_r=0.3)  # t = 1: radius 0.1
    w2 = _weights(model)
    _casm_step(model, optimizer, batch, p_r=0.3)  # t = 2: full radius 0.2
    scratch = _model()
    g = _grads_at(scratch, w2, batch)
    g_plus = _grads_at(scratch, [w + 0.2 * gi / (_norm(g) + EPS_PRIME) for w, gi in zip(w2, g)], batch)
    for p, e in zip(model.parameters(), _sgd(w2, g_plus, 0.1)):
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


def test_warmup_continues_after_loading_the_state_dict() -> None:
    model = _model()
    optimizer = CASM(model.parameters(), rho0=0.1, kappa=0.0, rho_warmup_steps=4, lr=1e-3)
    for seed in range(3):
        _casm_step(model, optimizer, _batch(seed), p_r=0.5)
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["casm"] == {"skipped_steps": 0, "step_count": 3}
    assert saved["param_groups"][0]["rho_warmup_steps"] == 4
    resumed = CASM(_model(seed=5).parameters(), rho0=0.1, kappa=0.0, lr=1e-3)
    resumed.load_state_dict(saved)
    assert resumed.step_count == 3
    assert resumed.rho(0.5) == pytest.approx(0.075, rel=1e-12)  # t = 3 of 4


@pytest.mark.parametrize(("kappa", "p_r", "rho"), [(0.0, 0.3, 0.8), (1.0, 0.0, 1.6)])
def test_large_radius_step_equals_hand_written_sam(kappa: float, p_r: float, rho: float) -> None:
    # long-tail SAM work uses radii up to 0.8; the step must stay exact and finite there
    batch = _batch()
    model = _model()
    optimizer = CASM(model.parameters(), base_optimizer=torch.optim.SGD, rho0=0.8, kappa=kappa, lr=0.1)
    _casm_step(model, optimizer, batch, p_r=p_r)
    assert optimizer.last_rho == pytest.approx(rho, rel=1e-12)
    expected = _hand_sam(batch, rho=rho, base=lambda w, g: _sgd(w, g, 0.1))
    for p, e in zip(model.parameters(), expected):
        assert torch.isfinite(p).all()
        torch.testing.assert_close(p.detach(), e, rtol=1e-12, atol=1e-14)


def test_bad_variant_arguments_are_refused() -> None:
    params = list(_model().parameters())
    with pytest.raises(ValueError, match="radius_mode must be 'fewer_rare' or 'more_rare'"):
        CASM(params, radius_mode="rare")
    with pytest.raises(ValueError, match="radius_mode"):
        CASM([{"params": params, "radius_mode": "both"}])
    with pytest.raises(ValueError, match="rho_warmup_steps must be an integer >= 0"):
        CASM(params, rho_warmup_steps=-3)
    with pytest.raises(ValueError, match="rho_warmup_steps"):
        CASM(params, rho_warmup_steps=2.5)
