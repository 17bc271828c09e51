"""The by-design parts of a toy-set likelihood gap: the noise floor and the component weights.

Two quantities for :mod:`benchmarks.likelihood`, both from the true densities of
:mod:`ebmlab.data.toy2d` (8 gaussians, 2 spirals, checkerboard):

* :func:`noise_floor` — ``KL(p ‖ p * N(0, Σ))`` with ``Σ = diag(σ² s_d²)``: what denoising
  score matching at a final noise level σ costs even when it fits perfectly. Its minimiser is
  the score of the data smoothed by ``N(0, σ² I)`` in the standardised space ``z = (x - μ)/s``
  the model sees, i.e. smoothed by ``N(0, diag(σ² s_d²))`` in the raw space the benchmark
  scores. The smoothed densities are closed forms: a Gaussian mixture stays one with the
  variances added (8 gaussians; 2 spirals, whose density is a quadrature mixture over the
  curve), and a uniform square becomes a product of ``Φ`` differences (checkerboard). The
  expectation over ``p`` is a midpoint-rule quadrature: on a grid of step ≤ s/5 for the
  mixtures (s their component s.d.; spectrally accurate for Gaussians), on each black square
  with step ≤ τ/8 for the checkerboard (τ the smallest smoothing s.d., the width of the edge
  layer where ``log p_σ`` varies).
* :func:`component_weight_kl` — ``Σ_k π_k log(π_k / w_k)``: the part of ``KL(p ‖ q)`` due to
  the masses of the disconnected components of the true support alone. The grid cells are
  assigned to the nearest component (8 gaussians: mode means; 2 spirals: the two arms, by
  distance to the arm's curve; checkerboard: the 8 black squares, by distance to the square);
  ``w_k`` is the model's and ``π_k`` the true density's mass on the cells of component k. By
  the chain rule of KL over that partition, ``KL(p ‖ q) = Σ_k π_k log(π_k/w_k) +
  Σ_k π_k KL(p|_k ‖ q|_k) ≥`` this part, with equality when the model is right within every
  component.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

from ebmlab.data import toy2d

WEIGHT_SETS = ("8gaussians", "2spirals", "checkerboard")
_LOG_2PI = math.log(2 * math.pi)


def _mixture(dataset: str) -> tuple[torch.Tensor, torch.Tensor, float]:
    """``(centres (M, 2), log_weights (M,), s)``: the true density as ``Σ_i w_i N(c_i, s² I)`` (float64)."""
    if dataset == "8gaussians":
        means = toy2d._EIGHT.means.double()
        return means, torch.full((8,), -math.log(8), dtype=torch.float64), float(toy2d._EIGHT.stds[0])
    if dataset == "2spirals":
        density = toy2d._make_2spirals_density()
        return density.centres, density.log_weights, density.std
    raise ValueError(f"no mixture form for {dataset!r}")


def _mixture_log_density(x: torch.Tensor, centres: torch.Tensor, log_w: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """``log Σ_i w_i N(x; c_i, diag(var))`` for ``x (B, 2)``, ``var (2,)``; ``(B,)`` float64, in chunks."""
    scale = var.rsqrt()
    c = centres * scale
    const = log_w - 0.5 * c.square().sum(-1) - _LOG_2PI - 0.5 * var.log().sum()
    out = []
    for xb in (x.double() * scale).split(max(1, 2**22 // centres.shape[0])):
        out.append(torch.logsumexp(const + xb @ c.T, -1) - 0.5 * xb.square().sum(-1))
    return torch.cat(out)


def _checker_log_smoothed(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``log (p * N(0, diag(τ²)))(x)`` for the checkerboard: ``Σ_sq (1/32) Π_d [Φ((b-x)/τ) - Φ((a-x)/τ)]``."""
    lo = -4.0 + 2.0 * toy2d._CHECKER_CELLS.double()  # (8, 2) lower corners
    out = []
    for xb in x.double().split(2**18):
        upper = torch.special.ndtr((lo[None] + 2.0 - xb[:, None]) / tau)
        lower = torch.special.ndtr((lo[None] - xb[:, None]) / tau)
        out.append(torch.log((upper - lower).prod(-1).sum(-1) / 32.0))
    return torch.cat(out)


