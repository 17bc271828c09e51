"""Ratio matching (``"ratio_matching"``): exactness, recovery and training.

* Exact: the loss equals a brute-force loop ``(1/B) Σ_b Σ_i (1 + p(x_b)/p(x̄_{b,i}))^{-2}``
  (probabilities from the enumerated distribution), in value and gradient, and on a 1-bit model
  the population objective's minimiser is the data's log-odds (closed form).
* Statistical: ratio matching recovers a 3×3 periodic Ising model's ``(J, h)`` within 4.5
  sandwich standard errors and a small RBM's visible marginal within its delta-method TV
  tolerance (:mod:`discrete_fit_helpers`); the sign-flipped ratio ``σ(+ΔE)²`` does neither
  (negative controls).
"""

from __future__ import annotations

import math

import pytest
import torch
from discrete_fit_helpers import IsingForm, check_rbm_recovery, fit_full_batch, sandwich_covariance, z_scores
from quadratic_energy_helpers import single_thread  # noqa: F401

from ebmlab.energy import BernoulliRBM, Ising
from ebmlab.energy.discrete import Potts
from ebmlab.energy.enumeration import enumerate_states, exact_sample
from ebmlab.objectives import RatioMatching, make_objective
from ebmlab.testing import state_index
from ebmlab.training import fit

pytestmark = pytest.mark.usefixtures("single_thread")
Z = 4.5
N = 20000
TRUTH = torch.tensor([0.3, 0.1], dtype=torch.float64)


class FlippedRM(RatioMatching):
    """Negative control: ``g`` of the inverted ratio, ``σ(+ΔE_i)²``."""

    def ratio_terms(self, delta):
        return super().ratio_terms(-delta)


@pytest.mark.parametrize("make", [lambda: Ising(3, 0.4, 0.2), lambda: IsingForm(3, 0.4, 0.2),
                                  lambda: BernoulliRBM(9, 3, event_shape=(3, 3), weight_scale=1.0,
                                                       generator=torch.Generator().manual_seed(0)).double()],
                         ids=["ising-local", "ising-form", "rbm"])
def test_loss_equals_the_ratio_formula_over_enumerated_probabilities(make):
    """``g(p(x)/p(x̄_i))² = (1 + p(x)/p(x̄_i))^{-2}`` with p enumerated over all 512 states."""
    energy = make()
    x = torch.randint(0, 2, (6, 3, 3), generator=torch.Generator().manual_seed(1)).double()
    states = next(enumerate_states(9, dtype=torch.float64)).view(-1, 3, 3)
    log_p = -energy(states)
    log_p = log_p - torch.logsumexp(log_p, 0)
    total = 0.0
    for i in range(9):
        flipped = x.flatten(1).clone()
        flipped[:, i] = 1 - flipped[:, i]
        ratio = torch.exp(log_p[state_index(x)] - log_p[state_index(flipped)])
        total = total + (1 / (1 + ratio)).square()
    reference = total.mean()
    loss, metrics = RatioMatching(max_states=5).loss(energy, x, None)
    torch.testing.assert_close(loss, reference, rtol=0, atol=1e-10)
    assert metrics["loss"] == pytest.approx(float(reference.detach()), abs=1e-10)
    params = [p for p in energy.parameters() if p.requires_grad]
    if params:
        for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(reference, params)):
            torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


