"""Inverse-temperature schedules ``0 = β₀ < β₁ < ... < β_{K-1} = 1`` for annealed importance sampling.

* ``"linear"``: ``β_k = k/(K-1)``.
* ``"sigmoid"``: ``β̃_k = σ(δ(2k/(K-1) - 1))``, ``β_k = (β̃_k - β̃₀)/(β̃_{K-1} - β̃₀)`` with
  ``δ = 4`` (Grosse, Maddison & Salakhutdinov 2013; Wu et al. 2017). Like the piecewise
  schedules of Salakhutdinov & Murray (2008) it spends more temperatures where the
  intermediate distributions change fastest, here near both ends of the path.
* a user array: any strictly increasing sequence from 0 to 1.

``K`` counts the temperatures including both ends, so ``K ≥ 2``; ``K = 2`` is plain
importance sampling from the base.
"""

from __future__ import annotations

from typing import Sequence

import torch

SCHEDULES = ("linear", "sigmoid")


def linear_schedule(num_temperatures: int) -> torch.Tensor:
    """``β_k = k/(K-1)``, shape ``(K,)`` float64."""
    return torch.linspace(0.0, 1.0, num_temperatures, dtype=torch.float64)


def sigmoid_schedule(num_temperatures: int, delta: float = 4.0) -> torch.Tensor:
    """The rescaled sigmoid schedule with sharpness ``delta``, shape ``(K,)`` float64."""
    t = torch.linspace(-1.0, 1.0, num_temperatures, dtype=torch.float64)
    s = torch.sigmoid(delta * t)
    beta = (s - s[0]) / (s[-1] - s[0])
    beta[0], beta[-1] = 0.0, 1.0
    return beta


def make_schedule(schedule: str | Sequence[float] | torch.Tensor = "sigmoid", num_temperatures: int | None = None,
                  where: str = "ais") -> torch.Tensor:
    """The schedule ``(K,)`` float64 from a name and ``num_temperatures``, or from an array.

    Raises ``ValueError`` for K < 2, an unknown name, or an array that is not strictly
    increasing from exactly 0 to exactly 1.
    """
    if isinstance(schedule, str):
        if num_temperatures is None or int(num_temperatures) < 2:
            raise ValueError(
                f"{where}: num_temperatures must be >= 2 (the base and the target), got {num_temperatures}"
            )
        if schedule == "linear":
            return linear_schedule(int(num_temperatures))
        if schedule == "sigmoid":
            return sigmoid_schedule(int(num_temperatures))
        raise ValueError(f"{where}: schedule must be one of {', '.join(SCHEDULES)} or an array, got {schedule!r}")
    beta = torch.as_tensor(schedule, dtype=torch.float64).detach().cpu()
    if beta.dim() != 1 or beta.numel() < 2:
        raise ValueError(f"{where}: a schedule array must be 1-D with >= 2 temperatures, got shape {tuple(beta.shape)}")
    if num_temperatures is not None and int(num_temperatures) != beta.numel():
        raise ValueError(f"{where}: num_temperatures={num_temperatures} but the schedule has {beta.numel()} entries")
    if beta[0] != 0.0 or beta[-1] != 1.0 or not (beta[1:] > beta[:-1]).all():
        raise ValueError(f"{where}: a schedule must increase strictly from 0 to 1, got {beta.tolist()[:6]}...")
    return beta
