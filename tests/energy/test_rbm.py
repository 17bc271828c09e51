"""Tests for ebmlab.energy.rbm: the free energy and its local formulas against brute force,
exact log Z by both enumerations, exact sampling, scikit-learn interoperability, the model
factory and input validation. All deterministic except the exact-sampling check (χ², p = 1e-5).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from ebmlab.energy import delta_energy_flip, enumerate_states, site_energies, value_and_grad
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.testing import distribution_check, enumerate_probabilities
from rbm_helpers import random_rbm

P_VALUE = 1e-5


def test_free_energy_sums_out_hidden_units():
    """``F(v) = -log Σ_h exp(-E(v, h))`` over all 2^H hidden states, to float64 precision."""
    rbm = random_rbm(5, 4)
    v = next(enumerate_states(5, dtype=torch.float64))  # all 32 visible states
    h_all = next(enumerate_states(4, dtype=torch.float64))  # all 16 hidden states
    joint = torch.stack([rbm.joint_energy(v, h.expand(v.shape[0], -1)) for h in h_all], dim=1)
    brute = -torch.logsumexp(-joint, dim=1)
    torch.testing.assert_close(rbm(v), brute, rtol=0, atol=1e-12)


def test_conditionals_match_joint_enumeration():
    """``p(h_j=1|v)`` and ``p(v_i=1|h)`` equal the ratios of joint probabilities."""
    rbm = random_rbm(3, 2)
    v_all = next(enumerate_states(3, dtype=torch.float64))
    h_all = next(enumerate_states(2, dtype=torch.float64))
    log_joint = torch.stack([-rbm.joint_energy(v_all, h.expand(8, -1)) for h in h_all], dim=1)  # (8 v, 4 h)
    p_h_given_v = torch.softmax(log_joint, dim=1)
    expected_h = p_h_given_v @ h_all  # E[h | v] = p(h_j = 1 | v)
    torch.testing.assert_close(rbm.hidden_probs(v_all), expected_h, rtol=0, atol=1e-12)
    p_v_given_h = torch.softmax(log_joint, dim=0)
    expected_v = p_v_given_h.T @ v_all
    torch.testing.assert_close(rbm.visible_probs(h_all), expected_v, rtol=0, atol=1e-12)


def test_local_formulas_match_brute_force():
    """delta_energy_flip, site_energies and the closed-form gradient against direct evaluation."""
    rbm = random_rbm(6, 4)
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 2, (7, 6), generator=g).double()
    site = torch.randint(0, 6, (7,), generator=g)
    flipped = x.clone()
    flipped[torch.arange(7), site] = 1 - flipped[torch.arange(7), site]
    torch.testing.assert_close(rbm.delta_energy_flip(x, site), rbm(flipped) - rbm(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(delta_energy_flip(rbm, x, 3), delta_energy_flip(lambda y: rbm(y), x, 3))
    ours = site_energies(rbm, x, site, 2)
    generic = site_energies(lambda y: rbm(y), x, site, 2)
    torch.testing.assert_close(ours, generic, rtol=0, atol=1e-12)
    e, grad = value_and_grad(rbm, x)
    e_auto, grad_auto = value_and_grad(lambda y: rbm(y), x)
    torch.testing.assert_close(e, e_auto)
    torch.testing.assert_close(grad, grad_auto)


def test_exact_log_z_by_both_layers_and_brute_force():
    """Enumerating the hidden layer (visible summed out) and the visible layer agree with the
    joint sum ``log Σ_{v,h} exp(-E(v,h))`` to float64 precision, including across batches."""
    rbm = random_rbm(7, 5, scale=1.5)
    v_all = next(enumerate_states(7, dtype=torch.float64))
    h_all = next(enumerate_states(5, dtype=torch.float64))
    with torch.no_grad():
        joint = torch.stack([-rbm.joint_energy(v_all, h.expand(128, -1)) for h in h_all])
    brute = float(torch.logsumexp(joint.flatten(), 0))
    assert rbm.exact_log_z(layer="hidden", batch_size=8) == pytest.approx(brute, abs=1e-10)
    assert rbm.exact_log_z(layer="visible", batch_size=16) == pytest.approx(brute, abs=1e-10)
    assert rbm.log_z == pytest.approx(brute, abs=1e-10)


def test_log_z_limits():
    big = BernoulliRBM(30, 25)
    assert big.log_z is None
    with pytest.raises(ValueError, match="exact enumeration of the hidden layer"):
        big.exact_log_z()
    with pytest.raises(ValueError, match="layer must be"):
        BernoulliRBM(3, 2).exact_log_z(layer="both")
    # a wide hidden layer with few visible units enumerates the visible layer
    assert math.isfinite(BernoulliRBM(4, 40).log_z)


def test_exact_sample_follows_the_model():
    """Exact draws (via the hidden marginal) pass a χ² test at p = 1e-5 against enumeration.

    With n = 20000 draws over 256 states the test detects ``n Σ(q-p)²/p`` of about 60 above
    its mean (chi-square noncentrality, df ≈ 200). Negative control: the draws of a model
    whose weights are scaled by 1.3 are rejected.
    """
    rbm = random_rbm(8, 5)
    g = torch.Generator().manual_seed(3)
    probs = enumerate_probabilities(rbm, (8,))
    draws = rbm.exact_sample(20000, g)
    check = distribution_check(draws, probs)
    assert check.pvalue >= P_VALUE and check.total_variation <= check.tv_bound, check.describe()
    wrong = random_rbm(8, 5)
    with torch.no_grad():
        wrong.W.mul_(1.3)
    bad = distribution_check(wrong.exact_sample(20000, g), probs)
    assert bad.pvalue < P_VALUE, bad.describe()


def test_image_event_shape_and_flattening():
    rbm = random_rbm(8, 3, event_shape=(1, 2, 4))
    x = torch.randint(0, 2, (5, 1, 2, 4)).double()
    torch.testing.assert_close(rbm(x), rbm(x.reshape(5, 8)))
    h = rbm.sample_hidden(x, torch.Generator().manual_seed(0))
    assert h.shape == (5, 3)
    assert rbm.sample_visible(h, torch.Generator().manual_seed(0)).shape == (5, 1, 2, 4)
    _, grad = value_and_grad(rbm, x)
    assert grad.shape == x.shape


def test_input_validation():
    with pytest.raises(ValueError, match="num_visible and num_hidden must be >= 1"):
        BernoulliRBM(0, 3)
    with pytest.raises(ValueError, match="event_shape"):
        BernoulliRBM(8, 3, event_shape=(3, 3))
    with pytest.raises(ValueError, match="8 visible values"):
        BernoulliRBM(8, 3)(torch.zeros(2, 7))


def test_from_sklearn_loads_fitted_weights():
    """The loaded model reproduces scikit-learn's hidden activations (its public transform)."""
    from sklearn.neural_network import BernoulliRBM as SkRBM

    rng = np.random.default_rng(0)
    data = (rng.random((60, 12)) < 0.3).astype(np.float64)
    sk = SkRBM(n_components=5, learning_rate=0.05, batch_size=10, n_iter=3, random_state=0).fit(data)
    rbm = BernoulliRBM.from_sklearn(sk, event_shape=(3, 4)).double()
    assert rbm.event_shape == (3, 4)
    x = torch.from_numpy(data).reshape(60, 3, 4)
    torch.testing.assert_close(rbm.hidden_probs(x), torch.from_numpy(sk.transform(data)), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="fit it first"):
        BernoulliRBM.from_sklearn(SkRBM(n_components=5))


