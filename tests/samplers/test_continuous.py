"""Statistical correctness of the continuous samplers (rwmh, ula, mala, hmc).

Method: start ``CHAINS`` independent chains at exact draws of the target, run the kernel,
and compare the sample mean and covariance of the chain *endpoints* (independent draws)
with the exact values. The tolerance is z = 4.5 Monte-Carlo standard errors per entry,
estimated from the sample itself (:func:`ebmlab.testing.assert_moments_close`): a
two-sided false-alarm rate of 6.8e-6 per entry, five entries per 2-D check.

With n = 4000 endpoints the smallest error these checks detect is, on the correlated
Gaussian (Σ = [[1, .5], [.5, 1]]), 4.5·sqrt(1/n) ≈ 0.07 in a mean and
4.5·sqrt(2/n)·Σ_ii ≈ 0.10 in a variance (10 %); on the eight-Gaussian ring (Σ = 2.04 I)
≈ 0.10 in a mean and 4.5·sqrt(Var[x₁²]/n) = 4.5·sqrt(2.32/n) ≈ 0.11 in a variance (5 %).

Every check has a negative control that must fail it: ULA at a large step, MALA without
its proposal correction, HMC with a broken integrator or momentum refresh, too few steps
from a dispersed start.
"""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Banana, Funnel, Gaussian, eight_gaussians
from ebmlab.samplers import HMC, MALA, ULA, RandomWalkMetropolis, sample
from ebmlab.samplers import hmc as hmc_module
from ebmlab.samplers.base import ChainState
from ebmlab.energy.base import value_and_grad
from ebmlab.testing import DEFAULT_Z, assert_moments_close, moment_z_scores

CHAINS = 4000


def endpoints(target, kernel, num_steps: int, seed: int, x0: torch.Tensor | None = None,
              num_chains: int = CHAINS) -> torch.Tensor:
    """Endpoints ``(C, d)`` of ``num_chains`` chains started at exact draws (or at ``x0``)."""
    generator = torch.Generator().manual_seed(seed)
    if x0 is None:
        x0 = target.sample(num_chains, generator).to(torch.float64)
    record = sample(target, kernel, x0, num_steps=num_steps, generator=generator, adapt=False,
                    keep_samples=False)
    return record.final_state.x


def gaussian() -> Gaussian:
    """The correlated 2-D Gaussian ``N((0.5, -1), [[1, .5], [.5, 1]])`` in float64."""
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


# (kernel, num_steps) per target. The ULA steps are small enough that its O(ε) bias is far
# below the detectable error: on the Gaussian the stationary variance along the eigenvector
# with variance σ² = 0.5 is σ²/(1 - ε/2σ²) = 1.01 σ² at ε = 0.01, 1/10 of what the check
# detects; on the ring each mode's variance 0.04 grows by 1.3 % at ε = 0.001.
GAUSSIAN_KERNELS = {
    "rwmh": (RandomWalkMetropolis(step_size=0.8), 50),
    "ula": (ULA(step_size=0.01), 50),
    "mala": (MALA(step_size=0.3), 50),
    "hmc": (HMC(step_size=0.3, num_leapfrog=10), 20),
    "hmc-jitter": (HMC(step_size=0.3, num_leapfrog=10, jitter=0.5), 20),
}
RING_KERNELS = {
    "rwmh": (RandomWalkMetropolis(step_size=0.25), 50),
    "ula": (ULA(step_size=0.001), 50),
    "mala": (MALA(step_size=0.01), 50),
    "hmc": (HMC(step_size=0.05, num_leapfrog=10), 20),
    "hmc-jitter": (HMC(step_size=0.05, num_leapfrog=10, jitter=0.5), 20),
}


