"""HMC and MALA with a metric, per-chain step sizes, divergences, and HMC's tuned acceptance.

Invariance checks follow ``test_continuous.py``: ``CHAINS`` chains start at exact draws of a
correlated Gaussian, the endpoints' mean and covariance are compared with the exact values at
z = 4.5 Monte-Carlo SEs per entry (smallest detectable error with n = 4000 draws: 0.07 in a
mean, 10 % in a variance). The metrics are deliberately *not* the target's covariance, so a
wrong preconditioned correction shows. Negative control: preconditioned MALA whose Hastings
ratio ignores the metric.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian
from ebmlab.energy.base import value_and_grad
from ebmlab.samplers import HMC, MALA, DualAveraging, leapfrog, sample
from ebmlab.samplers.base import ChainState
from ebmlab.samplers.driver import run_kernel
from ebmlab.samplers.metric import Metric
from ebmlab.testing import DEFAULT_Z, assert_moments_close

CHAINS = 4000


def gaussian() -> Gaussian:
    """``N((0.5, -1), [[1, .5], [.5, 1]])`` in float64, as in ``test_continuous.py``."""
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


DIAG = torch.tensor([4.0, 0.25], dtype=torch.float64)
DENSE = torch.tensor([[1.5, -0.6], [-0.6, 0.8]], dtype=torch.float64)  # correlation of the opposite sign


def per_chain_diag(num_chains: int) -> Metric:
    """One diagonal per chain: half the chains (0.5, 2), half (2, 0.5)."""
    inv = torch.tensor([[0.5, 2.0], [2.0, 0.5]], dtype=torch.float64).repeat(num_chains // 2, 1)
    return Metric(inv, per_chain=True)


def per_chain_steps(num_chains: int, low: float, high: float) -> torch.Tensor:
    """A ``(C,)`` step size spread evenly over ``[low, high]``."""
    return torch.linspace(low, high, num_chains, dtype=torch.float64)


KERNELS = {
    "mala-diag": (lambda: MALA(step_size=0.3, metric=DIAG), 50),
    "mala-dense": (lambda: MALA(step_size=0.3, metric=Metric(DENSE)), 50),
    "mala-per-chain-diag-and-steps": (lambda: MALA(step_size=per_chain_steps(CHAINS, 0.1, 0.5),
                                                   metric=per_chain_diag(CHAINS)), 50),
    "hmc-diag": (lambda: HMC(step_size=0.25, num_leapfrog=10, metric=DIAG), 20),
    "hmc-dense": (lambda: HMC(step_size=0.3, num_leapfrog=10, metric=DENSE), 20),
    "hmc-per-chain-diag-and-steps": (lambda: HMC(step_size=per_chain_steps(CHAINS, 0.1, 0.4), num_leapfrog=10,
                                                 metric=per_chain_diag(CHAINS)), 20),
}


def endpoints(kernel, num_steps: int, seed: int = 61) -> torch.Tensor:
    target = gaussian()
    generator = torch.Generator().manual_seed(seed)
    x0 = target.sample(CHAINS, generator).to(torch.float64)
    record = sample(target, kernel, x0, num_steps=num_steps, generator=generator, adapt=False, keep_samples=False)
    return record.final_state.x


@pytest.mark.parametrize("name", sorted(KERNELS))
def test_preconditioned_kernels_keep_the_correlated_gaussian(name):
    """Endpoints of chains started at exact draws keep the mean and covariance (z = 4.5 per
    entry; smallest detectable error 0.07 in a mean, 10 % in a variance). Negative control:
    :func:`test_preconditioned_mala_with_the_identity_correction_fails`."""
    make, steps = KERNELS[name]
    target = gaussian()
    assert_moments_close(endpoints(make(), steps), target.mean, target.covariance, z=DEFAULT_Z)


class IdentityCorrectedMALA(MALA):
    """Proposes with the metric but corrects as if the metric were the identity — not exact."""

    def proposal_log_ratio(self, current: ChainState, proposal: ChainState) -> torch.Tensor:
        return MALA(step_size=self.step_size).proposal_log_ratio(current, proposal)


def test_preconditioned_mala_with_the_identity_correction_fails():
    """Negative control: the diagonal-metric MALA of the passing check (ε = 0.3, 50 steps) with
    its Hastings ratio computed for A = I must fail the same z = 4.5 moment check (measured
    max |z| ≈ 24; the correct kernel's is ≈ 0.6)."""
    target = gaussian()
    x = endpoints(IdentityCorrectedMALA(step_size=0.3, metric=DIAG), 50)
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_dense_metric_leapfrog_is_reversible_and_second_order():
    """Leapfrog with a dense metric: forward, negate p, back recovers the start to 1e-10
    (float64 rounding), and halving ε divides the energy error by 4 (ratio in [3.5, 4.5])."""
    target = gaussian()
    metric = Metric(DENSE)
    generator = torch.Generator().manual_seed(62)
    x = target.sample(64, generator).to(torch.float64)
    p = metric.sample_momentum(x, generator)
    _, g = value_and_grad(target, x)
    x1, p1, _, g1 = leapfrog(target, x, p, g, 0.1, 25, metric)
    x2, p2, _, _ = leapfrog(target, x1, -p1, g1, 0.1, 25, metric)
    assert max(float((x2 - x).abs().max()), float((-p2 - p).abs().max())) < 1e-10

    def error(eps):
        xe, pe, ee, _ = leapfrog(target, x, p, g, eps, round(1.0 / eps), metric)
        return float((ee + metric.kinetic_energy(pe) - target(x) - metric.kinetic_energy(p)).abs().max())

    errors = [error(eps) for eps in (0.1, 0.05, 0.025)]
    assert all(3.5 <= errors[i] / errors[i + 1] <= 4.5 for i in range(2)), errors


def test_per_chain_path_lengths_match_separate_runs():
    """``leapfrog`` with a ``(C,)`` number of steps gives each chain what a run with its own L gives."""
    target = gaussian()
    generator = torch.Generator().manual_seed(63)
    x = target.sample(6, generator).to(torch.float64)
    p = torch.randn(6, 2, generator=generator, dtype=torch.float64)
    _, g = value_and_grad(target, x)
    counts = torch.tensor([1, 2, 3, 5, 5, 4])
    xs, ps, es, _ = leapfrog(target, x, p, g, 0.2, counts)
    for c, n in enumerate(counts.tolist()):
        xc, pc, ec, _ = leapfrog(target, x[c:c + 1], p[c:c + 1], g[c:c + 1], 0.2, n)
        assert torch.allclose(xs[c], xc[0], atol=1e-12) and torch.allclose(ps[c], pc[0], atol=1e-12)


def test_energy_error_above_the_threshold_is_a_divergence():
    """At ε = 1.9 with L = 20 on a Gaussian whose stiffest direction has σ = 0.1 the leapfrog is
    unstable and the energy error, though finite, passes 1000: every such transition counts as
    a divergence (and is rejected); with a stable ε = 0.05 none does."""
    target = Gaussian(torch.zeros(2), torch.diag(torch.tensor([0.01, 1.0]))).double()
    generator = torch.Generator().manual_seed(64)
    x0 = target.sample(50, generator).to(torch.float64)
    seen = []
    record = sample(target, HMC(step_size=1.9, num_leapfrog=20), x0, num_steps=5, generator=generator, adapt=False,
                    callback=lambda t, s, info: seen.append(info))
    assert all(bool(i.diverged.all()) and not bool(i.accepted.any()) for i in seen)
    assert int(record.divergences.sum()) == 5 * 50
    stable = sample(target, HMC(step_size=0.05, num_leapfrog=20), x0, num_steps=5, generator=generator, adapt=False)
    assert int(stable.divergences.sum()) == 0


def test_tensor_step_size_of_equal_values_matches_the_float():
    """A ``(C,)`` step size with every entry ε gives the same run as the float ε (to rounding)."""
    target = gaussian()
    for make in (lambda e: MALA(step_size=e, metric=DIAG), lambda e: HMC(step_size=e, num_leapfrog=5, metric=DENSE)):
        runs = []
        for eps in (0.2, torch.full((8,), 0.2, dtype=torch.float64)):
            generator = torch.Generator().manual_seed(65)
            x0 = target.sample(8, generator).to(torch.float64)
            runs.append(sample(target, make(eps), x0, num_steps=5, generator=generator, adapt=False).samples)
        assert torch.allclose(runs[0], runs[1], atol=1e-12)


def test_bad_step_sizes_and_metrics_are_refused():
    """Negative or ill-shaped step sizes and metrics that do not fit the chains raise ValueError."""
    target = gaussian()
    x0 = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="step_size"):
        HMC(step_size=torch.tensor([0.1, -0.1]))
    with pytest.raises(ValueError, match="step_size"):
        MALA(step_size=torch.ones(2, 2))
    with pytest.raises(ValueError, match="does not fit 4 chains"):
        HMC(step_size=torch.full((3,), 0.1)).init(target, x0)
    with pytest.raises(ValueError, match="inverse_mass_matrix"):
        MALA(metric=torch.ones(3)).init(target, x0)


