"""The statistical assertions themselves: exact pieces against brute force, and calibration.

If the z-scores of :func:`ebmlab.testing.moment_z_scores` were not ≈ N(0, 1) under the null,
every sampler test's false-alarm rate and detection power would be wrong; so the standard
errors are checked on replicated exact draws here.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from ebmlab.energy import Gaussian, Ising
from ebmlab.samplers import MALA
from ebmlab.testing import (
    assert_distribution_close, assert_moments_close, chisquare_pvalue, chisquare_statistic,
    empirical_distribution, enumerate_probabilities, expected_total_variation, moment_z_scores,
    run_transitions, sample_enumerated, state_index, total_variation, total_variation_bound, transition_chisquare_pvalue,
)


def test_moment_z_scores_are_standard_normal_under_the_null():
    """Over 400 replicates of n = 1000 draws from a correlated Gaussian, each z-score (2 means,
    3 covariance entries) has mean 0 and SD 1 within 4.5 SEs of those replicate statistics
    (SE 0.05 for the mean, ≈ 0.035 for the SD). A standard error off by 20 % would move the
    SD by 0.2, far outside the band."""
    generator = torch.Generator().manual_seed(71)
    chol = torch.linalg.cholesky(torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64))
    cov = chol @ chol.T
    z = []
    for _ in range(400):
        x = torch.randn(1000, 2, generator=generator, dtype=torch.float64) @ chol.T
        check = moment_z_scores(x, torch.zeros(2), cov)
        z.append(torch.cat([check.z_mean, check.z_cov[0, 0:2], check.z_cov[1, 1:2]]))
    z = torch.stack(z)
    assert (z.mean(0).abs() < 4.5 * (1 / math.sqrt(400))).all(), z.mean(0)
    assert ((z.std(0) - 1).abs() < 4.5 / math.sqrt(2 * 399)).all(), z.std(0)


def test_assert_moments_close_passes_exact_and_fails_shifted_draws():
    """4000 exact N(0, I) draws pass at z = 4.5; a mean shift of 0.1 (6.3 SEs) or a 21 %
    variance error (~8 SEs) fails, as do non-finite draws."""
    generator = torch.Generator().manual_seed(72)
    x = torch.randn(4000, 2, generator=generator, dtype=torch.float64)
    check = assert_moments_close(x, torch.zeros(2), torch.eye(2))
    assert check.max_abs_z < 4.5 and check.num_samples == 4000
    with pytest.raises(AssertionError, match="standard errors"):
        assert_moments_close(x + torch.tensor([0.1, 0.0], dtype=torch.float64), torch.zeros(2), torch.eye(2))
    with pytest.raises(AssertionError):
        assert_moments_close(x * 1.1, torch.zeros(2), torch.eye(2))
    with pytest.raises(AssertionError, match="not finite"):
        assert_moments_close(torch.full((10, 2), math.nan), torch.zeros(2), torch.eye(2))


def test_expected_total_variation_matches_brute_force_binomial_sums():
    """De Moivre's closed form against ``Σ_k |k - np| Pr[X = k]`` for every cell, to 1e-12."""
    p = np.array([0.5, 0.3, 0.15, 0.049, 0.001])
    n = 300
    k = np.arange(n + 1)
    brute = sum((np.abs(k - n * pi) * stats.binom.pmf(k, n, pi)).sum() for pi in p) / (2 * n)
    assert abs(expected_total_variation(torch.tensor(p), n) - brute) < 1e-12
    approx = 0.5 * np.sqrt(2 * p * (1 - p) / (math.pi * n)).sum()
    assert abs(expected_total_variation(torch.tensor(p), n) / approx - 1) < 0.1


def test_total_variation_bound_holds_for_multinomial_samples():
    """200 multinomial samples of n = 2000 from a 512-state Ising law all stay below the
    1e-5 TV bound (each exceeds it with probability ≤ 1e-5), and their mean TV agrees with
    the exact E[TV] within 4.5 SEs of the replicate mean."""
    probs = enumerate_probabilities(Ising(3, coupling=0.3, field=0.1), (3, 3), 2)
    generator = torch.Generator().manual_seed(73)
    n = 2000
    tvs = torch.tensor([total_variation(torch.bincount(torch.multinomial(probs, n, True, generator=generator),
                                                       minlength=512) / n, probs) for _ in range(200)])
    assert (tvs <= total_variation_bound(probs, n)).all()
    assert abs(float(tvs.mean()) - expected_total_variation(probs, n)) < 4.5 * float(tvs.std()) / math.sqrt(200)


def test_chisquare_pools_small_cells_and_flags_impossible_ones():
    """Exact expected counts give X² = 0 with cells below 5 pooled and p = 0 cells dropped;
    a draw in a p = 0 cell gives p-value 0; moving 10 % of the mass fails at 1e-5."""
    probs = torch.tensor([0.5, 0.3, 0.19, 0.005, 0.005, 0.0], dtype=torch.float64)
    exact = 600 * probs  # expected counts 300, 180, 114, 3, 3, 0
    statistic, df = chisquare_statistic(exact, probs)
    assert statistic == pytest.approx(0.0, abs=1e-12) and df == 3  # cells 3, 4 pooled; cell 5 dropped
    assert chisquare_pvalue(exact, probs) == pytest.approx(1.0)
    impossible = exact.clone()
    impossible[5] = 1
    assert chisquare_pvalue(impossible, probs) == 0.0
    assert chisquare_pvalue(torch.tensor([360.0, 150, 90, 0, 0, 0]), probs) < 1e-5
    identity = torch.eye(3, dtype=torch.float64)
    assert transition_chisquare_pvalue(identity * 50, identity) == 1.0
    assert transition_chisquare_pvalue(identity.flip(0) * 50, identity) == 0.0


def test_enumerated_draws_round_trip_through_state_index():
    """Exact draws from an enumerated law index back to their cells, and pass the
    distribution check; the same draws fail against a different law (negative control)."""
    probs = enumerate_probabilities(Ising(3, coupling=0.3, field=0.1), (3, 3), 2)
    generator = torch.Generator().manual_seed(74)
    x = sample_enumerated(probs, 20000, (3, 3), 2, generator)
    assert x.shape == (20000, 3, 3) and set(x.unique().tolist()) <= {0.0, 1.0}
    assert empirical_distribution(x, 2).shape == (512,)
    assert state_index(x[:1], 2).shape == (1,)
    assert_distribution_close(x, probs, 2)
    other = enumerate_probabilities(Ising(3, coupling=0.25, field=0.1), (3, 3), 2)
    with pytest.raises(AssertionError):
        assert_distribution_close(x, other, 2)
    with pytest.raises(ValueError, match="0..1"):
        state_index(x + 1, 2)


def test_run_transitions_replays_a_seed_and_returns_the_generator_state():
    """Two runs with one seed agree draw for draw and leave the generator in the same state;
    another seed gives other draws (the control); one info per transition."""
    target, x0 = Gaussian(torch.zeros(2), torch.eye(2)), torch.zeros(8, 2)
    a_state, a_infos, a_rng = run_transitions(MALA(step_size=0.3), target, x0, steps=4, seed=5)
    b_state, _, b_rng = run_transitions(MALA(step_size=0.3), target, x0, steps=4, seed=5)
    c_state, _, c_rng = run_transitions(MALA(step_size=0.3), target, x0, steps=4, seed=6)
    assert len(a_infos) == 4 and torch.equal(a_state.x, b_state.x) and torch.equal(a_rng, b_rng)
    assert not torch.allclose(a_state.x, c_state.x) and not torch.equal(a_rng, c_rng)
