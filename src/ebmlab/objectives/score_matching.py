"""Score matching: fit the model score ``s_θ(x) = -∇ₓE_θ(x)`` without the partition function.

* ``sm`` — exact score matching (Hyvärinen 2005, "Estimation of non-normalized statistical
  models by score matching"):
  ``J(θ) = E_data[½‖s_θ(x)‖² + tr ∇ₓ s_θ(x)]``, equal to ``½E‖s_θ - ∇ log p_data‖²`` up to a
  constant. The trace is exact: one extra backward pass per dimension, so D ≤ ``max_dim``.
  A score that does not depend on x (``E = xᵀw``, ``s = -w``) has ``tr ∇ₓs = 0`` exactly, so
  ``J = ½‖w‖²`` (both here and in ``ssm``; see :func:`grad_x`).
* ``ssm`` — sliced score matching (Song, Garg, Shi & Ermon 2019, "Sliced score matching"):
  ``J(θ) = E_data E_v[vᵀ∇ₓ(vᵀs_θ(x)) + ½(vᵀs_θ(x))²]`` with random projections ``v``
  (``E[vvᵀ] = I``); the variance-reduced form (SSM-VR) replaces ``½(vᵀs)²`` by its
  expectation ``½‖s‖²``. One backward pass per projection, whatever D.
* ``dsm`` — denoising score matching (Vincent 2011, "A connection between score matching and
  denoising autoencoders"): with ``x̃ = x + σε``, ``ε ~ N(0, I)``,
  ``J(θ) = E ½‖s_θ(x̃) + (x̃ - x)/σ²‖²`` (times σ² with ``weighting="sigma2"``), whose
  minimiser is the score of the σ-smoothed data law ``p_data * N(0, σ²I)``. With
  ``sigma_max > sigma`` the noise level is annealed over the first ``anneal_steps`` updates,
  ``σ_t = σ_max (σ/σ_max)^{min(t/T, 1)}`` (geometric, as the levels of Song & Ermon 2019, but
  in time for one unconditional energy): large σ merges the modes, so the score sees their
  relative weights (at small σ the score of far-apart modes does not depend on them), and the
  end at a small σ removes most of the smoothing bias ``KL(p ‖ p * N(0, σ²I))``.

All losses are per-example means over the batch; shapes ``batch (B, *event_shape)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from ebmlab.energy.base import EnergyFn, value_and_grad
from ebmlab.objectives.base import Metrics, Objective, check_positive


def score_with_graph(energy: EnergyFn, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_leaf, E(x), s(x) = -∇ₓE(x))`` with the graph kept for differentiating ``s``.

    ``x_leaf`` is a copy of ``x`` that requires grad; ``E`` has shape ``(B,)``, ``s`` that of x.
    """
    x_leaf = x.detach().requires_grad_(True)
    e, g = value_and_grad(energy, x_leaf, create_graph=True)
    return x_leaf, e, -g


