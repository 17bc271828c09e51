"""Held-out log-likelihood from log Z, and the bits-per-dimension convention."""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian, Ising
from ebmlab.energy.enumeration import enumerate_states
from ebmlab.partition.likelihood import bits_per_dim, held_out_nll, log_likelihood
from ebmlab.partition import exact_log_z



def test_gaussian_nll_matches_torch_distributions(generator, float64):
    """With the closed-form log Z, the NLL equals -mean log N(x; μ, Σ) from torch.distributions."""
    target = Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 2.0]]))
    x = target.sample(300, generator)
    reference = torch.distributions.MultivariateNormal(target.mean, target.covariance)
    assert held_out_nll(target, x, target.log_z, batch_size=64) == pytest.approx(float(-reference.log_prob(x).mean()), rel=1e-12)


def test_discrete_log_likelihood_sums_to_one():
    """Over every state of a 3×3 Ising model, ``Σ exp(log p(x)) = 1`` with the enumerated log Z."""
    ising = Ising(3, coupling=0.4, field=0.2)
    states = next(enumerate_states(9, 2, dtype=torch.float64)).view(-1, 3, 3)
    total = torch.logsumexp(log_likelihood(ising, states, exact_log_z(ising, dtype=torch.float64)), 0)
    assert float(total) == pytest.approx(0.0, abs=1e-6)


def test_bits_per_dim_convention():
    """The uniform density on [0, 1]^D has NLL 0 nats; as a model of 8-bit data mapped to [0, 1]
    it assigns every pixel bin probability 1/256, i.e. exactly 8 bits per dimension (and 7 bits
    when the levels span [-1, 1], since each bin is then twice as wide)."""
    assert bits_per_dim(0.0, 784, num_levels=256) == pytest.approx(8.0)
    assert bits_per_dim(0.0, 784, num_levels=256, data_range=2.0) == pytest.approx(7.0)
    assert bits_per_dim(784 * math.log(2), 784) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="num_dims"):
        bits_per_dim(1.0, 0)


def test_data_of_the_wrong_shape_is_refused():
    target = Gaussian(torch.zeros(2))
    with pytest.raises(ValueError, match=r"event shape \(3,\) do not match the energy's event shape \(2,\)"):
        held_out_nll(target, torch.zeros(5, 3), 0.0)
    with pytest.raises(ValueError, match="log_z must be finite"):
        held_out_nll(target, torch.zeros(5, 2), float("nan"))
