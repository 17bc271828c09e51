"""Kernel Stein discrepancy and Fisher divergence (ebmlab.metrics), and ``evaluate --ksd``.

Deterministic checks first (the closed-form Stein kernel against autograd, the block
U-statistic against a plain double sum), then the test's statistics: calibrated p-values under
the null, the Markov-chain bootstrap on autocorrelated draws (negative control: i.i.d. signs on
the same draws), power against a shifted and a rescaled sample; the Fisher divergence against
its closed form for two Gaussians; and the command's plumbing.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from scipy import stats

from ebmlab.cli import main
from ebmlab.data import true_log_density
from ebmlab.energy import Gaussian
from ebmlab.metrics import IMQKernel, fisher_divergence, ksd, ksd_test, stein_kernel
from train_helpers import train

KERNELS = [IMQKernel(), IMQKernel(c=0.7, beta=-0.3, length_scale=1.6)]

#: The target of the statistical tests: N(μ, Σ), μ = (0.5, -1), Σ = [[1, .5], [.5, 1]].
MEAN, COV = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([[1.0, 0.5], [0.5, 1.0]], dtype=torch.float64)


@pytest.fixture
def target() -> Gaussian:
    return Gaussian(MEAN, COV).double()


def _plain_stein_kernel(x, y, sx, sy, kernel: IMQKernel) -> float:
    """u_p(x, y) term by term, from k = q^β, q = c² + ‖x-y‖²/ℓ² (derivatives by hand)."""
    c, beta, ell = kernel.c, kernel.beta, kernel.length_scale
    r = x - y
    q = c**2 + float(r @ r) / ell**2
    k = q**beta
    grad_x = 2 * beta / ell**2 * q ** (beta - 1) * r        # ∇_x k
    grad_y = -grad_x                                         # ∇_y k
    trace = sum(-2 * beta / ell**2 * (q ** (beta - 1) + 2 * (beta - 1) * q ** (beta - 2) * float(r[a]) ** 2 / ell**2)
                for a in range(len(x)))                      # Σ_a ∂²k / ∂x_a ∂y_a
    return float(sx @ sy) * k + float(sx @ grad_y) + float(grad_x @ sy) + trace


def _autograd_stein_kernel(x, y, sx, sy, kernel: IMQKernel, with_trace: bool = True) -> float:
    """The same formula with every derivative of k taken by autograd."""
    x, y = x.clone().requires_grad_(True), y.clone().requires_grad_(True)
    k = (kernel.c**2 + (x - y).square().sum() / kernel.length_scale**2) ** kernel.beta
    gx, gy = torch.autograd.grad(k, (x, y), create_graph=True)
    trace = sum(torch.autograd.grad(gx[a], y, retain_graph=True)[0][a] for a in range(len(x)))
    return float((sx @ sy * k + sx @ gy + gx @ sy + (trace if with_trace else 0.0)).detach())


@pytest.mark.parametrize("kernel", KERNELS)
def test_stein_kernel_equals_autograd(kernel):
    """The closed form matches autograd to 1e-10 on every pair; negative control: the formula
    without its trace term misses by more than 1e-3."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    sx, sy = torch.randn(5, 3, generator=g, dtype=torch.float64), torch.randn(4, 3, generator=g, dtype=torch.float64)
    matrix = stein_kernel(x, y, sx, sy, kernel)
    assert matrix.shape == (5, 4) and matrix.dtype == torch.float64
    for i in range(5):
        for j in range(4):
            assert matrix[i, j].item() == pytest.approx(_autograd_stein_kernel(x[i], y[j], sx[i], sy[j], kernel),
                                                        abs=1e-10, rel=1e-10)
            assert abs(matrix[i, j].item() - _autograd_stein_kernel(x[i], y[j], sx[i], sy[j], kernel, False)) > 1e-3


