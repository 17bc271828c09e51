"""A user's own energy module, loaded by path (``user_model_file.py:DiagonalGaussian``) in tests.

``E(x) = ½ Σ_i ((x_i - μ_i) / s_i)²`` with learnable ``μ`` and ``log s``: the density is
``N(μ, diag(s²))``, so every objective has a known answer. ``config`` holds the constructor's
arguments, as ebmlab's own networks do, so a run of it can be rebuilt in another process.
"""

import torch
from torch import nn


class DiagonalGaussian(nn.Module):
    def __init__(self, dim: int = 2):
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(dim))
        self.log_s = nn.Parameter(torch.zeros(dim))
        self.event_shape = (dim,)
        self.config = {"dim": dim}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * ((x - self.mu) / self.log_s.exp()).square().sum(-1)


def make_small_mlp(event_shape, width: int = 8):
    """A factory in the registry's form ``factory(event_shape, **options)``."""
    dim = int(torch.tensor(event_shape).prod())
    return nn.Sequential(nn.Flatten(), nn.Linear(dim, width), nn.SiLU(), nn.Linear(width, 1), nn.Flatten(0))
