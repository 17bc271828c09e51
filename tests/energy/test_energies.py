"""Energies against oracles: the base helpers, the analytic targets and the discrete models.

* Base helpers: shapes, ``score = -∇E`` against central finite differences (float64),
  ``log_ratio`` and ``log_prob`` against closed-form log-densities, output-shape errors, and
  gradients that ignore (or, on request, keep) the parameters' graph.
* Analytic targets: ``log_z`` against numerical integration (scipy), exact samplers against
  ``.mean`` / ``.covariance`` (z = 4.5 Monte-Carlo SEs, with a negative control).
* Ising / Potts: local energy changes and ``log_z`` against brute force over every state.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import integrate

from ebmlab.energy import (
    Banana, ConvEnergy, EnergyShapeError, Funnel, Gaussian, GaussianMixture, Ising, MLPEnergy, Potts,
    check_energy_output, delta_energy_flip, eight_gaussians, energy, enumerate_states, grad, log_prob, log_ratio,
    score, site_energies, value_and_grad,
)
from ebmlab.testing import DEFAULT_Z, assert_moments_close


def correlated_gaussian() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


def mlp(seed: int = 0) -> MLPEnergy:
    """A float64 MLP energy on R³; its initial weights come from a seeded, forked RNG."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return MLPEnergy(dim=3, hidden=(16, 16)).double()


# --------------------------------------------------------------------------------------
# Base helpers
# --------------------------------------------------------------------------------------


def test_value_and_grad_shapes(generator):
    """``(B, *event) -> (B,)`` energies and ``x``-shaped gradients for an MLP and a ConvNet."""
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    e, g = value_and_grad(mlp(), x)
    assert e.shape == (5,) and g.shape == x.shape
    with torch.random.fork_rng():
        torch.manual_seed(2)
        conv = ConvEnergy(channels=1, height=8, width=8, base_width=4)
    images = torch.rand(4, 1, 8, 8, generator=generator)
    e, g = value_and_grad(conv, images)
    assert e.shape == (4,) and g.shape == images.shape
    assert energy(conv, images).shape == (4,) and log_prob(conv, images).shape == (4,)


def central_difference_grad(fn, x: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """``∂ Σ_b E(x_b) / ∂x`` by central differences, one coordinate at a time."""
    out = torch.zeros_like(x)
    flat_x, flat_out = x.view(x.shape[0], -1), out.view(x.shape[0], -1)
    with torch.no_grad():
        for j in range(flat_x.shape[1]):
            step = torch.zeros_like(flat_x)
            step[:, j] = h
            flat_out[:, j] = (fn((flat_x + step).view_as(x)) - fn((flat_x - step).view_as(x))) / (2 * h)
    return out


@pytest.mark.parametrize("make, dim", [(mlp, 3), (lambda: Banana(a=1.0, b=1.0), 2), (correlated_gaussian, 2),
                                       (lambda: eight_gaussians().double(), 2)],
                         ids=["mlp", "banana", "gaussian", "eight-gaussians"])
def test_score_is_minus_finite_difference_gradient(make, dim, generator):
    """``score = -∇E`` matches central differences (h = 1e-5, float64) to 1e-6 absolute:
    the truncation error is O(h²·E''') ≈ 1e-9 and rounding O(ε_mach·|E|/h) ≈ 1e-11. Negative
    control: the sign-flipped gradient misses by far more than the tolerance."""
    target = make()
    x = torch.randn(6, dim, generator=generator, dtype=torch.float64)
    fd = central_difference_grad(target, x)
    assert torch.allclose(score(target, x), -fd, rtol=0, atol=1e-6)
    assert torch.allclose(grad(target, x), fd, rtol=0, atol=1e-6)
    assert not torch.allclose(score(target, x), fd, rtol=0, atol=1e-6)


def test_log_ratio_and_log_prob_match_the_gaussian_density(generator):
    """``log_ratio(x, x') = log p(x) - log p(x')`` and ``log_prob = -E`` (up to log Z) against
    ``torch.distributions.MultivariateNormal`` in float64, to 1e-6: the Gaussian computes its
    precision matrix in the default dtype (float32, relative error ~1e-7) before conversion."""
    target = correlated_gaussian()
    reference = torch.distributions.MultivariateNormal(target.mean, target.covariance)
    x = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    x_prime = torch.randn(8, 2, generator=generator, dtype=torch.float64)
    expected = reference.log_prob(x) - reference.log_prob(x_prime)
    assert torch.allclose(log_ratio(target, x, x_prime), expected, atol=1e-6, rtol=0)
    assert torch.allclose(log_prob(target, x) - target.log_z, reference.log_prob(x), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="same shape"):
        log_ratio(target, x, x_prime[:3])


def test_check_energy_output_squeezes_and_rejects():
    """``(B, 1)`` is squeezed; other shapes and non-tensors raise EnergyShapeError (a
    ValueError) naming where it happened and both shapes."""
    x = torch.zeros(4, 2)
    assert check_energy_output(torch.ones(4, 1), x).shape == (4,)
    assert check_energy_output(torch.ones(4), x).shape == (4,)
    with pytest.raises(EnergyShapeError, match=r"my energy: .*\(4, 2\).*\(4,\).*\(4, 3\)"):
        check_energy_output(torch.ones(4, 3), x, where="my energy")
    with pytest.raises(EnergyShapeError, match=r"got \(\)"):
        check_energy_output(torch.tensor(1.0), x)
    with pytest.raises(EnergyShapeError, match="torch.Tensor"):
        check_energy_output(np.ones(4), x)
    assert issubclass(EnergyShapeError, ValueError)


def test_column_energy_is_squeezed_everywhere(generator):
    """An energy returning ``(B, 1)`` (a bare ``nn.Linear(d, 1)`` head) works in every helper."""
    with torch.random.fork_rng():
        torch.manual_seed(1)
        column = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1)).double()
    x = torch.randn(5, 2, generator=generator, dtype=torch.float64)
    e, g = value_and_grad(column, x)
    assert e.shape == (5,) and g.shape == (5, 2)
    assert energy(column, x).shape == (5,) and log_ratio(column, x, x.flip(0)).shape == (5,)
    with pytest.raises(EnergyShapeError):
        value_and_grad(lambda z: z, x)


