"""Tests for ebmlab.diagnostics: ESS against AR(1) chains with known ESS, split R-hat against
its exact F distribution under iid draws, negative controls, and input validation.

AR(1) oracle: ``x_t = ρ x_{t-1} + sqrt(1-ρ²) ε_t`` started at stationarity has lag-t
autocorrelation ``ρ^t`` and integrated autocorrelation time ``τ = (1+ρ)/(1-ρ)``, so
``M`` chains of ``N`` draws have ``ESS = N·M·(1-ρ)/(1+ρ)`` (more than ``N·M`` for ρ < 0).
"""

from __future__ import annotations

import dataclasses
import importlib
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from scipy import signal, stats

from ebmlab.diagnostics import (
    combined_autocorrelation,
    effective_sample_size,
    format_summary,
    rank_normalize,
    split_rhat,
    summary,
)

Z = 4.5
NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES = 2000, 4, 64


def ar1_chains(rho: float, num_draws: int, num_chains: int, num_replicates: int, seed: int) -> np.ndarray:
    """Stationary AR(1) draws, shape ``(num_draws, num_chains, num_replicates)``; one
    independent replicate of the ``(num_draws, num_chains)`` experiment per last index."""
    rng = np.random.default_rng(seed)
    innovations = rng.standard_normal((num_draws, num_chains * num_replicates))
    innovations[1:] *= math.sqrt(1.0 - rho**2)  # x_0 ~ N(0, 1): the stationary law
    x = signal.lfilter([1.0], [1.0, -rho], innovations, axis=0)
    return x.reshape(num_draws, num_chains, num_replicates)


def ess_matches(estimates: np.ndarray, truth: float) -> bool:
    """Whether ``R`` independent ESS estimates are consistent with ``truth``.

    With ``r = estimate / truth`` over replicates: ``|mean r - 1| <= 4.5·sd(r)/√R + sd(r)/2``.
    The first term is the Monte-Carlo error of the mean over replicates; the second allows the
    known bias of Geyer's truncation, which keeps the positive noise pairs before the first
    negative one and so shifts the estimate by up to about half its own standard deviation
    (largest for iid draws; Geyer 1992). The tolerance is in units of the replicate spread.
    """
    ratio = estimates / truth
    sd = ratio.std(ddof=1)
    return bool(abs(ratio.mean() - 1.0) <= Z * sd / math.sqrt(ratio.size) + 0.5 * sd)


# ----------------------------------------------------------------------------------------
# Effective sample size
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("rho", [-0.5, 0.0, 0.5, 0.9])
def test_ess_matches_ar1(rho):
    """ESS of AR(1) chains agrees with ``N·M(1-ρ)/(1+ρ)``.

    With N=2000, M=4 and 64 replicates the replicate spread of ``ESS/truth`` is about 0.03
    (ρ=0), 0.06 (ρ=0.5), 0.08 (ρ=-0.5) and 0.12 (ρ=0.9), so relative errors above about
    3.5%, 6%, 8.5% and 13% respectively are detected.
    """
    chains = ar1_chains(rho, NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES, seed=int(1000 * (rho + 1)))
    ess = effective_sample_size(chains)
    assert ess.shape == (NUM_REPLICATES,)
    truth = NUM_DRAWS * NUM_CHAINS * (1 - rho) / (1 + rho)
    assert ess_matches(ess, truth), (ess.mean(), truth)


def test_ess_negative_control_ignoring_autocorrelation_fails():
    """Negative control: an ESS that ignores autocorrelation (computed on time-shuffled draws,
    ≈ N·M) fails the AR(1) check at ρ = 0.5, a factor-3 error; a 15% error at ρ = 0 fails too."""
    chains = ar1_chains(0.5, NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES, seed=7)
    truth = NUM_DRAWS * NUM_CHAINS / 3.0
    assert ess_matches(effective_sample_size(chains), truth)
    shuffled = np.random.default_rng(0).permuted(chains, axis=0)
    assert not ess_matches(effective_sample_size(shuffled), truth)
    iid = ar1_chains(0.0, NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES, seed=8)
    assert not ess_matches(1.15 * effective_sample_size(iid), float(NUM_DRAWS * NUM_CHAINS))