# --------------------------------------------------------------------------------------
# HMC's acceptance after dual averaging (issue item 2c)
# --------------------------------------------------------------------------------------

TUNE_CHAINS, BURN_IN, MEASURED = 1000, 200, 100


def tuned_acceptance(dim: int, kernel: HMC, legacy: bool = False) -> tuple[float, float, float]:
    """``(mean acceptance probability, its MC SE, tuned ε)`` of HMC on N(0, I_dim) after
    ``BURN_IN`` steps of the driver's adaptation (or, with ``legacy``, the old single run of
    Stan's dual averaging), measured over ``TUNE_CHAINS`` × ``MEASURED`` transitions.

    The SE treats each chain's mean over the measured steps as one draw: chains are
    independent, so ``SE = sd(chain means)/√C`` holds whatever the autocorrelation within a chain.
    """
    target = Gaussian(torch.zeros(dim)).double()
    generator = torch.Generator().manual_seed(66)
    x0 = target.sample(TUNE_CHAINS, generator).to(torch.float64)
    if legacy:
        warm = run_kernel(kernel, target, kernel.init(target, x0), BURN_IN, generator,
                          adaptation=DualAveraging(target_accept=kernel.default_target_accept))
        kernel, state = warm.kernel, warm.state
    else:
        record = sample(target, kernel, x0, num_steps=0, burn_in=BURN_IN, generator=generator)
        kernel, state = record.kernel, record.final_state
    total = torch.zeros(TUNE_CHAINS, dtype=torch.float64)
    run_kernel(kernel, target, state, MEASURED, generator, callback=lambda t, s, info: total.add_(info.accept_prob))
    means = total / MEASURED
    return float(means.mean()), float(means.std() / math.sqrt(TUNE_CHAINS)), kernel.step_size


