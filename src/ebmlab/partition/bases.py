"""Tractable base distributions p₀ for AIS, and the geometric path from p₀ to the target.

Annealed importance sampling needs a normalised, exactly samplable p₀ (``log Z₀ = 0``):

* :class:`GaussianBase` — ``N(μ, diag σ²)`` over real events, fitted to data (per-coordinate
  mean and std) or given;
* :class:`CategoricalBase` — independent sites ``p₀(x) = Π_i π_i(x_i)`` over ``{0..K-1}``,
  fitted to data (smoothed marginals) or given; binary data is K = 2 (independent Bernoullis).

The intermediate distributions of the geometric path (Neal 2001) are

    log f_β(x) = (1-β) log p₀(x) + β (-E(x)),   i.e.   E_β(x) = -(1-β) log p₀(x) + β E(x),

and :class:`AnnealedEnergy` is ``E_β`` as an ordinary energy module, so every ebmlab kernel
(MALA, HMC, Gibbs, Metropolis, ...) targets ``f_β`` unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn, energy as eval_energy, site_energies, value_and_grad


class GaussianBase(nn.Module):
    """``p₀ = N(mean, diag std²)`` over events of ``mean``'s shape.

    ``log p₀(x) = -½ Σ ((x-μ)/σ)² - Σ log σ - (D/2) log 2π``; shapes: x ``(B, *event)`` -> ``(B,)``.
    """

    support = "real"

    def __init__(self, mean: torch.Tensor, std: torch.Tensor | float):
        super().__init__()
        mean = torch.as_tensor(mean, dtype=torch.get_default_dtype()) if not torch.is_tensor(mean) else mean.detach()
        std = torch.as_tensor(std, dtype=mean.dtype, device=mean.device).expand(mean.shape).clone()
        if not (torch.isfinite(std).all() and (std > 0).all() and torch.isfinite(mean).all()):
            raise ValueError("GaussianBase: mean must be finite and std finite and > 0")
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std)
        self.event_shape = tuple(mean.shape)

    @classmethod
    def fit(cls, data: torch.Tensor, inflate: float = 1.0, min_std: float = 1e-3) -> "GaussianBase":
        """Per-coordinate mean and ``inflate × std`` of ``data`` (shape ``(N, *event)``, N ≥ 2)."""
        if data.dim() < 2 or data.shape[0] < 2:
            raise ValueError(f"GaussianBase.fit: data must have shape (N >= 2, *event), got {tuple(data.shape)}")
        data = data.detach()
        return cls(data.mean(0), torch.clamp(inflate * data.std(0), min=min_std))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        z = (x - self.mean) / self.std
        d = self.mean.numel()
        return -0.5 * z.flatten(1).square().sum(1) - torch.log(self.std).sum() - 0.5 * d * math.log(2 * math.pi)

    def log_prob_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log p₀(x), ∇ₓ log p₀(x))`` in closed form."""
        return self.log_prob(x), -(x - self.mean) / self.std**2

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        noise = torch.randn((n, *self.event_shape), generator=generator, dtype=self.mean.dtype, device=self.mean.device)
        return self.mean + self.std * noise


