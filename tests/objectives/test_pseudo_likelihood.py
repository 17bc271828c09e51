"""Pseudo-likelihood (``"pl"``): exactness, the random-site estimate, recovery, and training.

* Exact: the loss equals a brute-force loop over examples, sites and values (Ising through its
  local flip formula, a learnable Ising form without one, a Potts model, an RBM with and without
  parameter gradients), in value and in parameter gradient, whatever the chunk size.
* Statistical: the one-random-site estimate is unbiased for the exact loss; PL recovers a 3×3
  periodic Ising model's ``(J, h)`` within 4.5 sandwich standard errors and a small RBM's
  visible marginal within its delta-method TV tolerance (see :mod:`discrete_fit_helpers` for
  both derivations); a sign error in the conditional does neither (negative controls).
"""

from __future__ import annotations

import math

import pytest
import torch
from discrete_fit_helpers import (
    IsingForm, LocalIsingForm, check_rbm_recovery, fit_full_batch, sandwich_covariance, z_scores,
)
from quadratic_energy_helpers import single_thread  # noqa: F401

from ebmlab.energy import BernoulliRBM, Ising, MLPEnergy
from ebmlab.energy.discrete import Potts
from ebmlab.energy.enumeration import exact_sample
from ebmlab.objectives import PseudoLikelihood, make_objective
from ebmlab.training import fit

pytestmark = pytest.mark.usefixtures("single_thread")
Z = 4.5
N = 20000
TRUTH = torch.tensor([0.3, 0.1], dtype=torch.float64)   # (J, h) of the 3×3 Ising model


class FlippedPL(PseudoLikelihood):
    """Negative control: the conditional with the energy's sign flipped, ``softmax(+ΔE)``."""

    def log_conditionals(self, relative, current):
        return super().log_conditionals(-relative, current)


def brute_force(energy, x: torch.Tensor, num_states: int) -> torch.Tensor:
    """``-(1/B) Σ_b Σ_i [-E(x_b) - logsumexp_k -E(x_b^{i←k})]``, one energy call per (b, i, k)."""
    flat = x.reshape(x.shape[0], -1)
    total = 0.0
    for b in range(flat.shape[0]):
        for i in range(flat.shape[1]):
            log_p = []
            for k in range(num_states):
                y = flat[b].clone()
                y[i] = k
                log_p.append(-energy(y.view(1, *x.shape[1:]))[0])
            log_p = torch.stack(log_p)
            total = total + log_p[int(flat[b, i])] - torch.logsumexp(log_p, 0)
    return -total / flat.shape[0]


def cases():
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(6, 3, weight_scale=1.0, generator=g).double()
    potts = Potts(2, num_states=3, coupling=0.7, field=torch.tensor([0.3, -0.2, 0.0])).double()
    return {
        "ising-local": (Ising(3, coupling=0.4, field=0.2), torch.randint(0, 2, (5, 3, 3), generator=g).double(), 2),
        "ising-form": (IsingForm(3, 0.4, 0.2), torch.randint(0, 2, (5, 3, 3), generator=g).double(), 2),
        "ising-form-local": (LocalIsingForm(3, 0.4, 0.2), torch.randint(0, 2, (5, 3, 3), generator=g).double(), 2),
        "rbm": (rbm, torch.randint(0, 2, (5, 6), generator=g).double(), 2),
        "potts": (potts, torch.randint(0, 3, (5, 2, 2), generator=g).double(), 3),
    }


@pytest.mark.parametrize("case", sorted(cases()))
def test_exact_loss_equals_a_brute_force_loop(case):
    """Loss and parameter gradients agree with the loop to 1e-10, for automatic chunks and for
    chunks of 7 states; under ``no_grad`` (the RBM's own no-grad flip formula) too."""
    energy, x, k = cases()[case]
    reference = brute_force(energy, x, k)
    for objective in (PseudoLikelihood(), PseudoLikelihood(max_states=7)):
        loss, metrics = objective.loss(energy, x, None)
        torch.testing.assert_close(loss, reference, rtol=0, atol=1e-10)
        assert metrics["loss"] == pytest.approx(float(reference.detach()), abs=1e-10)
        assert metrics["log_conditional"] == pytest.approx(-float(reference.detach()) / x[0].numel(), abs=1e-10)
        params = [p for p in energy.parameters() if p.requires_grad]
        if params:
            for got, want in zip(torch.autograd.grad(loss, params), torch.autograd.grad(reference, params, retain_graph=True)):
                torch.testing.assert_close(got, want, rtol=0, atol=1e-10)
    with torch.no_grad():
        torch.testing.assert_close(PseudoLikelihood().loss(energy, x, None)[0], reference.detach(), rtol=0, atol=1e-10)


