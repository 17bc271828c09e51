"""Ratio matching for binary data (Hyvärinen 2007, "Some extensions of score matching", §3).

For ``x ∈ {0,1}^D`` let ``x̄_i`` be x with bit i flipped, ``r_θ(x, i) = p_θ(x)/p_θ(x̄_i)
= exp(ΔE_i(x))`` with ``ΔE_i = E(x̄_i) - E(x)`` (Z cancels), and ``g(u) = 1/(1+u)``, so
``g(r_θ) = σ(-ΔE_i)``. Hyvärinen's objective matches the ratios of the model to those of the
data law p, in both directions:

    J(θ) = Σ_x p(x) Σ_i [ (g(r_p(x,i)) - g(r_θ(x,i)))² + (g(r_p(x̄_i,i)) - g(r_θ(x̄_i,i)))² ].

It needs only data, because of the identity ``g(u) + g(1/u) = 1`` (so ``g(r(x̄_i,i)) = 1 - g(r(x,i))``).
Write ``a = g(r_p(x,i))``, ``t = g(r_θ(x,i))``; each bracket is ``(a-t)² + (t-a)² = 2t² - 4at + 2a²``.
The cross term does not depend on θ: pairing x with x̄_i,

    Σ_x p(x) a t = Σ_{pairs} p(x)p(x̄_i)/(p(x)+p(x̄_i)) · [t(x,i) + t(x̄_i,i)] = Σ_{pairs} p(x)p(x̄_i)/(p(x)+p(x̄_i)),

since ``a = p(x̄_i)/(p(x)+p(x̄_i))`` and ``t(x,i) + t(x̄_i,i) = 1``. Hence
``J(θ) = 2 E_p Σ_i g(r_θ(x,i))² + const`` and the loss minimised here is its sample version

    J_RM(θ) = (1/B) Σ_b Σ_i σ(-ΔE_i(x_b))²,

a consistent estimator when the model family holds p (Hyvärinen 2007, Theorem 2). The
``ΔE_i`` come from :func:`~ebmlab.objectives.pseudo_likelihood.site_conditional_energies`
(the energy's local flip formula when it carries gradients, else D + 1 energy evaluations per
example, chunked). Shapes: ``batch (B, *event_shape)`` in {0, 1}; D = prod(event_shape).
"""

from __future__ import annotations

import math

import torch

from ebmlab.energy.base import EnergyFn, support_of
from ebmlab.objectives.base import Metrics, Objective
from ebmlab.objectives.pseudo_likelihood import DEFAULT_MAX_STATES, check_discrete_data, site_conditional_energies, sites_for


class RatioMatching(Objective):
    """Ratio matching ``(1/B) Σ_b Σ_i σ(-ΔE_i(x_b))²`` for binary energies (Hyvärinen 2007).

    Args:
        max_states: flipped states per energy call (bounds memory; sites are chunked).
    """

    name = "ratio_matching"
    supports = ("binary",)

    def __init__(self, max_states: int = DEFAULT_MAX_STATES):
        if int(max_states) < 1:
            raise ValueError(f"{self.name}: max_states must be >= 1, got {max_states}")
        self.max_states = int(max_states)

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        kind = support_of(energy).kind
        if kind == "categorical" or support == "categorical":
            raise ValueError(f"{self.name}: ratio matching flips bits and needs binary data, got a categorical energy "
                             f"{type(energy).__name__}; use 'pl' for categorical data")
        if support != "real" or kind == "binary":
            check_discrete_data(self.name, data, 2)

    def ratio_terms(self, delta: torch.Tensor) -> torch.Tensor:
        """``g(p(x)/p(x̄_i))² = σ(-ΔE_i)²``, elementwise on ``ΔE`` of shape ``(B, D)``."""
        return torch.sigmoid(-delta).square()

    def per_example_loss(self, energy: EnergyFn, batch: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """``Σ_i σ(-ΔE_i(x_b))²`` per example, shape ``(B,)``."""
        relative, _ = site_conditional_energies(energy, batch, sites_for(batch, "all", None), 2, self.max_states)
        return self.ratio_terms(relative[..., 1]).sum(1)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        loss = self.per_example_loss(energy, batch).mean()
        value = float(loss.detach())
        return loss, {"loss": value, "ratio_term": value / math.prod(batch.shape[1:])}


__all__ = ["RatioMatching"]
