"""Targets of benchmarks/mcmc_efficiency.py, each as a PyTorch energy and a JAX log density.

Every target is written twice — ``energy(x)`` on chains ``(C, D) -> (C,)`` for ebmlab and
``log_density(x)`` on one position ``(D,) -> ()`` for BlackJAX (``-energy``, the same
formula) — so both libraries sample exactly the same density in the same coordinates, and the
ESS is computed on those coordinates.

* ``funnel_nc``: Neal's funnel (Neal 2003), 10-D, non-centred: ``v = 3 ṽ``, ``x_i = e^{v/2} z_i``
  with ``(ṽ, z) ~ N(0, I₁₀)`` sampled — a standard Gaussian in the sampler's coordinates.
* ``funnel_c``: the same funnel, centred, ``ebmlab.Funnel(dim=10, scale=3.0)``:
  ``E(v, x) = v²/18 + Σ_{i=1}^{9} (x_i² e^{-v}/2 + v/2)`` (coordinates ``(v, x_1..x_9)``).
* ``gauss100``: ``N(0, diag(σ²))`` in 100-D with ``σ`` geometrically spaced from 0.01 to 1.
* ``banana``: ``ebmlab.Banana()`` (a = 1, b = 1), ``E = x₁²/2 + (x₂ - (x₁² - 1))²/2``.
* ``logreg``: Bayesian logistic regression on scikit-learn's breast-cancer data (569 × 30,
  features standardised), intercept and 30 weights (D = 31) with a N(0, 1) prior on each:
  ``E(w) = Σ_n [softplus(η_n) - y_n η_n] + ½‖w‖²``, ``η = b + X β``.

Starting points: every chain starts at a N(0, I) draw (the same numpy draws for both
libraries), shape ``(C, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

import ebmlab

FUNNEL_DIM, FUNNEL_SCALE = 10, 3.0
GAUSS_DIM = 100


class NonCentredFunnel(nn.Module):
    """The funnel in its non-centred coordinates ``(ṽ, z)``: ``E = ½ (ṽ² + ‖z‖²)``; ``(C, D) -> (C,)``."""

    event_shape = (FUNNEL_DIM,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * x.square().sum(-1)


class DiagonalGaussian(nn.Module):
    """``E(x) = ½ Σ_i (x_i/σ_i)²`` with scales ``sigma`` ``(D,)``; ``(C, D) -> (C,)``."""

    def __init__(self, sigma: np.ndarray):
        super().__init__()
        self.register_buffer("inv_var", torch.as_tensor(1.0 / np.square(sigma), dtype=torch.float32))
        self.event_shape = (len(sigma),)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 0.5 * (x.square() * self.inv_var).sum(-1)


class LogisticRegression(nn.Module):
    """Negative log posterior of logistic regression, ``w = (b, β)`` ``(C, 1 + F) -> (C,)``,
    prior ``N(0, prior_scale² I)``; data ``X`` ``(N, F)``, labels ``y`` ``(N,)`` in {0, 1}."""

    def __init__(self, features: np.ndarray, labels: np.ndarray, prior_scale: float = 1.0):
        super().__init__()
        self.register_buffer("features", torch.as_tensor(features, dtype=torch.float32))
        self.register_buffer("labels", torch.as_tensor(labels, dtype=torch.float32))
        self.prior_scale = float(prior_scale)
        self.event_shape = (1 + features.shape[1],)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        eta = w[:, :1] + w[:, 1:] @ self.features.T  # (C, N)
        nll = (torch.nn.functional.softplus(eta) - self.labels * eta).sum(-1)
        return nll + 0.5 * w.square().sum(-1) / self.prior_scale**2


@dataclass(frozen=True)
class Target:
    """One benchmark target: ``energy`` (torch, ``(C, D) -> (C,)``), ``jax_log_density``
    (``(D,) -> ()``, built lazily so the script runs without JAX), its dimension and a note."""

    name: str
    dim: int
    energy: nn.Module
    jax_log_density: Callable[[], Callable]
    note: str

    def initial_positions(self, num_chains: int, seed: int) -> np.ndarray:
        """N(0, I) starting points ``(C, D)``, float32, the same for both libraries."""
        return np.random.default_rng(seed).standard_normal((num_chains, self.dim)).astype(np.float32)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's breast-cancer data, features standardised: ``X`` ``(569, 30)``, ``y`` ``(569,)``."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    x = np.asarray(data.data, dtype=np.float64)
    x = (x - x.mean(0)) / x.std(0)
    return x.astype(np.float32), np.asarray(data.target, dtype=np.float32)


def _jax_funnel_nc():
    import jax.numpy as jnp

    return lambda x: -0.5 * jnp.sum(x**2)


def _jax_funnel_c():
    import jax.numpy as jnp

    def log_density(x):
        v, rest = x[0], x[1:]
        return -(0.5 * (v / FUNNEL_SCALE) ** 2 + 0.5 * (jnp.sum(rest**2) * jnp.exp(-v) + (FUNNEL_DIM - 1) * v))

    return log_density


def _jax_gauss(sigma: np.ndarray):
    def build():
        import jax.numpy as jnp

        inv_var = jnp.asarray(1.0 / np.square(sigma), dtype=jnp.float32)
        return lambda x: -0.5 * jnp.sum(x**2 * inv_var)

    return build


def _jax_banana():
    def log_density(x):
        x1, x2 = x[0], x[1]
        return -(0.5 * x1**2 + 0.5 * (x2 - (x1**2 - 1.0)) ** 2)

    return log_density


def _jax_logreg(features: np.ndarray, labels: np.ndarray, prior_scale: float):
    def build():
        import jax
        import jax.numpy as jnp

        xs, ys = jnp.asarray(features), jnp.asarray(labels)

        def log_density(w):
            eta = w[0] + xs @ w[1:]
            return -(jnp.sum(jax.nn.softplus(eta) - ys * eta) + 0.5 * jnp.sum(w**2) / prior_scale**2)

        return log_density

    return build


def make_targets(names: list[str] | None = None) -> list[Target]:
    """The targets named (all of :data:`TARGETS` when ``None``), in that order."""
    names = list(TARGETS) if names is None else names
    out = []
    for name in names:
        if name == "funnel_nc":
            out.append(Target(name, FUNNEL_DIM, NonCentredFunnel(), _jax_funnel_nc,
                              "Neal's funnel 10-D, non-centred (v = 3ṽ, x = e^{v/2} z)"))
        elif name == "funnel_c":
            funnel = ebmlab.Funnel(dim=FUNNEL_DIM, scale=FUNNEL_SCALE)
            out.append(Target(name, FUNNEL_DIM, funnel, _jax_funnel_c, "Neal's funnel 10-D, centred (ebmlab.Funnel)"))
        elif name == "gauss100":
            sigma = np.geomspace(0.01, 1.0, GAUSS_DIM)
            out.append(Target(name, GAUSS_DIM, DiagonalGaussian(sigma), _jax_gauss(sigma),
                              "100-D Gaussian, scales geometric 0.01..1"))
        elif name == "banana":
            out.append(Target(name, 2, ebmlab.Banana(), _jax_banana, "ebmlab.Banana (a = 1, b = 1)"))
        elif name == "logreg":
            features, labels = breast_cancer()
            out.append(Target(name, 1 + features.shape[1], LogisticRegression(features, labels, 1.0),
                              _jax_logreg(features, labels, 1.0),
                              "logistic regression, breast cancer (569 × 30, standardised), N(0, 1) prior"))
        else:
            raise ValueError(f"unknown target {name!r}; choose from {', '.join(TARGETS)}")
    return out


TARGETS = ("funnel_nc", "funnel_c", "gauss100", "banana", "logreg")

__all__ = ["TARGETS", "Target", "breast_cancer", "make_targets"]
