"""The metric (mass matrix) of Hamiltonian and preconditioned Langevin samplers.

With inverse mass matrix ``M⁻¹`` (the metric; Stan's and BlackJAX's ``inverse_mass_matrix``),
momenta are ``p ~ N(0, M)``, the kinetic energy is ``K(p) = ½ pᵀ M⁻¹ p`` and positions move
with velocity ``dx/dt = M⁻¹ p``. Setting ``M⁻¹`` to the target's covariance makes a Gaussian
target isotropic in the sampler's eyes (Neal 2011, §4.1; Betancourt 2017, §4.2).

:class:`Metric` holds ``M⁻¹`` over the flattened event (``D = prod(event_shape)``) as

* ``None`` — the identity,
* a vector ``(D,)`` — a diagonal metric, or ``(C, D)`` with ``per_chain=True`` — one diagonal per chain,
* a matrix ``(D, D)`` — a dense metric (``M = (M⁻¹)⁻¹``, factored once by Cholesky).

Shapes: ``x``, ``p`` are ``(C, *event)``; kinetic energies ``(C,)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class Metric:
    """``M⁻¹`` (see the module docstring); ``inverse_mass_matrix=None`` is the identity."""

    inverse_mass_matrix: torch.Tensor | None = None
    per_chain: bool = False  # a (C, D) inverse_mass_matrix: one diagonal per chain
    _chol_mass: torch.Tensor | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        inv = self.inverse_mass_matrix
        if inv is None:
            return
        if not isinstance(inv, torch.Tensor) or not inv.is_floating_point():
            raise ValueError(f"Metric: inverse_mass_matrix must be a floating tensor, got {type(inv).__name__}")
        if not torch.isfinite(inv).all():
            raise ValueError("Metric: inverse_mass_matrix contains NaN or infinite values")
        if inv.dim() not in (1, 2) or (inv.dim() == 2 and not self.per_chain and inv.shape[0] != inv.shape[1]):
            raise ValueError(f"Metric: inverse_mass_matrix must be (D,), (D, D), or (C, D) with per_chain=True; "
                             f"got shape {tuple(inv.shape)}")
        if self.is_dense:
            try:
                chol_inv = torch.linalg.cholesky(inv)
            except RuntimeError:
                raise ValueError("Metric: a dense inverse_mass_matrix must be symmetric positive definite") from None
            # M = (M⁻¹)⁻¹ = L⁻ᵀ L⁻¹ for M⁻¹ = L Lᵀ; p = L⁻ᵀ z has covariance M.
            object.__setattr__(self, "_chol_mass", chol_inv)
        elif not (inv > 0).all():
            raise ValueError("Metric: a diagonal inverse_mass_matrix must be > 0 everywhere")

    @property
    def is_dense(self) -> bool:
        inv = self.inverse_mass_matrix
        return inv is not None and inv.dim() == 2 and not self.per_chain

    def check(self, x: torch.Tensor, where: str) -> None:
        """``ValueError`` unless the metric fits chains ``x`` ``(C, *event)``."""
        inv = self.inverse_mass_matrix
        if inv is None:
            return
        d, c = x[0].numel(), x.shape[0]
        ok = (inv.shape == (d,) or (self.is_dense and inv.shape == (d, d))
              or (inv.dim() == 2 and not self.is_dense and inv.shape == (c, d)))
        if not ok:
            raise ValueError(f"{where}: inverse_mass_matrix of shape {tuple(inv.shape)} does not fit {c} chains of "
                             f"{d} dimensions; give ({d},), ({d}, {d}) or ({c}, {d})")

    def sample_momentum(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """``p ~ N(0, M)``, shape of ``x``."""
        z = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        inv = self.inverse_mass_matrix
        if inv is None:
            return z
        flat = z.flatten(1)
        if self.is_dense:
            p = torch.linalg.solve_triangular(self._chol_mass.T.to(x.dtype), flat.T, upper=True).T
        else:
            p = flat / inv.to(x.dtype).sqrt()
        return p.reshape(x.shape)

    def velocity(self, p: torch.Tensor) -> torch.Tensor:
        """``M⁻¹ p``, shape of ``p``."""
        inv = self.inverse_mass_matrix
        if inv is None:
            return p
        flat = p.flatten(1)
        v = flat @ inv.to(p.dtype) if self.is_dense else flat * inv.to(p.dtype)  # M⁻¹ is symmetric
        return v.reshape(p.shape)

    def kinetic_energy(self, p: torch.Tensor) -> torch.Tensor:
        """``K(p) = ½ pᵀ M⁻¹ p``, shape ``(C,)``."""
        return 0.5 * torch.linalg.vecdot(p.flatten(1), self.velocity(p).flatten(1))


IDENTITY = Metric()

__all__ = ["IDENTITY", "Metric"]
