"""Antithetic denoising score matching: the same expected loss and gradient as plain DSM, with
the gradient's noise term cancelled.

On a quadratic energy ``E(x) = ½ (x-μ)ᵀ P (x-μ)`` the per-example DSM gradient with respect to
μ is ``P (-P(x + σε - μ) + ε/σ)``: its ε-part ``(P/σ - σP²) ε`` has zero mean and a variance that
grows as 1/σ². An antithetic pair (+ε, -ε) cancels it exactly, so the antithetic gradient is the
exact expectation ``-P² (x̄ - μ)`` for every draw. The plain estimate must agree with it in the
mean (4.5 standard errors over many draws) and not in a single draw (the negative control).
"""

from __future__ import annotations

import pytest
import torch
from quadratic_energy_helpers import QuadraticEnergy, single_thread  # noqa: F401

from ebmlab.objectives import DenoisingScoreMatching

pytestmark = pytest.mark.usefixtures("single_thread")

SIGMA = 0.05
DRAWS = 2000


def _case():
    g = torch.Generator().manual_seed(3)
    a = torch.randn((3, 3), generator=g, dtype=torch.float64)
    precision = a @ a.T + 0.5 * torch.eye(3, dtype=torch.float64)
    energy = QuadraticEnergy(3, torch.randn(3, generator=g), precision.float()).double()
    return energy, torch.randn((16, 3), generator=g, dtype=torch.float64)


def _mu_grad(objective, energy, x, g) -> tuple[torch.Tensor, float]:
    loss, _ = objective.loss(energy, x, g)
    (grad,) = torch.autograd.grad(loss, [energy.mu])
    return grad, float(loss.detach())


def test_antithetic_loss_is_the_mean_of_the_two_perturbed_losses():
    energy, x = _case()
    g = torch.Generator().manual_seed(0)
    eps = torch.randn(x.shape, generator=torch.Generator().set_state(g.get_state()), dtype=x.dtype)
    loss, _ = DenoisingScoreMatching(sigma=SIGMA, antithetic=True).loss(energy, x, g)
    p, mu = energy.precision.double(), energy.mu

    def plain(e):
        return (0.5 * (-(x + SIGMA * e - mu) @ p + e / SIGMA).square().sum(1)).mean()

    torch.testing.assert_close(loss, 0.5 * (plain(eps) + plain(-eps)), rtol=1e-10, atol=1e-10)


def test_antithetic_gradient_is_the_exact_expectation_and_plain_dsm_agrees_only_on_average():
    energy, x = _case()
    p = energy.precision.detach().double()
    expected = -(p @ p @ (x.mean(0) - energy.mu.detach()))  # E_ε of the mean per-example gradient
    g = torch.Generator().manual_seed(1)
    anti, plain = DenoisingScoreMatching(sigma=SIGMA, antithetic=True), DenoisingScoreMatching(sigma=SIGMA)
    anti_grads = torch.stack([_mu_grad(anti, energy, x, g)[0] for _ in range(50)])
    torch.testing.assert_close(anti_grads, expected.expand_as(anti_grads), rtol=1e-8, atol=1e-8)

    draws = torch.stack([_mu_grad(plain, energy, x, g)[0] for _ in range(DRAWS)])
    z = (draws.mean(0) - expected) / (draws.std(0) / DRAWS**0.5)
    assert z.abs().max() < 4.5, z
    # negative control: one plain draw is far from the expectation (its noise is O(1/σ))
    assert ((draws[0] - expected).abs() / expected.abs().clamp_min(1e-3)).max() > 0.5
    assert draws.std(0).min() > 100 * anti_grads.std(0).max()


def test_antithetic_and_plain_losses_have_the_same_expectation():
    energy, x = _case()
    g = torch.Generator().manual_seed(2)
    anti, plain = DenoisingScoreMatching(sigma=SIGMA, antithetic=True), DenoisingScoreMatching(sigma=SIGMA)
    a = torch.tensor([_mu_grad(anti, energy, x, g)[1] for _ in range(DRAWS)], dtype=torch.float64)
    b = torch.tensor([_mu_grad(plain, energy, x, g)[1] for _ in range(DRAWS)], dtype=torch.float64)
    z = (a.mean() - b.mean()) / (a.var() / DRAWS + b.var() / DRAWS).sqrt()
    assert abs(float(z)) < 4.5, float(z)


def test_antithetic_must_be_a_boolean():
    with pytest.raises(ValueError, match="antithetic"):
        DenoisingScoreMatching(antithetic="yes")
