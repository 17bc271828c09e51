"""Sample-quality metrics: MMD² with a permutation test, energy distance, KL on a grid.

* **MMD²** (Gretton et al. 2012, "A kernel two-sample test"), Gaussian kernel
  ``k(a, b) = exp(-‖a-b‖² / (2h²))``, unbiased U-statistic

      MMD²_u = 1/(n(n-1)) Σ_{i≠j} k(x_i,x_j) + 1/(m(m-1)) Σ_{i≠j} k(y_i,y_j) - 2/(nm) Σ_{i,j} k(x_i,y_j),

  which is 0 in expectation when both samples come from the same law (it can be negative).
  Bandwidth: the median heuristic, ``h`` = median pairwise distance of the pooled sample.
  The p-value comes from a permutation test, ``(1 + #{b: MMD²_b ≥ MMD²}) / (1 + B)`` over B
  random relabellings of the pooled sample, drawn from an explicit generator.
* **Energy distance** (Székely & Rizzo 2013), ``2E‖X-Y‖ - E‖X-X'‖ - E‖Y-Y'‖ ≥ 0``, with
  unbiased within-sample means.
* **KL on a grid**: for d ≤ 3 (typically 2-D toy targets with a known density),
  ``KL(p ‖ q) = Σ_i w_i p_i (log p_i - log q_i)`` with p and q both normalised on the same
  quadrature grid (so neither needs its own ``log Z``).

Samples are ``(N, *event)`` tensors, flattened to vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, event_shape_of
from ebmlab.partition.quadrature import grid_dim, grid_log_density, log_weights_1d, resolve_bounds


def _as_samples(x: torch.Tensor, name: str, min_size: int = 2) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < min_size:
        got = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"metrics: {name} must be a tensor of shape (N >= {min_size}, ...), got {got}")
    x = x.detach().reshape(x.shape[0], -1).to(torch.float64)
    if not torch.isfinite(x).all():
        raise ValueError(f"metrics: {name} contains NaN or infinite values")
    return x


def _pair(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x, y = _as_samples(x, "x"), _as_samples(y, "y")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"metrics: x and y must have the same event size, got {x.shape[1]} and {y.shape[1]}")
    return x, y


def median_bandwidth(z: torch.Tensor) -> float:
    """Median pairwise Euclidean distance of the rows of ``z`` (shape ``(N, D)``), at least 1e-12."""
    d = torch.cdist(z, z)
    iu = torch.triu_indices(len(z), len(z), offset=1)
    return max(float(d[iu[0], iu[1]].median()), 1e-12)


def _mmd_from_masks(kernel: torch.Tensor, in_x: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """MMD²_u for each row of the indicator matrix ``in_x`` (shape ``(P, n+m)``); kernel has zero diagonal."""
    a = in_x.to(kernel.dtype)
    b = 1.0 - a
    ka = a @ kernel
    kxx = (ka * a).sum(1)
    kxy = (ka * b).sum(1)
    kyy = ((b @ kernel) * b).sum(1)
    return kxx / (n * (n - 1)) + kyy / (m * (m - 1)) - 2.0 * kxy / (n * m)


@dataclass(frozen=True)
class MMDResult:
    """``mmd2``: the unbiased MMD² estimate; ``p_value``: permutation p-value (None if not
    computed); ``bandwidth``: the kernel bandwidth h; ``num_permutations``: B."""

    mmd2: float
    p_value: float | None
    bandwidth: float
    num_permutations: int


def mmd_test(x: torch.Tensor, y: torch.Tensor, num_permutations: int = 200, bandwidth: float | None = None,
             generator: torch.Generator | None = None) -> MMDResult:
    """Unbiased MMD² between samples ``x (n, ...)`` and ``y (m, ...)`` and its permutation p-value.

    ``bandwidth`` defaults to the median heuristic on the pooled sample. ``num_permutations = 0``
    skips the test. Cost: one ``(n+m)²`` kernel matrix and B matrix-vector products.
    """
    x, y = _pair(x, y)
    if num_permutations < 0:
        raise ValueError(f"mmd_test: num_permutations must be >= 0, got {num_permutations}")
    pooled = torch.cat([x, y])
    h = median_bandwidth(pooled) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"mmd_test: bandwidth must be > 0, got {bandwidth}")
    kernel = torch.exp(-torch.cdist(pooled, pooled).square() / (2 * h * h))
    kernel.fill_diagonal_(0.0)
    n, m = len(x), len(y)
    labels = torch.zeros(1, n + m, dtype=torch.bool, device=kernel.device)
    labels[0, :n] = True
    observed = float(_mmd_from_masks(kernel, labels, n, m)[0])
    if num_permutations == 0:
        return MMDResult(observed, None, h, 0)
    exceed = 0
    chunk = 256
    for start in range(0, num_permutations, chunk):
        size = min(chunk, num_permutations - start)
        keys = torch.rand(size, n + m, generator=generator, dtype=torch.float64,
                          device=generator.device if generator is not None else "cpu")
        masks = (keys.argsort(dim=1) < n).to(kernel.device)  # a uniformly random n-subset per row
        exceed += int((_mmd_from_masks(kernel, masks, n, m) >= observed).sum())
    return MMDResult(observed, (1 + exceed) / (1 + num_permutations), h, num_permutations)


def mmd2(x: torch.Tensor, y: torch.Tensor, bandwidth: float | None = None) -> float:
    """The unbiased MMD² estimate alone (Gaussian kernel, median-heuristic bandwidth by default)."""
    return mmd_test(x, y, num_permutations=0, bandwidth=bandwidth).mmd2


def energy_distance(x: torch.Tensor, y: torch.Tensor) -> float:
    """``2 mean‖x_i - y_j‖ - mean_{i≠i'}‖x_i - x_i'‖ - mean_{j≠j'}‖y_j - y_j'‖`` (unbiased)."""
    x, y = _pair(x, y)
    n, m = len(x), len(y)
    between = torch.cdist(x, y).mean()
    within_x = torch.cdist(x, x).sum() / (n * (n - 1))
    within_y = torch.cdist(y, y).sum() / (m * (m - 1))
    return float(2 * between - within_x - within_y)


def grid_kl(true_energy: EnergyFn, model_energy: EnergyFn, bounds=None, data: torch.Tensor | None = None,
            num_points: int | None = None, batch_size: int = 65536, event_shape: tuple[int, ...] | None = None) -> float:
    """``KL(p_true ‖ p_model)`` in nats on a grid over ``bounds`` (1–3 dimensions), both normalised there.

    Both arguments are energies ``(B, d) -> (B,)`` (pass ``lambda x: -log_density(x)`` for a
    log-density). ``bounds`` as in :func:`ebmlab.partition.quadrature_log_z`; default the range of
    ``data`` widened by half its width per side. Trapezoid weights; default 513 points per axis in
    2-D (2049 in 1-D, 129 in 3-D). ``event_shape`` ``(d,)`` defaults to either energy's.
    """
    event_shape = event_shape or event_shape_of(true_energy) or event_shape_of(model_energy)
    dim = grid_dim(true_energy, event_shape, bounds, data, where="grid_kl")
    box = resolve_bounds(dim, bounds, data, true_energy, where="grid_kl")
    n = num_points or {1: 2049, 2: 513, 3: 129}[dim]
    device = next((t.device for t in [*getattr(model_energy, "parameters", list)(),
                                      *getattr(model_energy, "buffers", list)()]), None)
    log_w = torch.zeros((n,) * dim, dtype=torch.float64)
    for a, (lo, hi) in enumerate(box):
        log_w = log_w + log_weights_1d(n, lo, hi).view([n if b == a else 1 for b in range(dim)])
    log_p = grid_log_density(true_energy, box, n, batch_size, where="grid_kl") + log_w
    log_q = grid_log_density(model_energy, box, n, batch_size, device=device, where="grid_kl") + log_w
    log_p = log_p - torch.logsumexp(log_p.flatten(), 0)
    log_q = log_q - torch.logsumexp(log_q.flatten(), 0)
    p = torch.exp(log_p)
    terms = torch.where(p > 0, p * (log_p - log_q), torch.zeros_like(p))
    return max(float(terms.sum()), 0.0)  # clip rounding below 0; NaN and inf pass through


__all__ = ["MMDResult", "energy_distance", "grid_kl", "median_bandwidth", "mmd2", "mmd_test"]