def test_gradients_work_when_parameters_require_grad(generator):
    """With trainable parameters, ``value_and_grad`` returns detached tensors and leaves the
    parameters' ``.grad`` untouched; with ``create_graph=True`` the score stays
    differentiable with respect to the parameters (as score matching needs)."""
    model = mlp()
    assert all(p.requires_grad for p in model.parameters())
    x = torch.randn(5, 3, generator=generator, dtype=torch.float64)
    e, g = value_and_grad(model, x)
    assert not e.requires_grad and not g.requires_grad
    assert all(p.grad is None for p in model.parameters())
    assert not x.requires_grad

    e, g = value_and_grad(model, x, create_graph=True)
    assert g.requires_grad
    g.square().sum().backward()
    weights = [p for name, p in model.named_parameters() if name.endswith("weight")]
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in weights)
    x_leaf = x.clone().requires_grad_(True)
    s = score(model, x_leaf, create_graph=True)
    (hessian_trace_part,) = torch.autograd.grad(s[:, 0].sum(), x_leaf)
    assert hessian_trace_part.shape == x.shape


def test_own_value_and_grad_matches_autograd(generator):
    """The Gaussian's closed-form ``value_and_grad`` equals autograd on its ``forward``."""
    target = correlated_gaussian()
    x = torch.randn(7, 2, generator=generator, dtype=torch.float64)
    e_own, g_own = value_and_grad(target, x)
    e_auto, g_auto = value_and_grad(lambda z: target(z), x)
    assert torch.allclose(e_own, e_auto, atol=1e-12) and torch.allclose(g_own, g_auto, atol=1e-12)


@pytest.mark.parametrize("make", [lambda: Banana(a=1.3, b=0.7), lambda: Funnel(dim=5, scale=2.0),
                                  lambda: GaussianMixture(torch.tensor([[0.0, 1.0], [2.0, -1.0], [-1.5, 0.5]]),
                                                          weights=torch.tensor([0.2, 0.5, 0.3]),
                                                          stds=torch.tensor([0.5, 1.0, 0.3]))],
                         ids=["banana", "funnel", "mixture"])