def test_model_factory_registered():
    from ebmlab.training.models import build_model

    model = build_model("rbm", (1, 4, 4), num_hidden=6, seed=0)
    assert isinstance(model, BernoulliRBM)
    assert (model.num_visible, model.num_hidden, model.event_shape) == (16, 6, (1, 4, 4))
    again = build_model("rbm", (1, 4, 4), num_hidden=6, seed=0)
    torch.testing.assert_close(model.W, again.W)


def test_pcd_training_raises_the_exact_likelihood(tmp_path):
    """The general trainer with model ``rbm``, objective ``pcd`` and sampler ``block_gibbs``
    (PCD-1, SGD with momentum 0.5), from small random weights, on 400 exact draws of an 8×4 RBM,
    brings the exact mean log-likelihood of the data within 0.3 nats of the generating model's.
    Negative control: the untrained model (≈ uniform, -8 log 2) fails the same criterion."""
    from train_helpers import train

    teacher = random_rbm(8, 4, scale=2.0, seed=7)
    data = teacher.exact_sample(400, torch.Generator().manual_seed(8))
    np.save(tmp_path / "data.npy", data.numpy())

    def mean_log_likelihood(model: BernoulliRBM) -> float:
        with torch.no_grad():
            return float(-model.double()(data).mean()) - model.exact_log_z()

    config = {"data": str(tmp_path / "data.npy"), "standardize": False, "heldout_fraction": 0.0,
              "model": "rbm", "model_kwargs": {"num_hidden": 4}, "objective": "pcd",
              "objective_kwargs": {"init": "noise"}, "sampler": "block_gibbs", "sampler_steps": 1,
              "optimizer": "sgd", "lr": 0.1, "momentum": 0.5, "lr_schedule": "constant", "batch_size": 20,
              "steps": 200, "seed": 0, "out": str(tmp_path / "run"), "progress": "off", "plots": False}
    target = mean_log_likelihood(teacher)
    untrained = mean_log_likelihood(train({**config, "steps": 0, "out": str(tmp_path / "untrained")}).model)
    trained = mean_log_likelihood(train(config).model)
    assert trained > target - 0.3, (untrained, trained, target)
    assert untrained < target - 0.3, (untrained, target)  # negative control
