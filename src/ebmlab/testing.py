"""Statistical assertions for samplers, with tolerances derived from Monte-Carlo error.

Every check here compares *independent* draws (e.g. the endpoints of independent chains)
with an exact answer, and its tolerance comes from the draws' own Monte-Carlo standard
error or from an exact tail bound — never from a number picked by eye.

Continuous targets — moments. For ``n`` independent draws ``x`` of shape ``(n, d)`` with
sample mean ``m`` and sample covariance ``S``,

    SE(m_i)   = sqrt(S_ii / n)
    SE(S_ij)  = sqrt(Var[(x_i - m_i)(x_j - m_j)] / n)

(the second is the standard error of a mean of the products, estimated by their sample
variance). :func:`assert_moments_close` fails when any ``|z| = |estimate - exact| / SE``
exceeds ``z`` (default 4.5, a two-sided false-alarm rate of 6.8e-6 per entry).

Discrete targets — distributions over all ``K^D`` states, indexed in the order of
:func:`ebmlab.energy.enumerate_states` (site 0 is the most significant base-K digit):

* :func:`chisquare_pvalue` — Pearson's χ² goodness of fit, pooling cells whose expected
  count is below ``min_expected`` so the χ² approximation holds (Cochran 1954).
* :func:`total_variation_bound` — ``E[TV] + sqrt(log(1/α) / (2n))``: the exact expected
  total variation of a multinomial sample (De Moivre's mean absolute deviation of each
  binomial count) plus McDiarmid's (1989) deviation bound, since moving one of the ``n``
  draws changes TV by at most ``1/n``; exceeded with probability at most ``α``.
* :func:`transition_chisquare_pvalue` — one-step transition counts from many start states
  against an exact transition matrix (the rows' χ² statistics add up).

Oracles: :func:`enumerate_probabilities` gives the exact ``p`` of a small discrete model by
enumeration and :func:`sample_enumerated` draws from it exactly, to start chains on target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch
from scipy import stats

from ebmlab.energy.base import EnergyFn, energy as eval_energy
from ebmlab.energy.enumeration import enumerate_states

DEFAULT_Z = 4.5
DEFAULT_P_VALUE = 1e-5


# --------------------------------------------------------------------------------------
# Moments of continuous draws
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MomentCheck:
    """z-scores of a sample's mean and covariance against exact values.

    Attributes:
        mean: sample mean, shape ``(d,)``.
        covariance: sample covariance, shape ``(d, d)``.
        z_mean: ``(m_i - μ_i) / SE(m_i)``, shape ``(d,)``.
        z_cov: ``(S_ij - Σ_ij) / SE(S_ij)``, shape ``(d, d)`` (symmetric).
        num_samples: ``n``.
    """

    mean: torch.Tensor
    covariance: torch.Tensor
    z_mean: torch.Tensor
    z_cov: torch.Tensor
    num_samples: int

    @property
    def max_abs_z(self) -> float:
        """The largest ``|z|`` over the mean and the covariance entries."""
        return max(float(self.z_mean.abs().max()), float(self.z_cov.abs().max()))

    def describe(self) -> str:
        worst_mean = int(self.z_mean.abs().argmax())
        flat = int(self.z_cov.abs().argmax())
        i, j = divmod(flat, self.z_cov.shape[1])
        return (
            f"n={self.num_samples}: max |z| = {self.max_abs_z:.2f}; "
            f"mean[{worst_mean}] z = {float(self.z_mean[worst_mean]):.2f}, "
            f"cov[{i},{j}] z = {float(self.z_cov[i, j]):.2f}; "
            f"sample mean {self.mean.tolist()}, sample covariance {self.covariance.tolist()}"
        )


def moment_z_scores(samples: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor) -> MomentCheck:
    """z-scores of the sample mean and covariance of independent ``samples`` (``(n, *event)``).

    Event dims are flattened to ``d``; ``mean`` is ``(d,)`` and ``covariance`` ``(d, d)``
    (any shapes that flatten to those). Computed in float64.
    """
    x = torch.as_tensor(samples).detach().reshape(samples.shape[0], -1).to(torch.float64).cpu()
    n, d = x.shape
    if n < 2:
        raise ValueError(f"moment_z_scores: need at least 2 samples, got {n}")
    mu = torch.as_tensor(mean).detach().to(torch.float64).cpu().reshape(-1)
    sigma = torch.as_tensor(covariance).detach().to(torch.float64).cpu().reshape(d, d)
    if mu.shape != (d,):
        raise ValueError(f"moment_z_scores: mean must have {d} entries, got shape {tuple(mu.shape)}")
    if not torch.isfinite(x).all():
        raise AssertionError(f"moment_z_scores: {int((~torch.isfinite(x)).any(1).sum())} of {n} samples are not finite")
    m = x.mean(0)
    centred = x - m
    products = centred[:, :, None] * centred[:, None, :]  # (n, d, d)
    cov = products.sum(0) / (n - 1)
    se_mean = torch.sqrt(torch.diagonal(cov) / n)
    se_cov = torch.sqrt(products.var(0) / n)
    return MomentCheck(
        mean=m, covariance=cov, z_mean=(m - mu) / se_mean, z_cov=(cov - sigma) / se_cov, num_samples=n
    )


def assert_moments_close(samples: torch.Tensor, mean: torch.Tensor, covariance: torch.Tensor,
                         z: float = DEFAULT_Z) -> MomentCheck:
    """Assert the sample mean and covariance of independent ``samples`` match within ``z`` SEs.

    Raises ``AssertionError`` describing the worst entry; returns the :class:`MomentCheck`.
    The smallest detectable error in the mean is about ``z·sqrt(Σ_ii/n)``, in a variance
    about ``z·sqrt(Var[(x_i-μ_i)²]/n)`` (``z·sqrt(2/n)·Σ_ii`` for a Gaussian).
    """
    check = moment_z_scores(samples, mean, covariance)
    if not check.max_abs_z <= z:
        raise AssertionError(f"moments differ by more than {z} Monte-Carlo standard errors: {check.describe()}")
    return check


# --------------------------------------------------------------------------------------
# Distributions of discrete draws
# --------------------------------------------------------------------------------------


def state_index(x: torch.Tensor, num_states: int = 2) -> torch.Tensor:
    """Enumeration index of each state ``x`` (shape ``(n, *event)``, integer values), shape ``(n,)``.

    ``index = Σ_i x_i K^{D-1-i}`` over the flattened sites, the order of
    :func:`ebmlab.energy.enumerate_states`.
    """
    flat = x.detach().reshape(x.shape[0], -1).round().long()
    if flat.numel() and (flat.min() < 0 or flat.max() >= num_states):
        raise ValueError(f"state_index: values must lie in 0..{num_states - 1}, got range "
                         f"[{int(flat.min())}, {int(flat.max())}]")
    d = flat.shape[1]
    if num_states**d > 2**62:
        raise ValueError(f"state_index: {num_states}^{d} states do not fit in a 64-bit index")
    powers = num_states ** torch.arange(d - 1, -1, -1, device=flat.device)
    return (flat * powers).sum(1)


def state_counts(x: torch.Tensor, num_states: int = 2) -> torch.Tensor:
    """Counts of each of the ``K^D`` states among the draws ``x`` (``(n, *event)``), float64."""
    d = x[0].numel()
    return torch.bincount(state_index(x, num_states).cpu(), minlength=num_states**d).to(torch.float64)


def empirical_distribution(x: torch.Tensor, num_states: int = 2) -> torch.Tensor:
    """Frequencies of each of the ``K^D`` states among the draws ``x``, shape ``(K^D,)``, float64."""
    counts = state_counts(x, num_states)
    return counts / counts.sum()


def enumerate_probabilities(energy: EnergyFn, event_shape: Sequence[int], num_states: int = 2) -> torch.Tensor:
    """Exact ``p(x) = exp(-E(x)) / Z`` of every state, in enumeration order, float64 ``(K^D,)``.

    Evaluates the energy on all ``K^D`` states (keep ``K^D`` to a few million).
    """
    shape = tuple(int(s) for s in event_shape)
    d = math.prod(shape)
    with torch.no_grad():
        energies = torch.cat([
            eval_energy(energy, batch.view(-1, *shape)).to(torch.float64)
            for batch in enumerate_states(d, num_states, dtype=torch.float64)
        ])
    return torch.softmax(-energies, dim=0)


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    """``TV(p, q) = ½ Σ |p_i - q_i|`` of two probability vectors of the same shape."""
    p, q = torch.as_tensor(p, dtype=torch.float64), torch.as_tensor(q, dtype=torch.float64)
    if p.shape != q.shape:
        raise ValueError(f"total_variation: shapes differ, {tuple(p.shape)} and {tuple(q.shape)}")
    return 0.5 * float((p - q).abs().sum())


def expected_total_variation(probs: torch.Tensor, num_samples: int) -> float:
    """Exact ``E[TV(p̂, p)]`` for the empirical distribution ``p̂`` of ``n`` iid draws from ``p``.

    ``E[TV] = (1/2n) Σ_i E|X_i - n p_i|`` with ``X_i ~ Binomial(n, p_i)``, and De Moivre's
    mean absolute deviation ``E|X - np| = 2 ν (1-p) Pr[X = ν]``, ``ν = ⌊np⌋ + 1``. For large
    ``n p_i`` this is ``≈ ½ Σ sqrt(2 p_i (1-p_i) / (π n))``.
    """
    p = np.asarray(torch.as_tensor(probs, dtype=torch.float64).cpu())
    n = int(num_samples)
    nu = np.floor(n * p) + 1
    mad = np.where(p < 1, 2 * nu * (1 - p) * stats.binom.pmf(nu, n, p), 0.0)
    return float(mad.sum() / (2 * n))


def total_variation_bound(probs: torch.Tensor, num_samples: int, p_value: float = DEFAULT_P_VALUE) -> float:
    """A bound that ``TV(p̂, p)`` of ``n`` iid draws exceeds with probability at most ``p_value``.

    ``E[TV] + sqrt(log(1/p_value) / (2n))`` (McDiarmid's inequality; see the module docstring).
    """
    return expected_total_variation(probs, num_samples) + math.sqrt(math.log(1.0 / p_value) / (2 * num_samples))


def chisquare_statistic(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson's ``X² = Σ (O_i - E_i)² / E_i`` of ``counts`` against ``probs``, and its degrees of freedom.

    ``E_i = n p_i`` with ``p`` renormalised; a draw in a cell with ``p_i = 0`` gives ``X² = inf``,
    and such cells are otherwise dropped. Cells with ``E_i < min_expected`` are pooled into
    one cell (merged into the smallest remaining cell if the pool is still below
    ``min_expected``), so that the χ² approximation holds. Returns ``(X², cells - 1)``.
    """
    c = np.asarray(torch.as_tensor(counts, dtype=torch.float64).cpu()).reshape(-1)
    p = np.asarray(torch.as_tensor(probs, dtype=torch.float64).cpu()).reshape(-1)
    if c.shape != p.shape:
        raise ValueError(f"chisquare_statistic: counts and probs differ in shape, {c.shape} and {p.shape}")
    if (c[p == 0] > 0).any():
        return math.inf, max(int((p > 0).sum()) - 1, 1)  # draws where p = 0 are impossible
    c, p = c[p > 0], p[p > 0]
    expected = c.sum() * p / p.sum()
    small = expected < min_expected
    obs, exp = list(c[~small]), list(expected[~small])
    if small.any():
        pooled_obs, pooled_exp = c[small].sum(), expected[small].sum()
        if pooled_exp >= min_expected or not exp:
            obs.append(pooled_obs)
            exp.append(pooled_exp)
        else:
            j = int(np.argmin(exp))
            obs[j] += pooled_obs
            exp[j] += pooled_exp
    obs_a, exp_a = np.array(obs), np.array(exp)
    return float(((obs_a - exp_a) ** 2 / exp_a).sum()), len(obs_a) - 1


def chisquare_pvalue(counts: torch.Tensor, probs: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson χ² goodness-of-fit p-value of ``counts`` against ``probs`` (see :func:`chisquare_statistic`)."""
    statistic, df = chisquare_statistic(counts, probs, min_expected)
    return 1.0 if df < 1 else float(stats.chi2.sf(statistic, df))


def transition_chisquare_pvalue(counts: torch.Tensor, transition: torch.Tensor, min_expected: float = 5.0) -> float:
    """χ² p-value of observed transitions against a transition matrix, all rows at once.

    ``counts[a, b]`` is how many of the chains started in state ``a`` moved to ``b`` in one
    step, and ``transition[a, b] = T(a, b)``, both ``(S, S)``. The rows are independent
    multinomials, so their Pearson statistics and degrees of freedom add up.
    """
    counts = torch.as_tensor(counts, dtype=torch.float64)
    transition = torch.as_tensor(transition, dtype=torch.float64)
    if counts.shape != transition.shape:
        raise ValueError(f"transition_chisquare_pvalue: shapes differ, {tuple(counts.shape)} "
                         f"and {tuple(transition.shape)}")
    total, dof = 0.0, 0
    for row_counts, row_probs in zip(counts, transition):
        if row_counts.sum() == 0:
            continue
        statistic, df = chisquare_statistic(row_counts, row_probs, min_expected)
        total, dof = total + statistic, dof + df
    return 1.0 if dof < 1 else float(stats.chi2.sf(total, dof))


def sample_enumerated(probs: torch.Tensor, num_samples: int, event_shape: Sequence[int], num_states: int = 2,
                      generator: torch.Generator | None = None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """Exact iid draws from a distribution over enumerated states, shape ``(n, *event_shape)``.

    ``probs`` is ``(K^D,)`` in the order of :func:`ebmlab.energy.enumerate_states` (e.g. from
    :func:`enumerate_probabilities`); the draws are the decoded base-K digits of
    ``num_samples`` multinomial indices drawn with ``generator``.
    """
    shape = tuple(int(s) for s in event_shape)
    d = math.prod(shape)
    probs = torch.as_tensor(probs, dtype=torch.float64)
    if probs.shape != (num_states**d,):
        raise ValueError(f"sample_enumerated: probs must have shape ({num_states**d},), got {tuple(probs.shape)}")
    index = torch.multinomial(probs, num_samples, replacement=True, generator=generator)
    powers = num_states ** torch.arange(d - 1, -1, -1)
    digits = (index[:, None] // powers) % num_states
    return digits.to(dtype or torch.get_default_dtype()).view(num_samples, *shape)


@dataclass(frozen=True)
class DistributionCheck:
    """Goodness of fit of ``n`` discrete draws: TV against its bound, and the χ² p-value."""

    total_variation: float
    tv_bound: float
    pvalue: float
    num_samples: int

    def describe(self) -> str:
        return (f"n={self.num_samples}: TV = {self.total_variation:.4f} (bound {self.tv_bound:.4f}), "
                f"chi-square p = {self.pvalue:.3g}")


def distribution_check(x: torch.Tensor, probs: torch.Tensor, num_states: int = 2,
                       p_value: float = DEFAULT_P_VALUE) -> DistributionCheck:
    """TV, its ``p_value`` bound and the χ² p-value of independent draws ``x`` against ``probs``."""
    counts = state_counts(x, num_states)
    if counts.shape != torch.as_tensor(probs).shape:
        raise ValueError(f"distribution_check: {counts.numel()} states in x, {torch.as_tensor(probs).numel()} in probs")
    n = int(counts.sum())
    return DistributionCheck(
        total_variation=total_variation(counts / n, probs),
        tv_bound=total_variation_bound(probs, n, p_value),
        pvalue=chisquare_pvalue(counts, probs),
        num_samples=n,
    )


def assert_distribution_close(x: torch.Tensor, probs: torch.Tensor, num_states: int = 2,
                              p_value: float = DEFAULT_P_VALUE) -> DistributionCheck:
    """Assert independent discrete draws ``x`` (``(n, *event)``) follow ``probs`` (``(K^D,)``).

    Fails when the χ² p-value is below ``p_value`` or the TV exceeds
    :func:`total_variation_bound` at ``p_value``. The χ² test detects a distribution ``q``
    once ``n Σ (q_i-p_i)²/p_i`` is a few ``sqrt(2·df)`` above zero; TV detects
    ``TV(q, p) ≳ 2 E[TV] + sqrt(log(1/p_value)/(2n))``.
    """
    check = distribution_check(x, probs, num_states, p_value)
    if not (check.pvalue >= p_value and check.total_variation <= check.tv_bound):
        raise AssertionError(f"draws do not follow the distribution (threshold p = {p_value}): {check.describe()}")
    return check


def run_transitions(kernel, energy: EnergyFn, x0: torch.Tensor, steps: int, seed: int):
    """``steps`` transitions of ``kernel`` (an object with ``init(energy, x0)`` and
    ``step(energy, state, generator)``) from ``x0`` ``(C, *event_shape)`` with a fresh generator
    seeded ``seed``: the last state, the per-step infos and the generator's final state, so
    two runs can be compared draw for draw."""
    generator = torch.Generator().manual_seed(seed)
    state = kernel.init(energy, x0)
    infos = []
    for _ in range(steps):
        state, info = kernel.step(energy, state, generator)
        infos.append(info)
    return state, infos, generator.get_state()


__all__ = [
    "DEFAULT_P_VALUE", "DEFAULT_Z", "DistributionCheck", "MomentCheck", "assert_distribution_close",
    "assert_moments_close", "chisquare_pvalue", "chisquare_statistic", "distribution_check",
    "empirical_distribution", "enumerate_probabilities", "expected_total_variation", "moment_z_scores",
    "run_transitions", "sample_enumerated", "state_counts", "state_index", "total_variation", "total_variation_bound",
    "transition_chisquare_pvalue",
]
