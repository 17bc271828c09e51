"""Single-site samplers for discrete data: change one site (pixel, spin) per step.

States hold integers in a float tensor, ``x ∈ {0..K-1}^D`` with shape ``(C, *event)``
(binary data is K = 2). K is the energy's (:func:`ebmlab.energy.base.support_of`, read at
init and at each step) unless ``num_states`` is given, and a given one must agree with the
energy's. At each step every chain picks a site i — all chains the same ``i = t mod D``
(systematic scan) or each its own uniform draw (random scan) — and:

* :class:`SingleSiteMetropolis` proposes a different value uniformly (a flip when K = 2),
  a symmetric proposal, and accepts with ``min(1, exp(-ΔE))``;
* :class:`Gibbs` draws the site from its exact conditional
  ``p(x_i = k | x_{-i}) = softmax_k(-E(x with x_i = k))`` (for K = 2,
  ``p(x_i = 1 | x_{-i}) = σ(E(x_i=0) - E(x_i=1))``) and always accepts.

Both leave p invariant (Gibbs is the heat-bath special case of Metropolis–Hastings).
Energy changes come from :func:`ebmlab.energy.base.delta_energy_flip` /
:func:`~ebmlab.energy.base.site_energies`, which use an energy's own local formula
(e.g. the Ising model's local field) when it has one.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import (
    EnergyFn, Support, energy as eval_energy, get_site, num_sites, set_site, site_energies, support_of,
)
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, metropolis_accept, select_state


def choose_sites(state: ChainState, scan: str, generator: torch.Generator | None) -> torch.Tensor:
    """Flat site index per chain, shape ``(C,)`` (long)."""
    d = num_sites(state.x)
    if scan == "systematic":
        return torch.full((state.num_chains,), state.step % d, dtype=torch.long, device=state.x.device)
    return torch.randint(0, d, (state.num_chains,), generator=generator, device=state.x.device)


@dataclass(frozen=True)
class _SingleSite(Kernel):
    """``num_states``: K, or ``None`` (default) to take it from the energy at init and step time."""

    num_states: int | None = None
    scan: str = "random"
    supports = ("binary", "categorical")

    def validate(self) -> None:
        if self.num_states is not None and int(self.num_states) < 2:
            raise ValueError(f"{type(self).__name__}: num_states must be an integer >= 2 (or None: the energy's), "
                             f"got {self.num_states}")
        if self.scan not in ("random", "systematic"):
            raise ValueError(f"{type(self).__name__}: scan must be 'random' or 'systematic', got {self.scan!r}")

    def with_step_size(self, step_size: float):
        return self

    def num_states_for(self, energy: EnergyFn, support: Support) -> int | None:
        if self.num_states is not None and support.num_states is not None and int(self.num_states) != support.num_states:
            raise ValueError(f"{type(self).__name__}: num_states={self.num_states} disagrees with the {support.kind} energy "
                             f"{type(energy).__name__}, which has K = {support.num_states} states per site; leave "
                             "num_states=None to take K from the energy")
        return support.num_states if self.num_states is None else int(self.num_states)

    def states(self, energy: EnergyFn) -> int:
        """K for this step: ``num_states``, else the energy's (attribute reads, no evaluation)."""
        return int(self.num_states) if self.num_states is not None else support_of(energy).num_states or 2


@dataclass(frozen=True)
class SingleSiteMetropolis(_SingleSite):
    """Single-site Metropolis: flip (K = 2) or re-draw uniformly among the other K-1 values."""

    name = "metropolis"

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        site = choose_sites(state, self.scan, generator)
        old = get_site(state.x, site)
        k = self.states(energy)
        if k == 2:
            new_value = 1.0 - old
        else:
            shift = torch.randint(1, k, old.shape, generator=generator, device=old.device).to(old.dtype)
            new_value = torch.remainder(old + shift, k)
        x_new = set_site(state.x, site, new_value)
        own_delta = getattr(energy, "delta_energy_flip", None)
        with torch.no_grad():
            if k == 2 and callable(own_delta):
                e_new = state.energy + own_delta(state.x, site)
            else:
                e_new = eval_energy(energy, x_new).detach()
        accepted, accept_prob, diverged = metropolis_accept(state.energy - e_new, generator)
        return select_state(accepted, ChainState(x_new, e_new), state), StepInfo(accept_prob, accepted, diverged)


def _conditional_energies(energy: EnergyFn, state: ChainState, site: torch.Tensor, num_states: int) -> torch.Tensor:
    """``E(x with x_site = k)`` for k = 0..K-1, shape ``(C, K)``.

    For binary data with a local ``delta_energy_flip`` this reuses the cached ``E(x)``:
    the current value keeps ``E(x)`` and the other gets ``E(x) + ΔE``, one local evaluation.
    """
    own_delta = getattr(energy, "delta_energy_flip", None)
    if num_states == 2 and callable(own_delta):
        current = get_site(state.x, site)
        flipped = state.energy + own_delta(state.x, site)
        is_current = current[:, None] == torch.arange(2, device=current.device, dtype=current.dtype)
        return torch.where(is_current, state.energy[:, None], flipped[:, None])
    return site_energies(energy, state.x, site, num_states)


@dataclass(frozen=True)
class Gibbs(_SingleSite):
    """Single-site Gibbs (heat bath): draw the site from its exact conditional."""

    name = "gibbs"

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        site = choose_sites(state, self.scan, generator)
        with torch.no_grad():
            energies = _conditional_energies(energy, state, site, self.states(energy))  # (C, K)
        diverged = ~torch.isfinite(energies).all(dim=1)
        probs = torch.softmax(-energies, dim=1)
        probs = torch.where(diverged[:, None], torch.full_like(probs, 1.0 / probs.shape[1]), probs)
        value = torch.multinomial(probs, 1, generator=generator)[:, 0]
        x_new = set_site(state.x, site, value.to(state.x.dtype))
        e_new = energies.gather(1, value[:, None])[:, 0]
        keep = ~diverged
        new = ChainState(
            x=torch.where(keep.view(-1, *([1] * (state.x.dim() - 1))), x_new, state.x),
            energy=torch.where(keep, e_new, state.energy),
            step=state.step + 1,
        )
        ones = torch.ones_like(state.energy)
        return new, StepInfo(torch.where(keep, ones, 0 * ones), keep, diverged)


__all__ = ["SingleSiteMetropolis", "Gibbs", "choose_sites"]
