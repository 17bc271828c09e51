"""Tests for RBM annealed importance sampling against exact enumeration.

The oracle is ``log Z`` of a 20-visible, 10-hidden RBM by enumerating the 2^10 hidden states.
The AIS estimate must lie within 3 of its own delta-method standard errors of it; the base
rates come from exact draws of the model, as from data in Salakhutdinov & Murray (2008).
The result is an :class:`~ebmlab.partition.ais.AISResult` (the same fields and weight statistic
as generic AIS), and the transitions are the library's block-Gibbs kernel on the intermediate
RBM, whose energy and conditionals are checked against a scaled :class:`BernoulliRBM`
(deterministic).
"""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.partition import AISResult, log_weight_statistics
from ebmlab.partition.rbm_ais import TemperedRBM, base_rate_visible_bias, rbm_ais, salakhutdinov_murray_betas

Z_TOLERANCE = 3.0


def moderate_rbm(seed: int = 0) -> BernoulliRBM:
    """20 visible, 10 hidden; W ~ N(0, 1), biases ~ N(0, 0.5²): a multimodal model."""
    g = torch.Generator().manual_seed(seed)
    rbm = BernoulliRBM(20, 10, weight_scale=1.0, generator=g)
    with torch.no_grad():
        rbm.b.normal_(0.0, 0.5, generator=g)
        rbm.c.normal_(0.0, 0.5, generator=g)
    return rbm


def test_ais_matches_exact_log_z():
    """|log Ẑ - log Z| ≤ 3·SE with 500 temperatures and 200 runs (SE ≈ 0.006 nats here).

    The check detects a bias of about 3·SE ≈ 0.016 nats in log Z. Negative control: AIS run on
    the same model with its weights scaled by 1.005 (a 0.5% mis-scaled coupling, which moves
    log Z by 0.11 nats) is more than 3 SE from the exact value.
    """
    rbm = moderate_rbm()
    exact = rbm.exact_log_z()
    g = torch.Generator().manual_seed(1)
    base = base_rate_visible_bias(rbm.exact_sample(2000, g))
    result = rbm_ais(rbm, base, betas=500, num_runs=200, generator=g)
    assert result.log_weights.shape == (200,)
    assert 0 < result.log_z_stderr < 0.05
    assert abs(result.log_z - exact) <= Z_TOLERANCE * result.log_z_stderr, (result.log_z, exact, result.log_z_stderr)

    wrong = moderate_rbm()
    with torch.no_grad():
        wrong.W.mul_(1.005)
    bad = rbm_ais(wrong, base, betas=500, num_runs=200, generator=g)
    assert abs(bad.log_z - exact) > Z_TOLERANCE * bad.log_z_stderr, (bad.log_z, exact, bad.log_z_stderr)


def test_base_distribution_is_exact_at_beta_zero_to_one_jump():
    """With β = (0, 1) AIS is importance sampling from the base; for an RBM with W = 0, c = 0
    and b = b_A every weight equals 1, so ``log Ẑ`` is exact and the standard error is 0."""
    rbm = BernoulliRBM(6, 3, weight_scale=0.0)
    with torch.no_grad():
        rbm.b.copy_(torch.linspace(-1, 1, 6))
    result = rbm_ais(rbm, rbm.b.detach(), betas=torch.tensor([0.0, 1.0]), num_runs=10,
                     generator=torch.Generator().manual_seed(0))
    assert result.log_z == pytest.approx(rbm.exact_log_z(), abs=1e-12)
    assert result.log_z_stderr == pytest.approx(0.0, abs=1e-12)
    assert result.log_z_base == pytest.approx(3 * math.log(2) + float(torch.nn.functional.softplus(rbm.b.detach()).sum()))


