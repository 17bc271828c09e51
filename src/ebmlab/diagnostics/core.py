"""ESS, R-hat and Monte-Carlo standard errors as ArviZ computes them (Vehtari et al. 2021).

Draws are laid out as ``samples[t, c, *event]``: shape ``(num_draws N, num_chains M, *event)``,
the layout of :attr:`ebmlab.samplers.ChainRecord.samples` (ArviZ's ``(chain, draw, *event)`` is
``np.swapaxes(x, 0, 1)``). Torch tensors and numpy arrays are accepted; everything is computed
in numpy ``float64`` and returned per dimension of the event, shape ``event``.

Source: Vehtari, Gelman, Simpson, Carpenter & Bürkner (2021), "Rank-normalization, folding,
and localization: an improved R-hat for assessing convergence of MCMC", Bayesian Analysis
16(2); every formula below follows ArviZ's implementation of it (arviz-stats 0.8, the
statistics of ArviZ ≥ 1.0, and arviz 0.x, which agree except where said) to rounding error.

* **Split chains**: every chain is cut into halves of ``n = N//2`` draws (the middle draw is
  dropped when N is odd), giving ``2M`` chains, so that a trend within a chain shows up.
* **ESS** of ``M'`` chains of ``n`` draws, ``ESS = n·M' / τ̂`` with
  ``ρ̂_t = 1 - (W - (1/M') Σ_m γ_m(t)) / var⁺`` (eq. 10; ``γ_m`` the within-chain
  autocovariance with ``1/n`` normalisation, ``W`` the mean within-chain variance,
  ``var⁺ = (n-1)/n · W + var(chain means)``), ``ρ̂_0 = 1``, and ``τ̂`` from Geyer's (1992)
  initial positive and monotone sequences of pair sums ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` in Stan's
  form: ``τ̂ = -1 + 2 Σ_{k<K} P̃_k + ρ̂_{2K}`` (``K`` the first pair that is not positive,
  ``P̃`` the running minimum, the last term kept when positive), ``τ̂ ≥ 1/log10(n·M')``.
  ESS can exceed ``N·M`` for antithetic chains.
* **Bulk ESS**: the ESS of the rank-normalised split chains,
  ``z = Φ⁻¹((r - 3/8)/(S + 1/4))`` with ``r`` the pooled rank among all ``S`` split draws.
* **Tail ESS**: ``min`` of the ESS of the split indicators ``I(θ ≤ q_p)`` at ``p = 0.05`` and
  ``0.95`` (``q_p`` numpy's linear quantile of all draws). ArviZ ≥ 1.0's ``ess(method="tail")``
  without ``prob`` uses its ``ci_prob`` 0.89, i.e. ``p = 0.11, 0.89``; pass ``prob=0.89`` for that.
* **R-hat**: ``R̂ = sqrt(var⁺ / W)`` over split chains; rank-normalised (the default) it is
  ``max(R̂(z), R̂(z_folded))``, ``z_folded`` the normal scores of ``|θ - median θ|``.
* **MCSE of the mean**: ``sd(θ) / sqrt(ESS_mean)``, ``ESS_mean`` the ESS of the split raw draws.
* **MCSE of the sd** (first-order Taylor expansion): with ``s² = mean((θ - θ̄)²)``,
  ``sqrt((mean((θ - θ̄)⁴) - s⁴) / ESS / (4 s²))``. ArviZ ≥ 1.0 takes ``ESS = ESS_mean(θ)``
  (the default, ``ess_of="draws"``); arviz 0.x takes ``ESS_mean((θ - θ̄)²)`` (``ess_of="squares"``).

A dimension whose draws are all equal has no defined ESS, MCSE or R-hat: all are NaN there
(ArviZ reports ``N·M`` for such an ESS), except that R-hat is ``inf`` when chains are constant
at different values.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import fft as sp_fft
from scipy import stats

MIN_DRAWS = 4
TAIL_PROB = (0.05, 0.95)
ESS_METHODS = ("bulk", "tail", "mean", "identity")


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
    """Split every chain in two halves: ``(N, M, ...) -> (N//2, 2M, ...)``, first halves first.

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
    return _normal_scores(draws.reshape(draws.shape[0], draws.shape[1], -1)).reshape(draws.shape)


def _normal_scores(flat: np.ndarray) -> np.ndarray:
    """:func:`rank_normalize` of ``(N, M, D)`` draws (ranked along contiguous rows: 3× faster)."""
    pooled = np.ascontiguousarray(flat.reshape(-1, flat.shape[2]).T)
    ranks = stats.rankdata(pooled, axis=1, method="average")
    return stats.norm.ppf((ranks - 0.375) / (pooled.shape[1] + 0.25)).T.reshape(flat.shape)


def _constant(flat: np.ndarray) -> np.ndarray:
    """``(D,)``: the dimensions whose draws ``(N, M, D)`` are all equal."""
    return np.ptp(flat.reshape(-1, flat.shape[2]), axis=0) == 0


# ----------------------------------------------------------------------------------------
# Autocorrelation and the ESS of (split) chains
# ----------------------------------------------------------------------------------------


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
    """Multi-chain autocorrelation ``ρ̂_t`` (Vehtari et al. 2021, eq. 10) of ``(N, M, D)`` draws,
    shape ``(N, D)``, with ``ρ̂_0 = 1``; NaN where ``var⁺ = 0``. No splitting here."""
    num_draws, num_chains = flat.shape[:2]
    acov = autocovariance(flat)
    mean_var = acov[0].mean(axis=0) * num_draws / (num_draws - 1.0)
    var_plus = mean_var * (num_draws - 1.0) / num_draws
    if num_chains > 1:
        var_plus = var_plus + flat.mean(axis=0).var(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = 1.0 - (mean_var - acov.mean(axis=1)) / var_plus
    rho[0] = 1.0
    rho[:, ~(var_plus > 0)] = np.nan
    return rho


def _geyer_tau(rho: np.ndarray, total_draws: int) -> np.ndarray:
    """``τ̂`` from ``ρ̂`` ``(n, D)`` exactly as Stan and ArviZ truncate it (module docstring).

    Pairs ``P_k = ρ̂_{2k} + ρ̂_{2k+1}`` are examined for ``k ≤ (n-3)//2``; ``K`` is the first
    with ``P_K ≤ 0`` (else the last examined); ``τ̂ = -1 + 2 Σ_{k<K} min_{j≤k} P_j + tail``
    where ``tail = ρ̂_{2K}`` if it is positive or if pair K was kept (``P_K ≥ 0``, K ≥ 1), else 0.
    """
    n = rho.shape[0]
    last = max((n - 3) // 2, 0)
    pairs = rho[0:2 * last + 2:2] + rho[1:2 * last + 2:2]  # (last + 1, D)
    with np.errstate(invalid="ignore"):
        stop = ~(pairs > 0)
        k_stop = np.where(stop.any(axis=0), np.argmax(stop, axis=0), last)
        index = np.arange(pairs.shape[0])[:, None]
        monotone = np.minimum.accumulate(pairs, axis=0)
        summed = np.where(index < k_stop, monotone, 0.0).sum(axis=0)
        even = np.take_along_axis(rho, 2 * k_stop[None], axis=0)[0]
        kept = (k_stop >= 1) & (np.take_along_axis(pairs, k_stop[None], axis=0)[0] >= 0)
        tail = np.where((even > 0) | kept, even, 0.0)
    tau = np.maximum(-1.0 + 2.0 * summed + tail, 1.0 / math.log10(total_draws))
    tau[np.isnan(rho[1])] = np.nan
    return tau


def _ess_flat(flat: np.ndarray) -> np.ndarray:
    """ESS of ``(n, M', D)`` draws taken as they are (ArviZ's ``_ess``), ``(D,)``; chains
    whose values span less than float64 resolution give ``n·M'`` (as ArviZ)."""
    total = flat.shape[0] * flat.shape[1]
    rho = combined_autocorrelation(flat)
    ess = total / _geyer_tau(rho, total)
    ess[np.ptp(flat.reshape(-1, flat.shape[2]), axis=0) < np.finfo(np.float64).resolution] = total
    return ess


def _split_ess(flat: np.ndarray) -> np.ndarray:
    return _ess_flat(split_chains(flat))


def _bulk(flat: np.ndarray, z_halves: np.ndarray | None = None) -> np.ndarray:
    return _ess_flat(_normal_scores(split_chains(flat)) if z_halves is None else z_halves)


def _tail(flat: np.ndarray, prob: tuple[float, float]) -> np.ndarray:
    pooled = flat.reshape(-1, flat.shape[2])
    low, high = (_split_ess((flat <= np.quantile(pooled, p, axis=0)).astype(np.float64)) for p in prob)
    return np.minimum(low, high)


def _tail_prob(prob: Any) -> tuple[float, float]:
    pair = (prob, 1.0 - prob) if np.ndim(prob) == 0 else tuple(prob)
    if len(pair) != 2 or not all(0.0 < float(p) < 1.0 for p in pair):
        raise ValueError(f"ess_tail: prob must be a probability in (0, 1) or a pair of them, got {prob!r}")
    return tuple(sorted(float(p) for p in pair))


def _nan_where_constant(values: np.ndarray, flat: np.ndarray, event: tuple[int, ...]) -> np.ndarray:
    values = np.array(values, dtype=np.float64)
    values[_constant(flat)] = np.nan
    return values.reshape(event)


# ----------------------------------------------------------------------------------------
# Public diagnostics
# ----------------------------------------------------------------------------------------


def effective_sample_size(samples: Any, method: str = "bulk", prob: Any = TAIL_PROB) -> np.ndarray:
    """Multi-chain effective sample size per dimension (module docstring).

    Args:
        samples: draws of shape ``(num_draws N >= 4, num_chains M >= 1, *event)``.
        method: ``"bulk"`` (split, rank-normalised; the default, :func:`ess_bulk`), ``"tail"``
            (:func:`ess_tail`), ``"mean"`` (split raw draws: the ESS behind the MCSE of the
            mean, :func:`ess_mean`), or ``"identity"`` (raw draws, chains not split: ArviZ's
            ``"identity"``, what ebmlab reported before 0.2 — it cannot see a trend).
        prob: the tail quantiles for ``"tail"``.

    Returns:
        float64 array of shape ``event`` (0-d for scalar draws). Values may exceed ``N·M``
        for antithetic chains (at most ``N·M·log10(N·M)``); NaN where all draws are equal.
    """
    if method not in ESS_METHODS:
        raise ValueError(f"effective_sample_size: method must be one of {', '.join(ESS_METHODS)}, got {method!r}")
    draws = as_draws(samples, "effective_sample_size")
    flat = _flat(draws)
    if method == "bulk":
        values = _bulk(flat)
    elif method == "tail":
        values = _tail(flat, _tail_prob(prob))
    elif method == "mean":
        values = _split_ess(flat)
    else:
        values = _ess_flat(flat)
    return _nan_where_constant(values, flat, draws.shape[2:])


def ess_bulk(samples: Any) -> np.ndarray:
    """Bulk ESS: the ESS of the rank-normalised split chains, shape ``event`` (module docstring)."""
    return effective_sample_size(samples, "bulk")


def ess_tail(samples: Any, prob: Any = TAIL_PROB) -> np.ndarray:
    """Tail ESS: ``min`` over ``p`` in ``prob`` (default 5 % and 95 %; a float ``p`` means
    ``(p, 1-p)``) of the split ESS of ``I(θ ≤ q_p)``, shape ``event`` (module docstring)."""
    return effective_sample_size(samples, "tail", prob)


def ess_mean(samples: Any) -> np.ndarray:
    """The ESS of the split raw draws (ArviZ's ``method="mean"``), shape ``event``."""
    return effective_sample_size(samples, "mean")


def _rhat_flat(flat: np.ndarray) -> np.ndarray:
    """``sqrt(var⁺ / W)`` of ``(n, M', D)`` chains as they are, ``(D,)``."""
    num_draws = flat.shape[0]
    chain_mean = flat.mean(axis=0)
    within = flat.var(axis=0, ddof=1).mean(axis=0)
    between_over_n = chain_mean.var(axis=0, ddof=1)
    chains_constant = (np.ptp(flat, axis=0) == 0).all(axis=0)  # exact zeros, free of rounding
    within[chains_constant] = 0.0
    between_over_n[chains_constant & (np.ptp(chain_mean, axis=0) == 0)] = 0.0
    var_plus = (num_draws - 1) / num_draws * within + between_over_n
    with np.errstate(divide="ignore", invalid="ignore"):
        rhat = np.sqrt(var_plus / within)
    rhat[(within <= 0) & (between_over_n > 0)] = np.inf
    rhat[(within <= 0) & (between_over_n <= 0)] = np.nan
    return rhat


def split_rhat(samples: Any, rank_normalize: bool = True) -> np.ndarray:
    """Split R-hat per dimension, ``R̂ = sqrt(var⁺ / W)`` over half-chains.

    Args:
        samples: draws of shape ``(num_draws N >= 4, num_chains M >= 2, *event)``; every
            chain is split into halves of ``N//2`` draws (Gelman et al. 2013, §11.4).
        rank_normalize: the rank-normalised, folded R-hat of Vehtari et al. (2021),
            ``max(R̂(z), R̂(z_folded))`` — the default, ArviZ's ``rhat(method="rank")``;
            ``False``: the classic split R-hat of the raw draws (``method="split"``).

    Returns:
        float64 array of shape ``event``; ≈ 1 for converged chains, > 1.01 signals
        disagreement between chains (Vehtari et al. 2021 recommend R̂ < 1.01).
    """
    draws = as_draws(samples, "split_rhat", min_chains=2)
    halves = _flat(split_chains(draws))
    if not rank_normalize:
        return _rhat_flat(halves).reshape(draws.shape[2:])
    return _rank_rhat(halves).reshape(draws.shape[2:])


def _rank_rhat(halves: np.ndarray, z_halves: np.ndarray | None = None) -> np.ndarray:
    """``max(R̂(z), R̂(z_folded))`` of split chains ``(n, 2M, D)`` (``z_halves``: their normal scores)."""
    bulk = _rhat_flat(_normal_scores(halves) if z_halves is None else z_halves)
    folded = np.abs(halves - np.median(halves.reshape(-1, halves.shape[2]), axis=0))
    rhat = np.fmax(bulk, _rhat_flat(_normal_scores(folded)))
    rhat[np.isnan(_rhat_flat(halves))] = np.nan  # all draws equal: no R-hat
    return rhat


def _mcse_mean(flat: np.ndarray, ess: np.ndarray) -> np.ndarray:
    return flat.reshape(-1, flat.shape[2]).std(axis=0, ddof=1) / np.sqrt(ess)


def _mcse_sd(flat: np.ndarray, ess_of: str, ess: np.ndarray | None = None) -> np.ndarray:
    if ess_of not in ("draws", "squares"):
        raise ValueError(f"mcse_sd: ess_of must be 'draws' (ArviZ >= 1.0) or 'squares' (arviz 0.x), got {ess_of!r}")
    squares = (flat - flat.reshape(-1, flat.shape[2]).mean(axis=0)) ** 2
    if ess_of == "squares":
        ess = _split_ess(squares)
    elif ess is None:
        ess = _split_ess(flat)
    pooled = squares.reshape(-1, flat.shape[2])
    second = pooled.mean(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt(((pooled**2).mean(axis=0) - second**2) / ess / second / 4.0)


def mcse_mean(samples: Any) -> np.ndarray:
    """Monte-Carlo standard error of the mean, ``sd / sqrt(ESS_mean)``, shape ``event``."""
    draws = as_draws(samples, "mcse_mean")
    flat = _flat(draws)
    return _nan_where_constant(_mcse_mean(flat, _split_ess(flat)), flat, draws.shape[2:])


def mcse_sd(samples: Any, ess_of: str = "draws") -> np.ndarray:
    """Monte-Carlo standard error of the standard deviation, shape ``event`` (module docstring):
    ``ess_of="draws"`` as ArviZ ≥ 1.0 (arviz-stats), ``"squares"`` as arviz 0.x."""
    draws = as_draws(samples, "mcse_sd")
    flat = _flat(draws)
    return _nan_where_constant(_mcse_sd(flat, ess_of), flat, draws.shape[2:])


__all__ = ["as_draws", "autocovariance", "combined_autocorrelation", "effective_sample_size", "ess_bulk",
           "ess_mean", "ess_tail", "mcse_mean", "mcse_sd", "rank_normalize", "split_chains", "split_rhat"]
