"""Hamiltonian Monte Carlo with a leapfrog integrator (Duane et al. 1987; Neal 2011).

Auxiliary momentum ``p ~ N(0, I)``; Hamiltonian ``H(x, p) = E(x) + ½‖p‖²``. The leapfrog
integrator is volume-preserving and time-reversible, so a Metropolis test on
``log α = H(x, p) - H(x', p')`` makes the kernel exact. ``L`` leapfrog steps cost L
gradient evaluations: the gradient at the current state is cached.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, value_and_grad
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, gaussian_like, metropolis_accept, select_state


def leapfrog(energy: EnergyFn, x: torch.Tensor, p: torch.Tensor, grad: torch.Tensor, step_size: float,
             num_steps: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``num_steps`` leapfrog steps of size ε for ``H = E(x) + ½‖p‖²``.

    ``p ← p - ε/2 ∇E(x);  x ← x + ε p;  p ← p - ε/2 ∇E(x)`` (half-steps of adjacent steps
    merged). ``grad`` is ``∇E(x)`` at the start. Returns ``(x, p, E(x), ∇E(x))`` at the end;
    shapes ``(C, *event)`` and ``(C,)``.
    """
    p = torch.add(p, grad, alpha=-0.5 * step_size)
    for i in range(num_steps):
        x = torch.add(x, p, alpha=step_size)
        e, grad = value_and_grad(energy, x)
        p = torch.add(p, grad, alpha=-(step_size if i < num_steps - 1 else 0.5 * step_size))
    return x, p, e, grad


@dataclass(frozen=True)
class HMC(Kernel):
    """HMC with ``num_leapfrog`` leapfrog steps of size ``step_size`` and identity mass.

    ``jitter`` j > 0 draws each transition's step size uniformly from ``ε·[1-j, 1+j]``
    (shared by all chains; Neal 2011, §5.4.2). The draw does not depend on the state, so the
    kernel stays exact, and it breaks the periodic orbits that make a fixed ``(ε, L)`` mix
    badly on near-Gaussian targets (and make acceptance non-monotone in ε).
    """

    step_size: float = 0.1
    num_leapfrog: int = 10
    jitter: float = 0.0
    name = "hmc"
    uses_grad = True
    adaptive = True
    default_target_accept = 0.65

    def validate(self) -> None:
        super().validate()
        if int(self.num_leapfrog) < 1:
            raise ValueError(f"HMC: num_leapfrog must be >= 1, got {self.num_leapfrog}")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError(f"HMC: jitter must be in [0, 1), got {self.jitter}")

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        p0 = gaussian_like(state.x, generator)
        step_size = self.step_size
        if self.jitter > 0:
            u = torch.rand((), generator=generator, device=state.x.device).item()
            step_size = step_size * (1.0 + self.jitter * (2.0 * u - 1.0))
        x_new, p_new, e_new, g_new = leapfrog(energy, state.x, p0, state.grad, step_size, int(self.num_leapfrog))
        # H(x, p0) - H(x', p') = E(x) - E(x') + ½ (p0 - p')·(p0 + p')
        log_alpha = torch.sub(state.energy, e_new).add_(
            torch.linalg.vecdot((p0 - p_new).flatten(1), (p0 + p_new).flatten(1)), alpha=0.5)
        accepted, accept_prob, diverged = metropolis_accept(log_alpha, generator)
        return select_state(accepted, ChainState(x_new, e_new, g_new), state), StepInfo(accept_prob, accepted, diverged)
