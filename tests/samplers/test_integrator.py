"""Deterministic properties of the leapfrog integrator that make HMC exact.

No randomness beyond fixed starting points, float64 throughout: these tests never flake.
Each property is checked on a non-quadratic energy as well as a Gaussian, and each has a
negative control — explicit Euler, which has O(ε) energy error, is not reversible and
does not preserve volume — that must fail the same check.
"""

from __future__ import annotations

import pytest
import torch
from torch.autograd.functional import jacobian

from ebmlab.energy import Gaussian
from ebmlab.energy.base import value_and_grad
from ebmlab.samplers import leapfrog


class Anharmonic(torch.nn.Module):
    """``E(x) = ½ xᵀAx + ¼ Σ_i x_i⁴`` with ``A = [[1, .5], [.5, 2]]``; shapes (B, 2) -> (B,).

    Its ``value_and_grad`` is analytic and differentiable (``∇E = Ax + x³``), so the
    leapfrog map can be differentiated by autograd for its Jacobian.
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("a", torch.tensor([[1.0, 0.5], [0.5, 2.0]], dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x @ self.a) * x).sum(-1) + 0.25 * x.pow(4).sum(-1)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(x), x @ self.a + x.pow(3)


def euler(energy, x, p, grad, step_size, num_steps):
    """Explicit Euler ``(x, p) ← (x + εp, p - ε∇E(x))``, the negative control."""
    for _ in range(num_steps):
        x, p = x + step_size * p, p - step_size * grad
        e, grad = value_and_grad(energy, x)
    return x, p, e, grad


def gaussian() -> Gaussian:
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


ENERGIES = {"gaussian": gaussian, "anharmonic": Anharmonic}


def starts(num: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(31)
    x = torch.randn(num, 2, generator=generator, dtype=torch.float64)
    p = torch.randn(num, 2, generator=generator, dtype=torch.float64)
    return x, p


def hamiltonian(energy, x, p):
    return energy(x) + 0.5 * p.square().sum(-1)


def max_energy_error(integrator, energy, step_size: float, total_time: float = 1.0) -> float:
    """``max |H(end) - H(start)|`` over 64 fixed starts, trajectory length ``total_time``."""
    x, p = starts()
    e, g = value_and_grad(energy, x)
    x1, p1, _, _ = integrator(energy, x, p, g, step_size, round(total_time / step_size))
    return float((hamiltonian(energy, x1, p1) - hamiltonian(energy, x, p)).abs().max())


@pytest.mark.parametrize("name", sorted(ENERGIES))
def test_leapfrog_energy_error_is_second_order(name):
    """Over a fixed trajectory length, halving ε divides max |ΔH| by 4 (O(ε²) global error).

    Tolerance: each ratio in [3.5, 4.5]. The next correction is O(ε²) relative (ε ≤ 0.1 →
    ~1 %), so the band is wide for leapfrog yet excludes explicit Euler's ratio of ~2
    (negative control: :func:`test_euler_energy_error_is_first_order`).
    """
    energy = ENERGIES[name]()
    errors = [max_energy_error(leapfrog, energy, eps) for eps in (0.1, 0.05, 0.025)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert all(3.5 <= r <= 4.5 for r in ratios), f"energy errors {errors}, ratios {ratios}"


def test_euler_energy_error_is_first_order():
    """Negative control: explicit Euler's error ratios (~2) fall outside the [3.5, 4.5] band."""
    energy = gaussian()
    errors = [max_energy_error(euler, energy, eps) for eps in (0.1, 0.05, 0.025)]
    ratios = [errors[0] / errors[1], errors[1] / errors[2]]
    assert not any(3.5 <= r <= 4.5 for r in ratios), f"ratios {ratios}"


def round_trip_error(integrator, energy, step_size: float = 0.1, num_steps: int = 25) -> float:
    """``max |(x, p) - back(forward(x, p))|`` where ``back`` integrates with negated momentum."""
    x, p = starts()
    _, g = value_and_grad(energy, x)
    x1, p1, _, g1 = integrator(energy, x, p, g, step_size, num_steps)
    x2, p2, _, _ = integrator(energy, x1, -p1, g1, step_size, num_steps)
    return max(float((x2 - x).abs().max()), float((-p2 - p).abs().max()))


@pytest.mark.parametrize("name", sorted(ENERGIES))
def test_leapfrog_is_reversible(name):
    """Forward 25 steps, negate p, 25 steps back: the start is recovered to 1e-5.

    In float64 the round trip's error is rounding only (~1e-14 here); 1e-5 leaves room for
    any summation order while Euler misses by ~1.7 (negative control below).
    """
    assert round_trip_error(leapfrog, ENERGIES[name]()) < 1e-5


def test_euler_is_not_reversible():
    """Negative control: explicit Euler's round trip misses the start by far more than 1e-5."""
    assert round_trip_error(euler, gaussian()) > 1e-3


def flow_jacobian(integrator, energy, step_size: float = 0.1, num_steps: int = 10) -> torch.Tensor:
    """Jacobian ``∂(x', p')/∂(x, p)`` (4×4) of the integrator map at a fixed point, by autograd."""
    z0 = torch.tensor([0.3, -0.7, 0.9, 0.4], dtype=torch.float64)

    def flow(z: torch.Tensor) -> torch.Tensor:
        x, p = z[:2].view(1, 2), z[2:].view(1, 2)
        _, g = energy.value_and_grad(x)
        x1, p1, _, _ = integrator(energy, x, p, g, step_size, num_steps)
        return torch.cat([x1.view(2), p1.view(2)])

    return jacobian(flow, z0)


def test_leapfrog_preserves_volume():
    """det ∂(x', p')/∂(x, p) = 1 (to 1e-10) for 10 leapfrog steps on the anharmonic energy,
    and the map is symplectic, JᵀΩJ = Ω (to 1e-10). Float64 rounding is ~1e-15 per entry;
    Euler's determinant is 1.65 (negative control below)."""
    jac = flow_jacobian(leapfrog, Anharmonic())
    assert abs(float(torch.linalg.det(jac)) - 1.0) < 1e-10
    omega = torch.zeros(4, 4, dtype=torch.float64)
    omega[:2, 2:], omega[2:, :2] = torch.eye(2), -torch.eye(2)
    assert (jac.T @ omega @ jac - omega).abs().max() < 1e-10


def test_euler_does_not_preserve_volume():
    """Negative control: explicit Euler's Jacobian determinant differs from 1 by > 1e-3."""
    jac = flow_jacobian(euler, Anharmonic())
    assert abs(float(torch.linalg.det(jac)) - 1.0) > 1e-3


@pytest.mark.parametrize("name", sorted(ENERGIES))
def test_leapfrog_returns_energy_and_gradient_at_the_end(name):
    """The cached ``(E, ∇E)`` returned with the end point equal a fresh evaluation there
    (exactly: the same computation), so HMC's Metropolis test uses the true end energy."""
    energy = ENERGIES[name]()
    x, p = starts()
    _, g = value_and_grad(energy, x)
    x1, _, e1, g1 = leapfrog(energy, x, p, g, 0.1, 7)
    e_ref, g_ref = value_and_grad(energy, x1)
    assert torch.equal(e1, e_ref) and torch.equal(g1, g_ref)
