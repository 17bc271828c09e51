"""Built-in 2-D toy distributions: samplers and, where known, their exact log-densities.

Every sampler has the signature ``sample(n, generator) -> (n, 2)`` float tensor (default
dtype, on the generator's device) and draws i.i.d. points, so that sample statistics can be
tested against the density.  The sets follow the shapes popularised by FFJORD
(Grathwohl et al. 2019) and the Neural Spline Flow toy experiments, re-defined here so that
each generative process is a simple continuous one:

=============  ======================================================  ======================
name           generative process                                      ``true_log_density``
=============  ======================================================  ======================
8gaussians     equal mixture of N(2(cos 2πk/8, sin 2πk/8), 0.2² I)      closed form (mixture);
               (the same mixture as ``ebmlab.energy.eight_gaussians``)
checkerboard   uniform on the 8 "black" 2×2 squares of [-4, 4)²         closed form (1/32 on
               (square (i, j) is black when i + j is even)              black squares, 0 off)
rings          radius r_k ∈ {0.75, 1.5, 2.25, 3}, angle ~ U(0, 2π),     closed form via the
               plus N(0, 0.08² I) noise                                 Bessel function I₀
2spirals       t = 3π√u, u ~ U(0, 1); ±(-t cos t, t sin t)/3           1-D quadrature over t
               plus N(0, 0.1² I) noise                                  (see below for accuracy)
moons          θ ~ U(0, π); the two half circles of scikit-learn's     1-D quadrature over θ
               ``make_moons``, centred and doubled, + N(0, 0.2² I)
swissroll      t ~ U(1.5π, 4.5π); (t cos t, t sin t)/5 + N(0, 0.2² I)  1-D quadrature over t
pinwheel       FFJORD's pinwheel: 5 arms, radial std 0.3, tangential   not available (None)
               std 0.1, rate 0.25, scaled by 2
=============  ======================================================  ======================

The noisy-curve densities are ``p(x) = ∫ q(t) N(x; c(t), σ² I) dt``: a one-dimensional
integral of a smooth function, evaluated by composite 8-point Gauss–Legendre quadrature with
panels at most σ long along the curve: the error in ``log p`` is below 1e-12 wherever
``log p > -20`` and below 1e-6 wherever ``log p > -100``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ebmlab.energy.analytic import eight_gaussians

Sampler = Callable[[int, "torch.Generator | None"], torch.Tensor]
LogDensity = Callable[[torch.Tensor], torch.Tensor]

_LOG_2PI = math.log(2 * math.pi)


def _device_of(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


def _check_n(name: str, n: int) -> int:
    if isinstance(n, bool) or int(n) != n or n < 0:
        raise ValueError(f"{name}: number of samples must be an integer >= 0, got {n!r}")
    return int(n)


def _rand(shape, generator):
    return torch.rand(shape, generator=generator, device=_device_of(generator), dtype=torch.get_default_dtype())


def _randn(shape, generator):
    return torch.randn(shape, generator=generator, device=_device_of(generator), dtype=torch.get_default_dtype())


def _randint(high, n, generator):
    return torch.randint(high, (n,), generator=generator, device=_device_of(generator))


# ---------------------------------------------------------------------------------------------
# 8 gaussians
# ---------------------------------------------------------------------------------------------

_EIGHT = eight_gaussians()  # radius 2, std 0.2: the same target as the analytic energy


def sample_8gaussians(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Equal mixture of ``N(2(cos 2πk/8, sin 2πk/8), 0.2² I)``, k = 0..7. Shape ``(n, 2)``."""
    n = _check_n("8gaussians", n)
    k = _randint(8, n, generator)
    means = _EIGHT.means.to(device=_device_of(generator), dtype=torch.get_default_dtype())
    return means[k] + float(_EIGHT.stds[0]) * _randn((n, 2), generator)


def log_density_8gaussians(x: torch.Tensor) -> torch.Tensor:
    """``log p(x) = log ⅛ Σ_k N(x; μ_k, σ² I)``, the normalised ``-E(x) - log Z`` of
    :func:`ebmlab.energy.eight_gaussians`; ``(B, 2) -> (B,)``."""
    means = _EIGHT.means.to(device=x.device, dtype=torch.float64)
    var = float(_EIGHT.stds[0]) ** 2
    sq = (x.to(torch.float64)[:, None, :] - means).square().sum(-1)
    return (torch.logsumexp(-sq / (2 * var), -1) - math.log(8 * 2 * math.pi * var)).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# checkerboard