@pytest.mark.parametrize("name", sorted(GAUSSIAN_KERNELS))
def test_moments_from_exact_start_correlated_gaussian(name):
    """Endpoints of chains started at exact draws keep the Gaussian's mean and covariance.

    Tolerance: z = 4.5 Monte-Carlo SEs per entry (module docstring). Smallest detectable
    error: 0.07 in a mean, 10 % in a variance. Negative controls: the ``*_fails`` tests
    below run the same check on broken kernels.
    """
    kernel, steps = GAUSSIAN_KERNELS[name]
    target = gaussian()
    x = endpoints(target, kernel, steps, seed=11)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


@pytest.mark.parametrize("name", sorted(RING_KERNELS))
def test_moments_from_exact_start_eight_gaussians(name):
    """Endpoints of chains started at exact draws keep the eight-Gaussian ring's moments.

    Tolerance: z = 4.5 Monte-Carlo SEs per entry. Smallest detectable error: 0.10 in a
    mean, 5 % in a variance (dominated by the ring radius, not the mode width).
    """
    kernel, steps = RING_KERNELS[name]
    target = eight_gaussians().double()
    x = endpoints(target, kernel, steps, seed=12)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


# --------------------------------------------------------------------------------------
# Negative controls: the same check must fail on a broken kernel.
# --------------------------------------------------------------------------------------


def test_ula_large_step_fails_moment_test():
    """ULA at ε = 0.5 is stable but biased: the variance along the σ² = 0.5 eigenvector
    doubles (σ²/(1 - ε/2σ²) = 1.0). The exact-start moment check (z = 4.5) must fail."""
    target = gaussian()
    x = endpoints(target, ULA(step_size=0.5), 50, seed=11)
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


class UncorrectedMALA(MALA):
    """MALA without the Hastings correction ``log q(x|x') - log q(x'|x)`` — not exact."""

    def proposal_log_ratio(self, current: ChainState, proposal: ChainState) -> torch.Tensor:
        return torch.zeros_like(current.energy)


def test_mala_without_proposal_correction_fails_moment_test():
    """MALA with its proposal ratio replaced by zero, at the step (0.3) and run length of
    the passing MALA check, must fail the same z = 4.5 moment check."""
    target = gaussian()
    kernel, steps = GAUSSIAN_KERNELS["mala"]
    x = endpoints(target, UncorrectedMALA(step_size=kernel.step_size), steps, seed=11)
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def euler_integrator(energy, x, p, grad, step_size, num_steps):
    """Explicit Euler ``(x, p) ← (x + εp, p - ε∇E(x))``: neither volume-preserving nor reversible.

    ``step_size`` and ``num_steps`` may be ``(C,)`` tensors, as HMC's per-chain jitter of the
    path length passes them (a chain stops after its own number of steps)."""
    view = (-1,) + (1,) * (x.dim() - 1)
    if isinstance(step_size, torch.Tensor):
        step_size = step_size.view(view)
    counts = num_steps if isinstance(num_steps, torch.Tensor) else torch.full((x.shape[0],), num_steps)
    for i in range(int(counts.max())):
        eps = step_size * (counts > i).to(x.dtype).view(view)
        x, p = x + eps * p, p - eps * grad
        e, grad = value_and_grad(energy, x)
    return x, p, e, grad


def _half_scale_momentum(x, generator):
    """Momentum refreshed from N(0, ¼I) while the kinetic energy assumes N(0, I)."""
    return 0.5 * torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def _no_momentum_refresh(x, generator):
    """No momentum refresh: every trajectory starts at rest."""
    return torch.zeros_like(x)


@pytest.mark.parametrize(
    "attribute, broken",
    [("leapfrog", euler_integrator), ("gaussian_like", _half_scale_momentum), ("gaussian_like", _no_momentum_refresh)],
    ids=["euler-integrator", "half-scale-momentum", "no-momentum-refresh"],
)
def test_broken_hmc_fails_moment_test(monkeypatch, attribute, broken):
    """HMC's own step with one part broken (the integrator replaced by explicit Euler, or the
    momentum refresh mis-scaled or missing), at the passing check's settings
    (ε = 0.3, L = 10, 20 steps), must fail the same z = 4.5 moment check."""
    monkeypatch.setattr(hmc_module, attribute, broken)
    target = gaussian()
    kernel, steps = GAUSSIAN_KERNELS["hmc"]
    x = endpoints(target, kernel, steps, seed=11)
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


