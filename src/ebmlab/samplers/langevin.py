"""Langevin samplers: unadjusted (ULA) and Metropolis-adjusted (MALA).

Both move along the score with Gaussian noise,
``x' = x + ε ∇ₓ log p(x) + √(2ε) ξ = x - ε ∇ₓE(x) + √(2ε) ξ``,  ``ξ ~ N(0, I)``,
the Euler–Maruyama discretisation of the Langevin diffusion ``dx = ∇ log p dt + √2 dW``.

* ULA accepts every proposal, so its stationary law is biased by O(ε).
* MALA (Roberts & Tweedie 1996) corrects the asymmetric proposal
  ``q(x'|x) = N(x'; x - ε∇E(x), 2εI)`` with Metropolis–Hastings:
  ``log α = E(x) - E(x') + log q(x|x') - log q(x'|x)``, and leaves p exactly invariant.

Preconditioned MALA (Roberts & Stramer 2002; Girolami & Calderhead 2011 with a constant
metric) moves with an inverse mass matrix ``A = M⁻¹`` (a :class:`~ebmlab.samplers.metric.Metric`):
``x' = x - ε A∇E(x) + √(2ε) A^{1/2} ξ``, where ``A^{1/2}`` is ``√A`` for a diagonal metric and
the Cholesky factor ``L`` of ``A = LLᵀ`` for a dense one, so the proposal is
``N(x - εA∇E(x), 2εA)`` and its Hastings ratio needs no inverse (see
:meth:`MALA.proposal_log_ratio`). Setting ``A`` to the target's covariance makes a Gaussian
target isotropic.

Each step costs one forward+backward of the energy at the proposal; the current state's
energy and gradient are cached in :class:`ChainState`. Shapes: ``x``, ``∇E``, ``ξ`` are
``(C, *event)``; energies and per-chain step sizes ``(C,)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, value_and_grad
from ebmlab.samplers.adaptation import TensorStepSize, check_step_size, per_chain, step_size_value
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, gaussian_like, metropolis_accept, select_state
from ebmlab.samplers.metric import Metric


def sqrt_inverse_mass(metric: Metric, z: torch.Tensor) -> torch.Tensor:
    """``A^{1/2} z`` with covariance ``A = M⁻¹`` for ``z ~ N(0, I)``: ``√A ⊙ z`` (diagonal,
    ``(D,)`` or per-chain ``(C, D)``) or ``L z`` with ``A = LLᵀ`` (dense); shape of ``z``."""
    inv = metric.inverse_mass_matrix
    flat = z.flatten(1)
    if metric.is_dense:
        chol = getattr(metric, "_chol_mass", None)  # Metric caches the Cholesky factor of M⁻¹ under this name
        chol = torch.linalg.cholesky(inv) if chol is None else chol
        return (flat @ chol.to(z.dtype).T).reshape(z.shape)
    return (flat * inv.to(z.dtype).sqrt()).reshape(z.shape)


def langevin_proposal(state: ChainState, step_size: float | torch.Tensor, noise: torch.Tensor, noise_scale: float = 1.0,
                      metric: Metric | None = None) -> torch.Tensor:
    """``x - ε A∇E(x) + s √(2ε) A^{1/2} ξ`` for noise ``ξ`` (shape of x), noise scale ``s`` and
    ``A = M⁻¹`` of ``metric`` (``None``: ``A = I``, the plain Langevin step, no extra work);
    ``step_size`` is a float or a ``(C,)`` tensor."""
    if metric is None and not isinstance(step_size, torch.Tensor):
        return torch.add(state.x, state.grad, alpha=-step_size).add_(noise, alpha=noise_scale * math.sqrt(2.0 * step_size))
    drift = state.grad if metric is None else metric.velocity(state.grad)
    if metric is not None:
        noise = sqrt_inverse_mass(metric, noise)
    if isinstance(step_size, torch.Tensor):
        eps = per_chain(step_size, state.x)
        return torch.addcmul(state.x, drift, eps, value=-1.0).addcmul_(noise, (2.0 * eps).sqrt_(), value=noise_scale)
    return torch.add(state.x, drift, alpha=-step_size).add_(noise, alpha=noise_scale * math.sqrt(2.0 * step_size))


@dataclass(frozen=True)
class ULA(Kernel):
    """Unadjusted Langevin: ``x ← x - ε∇E(x) + s√(2ε) ξ``; no accept/reject.

    ``noise_scale`` s = 1 is the Langevin diffusion; s < 1 is the tempered noise that
    contrastive-divergence practice uses (Du & Mordatch 2019) and no longer targets p.
    """

    step_size: float = 0.01
    noise_scale: float = 1.0
    name = "ula"
    uses_grad = True

    def validate(self) -> None:
        super().validate()
        if not self.noise_scale >= 0:
            raise ValueError(f"ULA: noise_scale must be >= 0, got {self.noise_scale}")

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        x_new = langevin_proposal(state, self.step_size, gaussian_like(state.x, generator), self.noise_scale)
        e_new, g_new = value_and_grad(energy, x_new)
        diverged = torch.isfinite(e_new).logical_not_()
        accepted = torch.ones_like(diverged)
        return ChainState(x_new, e_new, g_new, state.step + 1), StepInfo(torch.ones_like(e_new), accepted, diverged)


@dataclass(frozen=True)
class MALA(TensorStepSize, Kernel):
    """Metropolis-adjusted Langevin (Roberts & Tweedie 1996), optionally preconditioned.

    ``log α = E(x) - E(x') + [aᵀA⁻¹a - bᵀA⁻¹b] / (4ε)``, ``a = x'-x+εA∇E(x)``,
    ``b = x-x'+εA∇E(x')``, ``A = M⁻¹`` (the identity when ``metric`` is None).

    Args:
        step_size: ε, a float or a ``(C,)`` tensor (one per chain, as per-chain adaptation
            tunes it); it broadcasts over the event dims.
        metric: the inverse mass matrix ``A`` (:class:`Metric`, or a ``(D,)``/``(D, D)``
            tensor); ``None`` is the identity.
    """

    step_size: float | torch.Tensor = 0.01
    metric: Metric | None = None
    name = "mala"
    uses_grad = True
    adaptive = True
    default_target_accept = 0.574

    def __post_init__(self) -> None:
        if isinstance(self.metric, torch.Tensor):
            object.__setattr__(self, "metric", Metric(self.metric))
        if not isinstance(self.step_size, torch.Tensor):
            check_step_size("MALA", self.step_size)
        object.__setattr__(self, "step_size", step_size_value(self.step_size))
        super().__post_init__()

    def validate(self) -> None:
        check_step_size("MALA", self.step_size)
        if self.metric is not None and not isinstance(self.metric, Metric):
            raise ValueError(f"MALA: metric must be a Metric, a tensor or None, got {type(self.metric).__name__}")

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        state = super().init(energy, x)
        self.check_chains(state.x)
        return state

    def proposal_log_ratio(self, current: ChainState, proposal: ChainState) -> torch.Tensor:
        """``log q(x|x') - log q(x'|x)`` for the Langevin proposal, shape ``(C,)``.

        ``[aᵀA⁻¹a - bᵀA⁻¹b] / (4ε)`` evaluated as ``(a+b)ᵀA⁻¹(a-b) / (4ε)`` with
        ``A⁻¹(a+b) = ε(∇E(x)+∇E(x'))`` and ``a-b = 2(x'-x) + εA(∇E(x)-∇E(x'))``:
        ``½ (∇E(x)+∇E(x'))·((x'-x) + ½εA(∇E(x)-∇E(x')))`` — no inverse of ``A``, fewer passes
        over the data, and no cancellation between two nearly equal norms.
        """
        eps = self.step_size
        grad_sum = (current.grad + proposal.grad).flatten(1)
        grad_diff = torch.sub(current.grad, proposal.grad)
        if self.metric is not None:
            grad_diff = self.metric.velocity(grad_diff)
        if isinstance(eps, torch.Tensor):
            other = torch.sub(proposal.x, current.x).addcmul_(grad_diff, per_chain(eps, current.x), value=0.5)
        else:
            other = torch.sub(proposal.x, current.x).add_(grad_diff, alpha=0.5 * eps)
        return torch.linalg.vecdot(grad_sum, other.flatten(1)).mul_(0.5)

    def step(self, energy: EnergyFn, state: ChainState, generator: torch.Generator | None) -> tuple[ChainState, StepInfo]:
        x_new = langevin_proposal(state, self.step_size, gaussian_like(state.x, generator), metric=self.metric)
        e_new, g_new = value_and_grad(energy, x_new)
        proposal = ChainState(x_new, e_new, g_new)
        log_alpha = state.energy - e_new + self.proposal_log_ratio(state, proposal)
        accepted, accept_prob, diverged = metropolis_accept(log_alpha, generator)
        return select_state(accepted, proposal, state), StepInfo(accept_prob, accepted, diverged)