# ---------------------------------------------------------------------------------------------

_CHECKER_CELLS = torch.tensor([(i, j) for i in range(4) for j in range(4) if (i + j) % 2 == 0])
_CHECKER_LOG_DENSITY = -math.log(8 * 4.0)  # 8 black squares of area 4


def sample_checkerboard(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Uniform on the black squares of a 4×4 board of 2×2 squares covering ``[-4, 4)²``.

    Square ``(i, j)`` is ``[-4 + 2i, -2 + 2i) × [-4 + 2j, -2 + 2j)``; it is black when
    ``i + j`` is even. Shape ``(n, 2)``.
    """
    n = _check_n("checkerboard", n)
    cell = _CHECKER_CELLS.to(_device_of(generator))[_randint(8, n, generator)]
    return -4.0 + 2.0 * (cell.to(torch.get_default_dtype()) + _rand((n, 2), generator))


def log_density_checkerboard(x: torch.Tensor) -> torch.Tensor:
    """``log(1/32)`` on the black squares of ``[-4, 4)²``, ``-inf`` elsewhere; ``(B, 2) -> (B,)``."""
    cell = torch.floor((x + 4.0) / 2.0)
    inside = ((cell >= 0) & (cell <= 3)).all(-1)
    black = (cell.sum(-1) % 2) == 0
    return torch.where(inside & black, _CHECKER_LOG_DENSITY, -math.inf).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# rings
# ---------------------------------------------------------------------------------------------

RING_RADII = (0.75, 1.5, 2.25, 3.0)
RING_STD = 0.08


def sample_rings(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Four concentric noisy circles, equal weights: ``r_k (cos θ, sin θ) + N(0, σ² I)``."""
    n = _check_n("rings", n)
    radii = torch.tensor(RING_RADII, device=_device_of(generator), dtype=torch.get_default_dtype())
    r = radii[_randint(len(RING_RADII), n, generator)]
    theta = 2 * math.pi * _rand((n,), generator)
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta)], -1) + RING_STD * _randn((n, 2), generator)


def log_density_rings(x: torch.Tensor) -> torch.Tensor:
    """Exact density of :func:`sample_rings`; ``(B, 2) -> (B,)``.

    Averaging ``N(x; r(cos θ, sin θ), σ² I)`` over θ gives, with ``ρ = ‖x‖``,
    ``(2πσ²)⁻¹ exp(-(ρ - r)²/2σ²) · i0e(rρ/σ²)`` where ``i0e(z) = e^{-z} I₀(z)``.
    """
    x64 = x.to(torch.float64)
    rho = torch.linalg.vector_norm(x64, dim=-1)[:, None]
    radii = torch.tensor(RING_RADII, dtype=torch.float64, device=x.device)
    var = RING_STD**2
    terms = -(rho - radii).square() / (2 * var) + torch.log(torch.special.i0e(radii * rho / var))
    out = torch.logsumexp(terms, -1) - math.log(len(RING_RADII)) - math.log(2 * math.pi * var)
    return out.to(x.dtype)


# ---------------------------------------------------------------------------------------------
# noisy curves: 2 spirals, moons, swiss roll
# ---------------------------------------------------------------------------------------------

SPIRAL_T_MAX = 3 * math.pi
SPIRAL_STD = 0.1
MOONS_STD = 0.2
SWISSROLL_T = (1.5 * math.pi, 4.5 * math.pi)
SWISSROLL_STD = 0.2


