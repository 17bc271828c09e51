"""A learnable Gaussian energy and a small full-batch fitting loop for objective tests.

``QuadraticEnergy``: ``E(x) = ½ (x-μ)ᵀ P (x-μ)`` with precision ``P = L Lᵀ``, ``L`` lower
triangular with a positive (exponentiated) diagonal; so ``p(x) = N(μ, P⁻¹)`` and
``log Z = (d/2) log 2π - ½ log det P = (d/2) log 2π - Σ_i log L_ii``.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class QuadraticEnergy(nn.Module):
    """``E(x) = ½‖Lᵀ(x-μ)‖²``; parameters ``mu (d,)`` and ``chol_raw (d, d)``. x ``(B, d)`` -> ``(B,)``."""

    def __init__(self, dim: int, mean: torch.Tensor | None = None, precision: torch.Tensor | None = None):
        super().__init__()
        self.dim = dim
        self.event_shape = (dim,)
        mean = torch.zeros(dim) if mean is None else torch.as_tensor(mean, dtype=torch.float32)
        precision = torch.eye(dim) if precision is None else torch.as_tensor(precision, dtype=torch.float32)
        chol = torch.linalg.cholesky(precision)
        raw = torch.tril(chol, -1) + torch.diag(torch.log(torch.diagonal(chol)))
        self.mu = nn.Parameter(mean.clone())
        self.chol_raw = nn.Parameter(raw)

    @property
    def chol(self) -> torch.Tensor:
        return torch.tril(self.chol_raw, -1) + torch.diag(torch.exp(torch.diagonal(self.chol_raw)))

    @property
    def precision(self) -> torch.Tensor:
        chol = self.chol
        return chol @ chol.T

    @property
    def covariance(self) -> torch.Tensor:
        return torch.linalg.inv(self.precision)

    @property
    def log_z(self) -> torch.Tensor:
        return 0.5 * self.dim * math.log(2 * math.pi) - torch.diagonal(self.chol_raw).sum()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.mu) @ self.chol).square().sum(-1)


def fit(energy: nn.Module, objective, data: torch.Tensor, steps: int, lr: float, seed: int = 0,
        batch_size: int | None = None) -> list[float]:
    """Adam on ``objective.loss`` with the learning rate decaying linearly to zero; returns the losses.

    Full batch unless ``batch_size`` is given (then batches are drawn with replacement).
    """
    generator = torch.Generator().manual_seed(seed)
    objective.setup(energy, data, generator)
    params = list(energy.parameters()) + list(objective.parameters())
    optimizer = torch.optim.Adam(params, lr=lr)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda t: 1.0 - t / steps)
    losses = []
    for _ in range(steps):
        batch = data
        if batch_size is not None:
            batch = data[torch.randint(0, data.shape[0], (batch_size,), generator=generator)]
        loss, _ = objective.loss(energy, batch, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        losses.append(float(loss.detach()))
    return losses


def gaussian_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``n`` draws of the 2-D test Gaussian ``N(μ*, Σ*)``; returns ``(x, μ*, Σ*)``."""
    mean = torch.tensor([0.5, -1.0])
    cov = torch.tensor([[2.0, 0.6], [0.6, 0.5]])
    generator = torch.Generator().manual_seed(seed)
    z = torch.randn((n, 2), generator=generator)
    return mean + z @ torch.linalg.cholesky(cov).T, mean, cov


def standard_errors(cov: torch.Tensor, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Standard errors of the sample mean and of each sample-covariance entry for ``n`` Gaussian draws.

    ``Var x̄_i = Σ_ii / n``; ``Var S_ij ≈ (Σ_ii Σ_jj + Σ_ij²) / n`` (Wishart, large n).
    """
    var = torch.diagonal(cov)
    se_mean = torch.sqrt(var / n)
    se_cov = torch.sqrt((torch.outer(var, var) + cov.square()) / n)
    return se_mean, se_cov


def max_z(energy: QuadraticEnergy, mean: torch.Tensor, cov: torch.Tensor, se_mean: torch.Tensor,
          se_cov: torch.Tensor) -> float:
    """Largest |estimate - target| / SE over the mean and covariance entries."""
    with torch.no_grad():
        z_mean = ((energy.mu - mean).abs() / se_mean).max()
        z_cov = ((energy.covariance - cov).abs() / se_cov).max()
    return float(torch.maximum(z_mean, z_cov))


import pytest  # noqa: E402


@pytest.fixture(autouse=False)
def single_thread():
    """Run a test single-threaded (tiny tensors: threads only add overhead); restores the setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
