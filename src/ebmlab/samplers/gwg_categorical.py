"""Gibbs-with-gradients for categorical data (Grathwohl, Swersky, Hashemi, Duvenaud & Maddison
2021, "Oops I took a gradient", §4 and appendix on categorical data).

States ``x ∈ {0..K-1}^D`` (any event shape, flattened to D sites). The energy is differentiated
with respect to the **one-hot** encoding ``o(x) ∈ {0,1}^{D×K}``, ``o_{i,k} = 1[x_i = k]``, never
with respect to the integer codes (an ordinal expansion ``∂E/∂x_i · (k - x_i)`` imposes an order
on the states that a categorical variable does not have). An energy exposes itself by
implementing

    one_hot_energy(o) -> (C,),     o of shape (C, *event_shape, K),

equal to ``E(x)`` on exact one-hot inputs and differentiable in ``o`` (e.g. the Potts model:
``-J Σ_{<ij>} ⟨o_i, o_j⟩ - Σ_i ⟨h, o_i⟩``). Changing site i from ``x_i`` to k moves ``o_i`` from
``e_{x_i}`` to ``e_k``, so the first-order estimate of the energy change is

    Δ̃_{i,k}(x) = ∂E/∂o_{i,k} - ∂E/∂o_{i,x_i}       (exact when E is linear in each o_i, as Potts is).

The proposal draws one (site, value) pair with ``k ≠ x_i`` from

    q(i, k | x) = softmax_{(i,k): k ≠ x_i}(-Δ̃_{i,k}(x) / 2)

and sets ``x'_i = k``; the reverse move sets site i back to ``x_i``, so

    log α = E(x) - E(x') + log q(i, x_i | x') - log q(i, k | x),

with ``q(· | x')`` from the one-hot gradient at the proposal. The chain state caches the one-hot
gradient: for categorical energies ``state.grad`` has shape ``(C, *event_shape, K)``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ebmlab.energy.base import EnergyFn, check_energy_output
from ebmlab.samplers.base import ChainState, select


def one_hot_value_and_grad(energy: EnergyFn, x: torch.Tensor, num_states: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E(x), ∂E/∂o)`` from the energy's ``one_hot_energy``; shapes ``(C,)`` and ``(C, *event, K)``.

    Raises ``ValueError`` naming the energy when it has no ``one_hot_energy`` or its output does
    not depend on the one-hot input. Both outputs are detached.
    """
    own = getattr(energy, "one_hot_energy", None)
    name = type(energy).__name__
    if not callable(own):
        raise ValueError(f"GibbsWithGradients: the categorical energy {name} has no one_hot_energy(o) method; "
                         f"GWG differentiates E with respect to the one-hot states o of shape (C, *event_shape, K) "
                         f"(see ebmlab.samplers.gwg_categorical), or use gibbs / metropolis")
    with torch.enable_grad():
        onehot = F.one_hot(x.detach().round().long(), num_states).to(x.dtype).requires_grad_(True)
        e = check_energy_output(own(onehot), x, f"{name}.one_hot_energy")
        if not e.requires_grad:
            raise ValueError(f"GibbsWithGradients: {name}.one_hot_energy does not depend on its one-hot input "
                             f"(is it computed under torch.no_grad() or from integer codes?)")
        (g,) = torch.autograd.grad(e.sum(), onehot)
    return e.detach(), g.detach()


def change_log_probs(x: torch.Tensor, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``log q(i, k | x)`` over the flattened ``(site, value)`` pairs, shape ``(C, D·K)``, and the
    mask ``(C, D·K)`` of the excluded pairs ``k = x_i`` (their log-probability is ``-inf``).

    ``x`` is ``(C, *event)``, ``grad`` the one-hot gradient ``(C, *event, K)``; pair ``(i, k)`` sits
    at column ``i·K + k``.
    """
    num_states = grad.shape[-1]
    g = grad.reshape(x.shape[0], -1, num_states)                       # (C, D, K)
    current = x.reshape(x.shape[0], -1).round().long()                 # (C, D)
    delta = g - g.gather(2, current[..., None])                        # Δ̃_{i,k}, zero at k = x_i
    is_current = F.one_hot(current, num_states).bool()
    logits = (-0.5 * delta).masked_fill(is_current, -torch.inf).flatten(1)
    return torch.log_softmax(logits, dim=1), is_current.flatten(1)


def propose(energy: EnergyFn, state: ChainState, generator: torch.Generator | None, num_states: int
            ) -> tuple[ChainState, torch.Tensor, torch.Tensor]:
    """Draw ``(i, k) ~ q(· | x)`` and set ``x_i = k``.

    Returns ``(proposal, log_q_forward, log_q_reverse)``: the proposed state with its energy and
    one-hot gradient, ``log q(i, k | x)`` and ``log q(i, x_i | x')``, each of shape ``(C,)``.
    A chain whose proposal logits are not finite proposes uniformly (and is then rejected by the
    NaN/inf rule of the Metropolis test).
    """
    log_q, excluded = change_log_probs(state.x, state.grad)
    finite = (torch.isfinite(log_q) | excluded).all(dim=1, keepdim=True)
    uniform = (~excluded).to(log_q.dtype)
    probs = torch.where(finite, log_q.exp(), uniform)
    pair = torch.multinomial(probs, 1, generator=generator)[:, 0]
    site, value = pair // num_states, pair % num_states
    flat = state.x.reshape(state.x.shape[0], -1)
    old = flat.gather(1, site[:, None])[:, 0]
    x_new = flat.scatter(1, site[:, None], value[:, None].to(flat.dtype)).view_as(state.x)
    e_new, g_new = one_hot_value_and_grad(energy, x_new, num_states)
    log_q_new, _ = change_log_probs(x_new, g_new)
    reverse = site * num_states + old.round().long()
    log_q_reverse = log_q_new.gather(1, reverse[:, None])[:, 0]
    log_q_forward = log_q.gather(1, pair[:, None])[:, 0]
    return ChainState(x_new, e_new, g_new), log_q_forward, log_q_reverse


def select_state(accepted: torch.Tensor, proposal: ChainState, current: ChainState) -> ChainState:
    """The state after the accept/reject, ``(C,)`` mask; the one-hot gradient has one more dim
    than ``x``, so each field is selected by :func:`ebmlab.samplers.base.select`."""
    return ChainState(x=select(accepted, proposal.x, current.x),
                      energy=torch.where(accepted, proposal.energy, current.energy),
                      grad=select(accepted, proposal.grad, current.grad), step=current.step + 1)


__all__ = ["change_log_probs", "one_hot_value_and_grad", "propose", "select_state"]
