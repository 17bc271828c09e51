"""A Gaussian mixture fitted by EM: the noise law of NCE on low-dimensional data.

    q(x) = Σ_k π_k N(x; μ_k, Σ_k),        Σ_k = L_k L_kᵀ

fitted to data ``(N, D)`` by k-means++ seeding (Arthur & Vassilvitskii 2007) and EM
(Dempster, Laird & Rubin 1977) with a ridge ``jitter · mean variance · I`` added to every
covariance, so no component collapses onto a point. NCE's estimator is most efficient when the
noise is close to the data (Gutmann & Hyvärinen 2012, section 2.4): on the 2-D toy sets a
single Gaussian puts most of its draws where the data have no mass, and the classifier then
learns little about the data's shape.

Shapes: ``means (K, D)``, ``scale_trils (K, D, D)``, ``log_weights (K,)``; every draw uses the
given generator. Computed in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass
class GaussianMixture:
    """``q(x) = Σ_k exp(log_weights_k) N(x; means_k, scale_trils_k scale_trils_kᵀ)``."""

    log_weights: torch.Tensor
    means: torch.Tensor
    scale_trils: torch.Tensor

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log π_k + log N(x_b; μ_k, Σ_k)``, shape ``(B, K)``, for ``x (B, D)``."""
        eye = torch.eye(x.shape[1], dtype=x.dtype, device=x.device).expand_as(self.scale_trils)
        inverse = torch.linalg.solve_triangular(self.scale_trils, eye, upper=False)  # L_k⁻¹, (K, D, D)
        k, dim = self.means.shape
        # L_k⁻¹ (x - μ_k) = L_k⁻¹ x - L_k⁻¹ μ_k, all components in one (B, D) @ (D, K·D) product
        z = (x @ inverse.reshape(k * dim, dim).T).reshape(x.shape[0], k, dim).transpose(0, 1)
        z = z - (inverse @ self.means[:, :, None]).squeeze(-1)[:, None, :]  # (K, B, D)
        log_det = torch.log(torch.diagonal(self.scale_trils, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        log_n = -0.5 * z.square().sum(-1) - log_det[:, None] - 0.5 * dim * math.log(2 * math.pi)  # (K, B)
        return (log_n + self.log_weights[:, None]).T

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """``log q(x)``, shape ``(B,)``."""
        return torch.logsumexp(self.component_log_prob(x), dim=1)

    def sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        """``n`` draws, shape ``(n, D)``: a component by its weight, then its Gaussian."""
        k = torch.multinomial(self.log_weights.exp(), n, replacement=True, generator=generator)
        z = torch.randn((n, self.means.shape[1]), generator=generator, dtype=self.means.dtype, device=self.means.device)
        return self.means[k] + torch.einsum("nij,nj->ni", self.scale_trils[k], z)

    def to(self, **kwargs) -> "GaussianMixture":
        return GaussianMixture(self.log_weights.to(**kwargs), self.means.to(**kwargs), self.scale_trils.to(**kwargs))


def _kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator | None) -> torch.Tensor:
    """k-means++ seeds: each next centre drawn with probability ∝ squared distance to the nearest."""
    first = int(torch.randint(x.shape[0], (1,), generator=generator, device=x.device))
    centres = [x[first]]
    nearest = (x - x[first]).square().sum(1)
    for _ in range(1, k):
        idx = int(torch.multinomial(nearest / nearest.sum(), 1, generator=generator))
        centres.append(x[idx])
        nearest = torch.minimum(nearest, (x - x[idx]).square().sum(1))
    return torch.stack(centres)


def fit_gaussian_mixture(data: torch.Tensor, num_components: int, generator: torch.Generator | None = None,
                         iterations: int = 100, jitter: float = 1e-3) -> GaussianMixture:
    """Fit a ``num_components``-component full-covariance mixture to ``data (N, D)`` by EM.

    Raises ``ValueError`` when there are fewer data points than twice the components.
    """
    x = data.detach().flatten(1).double()
    n, dim = x.shape
    k = int(num_components)
    if k < 1 or n < 2 * k:
        raise ValueError(f"nce: a {k}-component noise mixture needs at least {2 * k} data points, got {n}")
    ridge = jitter * float(x.var(0).mean()) * torch.eye(dim, dtype=x.dtype, device=x.device)
    means = _kmeans_pp(x, k, generator)
    resp = torch.nn.functional.one_hot(torch.cdist(x, means).argmin(1), k).double()  # hard start
    for _ in range(iterations):
        counts = resp.sum(0) + 1e-10  # (K,)
        means = (resp.T @ x) / counts[:, None]
        diff = x[None] - means[:, None]  # (K, N, D)
        cov = (diff * resp.T[:, :, None]).transpose(1, 2) @ diff / counts[:, None, None] + ridge
        mixture = GaussianMixture(torch.log(counts / n), means, torch.linalg.cholesky(cov))
        log_r = mixture.component_log_prob(x)
        resp = torch.softmax(log_r, dim=1)
    return mixture


__all__ = ["GaussianMixture", "fit_gaussian_mixture"]
