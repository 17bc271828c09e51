"""Gibbs-with-gradients (Grathwohl, Swersky, Hashemi, Duvenaud & Maddison 2021) for binary and
categorical data; the categorical proposal, over (site, value) pairs from the gradient with
respect to one-hot states, is in :mod:`ebmlab.samplers.gwg_categorical`. Binary data:

States ``x ∈ {0,1}^D`` (any event shape, flattened to D sites). Flipping site i changes the
energy by ``ΔE_i(x) = E(x with x_i flipped) - E(x)``; its first-order Taylor estimate from one
gradient evaluation is

    ΔẼ_i(x) = (1 - 2x_i) · ∂E/∂x_i(x)       (x_i: 0→1 moves by +1, 1→0 by -1).

The proposal picks one site from the locally balanced distribution

    q(i | x) = softmax_i(-ΔẼ_i(x) / 2)

and flips it, ``x' = flip_i(x)``. The reverse move flips the same site back, so the
Metropolis–Hastings correction is

    log α = E(x) - E(x') + log q(i | x') - log q(i | x),

with ``q(i | x')`` computed from the gradient at the proposal. The kernel leaves p exactly
invariant; one step costs one energy-and-gradient evaluation (at x'; the current state's is
cached in :class:`~ebmlab.samplers.base.ChainState`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, support_of, value_and_grad
from ebmlab.samplers import gwg_categorical
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, check_start, metropolis_accept, select_state


def flip_log_probs(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """``log q(i | x) = log_softmax_i(-(1 - 2x_i) ∂E/∂x_i / 2)``, shape ``(C, D)``.

    ``x`` and ``grad`` have shape ``(C, *event)``; sites are flattened in row-major order.
    """
    flat_x, flat_g = x.flatten(1), grad.flatten(1)
    return torch.log_softmax(-0.5 * (1.0 - 2.0 * flat_x) * flat_g, dim=1)


def flip_sites(x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
    """A copy of binary ``x`` (C, *event) with flat site ``site[c]`` of chain c flipped."""
    flat = x.flatten(1).clone()
    current = flat.gather(1, site[:, None])
    flat.scatter_(1, site[:, None], 1.0 - current)
    return flat.view_as(x)


@dataclass(frozen=True)
class GibbsWithGradients(Kernel):
    """Gibbs-with-gradients: a gradient-informed single-site change with an MH correction.

    No hyperparameters. ``state.x`` is ``(C, *event)`` with values in {0, 1} (binary energies:
    a flip, ``state.grad`` = ∇ₓE of shape ``x.shape``) or in {0..K-1} (categorical energies,
    which must implement ``one_hot_energy(o)``: a (site, value) change, ``state.grad`` = ∂E/∂o of
    shape ``(C, *event, K)``; see :mod:`ebmlab.samplers.gwg_categorical`); info ``(C,)``.
    """

    name = "gwg"
    uses_grad = True
    supports = ("binary", "categorical")  # init checks x ∈ {0..K-1}

    def with_step_size(self, step_size: float) -> "GibbsWithGradients":
        return self

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        """As :meth:`Kernel.init`; for a categorical energy the cached gradient is ∂E/∂o."""
        if support_of(energy).kind != "categorical":
            return super().init(energy, x)
        support = check_start(self, energy, x)
        e, g = gwg_categorical.one_hot_value_and_grad(energy, x.detach(), support.num_states)
        return ChainState(x=x.detach(), energy=e, grad=g)

    def propose(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None
                ) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
        """Draw ``i ~ q(· | x)`` and flip it.

        Returns ``(proposal, log_q_forward, log_q_reverse)``: the proposed state with its energy
        and gradient, ``log q(i | x)`` and ``log q(i | x')``, each of shape ``(C,)``. For a
        categorical energy: :func:`ebmlab.samplers.gwg_categorical.propose` (a site and a value).
        """
        support = support_of(energy)
        if support.kind == "categorical":
            return gwg_categorical.propose(energy, state, generator, support.num_states)
        log_q = flip_log_probs(state.x, state.grad)
        finite = torch.isfinite(log_q).all(dim=1, keepdim=True)
        probs = torch.where(finite, log_q.exp(), torch.ones_like(log_q))  # non-finite rows: uniform
        site = torch.multinomial(probs, 1, generator=generator)[:, 0]
        x_new = flip_sites(state.x, site)
        e_new, g_new = value_and_grad(energy, x_new)
        log_q_reverse = flip_log_probs(x_new, g_new).gather(1, site[:, None])[:, 0]
        log_q_forward = log_q.gather(1, site[:, None])[:, 0]
        return ChainState(x_new, e_new, g_new), log_q_forward, log_q_reverse

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        proposal, log_q_forward, log_q_reverse = self.propose(energy, state, generator)
        log_alpha = state.energy - proposal.energy + log_q_reverse - log_q_forward
        accepted, accept_prob, diverged = metropolis_accept(log_alpha, generator)
        categorical = proposal.grad.dim() > proposal.x.dim()  # the one-hot gradient (C, *event, K)
        select_fn = gwg_categorical.select_state if categorical else select_state
        return select_fn(accepted, proposal, state), StepInfo(accept_prob, accepted, diverged)


__all__ = ["GibbsWithGradients", "flip_log_probs", "flip_sites"]
