"""Sample-quality metrics: MMD² with a permutation test, energy distance, KL on a grid; and,
from the score ``s(x) = ∇ₓ log p(x) = -∇ₓE(x)`` alone (no log Z, no model samples: an
unnormalised energy against data, or sampler output against a known energy), the kernel Stein
discrepancy with a wild-bootstrap test and the Fisher divergence to a known reference score.

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
* **Kernel Stein discrepancy** (Liu, Lee & Jordan 2016; Chwialkowski, Strathmann & Gretton
  2016). With the Stein kernel

      u_p(x, y) = s(x)ᵀ s(y) k(x, y) + s(x)ᵀ ∇_y k(x, y) + ∇_x k(x, y)ᵀ s(y) + tr(∇_x ∇_y k(x, y)),

  ``KSD²(q, p) = E_{x,y~q} u_p(x, y)``, which is 0 iff q = p (for a characteristic kernel and
  mild tails). Estimates from ``x_1..x_n ~ q``: the U-statistic
  ``1/(n(n-1)) Σ_{i≠j} u_p(x_i, x_j)`` (unbiased, may be negative) or the V-statistic
  ``1/n² Σ_{i,j} u_p(x_i, x_j)`` (≥ 0). Kernel: the inverse multiquadric (IMQ)
  ``k(x, y) = (c² + ‖x-y‖²/ℓ²)^β``, by default ``c = 1, β = -1/2, ℓ = 1`` (Gorham & Mackey 2017:
  with ``β ∈ (-1, 0)`` KSD → 0 only when q → p, unlike the Gaussian kernel in d ≥ 3). With
  ``q = c² + ‖r‖²/ℓ²``, ``r = x - y`` and d dimensions, in closed form

      u_p(x, y) = q^β s(x)ᵀs(y) - (2β/ℓ²) q^(β-1) [(s(x) - s(y))ᵀ r + d] - (4β(β-1)/ℓ⁴) q^(β-2) ‖r‖².

  Computed in float64, in blocks of ``block_size`` points (memory O(block² + block·d)).
* **Wild-bootstrap p-value** (Chwialkowski, Strathmann & Gretton 2016, Section 2.2; Leucht &
  Neumann 2013): the null distribution of the degenerate statistic is that of
  ``Σ W_i W_j u_p(x_i, x_j)`` (same normalisation, same pairs) with random signs ``W``;
  ``p = (1 + #{b: T_b ≥ T}) / (1 + B)`` over B replicates from an explicit generator.
  *Which signs*: for **i.i.d. points** (held-out data, exact draws, one state per independent
  chain) i.i.d. Rademacher signs (``flip_probability=None``). For **consecutive MCMC draws**
  (autocorrelated) that test rejects a correct sampler too often; use the Markov-chain
  bootstrap: ``W_1`` Rademacher and ``W_t = -W_{t-1}`` with probability ``a`` =
  ``flip_probability``, else ``W_t = W_{t-1}``, so that ``corr(W_t, W_{t+k}) = (1-2a)^k``.
  Take ``1/(2a)`` well above the chain's integrated autocorrelation time and ``a·n ≫ 1``; rows
  must be in time order (several chains: one after another, ``x.transpose(0, 1).reshape(-1, d)``
  for a ``(T, C, d)`` record). In tests/test_stein.py, on AR(1) draws with τ = 3 and n = 300,
  a = 0.02 rejects a correct target in 6.5% of runs at α = 0.05; i.i.d. signs in 35%.
* **Fisher divergence** ``F(q, p) = ½ E_{x~q} ‖s_model(x) - s_ref(x)‖²`` where the reference
  score is known (analytic targets, toy data with a closed-form density), estimated by the
  sample mean over ``x ~ q`` with standard error ``sd/√n`` (Hyvärinen 2005; Lyu 2009).

Samples are ``(N, *event)`` tensors, flattened to vectors; an energy maps ``(B, *event) -> (B,)``;
wherever an energy is asked for, its scores at ``x`` (a tensor of ``x``'s shape) do too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

import torch

from ebmlab.energy.base import EnergyFn, event_shape_of, score
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


ScoreSource = Union[EnergyFn, torch.Tensor]


@dataclass(frozen=True)
class IMQKernel:
    """``k(x, y) = (c² + ‖x-y‖²/ℓ²)^β`` with ``c > 0``, ``β < 0`` (``β ∈ (-1, 0)`` for
    convergence control, Gorham & Mackey 2017) and length scale ``ℓ > 0``."""

    c: float = 1.0
    beta: float = -0.5
    length_scale: float = 1.0

    def __post_init__(self) -> None:
        for name, value, ok in (("c", self.c, self.c > 0), ("beta", self.beta, self.beta < 0),
                                ("length_scale", self.length_scale, self.length_scale > 0)):
            if not (math.isfinite(value) and ok):
                raise ValueError(f"IMQKernel: {name} must be finite and {'< 0' if name == 'beta' else '> 0'}, "
                                 f"got {value}")


def stein_scores(energy: ScoreSource, x: torch.Tensor, batch_size: int = 4096, name: str = "energy") -> torch.Tensor:
    """The scores ``s(x) = -∇ₓE(x)`` at ``x (N, *event)`` as a float64 ``(N, d)`` tensor, in
    batches of ``batch_size``; ``energy`` may also be the scores themselves (``x``'s shape)."""
    if isinstance(energy, torch.Tensor):
        if energy.shape[0] != x.shape[0] or energy[0].numel() != x[0].numel():
            raise ValueError(f"metrics: the scores of {name} must have the shape of x {tuple(x.shape)}, "
                             f"got {tuple(energy.shape)}")
        out = energy.detach().reshape(len(x), -1).to(torch.float64)
    else:
        held = [t for t in [*getattr(energy, "parameters", list)(), *getattr(energy, "buffers", list)()]
                if t.is_floating_point()]
        z = x.detach().to(dtype=held[0].dtype, device=held[0].device) if held else x.detach()
        out = torch.cat([score(energy, z[i:i + batch_size]).reshape(len(z[i:i + batch_size]), -1)
                         for i in range(0, len(z), batch_size)]).to(device=x.device, dtype=torch.float64)
    bad = int((~torch.isfinite(out).all(1)).sum())
    if bad:
        raise ValueError(f"metrics: the score of {name} is NaN or infinite at {bad} of {len(out)} points")
    return out


def stein_kernel(x: torch.Tensor, y: torch.Tensor, score_x: torch.Tensor, score_y: torch.Tensor,
                 kernel: IMQKernel = IMQKernel()) -> torch.Tensor:
    """The Stein kernel matrix ``u_p(x_i, y_j)``, shape ``(n, m)``, for points ``x (n, d)``,
    ``y (m, d)`` and their scores (same shapes), in closed form (module docstring); float64."""
    x, y, sx, sy = (t.to(torch.float64) for t in (x, y, score_x, score_y))
    beta, inv_l2 = kernel.beta, 1.0 / kernel.length_scale**2
    r2 = ((x * x).sum(1)[:, None] + (y * y).sum(1)[None, :] - 2.0 * x @ y.T).clamp_min(0.0)
    q = kernel.c**2 + r2 * inv_l2
    # (s(x) - s(y))ᵀ(x - y), expanded so that no (n, m, d) tensor is formed
    s_dot_r = (sx * x).sum(1)[:, None] - sx @ y.T - x @ sy.T + (sy * y).sum(1)[None, :]
    qb1 = q.pow(beta - 1.0)
    return (q * qb1 * (sx @ sy.T) - 2.0 * beta * inv_l2 * qb1 * (s_dot_r + x.shape[1])
            - 4.0 * beta * (beta - 1.0) * inv_l2**2 * qb1 / q * r2)


@dataclass(frozen=True)
class KSDResult:
    """``ksd2``: the KSD² estimate (``statistic`` ``"u"``: unbiased, may be < 0; ``"v"``: ≥ 0);
    ``p_value``: wild-bootstrap p-value (None if not computed); ``num_bootstrap``: B;
    ``bootstrap``: ``"rademacher"`` (i.i.d. signs) or ``"markov"`` (``flip_probability``);
    ``kernel``: the IMQ kernel; ``num_examples``: n."""

    ksd2: float
    p_value: float | None
    statistic: str
    num_bootstrap: int
    bootstrap: str
    flip_probability: float | None
    kernel: IMQKernel
    num_examples: int


def _signs(n: int, num_bootstrap: int, flip_probability: float | None, generator: torch.Generator | None,
           device: torch.device) -> torch.Tensor:
    """``(n, B)`` wild-bootstrap multipliers in ±1: i.i.d., or a sign chain flipping with prob. ``a``."""
    where = generator.device if generator is not None else "cpu"
    first = torch.randint(0, 2, (1 if flip_probability is not None else n, num_bootstrap), generator=generator,
                          device=where).to(torch.float64) * 2.0 - 1.0
    if flip_probability is not None:
        flips = torch.rand(n - 1, num_bootstrap, generator=generator, dtype=torch.float64, device=where)
        steps = torch.where(flips < flip_probability, -1.0, 1.0).to(torch.float64)
        first = first * torch.cat([torch.ones_like(first), steps]).cumprod(0)
    return first.to(device)


def ksd_test(x: torch.Tensor, energy: ScoreSource, *, num_bootstrap: int = 500, kernel: IMQKernel = IMQKernel(),
             statistic: str = "u", flip_probability: float | None = None, block_size: int = 1024,
             generator: torch.Generator | None = None) -> KSDResult:
    """KSD² of the sample ``x (n, *event)`` against the energy (or its scores at ``x``) and the
    wild-bootstrap p-value of ``H0: x ~ p`` (module docstring; ``num_bootstrap = 0`` skips it).

    ``statistic``: ``"u"`` (pairs i ≠ j) or ``"v"`` (all pairs); ``flip_probability``: None for
    i.i.d. points, ``a ∈ (0, 1)`` for time-ordered MCMC output. Cost: n²/2 Stein-kernel entries
    and ``n²·B`` multiply-adds, in ``block_size`` blocks; memory O(block² + n·B).
    """
    flat = _as_samples(x, "x")
    if statistic not in ("u", "v"):
        raise ValueError(f"ksd_test: statistic must be 'u' or 'v', got {statistic!r}")
    if int(num_bootstrap) < 0 or int(block_size) < 1:
        raise ValueError(f"ksd_test: num_bootstrap must be >= 0 and block_size >= 1, got {num_bootstrap} "
                         f"and {block_size}")
    if flip_probability is not None and not 0 < flip_probability < 1:
        raise ValueError(f"ksd_test: flip_probability must be in (0, 1) or None, got {flip_probability}")
    if not isinstance(kernel, IMQKernel):
        raise ValueError(f"ksd_test: kernel must be an IMQKernel, got {type(kernel).__name__}")
    s = stein_scores(energy, x).to(flat.device)
    x, n = flat, len(flat)
    signs = _signs(n, int(num_bootstrap), flip_probability, generator, x.device) if num_bootstrap else None
    total = torch.zeros((), dtype=torch.float64, device=x.device)
    boot = torch.zeros(int(num_bootstrap), dtype=torch.float64, device=x.device)
    for i in range(0, n, block_size):
        for j in range(i, n, block_size):  # u_p is symmetric: blocks above the diagonal count twice
            h = stein_kernel(x[i:i + block_size], x[j:j + block_size], s[i:i + block_size], s[j:j + block_size],
                             kernel)
            if i == j and statistic == "u":
                h.fill_diagonal_(0.0)
            twice = 1.0 if i == j else 2.0
            total += twice * h.sum()
            if signs is not None:
                boot += twice * (signs[i:i + block_size] * (h @ signs[j:j + block_size])).sum(0)
    norm = n * (n - 1) if statistic == "u" else n * n
    observed = float(total) / norm
    p_value = None
    if signs is not None:
        p_value = (1 + int((boot / norm >= observed).sum())) / (1 + int(num_bootstrap))
    return KSDResult(observed, p_value, statistic, int(num_bootstrap),
                     "rademacher" if flip_probability is None else "markov",
                     None if flip_probability is None else float(flip_probability), kernel, n)


def ksd(x: torch.Tensor, energy: ScoreSource, *, kernel: IMQKernel = IMQKernel(), statistic: str = "u",
        block_size: int = 1024) -> float:
    """The KSD² estimate alone (:func:`ksd_test` without the bootstrap)."""
    return ksd_test(x, energy, num_bootstrap=0, kernel=kernel, statistic=statistic, block_size=block_size).ksd2


@dataclass(frozen=True)
class FisherResult:
    """``fisher_divergence``: ``½ mean_i ‖s_model(x_i) - s_ref(x_i)‖²``; ``stderr``: its standard
    error ``sd/√n``; ``num_examples``: n."""

    fisher_divergence: float
    stderr: float
    num_examples: int


def fisher_divergence(x: torch.Tensor, model: ScoreSource, reference: ScoreSource,
                      batch_size: int = 4096) -> FisherResult:
    """``F = ½ E_{x~q} ‖s_model(x) - s_ref(x)‖²`` estimated on ``x (n, *event) ~ q``.

    ``model`` and ``reference`` are energies (for a log-density, ``lambda z: -log_p(z)``) or
    their scores at ``x``. Exactly 0 when the scores agree; the standard error is that of a mean
    of n i.i.d. terms (for autocorrelated x it is too small).
    """
    _as_samples(x, "x")
    diff = stein_scores(model, x, batch_size, "the model") - stein_scores(reference, x, batch_size, "the reference")
    terms = 0.5 * diff.square().sum(1)
    return FisherResult(float(terms.mean()), float(terms.std() / math.sqrt(len(terms))), len(terms))


__all__ = ["FisherResult", "IMQKernel", "KSDResult", "MMDResult", "energy_distance", "fisher_divergence", "grid_kl",
           "ksd", "ksd_test", "median_bandwidth", "mmd2", "mmd_test", "stein_kernel", "stein_scores"]
