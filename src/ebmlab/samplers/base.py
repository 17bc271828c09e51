"""Shared pieces of every MCMC kernel: the chain state, the step info, the Metropolis test.

A kernel is a frozen dataclass of hyperparameters with two pure methods::

    state = kernel.init(energy, x0)                       # caches E(x0) (and ∇E(x0))
    state, info = kernel.step(energy, state, generator)   # one transition of every chain

Chains are the batch dimension: per-chain values have shape ``(C,)``; nothing loops over
chains and nothing mutates the kernel. Every random draw names ``generator``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from ebmlab.energy.base import EnergyFn, energy as eval_energy, value_and_grad


@dataclass(frozen=True)
class ChainState:
    """The state of C chains.

    Attributes:
        x: positions, shape ``(C, *event_shape)``.
        energy: ``E(x)``, shape ``(C,)`` — cached so no kernel recomputes it.
        grad: ``∇ₓE(x)``, shape of ``x``, or ``None`` for kernels that do not use it.
        step: transitions taken so far (drives systematic-scan site order).
    """

    x: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor | None = None
    step: int = 0

    @property
    def num_chains(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class StepInfo:
    """What one transition did, per chain (all shapes ``(C,)``).

    Attributes:
        accept_prob: the Metropolis–Hastings acceptance probability ``min(1, α)`` (1 for
            kernels without a correction, 0 where α is NaN).
        accepted: whether the proposal was taken.
        diverged: the proposal's energy (or acceptance ratio) was NaN or infinite.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    diverged: torch.Tensor


def uniform_log(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``log u`` for ``u ~ U(0, 1)``, shape ``shape``; never ``-inf`` issues since u > 0 a.s."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.log(u)


def metropolis_accept(log_alpha: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Metropolis–Hastings test in log space: accept iff ``log u < log α``, ``u ~ U(0,1)``.

    ``log_alpha`` has shape ``(C,)``. NaN means reject and is flagged as a divergence, as is
    ``+inf`` arising from an infinite energy difference (the proposal is rejected then too,
    since an infinite-energy state has zero probability; ``+inf`` can only come from the
    *current* energy being infinite, which the run driver refuses at the start).

    Returns ``(accepted, accept_prob, diverged)``, each of shape ``(C,)``.
    """
    safe = torch.nan_to_num(log_alpha, nan=-torch.inf, posinf=-torch.inf, neginf=-torch.inf)
    diverged = safe != log_alpha  # NaN or +inf; -inf is a plain reject
    accepted = uniform_log(safe.shape, generator, safe) < safe
    accept_prob = safe.clamp(max=0.0).exp_()
    return accepted, accept_prob, diverged


def select(accepted: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-chain ``where``: ``new[c]`` where ``accepted[c]`` else ``old[c]``; any trailing shape."""
    mask = accepted.view(accepted.shape + (1,) * (new.dim() - accepted.dim()))
    return torch.where(mask, new, old)


def select_state(accepted: torch.Tensor, proposal: ChainState, current: ChainState) -> ChainState:
    """The chain state after the accept/reject: one ``torch.where`` per field."""
    mask = accepted.view(accepted.shape + (1,) * (proposal.x.dim() - accepted.dim()))
    grad = None
    if proposal.grad is not None and current.grad is not None:
        grad = torch.where(mask, proposal.grad, current.grad)
    return ChainState(
        x=torch.where(mask, proposal.x, current.x),
        energy=torch.where(accepted, proposal.energy, current.energy),
        grad=grad,
        step=current.step + 1,
    )


class Kernel:
    """Mixin for kernel dataclasses: names, capabilities, and the two ``init`` flavours.

    Class attributes:
        name: registry name (``"mala"``...).
        uses_grad: whether ``init`` must cache ``∇ₓE``.
        adaptive: whether ``step_size`` can be tuned during burn-in toward ``target_accept``.
        support: ``"real"`` or ``"discrete"``.
    """

    name: ClassVar[str] = ""
    uses_grad: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    support: ClassVar[str] = "real"
    default_target_accept: ClassVar[float] = 0.5

    def __post_init__(self) -> None:
        self.validate()

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        """The initial state: ``x`` with its energy (and gradient if the kernel uses it) cached."""
        x = x.detach()
        if self.uses_grad:
            e, g = value_and_grad(energy, x)
            return ChainState(x=x, energy=e, grad=g)
        with torch.no_grad():
            return ChainState(x=x, energy=eval_energy(energy, x).detach())

    def with_step_size(self, step_size: float):
        """A copy of the kernel with another step size (used by adaptation)."""
        return dataclasses.replace(self, step_size=float(step_size))

    def validate(self) -> None:
        """Check hyperparameters; raise ``ValueError`` naming the kernel and the value."""
        step = getattr(self, "step_size", None)
        if step is not None and not (float(step) > 0):
            raise ValueError(f"{type(self).__name__}: step_size must be > 0, got {step}")


def sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-chain squared Euclidean norm over the event dims: ``(C, *event) -> (C,)``."""
    flat = t.flatten(1)
    return torch.linalg.vecdot(flat, flat)


def gaussian_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
