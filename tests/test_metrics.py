"""Sample-quality metrics: MMD² and its permutation test, energy distance, KL on a grid."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from ebmlab.energy import Gaussian
from ebmlab.metrics import energy_distance, grid_kl, median_bandwidth, mmd2, mmd_test

REPLICATES = 40


def replicate_mmd(generator: torch.Generator, shift: float, n: int = 60):
    """MMD² and permutation p-values of ``REPLICATES`` independent pairs of 2-D samples,
    ``x ~ N(0, I)`` and ``y ~ N((shift, 0), I)``; also the biased V-statistic for contrast."""
    values, p_values, v_stats = [], [], []
    for _ in range(REPLICATES):
        x = torch.randn(n, 2, generator=generator)
        y = torch.randn(n, 2, generator=generator) + torch.tensor([shift, 0.0])
        result = mmd_test(x, y, num_permutations=199, generator=generator)
        values.append(result.mmd2)
        p_values.append(result.p_value)
        h = result.bandwidth
        pooled = torch.cat([x, y]).double()
        k = torch.exp(-torch.cdist(pooled, pooled).square() / (2 * h * h))
        v_stats.append(float(k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()))
    return torch.tensor(values), torch.tensor(p_values), torch.tensor(v_stats)


def test_mmd_under_the_null(generator):
    """Same distribution, 40 replicates of n = m = 60: (i) the unbiased MMD² averages to 0
    within 4.5 standard errors of the replicate mean; (ii) the 40 permutation p-values are
    uniform by a Kolmogorov–Smirnov test at p = 1e-5 (KS detects a departure of the p-value CDF
    from the diagonal of ≈ 0.35).

    Negative controls: the biased V-statistic averages far above 0 (> 4.5 SE), and with the
    second sample shifted by 0.8 the p-values pile up near 0 and fail the same KS test."""
    values, p_values, v_stats = replicate_mmd(generator, shift=0.0)
    se = float(values.std()) / math.sqrt(REPLICATES)
    assert abs(float(values.mean())) < 4.5 * se, (float(values.mean()), se)
    assert stats.kstest(p_values.numpy(), "uniform").pvalue > 1e-5
    assert float(v_stats.mean()) > 4.5 * float(v_stats.std()) / math.sqrt(REPLICATES)

    _, shifted_p, _ = replicate_mmd(generator, shift=0.8)
    assert stats.kstest(shifted_p.numpy(), "uniform").pvalue < 1e-5


def test_mmd_is_large_and_significant_for_shifted_samples(generator):
    """A unit shift with n = 200: the observed MMD² exceeds every one of the 199 permuted values
    (p = 1/200), and is many times its null spread."""
    x = torch.randn(200, 2, generator=generator)
    y = torch.randn(200, 2, generator=generator) + 1.0
    result = mmd_test(x, y, num_permutations=199, generator=generator)
    assert result.p_value == pytest.approx(1 / 200)
    null = [mmd2(x, torch.randn(200, 2, generator=generator)) for _ in range(10)]
    assert result.mmd2 > 10 * max(abs(v) for v in null)


def test_mmd_permutation_test_is_reproducible_and_validates_input(generator):
    x = torch.randn(30, 3, generator=generator)
    y = torch.randn(25, 3, generator=generator)
    a = mmd_test(x, y, generator=torch.Generator().manual_seed(3))
    b = mmd_test(x, y, generator=torch.Generator().manual_seed(3))
    assert a == b and a.num_permutations == 200
    assert a.bandwidth == pytest.approx(median_bandwidth(torch.cat([x, y]).double()))
    with pytest.raises(ValueError, match="same event size"):
        mmd2(x, torch.randn(10, 2))
    with pytest.raises(ValueError, match="N >= 2"):
        mmd2(x[:1], y)


def _expected_abs_difference(m1: float, s1: float, m2: float, s2: float) -> float:
    """``E|X - Y|`` for independent ``X ~ N(m1, s1²)``, ``Y ~ N(m2, s2²)`` (folded normal mean)."""
    mu, s = m1 - m2, math.hypot(s1, s2)
    return s * math.sqrt(2 / math.pi) * math.exp(-mu * mu / (2 * s * s)) + mu * math.erf(mu / (s * math.sqrt(2)))


def energy_distance_closed_form(m1, s1, m2, s2) -> float:
    return (2 * _expected_abs_difference(m1, s1, m2, s2) - 2 * s1 / math.sqrt(math.pi) - 2 * s2 / math.sqrt(math.pi))


def test_energy_distance_matches_closed_form_for_1d_gaussians(generator):
    """N(0, 1) vs N(0.5, 1.5²) (energy distance 0.166): 100 replicates of n = m = 300; the mean
    of the (unbiased) estimates is within 4.5 standard errors of ``2E|X-Y| - E|X-X'| - E|Y-Y'|``.
    The replicate SE is ≈ 0.005, so a bias of ≈ 0.025 (15% of the value) is detected.

    Negative control: the closed form for a standard deviation 20% off (1.8 instead of 1.5,
    energy distance 0.223) is rejected by the same test."""
    estimates = torch.tensor([
        energy_distance(torch.randn(300, 1, generator=generator), 0.5 + 1.5 * torch.randn(300, 1, generator=generator))
        for _ in range(100)
    ])
    mean, se = float(estimates.mean()), float(estimates.std()) / math.sqrt(100)
    assert abs(mean - energy_distance_closed_form(0.0, 1.0, 0.5, 1.5)) < 4.5 * se, (mean, se)
    assert abs(mean - energy_distance_closed_form(0.0, 1.0, 0.5, 1.8)) > 4.5 * se, (mean, se)
    assert energy_distance_closed_form(0.3, 1.2, 0.3, 1.2) == pytest.approx(0.0, abs=1e-12)



def test_grid_kl_matches_closed_form_for_two_gaussians(float64):
    """KL(N(μ₁,Σ₁) ‖ N(μ₂,Σ₂)) = ½[tr(Σ₂⁻¹Σ₁) + (μ₂-μ₁)ᵀΣ₂⁻¹(μ₂-μ₁) - d + log det Σ₂/det Σ₁]
    on a 257² grid over [-8, 8]² (deterministic, tolerance 1e-6 nats). Negative controls: the
    reversed KL (asymmetric) differs by more than the tolerance; KL(p‖p) = 0."""
    p = Gaussian(torch.tensor([0.5, -0.2]), torch.tensor([[1.0, 0.3], [0.3, 0.8]]))
    q = Gaussian(torch.tensor([-0.3, 0.4]), torch.tensor([[1.5, -0.2], [-0.2, 1.1]]))

    def closed(a: Gaussian, b: Gaussian) -> float:
        diff = b.mean - a.mean
        return 0.5 * float(torch.trace(b.precision @ a.covariance) + diff @ b.precision @ diff - 2
                           + torch.logdet(b.covariance) - torch.logdet(a.covariance))

    kl = grid_kl(p, q, bounds=(-8.0, 8.0), num_points=257)
    assert kl == pytest.approx(closed(p, q), abs=1e-6)
    assert abs(grid_kl(q, p, bounds=(-8.0, 8.0), num_points=257) - closed(p, q)) > 1e-6
    assert grid_kl(p, p, bounds=(-8.0, 8.0), num_points=65) == pytest.approx(0.0, abs=1e-12)
    # Un-normalised energies give the same answer (both are normalised on the grid).
    assert grid_kl(lambda x: p(x) + 3.0, q, bounds=(-8.0, 8.0), num_points=257) == pytest.approx(kl, abs=1e-9)
