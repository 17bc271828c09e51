"""Each objective, trained on draws of a known 2-D Gaussian, recovers its mean and covariance.

Model: :class:`QuadraticEnergy` (learnable μ and Cholesky factor of the precision). Data:
n = 2000 draws of ``N(μ*, Σ*)``. Reference: the maximum-likelihood estimator's sampling error,
``SE(x̄_i) = √(Σ_ii/n)`` and ``SE(S_ij) = √((Σ_ii Σ_jj + Σ_ij²)/n)``. Every fitted mean and
covariance entry must lie within ``z = 4.5`` standard errors of the truth, with the standard
error inflated where the estimator is less efficient than the MLE:

* SM, SSM(-VR): the score-matching estimator of a Gaussian *is* the MLE (Hyvärinen 2005), and
  the fresh projections of each of the T steps add variance O(1/(nT)): factor 1.
* DSM at σ: the minimiser is the MLE of the σ-smoothed data, ``N(μ*, Σ* + σ²I)``: factor 1
  around that target.
* NCE with noise ratio ν: asymptotic variance at most ``(1 + 1/ν)`` times the MLE's when the
  noise law is close to the data (Gutmann & Hyvärinen 2012): factor ``√(1 + 1/ν)``.
* CD variants with an exact (MALA) kernel: the negatives add at most the data's own sampling
  variance again: factor ``√2``.

Smallest detectable error: the tightest SE is that of Σ*₂₂ = 0.5 (0.016), so with z = 4.5 a
shift of 0.07 in Σ₂₂ (14%), or about 0.1 in a mean, fails. Each family has a negative control
that must fail: a broken trace term, mis-scaled projections, a DSM target without the σ²I
inflation, a mis-specified NCE noise density, and CD with a sampler that does not move.
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from quadratic_energy_helpers import QuadraticEnergy, fit, gaussian_data, max_z, single_thread, standard_errors  # noqa: F401

from ebmlab.objectives import (
    ContrastiveDivergence, DenoisingScoreMatching, NoiseContrastiveEstimation, PersistentCD, ReplayCD,
    ScoreMatching, SlicedScoreMatching,
)
from ebmlab.objectives.score_matching import score_with_graph
from ebmlab.samplers import MALA, ChainState, StepInfo

pytestmark = pytest.mark.usefixtures("single_thread")

N = 2000
Z = 4.5
X, MEAN, COV = gaussian_data(N, seed=1)
SE_MEAN, SE_COV = standard_errors(COV, N)


def fitted(objective, steps: int, lr: float = 0.05) -> QuadraticEnergy:
    energy = QuadraticEnergy(2)  # starts at N(0, I)
    fit(energy, objective, X, steps=steps, lr=lr)
    return energy


def z_score(energy: QuadraticEnergy, cov: torch.Tensor = COV, factor: float = 1.0) -> float:
    se_mean, se_cov = standard_errors(cov, N)
    return max_z(energy, MEAN, cov, factor * se_mean, factor * se_cov)


class HalfTraceSM(ScoreMatching):
    """Negative control: ``½‖s‖² + 0.8 tr ∇s`` — its optimum has covariance Σ/0.8."""

    def loss(self, energy, batch, generator):
        x, _, s = score_with_graph(energy, batch)
        trace = sum(torch.autograd.grad(s[:, i].sum(), x, create_graph=True)[0][:, i] for i in range(s.shape[1]))
        loss = (0.5 * s.square().sum(1) + 0.8 * trace).mean()
        return loss, {"loss": float(loss.detach())}


class ShrunkSSM(SlicedScoreMatching):
    """Negative control: projections scaled by 0.9, so ``E[vvᵀ] = 0.81 I``."""

    def projections(self, shape, like, generator):
        return 0.9 * super().projections(shape, like, generator)


def test_sm_recovers_gaussian_and_broken_trace_does_not():
    energy = fitted(ScoreMatching(), steps=250)
    assert z_score(energy) < Z
    # the SM estimator of a Gaussian is the MLE itself: match it to optimisation accuracy
    torch.testing.assert_close(energy.mu.detach(), X.mean(0), atol=2e-3, rtol=0)
    torch.testing.assert_close(energy.covariance.detach(), torch.cov(X.T, correction=0), atol=5e-3, rtol=0)
    assert z_score(fitted(HalfTraceSM(), steps=250)) > Z


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_ssm_recovers_gaussian(variance_reduction):
    energy = fitted(SlicedScoreMatching(num_projections=1, variance_reduction=variance_reduction), steps=250)
    assert z_score(energy) < Z


def test_ssm_with_misscaled_projections_fails():
    assert z_score(fitted(ShrunkSSM(), steps=250)) > Z


def test_dsm_recovers_smoothed_gaussian():
    """DSM at σ = 0.5 recovers ``N(μ*, Σ* + σ²I)``; the unsmoothed target Σ* is rejected."""
    sigma = 0.5
    energy = fitted(DenoisingScoreMatching(sigma=sigma), steps=250)
    smoothed = COV + sigma**2 * torch.eye(2)
    assert z_score(energy, cov=smoothed) < Z
    assert z_score(energy, cov=COV) > Z  # negative control: forgetting the smoothing is detected


class MisspecifiedNoiseNCE(NoiseContrastiveEstimation):
    """Negative control: draws noise from q but evaluates its density with a 1.5× covariance."""

    def noise_log_prob(self, x):
        scale = math.sqrt(1.5)
        return super().noise_log_prob(self.noise_mean + (x.flatten(1) - self.noise_mean) / scale) - x.shape[1] * math.log(scale)


class NoRatioNCE(NoiseContrastiveEstimation):
    """Negative control for ``log Z``: the ``- log ν`` term left out of the logit."""

    def noise_log_prob(self, x):
        return super().noise_log_prob(x) - math.log(self.noise_ratio)


def test_nce_recovers_gaussian_and_its_log_z():
    """With ν = 4 the shape is within ``4.5·√(1+1/ν)`` SE and the learned ``c`` equals the fitted
    model's log Z = (d/2) log 2π - ½ log det P̂ within ``4.5·√((1+1/ν)/n)`` = 0.11 (the standard
    error of a log-proportion estimated from n data points against ν·n noise points)."""
    nu = 4.0
    start = math.log(2 * math.pi)  # c starts at the log Z of the initial model N(0, I)
    objective = NoiseContrastiveEstimation(noise_ratio=nu, init_log_z=start)
    energy = fitted(objective, steps=400)  # NCE's gradient is weak when q ≈ p: more steps
    assert z_score(energy, factor=math.sqrt(1 + 1 / nu)) < Z
    tolerance = Z * math.sqrt((1 + 1 / nu) / N)
    assert abs(float(objective.log_z.detach()) - float(energy.log_z.detach())) < tolerance

    wrong_density = fitted(MisspecifiedNoiseNCE(noise_ratio=nu, init_log_z=start), steps=400)
    assert z_score(wrong_density, factor=math.sqrt(1 + 1 / nu)) > Z
    no_ratio = NoRatioNCE(noise_ratio=nu, init_log_z=start)
    energy = fitted(no_ratio, steps=400)
    assert abs(float(no_ratio.log_z.detach()) - float(energy.log_z.detach())) > tolerance


@pytest.mark.parametrize("variant", ["cd", "pcd", "replay"])
def test_contrastive_divergence_recovers_gaussian(variant):
    kernel = MALA(step_size=0.3)
    objective = {
        "cd": lambda: ContrastiveDivergence(kernel, num_steps=5),
        "pcd": lambda: PersistentCD(kernel, num_steps=5),
        "replay": lambda: ReplayCD(kernel, num_steps=5, buffer_size=4000),
    }[variant]()
    assert z_score(fitted(objective, steps=200), factor=math.sqrt(2)) < Z


@dataclasses.dataclass(frozen=True)
class Stay:
    """A sampler that does nothing: ``x' = x``."""

    name = "stay"
    uses_grad = False

    def init(self, energy, x):
        return ChainState(x=x, energy=energy(x).detach())

    def step(self, energy, state, generator):
        ones = torch.ones_like(state.energy)
        return state, StepInfo(ones, ones.bool(), ~ones.bool())


def test_contrastive_divergence_with_a_sampler_that_does_not_move_fails():
    """x⁻ = x⁺ makes the gradient vanish (to rounding), so the fit cannot leave N(0, I)'s
    neighbourhood in the direction of the data and the check fails."""
    objective = ContrastiveDivergence(Stay(), num_steps=5)
    energy = QuadraticEnergy(2)
    loss, _ = objective.loss(energy, X, None)
    loss.backward()
    assert all(float(p.grad.abs().max()) < 1e-5 for p in energy.parameters())
    assert z_score(fitted(ContrastiveDivergence(Stay(), num_steps=5), steps=200), factor=math.sqrt(2)) > Z