def noise_floor(dataset: str, sigma: float, std: Sequence[float] = (1.0, 1.0)) -> float:
    """``KL(p ‖ p * N(0, diag(σ² s_d²)))`` in nats for a toy set, ``σ`` in standardised units.

    Args:
        dataset: ``"8gaussians"``, ``"2spirals"`` or ``"checkerboard"`` (else ``nan``).
        sigma: the final DSM noise level in the standardised space (≥ 0; 0 gives 0).
        std: the standardisation's per-coordinate s.d. ``s`` (the raw smoothing s.d. is ``σ s_d``).
    """
    tau = sigma * torch.as_tensor(std, dtype=torch.float64).reshape(-1).expand(2)
    if sigma <= 0:
        return 0.0
    if dataset == "checkerboard":
        n = max(100, math.ceil(2.0 / min(0.02, float(tau.min()) / 8)))
        u = (torch.arange(n, dtype=torch.float64) + 0.5) * (2.0 / n)
        square = torch.stack(torch.meshgrid(u, u, indexing="ij"), -1).reshape(-1, 2)
        points = torch.cat([-4.0 + 2.0 * cell.double() + square for cell in toy2d._CHECKER_CELLS])
        log_p = math.log(1 / 32)
        return float((log_p - _checker_log_smoothed(points, tau)).mean() * (8 * 4.0) / 32)  # ∫ p(log p - log p_σ)
    if dataset not in ("8gaussians", "2spirals"):
        return math.nan
    centres, log_w, s = _mixture(dataset)
    h = s / 5
    axes = [torch.arange(float(centres[:, d].min()) - 8 * s, float(centres[:, d].max()) + 8 * s + h, h, dtype=torch.float64)
            for d in range(2)]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    var0 = torch.full((2,), s**2, dtype=torch.float64)
    log_p = _mixture_log_density(grid, centres, log_w, var0)
    log_smoothed = _mixture_log_density(grid, centres, log_w, var0 + tau.square())
    p = log_p.exp() * h * h
    return float((p * (log_p - log_smoothed)).sum() / p.sum())


def component_labels(dataset: str, points: torch.Tensor) -> tuple[torch.Tensor, int]:
    """The nearest component of the true support of each point ``(N, 2)``: ``(labels (N,), K)``."""
    x = points.double()
    if dataset == "8gaussians":
        return torch.cdist(x, toy2d._EIGHT.means.double()).argmin(1), 8
    if dataset == "2spirals":
        centres = toy2d._make_2spirals_density().centres
        half = centres.shape[0] // 2  # the + arm, then the - arm
        labels = []
        for xb in x.split(16384):
            d = torch.cdist(xb, centres)
            labels.append((d[:, half:].min(1).values < d[:, :half].min(1).values).long())
        return torch.cat(labels), 2
    if dataset == "checkerboard":
        lo = -4.0 + 2.0 * toy2d._CHECKER_CELLS.double()
        gap = torch.clamp(torch.maximum(lo[None] - x[:, None], x[:, None] - lo[None] - 2.0), min=0.0)
        return gap.square().sum(-1).argmin(1), 8
    raise ValueError(f"no components defined for {dataset!r}")


def component_weight_kl(energy, dataset: str, bounds, num_points: int) -> float:
    """``Σ_k π_k log(π_k / w_k)`` on a ``num_points``² grid over ``bounds`` (``nan`` for other sets).

    ``energy`` is the model's raw-space energy ``(B, 2) -> (B,)``; ``w_k`` and ``π_k`` are the model's
    and the true density's grid masses (each normalised on the grid) on the cells nearest to component k.
    """
    if dataset not in WEIGHT_SETS:
        return math.nan
    axes = [torch.linspace(lo, hi, num_points, dtype=torch.float64) for lo, hi in bounds]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    dtype = torch.get_default_dtype()
    device = next((p.device for p in energy.parameters()), torch.device("cpu")) if hasattr(energy, "parameters") else None
    with torch.no_grad():
        log_q = torch.cat([-energy(chunk.to(dtype=dtype, device=device)).double().cpu() for chunk in grid.split(65536)])
    log_p = toy2d.true_log_density(dataset)(grid).double()
    labels, k = component_labels(dataset, grid)
    w = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, torch.softmax(log_q, 0))
    pi = torch.zeros(k, dtype=torch.float64).index_add_(0, labels, torch.softmax(log_p, 0))
    return float(torch.where(pi > 0, pi * (pi.log() - w.log()), torch.zeros_like(pi)).sum())