def test_schedule_and_validation():
    betas = salakhutdinov_murray_betas()
    assert betas.shape == (14501,) and betas[0] == 0 and betas[-1] == 1 and (betas.diff() > 0).all()
    assert float(betas[500]) == pytest.approx(0.5) and float(betas[4500]) == pytest.approx(0.9)
    short = salakhutdinov_murray_betas(100)
    assert short[0] == 0 and short[-1] == 1 and (short.diff() > 0).all()
    rbm = BernoulliRBM(4, 2)
    with pytest.raises(ValueError, match="increase strictly from 0 to 1"):
        rbm_ais(rbm, betas=torch.tensor([0.0, 0.5]))
    with pytest.raises(ValueError, match="base_visible_bias must have shape"):
        rbm_ais(rbm, torch.zeros(3))
    with pytest.raises(ValueError, match="num_runs must be >= 2"):
        rbm_ais(rbm, num_runs=1)
    bias = base_rate_visible_bias(torch.tensor([[1.0, 0.0], [1.0, 0.0]]))
    assert torch.isfinite(bias).all() and bias[0] > 0 > bias[1]


def test_result_is_an_ais_result_with_the_same_fields():
    """Callers read one set of names: log_z, log_z_stderr, ess, log_weights, log_z_base, ...;
    the former ``effective_sample_size`` remains a read alias and a ``replace`` keyword."""
    rbm = BernoulliRBM(20, 10, event_shape=(4, 5), weight_scale=0.5, generator=torch.Generator().manual_seed(0))
    result = rbm_ais(rbm, betas=40, num_runs=30, generator=torch.Generator().manual_seed(2))
    assert isinstance(result, AISResult) and result.method == "rbm_ais"
    names = [f.name for f in dataclasses.fields(result)]
    assert names == [f.name for f in dataclasses.fields(AISResult)]
    log_mean_w, stderr, ess = log_weight_statistics(result.log_weights)
    assert result.log_z == pytest.approx(result.log_z_base + log_mean_w, abs=1e-12)
    assert (result.log_z_stderr, result.ess) == pytest.approx((stderr, ess))
    assert result.effective_sample_size == result.ess
    assert dataclasses.replace(result, effective_sample_size=7.0).ess == 7.0
    assert dataclasses.replace(result, ess=5.0).effective_sample_size == 5.0
    k = salakhutdinov_murray_betas(40).numel()
    assert result.schedule.shape == (k,) and result.num_temperatures == k and result.num_runs == 30
    assert result.acceptance_rate.shape == (k - 2,) and torch.all(result.acceptance_rate == 1.0)
    assert result.step_sizes is None and result.log_weights.dtype == torch.float64
    assert result.samples.shape == (30, 4, 5) and torch.all((result.samples == 0) | (result.samples == 1))


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_tempered_rbm_is_the_rbm_with_scaled_parameters(beta):
    """``p_β`` is the RBM ``(βW, (1-β) b_A + β b, βc)``: same free energy, conditionals and draws."""
    g = torch.Generator().manual_seed(3)
    rbm = moderate_rbm().double()
    base = torch.randn(20, generator=g, dtype=torch.float64)
    tempered = TemperedRBM(rbm.W.detach(), rbm.b.detach(), rbm.c.detach(), base, beta)
    scaled = BernoulliRBM(20, 10, generator=g).double()
    with torch.no_grad():
        scaled.W.copy_(beta * rbm.W)
        scaled.b.copy_((1 - beta) * base + beta * rbm.b)
        scaled.c.copy_(beta * rbm.c)
    v = torch.randint(0, 2, (50, 20), generator=g).double()
    h = torch.randint(0, 2, (50, 10), generator=g).double()
    with torch.no_grad():
        assert torch.allclose(tempered(v), scaled(v), atol=1e-12)
        draws = [torch.Generator().manual_seed(4) for _ in range(2)]
        assert torch.equal(tempered.sample_hidden(v, draws[0]), scaled.sample_hidden(v, draws[1]))
        assert torch.equal(tempered.sample_visible(h, draws[0]), scaled.sample_visible(h, draws[1]))