@pytest.mark.parametrize("kernel", KERNELS)
@pytest.mark.parametrize("block_size", [1, 4, 1024])
def test_block_statistics_equal_a_brute_force_double_sum(kernel, block_size):
    """U- and V-statistics in blocks (ragged last block included) equal the plain sums to 1e-10."""
    g = torch.Generator().manual_seed(1)
    n, d = 9, 3
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * 1.5
    s = torch.randn(n, d, generator=g, dtype=torch.float64)
    off_diagonal = sum(_plain_stein_kernel(x[i], x[j], s[i], s[j], kernel)
                       for i in range(n) for j in range(n) if i != j)
    diagonal = sum(_plain_stein_kernel(x[i], x[i], s[i], s[i], kernel) for i in range(n))
    u = ksd(x, s, kernel=kernel, block_size=block_size)
    v = ksd(x, s, kernel=kernel, statistic="v", block_size=block_size)
    assert u == pytest.approx(off_diagonal / (n * (n - 1)), abs=1e-10, rel=1e-10)
    assert v == pytest.approx((off_diagonal + diagonal) / n**2, abs=1e-10, rel=1e-10)


def test_an_energy_and_its_scores_give_the_same_statistic(target, generator):
    x = target.sample(50, generator) + 0.3
    scores = -(x - MEAN) @ torch.linalg.inv(COV)
    assert ksd(x, target) == pytest.approx(ksd(x, scores), abs=1e-12)
    assert ksd(x.float(), Gaussian(MEAN.float(), COV.float())) == pytest.approx(ksd(x, scores), rel=1e-5)


def _null_p_values(target, reps: int, n: int, generator, draw=None, **options) -> np.ndarray:
    draw = draw or (lambda: target.sample(n, generator))
    return np.array([ksd_test(draw(), target, num_bootstrap=200, generator=generator, **options).p_value
                     for _ in range(reps)])


def test_p_values_are_uniform_under_the_null(target, generator):
    """200 repetitions of n = 100 exact draws scored by their own score: the wild-bootstrap
    p-values are uniform (KS p > 1e-5; measured 0.52, and a rejection rate at α = 0.05 of 0.045
    over 1000 repetitions). With 200 p-values a KS test at 1e-5 detects a CDF error of
    about 0.17 (sqrt(ln(2e5) / 400)); the p-values' grid of 1/201 adds at most 0.005."""
    p = _null_p_values(target, 200, 100, generator)
    assert stats.kstest(p, "uniform").pvalue > 1e-5


def _ar1_chains(reps: int, n: int, rho: float, generator) -> torch.Tensor:
    """``(n, reps, 2)``: stationary AR(1) chains ``z_t = ρ z_{t-1} + √(1-ρ²) ε_t`` mapped onto the
    target, a stand-in for MCMC output whose integrated autocorrelation time is (1+ρ)/(1-ρ)."""
    eps = torch.randn(n, reps, 2, generator=generator, dtype=torch.float64)
    z = torch.empty_like(eps)
    z[0] = eps[0]
    for t in range(1, n):
        z[t] = rho * z[t - 1] + math.sqrt(1 - rho**2) * eps[t]
    return MEAN + z @ torch.linalg.cholesky(COV).T


def test_markov_bootstrap_holds_its_size_on_autocorrelated_draws(target, generator):
    """AR(1) draws of the target (ρ = 0.5, τ = 3; n = 300): with sign flips at a = 0.02
    (1/(2a) = 25 ≫ τ, n·a = 6) the test rejects at α = 0.05 at most 0.05 + 4.5 sd of a
    binomial over 200 repetitions (0.119; measured 0.065). Negative control: i.i.d. Rademacher
    signs on the same draws reject a correct target far more often (measured 0.345) and their
    p-values fail the KS test (p = 1e-38)."""
    chains = _ar1_chains(200, 300, 0.5, generator)
    bound = 0.05 + 4.5 * math.sqrt(0.05 * 0.95 / 200)
    markov = np.array([ksd_test(chains[:, r], target, num_bootstrap=200, generator=generator,
                                flip_probability=0.02).p_value for r in range(200)])
    iid = np.array([ksd_test(chains[:, r], target, num_bootstrap=200, generator=generator).p_value
                    for r in range(200)])
    assert (markov <= 0.05).mean() <= bound
    assert (iid <= 0.05).mean() > bound and stats.kstest(iid, "uniform").pvalue < 1e-5


