"""Pieces of parallel tempering: the tempered energy, the ladder, and re-tempering replicas.

* :class:`TemperedEnergy` — ``E_β(y) = β · E(y / s)`` with a per-row inverse temperature β
  and (for real states) a per-row coordinate scale ``s``; the base kernel of
  :class:`~ebmlab.samplers.tempering.ParallelTempering` runs on it, all replicas in one batch.
* :func:`geometric_ladder` — ``β_k = T_max^{-k/(K-1)}``, k = 0..K-1.
* :func:`ladder_from_rejections` — the ladder that equalises the estimated swap rejection
  rates (Syed, Bouchard-Côté, Deligiannidis & Doucet 2022, "Non-reversible parallel
  tempering: a scalable highly parallel MCMC scheme", JRSS-B 84(2), §5.1).
* :func:`retemper` — move cached tempered energies/gradients to other rows or another ladder.
* :func:`swap_rates`, :func:`round_trip_rate`, :func:`communication_barrier`,
  :func:`replica_positions` — what a run's :class:`~ebmlab.samplers.tempering.TemperedState` says.
"""

from __future__ import annotations

import dataclasses

import torch

from ebmlab.energy.base import (
    Energy, EnergyFn, delta_energy_flip, energy_rows, energy as eval_energy, site_energies, support_of, value_and_grad,
)
from ebmlab.samplers.base import ChainState


def geometric_ladder(num_temperatures: int, max_temperature: float) -> tuple[float, ...]:
    """Inverse temperatures ``β_k = T_max^{-k/(K-1)}``: ``β_0 = 1 > ... > β_{K-1} = 1/T_max``."""
    k = int(num_temperatures)
    betas = [float(max_temperature) ** (-i / (k - 1)) for i in range(k)]
    betas[0], betas[-1] = 1.0, 1.0 / float(max_temperature)
    return tuple(betas)


