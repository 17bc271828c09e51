"""Random-walk Metropolis–Hastings with a Gaussian proposal (Metropolis et al. 1953).

Proposal ``x' = x + σ ξ``, ``ξ ~ N(0, I)``; the proposal is symmetric, so
``log α = log p(x') - log p(x) = E(x) - E(x')`` and ``x'`` is accepted with prob ``min(1, α)``.
One energy evaluation per step, no gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, energy as eval_energy
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, gaussian_like, metropolis_accept, select_state


@dataclass(frozen=True)
class RandomWalkMetropolis(Kernel):
    """Gaussian random-walk Metropolis–Hastings; ``step_size`` is the proposal std σ."""

    step_size: float = 0.5
    name = "rwmh"
    adaptive = True
    default_target_accept = 0.234

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        x_new = torch.add(state.x, gaussian_like(state.x, generator), alpha=self.step_size)
        with torch.no_grad():
            e_new = eval_energy(energy, x_new).detach()
        accepted, accept_prob, diverged = metropolis_accept(state.energy - e_new, generator)
        new = select_state(accepted, ChainState(x_new, e_new), state)
        return new, StepInfo(accept_prob, accepted, diverged)