def test_random_site_estimate_is_unbiased():
    """Mean of R = 400 one-site estimates (each over B = 200 examples, ×D) lies within 4.5 SE of
    the exact loss, SE = sd/√R from the R values; smallest detectable bias 4.5·SE ≈ 2% of the
    loss. Negative control: scaling by D - 1 instead of D (bias = loss/D) gives |z| > 4.5."""
    energy = IsingForm(3, 0.3, 0.1)
    x = exact_sample(Ising(3, 0.3, 0.1), 200, torch.Generator().manual_seed(5), dtype=torch.float64)
    exact = PseudoLikelihood().loss(energy, x, None)[1]["loss"]
    g = torch.Generator().manual_seed(6)
    random_site = PseudoLikelihood(sites="random")
    with torch.no_grad():
        draws = torch.tensor([float(random_site.loss(energy, x, g)[0]) for _ in range(400)])
    se = float(draws.std()) / math.sqrt(len(draws))
    z = (float(draws.mean()) - exact) / se
    assert abs(z) < Z, (float(draws.mean()), exact, se)
    z_bad = (float(draws.mean()) * 8 / 9 - exact) / (se * 8 / 9)
    assert abs(z_bad) > Z, z_bad
    print(f"random site: mean {float(draws.mean()):.4f}, exact {exact:.4f}, SE {se:.4f}, z {z:.2f}; "
          f"(D-1) scaling z {z_bad:.1f}")


@pytest.fixture(scope="module")
def ising_data() -> torch.Tensor:
    return exact_sample(Ising(3, coupling=0.3, field=0.1), N, torch.Generator().manual_seed(0), dtype=torch.float64)


def test_pl_recovers_ising_coupling_and_field(ising_data):
    """``(Ĵ, ĥ)`` from N = 20000 exact draws lie within 4.5 sandwich SEs of (0.3, 0.1); the SEs
    (≈ 0.0014, 0.0017) bound the smallest detectable bias at ≈ 0.006 in J. Negative control:
    the sign-flipped conditional estimates ≈ (-0.3, -0.1), |z| in the hundreds."""
    objective, energy = PseudoLikelihood(), IsingForm(3)
    per_example = lambda states: objective.per_example_loss(energy, states)  # noqa: E731
    fit_full_batch(per_example, energy, ising_data)
    cov = sandwich_covariance(per_example, energy, ising_data)
    z = z_scores(energy.theta.detach(), TRUTH, cov)
    assert z.abs().max() < Z, (energy.theta, cov.diagonal().sqrt(), z)
    control, wrong = FlippedPL(), IsingForm(3)
    fit_full_batch(lambda states: control.per_example_loss(wrong, states), wrong, ising_data)
    z_bad = z_scores(wrong.theta.detach(), TRUTH, cov)
    assert z_bad.abs().min() > Z, (wrong.theta, z_bad)
    print(f"PL Ising: theta {energy.theta.tolist()}, SE {cov.diagonal().sqrt().tolist()}, z {z.tolist()}; "
          f"flipped theta {wrong.theta.tolist()}, z {z_bad.tolist()}")


def test_pl_recovers_a_small_rbm_up_to_its_symmetries():
    """A 6-visible, 2-hidden RBM fitted from N = 20000 exact draws: the TV between its visible
    marginal and the truth's lies below mean + 4.5 sd of the delta-method TV law (≈ 0.011 +
    4.5·0.002, the smallest detectable excess), and each of the 20 parameters lies within 4.5
    sandwich SEs of the nearest of the truth's 8 symmetry images. Negative control: the
    sign-flipped conditional's TV (≈ 0.85) is far above the tolerance."""
    check_rbm_recovery(PseudoLikelihood, FlippedPL, "PL")


@pytest.mark.parametrize("options", [{}, {"sites": "random"}], ids=["all", "random"])
def test_pl_trains_through_fit(options):
    """``fit`` runs a few PL updates on a binary RBM; a real-valued energy is refused by ``supports``."""
    data = torch.randint(0, 2, (256, 3, 3), generator=torch.Generator().manual_seed(2)).float()
    rbm = BernoulliRBM(9, 4, event_shape=(3, 3), weight_scale=0.1, generator=torch.Generator().manual_seed(3))
    result = fit(rbm, "pl", data, steps=4, batch_size=64, seed=0, objective_options=options)
    assert result.step == 4 and all(math.isfinite(r["loss"]) for r in result.history)
    with pytest.raises(ValueError, match="objective 'pl' needs binary or categorical data.*energy.support = 'binary'"):
        fit(MLPEnergy(2, (8,)), "pl", torch.randn(32, 2), steps=1)
    net = MLPEnergy(4, (8,))
    net.support = "binary"  # what the message says to do: a user network on binary data
    assert fit(net, "pl", data.flatten(1)[:, :4], steps=2, batch_size=64, seed=0).step == 2


def test_options_and_data_are_validated():
    with pytest.raises(ValueError, match=r"pl: sites must be one of 'all', 'random', got 'some'"):
        make_objective("pl", sites="some")
    with pytest.raises(ValueError, match="max_states must be >= 1"):
        make_objective("pl", max_states=0)
    with pytest.raises(ValueError, match=r"pl: data must hold integer states in \{0, ..., 2\} \(K = 3\), got value\(s\) 3"):
        PseudoLikelihood().setup(Potts(2, num_states=3), torch.full((4, 2, 2), 3.0), support="categorical")
    with pytest.raises(ValueError, match=r"got value\(s\) 0.5"):
        PseudoLikelihood().setup(Ising(3), torch.full((4, 3, 3), 0.5), support="binary")