@pytest.mark.parametrize("change", ["shift", "scale"])
def test_power_against_a_shifted_and_a_rescaled_sample(target, generator, change):
    """n = 100 draws shifted by 0.5 in x₁, or spread 1.5 times about the mean: rejected at
    α = 0.05 in at least 75 of 100 repetitions (measured 100 and 95). Power over 1000 repetitions:
    0.999 (shift) and 0.937 (scale). At a power of 0.9 fewer than 75 rejections have probability 4e-6.
    The negative control is the null test above (rejection rate 0.045)."""
    shift = torch.tensor([0.5, 0.0], dtype=torch.float64)
    draw = ((lambda: target.sample(100, generator) + shift) if change == "shift"
            else (lambda: MEAN + 1.5 * (target.sample(100, generator) - MEAN)))
    p = _null_p_values(target, 100, 100, generator, draw=draw)
    assert (p <= 0.05).sum() >= 75


def test_bad_options_are_refused(target):
    x = torch.zeros(10, 2, dtype=torch.float64)
    with pytest.raises(ValueError, match="statistic"):
        ksd_test(x, target, statistic="w")
    with pytest.raises(ValueError, match="flip_probability"):
        ksd_test(x, target, flip_probability=1.0)
    with pytest.raises(ValueError, match="beta"):
        IMQKernel(beta=0.5)
    with pytest.raises(ValueError, match="shape of x"):
        ksd(x, torch.zeros(9, 2))


def _gaussian_fisher(m1, s1, m2, s2, mq, sq) -> float:
    """½ E_{x~N(mq,sq)} ‖s₁(x) - s₂(x)‖² with s_k(x) = -Σ_k⁻¹(x - μ_k): the difference is
    -(A x - b), A = Σ₁⁻¹ - Σ₂⁻¹, b = Σ₁⁻¹μ₁ - Σ₂⁻¹μ₂, so E‖Ax - b‖² = ‖A μ_q - b‖² + tr(A Σ_q Aᵀ)."""
    p1, p2 = torch.linalg.inv(s1), torch.linalg.inv(s2)
    a, b = p1 - p2, p1 @ m1 - p2 @ m2
    return 0.5 * float((a @ mq - b).square().sum() + torch.trace(a @ sq @ a.T))


