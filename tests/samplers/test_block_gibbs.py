"""Tests for the block-Gibbs kernel on small RBMs with exactly enumerable distributions.

* Exact: the one-step transition matrix ``P(v → v') = Σ_h p(h|v) p(v'|h)`` is built over all
  states and must satisfy ``πP = π`` to float64 precision; a kernel with a mis-specified
  conditional must not.
* Statistical: chains started at exact draws stay on the target (χ² and TV at p = 1e-5,
  :mod:`ebmlab.testing`); chains from a dispersed start converge on a weakly coupled target;
  a negative control (sampling a model whose weights are scaled by 1.3) is rejected.
"""

from __future__ import annotations

import pytest
import torch

from ebmlab.energy import Ising, enumerate_states
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.samplers import BlockGibbs, make_kernel, sample
from ebmlab.testing import distribution_check, enumerate_probabilities
from rbm_helpers import random_rbm

P_VALUE = 1e-5
NUM_CHAINS = 20000


def bernoulli_prob(states: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """``Π_k p_k^{s_k} (1-p_k)^{1-s_k}`` for every row of ``probs`` (n, K) and state (m, K): (n, m)."""
    return torch.exp(torch.log(probs) @ states.T + torch.log1p(-probs) @ (1 - states).T)


def block_gibbs_matrix(rbm: BernoulliRBM, hidden_bias_shift: float = 0.0) -> torch.Tensor:
    """Exact transition matrix of one sweep over all 2^V states, (2^V, 2^V), float64."""
    v_all = next(enumerate_states(rbm.num_visible, dtype=torch.float64))
    h_all = next(enumerate_states(rbm.num_hidden, dtype=torch.float64))
    with torch.no_grad():
        p_h = bernoulli_prob(h_all, torch.sigmoid(rbm.hidden_logits(v_all) + hidden_bias_shift))
        p_v = bernoulli_prob(v_all, rbm.visible_probs(h_all).reshape(h_all.shape[0], -1))
    return p_h @ p_v


def test_transition_matrix_leaves_target_invariant():
    """``‖πP - π‖₁ < 1e-12``; a kernel whose hidden conditional has its bias shifted by 0.2 —
    a small implementation error — breaks invariance by more than 1e-3 (negative control)."""
    rbm = random_rbm(6, 4, scale=1.5)
    pi = enumerate_probabilities(rbm, (6,))
    P = block_gibbs_matrix(rbm)
    torch.testing.assert_close(P.sum(1), torch.ones(64, dtype=torch.float64))
    assert float((pi @ P - pi).abs().sum()) < 1e-12
    wrong = block_gibbs_matrix(rbm, hidden_bias_shift=0.2)
    assert float((pi @ wrong - pi).abs().sum()) > 1e-3


def exact_start(rbm: BernoulliRBM, seed: int) -> torch.Tensor:
    return rbm.exact_sample(NUM_CHAINS, torch.Generator().manual_seed(seed))


def run_block_gibbs(rbm: BernoulliRBM, x0: torch.Tensor, num_steps: int, seed: int) -> torch.Tensor:
    record = sample(rbm, BlockGibbs(), x0, num_steps=num_steps, generator=torch.Generator().manual_seed(seed),
                    keep_samples=False)
    return record.final_state.x


def test_chains_started_on_target_stay_on_it():
    """Endpoints of 20000 independent chains, started at exact draws and moved 3 sweeps, follow
    the exact distribution (8 visible units, 256 states): χ² p ≥ 1e-5 and TV within its bound.

    The χ² test (df ≈ 200 after pooling) detects with power ½ a law q whose Pearson divergence
    Σ(q-p)²/p exceeds ≈ 98/n = 0.005. Negative control: chains run on the same model with its
    weights scaled by 1.3 — a mis-scaled coupling — are rejected (p < 1e-5).
    """
    rbm = random_rbm(8, 6)
    probs = enumerate_probabilities(rbm, (8,))
    x = run_block_gibbs(rbm, exact_start(rbm, 0), num_steps=3, seed=1)
    check = distribution_check(x, probs)
    assert check.pvalue >= P_VALUE and check.total_variation <= check.tv_bound, check.describe()

    wrong = random_rbm(8, 6)
    with torch.no_grad():
        wrong.W.mul_(1.3)
    bad = distribution_check(run_block_gibbs(wrong, exact_start(rbm, 2), num_steps=3, seed=3), probs)
    assert bad.pvalue < P_VALUE, bad.describe()


def test_converges_from_a_dispersed_start():
    """A weakly coupled RBM (weights N(0, 0.5²)) reached from uniform noise in 10 sweeps,
    image-shaped events (1, 2, 4) included; same χ²/TV criterion as above."""
    rbm = random_rbm(8, 5, scale=0.5, seed=4, event_shape=(1, 2, 4))
    probs = enumerate_probabilities(rbm, (1, 2, 4))
    g = torch.Generator().manual_seed(5)
    x0 = torch.randint(0, 2, (NUM_CHAINS, 1, 2, 4), generator=g).double()
    x = run_block_gibbs(rbm, x0, num_steps=10, seed=6)
    assert x.shape == x0.shape
    check = distribution_check(x, probs)
    assert check.pvalue >= P_VALUE and check.total_variation <= check.tv_bound, check.describe()


def test_kernel_contract_and_errors():
    rbm = random_rbm(8, 3)
    kernel = make_kernel("block_gibbs", num_sweeps=2, step_size=None)  # None options are dropped
    assert kernel == BlockGibbs(num_sweeps=2)
    with pytest.raises(ValueError, match=r"unknown option\(s\) 'step_size'; it accepts num_sweeps"):
        make_kernel("block_gibbs", num_sweeps=2, step_size=0.1)
    x0 = torch.zeros(4, 8, dtype=torch.float64)
    state = kernel.init(rbm, x0)
    new, info = kernel.step(rbm, state, torch.Generator().manual_seed(0))
    assert new.x.shape == x0.shape and new.step == 1
    torch.testing.assert_close(new.energy, rbm(new.x).detach())
    assert info.accepted.all() and info.accept_prob.shape == (4,) and not info.diverged.any()
    # deterministic given the generator
    again, _ = kernel.step(rbm, state, torch.Generator().manual_seed(0))
    torch.testing.assert_close(new.x, again.x)
    with pytest.raises(ValueError, match="no sample_hidden or sample_visible"):
        BlockGibbs().init(Ising(3), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="num_sweeps must be >= 1"):
        BlockGibbs(num_sweeps=0)
