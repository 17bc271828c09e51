"""Tests for Gibbs-with-gradients on exactly enumerable binary models (Ising 3×3, a small RBM).

* Exact: the kernel's full transition matrix — proposal ``q(i|x)`` times the MH acceptance,
  over every state and site — satisfies detailed balance ``π(x)P(x,x') = π(x')P(x',x)`` to
  float64 precision; without the MH correction it does not (negative control).
* Statistical: 20000 independent chains started at exact draws stay on the target after
  ``num_steps`` transitions (χ² and TV at p = 1e-5, :mod:`ebmlab.testing`); the same chains
  without the MH correction are rejected (negative control).
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy import Ising, enumerate_states, value_and_grad
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.samplers import ChainState, GibbsWithGradients, make_kernel, sample
from ebmlab.samplers.gwg import flip_log_probs
from ebmlab.testing import distribution_check, enumerate_probabilities, state_index

P_VALUE = 1e-5
NUM_CHAINS = 20000


def small_rbm() -> BernoulliRBM:
    g = torch.Generator().manual_seed(0)
    rbm = BernoulliRBM(8, 4, weight_scale=1.0, generator=g)
    with torch.no_grad():
        rbm.b.normal_(0.0, 0.5, generator=g)
        rbm.c.normal_(0.0, 0.5, generator=g)
    return rbm.double()


TARGETS = {
    "ising": (lambda: Ising(3, coupling=0.3, field=0.1), (3, 3)),
    "rbm": (small_rbm, (8,)),
}


def gwg_matrix(energy, event_shape, corrected: bool = True) -> torch.Tensor:
    """Exact GWG transition matrix over all 2^D states, (2^D, 2^D), float64."""
    d = int(torch.tensor(event_shape).prod())
    x = next(enumerate_states(d, dtype=torch.float64)).view(-1, *event_shape)
    n = x.shape[0]
    e, g = value_and_grad(energy, x)
    log_q = flip_log_probs(x, g)  # (n, D): log q(i | x)
    P = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for i in range(d):
        flipped = x.flatten(1).clone()
        flipped[:, i] = 1 - flipped[:, i]
        j = state_index(flipped)
        log_alpha = e - e[j] + log_q[j, i] - log_q[:, i]
        alpha = torch.exp(log_alpha.clamp(max=0.0)) if corrected else torch.ones(n, dtype=torch.float64)
        P[rows, j] += torch.exp(log_q[:, i]) * alpha
    P[rows, rows] += 1 - P.sum(1)
    return P


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_transition_matrix_satisfies_detailed_balance(target):
    """``max |π(x)P(x,x') - π(x')P(x',x)| < 1e-14``; without the MH correction the flux
    imbalance exceeds 1e-4 and ``πP ≠ π`` (negative control)."""
    make, shape = TARGETS[target]
    energy = make()
    pi = enumerate_probabilities(energy, shape)
    P = gwg_matrix(energy, shape)
    assert float(P.min()) >= -1e-15
    flux = pi[:, None] * P
    assert float((flux - flux.T).abs().max()) < 1e-14
    assert float((pi @ P - pi).abs().sum()) < 1e-12
    P_bad = gwg_matrix(energy, shape, corrected=False)
    flux_bad = pi[:, None] * P_bad
    assert float((flux_bad - flux_bad.T).abs().max()) > 1e-4
    assert float((pi @ P_bad - pi).abs().sum()) > 1e-3


class _Uncorrected(GibbsWithGradients):
    """GWG that always takes its proposal: the negative control."""

    def step(self, energy, state, generator):
        proposal, _, _ = self.propose(energy, state, generator)
        return ChainState(proposal.x, proposal.energy, proposal.grad, state.step + 1), None


def run(kernel, energy, x0, num_steps, seed):
    state = kernel.init(energy, x0)
    g = torch.Generator().manual_seed(seed)
    for _ in range(num_steps):
        state, _ = kernel.step(energy, state, g)
    return state.x


def exact_draws(probs: torch.Tensor, event_shape, seed: int) -> torch.Tensor:
    d = int(torch.tensor(event_shape).prod())
    states = next(enumerate_states(d, dtype=torch.float64))
    index = torch.multinomial(probs, NUM_CHAINS, replacement=True, generator=torch.Generator().manual_seed(seed))
    return states[index].view(NUM_CHAINS, *event_shape)


@pytest.mark.parametrize("target", sorted(TARGETS))
def test_chains_started_on_target_stay_on_it(target):
    """Endpoints of 20000 chains after 2·D GWG steps from exact draws follow the target.

    Pass: χ² p ≥ 1e-5 and TV within its McDiarmid bound. With D = 8-9 sites (256-512
    states, df ≈ 200-300 after pooling) the χ² test detects with power ½ a Pearson divergence
    Σ(q-p)²/p ≳ 110/n ≈ 0.0055. Negative control: the same run without the MH correction is
    rejected (p < 1e-5).
    """
    make, shape = TARGETS[target]
    energy = make()
    probs = enumerate_probabilities(energy, shape)
    d = len(probs).bit_length() - 1
    x0 = exact_draws(probs, shape, seed=0)
    x = run(GibbsWithGradients(), energy, x0, 2 * d, seed=1)
    check = distribution_check(x, probs)
    assert check.pvalue >= P_VALUE and check.total_variation <= check.tv_bound, check.describe()
    bad = distribution_check(run(_Uncorrected(), energy, x0, 2 * d, seed=2), probs)
    assert bad.pvalue < P_VALUE, bad.describe()


def test_kernel_contract_and_errors():
    energy = Ising(3, coupling=0.3)
    kernel = make_kernel("gwg")
    assert isinstance(kernel, GibbsWithGradients)
    x0 = torch.randint(0, 2, (5, 3, 3), generator=torch.Generator().manual_seed(0)).float()
    record = sample(energy, kernel, x0, num_steps=20, generator=torch.Generator().manual_seed(1))
    assert record.samples.shape == (20, 5, 3, 3)
    assert ((record.samples == 0) | (record.samples == 1)).all()
    # each transition flips at most one site
    moves = (record.samples[1:] != record.samples[:-1]).flatten(2).sum(-1)
    assert int(moves.max()) <= 1
    torch.testing.assert_close(record.energy, energy(record.samples.flatten(0, 1)).view(20, 5))
    assert ((record.acceptance_rate >= 0) & (record.acceptance_rate <= 1)).all()
    with pytest.raises(ValueError, match=r"integer states in \{0, 1\} \(K = 2\).*Ising, got value\(s\) 0.5"):
        kernel.init(energy, torch.full((2, 3, 3), 0.5))
    with pytest.raises(TypeError, match=r"floating tensor.*torch.int64.*x0.float\(\)"):
        kernel.init(energy, torch.zeros(2, 3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="unknown option.*'step_size'"):
        make_kernel("gwg", step_size=0.5)
