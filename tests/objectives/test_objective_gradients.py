"""Each objective's loss and gradient against a reference computed another way, on tiny cases.

These checks are deterministic (the reference replays the objective's random draws from a
copy of its generator), so tolerances are floating-point ones.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from quadratic_energy_helpers import QuadraticEnergy, single_thread  # noqa: F401

from ebmlab.energy.neural import MLPEnergy
from ebmlab.training.models import build_model
from ebmlab.objectives import (
    ContrastiveDivergence, DenoisingScoreMatching, NoiseContrastiveEstimation, PersistentCD, ReplayCD,
    ScoreMatching, SlicedScoreMatching, available_objectives, make_objective, run_chains,
)
from ebmlab.samplers import MALA, ULA

pytestmark = pytest.mark.usefixtures("single_thread")


def clone(generator: torch.Generator) -> torch.Generator:
    return torch.Generator().set_state(generator.get_state())


def make_case(seed: int = 0, n: int = 7, dim: int = 3):
    """A random quadratic energy (non-trivial mean and precision) and a small batch."""
    g = torch.Generator().manual_seed(seed)
    a = torch.randn((dim, dim), generator=g)
    precision = a @ a.T + 0.5 * torch.eye(dim)
    energy = QuadraticEnergy(dim, torch.randn(dim, generator=g), precision)
    x = torch.randn((n, dim), generator=g)
    return energy, x, g


def grads(loss: torch.Tensor, params) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, list(params), retain_graph=True))


def assert_same_grads(loss, reference, params, rtol=1e-5, atol=1e-5):
    params = list(params)
    for got, want in zip(grads(loss, params), grads(reference, params)):
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol)


def test_exact_sm_matches_gaussian_closed_form():
    """SM for ``E = ½(x-μ)ᵀP(x-μ)``: ``s = -P(x-μ)``, ``tr ∇s = -tr P``, so J = mean ½‖P(x-μ)‖² - tr P."""
    energy, x, g = make_case()
    loss, metrics = ScoreMatching().loss(energy, x, g)
    p = energy.precision
    reference = 0.5 * ((x - energy.mu) @ p).square().sum(1).mean() - torch.trace(p)
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    assert metrics["trace"] == pytest.approx(-float(torch.trace(p).detach()), rel=1e-5)
    assert_same_grads(loss, reference, energy.parameters())


def test_exact_sm_refuses_high_dimension():
    energy = MLPEnergy(dim=5, hidden=(4,))
    with pytest.raises(ValueError, match="max_dim"):
        ScoreMatching(max_dim=4).loss(energy, torch.zeros(2, 5), None)


def test_ssm_rademacher_in_one_dimension_is_exact_sm():
    """For D = 1 and v = ±1, ``vᵀ∇(vᵀs) = ∂s/∂x`` and ``(vᵀs)² = s²``: SSM equals SM exactly."""
    energy, x, g = make_case(dim=1)
    reference, _ = ScoreMatching().loss(energy, x, g)
    for vr in (True, False):
        loss, _ = SlicedScoreMatching(num_projections=3, variance_reduction=vr, projection="rademacher").loss(energy, x, g)
        torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-6)
        assert_same_grads(loss, reference, energy.parameters())


def test_ssm_expectation_over_projections_is_sm():
    """E_v over Gaussian projections of the SSM (and SSM-VR) loss is the SM loss.

    With 4000 projections per point the Monte-Carlo mean has standard error ``sd/√P``, where
    ``sd`` is the empirical spread of the per-projection losses; the test allows z = 4.5. A
    loss off by a factor ``1 + δ`` in its trace term is detected once ``δ|tr P| > 4.5·SE``
    (here δ ≳ 2%); the negative control scales the projections by 0.9 (E[vvᵀ] = 0.81 I) and
    must fail.
    """
    energy, x, g = make_case(n=5, dim=3)
    reference, _ = ScoreMatching().loss(energy, x, g)
    p = 4000

    def per_projection_mean_and_se(objective):
        x_rep = x.repeat(p, 1)
        v = objective.projections(tuple(x_rep.shape), x, clone(g))
        with torch.no_grad():  # closed forms: s = -P(x-μ), vᵀ∇(vᵀs) = -vᵀPv
            s = -(x_rep - energy.mu) @ energy.precision
            vs = (v * s).sum(1)
            curvature = -((v @ energy.precision) * v).sum(1)
            sq = 0.5 * (s.square().sum(1) if objective.variance_reduction else vs.square())
            losses = (sq + curvature).view(p, -1).mean(1)
        loss, _ = objective.loss(energy, x, clone(g))
        torch.testing.assert_close(loss, losses.mean(), rtol=1e-4, atol=1e-4)  # same draws, same value
        return loss.detach(), losses.std() / math.sqrt(p)

    for vr in (True, False):
        loss, se = per_projection_mean_and_se(SlicedScoreMatching(num_projections=p, variance_reduction=vr))
        assert abs(float(loss - reference.detach())) < 4.5 * float(se)

    class ShrunkProjections(SlicedScoreMatching):
        def projections(self, shape, like, generator):
            return 0.9 * super().projections(shape, like, generator)

    loss, se = per_projection_mean_and_se(ShrunkProjections(num_projections=p))
    assert abs(float(loss - reference.detach())) > 4.5 * float(se)


def test_ssm_vr_mean_gradient_equals_sm():
    """The mean's gradient does not involve the projections in SSM-VR: it equals SM's exactly."""
    energy, x, g = make_case()
    loss, _ = SlicedScoreMatching(num_projections=2).loss(energy, x, g)
    reference, _ = ScoreMatching().loss(energy, x, g)
    (got,) = torch.autograd.grad(loss, [energy.mu])
    (want,) = torch.autograd.grad(reference, [energy.mu])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("weighting", ["none", "sigma2"])
def test_dsm_matches_closed_form(weighting):
    """DSM: ``½‖-P(x̃-μ) + (x̃-x)/σ²‖²`` (× σ²) with the objective's own noise replayed."""
    energy, x, g = make_case()
    sigma = 0.3
    eps = torch.randn(x.shape, generator=clone(g))
    loss, _ = DenoisingScoreMatching(sigma=sigma, weighting=weighting).loss(energy, x, g)
    x_noisy = x + sigma * eps
    per = 0.5 * (-(x_noisy - energy.mu) @ energy.precision + (x_noisy - x) / sigma**2).square().sum(1)
    reference = (per * (sigma**2 if weighting == "sigma2" else 1.0)).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    assert_same_grads(loss, reference, energy.parameters())


