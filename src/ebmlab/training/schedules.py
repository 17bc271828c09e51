"""Learning-rate schedules of the training loop: linear warm-up, then constant or cosine decay.

    lr(t) = lr · t / W                              for t ≤ W (warm-up, when W > 0)
    lr(t) = lr                                      (constant)
    lr(t) = lr · ½(1 + cos(π u)),  u = min((t - 1 - W) / (T - W), 1)    (cosine, Loshchilov & Hutter 2017)

with ``t`` the 1-based update number and ``T`` the schedule's length (``lr_decay_steps`` or
the run's ``steps``).
"""

from __future__ import annotations

import math

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")


def learning_rate_at(step: int, lr: float, schedule: str = "constant", warmup_steps: int = 0,
                     total_steps: int = 0) -> float:
    """The learning rate of update ``step`` (1-based); see the module docstring."""
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learning rate: schedule must be one of {', '.join(LR_SCHEDULES)}, got {schedule!r}")
    if warmup_steps and step <= warmup_steps:
        return lr * step / warmup_steps
    if schedule == "constant":
        return lr
    span = max(total_steps - warmup_steps, 1)
    u = min(max(step - 1 - warmup_steps, 0) / span, 1.0)
    return lr * 0.5 * (1.0 + math.cos(math.pi * u))


__all__ = ["LR_SCHEDULES", "OPTIMIZERS", "learning_rate_at"]
