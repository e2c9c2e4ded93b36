"""CASM: sharpness-aware minimisation whose radius adapts to the rare-pixel share of the batch.

With p_r the fraction of valid pixels of the batch (all ranks) that belong to a rare class,

    rho = rho0 * (1 + kappa * (1 - p_r))
    e   = rho * g / (||g|| + eps')               (ASAM: e = rho * T^2 g / (||T g|| + eps'), T = |w|)
    w+  = w + e;  g+ = grad L(w+);  w <- base_step(w, g+)

so batches with few rare pixels search a wider neighbourhood. ``kappa = 0`` is SAM.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


def casm_rho(p_r: float, rho0: float, kappa: float) -> float:
    """Perturbation radius rho = rho0 * (1 + kappa * (1 - p_r)).

    Args:
        p_r: rare-pixel fraction of the batch, in [0, 1].
        rho0: base radius (>= 0).
        kappa: gain on the non-rare share (>= 0); 0 gives SAM's constant radius.

    Returns:
        The radius.
    """
    if not 0.0 <= p_r <= 1.0:
        raise ValueError(f"p_r must be a fraction in [0, 1], got {p_r}")
    return rho0 * (1.0 + kappa * (1.0 - p_r))


def rare_pixel_counts(target: Tensor, rare_classes: Sequence[int], ignore_index: int = 255) -> Tensor:
    """Rare and valid pixel counts of a label batch, as a (2,) int64 tensor.

    Counts rather than the fraction, so a DDP caller can sum them over ranks before dividing:
    p_r = counts[0] / counts[1].

    Args:
        target: class ids of any shape; ``ignore_index`` marks unlabelled pixels.
        rare_classes: ids of the rare classes.
        ignore_index: value excluded from the valid count.
    """
    rare = torch.zeros_like(target, dtype=torch.bool)
    for class_id in rare_classes:
        rare |= target == class_id
    return torch.stack([rare.sum(), (target != ignore_index).sum()]).to(torch.int64)


def _at_least_fp32(tensor: Tensor) -> Tensor:
    """The tensor in float32, or in its own dtype when that is wider (float64)."""
    return tensor.to(torch.promote_types(tensor.dtype, torch.float32))


class CASM(torch.optim.Optimizer):
    """Class-adaptive sharpness-aware minimisation around any base optimiser.

    ``param_groups`` and ``state`` are the base optimiser's own, so LR schedulers,
    LearningRateMonitor and checkpoints see one optimiser; ``rho0`` and ``kappa`` live in
    every param group (a callback may turn them per group).

    Use either ``first_step(p_r)`` + ``second_step()`` around a second forward/backward,
    or ``first_step(p_r)`` + ``step(closure)`` where the closure runs that forward/backward
    (what Lightning's ``optimizer.step(closure=...)`` calls).
    """

    def __init__(
        self,
        params: Iterable[Any],
        base_optimizer: Callable[..., torch.optim.Optimizer] = torch.optim.AdamW,
        rho0: float = 0.05,
        kappa: float = 1.0,
        eps_prime: float = 1e-12,
        adaptive: bool = False,
        **base_kwargs: Any,
    ) -> None:
        """Wrap a base optimiser.

        Args:
            params: parameters or param-group dicts.
            base_optimizer: optimiser class, or a callable taking the params (e.g. a
                LightningCLI ``OptimizerCallable``), that makes the descent step.
            rho0: base radius (>= 0).
            kappa: rare-density gain (>= 0); 0 is plain SAM.
            eps_prime: added to the gradient norm.
            adaptive: ASAM's scale-invariant perturbation.
            **base_kwargs: passed to ``base_optimizer`` (lr, weight_decay, ...).
        """
        if rho0 < 0:
            raise ValueError(f"CASM rho0 must be >= 0, got {rho0}")
        if kappa < 0:
            raise ValueError(f"CASM kappa must be >= 0, got {kappa}")
        if eps_prime <= 0:
            raise ValueError(f"CASM eps_prime must be > 0, got {eps_prime}")
        if not callable(base_optimizer):
            raise TypeError(f"CASM base_optimizer must be an optimizer class or callable, got {base_optimizer!r}")
        defaults = dict(rho0=rho0, kappa=kappa, adaptive=adaptive)
        super().__init__(params, defaults)
        self.base_optimizer = base_optimizer(self.param_groups, **base_kwargs)
        if not isinstance(self.base_optimizer, torch.optim.Optimizer):
            raise TypeError(f"CASM base_optimizer must build a torch.optim.Optimizer, got {type(self.base_optimizer).__name__}")
        self.param_groups = self.base_optimizer.param_groups
        self.defaults.update(self.base_optimizer.defaults)
        self.state = self.base_optimizer.state
        self.eps_prime = eps_prime
        self.skipped_steps = 0
        self.last_rho = 0.0
        self.last_grad_norm = 0.0
        self._perturbed = False
        self._skip_descent = False

    def rho(self, p_r: float, group: dict[str, Any] | None = None) -> float:
        """Radius for a batch with rare-pixel fraction ``p_r`` (first group's rho0/kappa by default)."""
        group = self.param_groups[0] if group is None else group
        return casm_rho(p_r, group["rho0"], group["kappa"])

    def _grad_norm(self) -> Tensor:
        """Global L2 norm (at least fp32) of the (ASAM: |w|-scaled) gradients over all groups."""
        norms = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = _at_least_fp32(p.grad)
                scaled = grad * _at_least_fp32(p.detach()).abs() if group["adaptive"] else grad
                norms.append(scaled.norm(2))
        if not norms:
            return torch.zeros(())
        return torch.stack([n.to(norms[0].dtype) for n in norms]).norm(2)

    @torch.no_grad()
    def first_step(self, p_r: float, zero_grad: bool = False) -> bool:
        """Move to w + e (the ascent step) and remember e.

        Args:
            p_r: rare-pixel fraction of the batch (all ranks), in [0, 1].
            zero_grad: clear gradients afterwards (ready for the second backward).

        Returns:
            False, with parameters untouched and ``skipped_steps`` incremented, when the
            gradient norm is not finite (the following descent step is skipped too).
        """
        grad_norm = self._grad_norm()
        self.last_grad_norm = float(grad_norm)
        if not math.isfinite(self.last_grad_norm):
            self.skipped_steps += 1
            self._skip_descent = True
            self._perturbed = False
            if zero_grad:
                self.zero_grad()
            return False
        self._skip_descent = False
        for group in self.param_groups:
            scale = self.rho(p_r, group) / (grad_norm + self.eps_prime)
            for p in group["params"]:
                if p.grad is None:
                    continue
                e = _at_least_fp32(p.grad) * scale
                if group["adaptive"]:
                    e = e * _at_least_fp32(p.detach()).pow(2)
                e = e.to(p.dtype)
                p.add_(e)
                self.state[p]["casm_e"] = e
        self.last_rho = self.rho(p_r)
        self._perturbed = True
        if zero_grad:
            self.zero_grad()
        return True

    @torch.no_grad()
    def second_step(self, zero_grad: bool = False) -> None:
        """Return to w and take the base optimiser's step with the gradient at w + e."""
        if self._perturbed:
            for group in self.param_groups:
                for p in group["params"]:
                    e = self.state[p].pop("casm_e", None)
                    if e is not None:
                        p.sub_(e)
            self._perturbed = False
        if self._skip_descent:
            self._skip_descent = False
            self.zero_grad()
            return
        self.base_optimizer.step()
        if zero_grad:
            self.zero_grad()

    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        """Run ``closure`` (forward + backward at w + e), then :meth:`second_step`.

        Returns:
            The closure's return value (the loss at w + e).
        """
        if closure is None:
            raise RuntimeError("CASM.step needs a closure that recomputes the loss and its gradients at the perturbed weights")
        with torch.enable_grad():
            loss = closure()
        self.second_step()
        return loss

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Clear gradients of all parameters."""
        self.base_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict[str, Any]:
        """The base optimiser's state (moments and param groups, incl. rho0/kappa/adaptive) plus CASM counters."""
        state = self.base_optimizer.state_dict()
        state["casm"] = {"skipped_steps": self.skipped_steps}
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""
        state_dict = dict(state_dict)
        casm = state_dict.pop("casm", {})
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups
        self.state = self.base_optimizer.state
        self.skipped_steps = int(casm.get("skipped_steps", 0))