def _per_row(value: torch.Tensor | None, rows: int, where: str) -> torch.Tensor | None:
    """``value`` (0-d or ``(B,)``) for a batch of ``rows``; ``rows = m·B`` repeats it m times, the
    layout of the library's batched fallbacks (variants concatenated along the batch)."""
    if value is None or value.dim() == 0:
        return value
    batch = value.shape[0]
    if rows == batch:
        return value
    if batch and rows % batch == 0:
        return value.repeat(rows // batch)
    raise ValueError(f"{where}: the tempered energy holds {batch} inverse temperatures (one per replica) "
                     f"but was called on a batch of {rows}")


def _trailing(value: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``value`` ``(B,)`` or 0-d viewed to broadcast against ``like`` ``(B, *event)``."""
    return value if value.dim() == 0 else value.view(value.shape + (1,) * (like.dim() - 1))


class TemperedEnergy(Energy):
    """``E_β(y) = β · E(y / s)``: the energy of replicas at inverse temperatures β in coordinates ``y = s·x``.

    ``beta`` is 0-d or ``(B,)`` (one per row of the batch); ``scale`` is ``None`` (``s = 1``) or
    ``(B,)`` and is only allowed for real supports. Exposes the wrapped energy's ``support``,
    ``num_states`` and ``event_shape``, and scales every local formula the kernels use:

    * ``value_and_grad(y) = (β E(x), (β/s) ∇E(x))`` with ``x = y/s``;
    * ``delta_energy_flip(x, site) = β ΔE``, ``site_energies(x, site) = β E(x with x_site = k)``.

    For a batch of ``m·B`` rows (variants stacked along the batch) β and s repeat m times.
    Shapes: ``y`` ``(B, *event)`` -> ``(B,)``.
    """

    def __init__(self, energy: EnergyFn, beta: torch.Tensor, scale: torch.Tensor | None = None):
        super().__init__()
        support = support_of(energy)
        if scale is not None and support.discrete:
            raise ValueError(f"TemperedEnergy: a coordinate scale is only defined for real states, but the energy "
                             f"{type(energy).__name__} is {support.kind}")
        self.base = energy
        self.beta, self.scale = beta, scale
        self.support = support.kind
        self.num_states = support.num_states or 2
        self.event_shape = getattr(energy, "event_shape", None)

    def _unscaled(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        beta = _per_row(self.beta, y.shape[0], "TemperedEnergy")
        scale = _per_row(self.scale, y.shape[0], "TemperedEnergy")
        return (y if scale is None else y / _trailing(scale, y)), beta, scale

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        x, beta, _ = self._unscaled(y)
        return beta * eval_energy(self.base, x)

    def value_and_grad(self, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x, beta, scale = self._unscaled(y)
        e, g = value_and_grad(self.base, x)
        factor = beta if scale is None else beta / scale
        return beta * e, g * _trailing(factor, g)

    def select_rows(self, index: torch.Tensor) -> "TemperedEnergy":
        """The replicas ``index`` ``(n,)`` of the batch, with their own β and s (and the base's
        own rows, for a base with per-row parameters): :func:`~ebmlab.energy.base.energy_rows`."""
        beta = self.beta if self.beta.dim() == 0 else self.beta.index_select(0, index % self.beta.shape[0])
        scale = None if self.scale is None else self.scale.index_select(0, index % self.scale.shape[0])
        return TemperedEnergy(energy_rows(self.base, index), beta, scale)

    def delta_energy_flip(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        return _per_row(self.beta, x.shape[0], "TemperedEnergy") * delta_energy_flip(self.base, x, site)

    @property
    def one_hot_energy(self):
        """``β E(o)`` on one-hot states, when the base energy has it (categorical GWG)."""
        own = getattr(self.base, "one_hot_energy", None)
        if own is None:
            raise AttributeError("one_hot_energy")
        beta = self.beta
        return lambda o: _per_row(beta, o.shape[0], "TemperedEnergy") * own(o)

    def site_energies(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        beta = _per_row(self.beta, x.shape[0], "TemperedEnergy")
        energies = site_energies(self.base, x, site, self.num_states)
        return energies * (beta if beta.dim() == 0 else beta[:, None])


def ladder_from_rejections(betas: torch.Tensor, rejection: torch.Tensor, floor: float = 1e-3) -> torch.Tensor:
    """The ladder with equal estimated rejection between neighbours (Syed et al. 2022, §5.1).

    The communication barrier ``Λ(β)`` (cumulative swap rejection from β = 1) is estimated at the
    knots as ``Λ_0 = 0, Λ_{k+1} = Λ_k + r_k`` from the measured rejection rates ``r_k`` of the pairs
    ``(β_k, β_{k+1})``, interpolated linearly in ``log β``, and inverted at the equally spaced
    levels ``Λ_j* = j Λ_{K-1} / (K-1)``. Endpoints stay at ``β_0 = 1`` and the given ``β_{K-1}``.
    Rates are floored at ``floor`` so that Λ is strictly increasing.

    Shapes: ``betas`` ``(K,)`` strictly decreasing, ``rejection`` ``(K-1,)``; returns ``(K,)``.
    """
    k = betas.shape[0]
    rate = rejection.to(betas.dtype).nan_to_num(nan=floor).clamp(min=floor, max=1.0)
    barrier = torch.cat([rate.new_zeros(1), rate.cumsum(0)])
    levels = barrier[-1] * torch.linspace(0.0, 1.0, k, dtype=betas.dtype, device=betas.device)
    idx = (torch.searchsorted(barrier, levels, right=True) - 1).clamp(0, k - 2)
    lo, hi = barrier[idx], barrier[idx + 1]
    t = ((levels - lo) / (hi - lo)).clamp(0.0, 1.0)
    log_b = betas.log()
    new = torch.exp(log_b[idx] + t * (log_b[idx + 1] - log_b[idx]))
    new[0], new[-1] = 1.0, betas[-1]
    return new


def retemper(replicas: ChainState, rows: torch.Tensor | None, old_beta: torch.Tensor, new_beta: torch.Tensor,
             old_scale: torch.Tensor | None = None, new_scale: torch.Tensor | None = None) -> ChainState:
    """A base-kernel state whose row r holds row ``rows[r]`` of ``replicas``, re-expressed at a new β and s.

    Row r of ``replicas`` caches ``y = s x``, ``β E(x)`` and ``(β/s) ∇E(x)`` at the per-row
    ``old_beta``/``old_scale`` (all ``(R,)``); the result caches the same quantities of the state
    ``x`` of row ``rows[r]`` (``rows`` ``(R,)`` long, or ``None`` for the identity) at ``new_beta``/
    ``new_scale``. Nothing is re-evaluated. Other fields of the state are kept as they are.
    """
    # one factor per row, so that each (R, *event) array is gathered and scaled in two passes:
    # x' = x[src] · s'/s[src],  E' = E[src] · β'/β[src],  ∇' = ∇[src] · (β'/s')/(β[src]/s[src])
    old_grad = old_beta if old_scale is None else old_beta / old_scale
    new_grad = new_beta if new_scale is None else new_beta / new_scale
    x, e, g = replicas.x, replicas.energy, replicas.grad
    if rows is not None:
        x, e = x.index_select(0, rows), e.index_select(0, rows)
        g = None if g is None else g.index_select(0, rows)
        old_beta, old_grad = old_beta.index_select(0, rows), old_grad.index_select(0, rows)
        old_scale = None if old_scale is None else old_scale.index_select(0, rows)
    if old_scale is not None or new_scale is not None:
        ratio = (1.0 if new_scale is None else new_scale) / (1.0 if old_scale is None else old_scale)
        x = x * _trailing(ratio, x)
    if g is not None:
        g = g * _trailing(new_grad / old_grad, g)
    return dataclasses.replace(replicas, x=x, energy=e * (new_beta / old_beta), grad=g)


def per_temperature_rows(per_temperature: torch.Tensor | None, num_chains: int) -> torch.Tensor | None:
    """``(K,)`` -> ``(K·C,)`` in the temperature-major row order."""
    return None if per_temperature is None else per_temperature.repeat_interleave(num_chains)


# Statistics of a run, read from a ``TemperedState`` (:mod:`ebmlab.samplers.tempering`).


def swap_rates(state) -> torch.Tensor:
    """Mean swap acceptance probability of each pair ``(β_k, β_{k+1})`` since the ladder was fixed, ``(K-1,)``."""
    return state.swap_accept / state.swap_attempts


def round_trip_rate(state) -> float:
    """Round trips (β = 1 → β_{K-1} → β = 1) per swap round per chain, since the ladder was fixed.

    Counts all K replicas of a chain, as Syed et al. (2022) do; their bound for DEO swaps is
    ``1 / (2 + 2Λ)`` with Λ the :func:`communication_barrier`.
    """
    return float(state.round_trips.sum()) / max(state.swap_rounds * state.num_chains, 1)


def communication_barrier(state) -> float:
    """``Λ ≈ Σ_k (1 - r_k)``: the summed swap rejection rates of the current ladder (Syed et al. 2022)."""
    return float((1.0 - swap_rates(state)).sum())


def replica_positions(state) -> torch.Tensor:
    """The states of every replica in the target's coordinates, ``(K, C, *event)`` (row k at β_k)."""
    k, c = state.num_temperatures, state.num_chains
    x = state.replicas.x
    if state.scales is not None:
        x = x / per_temperature_rows(state.scales, c).view(-1, *([1] * (x.dim() - 1)))
    return x.view(k, c, *x.shape[1:])


__all__ = ["TemperedEnergy", "communication_barrier", "geometric_ladder", "ladder_from_rejections",
           "per_temperature_rows", "replica_positions", "retemper", "round_trip_rate", "swap_rates"]
