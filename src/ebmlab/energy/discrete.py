"""Discrete energies with exactly enumerable small cases: the Ising and Potts models.

States are float tensors holding integers: binary ``x ∈ {0,1}`` (support ``"binary"``) or
categorical ``x ∈ {0..K-1}`` (support ``"categorical"``), shape ``(B, L, L)``.
"""

from __future__ import annotations

import torch

from ebmlab.energy.base import Energy
from ebmlab.energy.enumeration import exact_log_z


def _enumerated_log_z(energy: Energy) -> float:
    """``log Σ_x exp(-E(x))`` over every state, in float64 (:func:`ebmlab.energy.enumeration.exact_log_z`)."""
    return exact_log_z(energy, dtype=torch.float64)


def _neighbour_sum(s: torch.Tensor) -> torch.Tensor:
    """Sum of the four periodic nearest neighbours of each site, shape ``(B, L, L)``."""
    return s.roll(1, -1) + s.roll(-1, -1) + s.roll(1, -2) + s.roll(-1, -2)


class Ising(Energy):
    """Ising model on an L×L periodic grid, binary states ``x ∈ {0,1}``, spins ``s = 2x - 1``.

    ``E(x) = -J Σ_{<ij>} s_i s_j - h Σ_i s_i`` over the 2L² nearest-neighbour bonds.
    Flipping site i changes the energy by ``ΔE_i = 2 s_i (J Σ_{j~i} s_j + h)``.
    Exactly enumerable (``log_z``) for L ≤ 4. Shapes: x ``(B, L, L)`` -> ``(B,)``.
    """

    support = "binary"
    num_states = 2

    def __init__(self, size: int = 3, coupling: float = 0.3, field: float = 0.0):
        super().__init__()
        if size < 2:
            raise ValueError(f"Ising: size must be >= 2, got {size}")
        self.size, self.coupling, self.field = int(size), float(coupling), float(field)
        self.event_shape = (self.size, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = 2 * x - 1
        bonds = s * (s.roll(-1, -1) + s.roll(-1, -2))
        return -self.coupling * bonds.sum((-2, -1)) - self.field * s.sum((-2, -1))

    def delta_energy_flip(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """``E(x with site[c] flipped) - E(x)``, shape ``(C,)``, from the local field."""
        s = 2 * x - 1
        local = (self.coupling * _neighbour_sum(s) + self.field).reshape(x.shape[0], -1)
        s_flat = s.reshape(x.shape[0], -1)
        idx = site[:, None]
        return 2 * s_flat.gather(1, idx)[:, 0] * local.gather(1, idx)[:, 0]

    def site_energies(self, x: torch.Tensor, site: torch.Tensor) -> torch.Tensor:
        """Energies with site[c] set to 0 and to 1, shape ``(C, 2)``, relative to E(x)."""
        delta = self.delta_energy_flip(x, site)
        current = x.reshape(x.shape[0], -1).gather(1, site[:, None])[:, 0]
        zero = torch.zeros_like(delta)
        e0 = torch.where(current == 0, zero, delta)
        e1 = torch.where(current == 1, zero, delta)
        return torch.stack([e0, e1], dim=1) + self(x)[:, None]

    @property
    def log_z(self) -> float | None:
        if self.size > 4:
            return None
        return _enumerated_log_z(self)

    def sample_uniform(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Independent fair coin flips, shape ``(n, L, L)`` — a dispersed start."""
        return torch.randint(0, 2, (n, self.size, self.size), generator=generator).to(torch.get_default_dtype())


class Potts(Energy):
    """K-state Potts model on an L×L periodic grid, ``x ∈ {0..K-1}``.

    ``E(x) = -J Σ_{<ij>} 1[x_i = x_j] - Σ_i h_{x_i}`` with a per-state field ``h`` of shape (K,).
    Exactly enumerable for ``K^{L²}`` up to a few million states. :meth:`one_hot_energy` is the
    same energy of one-hot states (what gradient samplers such as GWG differentiate).
    """

    support = "categorical"

    def __init__(self, size: int = 2, num_states: int = 3, coupling: float = 0.5, field: torch.Tensor | None = None):
        super().__init__()
        if size < 2 or num_states < 2:
            raise ValueError(f"Potts: size and num_states must be >= 2, got {size}, {num_states}")
        self.size, self.num_states, self.coupling = int(size), int(num_states), float(coupling)
        field = torch.zeros(num_states) if field is None else torch.as_tensor(field, dtype=torch.get_default_dtype())
        if field.shape != (num_states,):
            raise ValueError(f"Potts: field must have shape ({num_states},), got {tuple(field.shape)}")
        self.register_buffer("field", field)
        self.event_shape = (self.size, self.size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        same = (x == x.roll(-1, -1)).to(x.dtype) + (x == x.roll(-1, -2)).to(x.dtype)
        h = self.field.to(x.dtype)[x.long()]
        return -self.coupling * same.sum((-2, -1)) - h.sum((-2, -1))

    def one_hot_energy(self, o: torch.Tensor) -> torch.Tensor:
        """``E = -J Σ_{<ij>} ⟨o_i, o_j⟩ - Σ_i ⟨h, o_i⟩`` for one-hot states ``o`` ``(B, L, L, K)`` -> ``(B,)``.

        Equals :meth:`forward` on exact one-hot inputs (``⟨o_i, o_j⟩ = 1[x_i = x_j]``) and is
        linear in each site's ``o_i``, so its gradient gives single-site energy changes exactly:
        ``E(x^{i←k}) - E(x) = ∂E/∂o_{i,k} - ∂E/∂o_{i,x_i}``.
        """
        same = (o * o.roll(-1, -2)).sum(-1) + (o * o.roll(-1, -3)).sum(-1)
        h = o @ self.field.to(o.dtype)
        return -self.coupling * same.sum((-2, -1)) - h.sum((-2, -1))

    @property
    def log_z(self) -> float | None:
        if self.num_states ** (self.size**2) > 2**22:
            return None
        return _enumerated_log_z(self)