class CategoricalBase(nn.Module):
    """Independent sites: ``p₀(x) = Π_i π_i(x_i)``, ``x_i ∈ {0..K-1}``; ``probs`` has shape ``(*event, K)``.

    Binary data is K = 2 (independent Bernoullis, see :meth:`bernoulli`).
    Shapes: x ``(B, *event)`` (floats holding integers) -> ``(B,)``.
    """

    def __init__(self, probs: torch.Tensor):
        super().__init__()
        probs = torch.as_tensor(probs, dtype=torch.get_default_dtype()) if not torch.is_tensor(probs) else probs.detach()
        if probs.dim() < 2 or probs.shape[-1] < 2 or (probs < 0).any() or not torch.isfinite(probs).all():
            raise ValueError(f"CategoricalBase: probs must have shape (*event, K >= 2) with entries >= 0, got {tuple(probs.shape)}")
        probs = probs / probs.sum(-1, keepdim=True)
        self.register_buffer("log_probs", torch.log(probs))
        self.event_shape = tuple(probs.shape[:-1])
        self.num_states = int(probs.shape[-1])
        self.support = "binary" if self.num_states == 2 else "categorical"

    @classmethod
    def bernoulli(cls, probs_one: torch.Tensor) -> "CategoricalBase":
        """Independent Bernoullis with ``P(x_i = 1) = probs_one[i]``."""
        p = torch.as_tensor(probs_one, dtype=torch.get_default_dtype())
        return cls(torch.stack([1 - p, p], dim=-1))

    @classmethod
    def fit(cls, data: torch.Tensor, num_states: int = 2, pseudo_count: float = 1.0) -> "CategoricalBase":
        """Per-site value frequencies of ``data`` (shape ``(N, *event)``), each count plus ``pseudo_count``."""
        if data.dim() < 2 or data.shape[0] < 1:
            raise ValueError(f"CategoricalBase.fit: data must have shape (N >= 1, *event), got {tuple(data.shape)}")
        values = data.detach().long()
        if (values < 0).any() or (values >= num_states).any() or (values != data).any():
            raise ValueError(f"CategoricalBase.fit: data must hold integers in 0..{num_states - 1}")
        counts = nn.functional.one_hot(values, num_states).to(data.dtype).sum(0) + pseudo_count
        return cls(counts)

    def _site_log_probs(self, x: torch.Tensor) -> torch.Tensor:
        """``log π_i(x_i)`` per site, shape ``(B, *event)``."""
        table = self.log_probs.expand(x.shape[0], *self.log_probs.shape)
        return table.gather(-1, x.long().unsqueeze(-1)).squeeze(-1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        return self._site_log_probs(x).flatten(1).sum(1)

    def site_log_probs(self, site: torch.Tensor) -> torch.Tensor:
        """``log π_{site[c]}(k)`` for every value k, shape ``(C, K)``."""
        return self.log_probs.reshape(-1, self.num_states)[site]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        flat = torch.exp(self.log_probs.reshape(-1, self.num_states))
        draws = torch.multinomial(flat, n, replacement=True, generator=generator)  # (sites, n)
        return draws.T.reshape(n, *self.event_shape).to(self.log_probs.dtype)


def fit_base(data: torch.Tensor, support: str = "real", num_states: int = 2) -> nn.Module:
    """The default base for ``support``: a diagonal Gaussian or independent categoricals fitted to ``data``."""
    if support == "real":
        return GaussianBase.fit(data)
    if support in ("binary", "categorical"):
        return CategoricalBase.fit(data, 2 if support == "binary" else num_states)
    raise ValueError(f"fit_base: unknown support {support!r}; expected 'real', 'binary' or 'categorical'")


class AnnealedEnergy(nn.Module):
    """``E_β(x) = -(1-β) log p₀(x) + β E(x)``: the energy of the geometric path at inverse temperature β.

    ``β = 0`` is the base p₀, ``β = 1`` the target. Exposes ``value_and_grad`` (base gradient in
    closed form for a Gaussian base), and for discrete bases the local ``site_energies`` /
    ``delta_energy_flip`` that Gibbs and single-site Metropolis use.
    Shapes: x ``(B, *event)`` -> ``(B,)``.
    """

    def __init__(self, target: EnergyFn, base: nn.Module, beta: float):
        super().__init__()
        self.target, self.base, self.beta = target, base, float(beta)
        self.event_shape = base.event_shape
        self.support = getattr(base, "support", "real")
        self.num_states = getattr(base, "num_states", 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = eval_energy(self.target, x) if self.beta != 0 else x.new_zeros(x.shape[0])
        return -(1 - self.beta) * self.base.log_prob(x) + self.beta * e

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        e, g = value_and_grad(self.target, x)
        lp, glp = self.base.log_prob_and_grad(x.detach())
        return -(1 - self.beta) * lp + self.beta * e, -(1 - self.beta) * glp + self.beta * g

    def site_energies(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``E_β(x with x_site = k)`` for every k, shape ``(C, K)``."""
        target = site_energies(self.target, x, site, self.num_states)
        lp_rest = self.base.log_prob(x) - self.base.site_log_probs(site).gather(
            1, x.reshape(x.shape[0], -1).gather(1, site[:, None]).long())[:, 0]
        base = lp_rest[:, None] + self.base.site_log_probs(site)
        return -(1 - self.beta) * base + self.beta * target

    def delta_energy_flip(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``E_β(x with site flipped) - E_β(x)`` for binary x, shape ``(C,)``."""
        energies = self.site_energies(x, site)
        current = x.reshape(x.shape[0], -1).gather(1, site[:, None]).long()
        return energies.gather(1, 1 - current)[:, 0] - energies.gather(1, current)[:, 0]


def split_energy(target: EnergyFn, base: nn.Module, x: torch.Tensor, with_grad: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """``(E(x), log p₀(x), ∇E(x), ∇ log p₀(x))`` (gradients ``None`` unless ``with_grad``), detached."""
    if with_grad:
        e, g = value_and_grad(target, x)
        lp, glp = base.log_prob_and_grad(x.detach())
        return e.detach(), lp.detach(), g.detach(), glp.detach()
    with torch.no_grad():
        return eval_energy(target, x).detach(), base.log_prob(x).detach(), None, None


__all__ = ["AnnealedEnergy", "CategoricalBase", "GaussianBase", "fit_base", "split_energy"]
