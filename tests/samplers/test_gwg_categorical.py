"""Gibbs-with-gradients on categorical energies (Potts models on a 2×2 periodic grid).

* Exact: the one-hot gradient gives the Potts model's single-site energy changes exactly, and
  the kernel's full transition matrix — ``q(i, k | x)`` times the MH acceptance over every state
  and (site, value) pair — satisfies detailed balance ``π(x)P(x,x') = π(x')P(x',x)`` to float64
  precision; without the MH correction it does not (negative control).
* Statistical: 20000 independent chains started at exact draws stay on the target after
  ``2·D`` transitions (χ² and TV at p = 1e-5, small cells pooled by :mod:`ebmlab.testing`); the
  same chains without the MH correction are rejected (negative control).
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy import enumerate_states
from ebmlab.energy.discrete import Potts
from ebmlab.samplers import ChainState, GibbsWithGradients, sample
from ebmlab.samplers.gwg_categorical import change_log_probs, one_hot_value_and_grad
from ebmlab.testing import distribution_check, enumerate_probabilities, sample_enumerated, state_index

P_VALUE = 1e-5
NUM_CHAINS = 20000
SHAPE = (2, 2)

TARGETS = {  # K^D = 81 and 256 states
    "potts3": lambda: Potts(2, num_states=3, coupling=0.8, field=torch.tensor([0.4, -0.3, 0.0])).double(),
    "potts4": lambda: Potts(2, num_states=4, coupling=0.6, field=torch.tensor([0.5, -0.5, 0.2, 0.0])).double(),
}


def all_states(k: int) -> torch.Tensor:
    return next(enumerate_states(4, k, dtype=torch.float64)).view(-1, *SHAPE)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_one_hot_gradient_gives_exact_energy_changes(target):
    """``one_hot_energy`` equals ``forward`` on every state, and ``∂E/∂o_{i,k} - ∂E/∂o_{i,x_i}``
    equals ``E(x^{i←k}) - E(x)`` for every state, site and value (Potts is linear in each o_i)."""
    energy = TARGETS[target]()
    k = energy.num_states
    x = all_states(k)
    e, g = one_hot_value_and_grad(energy, x, k)
    torch.testing.assert_close(e, energy(x), rtol=0, atol=1e-12)
    flat, g = x.flatten(1), g.reshape(x.shape[0], 4, k)
    for i in range(4):
        for value in range(k):
            moved = flat.clone()
            moved[:, i] = value
            exact = energy(moved.view_as(x)) - e
            estimate = g[:, i, value] - g[:, i].gather(1, flat[:, i:i + 1].long())[:, 0]
            torch.testing.assert_close(estimate, exact, rtol=0, atol=1e-12)


def gwg_matrix(energy, corrected: bool = True) -> torch.Tensor:
    """Exact categorical-GWG transition matrix over all K^D states, float64."""
    k = energy.num_states
    x = all_states(k)
    n = x.shape[0]
    e, g = one_hot_value_and_grad(energy, x, k)
    log_q, _ = change_log_probs(x, g)                                # (n, D·K)
    P = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for i in range(4):
        for value in range(k):
            moved = x.flatten(1).clone()
            moved[:, i] = value
            j = state_index(moved, k)
            forward = log_q[:, i * k + value]
            reverse = log_q[j, i * k + x.flatten(1)[:, i].long()]
            ok = torch.isfinite(forward)                              # value != x_i
            log_alpha = e - e[j] + reverse - forward
            alpha = torch.exp(log_alpha.clamp(max=0.0)) if corrected else torch.ones(n, dtype=torch.float64)
            P[rows[ok], j[ok]] += torch.exp(forward[ok]) * alpha[ok]
    P[rows, rows] += 1 - P.sum(1)
    return P


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_transition_matrix_satisfies_detailed_balance(target):
    """``max |π(x)P(x,x') - π(x')P(x',x)| < 1e-14`` and ``πP = π``; without the MH correction the
    flux imbalance exceeds 1e-4 and ``πP ≠ π`` (negative control)."""
    energy = TARGETS[target]()
    pi = enumerate_probabilities(energy, SHAPE, energy.num_states)
    P = gwg_matrix(energy)
    assert float(P.min()) >= -1e-15
    torch.testing.assert_close(P.sum(1), torch.ones_like(pi), rtol=0, atol=1e-12)
    flux = pi[:, None] * P
    assert float((flux - flux.T).abs().max()) < 1e-14
    assert float((pi @ P - pi).abs().sum()) < 1e-12
    flux_bad = pi[:, None] * gwg_matrix(energy, corrected=False)
    assert float((flux_bad - flux_bad.T).abs().max()) > 1e-4
    assert float((flux_bad.sum(0) - pi).abs().sum()) > 1e-3


class _Uncorrected(GibbsWithGradients):
    """Categorical GWG that always takes its proposal: the negative control."""

    def step(self, energy, state, generator):
        proposal, _, _ = self.propose(energy, state, generator)
        return ChainState(proposal.x, proposal.energy, proposal.grad, state.step + 1), None


def run(kernel, energy, x0, num_steps, seed):
    state = kernel.init(energy, x0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(num_steps):
        state, _ = kernel.step(energy, state, g)
    return state.x


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_chains_started_on_target_stay_on_it(target):
    """Endpoints of 20000 chains after 2·D = 8 steps from exact draws follow the target.

    Pass: χ² p ≥ 1e-5 and TV within its McDiarmid bound. With 81-256 states (df ≈ 80-250 after
    pooling) the χ² test detects with power ½ a Pearson divergence Σ(q-p)²/p of about
    (4.3·√(2·df) + 2.3)/n ≈ 0.003-0.005. Negative control: the same run without the MH
    correction is rejected (p < 1e-5).
    """
    energy = TARGETS[target]()
    k = energy.num_states
    probs = enumerate_probabilities(energy, SHAPE, k)
    x0 = sample_enumerated(probs, NUM_CHAINS, SHAPE, k, generator=torch.Generator().manual_seed(0),
                           dtype=torch.float64)
    check = distribution_check(run(GibbsWithGradients(), energy, x0, 8, seed=1), probs, k)
    assert check.pvalue >= P_VALUE and check.total_variation <= check.tv_bound, check.describe()
    bad = distribution_check(run(_Uncorrected(), energy, x0, 8, seed=2), probs, k)
    assert bad.pvalue < P_VALUE, bad.describe()
    print(f"{target}: GWG {check.describe()}; uncorrected {bad.describe()}")


def test_kernel_runs_through_the_driver_and_refuses_energies_without_one_hot_form():
    """Through :func:`sample`: one site changes per step, the cached energy is E(x), states stay
    in {0..K-1}; an energy with no ``one_hot_energy`` is refused at init with a message."""
    energy = TARGETS["potts3"]()
    x0 = torch.randint(0, 3, (5, *SHAPE), generator=torch.Generator().manual_seed(0)).double()
    record = sample(energy, GibbsWithGradients(), x0, num_steps=20, generator=torch.Generator().manual_seed(1))
    assert record.samples.shape == (20, 5, *SHAPE)
    assert ((record.samples >= 0) & (record.samples <= 2) & (record.samples == record.samples.round())).all()
    assert int((record.samples[1:] != record.samples[:-1]).flatten(2).sum(-1).max()) <= 1
    torch.testing.assert_close(record.energy, energy(record.samples.flatten(0, 1)).view(20, 5))
    assert record.final_state.grad.shape == (5, *SHAPE, 3)

    class Plain(Potts):
        one_hot_energy = None

    with pytest.raises(ValueError, match=r"Plain has no one_hot_energy\(o\) method"):
        GibbsWithGradients().init(Plain(2, num_states=3), x0.float())
    with pytest.raises(ValueError, match=r"integer states in \{0, ..., 2\} \(K = 3\)"):
        GibbsWithGradients().init(energy, torch.full((2, *SHAPE), 3.0, dtype=torch.float64))
