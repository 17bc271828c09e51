"""Pseudo-likelihood for binary and categorical energies (Besag 1975, "Statistical analysis of
non-lattice data").

For states ``x ∈ {0..K-1}^D`` (binary: K = 2) the full conditionals need no partition function:

    log p(x_i | x_{-i}) = -E(x) - logsumexp_k -E(x^{i←k}),

where ``x^{i←k}`` is ``x`` with site i set to k. For binary data this is
``log σ(ΔE_i) = -softplus(-ΔE_i)`` with ``ΔE_i = E(x with x_i flipped) - E(x)``. The loss is the
negative pseudo-log-likelihood per example,

    J(θ) = -(1/B) Σ_b Σ_i log p_θ(x_{b,i} | x_{b,-i}),

a consistent M-estimator of θ when the model family holds the data law (Besag 1975).

Two estimates of J (``sites=``):

* ``"all"`` (default): the exact sum over all D sites — D + 1 energy evaluations per example for
  binary data, D·K for categorical data (the energy's own local formula, when it has one, is used
  instead: ``delta_energy_flip(x, site)`` / ``site_energies(x, site)``, e.g. the Ising model's).
  Sites are processed in chunks so that one energy call holds at most ``max_states`` states.
* ``"random"``: one uniformly drawn site ``i_b`` per example, ``-D·log p(x_{b,i_b} | x_{b,-i_b})``
  — an unbiased, noisier estimate of the same J at 1/D of the cost; this is what scikit-learn's
  ``BernoulliRBM.score_samples`` reports (negated, for one random site per example).

A local formula computed under ``torch.no_grad()`` (``BernoulliRBM``'s, written for samplers)
carries no gradient to the parameters; while gradients are needed it is then bypassed for the
energy itself. An energy declaring no discrete support is scored as binary (the flip formula at
whatever values ``x`` holds; ``ebmlab.fit`` refuses that pairing through ``supports``).
Shapes: ``batch (B, *event_shape)`` holding integers in a float tensor; D = prod(event_shape).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn, check_energy_output, support_of
from ebmlab.objectives.base import Metrics, Objective

#: states held by one energy call when the chunk size is chosen automatically
DEFAULT_MAX_STATES = 2**16
SITE_CHOICES = ("all", "random")


def _needs_parameter_grad(energy: EnergyFn) -> bool:
    return (torch.is_grad_enabled() and isinstance(energy, nn.Module)
            and any(p.requires_grad for p in energy.parameters()))


def _local(energy: EnergyFn, name: str, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor | None:
    """The energy's own local formula ``name(x, site)``, or ``None`` when it has none or its
    result would cut the parameters' gradient (computed under ``no_grad``)."""
    own = getattr(energy, name, None)
    if not callable(own):
        return None
    value = own(x, site)
    if _needs_parameter_grad(energy) and not value.requires_grad:
        return None
    return value


