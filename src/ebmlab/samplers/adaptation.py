"""Step-size adaptation by dual averaging (Nesterov 2009; Hoffman & Gelman 2014, Alg. 5).

Drives the chains' mean acceptance probability ``ā_t`` toward a target δ during burn-in:

    H_t     = (1 - 1/(t+t₀)) H_{t-1} + (δ - ā_t)/(t+t₀)
    log ε_t = μ - √t/γ · H_t
    log ε̄_t = t^{-κ} log ε_t + (1 - t^{-κ}) log ε̄_{t-1}

with ``μ = log(10 ε₀)``, γ = 0.05, t₀ = 10, κ = 0.75. The tuned step size is ``ε̄`` at the
end of burn-in. With many chains, ``ā_t`` is their mean, a low-noise statistic.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DualAveragingState:
    """Iteration ``t``, running error ``H``, current and averaged log step sizes, and ``μ``."""

    t: int
    error_avg: float
    log_step: float
    log_step_avg: float
    mu: float

    @property
    def step_size(self) -> float:
        """The step size to use at the next iteration."""
        return math.exp(self.log_step)

    @property
    def final_step_size(self) -> float:
        """The averaged step size to keep after burn-in."""
        return math.exp(self.log_step_avg)


@dataclass(frozen=True)
class DualAveraging:
    """Dual-averaging hyperparameters; ``target_accept`` is δ."""

    target_accept: float = 0.574
    gamma: float = 0.05
    t0: float = 10.0
    kappa: float = 0.75

    def __post_init__(self) -> None:
        if not 0.0 < self.target_accept < 1.0:
            raise ValueError(f"DualAveraging: target_accept must be in (0, 1), got {self.target_accept}")

    def init(self, step_size: float) -> DualAveragingState:
        log_step = math.log(step_size)
        return DualAveragingState(0, 0.0, log_step, log_step, math.log(10.0 * step_size))

    def update(self, state: DualAveragingState, accept_prob: float) -> DualAveragingState:
        """One update with the mean acceptance probability ``accept_prob`` of this step."""
        t = state.t + 1
        w = 1.0 / (t + self.t0)
        error_avg = (1.0 - w) * state.error_avg + w * (self.target_accept - accept_prob)
        log_step = state.mu - math.sqrt(t) / self.gamma * error_avg
        eta = t ** (-self.kappa)
        log_step_avg = eta * log_step + (1.0 - eta) * state.log_step_avg
        return DualAveragingState(t, error_avg, log_step, log_step_avg, state.mu)