def _spiral_curve(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([-t * torch.cos(t), t * torch.sin(t)], -1) / 3.0


def _moon_curves(theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two half circles of ``make_moons``, shifted by -(0.5, 0.25) and scaled by 2."""
    upper = torch.stack([torch.cos(theta) - 0.5, torch.sin(theta) - 0.25], -1)
    lower = torch.stack([0.5 - torch.cos(theta), 0.25 - torch.sin(theta)], -1)
    return 2 * upper, 2 * lower


def _swissroll_curve(t: torch.Tensor) -> torch.Tensor:
    return torch.stack([t * torch.cos(t), t * torch.sin(t)], -1) / 5.0


def sample_2spirals(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaved spirals: ``±c(t) + N(0, 0.1² I)``, ``c(t) = (-t cos t, t sin t)/3``.

    ``t = 3π√u`` with ``u ~ U(0, 1)`` (density ``q(t) = 2t/(3π)²``), sign ± with probability ½.
    """
    n = _check_n("2spirals", n)
    t = SPIRAL_T_MAX * torch.sqrt(_rand((n,), generator))
    sign = 2.0 * _randint(2, n, generator).to(t.dtype) - 1.0
    return sign[:, None] * _spiral_curve(t) + SPIRAL_STD * _randn((n, 2), generator)


def sample_moons(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Two interleaving half circles (scikit-learn's ``make_moons`` geometry, centred, ×2).

    ``θ ~ U(0, π)``; upper moon ``2(cos θ - ½, sin θ - ¼)``, lower moon ``2(½ - cos θ, ¼ - sin θ)``,
    each with probability ½, plus ``N(0, 0.2² I)`` noise.
    """
    n = _check_n("moons", n)
    theta = math.pi * _rand((n,), generator)
    upper, lower = _moon_curves(theta)
    which = _randint(2, n, generator).bool()[:, None]
    return torch.where(which, lower, upper) + MOONS_STD * _randn((n, 2), generator)


def sample_swissroll(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """2-D swiss roll: ``(t cos t, t sin t)/5 + N(0, 0.2² I)``, ``t ~ U(1.5π, 4.5π)``.

    The (x, z) projection of scikit-learn's ``make_swiss_roll(noise=1)``, divided by 5.
    """
    n = _check_n("swissroll", n)
    lo, hi = SWISSROLL_T
    t = lo + (hi - lo) * _rand((n,), generator)
    return _swissroll_curve(t) + SWISSROLL_STD * _randn((n, 2), generator)


def _gauss_legendre(edges: np.ndarray, order: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Composite Gauss–Legendre nodes and weights on the panels ``[edges[i], edges[i+1]]`` (float64)."""
    x, w = np.polynomial.legendre.leggauss(order)
    half = 0.5 * np.diff(edges)[:, None]
    mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
    return torch.from_numpy((mid + half * x).ravel()), torch.from_numpy((half * w).ravel())


def _arc_length_panels(speed: Callable[[np.ndarray], np.ndarray], lo: float, hi: float, std: float) -> np.ndarray:
    """Panel edges on ``[lo, hi]`` cutting the curve into pieces of equal length, each at most σ.

    With the 8-point rule, measured against eight times as many panels: the error in ``log p``
    is below 1e-12 where ``log p > -20``, below 1e-6 where ``log p > -100`` and below 2e-5
    relative further out (where the integrand is too peaked for the panels).
    """
    t = np.linspace(lo, hi, 20001)
    v = speed(t)
    s = np.concatenate([[0.0], np.cumsum(0.5 * (v[1:] + v[:-1]) * np.diff(t))])
    num_panels = max(8, math.ceil(s[-1] / std))
    return np.interp(np.linspace(0.0, s[-1], num_panels + 1), s, t)


class NoisyCurveDensity:
    """``log p(x) = log Σ_i w_i N(x; c_i, σ² I)``: a quadrature of ``∫ q(t) N(x; c(t), σ² I) dt``.

    ``centres`` ``(M, 2)`` are curve points at the quadrature nodes and ``log_weights`` ``(M,)``
    the logs of ``q(t_i)·(node weight)``. Evaluated in float64, in chunks; ``(B, 2) -> (B,)``.
    """

    def __init__(self, centres: torch.Tensor, log_weights: torch.Tensor, std: float):
        self.centres = centres.to(torch.float64)
        self.log_weights = log_weights.to(torch.float64)
        self.std = float(std)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        centres = self.centres.to(x.device)
        scale = -0.5 / self.std**2
        # log w_i - ‖x - c_i‖²/2σ², with ‖x - c‖² = ‖x‖² - 2x·c + ‖c‖² (one matrix product)
        log_w = self.log_weights.to(x.device) + scale * centres.square().sum(-1) - _LOG_2PI - 2 * math.log(self.std)
        x64 = x.to(torch.float64)
        chunk = max(1, 2**22 // centres.shape[0])
        out = [
            torch.logsumexp(log_w + (-2 * scale) * (xb @ centres.T), -1) + scale * xb.square().sum(-1)
            for xb in x64.split(chunk)
        ]
        return (torch.cat(out) if out else x64.new_zeros(0)).to(x.dtype)


@functools.lru_cache(maxsize=None)
def _make_2spirals_density() -> NoisyCurveDensity:
    t_max = SPIRAL_T_MAX
    t, w = _gauss_legendre(_arc_length_panels(lambda t: np.sqrt(1 + t**2) / 3, 0.0, t_max, SPIRAL_STD))
    log_w = torch.log(w * 2 * t / t_max**2) + math.log(0.5)  # q(t) = 2t/t_max², arms ½ each
    curve = _spiral_curve(t)
    return NoisyCurveDensity(torch.cat([curve, -curve]), torch.cat([log_w, log_w]), SPIRAL_STD)


@functools.lru_cache(maxsize=None)
def _make_moons_density() -> NoisyCurveDensity:
    theta, w = _gauss_legendre(_arc_length_panels(lambda t: np.full_like(t, 2.0), 0.0, math.pi, MOONS_STD))
    log_w = torch.log(w / math.pi) + math.log(0.5)  # q(θ) = 1/π, moons ½ each
    upper, lower = _moon_curves(theta)
    return NoisyCurveDensity(torch.cat([upper, lower]), torch.cat([log_w, log_w]), MOONS_STD)


@functools.lru_cache(maxsize=None)
def _make_swissroll_density() -> NoisyCurveDensity:
    lo, hi = SWISSROLL_T
    t, w = _gauss_legendre(_arc_length_panels(lambda t: np.sqrt(1 + t**2) / 5, lo, hi, SWISSROLL_STD))
    return NoisyCurveDensity(_swissroll_curve(t), torch.log(w / (hi - lo)), SWISSROLL_STD)


# ---------------------------------------------------------------------------------------------
# pinwheel
# ---------------------------------------------------------------------------------------------

PINWHEEL = {"num_arms": 5, "radial_std": 0.3, "tangential_std": 0.1, "rate": 0.25, "scale": 2.0}


def sample_pinwheel(n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """FFJORD's pinwheel: ``x = 2 R(a_k + rate·e^{f₀}) f``, ``f ~ N((1, 0), diag(0.3², 0.1²))``.

    ``a_k = 2πk/5`` for an arm k chosen uniformly and ``R(φ)`` a rotation by φ. Rotations
    keep norms, so ``E‖x‖² = 4(1 + 0.3² + 0.1²) = 4.4``, and ``E x = 0`` by symmetry.
    """
    n = _check_n("pinwheel", n)
    p = PINWHEEL
    f = _randn((n, 2), generator) * torch.tensor([p["radial_std"], p["tangential_std"]], device=_device_of(generator))
    f[:, 0] += 1.0
    arm = _randint(p["num_arms"], n, generator).to(f.dtype)
    angle = 2 * math.pi * arm / p["num_arms"] + p["rate"] * torch.exp(f[:, 0])
    cos, sin = torch.cos(angle), torch.sin(angle)
    return p["scale"] * torch.stack([cos * f[:, 0] - sin * f[:, 1], sin * f[:, 0] + cos * f[:, 1]], -1)


# ---------------------------------------------------------------------------------------------
# the table
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToySet:
    """A named 2-D toy distribution: ``sample(n, generator) -> (n, 2)`` and its log-density."""

    name: str
    sample: Sampler
    log_density: Callable[[], LogDensity | None]  # built lazily: quadrature tables cost a little
    density_kind: str  # "closed form", "quadrature" or "none"


TOY_SETS: dict[str, ToySet] = {
    s.name: s
    for s in (
        ToySet("8gaussians", sample_8gaussians, lambda: log_density_8gaussians, "closed form"),
        ToySet("2spirals", sample_2spirals, _make_2spirals_density, "quadrature"),
        ToySet("checkerboard", sample_checkerboard, lambda: log_density_checkerboard, "closed form"),
        ToySet("rings", sample_rings, lambda: log_density_rings, "closed form"),
        ToySet("moons", sample_moons, _make_moons_density, "quadrature"),
        ToySet("pinwheel", sample_pinwheel, lambda: None, "none"),
        ToySet("swissroll", sample_swissroll, _make_swissroll_density, "quadrature"),
    )
}
TOY_NAMES = tuple(TOY_SETS)


def _get(name: str) -> ToySet:
    try:
        return TOY_SETS[name]
    except KeyError:
        raise ValueError(f"unknown 2-D toy set {name!r}; choose one of {', '.join(TOY_NAMES)}") from None


def toy_sampler(name: str) -> Sampler:
    """The sampler ``(n, generator) -> (n, 2)`` of the toy set ``name``."""
    return _get(name).sample


def sample_toy(name: str, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` i.i.d. draws, shape ``(n, 2)``, from the toy set ``name``."""
    return _get(name).sample(n, generator)


def true_log_density(name: str) -> LogDensity | None:
    """The normalised ``log p(x)`` of toy set ``name``, ``(B, 2) -> (B,)``, or ``None`` if unknown."""
    return _get(name).log_density()