def _set_sites(x_flat: torch.Tensor, site: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """Copy of ``x_flat`` ``(C, D)`` with entry ``site[c]`` set to ``value[c]``."""
    return x_flat.scatter(1, site[:, None], value[:, None].to(x_flat.dtype))


def site_conditional_energies(energy: EnergyFn, x: torch.Tensor, sites: torch.Tensor, num_states: int,
                              max_states: int = DEFAULT_MAX_STATES) -> tuple[torch.Tensor, torch.Tensor]:
    """Energy changes ``E(x^{i←k}) - E(x)`` at the given sites, and the index of the current value.

    Args:
        x: states ``(B, *event)``.
        sites: flat site indices ``(B, S)`` (long): the S sites scored in each example.
        num_states: K. For K = 2 the two entries are ``[current, flipped]`` (``[0, ΔE_i]``), so
            the current index is 0 and the values of x are never used as indices; for K > 2 the
            entries follow the values ``0..K-1`` and the current index is ``x_i``.
        max_states: at most this many modified states per energy call (sites are chunked).

    Returns:
        ``(relative (B, S, K'), current (B, S))`` with ``K' = K``; ``relative[b, s, current] = 0``.
    """
    b, s = sites.shape
    flat = x.reshape(b, -1)
    binary = num_states == 2
    per_site = b * (1 if binary else num_states)
    chunk = max(1, min(s, max_states // max(per_site, 1)))
    e_x = check_energy_output(energy(x), x, "pseudo-likelihood: energy")
    pieces = []
    for start in range(0, s, chunk):
        cols = sites[:, start:start + chunk]                        # (B, c)
        c = cols.shape[1]
        rep = flat.repeat(c, 1)                                     # (c·B, D), chunk-major
        site = cols.T.reshape(-1)                                   # (c·B,)
        shaped = rep.view(c * b, *x.shape[1:])
        if binary:
            delta = _local(energy, "delta_energy_flip", shaped, site)
            if delta is None:
                flipped = _set_sites(rep, site, 1.0 - rep.gather(1, site[:, None])[:, 0])
                e_new = check_energy_output(energy(flipped.view_as(shaped)), shaped, "pseudo-likelihood: energy")
                delta = e_new - e_x.repeat(c)
            rel = torch.stack([torch.zeros_like(delta), delta], dim=-1)           # (c·B, 2)
        else:
            rel = _local(energy, "site_energies", shaped, site)
            if rel is None:
                variants = torch.cat([_set_sites(rep, site, torch.full_like(site, k, dtype=rep.dtype))
                                      for k in range(num_states)])                # (K·c·B, D)
                e_all = check_energy_output(energy(variants.view(-1, *x.shape[1:])), variants,
                                            "pseudo-likelihood: energy")
                rel = e_all.view(num_states, c * b).T
            rel = rel - e_x.repeat(c)[:, None]
        pieces.append(rel.view(c, b, -1).transpose(0, 1))                         # (B, c, K)
    relative = torch.cat(pieces, dim=1)
    if binary:
        current = torch.zeros((b, s), dtype=torch.long, device=x.device)
    else:
        current = flat.gather(1, sites).round().long()
        # the current value's own entry is E(x) - E(x): make it exactly zero
        relative = relative.scatter(2, current[..., None], torch.zeros_like(relative[..., :1]))
    return relative, current


def sites_for(x: torch.Tensor, sites: str, generator: torch.Generator | None) -> torch.Tensor:
    """Flat site indices ``(B, S)``: every site (S = D) or one uniform draw per example (S = 1)."""
    b, d = x.shape[0], math.prod(x.shape[1:])
    if sites == "all":
        return torch.arange(d, device=x.device).expand(b, d)
    return torch.randint(0, d, (b, 1), generator=generator, device=x.device)


def discrete_states(energy: EnergyFn) -> int:
    """K of the energy's support; 2 for an energy that declares no discrete support."""
    support = support_of(energy)
    return support.num_states if support.discrete else 2


def check_discrete_data(owner: str, data: torch.Tensor, num_states: int) -> None:
    """``ValueError`` unless ``data`` holds integers in ``{0..K-1}`` (checked once, in setup)."""
    bad = (data != data.round()) | (data < 0) | (data > num_states - 1)
    if bool(bad.any()):
        values = ", ".join(f"{float(v):g}" for v in torch.unique(data[bad])[:5])
        raise ValueError(f"{owner}: data must hold integer states in {{0, ..., {num_states - 1}}} "
                         f"(K = {num_states}), got value(s) {values}")


class PseudoLikelihood(Objective):
    """Negative pseudo-log-likelihood ``-(1/B) Σ_b Σ_i log p(x_{b,i} | x_{b,-i})`` (Besag 1975).

    Args:
        sites: ``"all"`` — the exact sum over every site (default); ``"random"`` — one uniform
            site per example times D, an unbiased estimate (scikit-learn's ``score_samples``).
        max_states: modified states per energy call (bounds memory; sites are chunked).
    """

    name = "pl"
    supports = ("binary", "categorical")

    def __init__(self, sites: str = "all", max_states: int = DEFAULT_MAX_STATES):
        if sites not in SITE_CHOICES:
            raise ValueError(f"{self.name}: sites must be one of {', '.join(map(repr, SITE_CHOICES))}, got {sites!r}")
        if int(max_states) < 1:
            raise ValueError(f"{self.name}: max_states must be >= 1, got {max_states}")
        self.sites, self.max_states = sites, int(max_states)

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real") -> None:
        if support != "real" or support_of(energy).discrete:
            check_discrete_data(self.name, data, discrete_states(energy))

    def log_conditionals(self, relative: torch.Tensor, current: torch.Tensor) -> torch.Tensor:
        """``log p(x_i | x_{-i}) = -ΔE_{current} - logsumexp_k(-ΔE_k)``, ``(B, S, K) -> (B, S)``."""
        own = relative.gather(-1, current[..., None])[..., 0]
        return -own - torch.logsumexp(-relative, dim=-1)

    def per_example_loss(self, energy: EnergyFn, batch: torch.Tensor,
                         generator: torch.Generator | None = None) -> torch.Tensor:
        """``-Σ_i log p(x_{b,i} | x_{b,-i})`` per example, shape ``(B,)`` (random sites: ×D)."""
        sites = sites_for(batch, self.sites, generator)
        relative, current = site_conditional_energies(energy, batch, sites, discrete_states(energy), self.max_states)
        scale = math.prod(batch.shape[1:]) / sites.shape[1]
        return -scale * self.log_conditionals(relative, current).sum(1)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        per_example = self.per_example_loss(energy, batch, generator)
        loss = per_example.mean()
        value = float(loss.detach())
        return loss, {"loss": value, "log_conditional": -value / math.prod(batch.shape[1:])}


__all__ = ["PseudoLikelihood", "check_discrete_data", "discrete_states", "site_conditional_energies", "sites_for"]