@pytest.mark.parametrize("noise_ratio", [1.0, 2.5])
def test_nce_matches_manual_logistic_loss(noise_ratio):
    """NCE equals the weighted binary cross-entropy of data (label 1) vs noise (label 0)
    with logit ``-E(u) - c - log q(u) - log ν``, normalised by the number of data points."""
    energy, x, g = make_case(n=8)
    objective = NoiseContrastiveEstimation(noise_ratio=noise_ratio, init_log_z=0.7)
    data = torch.randn((50, 3), generator=torch.Generator().manual_seed(3)) * 2 + 1
    objective.setup(energy, data)
    num_noise = round(noise_ratio * x.shape[0])
    noise = objective.noise_sample(num_noise, clone(g))
    loss, _ = objective.loss(energy, x, g)

    q = torch.distributions.MultivariateNormal(data.mean(0), covariance_matrix=torch.cov(data.T))
    both = torch.cat([x, noise])
    logit = -energy(both) - objective.log_z - q.log_prob(both) - math.log(num_noise / x.shape[0])
    labels = torch.cat([torch.ones(x.shape[0]), torch.zeros(num_noise)])
    reference = F.binary_cross_entropy_with_logits(logit, labels, reduction="sum") / x.shape[0]
    torch.testing.assert_close(loss, reference, rtol=1e-4, atol=1e-4)
    assert_same_grads(loss, reference, [*energy.parameters(), objective.log_z], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", ["cd", "pcd", "replay"])
def test_cd_gradient_is_difference_of_expected_energy_gradients(variant):
    """∇_θ L = mean_b ∇_θE(x⁺_b) - mean_b ∇_θE(x⁻_b), with x⁻ treated as constants.

    The negatives are replayed from a copy of the generator (and of the objective's state)
    through :func:`run_chains`; an MLP energy makes the check non-trivial.
    """
    torch.manual_seed(0)  # weight initialisation only
    energy = MLPEnergy(dim=2, hidden=(8, 8))
    g = torch.Generator().manual_seed(1)
    x = torch.randn((6, 2), generator=g)
    kernel = ULA(step_size=0.05)
    cls = {"cd": ContrastiveDivergence, "pcd": PersistentCD, "replay": ReplayCD}[variant]
    options = {"buffer_size": 20, "restart_prob": 0.3} if variant == "replay" else {}
    objective, twin = cls(kernel, num_steps=3, **options), cls(kernel, num_steps=3, **options)
    data = torch.randn((30, 2), generator=g)
    objective.setup(energy, data, g)
    twin.setup(energy, data, None)
    objective.loss(energy, x, g)  # one update, so persistent state is non-trivial

    twin.load_state_dict({k: v.clone() for k, v in objective.state_dict().items()})
    replay_g = clone(g)
    loss, metrics = objective.loss(energy, x, g)
    negatives, _ = twin.negatives(energy, x, replay_g)
    assert not negatives.requires_grad

    params = list(energy.parameters())
    reference = energy(x).mean() - energy(negatives).mean()
    assert_same_grads(loss, reference, params)
    with torch.no_grad():
        gap = float(energy(negatives).mean() - energy(x).mean())
    assert metrics["cd_gap"] == pytest.approx(gap, abs=1e-5)


def test_cd_negatives_leave_parameters_and_mode_unchanged():
    """Sampling negatives builds no parameter gradient and restores train mode / requires_grad."""
    energy = MLPEnergy(dim=2, hidden=(8,), spectral_norm=True)
    energy.train()
    x = torch.randn(4, 2)
    before = {k: v.clone() for k, v in energy.state_dict().items()}
    out, metrics = run_chains(energy, MALA(step_size=0.1), x, 5, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and 0.0 <= metrics["accept"] <= 1.0
    assert energy.training and all(p.requires_grad and p.grad is None for p in energy.parameters())
    for k, v in energy.state_dict().items():  # spectral-norm power iterations did not run while sampling
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_energy_penalty_adds_alpha_times_mean_squares():
    energy, x, g = make_case()
    kernel = ULA(step_size=0.01)
    base, _ = ContrastiveDivergence(kernel, num_steps=2).loss(energy, x, clone(g))
    penalised, m = ContrastiveDivergence(kernel, num_steps=2, alpha=0.5).loss(energy, x, clone(g))
    negatives, _ = run_chains(energy, kernel, x, 2, clone(g))
    extra = 0.5 * (energy(x).square().mean() + energy(negatives).square().mean())
    torch.testing.assert_close(penalised, base + extra, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", available_objectives())
def test_every_objective_contract(name):
    """Contract: a finite scalar loss, float metrics including ``loss``, gradients reaching every
    parameter, and the same numbers from the same generator state."""
    torch.manual_seed(0)
    # noise-conditional objectives need a noise-conditional model; every other one takes any energy
    model = {"ncsn": "ncsn_mlp"}.get(name, "mlp")
    energy = build_model(model, (2,), hidden=[16, 16])
    g = torch.Generator().manual_seed(0)
    data = torch.randn((64, 2), generator=g)
    objective = make_objective(name)
    objective.setup(energy, data, g)
    state = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in objective.state_dict().items()}
    g_copy = clone(g)
    loss, metrics = objective.loss(energy, data[:16], g)
    assert loss.shape == () and torch.isfinite(loss)
    assert isinstance(metrics["loss"], float) and all(isinstance(v, float) for v in metrics.values())
    loss.backward()
    params = [*energy.parameters(), *objective.parameters()]
    for p in params:
        if p.grad is None:  # only an additive constant of E may be invisible to a score-based loss
            assert objective.name in ("sm", "ssm", "dsm", "ncsn") and p.numel() == 1
        else:
            assert torch.isfinite(p.grad).all()
    objective.load_state_dict(state)
    again, _ = objective.loss(energy, data[:16], g_copy)
    assert float(again.detach()) == float(loss.detach())
