"""MCMC diagnostics: effective sample size, split R-hat and a per-dimension summary.

Draws are laid out as ``samples[t, c, *event]``: shape ``(num_draws, num_chains, *event)``,
the layout of :attr:`ebmlab.samplers.ChainRecord.samples`. Torch tensors and numpy arrays
are both accepted; everything is computed in numpy ``float64`` and returned per dimension of
the event, shape ``event``.

Notation (Gelman et al. 2013, *Bayesian Data Analysis* 3rd ed., §11.4; Vehtari et al. 2021,
"Rank-normalization, folding, and localization: an improved R-hat", Bayesian Analysis),
for ``M`` chains of ``N`` draws with chain means ``θ̄_m`` and chain variances ``s_m²``::

    W = (1/M) Σ_m s_m²                                   within-chain variance
    B = N/(M-1) Σ_m (θ̄_m - θ̄)²                           between-chain variance
    var⁺ = (N-1)/N · W + B/N                             pooled posterior-variance estimate

* **Effective sample size** ``ESS = N·M / τ`` with the integrated autocorrelation time
  ``τ = 1 + 2 Σ_{t≥1} ρ_t``. The combined autocorrelation across chains is
  ``ρ̂_t = 1 - (W - (1/M) Σ_m s_m² ρ̂_{t,m}) / var⁺`` (Vehtari et al. 2021, eq. 10), with the
  within-chain autocorrelations ``ρ̂_{t,m}`` computed by FFT. The infinite sum is truncated by
  Geyer's (1992) initial monotone sequence: pair sums ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` are kept
  while positive and made non-increasing, and ``τ̂ = -1 + 2 Σ_k P_k``. Pairing matters for
  antithetic chains (``ρ_1 < 0``): single lags alternate in sign, pairs do not, and
  ``ESS > N·M`` is then correct. As in Stan, ``τ̂`` is bounded below by ``1/log10(N·M)``.
* **Split R-hat** ``R̂ = sqrt(var⁺ / W)`` computed after splitting every chain into two
  halves, so that a trend within a chain shows as between-half disagreement. With
  ``rank_normalize=True`` the draws are first replaced by normal scores of their pooled
  ranks, ``z = Φ⁻¹((r - 3/8) / (S + 1/4))``, and the result is the larger of the R-hat of
  ``z`` (bulk) and of the normal scores of ``|θ - median θ|`` (tails) — Vehtari et al. 2021.

A dimension whose draws are all equal has no defined ESS or R-hat: both are NaN there, except
that R-hat is ``inf`` when the halves are constant at different values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
from scipy import fft as sp_fft
from scipy import stats

MIN_DRAWS = 4


# ----------------------------------------------------------------------------------------
# Input handling
# ----------------------------------------------------------------------------------------


def as_draws(samples: Any, where: str, min_draws: int = MIN_DRAWS, min_chains: int = 1) -> np.ndarray:
    """``samples`` as a finite float64 array of shape ``(num_draws, num_chains, *event)``.

    Accepts a torch tensor (any dtype or device) or anything ``np.asarray`` understands.
    Raises ``ValueError`` naming ``where`` when the shape or the values are unusable.
    """
    if hasattr(samples, "detach") and hasattr(samples, "cpu"):
        samples = samples.detach().cpu().double().numpy()
    draws = np.asarray(samples, dtype=np.float64)
    if draws.ndim < 2:
        raise ValueError(
            f"{where}: samples must have shape (num_draws, num_chains, *event), got {draws.shape}"
        )
    num_draws, num_chains = draws.shape[:2]
    if num_draws < min_draws:
        raise ValueError(f"{where}: need at least {min_draws} draws per chain, got {num_draws}")
    if num_chains < min_chains:
        raise ValueError(f"{where}: need at least {min_chains} chains, got {num_chains}")
    if not np.isfinite(draws).all():
        raise ValueError(f"{where}: samples contain NaN or infinite values")
    return draws


def _flat(draws: np.ndarray) -> np.ndarray:
    """``(N, M, *event) -> (N, M, D)`` with ``D = prod(event)``."""
    return draws.reshape(draws.shape[0], draws.shape[1], -1)


def split_chains(draws: np.ndarray) -> np.ndarray:
    """Split every chain in two halves: ``(N, M, ...) -> (N//2, 2M, ...)``.

    When ``N`` is odd the middle draw is dropped.
    """
    half = draws.shape[0] // 2
    return np.concatenate([draws[:half], draws[draws.shape[0] - half:]], axis=1)


def rank_normalize(samples: Any) -> np.ndarray:
    """Normal scores of the pooled ranks, per dimension (Vehtari et al. 2021, eq. 14).

    ``z = Φ⁻¹((r - 3/8) / (S + 1/4))`` where ``r`` is the rank of a draw among all
    ``S = N·M`` draws of its dimension (ties get their average rank). Same shape as input.
    """
    draws = as_draws(samples, "rank_normalize", min_draws=1)
    flat = draws.reshape(-1, *draws.shape[2:])
    ranks = stats.rankdata(flat, axis=0, method="average")
    total = flat.shape[0]
    return stats.norm.ppf((ranks - 0.375) / (total + 0.25)).reshape(draws.shape)


_normal_scores = rank_normalize  # the name the functions below use, free of their argument's name


# ----------------------------------------------------------------------------------------
# Variance decomposition and autocorrelation
# ----------------------------------------------------------------------------------------


def _within_between(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(W, B/N, var⁺)`` for draws ``(N, M, D)``, each of shape ``(D,)``."""
    num_draws, num_chains = flat.shape[:2]
    chain_mean = flat.mean(axis=0)
    within = flat.var(axis=0, ddof=1).mean(axis=0)
    between_over_n = chain_mean.var(axis=0, ddof=1) if num_chains > 1 else np.zeros(flat.shape[2])
    # Exact zeros where chains (or all draws) are constant, free of rounding in the means.
    chains_constant = (np.ptp(flat, axis=0) == 0).all(axis=0)
    within[chains_constant] = 0.0
    between_over_n[chains_constant & (np.ptp(chain_mean, axis=0) == 0)] = 0.0
    var_plus = (num_draws - 1) / num_draws * within + between_over_n
    return within, between_over_n, var_plus


def autocovariance(flat: np.ndarray) -> np.ndarray:
    """Within-chain autocovariances ``γ_m(t) = (1/N) Σ_{i<N-t} (θ_i - θ̄)(θ_{i+t} - θ̄)``.

    ``flat`` has shape ``(N, M, D)``; returns ``(N, M, D)`` for lags ``t = 0..N-1``, computed
    with a zero-padded FFT (the ``1/N`` normalisation keeps the sequence positive definite).
    """
    num_draws = flat.shape[0]
    centred = flat - flat.mean(axis=0, keepdims=True)
    size = sp_fft.next_fast_len(2 * num_draws, real=True)
    spectrum = sp_fft.rfft(centred, n=size, axis=0)
    acov = sp_fft.irfft(spectrum * spectrum.conj(), n=size, axis=0)[:num_draws]
    return acov / num_draws


def combined_autocorrelation(flat: np.ndarray) -> np.ndarray:
    """Multi-chain autocorrelation ``ρ̂_t`` (Vehtari et al. 2021, eq. 10), shape ``(N, D)``.

    ``ρ̂_t = 1 - (W - (1/M) Σ_m s_m² ρ̂_{t,m}) / var⁺`` with ``s_m² ρ̂_{t,m} = γ_m(t)·N/(N-1)``.
    Dimensions with ``var⁺ = 0`` (all draws equal) give NaN.
    """
    num_draws = flat.shape[0]
    within, _, var_plus = _within_between(flat)
    acov_mean = autocovariance(flat).mean(axis=1) * (num_draws / (num_draws - 1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (within - acov_mean) / var_plus
    rho[:, var_plus <= 0] = np.nan
    return rho


def _geyer_tau(rho: np.ndarray, total_draws: int) -> np.ndarray:
    """Integrated autocorrelation time from ``ρ̂`` ``(N, D)`` by Geyer's initial monotone sequence.

    ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` is summed over the initial run of positive pairs after
    replacing each by the running minimum; ``τ̂ = max(-1 + 2 Σ P_k, 1/log10(N·M))``.
    """
    num_pairs = rho.shape[0] // 2
    pairs = rho[0:2 * num_pairs:2] + rho[1:2 * num_pairs:2]
    with np.errstate(invalid="ignore"):
        positive = np.logical_and.accumulate(pairs > 0, axis=0)
    monotone = np.minimum.accumulate(np.where(positive, pairs, np.inf), axis=0)
    tau = -1.0 + 2.0 * np.where(positive, monotone, 0.0).sum(axis=0)
    tau = np.maximum(tau, 1.0 / math.log10(max(total_draws, 2)))
    tau[np.isnan(rho[0])] = np.nan
    return tau


# ----------------------------------------------------------------------------------------
# Public diagnostics
# ----------------------------------------------------------------------------------------


def effective_sample_size(samples: Any, rank_normalize: bool = False) -> np.ndarray:
    """Multi-chain effective sample size per dimension, ``ESS = N·M / τ̂``.

    Args:
        samples: draws of shape ``(num_draws N >= 4, num_chains M >= 1, *event)``.
        rank_normalize: compute it on rank-normalised draws (robust to heavy tails; the
            bulk-ESS of Vehtari et al. 2021 without their splitting of chains); the plain
            ESS otherwise.

    Returns:
        float64 array of shape ``event`` (0-d for scalar draws). Values may exceed ``N·M``
        for antithetic chains (at most ``N·M·log10(N·M)``); NaN where all draws are equal.
    """
    draws = as_draws(samples, "effective_sample_size")
    if rank_normalize:
        draws = _normal_scores(draws)
    flat = _flat(draws)
    total = flat.shape[0] * flat.shape[1]
    tau = _geyer_tau(combined_autocorrelation(flat), total)
    return (total / tau).reshape(draws.shape[2:])


def _rhat_flat(flat: np.ndarray) -> np.ndarray:
    within, between_over_n, var_plus = _within_between(flat)
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt(var_plus / within)
    rhat[(within <= 0) & (between_over_n > 0)] = np.inf
    rhat[(within <= 0) & (between_over_n <= 0)] = np.nan
    return rhat


def split_rhat(samples: Any, rank_normalize: bool = False) -> np.ndarray:
    """Split R-hat per dimension, ``R̂ = sqrt(var⁺ / W)`` over half-chains.

    Args:
        samples: draws of shape ``(num_draws N >= 4, num_chains M >= 2, *event)``; every
            chain is split into halves of ``N//2`` draws (Gelman et al. 2013, §11.4).
        rank_normalize: use the rank-normalised, folded R-hat of Vehtari et al. (2021):
            ``max(R̂(z), R̂(z_folded))``. Otherwise the classic split R-hat of the raw draws.

    Returns:
        float64 array of shape ``event``; ≈ 1 for converged chains, > 1.01 (strict) or
        > 1.1 (lenient) signals disagreement between chains.
    """
    draws = as_draws(samples, "split_rhat", min_chains=2)
    halves = _flat(split_chains(draws))
    if not rank_normalize:
        return _rhat_flat(halves).reshape(draws.shape[2:])
    bulk = _rhat_flat(_flat(_normal_scores(halves)))
    folded = np.abs(halves - np.median(halves.reshape(-1, halves.shape[2]), axis=0))
    tail = _rhat_flat(_flat(_normal_scores(folded)))
    return np.fmax(bulk, tail).reshape(draws.shape[2:])


# ----------------------------------------------------------------------------------------
# Summary table
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AcceptanceSummary:
    """Per-run sampler statistics taken from a :class:`~ebmlab.samplers.ChainRecord`.

    ``mean``/``min``/``max`` are over the chains' acceptance rates; ``divergences`` counts
    NaN/infinite proposals over all chains, ``chains_with_divergences`` the chains with any.
    """

    mean: float
    min: float
    max: float
    divergences: int
    step_size: float | None
    sampler: str
    chains_with_divergences: int = 0


@dataclass(frozen=True)
class Summary:
    """Per-dimension statistics of MCMC draws; every array has shape ``(len(names),)``.

    ``names`` label the rows: ``"x[i]"`` (or ``"x[i,j,k]"`` for image events) for the first
    dimensions of the flattened event, and ``"energy"`` when built from a record.
    """

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    ess: np.ndarray
    rhat: np.ndarray
    num_draws: int
    num_chains: int
    num_dims: int
    acceptance: AcceptanceSummary | None = None


def _dim_names(event: tuple[int, ...], count: int) -> list[str]:
    if not event:
        return ["x"]
    names = []
    for i in range(count):
        idx = np.unravel_index(i, event)
        names.append("x[" + ",".join(str(int(j)) for j in idx) + "]")
    return names


def _rows(flat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """mean, std, ESS, R-hat of ``(N, M, D)`` draws; R-hat is NaN for a single chain."""
    pooled = flat.reshape(-1, flat.shape[2])
    ess = effective_sample_size(flat)
    rhat = split_rhat(flat) if flat.shape[1] >= 2 else np.full(flat.shape[2], np.nan)
    return pooled.mean(axis=0), pooled.std(axis=0, ddof=1), ess, rhat


def summary(record_or_samples: Any, max_dims: int = 8) -> Summary:
    """Mean, std, ESS and split R-hat of the first ``max_dims`` dimensions.

    Args:
        record_or_samples: a :class:`~ebmlab.samplers.ChainRecord` (its ``samples``, plus an
            ``energy`` row and the acceptance statistics) or draws of shape
            ``(num_draws >= 4, num_chains, *event)``.
        max_dims: how many leading dimensions of the flattened event to report (>= 1).

    R-hat needs two chains and is NaN otherwise.
    """
    if int(max_dims) < 1:
        raise ValueError(f"summary: max_dims must be >= 1, got {max_dims}")
    record = record_or_samples if hasattr(record_or_samples, "acceptance_rate") else None
    samples = record.samples if record is not None else record_or_samples
    draws = as_draws(samples, "summary")
    flat = _flat(draws)
    shown = min(int(max_dims), flat.shape[2])
    names = _dim_names(tuple(draws.shape[2:]), shown)
    columns = [np.asarray(c) for c in _rows(flat[:, :, :shown])]
    acceptance = None
    if record is not None:
        energy = as_draws(record.energy, "summary (energy)")[:, :, None]
        columns = [np.concatenate([c, e]) for c, e in zip(columns, _rows(energy))]
        names.append("energy")
        rate = record.acceptance_rate.detach().double().cpu().numpy()
        acceptance = AcceptanceSummary(
            mean=float(rate.mean()), min=float(rate.min()), max=float(rate.max()),
            divergences=int(record.divergences.sum()),
            chains_with_divergences=int((record.divergences > 0).sum()),
            step_size=None if record.step_size is None else float(record.step_size),
            sampler=getattr(record.kernel, "name", "") or type(record.kernel).__name__,
        )
    mean, std, ess, rhat = columns
    return Summary(tuple(names), mean, std, ess, rhat, draws.shape[0], draws.shape[1],
                   flat.shape[2], acceptance)


def _fmt(value: float, digits: int) -> str:
    """``digits`` decimals, or that many significant digits for very large or small values."""
    if not np.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def format_summary(result: Summary | Any, max_dims: int = 8) -> str:
    """A plain-text table of a :class:`Summary` (or of ``summary(result, max_dims)``).

    One row per reported dimension with columns ``mean, std, ess, r_hat``, then a line with
    the draw counts and, for a record, the acceptance rate, divergences and step size. This is
    the one run summary: ``ebmlab sample`` prints it between its own header and footer.
    """
    if not isinstance(result, Summary):
        result = summary(result, max_dims=max_dims)
    header = ("", "mean", "std", "ess", "r_hat")
    rows: list[Sequence[str]] = [header]
    for i, name in enumerate(result.names):
        rows.append((name, _fmt(result.mean[i], 3), _fmt(result.std[i], 3),
                     "nan" if np.isnan(result.ess[i]) else f"{result.ess[i]:.0f}", _fmt(result.rhat[i], 3)))
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    lines = ["  ".join(r[0].ljust(widths[0]) if j == 0 else r[j].rjust(widths[j]) for j in range(len(r)))
             for r in rows]
    shown = sum(1 for n in result.names if n != "energy")
    lines.append(f"{result.num_draws} draws x {result.num_chains} chains; "
                 f"showing {shown} of {result.num_dims} dimension(s)")
    acc = result.acceptance
    if acc is not None:
        step = "" if acc.step_size is None else f"; step_size {acc.step_size:.4g}"
        where = f" in {acc.chains_with_divergences} chain(s)" if acc.divergences else ""
        lines.append(f"{acc.sampler}: acceptance mean {acc.mean:.3f} (min {acc.min:.3f}, "
                     f"max {acc.max:.3f}); divergences {acc.divergences}{where}{step}")
    return "\n".join(lines)