def test_one_bit_population_minimiser_is_the_log_odds():
    """One bit, ``E(x) = -a x``, data ``P(x=1) = q``: ``J(a) = q σ(-a)² + (1-q) σ(a)²`` is
    minimised where ``dJ/da = 0``; the exact loss on a weighted batch agrees with the closed form
    and its minimiser is ``a = log(q/(1-q))`` (consistency, Hyvärinen 2007 Theorem 2)."""
    class Bit(torch.nn.Module):
        support, num_states, event_shape = "binary", 2, (1,)

        def __init__(self):
            super().__init__()
            self.a = torch.nn.Parameter(torch.tensor(0.0, dtype=torch.float64))

        def forward(self, x):
            return -self.a * x[:, 0]

    q, bit = 0.8, Bit()
    states, weights = torch.tensor([[0.0], [1.0]], dtype=torch.float64), torch.tensor([1 - q, q], dtype=torch.float64)

    def population(a: float) -> torch.Tensor:
        with torch.no_grad():
            bit.a.fill_(a)
        return RatioMatching().per_example_loss(bit, states) @ weights

    log_odds = math.log(q / (1 - q))
    loss = population(log_odds)
    closed = q * torch.sigmoid(-bit.a) ** 2 + (1 - q) * torch.sigmoid(bit.a) ** 2
    torch.testing.assert_close(loss, closed, rtol=0, atol=1e-14)
    (slope,) = torch.autograd.grad(loss, bit.a)
    assert abs(float(slope)) < 1e-14
    assert float(population(log_odds - 0.1).detach()) > float(loss.detach()) < float(population(log_odds + 0.1).detach())


@pytest.fixture(scope="module")
def ising_data() -> torch.Tensor:
    return exact_sample(Ising(3, coupling=0.3, field=0.1), N, torch.Generator().manual_seed(0), dtype=torch.float64)


def test_rm_recovers_ising_coupling_and_field(ising_data):
    """``(Ĵ, ĥ)`` from N = 20000 exact draws lie within 4.5 sandwich SEs (≈ 0.0016, 0.0021) of
    (0.3, 0.1); smallest detectable bias ≈ 0.007 in J. Negative control: the flipped ratio
    estimates ≈ (-0.3, -0.1), |z| in the hundreds."""
    objective, energy = RatioMatching(), IsingForm(3)
    per_example = lambda states: objective.per_example_loss(energy, states)  # noqa: E731
    fit_full_batch(per_example, energy, ising_data)
    cov = sandwich_covariance(per_example, energy, ising_data)
    z = z_scores(energy.theta.detach(), TRUTH, cov)
    assert z.abs().max() < Z, (energy.theta, cov.diagonal().sqrt(), z)
    control, wrong = FlippedRM(), IsingForm(3)
    fit_full_batch(lambda states: control.per_example_loss(wrong, states), wrong, ising_data)
    z_bad = z_scores(wrong.theta.detach(), TRUTH, cov)
    assert z_bad.abs().min() > Z, (wrong.theta, z_bad)
    print(f"RM Ising: theta {energy.theta.tolist()}, SE {cov.diagonal().sqrt().tolist()}, z {z.tolist()}; "
          f"flipped theta {wrong.theta.tolist()}, z {z_bad.tolist()}")


def test_rm_recovers_a_small_rbm_up_to_its_symmetries():
    """As for PL (:func:`discrete_fit_helpers.check_rbm_recovery`): visible-marginal TV within
    the delta-method tolerance, the 20 parameters within 4.5 SEs of the nearest symmetry image
    of the truth; the flipped ratio's TV is far above the tolerance."""
    check_rbm_recovery(RatioMatching, FlippedRM, "RM", num_samples=N, z_max=Z)


def test_rm_trains_through_fit_and_refuses_categorical_data():
    data = torch.randint(0, 2, (256, 3, 3), generator=torch.Generator().manual_seed(2)).float()
    rbm = BernoulliRBM(9, 4, event_shape=(3, 3), weight_scale=0.1, generator=torch.Generator().manual_seed(3))
    result = fit(rbm, "ratio_matching", data, steps=4, batch_size=64, seed=0)
    assert result.step == 4 and all(math.isfinite(r["loss"]) for r in result.history)
    assert RatioMatching.supports == ("binary",)
    with pytest.raises(ValueError, match="ratio_matching: ratio matching flips bits and needs binary data"):
        RatioMatching().setup(Potts(2, num_states=3), torch.zeros(4, 2, 2), support="categorical")
    with pytest.raises(ValueError, match="max_states must be >= 1"):
        make_objective("ratio_matching", max_states=0)
