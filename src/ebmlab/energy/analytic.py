"""Analytic continuous energies with known answers: Gaussians, mixtures, banana, funnel.

Each target has an exact sampler ``sample(n, generator)`` (used to start chains at exact
draws in tests), and exposes ``log_z = log ∫ exp(-E(x)) dx`` plus, where they exist in
closed form, ``mean`` and ``covariance``.
"""

from __future__ import annotations

import math

import torch

from ebmlab.energy.base import Energy


def _as_float(value) -> torch.Tensor:
    """A tensor of ``value`` that keeps a floating dtype (float64 stays float64), else the default."""
    t = torch.as_tensor(value)
    return t if t.is_floating_point() else t.to(torch.get_default_dtype())


def _randn(shape, generator, like: torch.Tensor) -> torch.Tensor:
    return torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)


class Gaussian(Energy):
    """Multivariate Gaussian ``N(μ, Σ)`` as an energy.

    ``E(x) = ½ (x-μ)ᵀ Σ⁻¹ (x-μ)``, ``log Z = (d/2) log 2π + ½ log det Σ``.
    Pass ``covariance`` as a ``(d, d)`` matrix, or ``std`` for an isotropic one.
    Shapes: x ``(B, d)`` -> ``(B,)``.
    """

    def __init__(self, mean: torch.Tensor, covariance: torch.Tensor | None = None, std: float | None = None):
        super().__init__()
        mean = _as_float(mean)
        if mean.dim() != 1:
            raise ValueError(f"Gaussian: mean must be a vector (d,), got shape {tuple(mean.shape)}")
        d = mean.shape[0]
        if covariance is None:
            scale = 1.0 if std is None else float(std)
            if scale <= 0:
                raise ValueError(f"Gaussian: std must be > 0, got {scale}")
            covariance = torch.eye(d, dtype=mean.dtype) * scale**2
        covariance = torch.as_tensor(covariance, dtype=mean.dtype)
        if covariance.shape != (d, d):
            raise ValueError(f"Gaussian: covariance must be ({d}, {d}), got {tuple(covariance.shape)}")
        chol = torch.linalg.cholesky(covariance)  # raises if not positive definite
        self.register_buffer("mean", mean)
        self.register_buffer("covariance", covariance)
        self.register_buffer("scale_tril", chol)
        self.register_buffer("precision", torch.cholesky_inverse(chol))
        self.event_shape = (d,)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @property
    def log_z(self) -> float:
        return 0.5 * self.dim * math.log(2 * math.pi) + float(torch.log(torch.diagonal(self.scale_tril)).sum())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x - self.mean
        return 0.5 * ((diff @ self.precision) * diff).sum(-1)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        diff = x.detach() - self.mean
        g = diff @ self.precision
        return 0.5 * (g * diff).sum(-1), g

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = _randn((n, self.dim), generator, self.mean)
        return self.mean + z @ self.scale_tril.T