# --------------------------------------------------------------------------------------
# Exactness over long runs and on curved targets
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kernel, steps", [(MALA(step_size=0.3), 300), (HMC(step_size=0.3, num_leapfrog=10), 100)],
                         ids=["mala", "hmc"])
def test_exact_kernels_keep_the_target_over_many_steps(kernel, steps):
    """MALA and HMC leave the target invariant: after hundreds of steps (decorrelation
    times ~ a few steps) the endpoints still match exactly. Tolerance z = 4.5 SEs; smallest
    detectable error 0.07 in a mean, 10 % in a variance; a biased kernel (e.g. the
    uncorrected MALA, whose error grows to its stationary bias) fails it."""
    target = gaussian()
    x = endpoints(target, kernel, steps, seed=13)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


@pytest.mark.parametrize("target", [Banana(a=1.0, b=1.0), Funnel(dim=2, scale=1.0)], ids=["banana", "funnel"])
@pytest.mark.parametrize("kernel", [MALA(step_size=0.05), HMC(step_size=0.1, num_leapfrog=10)], ids=["mala", "hmc"])
def test_exact_kernels_keep_curved_targets(target, kernel):
    """MALA and HMC keep the banana (Cov = diag(1, 3)) and Neal's funnel (σ_v = 1,
    Cov = diag(1, e^½)) invariant from exact draws, 30 steps. Tolerance z = 4.5 SEs per
    entry; smallest detectable error ≈ 4.5·sqrt(Var[(x_i-μ_i)²]/n), e.g. 10 % of Var x₁."""
    x = endpoints(target, kernel, 30, seed=14)
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_uncorrected_mala_fails_on_the_banana():
    """Negative control for the curved-target check: MALA without its correction, at a
    step (0.2) where the drift term is strongly curved, must fail the banana check."""
    target = Banana(a=1.0, b=1.0)
    x = endpoints(target, UncorrectedMALA(step_size=0.2), 30, seed=14)
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


# --------------------------------------------------------------------------------------
# Convergence from a dispersed start (weakly coupled target)
# --------------------------------------------------------------------------------------

DISPERSED = {
    "rwmh": (RandomWalkMetropolis(step_size=1.0), 150),
    "mala": (MALA(step_size=0.4), 100),
    "hmc": (HMC(step_size=0.3, num_leapfrog=5), 30),
}


def weakly_coupled_gaussian() -> Gaussian:
    return Gaussian(torch.tensor([1.0, -1.0]), torch.tensor([[1.0, 0.3], [0.3, 1.0]])).double()


def dispersed_start(seed: int) -> torch.Tensor:
    """``N(0, 25 I)`` starts: five times the target's scale, centred away from its mean."""
    generator = torch.Generator().manual_seed(seed)
    return 5.0 * torch.randn(CHAINS, 2, generator=generator, dtype=torch.float64)


@pytest.mark.parametrize("name", sorted(DISPERSED))
def test_convergence_from_dispersed_start(name):
    """From N(0, 25 I) starts, the endpoints after the burn-in match N((1,-1), [[1,.3],[.3,1]]).

    Tolerance z = 4.5 SEs per entry; smallest detectable error 0.07 in a mean, 10 % in a
    variance — so the residual non-convergence must be below that. Negative control:
    :func:`test_too_short_run_from_dispersed_start_fails`.
    """
    kernel, steps = DISPERSED[name]
    target = weakly_coupled_gaussian()
    x = endpoints(target, kernel, steps, seed=15, x0=dispersed_start(16))
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


