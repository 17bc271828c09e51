"""What a training run is given and gives back: :class:`OptimSettings`, :class:`FitResult`,
:class:`TrainingDivergedError`, :class:`SettingsError` (refused settings, with the settings that
would do), and :func:`derive_seed` for the run's named random streams.

Shared by the loop (:mod:`ebmlab.training.loop`, which re-exports them), :func:`ebmlab.fit`
and the config-driven trainer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ebmlab.objectives import Objective
from ebmlab.training.schedules import OPTIMIZERS


class TrainingDivergedError(RuntimeError):
    """The loss, an energy or a gradient became NaN or infinite at ``step``.

    The message says what is left on disk, as the loop knows it: ``run_dir`` (``None``: the run
    writes nothing) and ``checkpoint_step``, the step of the checkpoint there (``None``: none
    was written yet, e.g. a divergence before the first ``checkpoint_every`` updates). A state
    with non-finite values is never written, so that checkpoint is the last good one.
    """

    def __init__(self, step: int, what: str, run_dir: str | Path | None = None, checkpoint_step: int | None = None):
        self.step, self.what = step, what
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.checkpoint_step = None if checkpoint_step is None else int(checkpoint_step)
        if self.run_dir is None:
            kept = "nothing was saved (no run_dir was given)"
        elif self.checkpoint_step is None:
            kept = f"no checkpoint was written to {str(self.run_dir)!r} yet"
        else:
            kept = f"the checkpoint of step {self.checkpoint_step} in {str(self.run_dir)!r} is kept"
        super().__init__(f"training diverged at step {step}: {what} is NaN or infinite; {kept}; lower the "
                         f"learning rate or the sampler's step size, or set grad_clip")

    def __reduce__(self):  # picklable with its fields (the default would call __init__(message))
        return type(self), (self.step, self.what, self.run_dir, self.checkpoint_step)


class SettingsError(ValueError):
    """Settings a run refuses, with the settings that would do instead.

    ``problem`` says what is wrong; ``fixes`` lists alternatives, each ``(settings, effect)``
    (``({"lr_decay_steps": 40}, "the cosine over 40 steps")``); ``tail`` ends the message
    (``"nothing was changed"``). ``str()`` names the settings as Python does
    (``lr_decay_steps=40``); :meth:`render` lets a caller name them its own way (the command line:
    ``--set lr_decay_steps=40``), so both read the same sentence.
    """

    def __init__(self, problem: str, fixes: Sequence[tuple[dict[str, Any], str]] = (), tail: str = ""):
        self.problem, self.fixes, self.tail = problem, [(dict(s), str(e)) for s, e in fixes], tail
        super().__init__(self.render())

    def render(self, name: Any = None) -> str:
        """The message with each fix's settings written by ``name(settings) -> str`` (default:
        ``key=value, ...`` with Python's ``repr``)."""
        name = name or (lambda settings: ", ".join(f"{k}={v!r}" for k, v in settings.items()))
        text = self.problem
        if self.fixes:
            text += ": " + " or ".join(f"{name(s)} ({e})" if e else name(s) for s, e in self.fixes)
        return text + (f"; {self.tail}" if self.tail else "")


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained ``model`` (EMA weights when kept, eval mode), the
    logged ``history`` records (each metric averaged over its logging window), the ``objective``
    (its state: buffer, chains, ``log Z``), the number of updates done and the run directory."""

    model: nn.Module
    history: list[dict[str, Any]]
    objective: Objective
    step: int
    wall_time: float
    run_dir: Path | None = None


@dataclass
class OptimSettings:
    """How :class:`TrainLoop` optimises (see :func:`fit` for each value's meaning)."""

    steps: int
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    betas: Sequence[float] = (0.9, 0.999)
    weight_decay: float = 0.0
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    lr_decay_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0
    checkpoint_every: int = 500

    def validate(self) -> "OptimSettings":
        def need(ok: bool, name: str, expected: str) -> None:
            if not ok:
                raise ValueError(f"fit: {name} must be {expected}, got {getattr(self, name)!r}")

        need(isinstance(self.steps, int) and self.steps >= 0, "steps", "an integer >= 0")
        need(isinstance(self.batch_size, int) and self.batch_size >= 1, "batch_size", "an integer >= 1")
        need(self.optimizer in OPTIMIZERS, "optimizer", f"one of {', '.join(OPTIMIZERS)}")
        need(isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0, "lr", "a finite number > 0")
        need(0.0 <= self.ema_decay < 1.0, "ema_decay", "in [0, 1)")
        need(self.grad_clip >= 0, "grad_clip", ">= 0 (0 = off)")
        need(isinstance(self.checkpoint_every, int) and self.checkpoint_every >= 1, "checkpoint_every", ">= 1")
        return self


def derive_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of a run (data, split, model, batches, objective...)."""
    value = int(seed) & 0xFFFFFFFF
    for ch in stream:
        value = (value * 1_000_003 + ord(ch)) % (2**61 - 1)
    return value


__all__ = ["FitResult", "OptimSettings", "SettingsError", "TrainingDivergedError", "derive_seed"]
