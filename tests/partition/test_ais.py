"""Annealed importance sampling against exact log Z (closed forms and enumeration).

Each accuracy test asserts ``|log Ẑ - log Z| ≤ 3·SE`` with SE the delta-method standard error
the estimator reports (fixed seeds; a correct estimator fails such a check for a new seed with
probability ≈ 0.3%), and the reverse-AIS bracket ``log Ẑ - 3·SE ≤ log Z ≤ log Ẑ_up + 3·SE_up``.
The negative controls run a wrong transition kernel (ULA with a large step, which has no
Metropolis correction) and plain importance sampling (K = 2) from a poor base, and show
that the same check rejects them.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian, Ising, eight_gaussians
from ebmlab.energy.base import site_energies, value_and_grad
from ebmlab.partition import (
    AnnealedEnergy, CategoricalBase, GaussianBase, ais, combine_log_weights, exact_log_z, exact_sample,
    log_weight_statistics, make_schedule,
)
from ebmlab.samplers import HMC, MALA, ULA, Gibbs

Z = 3.0


@pytest.fixture(autouse=True)
def _float64_default(float64):
    """Every test here runs in float64 (the ``float64`` fixture of conftest.py)."""


def offset_gaussian() -> Gaussian:
    return Gaussian(torch.tensor([1.5, -1.0]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]))


def assert_within(result, truth: float) -> None:
    assert abs(result.log_z - truth) <= Z * result.log_z_stderr, (result.log_z, truth, result.log_z_stderr)
    if result.log_z_upper is not None:
        assert result.log_z - Z * result.log_z_stderr <= truth <= result.log_z_upper + Z * result.log_z_upper_stderr, (
            result.bracket, truth)


def test_gaussian_with_given_base_and_bracket(generator):
    """Correlated off-centre 2-D Gaussian, base N(0, 1.5² I), K = 100 sigmoid, MALA, 400 runs
    (SE ≈ 0.02 nats: detects a bias of ≈ 0.06 nats)."""
    target = offset_gaussian()
    result = ais(target, base=GaussianBase(torch.zeros(2), 1.5), num_temperatures=100, num_runs=400,
                 kernel="mala", generator=generator, reverse_samples=target.sample(400, generator))
    assert result.log_weights.shape == (400,) and result.samples.shape == (400, 2)
    assert result.schedule.shape == (100,) and result.acceptance_rate.shape == (98,)
    assert 0 < result.log_z_stderr < 0.05 and 1 <= result.ess <= 400
    assert_within(result, target.log_z)
    assert result.log_z_upper_stderr < 0.05


def test_gaussian_with_base_fitted_to_data(generator):
    """The default base is a diagonal Gaussian fitted to data; linear schedule, HMC."""
    target = offset_gaussian()
    data = target.sample(1000, generator)
    result = ais(target, data=data, num_temperatures=50, schedule="linear", kernel=HMC(step_size=0.2, num_leapfrog=3),
                 num_runs=400, generator=generator)
    assert_within(result, target.log_z)


def test_mixture_of_eight_gaussians(generator):
    """Eight well-separated modes (std 0.2 on a ring of radius 2) from a broad base N(0, 2.5² I);
    HMC, K = 100, 400 runs (SE ≈ 0.04 nats)."""
    target = eight_gaussians()
    result = ais(target, base=GaussianBase(torch.zeros(2), 2.5), num_temperatures=100, num_runs=400, kernel="hmc",
                 generator=generator, reverse_samples=target.sample(400, generator))
    assert result.log_z_stderr < 0.08
    assert_within(result, target.log_z)


def test_ising_with_gibbs_and_exact_reverse_starts(generator):
    """3×3 Ising (J = 0.4, h = 0.1, 512 states) from uniform independent spins; Gibbs, one sweep
    per temperature, K = 40, 400 runs; reverse runs start at exact draws (enumeration)."""
    target = Ising(3, coupling=0.4, field=0.1)
    truth = exact_log_z(target, dtype=torch.float64)
    result = ais(target, num_temperatures=40, num_runs=400, kernel="gibbs", generator=generator,
                 reverse_samples=exact_sample(target, 400, generator))
    assert result.log_z_stderr < 0.08
    assert_within(result, truth)


def test_ising_with_metropolis_and_fitted_bernoulli_base(generator, small_ising):
    """Independent Bernoullis fitted to exact draws as the base, single-site Metropolis."""
    truth = exact_log_z(small_ising, dtype=torch.float64)
    data = exact_sample(small_ising, 500, generator)
    result = ais(small_ising, data=data, num_temperatures=30, num_runs=400, kernel="metropolis", generator=generator)
    assert_within(result, truth)


def test_lower_bound_gap_shrinks_as_temperatures_grow(generator):
    """``log Z - mean(log w) = E_path[KL]`` ≥ 0 falls as K grows. With 400 runs the mean of the
    log weights has standard error ``std/√400``; the gap at K = 5 exceeds the gap at K = 100 by
    more than 4.5 combined standard errors (detects a change of ≈ 0.5 nats here), and both gaps
    are positive. Reported standard errors shrink too."""
    target = Gaussian(torch.tensor([2.0, -1.0]), torch.tensor([[0.3, 0.1], [0.1, 0.2]]))
    base = GaussianBase(torch.zeros(2), 1.0)
    gaps, ses, stderrs = [], [], []
    for k in (5, 100):
        result = ais(target, base=base, num_temperatures=k, num_runs=400, generator=generator)
        lw = result.log_weights
        gaps.append(target.log_z - float(lw.mean()))
        ses.append(float(lw.std()) / math.sqrt(lw.numel()))
        stderrs.append(result.log_z_stderr)
    assert gaps[0] - gaps[1] > 4.5 * math.hypot(*ses), (gaps, ses)
    assert gaps[1] > -4.5 * ses[1]
    assert stderrs[1] < stderrs[0]


def test_negative_control_ula_without_correction_is_detected(generator):
    """ULA at step 0.3 leaves a biased stationary law at every temperature, so the weights no
    longer average to Z: the estimate lies more than 4.5 SE from the truth (the same setting
    with MALA passes the 3-SE check above)."""
    target = offset_gaussian()
    result = ais(target, base=GaussianBase(torch.zeros(2), 1.5), num_temperatures=100, num_runs=400,
                 kernel=ULA(step_size=0.3), generator=generator)
    assert abs(result.log_z - target.log_z) > 4.5 * result.log_z_stderr, (result.log_z, target.log_z)


def test_negative_control_importance_sampling_from_a_poor_base_is_detected(generator):
    """K = 2 is importance sampling. Target N(1.5·1, 0.3² I) in 10-D against base N(0, I):
    KL(target‖base) ≈ 19 nats ≫ log(400 runs), so ``log Ẑ`` is far below ``log Z`` while the
    reported SE (≈ 1 with one dominant weight) does not cover it: the check fails by > 4.5 SE.
    With K = 300 the same problem passes it."""
    target = Gaussian(torch.full((10,), 1.5), std=0.3)
    base = GaussianBase(torch.zeros(10), 1.0)
    poor = ais(target, base=base, num_temperatures=2, num_runs=400, generator=generator)
    assert poor.log_z - target.log_z < -4.5 * poor.log_z_stderr, (poor.log_z, target.log_z, poor.log_z_stderr)
    assert poor.ess < 5
    good = ais(target, base=base, num_temperatures=300, num_runs=400, generator=generator)
    assert_within(good, target.log_z)


def test_log_weight_statistics_match_direct_formulas():
    """Delta method on explicit weights, stable for log weights near 1e4."""
    lw = torch.tensor([0.0, math.log(2.0), math.log(3.0), math.log(6.0)])
    w = torch.exp(lw)
    log_z, stderr, ess = log_weight_statistics(lw)
    assert log_z == pytest.approx(math.log(3.0))
    assert stderr == pytest.approx(float(w.std() / (2 * w.mean())))
    assert ess == pytest.approx(float(w.sum() ** 2 / (w**2).sum()))
    shifted = log_weight_statistics(lw + 1e4)
    assert shifted[0] == pytest.approx(log_z + 1e4) and shifted[1] == pytest.approx(stderr)
    assert log_weight_statistics(torch.tensor([1.0]))[1] == math.inf


def test_runs_from_several_processes_combine_by_one_log_mean_exp(generator):
    target = offset_gaussian()
    base = GaussianBase(torch.zeros(2), 1.5)
    parts = [ais(target, base=base, num_temperatures=20, num_runs=50, generator=generator) for _ in range(3)]
    combined = combine_log_weights(*[p.log_weights for p in parts])
    everything = torch.cat([p.log_weights for p in parts])
    assert combined[0] == pytest.approx(float(torch.logsumexp(everything, 0) - math.log(150)))
    assert combined == log_weight_statistics(everything)


def test_annealed_energy_matches_its_definition(generator):
    """``E_β = -(1-β) log p₀ + β E``: value, gradient and the local site energies agree with
    direct evaluation (deterministic)."""
    target = offset_gaussian()
    base = GaussianBase(torch.tensor([0.3, 0.1]), torch.tensor([1.2, 0.7]))
    path = AnnealedEnergy(target, base, 0.3)
    x = torch.randn(5, 2, generator=generator)
    direct = -0.7 * base.log_prob(x) + 0.3 * target(x)
    e, g = value_and_grad(path, x)
    xr = x.clone().requires_grad_(True)
    (g_auto,) = torch.autograd.grad((-0.7 * base.log_prob(xr) + 0.3 * target(xr)).sum(), xr)
    assert torch.allclose(e, direct) and torch.allclose(g, g_auto)

    ising = Ising(3, coupling=0.4, field=0.1)
    cat_base = CategoricalBase.bernoulli(torch.rand(3, 3, generator=generator))
    discrete = AnnealedEnergy(ising, cat_base, 0.6)
    s = torch.randint(0, 2, (6, 3, 3), generator=generator).double()
    site = torch.randint(0, 9, (6,), generator=generator)
    generic = site_energies(lambda y: -0.4 * cat_base.log_prob(y) + 0.6 * ising(y), s, site, 2)
    assert torch.allclose(discrete.site_energies(s, site), generic)


def test_bad_inputs():
    target = offset_gaussian()
    base = GaussianBase(torch.zeros(2), 1.0)
    with pytest.raises(ValueError, match="num_temperatures must be >= 2"):
        ais(target, base=base, num_temperatures=1)
    with pytest.raises(ValueError, match="increase strictly from 0 to 1"):
        ais(target, base=base, schedule=[0.0, 0.7, 0.5, 1.0])
    with pytest.raises(ValueError, match="schedule must be one of"):
        make_schedule("cosine", 10)
    with pytest.raises(ValueError, match="continuous kernel"):
        ais(target, base=base, kernel=Gibbs())
    with pytest.raises(ValueError, match="discrete kernel"):
        ais(Ising(3), kernel=MALA(0.1))
    with pytest.raises(ValueError, match="reverse_samples must have shape"):
        ais(target, base=base, num_temperatures=3, reverse_samples=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="give a base"):
        ais(lambda x: x.square().sum(1), num_temperatures=3)


def test_user_schedule_array_is_used(generator):
    betas = torch.tensor([0.0, 0.1, 0.5, 1.0])
    result = ais(offset_gaussian(), base=GaussianBase(torch.zeros(2), 1.5), schedule=betas, num_runs=10, generator=generator)
    assert torch.equal(result.schedule, betas)
    assert make_schedule("sigmoid", 7)[0] == 0 and make_schedule("sigmoid", 7)[-1] == 1
