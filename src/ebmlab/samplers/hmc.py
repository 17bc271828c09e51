"""Hamiltonian Monte Carlo with a leapfrog integrator (Duane et al. 1987; Neal 2011).

Auxiliary momentum ``p ~ N(0, M)``; Hamiltonian ``H(x, p) = E(x) + ½ pᵀM⁻¹p`` with the
inverse mass matrix ``M⁻¹`` of a :class:`~ebmlab.samplers.metric.Metric` (identity by
default). The leapfrog integrator is volume-preserving and time-reversible, so a Metropolis
test on ``log α = H(x, p) - H(x', p')`` makes the kernel exact. ``L`` leapfrog steps cost L
gradient evaluations: the gradient at the current state is cached.

Shapes: ``x``, ``p``, ``∇E`` are ``(C, *event)``; energies and per-chain step sizes ``(C,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, value_and_grad
from ebmlab.samplers.adaptation import TensorStepSize, check_step_size, per_chain, step_size_value
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, gaussian_like, metropolis_accept, select_state
from ebmlab.samplers.metric import Metric


def leapfrog(energy: EnergyFn, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step_size: float | torch.Tensor,
             num_steps: int | torch.Tensor, metric: Metric | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_steps`` leapfrog steps of size ε for ``H = E(x) + ½ pᵀM⁻¹p``.

    ``p ← p - ε/2 ∇E(x);  x ← x + ε M⁻¹p;  p ← p - ε/2 ∇E(x)`` (half-steps of adjacent steps
    merged). ``grad`` is ``∇E(x)`` at the start; ``step_size`` a float or a ``(C,)`` tensor
    (one per chain); ``num_steps`` an int or a ``(C,)`` integer tensor (chain c stops after
    its own ``L_c`` steps; the batch runs ``max L_c``); ``metric=None`` is the identity
    (``M⁻¹p = p``, no extra work). Returns ``(x, p, E(x), ∇E(x))`` at the end; shapes
    ``(C, *event)`` and ``(C,)``.
    """
    if isinstance(num_steps, torch.Tensor):
        return _leapfrog_per_chain(energy, x, p, grad, step_size, num_steps, metric)
    if isinstance(step_size, torch.Tensor):
        eps = per_chain(step_size, x)

        def kick(p, g, scale):
            return torch.addcmul(p, g, eps, value=-scale)

        def drift(x, p):
            return torch.addcmul(x, p if metric is None else metric.velocity(p), eps)
    else:
        def kick(p, g, scale):
            return torch.add(p, g, alpha=-scale * step_size)

        def drift(x, p):
            return torch.add(x, p if metric is None else metric.velocity(p), alpha=step_size)

    p = kick(p, grad, 0.5)
    for i in range(num_steps):
        x = drift(x, p)
        e, grad = value_and_grad(energy, x)
        p = kick(p, grad, 1.0 if i < num_steps - 1 else 0.5)
    return x, p, e, grad


def _leapfrog_per_chain(energy, x, p, grad, step_size, num_steps: torch.Tensor, metric):
    """Leapfrog with ``L_c`` steps for chain c: every chain moves for ``max L_c`` steps with its
    kicks scaled by 1 (inside its trajectory), ½ (its last step) or 0 (done), so a finished
    chain stays put (its energy and gradient are re-evaluated at the same point)."""
    eps = per_chain(step_size, x) if isinstance(step_size, torch.Tensor) else step_size
    counts = num_steps.to(x.device)
    view = (-1,) + (1,) * (x.dim() - 1)
    p = p - (0.5 * eps) * grad
    e = None
    for i in range(int(counts.max())):
        moving = (counts > i).to(x.dtype).view(view)  # (C, 1, ...): tiny next to x
        x = torch.addcmul(x, p if metric is None else metric.velocity(p), eps * moving)
        e, grad = value_and_grad(energy, x)
        kick = torch.where(counts > i + 1, 1.0, torch.where(counts == i + 1, 0.5, 0.0)).to(x.dtype).view(view)
        p = torch.addcmul(p, grad, eps * kick, value=-1.0)
    return x, p, e, grad