@pytest.mark.parametrize("dim", [10, 100])
def test_hmc_reaches_its_target_acceptance_after_burn_in(dim):
    """HMC (L = 5, default path jitter) from ε₀ = 0.01 on N(0, I): after a 200-step burn-in the
    mean acceptance probability of 1000 chains × 100 steps is within 4.5 Monte-Carlo SEs of the
    0.65 target (SE ≈ 0.0009–0.0014, so within ≈ 0.006; measured 0.6506 ± 0.0009 at 10-D, 0.6479 ± 0.0013
    at 100-D).
    Negative control: :func:`test_legacy_adaptation_misses_the_target` (0.72–0.79)."""
    rate, se, eps = tuned_acceptance(dim, HMC(step_size=0.01, num_leapfrog=5))
    z = (rate - 0.65) / se
    assert abs(z) <= DEFAULT_Z, f"{dim}-D: tuned ε = {eps:.4f} accepts {rate:.4f} ± {se:.4f} (z = {z:.1f})"


def test_legacy_adaptation_misses_the_target():
    """Negative control: the old burn-in — one run of Stan's dual averaging (γ = 0.05, μ = log 10ε₀)
    on the pooled statistic, no path jitter — lands ε̄ between the two iterates of a period-two
    cycle and misses 0.65 on the 100-D Gaussian by many SEs (measured 0.780 ± 0.0006, |z| ≈ 200)."""
    rate, se, eps = tuned_acceptance(100, HMC(step_size=0.01, num_leapfrog=5, path_jitter=0.0), legacy=True)
    assert abs(rate - 0.65) / se > DEFAULT_Z, f"tuned ε = {eps:.4f} accepts {rate:.4f} ± {se:.4f}"
