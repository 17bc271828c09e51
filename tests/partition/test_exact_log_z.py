"""Exact enumeration of log Z and exact sampling, against closed forms and a χ² test."""

from __future__ import annotations

import math

import pytest
import torch

from ebmlab.energy import Gaussian, Ising, Potts
from ebmlab.partition import exact_log_z, exact_sample
from ebmlab.testing import assert_distribution_close, distribution_check, enumerate_probabilities


def test_independent_spins_closed_form():
    """With J = 0 the spins are independent: ``log Z = L² log(2 cosh h)``; deterministic,
    float64 accumulation, tolerance 1e-9 relative."""
    ising = Ising(3, coupling=0.0, field=0.7)
    assert exact_log_z(ising, dtype=torch.float64) == pytest.approx(9 * math.log(2 * math.cosh(0.7)), rel=1e-9)


def test_independent_potts_closed_form():
    """Potts with J = 0: ``log Z = L² log Σ_k e^{h_k}`` over K = 3 states (3^9 = 19683 states)."""
    field = torch.tensor([0.2, -0.5, 1.0], dtype=torch.float64)
    potts = Potts(3, 3, coupling=0.0, field=field).double()
    assert exact_log_z(potts) == pytest.approx(9 * float(torch.logsumexp(field, 0)), rel=1e-9)


def test_running_logsumexp_is_independent_of_batch_size(small_ising):
    """Streaming in batches of 7 states gives the one-batch answer (and Ising.log_z's)."""
    one = exact_log_z(small_ising, batch_size=1 << 16)
    assert exact_log_z(small_ising, batch_size=7) == pytest.approx(one, abs=1e-5)
    assert one == pytest.approx(small_ising.log_z, abs=1e-5)


def test_coupled_two_by_two_ising_by_hand():
    """2×2 periodic Ising: each horizontal/vertical neighbour pair is bonded twice, so
    ``E = -2J (s₀s₁ + s₂s₃ + s₀s₂ + s₁s₃)``; a 16-term sum written out independently."""
    coupling = 0.37
    ising = Ising(2, coupling=coupling)
    total = 0.0
    for n in range(16):
        s = [2 * ((n >> (3 - i)) & 1) - 1 for i in range(4)]
        total += math.exp(2 * coupling * (s[0] * s[1] + s[2] * s[3] + s[0] * s[2] + s[1] * s[3]))
    assert exact_log_z(ising, dtype=torch.float64) == pytest.approx(math.log(total), rel=1e-12)


def test_too_many_states_names_ais():
    with pytest.raises(ValueError, match=r"2\^25 states exceed.*AIS"):
        exact_log_z(Ising(5))
    with pytest.raises(ValueError, match="AIS"):
        exact_sample(Ising(5), 10)


def test_continuous_energy_is_refused():
    with pytest.raises(ValueError, match="discrete energy.*quadrature"):
        exact_log_z(Gaussian(torch.zeros(2)))


def test_exact_sample_follows_the_enumerated_distribution(small_ising, small_ising_probs, generator):
    """4000 exact draws pass the χ² and TV goodness-of-fit checks at p = 1e-5 (512 states;
    χ² detects a relative change of probabilities of roughly 10% over the bulk).

    Negative control: draws of the model with the coupling mis-scaled by 1.5 (J = 0.45 instead
    of 0.3) fail the same check."""
    draws = exact_sample(small_ising, 4000, generator, batch_size=100)
    assert draws.shape == (4000, 3, 3)
    assert_distribution_close(draws, small_ising_probs)
    wrong = exact_sample(Ising(3, coupling=0.45, field=0.1), 4000, generator)
    assert distribution_check(wrong, small_ising_probs).pvalue < 1e-5


def test_exact_sample_categorical(generator):
    """K = 3 Potts on 2×2 (81 states): 3000 draws pass χ² at p = 1e-5."""
    potts = Potts(2, 3, coupling=0.8, field=torch.tensor([0.0, 0.3, -0.3]))
    draws = exact_sample(potts, 3000, generator, batch_size=10)
    assert_distribution_close(draws, enumerate_probabilities(potts, (2, 2), 3), num_states=3)
