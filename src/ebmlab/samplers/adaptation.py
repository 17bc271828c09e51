"""Step-size adaptation by dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5).

Drives an acceptance statistic ``a_t`` toward a target δ during burn-in:

    H_t     = (1 - 1/(t+t₀)) H_{t-1} + (δ - a_t)/(t+t₀)
    log ε_t = μ - √t/γ · H_t
    log ε̄_t = t^{-κ} log ε_t + (1 - t^{-κ}) log ε̄_{t-1}

with ``μ = log(10 ε₀)`` (``mu_factor`` = 10), γ = 0.05, t₀ = 10, κ = 0.75 — Stan's defaults,
made for one chain's noisy statistic. The tuned step size is ``ε̄`` at the end of burn-in.

The loop gain of the update is ``|da/dlog ε| · √t/(γ(t+t₀)) ≈ |a'|/(γ√t)``: above 2 the
iterates fall into a period-two cycle (ε too short, then too long, ...) instead of converging,
and ε̄, their geometric mean, misses the target because the acceptance curve is not linear
between the two (measured, HMC on a 100-D N(0, I), L = 5, 1000 chains, 200 burn-in steps:
iterates alternating 0.62/0.84 with acceptances 0.9/0.4, ε̄ = 0.71 accepting 0.72–0.79
against δ = 0.65). With one chain the statistic's noise hides this; the mean over many chains
is nearly noise-free and the cycle is plain. The gain drops below 2 once ``t > (|a'|/2γ)²``:
after 225 steps with γ = 0.05 and |a'| = 1.5 (longer than that burn-in), after 14 with
:data:`POOLED_GAMMA` = 0.2, which the driver uses for pooled statistics. The driver also restarts it halfway
through burn-in centred on the step it reached (``mu_factor`` = 1), which removes the bias
``H_t ≈ γ(μ - log ε*)/√t`` that a far-off ``μ`` leaves after a short burn-in.

Two granularities, one code path (the arithmetic works on floats and on tensors alike):

* pooled — ``a_t`` is a float, the chains' mean acceptance probability; one step size for all;
* per chain — ``a_t`` is a ``(C,)`` tensor, each chain's own acceptance probability, and every
  field of the state is ``(C,)``: C independent dual averagings in one vectorised update
  (start it with ``init(torch.full((C,), ε₀))``). A pooled mean can read 0.64 while a fifth of
  the chains (stuck in a funnel's neck) accept nothing; per-chain step sizes fix that.

Also here: the step-size helpers shared by the kernels that accept a ``(C,)`` step size
(:func:`check_step_size`, :func:`per_chain`).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import ClassVar

import torch

Scalar = float | torch.Tensor


def _exp(v: Scalar) -> Scalar:
    return v.exp() if isinstance(v, torch.Tensor) else math.exp(v)


def _log(v: Scalar) -> Scalar:
    return v.log() if isinstance(v, torch.Tensor) else math.log(v)


@dataclass(frozen=True)
class DualAveragingState:
    """Iteration ``t``, running error ``H``, current and averaged log step sizes, and ``μ``.

    ``error_avg``, ``log_step``, ``log_step_avg`` and ``mu`` are floats (pooled) or ``(C,)``
    tensors (per chain).
    """

    t: int
    error_avg: Scalar
    log_step: Scalar
    log_step_avg: Scalar
    mu: Scalar

    @property
    def step_size(self) -> Scalar:
        """The step size to use at the next iteration."""
        return _exp(self.log_step)

    @property
    def final_step_size(self) -> Scalar:
        """The averaged step size to keep after burn-in."""
        return _exp(self.log_step_avg)


@dataclass(frozen=True)
class DualAveraging:
    """Dual-averaging hyperparameters; ``target_accept`` is δ."""

    target_accept: float = 0.574
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75
    mu_factor: float = 10.0  # μ = log(mu_factor · ε₀)

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"DualAveraging: target_accept must be in (0, 1), got {self.target_accept}")
        if not (self.gamma > 0 and self.t0 >= 0 and 0.5 < self.kappa <= 1 and self.mu_factor > 0):
            raise ValueError(f"DualAveraging: need gamma > 0, t0 >= 0, kappa in (0.5, 1], mu_factor > 0; got "
                             f"{self.gamma}, {self.t0}, {self.kappa}, {self.mu_factor}")

    def init(self, step_size: Scalar) -> DualAveragingState:
        """Start at ``ε₀ = step_size`` (a float, or a ``(C,)`` tensor for per-chain adaptation)."""
        if isinstance(step_size, torch.Tensor):
            step_size = step_size.detach().clone()
        log_step = _log(step_size)
        zero = log_step * 0.0
        return DualAveragingState(0, zero, log_step, log_step, _log(self.mu_factor * step_size))

    def update(self, state: DualAveragingState, accept_prob: Scalar) -> DualAveragingState:
        """One update with this step's acceptance statistic: a float (the chains' mean) for
        a pooled state, a ``(C,)`` tensor (each chain's own) for a per-chain one."""
        t = state.t + 1
        w = 1.0 / (t + self.t0)
        error_avg = (1.0 - w) * state.error_avg + w * (self.target_accept - accept_prob)
        log_step = state.mu - math.sqrt(t) / self.gamma * error_avg
        eta = t ** (-self.kappa)
        log_step_avg = eta * log_step + (1.0 - eta) * state.log_step_avg
        return DualAveragingState(t, error_avg, log_step, log_step_avg, state.mu)


#: γ for a statistic pooled over many chains (see the module docstring); per-chain statistics
#: are one chain's each and keep Stan's γ = 0.05.
POOLED_GAMMA = 0.2


# --------------------------------------------------------------------------------------
# Step sizes that are a float or one per chain
# --------------------------------------------------------------------------------------


def check_step_size(kernel_name: str, step_size) -> None:
    """``ValueError`` unless ``step_size`` is a number > 0 or a 1-D floating tensor of them (one per chain)."""
    if isinstance(step_size, torch.Tensor):
        if step_size.dim() != 1 or not step_size.is_floating_point() or step_size.numel() == 0:
            raise ValueError(f"{kernel_name}: a tensor step_size must be 1-D floating, one per chain (C,), got "
                             f"shape {tuple(step_size.shape)} dtype {step_size.dtype}")
        if not (torch.isfinite(step_size) & (step_size > 0)).all():
            raise ValueError(f"{kernel_name}: step_size must be finite and > 0 for every chain, got "
                             f"min {float(step_size.min()):g}")
        return
    try:
        ok = math.isfinite(float(step_size)) and float(step_size) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"{kernel_name}: step_size must be > 0, got {step_size}")