def test_closed_form_gradients_match_autograd(make, generator):
    """Banana, Funnel and GaussianMixture compute ``(E, ∇E)`` in closed form; both equal autograd
    on ``forward`` in float64 (relative 1e-12: the two differ only in the order of a dozen float64
operations, each rounding at 1.1e-16, on values up to about 1e3), at points spread over several scales. Negative
    control: a gradient with one term's sign flipped (the Banana's shear term) is refused."""
    target = make().double()
    x = 2.0 * torch.randn(64, target.event_shape[0] if hasattr(target, "event_shape") else 2, generator=generator,
                          dtype=torch.float64)
    e_own, g_own = target.value_and_grad(x)
    e_auto, g_auto = value_and_grad(lambda z: target(z), x)
    assert not e_own.requires_grad and not g_own.requires_grad
    assert torch.allclose(e_own, e_auto, rtol=1e-12, atol=1e-12)
    assert torch.allclose(g_own, g_auto, rtol=1e-12, atol=1e-12)
    if isinstance(target, Banana):
        x1, x2 = x[:, 0], x[:, 1]
        u = x2 - target.b * (x1 * x1 - target.a**2)
        wrong = torch.stack([x1 / target.a**2 + 2.0 * target.b * x1 * u, u], dim=1)
        assert not torch.allclose(wrong, g_auto, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------------------
# Analytic targets: log Z and exact samplers
# --------------------------------------------------------------------------------------


def numerical_log_z(target, low: float, high: float, num: int = 2001) -> float:
    """``log ∫∫ exp(-E(x₁, x₂)) dx₁ dx₂``: adaptive quadrature over x₂ ∈ ℝ (scipy ``quad_vec``,
    vectorised over an x₁ grid) and composite Simpson over x₁ ∈ [low, high]."""
    x1 = torch.linspace(low, high, num, dtype=torch.float64)

    def inner(x2: float) -> np.ndarray:
        with torch.no_grad():
            points = torch.stack([x1, torch.full_like(x1, x2)], dim=1)
            return torch.exp(-target(points).to(torch.float64)).numpy()

    values, _ = integrate.quad_vec(inner, -np.inf, np.inf, epsabs=1e-13, epsrel=1e-11)
    return math.log(integrate.simpson(values, x=x1.numpy()))


LOG_Z_CASES = {
    "gaussian": (correlated_gaussian, -9.0, 10.0),
    "eight-gaussians": (lambda: eight_gaussians().double(), -4.0, 4.0),
    "mixture": (lambda: GaussianMixture(torch.tensor([[0.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 1.0]),
                                        torch.tensor([0.3, 0.7])).double(), -8.0, 10.0),
    "banana": (lambda: Banana(a=1.2, b=0.7), -10.0, 10.0),
    "funnel": (lambda: Funnel(dim=2, scale=1.0), -9.0, 9.0),
}


@pytest.mark.parametrize("name", sorted(LOG_Z_CASES))
def test_log_z_matches_numerical_integration(name):
    """Closed-form ``log_z`` equals numerical integration to 1e-6. The quadrature's own
    error is ~1e-11 relative (measured 1e-15 on all but the Gaussian); the Gaussian differs
    by 8e-8 because its Cholesky factor is computed in float32 before conversion. Negative
    control: the target's ``log_z`` misses a perturbed target's integral (the first
    coordinate stretched by 1 %, so log Z moves by log 1.01 ≈ 0.01)."""
    make, low, high = LOG_Z_CASES[name]
    target = make()
    assert abs(numerical_log_z(target, low, high) - target.log_z) < 1e-6
    scale = torch.tensor([1 / 1.01, 1.0], dtype=torch.float64)
    stretched = numerical_log_z(lambda x: target(x * scale), low * 1.01, high * 1.01)
    assert abs(stretched - target.log_z) > 1e-3


def test_gaussian_log_z_closed_form_in_three_dimensions():
    """``log Z = (d/2) log 2π + ½ log det Σ`` for a 3-D Gaussian, against numpy's slogdet."""
    cov = torch.tensor([[2.0, 0.3, 0.1], [0.3, 1.0, -0.2], [0.1, -0.2, 0.5]])
    expected = 1.5 * math.log(2 * math.pi) + 0.5 * np.linalg.slogdet(cov.double().numpy())[1]
    assert abs(Gaussian(torch.zeros(3), cov).log_z - expected) < 1e-6


SAMPLER_CASES = {
    "gaussian": correlated_gaussian,
    "mixture": lambda: GaussianMixture(torch.tensor([[0.0, 0.0], [2.0, 1.0], [-1.0, 2.0]]),
                                       torch.tensor([0.5, 1.0, 0.3]), torch.tensor([0.2, 0.5, 0.3])),
    "eight-gaussians": eight_gaussians,
    "banana": lambda: Banana(a=1.0, b=0.5),
    "funnel": lambda: Funnel(dim=3, scale=1.0),
}


@pytest.mark.parametrize("name", sorted(SAMPLER_CASES))
def test_exact_sampler_matches_mean_and_covariance(name):
    """20000 exact draws match ``.mean`` and ``.covariance`` within z = 4.5 Monte-Carlo SEs
    per entry (smallest detectable error ≈ 4.5·sqrt(Σ_ii/n) = 0.03·σ_i in a mean and
    4.5·sqrt(Var[(x_i-μ_i)²]/n) — 4.5 % of a Gaussian variance — in a covariance entry).
    Negative control: :func:`test_exact_sampler_check_detects_wrong_moments`."""
    target = SAMPLER_CASES[name]()
    x = target.sample(20000, torch.Generator().manual_seed(61))
    assert x.shape == (20000, target.mean.shape[0])
    assert_moments_close(x, target.mean, target.covariance, z=DEFAULT_Z)


def test_exact_sampler_check_detects_wrong_moments():
    """Negative control: banana draws with b = 0.5 (Var x₂ = 1.5) fail against the moments
    of b = 0.6 (Var x₂ = 1.72), a 15 % variance error."""
    x = Banana(a=1.0, b=0.5).sample(20000, torch.Generator().manual_seed(61))
    wrong = Banana(a=1.0, b=0.6)
    with pytest.raises(AssertionError):
        assert_moments_close(x, wrong.mean, wrong.covariance, z=DEFAULT_Z)


def test_analytic_energies_validate_their_arguments():
    """Bad hyperparameters are refused at construction with a ValueError naming them."""
    with pytest.raises(ValueError, match="std"):
        Gaussian(torch.zeros(2), std=-1.0)
    with pytest.raises(ValueError, match="covariance"):
        Gaussian(torch.zeros(2), torch.eye(3))
    with pytest.raises(ValueError, match="a must be"):
        Banana(a=0.0)
    with pytest.raises(ValueError, match="dim"):
        Funnel(dim=1)


# --------------------------------------------------------------------------------------
# Ising and Potts against brute force
# --------------------------------------------------------------------------------------


def brute_force_energy(size: int, coupling: float, field: float, x: np.ndarray) -> float:
    """``-J Σ_<ij> s_i s_j - h Σ s_i`` over the 2L² periodic right/down bonds, looping."""
    s = 2 * x - 1
    total = 0.0
    for r in range(size):
        for c in range(size):
            total -= coupling * s[r, c] * (s[r, (c + 1) % size] + s[(r + 1) % size, c])
            total -= field * s[r, c]
    return total


def test_enumerate_states_order():
    """Batches concatenate to the lexicographic order of ``itertools.product`` (site 0 first)."""
    states = torch.cat(list(enumerate_states(4, 3, batch_size=10)))
    assert states.shape == (81, 4)
    expected = torch.tensor(list(itertools.product(range(3), repeat=4)), dtype=states.dtype)
    assert torch.equal(states, expected)


@pytest.mark.parametrize("size", [2, 3])
def test_ising_energy_matches_brute_force(size):
    """Vectorised energy equals a loop over the 2L² periodic bonds for every state, to 1e-12
    (float64 rounding of sums of ≤ 27 terms of size ≤ 1)."""
    model = Ising(size, coupling=0.3, field=0.1)
    states = next(enumerate_states(size * size, 2, dtype=torch.float64)).view(-1, size, size)
    expected = torch.tensor([brute_force_energy(size, 0.3, 0.1, s.numpy()) for s in states], dtype=torch.float64)
    assert torch.allclose(model(states), expected, atol=1e-12)


@pytest.mark.parametrize("size", [2, 3])
def test_ising_local_energy_changes_match_brute_force(size):
    """For every state and every site: ``delta_energy_flip`` equals E(flipped) - E(x), and
    ``site_energies`` equals (E(x with site = 0), E(x with site = 1)) — both the model's own
    local formulas and the generic helpers (used for energies without one), to 1e-12."""
    model = Ising(size, coupling=0.3, field=0.1)
    plain = lambda x: model(x)  # noqa: E731 - an energy without local formulas
    d = size * size
    states = next(enumerate_states(d, 2, dtype=torch.float64)).view(-1, size, size)
    e = model(states)
    for site in range(d):
        idx = torch.full((states.shape[0],), site, dtype=torch.long)
        flat = states.reshape(states.shape[0], -1)
        flipped = flat.clone()
        flipped[:, site] = 1 - flipped[:, site]
        expected_delta = model(flipped.view_as(states)) - e
        set0, set1 = flat.clone(), flat.clone()
        set0[:, site], set1[:, site] = 0, 1
        expected_sites = torch.stack([model(set0.view_as(states)), model(set1.view_as(states))], dim=1)
        for fn in (model, plain):
            assert torch.allclose(delta_energy_flip(fn, states, idx), expected_delta, atol=1e-12)
            assert torch.allclose(site_energies(fn, states, idx, 2), expected_sites, atol=1e-12)
        assert torch.allclose(delta_energy_flip(model, states, site), expected_delta, atol=1e-12)


def test_ising_local_energy_changes_on_a_larger_lattice(generator):
    """4×4 (random states, per-chain sites): own local formulas equal the generic helpers."""
    model = Ising(4, coupling=-0.4, field=0.25)
    x = torch.randint(0, 2, (64, 4, 4), generator=generator).to(torch.float64)
    site = torch.randint(0, 16, (64,), generator=generator)
    generic = lambda z: model(z)  # noqa: E731
    assert torch.allclose(delta_energy_flip(model, x, site), delta_energy_flip(generic, x, site), atol=1e-12)
    assert torch.allclose(site_energies(model, x, site, 2), site_energies(generic, x, site, 2), atol=1e-12)


@pytest.mark.parametrize("size, coupling, field", [(2, 0.3, 0.1), (3, 0.3, 0.1), (3, -0.5, 0.0), (4, 0.2, -0.1)])
def test_ising_log_z_matches_brute_force_enumeration(size, coupling, field):
    """``log_z`` against a log-sum-exp over ``itertools.product`` of brute-force energies
    (independent of ``enumerate_states``), to 1e-10 (float64 rounding of ≤ 65536 terms)."""
    model = Ising(size, coupling=coupling, field=field)
    if size == 4:  # 65536 states: vectorised brute force, still independent of enumerate_states
        states = torch.tensor(list(itertools.product((0.0, 1.0), repeat=16)), dtype=torch.float64).view(-1, 4, 4)
        s = 2 * states - 1
        bonds = sum(s[:, r, c] * (s[:, r, (c + 1) % 4] + s[:, (r + 1) % 4, c]) for r in range(4) for c in range(4))
        energies = -coupling * bonds - field * s.sum((1, 2))
    else:
        energies = torch.tensor([brute_force_energy(size, coupling, field, np.array(c).reshape(size, size))
                                 for c in itertools.product((0.0, 1.0), repeat=size * size)], dtype=torch.float64)
    assert abs(model.log_z - float(torch.logsumexp(-energies, 0))) < 1e-10


def test_potts_log_z_matches_brute_force_enumeration():
    """2×2 Potts (K = 3): ``log_z`` against a log-sum-exp over all 81 states of a looped
    energy ``-J Σ 1[x_i = x_j] - Σ h_{x_i}`` over the right/down periodic bonds, to 1e-10."""
    field = [0.2, 0.0, -0.1]
    model = Potts(size=2, num_states=3, coupling=0.5, field=torch.tensor(field))
    energies = []
    for config in itertools.product(range(3), repeat=4):
        x = np.array(config).reshape(2, 2)
        e = 0.0
        for r in range(2):
            for c in range(2):
                e -= 0.5 * (int(x[r, c] == x[r, (c + 1) % 2]) + int(x[(r + 1) % 2, c] == x[r, c]))
                e -= field[x[r, c]]
        energies.append(e)
    expected = float(torch.logsumexp(-torch.tensor(energies, dtype=torch.float64), 0))
    assert abs(model.log_z - expected) < 1e-6  # the field is stored in float32