def test_fisher_divergence_zero_for_the_true_score_and_the_gaussian_closed_form(target, generator):
    """Exactly 0 (standard error 0) for the true score; for two Gaussians within 4.5 standard
    errors of the closed form. Negative control: the closed form without its trace term is more
    than 4.5 standard errors away (the smallest error detected is 4.5 SE, here 0.13 of 7.1)."""
    x = target.sample(20000, generator)
    same = fisher_divergence(x, target, Gaussian(MEAN, COV).double())
    assert same.fisher_divergence == 0.0 and same.stderr == 0.0 and same.num_examples == 20000
    m1, s1 = torch.tensor([0.0, 0.5], dtype=torch.float64), torch.tensor([[2.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
    model = Gaussian(m1, s1).double()
    result = fisher_divergence(x, model, target)
    exact = _gaussian_fisher(m1, s1, MEAN, COV, MEAN, COV)
    assert abs(result.fisher_divergence - exact) < 4.5 * result.stderr
    p1, p2 = torch.linalg.inv(s1), torch.linalg.inv(COV)
    no_trace = 0.5 * float(((p1 - p2) @ MEAN - (p1 @ m1 - p2 @ MEAN)).square().sum())
    assert abs(result.fisher_divergence - no_trace) > 4.5 * result.stderr


# ---- ebmlab evaluate --ksd ------------------------------------------------------------------

def _evaluate(*args) -> dict:
    result = CliRunner().invoke(main, ["evaluate", *map(str, args), "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_cli_ksd_of_a_data_file(tmp_path):
    """``--energy gaussian:2`` (N(0, I)) with 300 draws of it: a p-value above 1e-5 (which a
    correct test misses with probability 1e-5); the same draws shifted by 1: p ≤ 0.01 (the
    smallest p-value of 500 replicates is 1/501). No log Z is computed for --ksd alone."""
    draws = np.random.default_rng(0).standard_normal((300, 2)).astype(np.float32)
    np.save(tmp_path / "null.npy", draws)
    np.save(tmp_path / "shifted.npy", draws + 1.0)
    null = _evaluate("--energy", "gaussian:2", "--data", tmp_path / "null.npy", "--ksd")
    shifted = _evaluate("--energy", "gaussian:2", "--data", tmp_path / "shifted.npy", "--ksd")
    assert null["ksd_p_value"] > 1e-5 and shifted["ksd_p_value"] <= 0.01
    assert null["ksd_examples"] == 300 and "log_z" not in null and "method" not in null
    assert null["ksd"] == pytest.approx(ksd(torch.as_tensor(draws), Gaussian(torch.zeros(2))), rel=1e-5)
    text = CliRunner().invoke(main, ["evaluate", "--energy", "gaussian:2", "--data", str(tmp_path / "null.npy"),
                                     "--ksd"])
    assert text.exit_code == 0 and "KSD² =" in text.output and "log Z" not in text.output


def test_cli_fisher_divergence_against_a_known_density():
    """gmm8 is the 8gaussians density itself: Fisher divergence 0 beside log Z and the NLL."""
    report = _evaluate("--energy", "gmm8", "--data", "8gaussians", "--num-examples", 300, "--ksd",
                       "--log-partition", "quadrature", "--grid-points", 129)
    assert report["fisher_divergence"] == pytest.approx(0.0, abs=1e-9) and "nll" in report
    assert report["ksd_p_value"] > 1e-5


@pytest.mark.parametrize("args,message", [
    (["--energy", "gaussian:2", "--ksd"], "--ksd needs --data"),
    (["--energy", "gaussian:2", "--data", "8gaussians"], "--log-partition is required"),
    (["--energy", "ising:3", "--data", "SPINS", "--ksd"], "continuous energy"),
])
def test_cli_ksd_errors(tmp_path, args, message):
    np.save(tmp_path / "spins.npy", np.ones((20, 3, 3), dtype=np.float32))
    result = CliRunner().invoke(main, ["evaluate", *[str(tmp_path / "spins.npy") if a == "SPINS" else a
                                                     for a in args]])
    assert result.exit_code == 2 and message in result.output, result.output


def test_cli_ksd_of_a_trained_run_on_its_held_out_data(tmp_path):
    """A briefly trained run against its held-out split: the report's KSD² and Fisher divergence
    are the library's on the same points and the run's energy, and the run keeps them."""
    from ebmlab.training.loading import load_run

    out = tmp_path / "run"
    train(dict(data="8gaussians", num_samples=400, model_kwargs={"hidden": [16, 16]}, objective="dsm", steps=20,
               batch_size=64, plots=False, progress="off", out=str(out)))
    report = _evaluate("--energy", out, "--data", "heldout", "--ksd")
    run = load_run(out)
    x = run.heldout_data()
    assert report["ksd_examples"] == len(x)
    fisher = fisher_divergence(x, run.energy, lambda z: -true_log_density("8gaussians")(z.double()))
    assert report["fisher_divergence"] == pytest.approx(fisher.fisher_divergence, rel=1e-6)
    assert report["fisher_divergence_stderr"] == pytest.approx(fisher.stderr, rel=1e-6)
    assert json.loads((out / "evaluation.json").read_text())["ksd"] == report["ksd"]