def test_ess_negative_control_single_lag_truncation_fails_for_antithetic_chains():
    """Negative control: truncating ``τ = 1 + 2Σρ_t`` at the first negative *single* lag
    (instead of Geyer's pairs) stops at t=1 for ρ = -0.5, giving ``τ ≈ 0`` and an absurd ESS
    rather than ``3·N·M``; the paired estimator passes the same check."""
    chains = ar1_chains(-0.5, NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES, seed=11)
    rho_t = combined_autocorrelation(chains)  # (N, R)
    first_negative = np.argmax(rho_t[1:] < 0, axis=0) + 1
    tau_single = np.array([1.0 + 2.0 * rho_t[1:k, r].sum() for r, k in enumerate(first_negative)])
    tau_single = np.maximum(tau_single, 1.0 / math.log10(NUM_DRAWS * NUM_CHAINS))
    single_lag_ess = NUM_DRAWS * NUM_CHAINS / tau_single
    truth = 3.0 * NUM_DRAWS * NUM_CHAINS
    assert ess_matches(effective_sample_size(chains), truth)
    assert not ess_matches(single_lag_ess, truth)
    assert (effective_sample_size(chains) > NUM_DRAWS * NUM_CHAINS).all()  # antithetic: ESS > N·M


def test_ess_sticky_chain_divided_by_holding_time():
    """A chain that holds each iid value for k steps (like a sampler rejecting k-1 proposals
    in a row) has ``ρ_t = 1 - t/k`` and ``τ = k``: ESS ≈ N·M/k, checked as for AR(1)."""
    rng = np.random.default_rng(3)
    k, total = 20, NUM_CHAINS * NUM_REPLICATES
    values = rng.standard_normal((NUM_DRAWS // k + 2, total))
    phase = rng.integers(0, k, size=total)  # a uniform phase makes the chain stationary
    index = (np.arange(NUM_DRAWS)[:, None] + phase[None, :]) // k
    chains = np.take_along_axis(values, index, axis=0).reshape(NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES)
    assert ess_matches(effective_sample_size(chains), NUM_DRAWS * NUM_CHAINS / k)


def test_ess_of_stuck_chains_is_small_and_constant_dims_are_nan():
    """Chains that never move (each stuck at its own start) carry about one draw each: the
    2M split halves have ``ρ_t = 1`` for every lag, so ``ESS ≈ 2M/2 = M < 2M``. All-equal
    draws give NaN."""
    rng = np.random.default_rng(5)
    stuck = np.broadcast_to(rng.standard_normal((1, 8, 3)), (500, 8, 3))
    ess = effective_sample_size(stuck)
    assert ess.shape == (3,)
    assert (ess < 16).all() and (ess > 0).all()
    assert np.isnan(effective_sample_size(np.zeros((100, 4, 2)))).all()
    rhat = split_rhat(stuck)
    assert np.isinf(rhat).all()
    assert np.isnan(split_rhat(np.ones((100, 4)))).all()


def test_ess_accepts_torch_and_keeps_event_shape():
    """A torch tensor (float32) and the same numpy draws give the same ESS; the output has the
    event's shape, and a scalar event gives a 0-d array."""
    gen = torch.Generator().manual_seed(0)
    draws = torch.randn(100, 3, 1, 4, 5, generator=gen)
    ess_t = effective_sample_size(draws)
    ess_n = effective_sample_size(draws.double().numpy())
    assert ess_t.shape == (1, 4, 5) and ess_t.dtype == np.float64
    np.testing.assert_allclose(ess_t, ess_n, rtol=1e-12)
    assert effective_sample_size(draws[:, :, 0, 0, 0]).shape == ()
    assert split_rhat(draws).shape == (1, 4, 5)


def test_rank_normalized_ess_close_to_plain_for_gaussian_ar1():
    """For Gaussian AR(1) draws the bulk (rank-normalised) ESS matches the same oracle."""
    chains = ar1_chains(0.5, NUM_DRAWS, NUM_CHAINS, NUM_REPLICATES, seed=21)
    assert ess_matches(effective_sample_size(chains, method="bulk"), NUM_DRAWS * NUM_CHAINS / 3)
    assert ess_matches(effective_sample_size(chains, method="identity"), NUM_DRAWS * NUM_CHAINS / 3)


def test_rank_normalize_is_normal_scores():
    """Normal scores of ranks are a monotone map to ≈ N(0, 1) values, shape preserved."""
    x = np.random.default_rng(0).exponential(size=(400, 5, 2))
    z = rank_normalize(x)
    assert z.shape == x.shape
    flat_x, flat_z = x[..., 0].ravel(), z[..., 0].ravel()
    assert (np.argsort(flat_x) == np.argsort(flat_z)).all()
    assert abs(flat_z.mean()) < 1e-12 and abs(flat_z.std() - 1) < 0.02


# ----------------------------------------------------------------------------------------
# Split R-hat
# ----------------------------------------------------------------------------------------


def _f_statistic(rhat: np.ndarray, half: int) -> np.ndarray:
    """Invert ``R̂² = (n-1)/n + (B/W)/n`` (n = half-chain length) to get ``B/W``."""
    return half * (rhat**2 - (half - 1) / half)


def test_split_rhat_of_iid_chains_follows_exact_f_law():
    """For iid N(0,1) draws, each of the 2M half-chains of n draws gives
    ``B/W ~ F(2M-1, 2M(n-1))`` exactly, so ``n(R̂² - (n-1)/n)`` over 400 independent
    dimensions must pass a KS test at p > 1e-5; R̂ is then within about 1 ± 0.01.
    The KS test (400 values) detects a shift of R̂² by about 0.25/n and more."""
    num_draws, num_chains, dims = 200, 4, 400
    draws = np.random.default_rng(1).standard_normal((num_draws, num_chains, dims))
    rhat = split_rhat(draws, rank_normalize=False)
    half, groups = num_draws // 2, 2 * num_chains
    law = stats.f(groups - 1, groups * (half - 1))
    assert stats.kstest(_f_statistic(rhat, half), law.cdf).pvalue > 1e-5
    assert np.abs(rhat - 1).max() < 0.05


def test_split_rhat_negative_control_shifted_chain_fails():
    """Negative control: one chain of four shifted by 2σ gives R̂ > 1.1 in every dimension and
    fails the same KS test; so does a linear drift within chains, which only the split sees."""
    num_draws, num_chains, dims = 200, 4, 400
    rng = np.random.default_rng(2)
    draws = rng.standard_normal((num_draws, num_chains, dims))
    draws[:, 0] += 2.0
    assert (split_rhat(draws) > 1.1).all()  # the default, rank-normalised R-hat, sees it too
    rhat = split_rhat(draws, rank_normalize=False)
    assert (rhat > 1.1).all()
    half, groups = num_draws // 2, 2 * num_chains
    law = stats.f(groups - 1, groups * (half - 1))
    assert stats.kstest(_f_statistic(rhat, half), law.cdf).pvalue < 1e-5

    drift = rng.standard_normal((1000, 4, 20)) + np.linspace(0.0, 3.0, 1000)[:, None, None]
    assert (split_rhat(drift) > 1.1).all()


def test_rank_normalized_rhat_detects_different_scales():
    """Chains with equal means but one with 3× the spread: the classic R-hat cannot see it
    (≈ 1), the folded rank-normalised R-hat of Vehtari et al. (2021) does (> 1.1); on iid
    chains the rank-normalised R-hat stays below 1.05."""
    rng = np.random.default_rng(4)
    draws = rng.standard_normal((1000, 4, 20))
    assert (split_rhat(draws, rank_normalize=True) < 1.05).all()
    draws[:, 0] *= 3.0
    assert (split_rhat(draws, rank_normalize=False) < 1.05).all()
    assert (split_rhat(draws, rank_normalize=True) > 1.1).all()


# ----------------------------------------------------------------------------------------
# Validation and summary
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn, shape, message",
    [
        (effective_sample_size, (10,), "num_draws, num_chains"),
        (effective_sample_size, (3, 2), "at least 4 draws"),
        (split_rhat, (10, 1), "at least 2 chains"),
        (split_rhat, (3, 4, 2), "at least 4 draws"),
    ],
)
def test_bad_shapes_raise_clear_errors(fn, shape, message):
    with pytest.raises(ValueError, match=message):
        fn(np.zeros(shape))


def test_non_finite_draws_raise():
    x = np.random.default_rng(0).standard_normal((10, 2))
    x[3, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or infinite"):
        effective_sample_size(x)


def test_summary_of_samples_and_format():
    rng = np.random.default_rng(6)
    draws = rng.standard_normal((300, 4, 1, 3, 3)) * 2.0 + 1.0
    result = summary(torch.from_numpy(draws), max_dims=4)
    assert result.names == ("x[0,0,0]", "x[0,0,1]", "x[0,0,2]", "x[0,1,0]")
    assert result.num_dims == 9 and result.num_draws == 300 and result.num_chains == 4
    np.testing.assert_allclose(result.mean, draws.reshape(1200, 9)[:, :4].mean(0))
    np.testing.assert_allclose(result.ess, effective_sample_size(draws).reshape(9)[:4])
    np.testing.assert_allclose(result.rhat, split_rhat(draws).reshape(9)[:4])
    assert result.acceptance is None
    text = format_summary(result)
    assert "r_hat" in text and "x[0,1,0]" in text and "showing 4 of 9" in text
    assert f" {result.ess[0]:.0f} " in text.splitlines()[1]  # ESS printed as a whole number
    single = summary(draws[:, :1], max_dims=2)
    assert np.isnan(single.rhat).all() and np.isfinite(single.ess).all()
    with pytest.raises(ValueError, match="max_dims"):
        summary(draws, max_dims=0)


def test_summary_of_a_chain_record():
    """A ChainRecord adds an energy row and the acceptance statistics."""
    from ebmlab.energy import Gaussian
    from ebmlab.samplers import MALA, sample

    target = Gaussian(torch.zeros(2), torch.eye(2))
    gen = torch.Generator().manual_seed(0)
    x0 = target.sample(8, generator=gen)
    record = sample(target, MALA(step_size=0.5), x0, num_steps=60, burn_in=20, generator=gen)
    result = summary(record, max_dims=5)
    assert result.names == ("x[0]", "x[1]", "energy")
    assert result.acceptance is not None and result.acceptance.sampler == "mala"
    assert 0 < result.acceptance.mean <= 1 and result.acceptance.divergences == 0
    text = format_summary(record)
    assert "energy" in text and "acceptance mean" in text and "step_size" in text


def test_nuts_summary_reports_the_tuned_acceptance_probability_beside_the_move_rate():
    """NUTS moves on almost every draw, so its move rate says nothing about the step size; the
    summary also reports the mean accept statistic, which window adaptation tunes to 0.8."""
    from ebmlab.energy import Gaussian
    from ebmlab.samplers import NUTS, sample

    target = Gaussian(torch.zeros(20), torch.eye(20))
    gen = torch.Generator().manual_seed(1)
    record = sample(target, NUTS(), target.sample(32, generator=gen), num_steps=200, burn_in=600, generator=gen)
    acc = summary(record).acceptance
    assert acc.mean > 0.95  # nearly every draw moves
    assert abs(acc.accept_prob - 0.8) < 0.05, acc.accept_prob
    assert f"mean acceptance probability {acc.accept_prob:.3f}" in format_summary(record)
    untuned = summary(sample(target, NUTS(step_size=0.05), target.sample(32, generator=gen), num_steps=50,
                             adapt=False, generator=gen)).acceptance
    assert untuned.accept_prob > 0.95  # negative control: a small untuned step reads as such


def test_summary_without_per_draw_statistics_has_no_acceptance_probability():
    record = SimpleNamespace(samples=torch.zeros(5, 2, 1) + torch.arange(10.0).view(5, 2, 1),
                             energy=torch.arange(10.0).view(5, 2), acceptance_rate=torch.tensor([0.5, 1.0]),
                             divergences=torch.tensor([0, 0]), step_size=None, kernel=SimpleNamespace(name="rwmh"))
    assert summary(record).acceptance.accept_prob is None
    assert "acceptance probability" not in format_summary(record)
    from ebmlab.energy import Gaussian
    from ebmlab.samplers import MALA, sample

    target = Gaussian(torch.zeros(2), torch.eye(2))
    gen = torch.Generator().manual_seed(0)
    mala = sample(target, MALA(step_size=0.5), target.sample(64, generator=gen), num_steps=200, generator=gen)
    assert summary(mala).acceptance.accept_prob is not None  # recorded, but agrees with the move rate: not printed
    assert "acceptance probability" not in format_summary(mala)


def test_summary_accepts_record_like_objects():
    record = SimpleNamespace(samples=torch.zeros(5, 2, 1) + torch.arange(10.0).view(5, 2, 1),
                             energy=torch.arange(10.0).view(5, 2), acceptance_rate=torch.tensor([0.5, 1.0]),
                             divergences=torch.tensor([0, 1]), step_size=None, kernel=SimpleNamespace(name="rwmh"))
    result = summary(record)
    assert result.acceptance.max == 1.0 and result.acceptance.divergences == 1
    assert result.acceptance.chains_with_divergences == 1
    assert "rwmh" in format_summary(result) and "divergences 1 in 1 chain(s)" in format_summary(result)


def test_summary_columns_are_the_arviz_diagnostics():
    """The summary's columns are the library's functions of the same names (ArviZ's definitions,
    tested against ArviZ in test_diagnostics_arviz.py), and ``ess`` is the bulk ESS."""
    from ebmlab.diagnostics import ess_bulk, ess_tail, mcse_mean, mcse_sd

    draws = np.random.default_rng(9).standard_normal((101, 3, 2)).cumsum(axis=0)
    result = summary(draws)
    for column, fn in ((result.ess_bulk, ess_bulk), (result.ess_tail, ess_tail), (result.mcse_mean, mcse_mean),
                       (result.mcse_sd, mcse_sd), (result.rhat, split_rhat)):
        np.testing.assert_allclose(column, fn(draws), rtol=1e-12)
    assert result.ess is result.ess_bulk
    header = format_summary(result).splitlines()[0].split()
    assert header == ["mean", "std", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat"]


def test_warnings_name_the_problem_and_what_to_try():
    """Disagreeing chains warn about R-hat (suggesting burn-in and 'pt'), slowly mixing ones about
    the ESS; a record's stuck chains and divergences get a sentence each. Negative control: well
    mixed iid chains give no warning at all."""
    from ebmlab.diagnostics import min_ess_for, warnings

    rng = np.random.default_rng(10)
    good = rng.standard_normal((1000, 4, 2))
    assert summary(good).warnings == () and "warning" not in format_summary(good)
    assert (min_ess_for(1), min_ess_for(4), min_ess_for(1024)) == (100, 400, 400)

    shifted = good.copy()
    shifted[:, 0] += 3.0
    rhat = warnings(shifted)[0]  # the ESS is low too: the shift inflates the pooled variance
    assert rhat.startswith("R-hat is ") and "burn_in" in rhat and "sampler='pt'" in rhat

    walk = rng.standard_normal((200, 4, 2)).cumsum(axis=0)
    text = " ".join(warnings(walk))
    assert "Low effective sample size (bulk ESS" in text and "below 400" in text and "sampler='nuts'" in text

    record = SimpleNamespace(samples=torch.as_tensor(good[:, :2]), energy=torch.as_tensor(good[:, :2, 0]),
                             acceptance_rate=torch.tensor([0.0, 0.5]), divergences=torch.tensor([0, 3]),
                             step_size=0.1, num_steps=1000, kernel=SimpleNamespace(name="hmc"))
    result = summary(record)
    stuck, divergent = result.warnings
    assert stuck.startswith("1 of 2 chain(s) never accepted") and "step_size" in stuck
    assert divergent.startswith("3 divergent transition(s) in 1 of 2 chain(s)") and "sampler='nuts'" in divergent
    assert format_summary(result).splitlines()[-2:] == [f"warning: {stuck}", f"warning: {divergent}"]
    assert warnings(result) == result.warnings


def test_an_rhat_just_above_the_threshold_is_not_shown_as_the_threshold():
    """R-hat 1.0102 must not read "R-hat is 1.010 (above 1.01)": it gets a fourth decimal."""
    summary_module = importlib.import_module("ebmlab.diagnostics.summary")  # the package exports a function of that name

    draws = np.random.default_rng(3).standard_normal((200, 4, 1))
    result = summary(draws)
    near = dataclasses.replace(result, rhat=np.full_like(result.rhat, 1.0102))
    assert any(w.startswith("R-hat is 1.0102 for") for w in summary_module._sentences(near, 100))
    far = dataclasses.replace(result, rhat=np.full_like(result.rhat, 1.05))
    assert any(w.startswith("R-hat is 1.050 for") for w in summary_module._sentences(far, 100))