def per_chain(step_size: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A ``(C,)`` step size viewed as ``(C, 1, ..., 1)`` to broadcast over ``x`` ``(C, *event)``."""
    return step_size.to(dtype=x.dtype, device=x.device).view((-1,) + (1,) * (x.dim() - 1))


def check_step_size_fits(kernel_name: str, step_size, x: torch.Tensor) -> None:
    """``ValueError`` unless a tensor ``step_size`` has one entry per chain of ``x``."""
    if isinstance(step_size, torch.Tensor) and step_size.shape != (x.shape[0],):
        raise ValueError(f"{kernel_name}: step_size of shape {tuple(step_size.shape)} does not fit {x.shape[0]} "
                         f"chains; give a float or a ({x.shape[0]},) tensor")


def step_size_value(step_size):
    """``step_size`` as kernels store it: a float, or a detached ``(C,)`` tensor."""
    if isinstance(step_size, torch.Tensor) and step_size.dim() > 0:
        return step_size.detach()
    return float(step_size)


class TensorStepSize:
    """Mixin for kernel dataclasses whose ``step_size`` may be a float or a ``(C,)`` tensor.

    ``per_chain_adaptive`` tells :func:`~ebmlab.samplers.driver.sample` that it may tune one
    step size per chain (``adapt_per_chain=True``). Put it before :class:`Kernel` in the bases.
    """

    per_chain_adaptive: ClassVar[bool] = True

    def with_step_size(self, step_size):
        """A copy with another step size: a float, or a ``(C,)`` tensor (one per chain)."""
        return dataclasses.replace(self, step_size=step_size_value(step_size))

    def check_chains(self, x: torch.Tensor) -> None:
        """``ValueError`` unless the step size (and the metric, if any) fit the chains ``x``."""
        name = type(self).__name__
        check_step_size_fits(name, self.step_size, x)
        metric = getattr(self, "metric", None)
        if metric is not None:
            metric.check(x, name)
