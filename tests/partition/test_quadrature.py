"""Grid quadrature of log Z against closed forms; the boundary-mass warning; input errors.

Quadrature is deterministic, so the tolerances bound the discretisation error (the trapezoid
rule is exponentially accurate for smooth densities that vanish at the box edge) rather than
a Monte-Carlo error. Each accuracy test's negative control is the same computation for a
target with one parameter changed by 1%, which the tolerance rejects.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from ebmlab.energy import Banana, Funnel, Gaussian, GaussianMixture, eight_gaussians
from ebmlab.partition import BoundaryMassWarning, quadrature_log_z

CORRELATED_2D = torch.tensor([[1.0, 0.6], [0.6, 2.0]], dtype=torch.float64)
CASES = {  # name: (target factory, bounds, points per axis, tolerance in nats)
    "gaussian-1d": (lambda: Gaussian(torch.tensor([0.5]), std=1.3), None, 513, 1e-9),
    "gaussian-2d-correlated": (lambda: Gaussian(torch.tensor([1.0, -1.0]), CORRELATED_2D), None, 257, 1e-9),
    "eight-gaussians": (lambda: eight_gaussians(), (-4.0, 4.0), 257, 1e-9),
    "mixture-unequal": (lambda: GaussianMixture(torch.tensor([[-1.0, 0.0], [2.0, 1.0]]), torch.tensor([0.5, 1.0]),
                                                torch.tensor([0.3, 0.7])), (-7.0, 8.0), 257, 1e-7),
    "banana": (lambda: Banana(a=1.0, b=1.0), [(-6.0, 6.0), (-8.0, 40.0)], 257, 1e-7),
    "funnel": (lambda: Funnel(dim=2, scale=1.0), [(-7.0, 7.0), (-40.0, 40.0)], 257, 1e-4),
    "gaussian-3d": (lambda: Gaussian(torch.tensor([0.0, 1.0, -1.0]), torch.tensor(
        [[1.0, 0.3, 0.0], [0.3, 1.0, 0.2], [0.0, 0.2, 0.5]], dtype=torch.float64)), None, 49, 1e-9),
}


@pytest.fixture(autouse=True)
def _float64_default(float64):
    """Every test here runs in float64 (the ``float64`` fixture of conftest.py)."""


@pytest.mark.parametrize("name", list(CASES))
def test_log_z_matches_closed_form(name):
    """|log Z_quad - log Z| ≤ tol (1e-9 to 1e-4 by case; the funnel's neck is the hardest).

    Negative control: the quadrature of the energy scaled by 1.01 (``1.01·E``, log Z moves by
    about ``-0.01·E_p[E]``) is rejected by the same tolerance against the closed form, so the
    test resolves a 1% error in the energy.
    """
    make, bounds, num_points, tol = CASES[name]
    target = make()
    result = quadrature_log_z(target, bounds=bounds, num_points=num_points)
    assert abs(result.log_z - target.log_z) <= tol, (result.log_z, target.log_z)
    assert result.missing_mass < 1e-6
    dim = target.event_shape[0]
    scaled = quadrature_log_z(lambda x: 1.01 * target(x), bounds=result.bounds, num_points=num_points, event_shape=(dim,))
    assert abs(scaled.log_z - target.log_z) > tol


def test_simpson_rule_is_accurate_too():
    target = CASES["gaussian-2d-correlated"][0]()
    result = quadrature_log_z(target, num_points=257, rule="simpson")
    assert result.rule == "simpson"
    assert result.log_z == pytest.approx(target.log_z, abs=1e-9)
    with pytest.raises(ValueError, match="odd number"):
        quadrature_log_z(target, num_points=256, rule="simpson")


def test_bounds_from_data():
    """Bounds default to the data range widened by half its width per side."""
    target = eight_gaussians()
    data = target.sample(500, torch.Generator().manual_seed(0))
    result = quadrature_log_z(target, data=data, num_points=257)
    lo, hi = data.min(0).values, data.max(0).values
    assert result.bounds[0][0] == pytest.approx(float(lo[0] - 0.5 * (hi[0] - lo[0])))
    assert result.log_z == pytest.approx(target.log_z, abs=1e-6)


@pytest.mark.parametrize("dim", [1, 2])
def test_boundary_warning_estimates_the_missing_mass(dim):
    """N(0, I) on [-2, 2]^d misses a known fraction of its mass, ``1/(1-q)^d - 1`` relative to
    the mass inside, with ``q = P(|z| > 2) = 0.0455``. The warning's estimate (exponential
    extrapolation of the face marginals) is within a factor 1.5 of it, and log Z is low by
    ``log(1 + missing)`` up to the trapezoid rule's O(h²) error at the truncated edges
    (≈ 2e-6 at h = 0.01; tolerance 1e-5)."""
    q = math.erfc(2 / math.sqrt(2))
    truth = 1 / (1 - q) ** dim - 1
    target = Gaussian(torch.zeros(dim))
    with pytest.warns(BoundaryMassWarning, match="widen the bounds") as record:
        result = quadrature_log_z(target, bounds=(-2.0, 2.0), num_points=401)
    assert record[0].message.missing_mass == result.missing_mass
    assert truth / 1.5 < result.missing_mass < truth * 1.5, (result.missing_mass, truth)
    assert result.log_z == pytest.approx(target.log_z - math.log(1 + truth), abs=1e-5)


def test_non_decaying_density_reports_infinite_missing_mass():
    """A density increasing towards a face (here a wide Gaussian centred outside the box)."""
    target = Gaussian(torch.tensor([5.0]), std=1.0)
    with pytest.warns(BoundaryMassWarning, match="does not decay"):
        result = quadrature_log_z(target, bounds=(-1.0, 1.0), num_points=101)
    assert math.isinf(result.missing_mass)


def test_more_than_three_dimensions_names_ais():
    with pytest.raises(ValueError, match="at most 3 dimensions.*AIS"):
        quadrature_log_z(Gaussian(torch.zeros(4)), bounds=(-5, 5))


def test_bad_inputs():
    target = Gaussian(torch.zeros(2))
    with pytest.raises(ValueError, match="low < high"):
        quadrature_log_z(target, bounds=(1.0, -1.0))
    with pytest.raises(ValueError, match="bounds must be"):
        quadrature_log_z(target, bounds=[(0, 1), (0, 1), (0, 1)])
    with pytest.raises(ValueError, match="rule must be"):
        quadrature_log_z(target, bounds=(-1, 1), rule="gauss")
    with pytest.raises(ValueError, match="give bounds"):
        quadrature_log_z(lambda x: x.square().sum(1), event_shape=(2,))
    with pytest.raises(ValueError, match="discrete"):
        from ebmlab.energy import Ising
        quadrature_log_z(Ising(2), bounds=(0, 1))


@pytest.mark.parametrize("name", list(CASES))
def test_grid_error_covers_the_true_error(name):
    """The grid error plus the estimated missing mass (log Z is low by about log(1 + m)) covers
    the true error on every case."""
    factory, bounds, points, _ = CASES[name]
    target = factory()
    result = quadrature_log_z(target, bounds=bounds, num_points=points)
    assert abs(result.log_z - target.log_z) <= result.grid_error + math.log1p(result.missing_mass) + 1e-12


def test_a_grid_coarser_than_the_funnels_neck_warns_and_says_to_raise_num_points():
    """The standard funnel (scale 3) on 513 points misses its neck: the true error is 0.11 and
    the grid error 0.19 (an over-estimate, as the module docstring says); the warning names
    num_points, and the boundary warning does not send the user to widen the bounds. Negative
    control: 4,097 points bring the grid error under 0.01, with no resolution warning."""
    from ebmlab.partition import GridResolutionWarning

    target = Funnel(dim=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        coarse = quadrature_log_z(target, num_points=513)
    assert any(w.category is GridResolutionWarning and "raise num_points" in str(w.message) for w in caught)
    assert coarse.grid_error >= abs(coarse.log_z - target.log_z) > 0.05
    assert not any("widen the bounds" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error", GridResolutionWarning)
        warnings.simplefilter("ignore", BoundaryMassWarning)  # the funnel's x tails pass ±76: real, and small
        fine = quadrature_log_z(target, num_points=4097)
    assert fine.grid_error < 0.01 and abs(fine.log_z - target.log_z) <= fine.grid_error


def test_grid_error_of_even_and_tiny_grids():
    target = Gaussian(torch.tensor([0.0]), std=1.0)
    even = quadrature_log_z(target, num_points=1024)
    assert 0 <= even.grid_error < 1e-9 and abs(even.log_z - target.log_z) < 1e-9
    assert math.isnan(quadrature_log_z(target, bounds=(-8.0, 8.0), num_points=4).grid_error)