@dataclass(frozen=True)
class HMC(TensorStepSize, Kernel):
    """HMC with ``num_leapfrog`` leapfrog steps of size ``step_size`` and metric ``metric``.

    Args:
        step_size: ε, a float or a ``(C,)`` tensor (one per chain, as per-chain adaptation
            tunes it); it broadcasts over the event dims.
        num_leapfrog: L.
        path_jitter: j ∈ [0, 1): each chain draws its number of leapfrog steps uniformly from
            ``{⌈(1-j)L⌉, ..., L}`` for the transition (Neal 2011, §5.4.2, "randomly choose ε or
            L from some fairly small interval"); the cost per transition stays L gradients.
            The draw does not depend on the state, so the kernel stays exact. A fixed path
            ``εL`` leaves HMC resonant: on a target whose directions share one frequency (a
            standard Gaussian, or a Brownian-motion / random-walk posterior, whose covariance
            has a whole band of near-equal eigenvalues) a path near a multiple of half the
            period returns every trajectory close to where it began — the chains barely move
            while the acceptance reads high — and the acceptance is periodic, not monotone, in
            ε (measured, 100-D N(0, I), L = 5: 0.97 at ε = 0.6, 0.22 at 1.0, 0.74 at 1.2), so
            dual averaging oscillates and lands off target. Default 0.2.
        jitter: j ∈ [0, 1): each chain also draws its step size uniformly from ``ε·[1-j, 1+j]``
            (Stan's ``stepsize_jitter``). Off by default: near the integrator's stability limit
            (where a 0.65 target puts ε on low-dimensional targets) the longer draws diverge.
        metric: the inverse mass matrix (:class:`Metric`, or a ``(D,)``/``(D, D)`` tensor);
            ``None`` is the identity. Momentum ``p ~ N(0, M)``, velocity ``M⁻¹p``.
        max_energy_error: a transition whose energy error ``H(x', p') - H(x, p)`` exceeds this
            (or is NaN) counts as a divergence, as in Stan and BlackJAX (1000).
    """

    step_size: float | torch.Tensor = 0.1
    num_leapfrog: int = 10
    jitter: float = 0.0
    path_jitter: float = 0.2
    metric: Metric | None = None
    max_energy_error: float = 1000.0
    name = "hmc"
    uses_grad = True
    adaptive = True
    default_target_accept = 0.65

    def __post_init__(self) -> None:
        if isinstance(self.metric, torch.Tensor):
            object.__setattr__(self, "metric", Metric(self.metric))
        if not isinstance(self.step_size, torch.Tensor):
            check_step_size("HMC", self.step_size)
        object.__setattr__(self, "step_size", step_size_value(self.step_size))
        super().__post_init__()

    def validate(self) -> None:
        check_step_size("HMC", self.step_size)
        if int(self.num_leapfrog) < 1:
            raise ValueError(f"HMC: num_leapfrog must be >= 1, got {self.num_leapfrog}")
        for option in ("jitter", "path_jitter"):
            if not 0.0 <= getattr(self, option) < 1.0:
                raise ValueError(f"HMC: {option} must be in [0, 1), got {getattr(self, option)}")
        if not self.max_energy_error > 0:
            raise ValueError(f"HMC: max_energy_error must be > 0, got {self.max_energy_error}")
        if self.metric is not None and not isinstance(self.metric, Metric):
            raise ValueError(f"HMC: metric must be a Metric, a tensor or None, got {type(self.metric).__name__}")

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        state = super().init(energy, x)
        self.check_chains(state.x)
        return state

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        metric = self.metric
        p0 = gaussian_like(state.x, generator) if metric is None else metric.sample_momentum(state.x, generator)
        step_size = self.step_size
        if self.jitter > 0:
            u = torch.rand(state.x.shape[0], generator=generator, dtype=state.x.dtype, device=state.x.device)
            scale = step_size.to(u) if isinstance(step_size, torch.Tensor) else step_size
            step_size = u.mul_(2.0 * self.jitter).add_(1.0 - self.jitter).mul_(scale)
        num_steps = int(self.num_leapfrog)
        fewest = math.ceil((1.0 - self.path_jitter) * num_steps - 1e-9)
        if fewest < num_steps:
            num_steps = torch.randint(fewest, num_steps + 1, (state.x.shape[0],), generator=generator,
                                      device=state.x.device)
        if metric is None:
            x_new, p_new, e_new, g_new = leapfrog(energy, state.x, p0, state.grad, step_size, num_steps)
            velocity_sum = p0 + p_new
        else:
            x_new, p_new, e_new, g_new = leapfrog(energy, state.x, p0, state.grad, step_size, num_steps, metric)
            velocity_sum = metric.velocity(p0 + p_new)
        # H(x, p0) - H(x', p') = E(x) - E(x') + ½ (p0 - p')ᵀ M⁻¹ (p0 + p')
        log_alpha = torch.sub(state.energy, e_new).add_(
            torch.linalg.vecdot((p0 - p_new).flatten(1), velocity_sum.flatten(1)), alpha=0.5)
        accepted, accept_prob, diverged = metropolis_accept(log_alpha, generator)
        diverged = diverged | (log_alpha < -self.max_energy_error)
        return select_state(accepted, ChainState(x_new, e_new, g_new), state), StepInfo(accept_prob, accepted, diverged)
