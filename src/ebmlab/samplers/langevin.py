"""Langevin samplers: unadjusted (ULA) and Metropolis-adjusted (MALA).

Both move along the score with Gaussian noise,
``x' = x + ε ∇ₓ log p(x) + √(2ε) ξ = x - ε ∇ₓE(x) + √(2ε) ξ``,  ``ξ ~ N(0, I)``,
the Euler–Maruyama discretisation of the Langevin diffusion ``dx = ∇ log p dt + √2 dW``.

* ULA accepts every proposal, so its stationary law is biased by O(ε).
* MALA (Roberts & Tweedie 1996) corrects the asymmetric proposal
  ``q(x'|x) = N(x'; x - ε∇E(x), 2εI)`` with Metropolis–Hastings:
  ``log α = E(x) - E(x') + log q(x|x') - log q(x'|x)``, and leaves p exactly invariant.

Each step costs one forward+backward of the energy at the proposal; the current state's
energy and gradient are cached in :class:`ChainState`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, value_and_grad
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, gaussian_like, metropolis_accept, select_state


def langevin_proposal(state: ChainState, step_size: float, noise: torch.Tensor, noise_scale: float = 1.0) -> torch.Tensor:
    """``x - ε ∇E(x) + s √(2ε) ξ`` for noise ``ξ`` (shape of x) and noise scale ``s``."""
    return torch.add(state.x, state.grad, alpha=-step_size).add_(noise, alpha=noise_scale * math.sqrt(2.0 * step_size))


@dataclass(frozen=True)
class ULA(Kernel):
    """Unadjusted Langevin: ``x ← x - ε∇E(x) + s√(2ε) ξ``; no accept/reject.

    ``noise_scale`` s = 1 is the Langevin diffusion; s < 1 is the tempered noise that
    contrastive-divergence practice uses (Du & Mordatch 2019) and no longer targets p.
    """

    step_size: float = 0.01
    noise_scale: float = 1.0
    name = "ula"
    uses_grad = True

    def validate(self) -> None:
        super().validate()
        if not self.noise_scale >= 0:
            raise ValueError(f"ULA: noise_scale must be >= 0, got {self.noise_scale}")

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        x_new = langevin_proposal(state, self.step_size, gaussian_like(state.x, generator), self.noise_scale)
        e_new, g_new = value_and_grad(energy, x_new)
        diverged = torch.isfinite(e_new).logical_not_()
        accepted = torch.ones_like(diverged)
        return ChainState(x_new, e_new, g_new, state.step + 1), StepInfo(torch.ones_like(e_new), accepted, diverged)


@dataclass(frozen=True)
class MALA(Kernel):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996).

    ``log α = E(x) - E(x') + [‖x'-x+ε∇E(x)‖² - ‖x-x'+ε∇E(x')‖²] / (4ε)``.
    """

    step_size: float = 0.01
    name = "mala"
    uses_grad = True
    adaptive = True
    default_target_accept = 0.574

    def proposal_log_ratio(self, current: ChainState, proposal: ChainState) -> torch.Tensor:
        """``log q(x|x') - log q(x'|x)`` for the Langevin proposal, shape ``(C,)``.

        ``[‖a‖² - ‖b‖²] / (4ε)`` with ``a = x'-x+ε∇E(x)``, ``b = x-x'+ε∇E(x')``, evaluated as
        ``(a+b)·(a-b) / (4ε) = ¼ (∇E(x)+∇E(x'))·(2(x'-x) + ε(∇E(x)-∇E(x')))``: fewer passes
        over the data, and no cancellation between two nearly equal norms.
        """
        eps = self.step_size
        grad_sum = (current.grad + proposal.grad).flatten(1)
        other = torch.sub(proposal.x, current.x).add_(torch.sub(current.grad, proposal.grad), alpha=0.5 * eps)
        return torch.linalg.vecdot(grad_sum, other.flatten(1)).mul_(0.5)

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        x_new = langevin_proposal(state, self.step_size, gaussian_like(state.x, generator))
        e_new, g_new = value_and_grad(energy, x_new)
        proposal = ChainState(x_new, e_new, g_new)
        log_alpha = state.energy - e_new + self.proposal_log_ratio(state, proposal)
        accepted, accept_prob, diverged = metropolis_accept(log_alpha, generator)
        return select_state(accepted, proposal, state), StepInfo(accept_prob, accepted, diverged)
