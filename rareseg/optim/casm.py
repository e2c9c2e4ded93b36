"""CASM: sharpness-aware minimisation whose radius adapts to the rare-pixel share of a batch.

With ``p_r`` the fraction of the batch's valid pixels (summed over all ranks) that belong to a
rare class, ``g`` the gradient of the loss at the weights ``w`` and ``t`` the number of steps
taken before this one (0 at the first):

    rho = rho0 * (1 + kappa * (1 - p_r)) * r(t)           (``radius_mode="fewer_rare"``, the seed)
    rho = rho0 * (1 + kappa * p_r) * r(t)                 (``radius_mode="more_rare"``, CC-SAM's direction)
    r(t) = min(1, t / rho_warmup_steps)                   (1 when ``rho_warmup_steps = 0``, the seed)
    e   = rho * g / (||g|| + eps')                        (SAM direction)
    e   = rho * T^2 g / (||T g|| + eps'),  T = |w|        (ASAM, ``adaptive=True``)
    w+  = w + e;   g+ = grad L(w+);   w <- base_step(w, g+)

``||.||`` is the L2 norm over every parameter with a gradient, across all param groups.
``kappa = 0`` is plain SAM. With ``"fewer_rare"`` batches poor in rare pixels search a wider
neighbourhood; with ``"more_rare"`` batches rich in rare pixels do, so the rare classes' minima are
flattened hardest (the class-conditional direction of CC-SAM). The warm-up ramps the radius
linearly from 0 over the first ``rho_warmup_steps`` steps.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

import torch
from torch import Tensor

RadiusMode = Literal["fewer_rare", "more_rare"]

_ORIGIN = "casm_origin"
"""``self.state[p]`` key of the weights ``w`` saved by ``first_step`` until ``second_step``."""


def _check_radius_args(rho0: float, kappa: float, radius_mode: str = "fewer_rare") -> None:
    if not (math.isfinite(rho0) and rho0 >= 0):
        raise ValueError(f"CASM rho0 must be a finite number >= 0, got {rho0}")
    if not (math.isfinite(kappa) and kappa >= 0):
        raise ValueError(f"CASM kappa must be a finite number >= 0, got {kappa}")
    if radius_mode not in ("fewer_rare", "more_rare"):
        raise ValueError(f"CASM radius_mode must be 'fewer_rare' or 'more_rare', got {radius_mode!r}")


def _check_warmup_steps(rho_warmup_steps: int) -> None:
    if isinstance(rho_warmup_steps, bool) or not isinstance(rho_warmup_steps, int) or rho_warmup_steps < 0:
        raise ValueError(f"CASM rho_warmup_steps must be an integer >= 0, got {rho_warmup_steps!r}")


def casm_rho(p_r: float, rho0: float, kappa: float, radius_mode: RadiusMode = "fewer_rare") -> float:
    """Perturbation radius ``rho0 * (1 + kappa * (1 - p_r))`` (``"fewer_rare"``) or ``rho0 * (1 + kappa * p_r)``.

    Args:
        p_r: rare-pixel fraction of the batch, in ``[0, 1]`` (a value outside, or NaN, is an
            error rather than clamped: it means the fraction was computed wrongly).
        rho0: base radius, ``>= 0``, in units of the parameters' L2 norm.
        kappa: gain, ``>= 0``; ``0`` gives SAM's constant radius.
        radius_mode: ``"fewer_rare"`` (the seed: the radius grows as the rare share falls) or
            ``"more_rare"`` (it grows with the rare share).

    Returns:
        The radius, between ``rho0`` and ``rho0 * (1 + kappa)``: ``"fewer_rare"`` reaches the top at
        ``p_r = 0``, ``"more_rare"`` at ``p_r = 1``.

    Raises:
        ValueError: ``p_r`` is outside ``[0, 1]``, ``rho0``/``kappa`` is negative or not finite, or
            ``radius_mode`` is unknown.
    """
    p_r = float(p_r)
    if not 0.0 <= p_r <= 1.0:
        raise ValueError(f"CASM p_r must be a rare-pixel fraction in [0, 1], got {p_r}")
    _check_radius_args(rho0, kappa, radius_mode)
    share = 1.0 - p_r if radius_mode == "fewer_rare" else p_r
    return rho0 * (1.0 + kappa * share)


def rho_warmup_factor(step: int, rho_warmup_steps: int) -> float:
    """Linear radius warm-up ``r(t) = min(1, t / rho_warmup_steps)``, 1 without warm-up.

    Args:
        step: steps taken before this one, ``t >= 0`` (0 at the first step, which gets radius 0).
        rho_warmup_steps: steps over which the radius ramps up; 0 disables the warm-up.

    Returns:
        The factor in ``[0, 1]`` that multiplies the radius.
    """
    _check_warmup_steps(rho_warmup_steps)
    if rho_warmup_steps == 0:
        return 1.0
    return min(1.0, step / rho_warmup_steps)


def _global_norm(tensors: list[Tensor]) -> float:
    """L2 norm of all ``tensors`` together, accumulated in float32 (float64 if any is float64)."""
    if not tensors:
        return 0.0
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)
    norms = torch._foreach_norm(tensors, 2, dtype=dtype)
    device = norms[0].device
    return float(torch.linalg.vector_norm(torch.stack([n.to(device) for n in norms])))


class CASM(torch.optim.Optimizer):
    """Sharpness-aware minimisation with a rare-density-adaptive radius around a base optimiser.

    One training step is two forward/backward passes:

    1. backward at ``w``, then :meth:`first_step` ``(p_r)`` moves to ``w + e`` (the ascent);
    2. backward at ``w + e``, then :meth:`second_step` returns to ``w`` and lets the base
       optimiser step with the gradient ``g+`` found at ``w + e`` - or :meth:`step` with a closure
       that runs this second pass (what Lightning's ``optimizer.step(closure=...)`` calls).

    With an LR scheduler attached prefer :meth:`step`: torch's schedulers watch ``step()`` and
    warn once when only :meth:`second_step` was called.

    ``param_groups`` and ``state`` are the base optimiser's own objects, so LR schedulers,
    Lightning's ``LearningRateMonitor`` and checkpoints see a single optimiser. Every param group
    carries ``rho0``, ``kappa``, ``adaptive``, ``radius_mode`` and ``rho_warmup_steps``; a callback
    may change them per group between steps. :meth:`state_dict` is the base optimiser's (moments
    such as AdamW's ``exp_avg``, the param groups with the CASM keys) plus ``skipped_steps`` and
    ``step_count`` (so a resumed warm-up continues where it stopped).

    ``w`` is saved before the ascent and copied back afterwards, so the descent starts from
    bit-identical weights (``w + e - e`` would round, badly so for low-precision weights).

    A non-finite gradient norm at either pass skips the whole step: the weights stay at ``w``, the
    base optimiser does not step (no moment is touched), gradients are cleared and
    ``skipped_steps`` grows by one. Norms are accumulated in float32 or wider, so bf16 autocast
    with float32 weights needs nothing special; fp16 loss scaling is not supported (the two passes
    do not fit one ``GradScaler`` step).

    Example::

        optimizer = CASM(model.parameters(), torch.optim.AdamW, rho0=0.05, kappa=1.0, lr=6e-4)
        loss_fn(model(x), y).backward()
        optimizer.first_step(p_r, zero_grad=True)
        loss_fn(model(x), y).backward()
        optimizer.second_step(zero_grad=True)

    Attributes:
        base_optimizer: the wrapped optimiser that makes the descent step.
        eps_prime: ``eps'`` added to the gradient norm.
        skipped_steps: number of steps skipped for a non-finite gradient norm.
        step_count: number of :meth:`first_step` calls so far, skipped ones included (the ``t`` of
            the radius warm-up).
        last_rho: radius of the first param group at the latest :meth:`first_step` (also when it
            was skipped; NaN before the first call).
        last_grad_norm: ``||g||`` (ASAM: ``||T g||``) at the latest :meth:`first_step`
            (``inf``/NaN when that step was skipped; NaN before the first call).
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: type[torch.optim.Optimizer] | Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
        rho0: float = 0.05,
        kappa: float = 1.0,
        eps_prime: float = 1e-12,
        adaptive: bool = False,
        radius_mode: RadiusMode = "fewer_rare",
        rho_warmup_steps: int = 0,
        **base_kwargs: Any,
    ) -> None:
        """Wrap a base optimiser.

        Args:
            params: parameters, or param-group dicts (which may set their own ``rho0``,
                ``kappa``, ``adaptive``, ``radius_mode``, ``rho_warmup_steps`` and base-optimiser
                options such as ``lr``).
            base_optimizer: a ``torch.optim.Optimizer`` subclass, or a callable that takes the
                param groups (and ``base_kwargs``) and returns an optimiser, such as a
                LightningCLI ``OptimizerCallable``.
            rho0: base radius, ``>= 0``.
            kappa: rare-density gain, ``>= 0``; ``0`` is plain SAM.
            eps_prime: ``eps' > 0`` added to the gradient norm.
            adaptive: ASAM's scale-invariant perturbation ``T = |w|``.
            radius_mode: ``"fewer_rare"`` (the seed) or ``"more_rare"``, see :func:`casm_rho`.
            rho_warmup_steps: steps over which the radius ramps linearly from 0 (0: no warm-up).
            **base_kwargs: passed to ``base_optimizer`` (``lr``, ``weight_decay``, ...).

        Raises:
            ValueError: a radius argument (here or in a param group) is negative or not finite.
            TypeError: ``base_optimizer`` is neither an optimiser class nor a callable building
                one.
        """
        _check_radius_args(rho0, kappa, radius_mode)
        _check_warmup_steps(rho_warmup_steps)
        if not (math.isfinite(eps_prime) and eps_prime > 0):
            raise ValueError(f"CASM eps_prime must be a finite number > 0, got {eps_prime}")
        is_class = isinstance(base_optimizer, type)
        if (is_class and not issubclass(base_optimizer, torch.optim.Optimizer)) or not callable(base_optimizer):
            raise TypeError(
                "CASM base_optimizer must be a torch.optim.Optimizer subclass or a callable returning one, got "
                f"{base_optimizer!r}"
            )
        defaults = {
            "rho0": rho0,
            "kappa": kappa,
            "adaptive": bool(adaptive),
            "radius_mode": radius_mode,
            "rho_warmup_steps": rho_warmup_steps,
        }
        super().__init__(params, defaults)
        casm_defaults = dict(self.defaults)
        base = base_optimizer(self.param_groups, **base_kwargs)
        if not isinstance(base, torch.optim.Optimizer):
            raise TypeError(f"CASM base_optimizer must return a torch.optim.Optimizer, got {type(base).__name__}")
        self.base_optimizer = base
        self.defaults = {**base.defaults, **casm_defaults}
        self._adopt_base_containers()
        self.eps_prime = eps_prime
        self.skipped_steps = 0
        self.step_count = 0
        self.last_rho = math.nan
        self.last_grad_norm = math.nan
        self._pending_ascent: Literal["applied", "skipped"] | None = None

    def _adopt_base_containers(self) -> None:
        """Share the base optimiser's ``param_groups`` and ``state``; fill and check CASM keys."""
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        for group in self.param_groups:
            for key in ("rho0", "kappa", "adaptive", "radius_mode", "rho_warmup_steps"):
                group.setdefault(key, self.defaults[key])
            _check_radius_args(group["rho0"], group["kappa"], group["radius_mode"])
            _check_warmup_steps(group["rho_warmup_steps"])

    def rho(self, p_r: float, group: dict[str, Any] | None = None) -> float:
        """Radius of the next step: :func:`casm_rho` times :func:`rho_warmup_factor` of ``step_count``.

        Args:
            p_r: rare-pixel fraction, in ``[0, 1]``.
            group: param group whose radius keys to use; the first group by default.
        """
        group = self.param_groups[0] if group is None else group
        radius = casm_rho(p_r, group["rho0"], group["kappa"], group["radius_mode"])
        return radius * rho_warmup_factor(self.step_count, group["rho_warmup_steps"])

    @torch.no_grad()
    def first_step(self, p_r: float, zero_grad: bool = False) -> bool:
        """Ascent: move every parameter with a gradient from ``w`` to ``w + e``.

        Call after the backward pass at ``w``. Each group uses its own radius
        ``rho(p_r, group)``; the norm is global over all groups.

        Args:
            p_r: rare-pixel fraction of the batch (over all ranks), in ``[0, 1]``.
            zero_grad: clear the gradients afterwards, ready for the backward pass at ``w + e``.

        Returns:
            ``True`` when the weights moved; ``False`` when the gradient norm is not finite, in
            which case the weights are untouched, ``skipped_steps`` grows by one and the
            following :meth:`second_step` skips too.

        Raises:
            ValueError: ``p_r`` is outside ``[0, 1]``.
            RuntimeError: the previous ascent was not yet undone by :meth:`second_step`.
        """
        if self._pending_ascent == "applied":
            raise RuntimeError(
                "CASM.first_step called twice: call second_step (or step(closure)) after each first_step"
            )
        radii = [self.rho(p_r, group) for group in self.param_groups]
        self.step_count += 1
        directions = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            grads = [p.grad for p in params]
            if group["adaptive"]:
                scale = torch._foreach_abs(params)
                directions.append((params, torch._foreach_mul(grads, scale), scale))
            else:
                directions.append((params, grads, None))
        grad_norm = _global_norm([t for _, scaled, _ in directions for t in scaled])
        self.last_rho, self.last_grad_norm = radii[0], grad_norm
        if not math.isfinite(grad_norm):
            self.skipped_steps += 1
            self._pending_ascent = "skipped"
            if zero_grad:
                self.zero_grad()
            return False
        for rho, (params, scaled, scale) in zip(radii, directions):
            if not params:
                continue
            for p in params:
                self.state[p][_ORIGIN] = p.detach().clone()
            ascent = scaled if scale is None else torch._foreach_mul(scaled, scale)
            torch._foreach_add_(params, ascent, alpha=rho / (grad_norm + self.eps_prime))
        self._pending_ascent = "applied"
        if zero_grad:
            self.zero_grad()
        return True

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> bool:
        """Descent: restore ``w`` and let the base optimiser step with the gradient at ``w + e``.

        Args:
            zero_grad: clear the gradients after the base step.

        Returns:
            ``True`` when the base optimiser stepped; ``False`` when the step was skipped (the
            ascent was skipped, or the gradient at ``w + e`` is not finite; gradients are then
            cleared and the weights stay at ``w``).

        Raises:
            RuntimeError: no :meth:`first_step` precedes this call.
        """
        pending, self._pending_ascent = self._pending_ascent, None
        if pending is None:
            raise RuntimeError("CASM.second_step needs a preceding first_step(p_r)")
        if pending == "applied":
            params = [p for group in self.param_groups for p in group["params"] if _ORIGIN in self.state.get(p, ())]
            torch._foreach_copy_(params, [self.state[p].pop(_ORIGIN) for p in params])
        if pending == "skipped":
            self.zero_grad()
            return False
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not math.isfinite(_global_norm(grads)):
            self.skipped_steps += 1
            self.zero_grad()
            return False
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()
        return True

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``closure`` (forward + backward at ``w + e``) with gradients on, then :meth:`second_step`.

        Args:
            closure: recomputes the loss at the perturbed weights, calls ``backward`` on it and
                returns it.

        Returns:
            What ``closure`` returned (the loss at ``w + e``).

        Raises:
            RuntimeError: no closure is given, or no :meth:`first_step` precedes this call.
        """
        if closure is None:
            raise RuntimeError(
                "CASM.step needs a closure that recomputes the loss and its gradients at the perturbed weights"
            )
        if self._pending_ascent is None:
            raise RuntimeError("CASM.step(closure) is the descent half of a step: call first_step(p_r) before it")
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state dict (moments, param groups with the CASM keys) plus ``casm``."""
        state = self.base_optimizer.state_dict()
        state["casm"] = {"skipped_steps": self.skipped_steps, "step_count": self.step_count}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned (a plain base-optimiser state dict also loads).

        Param groups saved without CASM keys get this optimiser's defaults. A pending ascent is
        forgotten: load weights and optimiser state together between steps.
        """
        state_dict = dict(state_dict)
        casm = state_dict.pop("casm", {})
        self.base_optimizer.load_state_dict(state_dict)
        self._adopt_base_containers()
        self.skipped_steps = int(casm.get("skipped_steps", 0))
        self.step_count = int(casm.get("step_count", 0))
        self._pending_ascent = None
