"""Exact and sliced score matching on energies whose score does not depend on x.

For ``E(x) = xᵀw`` the score is ``s = -w`` for every x, so ``∇ₓs = 0`` and

    sm:      J = ½‖w‖² + tr 0 = ½‖w‖²,                    ∇_w J = w;
    ssm-VR:  J = ½‖w‖² + mean vᵀ0v = ½‖w‖²,               ∇_w J = w;
    ssm:     J = mean_n ½(v_nᵀw)²,                         ∇_w J = mean_n (v_nᵀw) v_n.

x is then absent from the graph of ``s``, which autograd reports as an error unless the
objective treats the missing derivative as the zero it is (the negative control checks that the
case really has no path from ``s`` back to x). A quadratic energy, whose score does depend on
x, keeps its closed form ``J = mean ½‖P(x-μ)‖² - tr P``. All checks are deterministic: float
tolerances (1e-6 relative on values of order 1).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from quadratic_energy_helpers import QuadraticEnergy, single_thread  # noqa: F401

import ebmlab
from ebmlab.objectives import ScoreMatching, SlicedScoreMatching
from ebmlab.objectives.score_matching import score_with_graph

pytestmark = pytest.mark.usefixtures("single_thread")
TOL = dict(rtol=1e-6, atol=1e-6)


class LinearEnergy(nn.Module):
    """``E(x) = xᵀw`` (``offset`` adds ``½‖x‖²``: score ``-(w + x)``, trace ``-D``). x ``(B, D)`` -> ``(B,)``."""

    def __init__(self, w: torch.Tensor, offset: bool = False):
        super().__init__()
        self.w, self.offset = nn.Parameter(w.clone()), offset
        self.event_shape = (w.shape[0],)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e = x @ self.w
        return e + 0.5 * x.square().sum(-1) if self.offset else e


def case(dim: int = 3, n: int = 6, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return LinearEnergy(torch.randn(dim, generator=g)), torch.randn((n, dim), generator=g), g


def test_the_linear_case_has_no_path_from_the_score_to_x():
    """Negative control: plain autograd refuses this derivative, so the tests below exercise it."""
    energy, x, _ = case()
    x_leaf, _, s = score_with_graph(energy, x)
    with pytest.raises(RuntimeError, match="not have been used in the graph"):
        torch.autograd.grad(s[:, 0].sum(), x_leaf, create_graph=True)


@pytest.mark.parametrize("objective", [ScoreMatching(), SlicedScoreMatching(num_projections=3)],
                         ids=["sm", "ssm-vr"])
def test_loss_and_gradient_of_a_linear_energy_are_the_closed_form(objective):
    energy, x, g = case()
    loss, metrics = objective.loss(energy, x, g)
    w = energy.w.detach()
    torch.testing.assert_close(loss, 0.5 * w.square().sum(), **TOL)
    assert metrics["trace"] == 0.0
    (grad,) = torch.autograd.grad(loss, energy.w)
    torch.testing.assert_close(grad, w, **TOL)


def test_sliced_loss_without_variance_reduction_of_a_linear_energy():
    """``J = mean ½(vᵀw)²`` with the objective's own projections (replayed from a copy of its generator)."""
    energy, x, g = case()
    objective = SlicedScoreMatching(num_projections=4, variance_reduction=False, projection="rademacher")
    replay = torch.Generator().set_state(g.get_state())
    loss, metrics = objective.loss(energy, x, g)
    v = objective.projections((4 * x.shape[0], x.shape[1]), x, replay)
    vw = v @ energy.w.detach()
    torch.testing.assert_close(loss, 0.5 * vw.square().mean(), **TOL)
    assert metrics["trace"] == 0.0
    (grad,) = torch.autograd.grad(loss, energy.w)
    torch.testing.assert_close(grad, (vw[:, None] * v).mean(0), **TOL)


@pytest.mark.parametrize("objective", [ScoreMatching(), SlicedScoreMatching(num_projections=2)], ids=["sm", "ssm"])
def test_an_energy_without_parameters_linear_in_x(objective):
    """``E = Σ x``: ``s = -1`` needs no parameter at all; ``J = ½ D`` and nothing breaks."""
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    loss, metrics = objective.loss(lambda z: z.sum(-1), x, torch.Generator().manual_seed(2))
    assert float(loss) == pytest.approx(2.0) and metrics["trace"] == 0.0


def test_a_score_affine_in_x_keeps_its_trace():
    """``E = xᵀw + ½‖x‖²``: ``s = -(w + x)``, ``tr ∇ₓs = -D``; J = mean ½‖w + x‖² - D."""
    _, x, g = case()
    energy = LinearEnergy(torch.tensor([0.3, -1.0, 2.0]), offset=True)
    loss, metrics = ScoreMatching().loss(energy, x, g)
    reference = 0.5 * (energy.w + x).square().sum(1).mean() - 3
    torch.testing.assert_close(loss, reference, **TOL)
    assert metrics["trace"] == pytest.approx(-3.0)
    torch.testing.assert_close(torch.autograd.grad(loss, energy.w)[0], (energy.w + x).mean(0).detach(), **TOL)


@pytest.mark.parametrize("name", ["sm", "ssm"])
def test_a_quadratic_energy_is_unchanged(name):
    """``E = ½(x-μ)ᵀP(x-μ)``: ``J = mean ½‖P(x-μ)‖² - tr P`` (ssm-VR: ``- mean vᵀPv``), value and gradient."""
    g = torch.Generator().manual_seed(3)
    a = torch.randn((3, 3), generator=g)
    energy = QuadraticEnergy(3, torch.randn(3, generator=g), a @ a.T + 0.5 * torch.eye(3))
    x = torch.randn((7, 3), generator=g)
    objective = ScoreMatching() if name == "sm" else SlicedScoreMatching(num_projections=2)
    replay = torch.Generator().set_state(g.get_state())
    loss, _ = objective.loss(energy, x, g)
    p = energy.precision
    sq = 0.5 * ((x - energy.mu) @ p).square().sum(1).mean()
    if name == "sm":
        reference = sq - torch.trace(p)
    else:
        v = objective.projections((14, 3), x, replay)
        reference = sq - ((v @ p) * v).sum(1).mean()
    torch.testing.assert_close(loss, reference, rtol=1e-5, atol=1e-5)
    params = list(energy.parameters())
    for got, want in zip(torch.autograd.grad(loss, params, retain_graph=True), torch.autograd.grad(reference, params)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["sm", "ssm"])
def test_fit_trains_a_linear_energy(name):
    """One SGD step on ``J = ½‖w‖²`` gives ``w ← (1 - lr) w`` exactly; the bias gets no gradient."""
    model = nn.Sequential(nn.Linear(2, 1), nn.Flatten(0))
    w0, b0 = model[0].weight.detach().clone(), model[0].bias.detach().clone()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(4))
    result = ebmlab.fit(model, name, x, steps=1, batch_size=16, optimizer="sgd", lr=0.1, momentum=0.0)
    torch.testing.assert_close(model[0].weight.detach(), 0.9 * w0, **TOL)
    assert torch.equal(model[0].bias.detach(), b0)
    assert result.history[-1]["loss"] == pytest.approx(0.5 * float(w0.square().sum()), rel=1e-6)