class GaussianMixture(Energy):
    """Mixture of isotropic Gaussians ``Σ_k w_k N(μ_k, σ_k² I)``.

    ``E(x) = -log Σ_k w_k σ_k^{-d} exp(-‖x-μ_k‖² / 2σ_k²)``, so ``log Z = (d/2) log 2π``.
    Shapes: means ``(K, d)``, weights and stds ``(K,)``; x ``(B, d)`` -> ``(B,)``.
    """

    def __init__(self, means: torch.Tensor, stds: torch.Tensor | float = 1.0, weights: torch.Tensor | None = None):
        super().__init__()
        means = _as_float(means)
        if means.dim() != 2:
            raise ValueError(f"GaussianMixture: means must be (K, d), got shape {tuple(means.shape)}")
        k = means.shape[0]
        stds = torch.as_tensor(stds, dtype=means.dtype).expand(k).clone()
        weights = torch.full((k,), 1.0 / k, dtype=means.dtype) if weights is None else torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape != (k,) or (weights < 0).any() or (stds <= 0).any():
            raise ValueError("GaussianMixture: weights must be (K,) and >= 0, stds > 0")
        self.register_buffer("means", means)
        self.register_buffer("stds", stds)
        self.register_buffer("weights", weights / weights.sum())
        self.event_shape = (means.shape[1],)

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def log_z(self) -> float:
        return 0.5 * self.dim * math.log(2 * math.pi)

    def component_log_joint(self, x: torch.Tensor) -> torch.Tensor:
        """``log w_k + log N(x; μ_k, σ_k²I) + (d/2) log 2π``, shape ``(B, K)``."""
        sq = torch.cdist(x, self.means).square() if x.shape[0] > 0 else x.new_zeros(0, self.means.shape[0])
        return torch.log(self.weights) - 0.5 * sq / self.stds**2 - self.dim * torch.log(self.stds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        diff = x[:, None, :] - self.means  # (B, K, d)
        logits = torch.log(self.weights) - 0.5 * diff.square().sum(-1) / self.stds**2 - self.dim * torch.log(self.stds)
        return -torch.logsumexp(logits, dim=-1)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E`` and ``∇ₓE(x) = Σ_k r_k(x) (x - μ_k)/σ_k²`` with responsibilities ``r = softmax(logits)``."""
        diff = x.detach()[:, None, :] - self.means  # (B, K, d)
        scaled = diff / self.stds[:, None] ** 2
        logits = torch.log(self.weights) - 0.5 * (diff * scaled).sum(-1) - self.dim * torch.log(self.stds)
        log_norm = torch.logsumexp(logits, dim=-1)
        r = torch.exp(logits - log_norm[:, None])
        return -log_norm, (r[:, :, None] * scaled).sum(1)

    @property
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    @property
    def covariance(self) -> torch.Tensor:
        m = self.mean
        second = torch.einsum("k,ki,kj->ij", self.weights, self.means, self.means)
        second = second + torch.eye(self.dim, dtype=m.dtype, device=m.device) * (self.weights @ self.stds**2)
        return second - torch.outer(m, m)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        return self.means[comp] + self.stds[comp, None] * _randn((n, self.dim), generator, self.means)


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """The 2-D "8 gaussians on a ring": equal weights, centres ``r(cos 2πk/8, sin 2πk/8)``."""
    angles = torch.arange(8, dtype=torch.get_default_dtype()) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], dim=1)
    return GaussianMixture(means, stds=std)


class Banana(Energy):
    """Banana (twisted Gaussian, Haario et al. 1999): ``x₁ ~ N(0, a²)``, ``x₂ | x₁ ~ N(b(x₁² - a²), 1)``.

    ``E(x) = x₁²/(2a²) + (x₂ - b(x₁² - a²))²/2``; the shear has unit Jacobian, so
    ``log Z = log(2π a)``. Mean 0; covariance ``diag(a², 1 + 2b²a⁴)``.
    Shapes: x ``(B, 2)`` -> ``(B,)``.
    """

    event_shape = (2,)

    def __init__(self, a: float = 1.0, b: float = 1.0):
        super().__init__()
        if a <= 0:
            raise ValueError(f"Banana: a must be > 0, got {a}")
        self.a, self.b = float(a), float(b)

    @property
    def log_z(self) -> float:
        return math.log(2 * math.pi * self.a)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[:, 0], x[:, 1]
        return 0.5 * (x1 / self.a) ** 2 + 0.5 * (x2 - self.b * (x1**2 - self.a**2)) ** 2

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E`` and ``∇E = (x₁/a² - 2b x₁ u, u)`` with ``u = x₂ - b(x₁² - a²)``."""
        x = x.detach()
        x1, x2 = x[:, 0], x[:, 1]
        u = x2 - self.b * (x1 * x1 - self.a**2)
        s = x1 / self.a
        return 0.5 * (s * s + u * u), torch.stack([s / self.a - 2.0 * self.b * x1 * u, u], dim=1)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(2)

    @property
    def covariance(self) -> torch.Tensor:
        return torch.diag(torch.tensor([self.a**2, 1 + 2 * self.b**2 * self.a**4]))

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn((n, 2), generator=generator)
        x1 = self.a * z[:, 0]
        return torch.stack([x1, z[:, 1] + self.b * (x1**2 - self.a**2)], dim=1)


class Funnel(Energy):
    """Neal's funnel (Neal 2003): ``v ~ N(0, σ_v²)``, ``x_i | v ~ N(0, eᵛ)`` for i = 1..d-1.

    ``E(v, x) = v²/(2σ_v²) + Σ_i (x_i² e^{-v} / 2 + v/2)``,
    ``log Z = ½ log(2πσ_v²) + ((d-1)/2) log 2π``. Mean 0; ``Var v = σ_v²``,
    ``Var x_i = E[eᵛ] = exp(σ_v²/2)``. Shapes: x ``(B, d)`` with ``x[:, 0] = v``.
    """

    def __init__(self, dim: int = 2, scale: float = 3.0):
        super().__init__()
        if dim < 2:
            raise ValueError(f"Funnel: dim must be >= 2, got {dim}")
        self.dim, self.scale = int(dim), float(scale)
        self.event_shape = (self.dim,)

    @property
    def log_z(self) -> float:
        return 0.5 * math.log(2 * math.pi * self.scale**2) + 0.5 * (self.dim - 1) * math.log(2 * math.pi)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v, rest = x[:, 0], x[:, 1:]
        return 0.5 * (v / self.scale) ** 2 + 0.5 * (rest.square().sum(-1) * torch.exp(-v) + (self.dim - 1) * v)

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``E`` and ``∂E/∂v = v/σ_v² - ½ e^{-v} Σ_i x_i² + (d-1)/2``, ``∂E/∂x_i = x_i e^{-v}``."""
        x = x.detach()
        v, rest = x[:, 0], x[:, 1:]
        w = torch.exp(-v)
        sq = rest.square().sum(-1) * w
        e = 0.5 * (v / self.scale) ** 2 + 0.5 * (sq + (self.dim - 1) * v)
        gv = v / self.scale**2 - 0.5 * sq + 0.5 * (self.dim - 1)
        return e, torch.cat([gv[:, None], rest * w[:, None]], dim=1)

    @property
    def mean(self) -> torch.Tensor:
        return torch.zeros(self.dim)

    @property
    def covariance(self) -> torch.Tensor:
        var = torch.full((self.dim,), math.exp(self.scale**2 / 2))
        var[0] = self.scale**2
        return torch.diag(var)

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        z = torch.randn((n, self.dim), generator=generator)
        v = self.scale * z[:, :1]
        return torch.cat([v, z[:, 1:] * torch.exp(v / 2)], dim=1)