@pytest.mark.parametrize("name", sorted(DISPERSED))
def test_too_short_run_from_dispersed_start_fails(name):
    """Negative control: one step from the dispersed start is far from converged, and the
    same z = 4.5 check must fail."""
    kernel, _ = DISPERSED[name]
    target = weakly_coupled_gaussian()
    x = endpoints(target, kernel, 1, seed=15, x0=dispersed_start(16))
    with pytest.raises(AssertionError):
        assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


# --------------------------------------------------------------------------------------
# ULA's bias against its closed form
# --------------------------------------------------------------------------------------

ULA_CHAINS = 40000
ULA_STEPS = 40


def ula_variance(step_size: float, variance: float, num_steps: int, start_variance: float) -> float:
    """Exact variance of ULA after ``t`` steps on ``E = x²/(2σ²)``.

    ``x' = a x + sqrt(2ε) ξ`` with ``a = 1 - ε/σ²`` is an AR(1) process, so
    ``Var_t = a^{2t} Var_0 + (1 - a^{2t}) v_∞`` with ``v_∞ = 2ε / (1 - a²) = σ² / (1 - ε/(2σ²))``.
    """
    a = 1.0 - step_size / variance
    stationary = 2.0 * step_size / (1.0 - a * a)
    decay = a ** (2 * num_steps)
    return decay * start_variance + (1.0 - decay) * stationary


def ula_endpoints(step_size: float, seed: int) -> torch.Tensor:
    target = Gaussian(torch.zeros(1), std=1.0).double()
    return endpoints(target, ULA(step_size=step_size), ULA_STEPS, seed=seed, num_chains=ULA_CHAINS)


@pytest.mark.parametrize("step_size", [0.2, 0.05])
def test_ula_variance_matches_closed_form(step_size):
    """ULA on N(0, 1) from exact draws: the measured variance after 40 steps matches the
    AR(1) closed form (1.111 at ε = 0.2, 1.025 at ε = 0.05). Tolerance z = 4.5 SEs with
    n = 40000; smallest detectable error 4.5·sqrt(2/n)·v ≈ 0.034 in the variance.
    Negative control: :func:`test_ula_variance_check_detects_the_wrong_law`."""
    x = ula_endpoints(step_size, seed=17)
    expected = ula_variance(step_size, 1.0, ULA_STEPS, 1.0)
    assert_moments_close(x, torch.zeros(1), torch.tensor([[expected]]), z=DEFAULT_Z)


def test_ula_bias_shrinks_with_step_size():
    """The variance bias |v̂ - σ²| is smaller at ε = 0.05 than at ε = 0.2.

    Exact biases 0.025 and 0.111 (n = 40000 chains each); their difference, 0.086, is over
    5 standard errors of the difference (at most SE₁ + SE₂ = sqrt(2/n)·(1.11 + 1.03) ≈ 0.015,
    whatever the correlation between the two runs).
    """
    biases = [abs(float(ula_endpoints(eps, seed=17).var()) - 1.0) for eps in (0.2, 0.05)]
    assert biases[1] < biases[0], f"ULA variance bias at eps=0.05 ({biases[1]:.4f}) not below eps=0.2 ({biases[0]:.4f})"


def test_ula_variance_check_detects_the_wrong_law():
    """Negative controls: the ε = 0.2 endpoints fail the check against the target's own
    variance σ² = 1 (ULA's bias is detectable), and the ε = 0.05 endpoints fail it against
    the ε = 0.2 closed form."""
    large = ula_endpoints(0.2, seed=17)
    small = ula_endpoints(0.05, seed=17)
    assert moment_z_scores(large, torch.zeros(1), torch.ones(1, 1)).max_abs_z > DEFAULT_Z
    wrong = ula_variance(0.2, 1.0, ULA_STEPS, 1.0)
    assert moment_z_scores(small, torch.zeros(1), torch.tensor([[wrong]])).max_abs_z > DEFAULT_Z
    assert math.isclose(ula_variance(0.2, 1.0, 10**6, 1.0), 1.0 / (1.0 - 0.1))
