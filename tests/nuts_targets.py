"""Known-answer targets shared by the NUTS tests (tests/samplers/test_nuts*.py), in float64."""

from __future__ import annotations

import torch

from ebmlab.energy import Gaussian, eight_gaussians

SCALES = 0.1 * 100.0 ** (torch.arange(10, dtype=torch.float64) / 9)  # σᵢ from 0.1 to 10


def correlated() -> Gaussian:
    """The conftest fixture's ``N((0.5, -1), [[1, .5], [.5, 1]])`` in float64."""
    return Gaussian(torch.tensor([0.5, -1.0]), torch.tensor([[1.0, 0.5], [0.5, 1.0]])).double()


def scaled_10d() -> Gaussian:
    """``N(0, diag(σ²))`` with σ log-spaced from 0.1 to 10 (condition number 10⁴)."""
    return Gaussian(torch.zeros(10, dtype=torch.float64), torch.diag(SCALES**2))


def ring():
    """The eight-Gaussian ring in float64."""
    return eight_gaussians().double()