def grad_x(output: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``∇ₓ Σ output`` with the graph kept (shape of ``x``), exactly 0 where ``output`` does not depend on x.

    A score that is constant in x (an energy linear in x, ``E = xᵀw``: ``s = -w``) leaves x out
    of the graph of ``s``; its derivative is then the zero tensor, which carries no gradient to
    the parameters (correctly: ``∂/∂θ`` of an identically-zero term is 0), while the other terms
    of the loss still do.
    """
    if not output.requires_grad:  # e.g. an energy with no parameters that is linear in x
        return torch.zeros_like(x)
    (d,) = torch.autograd.grad(output.sum(), x, create_graph=True, allow_unused=True)
    return torch.zeros_like(x) if d is None else d


class ScoreMatching(Objective):
    """Exact score matching (Hyvärinen 2005); refuses events with more than ``max_dim`` values."""

    name = "sm"
    score_only = True
    supports = ("real",)

    def __init__(self, max_dim: int = 128):
        self.max_dim = int(max_dim)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        dim = math.prod(batch.shape[1:])
        if dim > self.max_dim:
            raise ValueError(
                f"sm: exact score matching needs one backward pass per dimension; the data has {dim} > "
                f"max_dim={self.max_dim}; use 'ssm' or 'dsm'"
            )
        x, e, s = score_with_graph(energy, batch)
        flat = s.flatten(1)
        trace = torch.zeros_like(e)
        for i in range(dim):
            trace = trace + grad_x(flat[:, i], x).flatten(1)[:, i]
        sq = 0.5 * flat.square().sum(1)
        loss = (sq + trace).mean()
        return loss, {"loss": float(loss.detach()), "energy_pos": float(e.mean().detach()), "score_sq": float(sq.mean().detach()),
                      "trace": float(trace.mean().detach())}


class SlicedScoreMatching(Objective):
    """Sliced score matching with ``num_projections`` projections per example (Song et al. 2019).

    Args:
        num_projections: projections ``v`` per data point.
        variance_reduction: use ``½‖s‖²`` (SSM-VR) instead of ``½(vᵀs)²``.
        projection: ``"gaussian"`` (``v ~ N(0, I)``) or ``"rademacher"`` (``v ∈ {±1}^D``).
    """

    name = "ssm"
    score_only = True
    supports = ("real",)

    def __init__(self, num_projections: int = 1, variance_reduction: bool = True, projection: str = "gaussian"):
        if int(num_projections) < 1:
            raise ValueError(f"ssm: num_projections must be >= 1, got {num_projections}")
        if projection not in ("gaussian", "rademacher"):
            raise ValueError(f"ssm: projection must be 'gaussian' or 'rademacher', got {projection!r}")
        self.num_projections, self.variance_reduction, self.projection = int(num_projections), bool(variance_reduction), projection

    def projections(self, shape: tuple[int, ...], like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Random directions ``v`` of shape ``shape`` with ``E[vvᵀ] = I``."""
        if self.projection == "gaussian":
            return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        bits = torch.randint(0, 2, shape, generator=generator, device=like.device)
        return (2 * bits - 1).to(like.dtype)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        reps = self.num_projections
        x_rep = batch.repeat(reps, *([1] * (batch.dim() - 1)))  # (P·B, *event), projection-major
        v = self.projections(tuple(x_rep.shape), batch, generator)
        x, e, s = score_with_graph(energy, x_rep)
        vs = (v * s).flatten(1).sum(1)
        curvature = (v * grad_x(vs, x)).flatten(1).sum(1)  # vᵀ ∇ₓ(vᵀ s)
        sq = 0.5 * (s.flatten(1).square().sum(1) if self.variance_reduction else vs.square())
        loss = (sq + curvature).mean()
        return loss, {"loss": float(loss.detach()), "energy_pos": float(e.mean().detach()), "score_sq": float(sq.mean().detach()),
                      "trace": float(curvature.mean().detach())}


class DenoisingScoreMatching(Objective):
    """Denoising score matching at noise level ``sigma`` (Vincent 2011), optionally annealed.

    ``weighting="sigma2"`` multiplies the loss by σ² (the λ(σ) = σ² of Song & Ermon 2019),
    which keeps its scale near ``D/2`` whatever σ. The default σ = 0.15 suits standardised
    data (unit variance per feature).

    Args:
        sigma: the noise level (the last one when annealed).
        weighting: ``"none"`` or ``"sigma2"``.
        sigma_max: the first noise level of the annealed schedule (0 = no annealing).
        anneal_steps: T, the updates over which σ falls geometrically from ``sigma_max`` to
            ``sigma`` (counted by the objective: one per training loss; kept in its state, so a
            resumed run continues the schedule).
        antithetic: perturb every example twice, by ``+σε`` and ``-σε``, and average the two
            losses. The loss's gradient carries a zero-mean term ``εᵀ ∂s(x + σε)/∂θ / σ`` whose
            variance grows as σ → 0; in an antithetic pair its leading parts cancel
            (``s(x + σε) - s(x - σε) = O(σ)``), leaving the same expected loss at twice the cost
            per update (a control variate, as in Wang et al. 2020, "A Wasserstein minimum
            velocity approach to learning unnormalized models").
    """

    name = "dsm"
    score_only = True
    supports = ("real",)

    def __init__(self, sigma: float = 0.15, weighting: str = "none", sigma_max: float = 0.0, anneal_steps: int = 0,
                 antithetic: bool = False):
        self.sigma = check_positive("dsm", "sigma", sigma)
        if weighting not in ("none", "sigma2"):
            raise ValueError(f"dsm: weighting must be 'none' or 'sigma2', got {weighting!r}")
        self.weighting = weighting
        self.sigma_max = check_positive("dsm", "sigma_max", sigma_max, allow_zero=True)
        if self.sigma_max and not self.sigma_max >= self.sigma:
            raise ValueError(f"dsm: sigma_max must be >= sigma (or 0 = no annealing), got {sigma_max} < {sigma}")
        if isinstance(anneal_steps, bool) or int(anneal_steps) != anneal_steps or anneal_steps < 0:
            raise ValueError(f"dsm: anneal_steps must be an integer >= 0, got {anneal_steps!r}")
        self.anneal_steps = int(anneal_steps)
        if not isinstance(antithetic, bool):
            raise ValueError(f"dsm: antithetic must be true or false, got {antithetic!r}")
        self.antithetic = antithetic
        self.updates = 0

    def sigma_at(self, update: int) -> float:
        """σ of training update ``update`` (0-based): ``σ_max (σ/σ_max)^{min(t/T, 1)}``, else σ."""
        if not self.sigma_max or not self.anneal_steps:
            return self.sigma
        u = min(update / self.anneal_steps, 1.0)
        return self.sigma_max * (self.sigma / self.sigma_max) ** u

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        sigma = self.sigma_at(self.updates)
        self.updates += 1
        eps = torch.randn(batch.shape, generator=generator, dtype=batch.dtype, device=batch.device)
        if self.antithetic:
            batch, eps = torch.cat([batch, batch]), torch.cat([eps, -eps])
        x_noisy = batch + sigma * eps
        _, e, s = score_with_graph(energy, x_noisy)
        residual = s + (x_noisy - batch) / sigma**2  # s(x̃) - ∇ log q(x̃ | x)
        per = 0.5 * residual.flatten(1).square().sum(1)
        if self.weighting == "sigma2":
            per = per * sigma**2
        loss = per.mean()
        metrics = {"loss": float(loss.detach()), "energy_noisy": float(e.mean().detach())}
        return loss, {**metrics, "sigma": sigma} if self.sigma_max and self.anneal_steps else metrics

    def state_dict(self) -> dict[str, Any]:
        return {"updates": self.updates} if self.sigma_max and self.anneal_steps else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = set(state) - {"updates"}
        if extra:
            raise ValueError(f"dsm: unexpected objective state keys {sorted(extra)}")
        self.updates = int(state.get("updates", 0))
