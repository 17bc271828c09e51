"""The training loop: one :class:`TrainLoop` serves every objective (:func:`ebmlab.training.fit` is its front door).

Each update draws a batch (without replacement within an epoch), asks the objective for
``loss, metrics = objective.loss(energy, batch, generator)``, and takes one optimiser step:

    θ ← opt(θ, ∇_θ loss),   with lr(t) warm-up then constant or cosine ½(1 + cos(π t/T)),

optionally clipping the global gradient norm and keeping an exponential moving average of the
weights, ``θ̄ ← θ̄ + (1 - decay)(θ - θ̄)``. The objective's own parameters (NCE's ``log Z``) are
optimised with the model's. The loop never knows which objective it runs.

Reproducibility: every random draw comes from two generators (``batches``: epoch permutations;
``objective``: sampler noise, buffer restarts, projections, noise draws) whose states, with the
model, optimiser, EMA weights, objective state (replay buffer, persistent chains, ``log Z``)
and the batch order, make up the checkpoint. With a ``run_dir`` the checkpoint is written
atomically every ``checkpoint_every`` updates and at the end, one JSON record per update goes
to ``metrics.jsonl``, and ``resume=True`` continues a stopped run bit for bit on one device.

Divergence guard: a NaN or infinite loss, metric or gradient norm stops the run with
:class:`TrainingDivergedError` naming the step, before the optimiser applies it; a state with
non-finite values is never written, so the last checkpoint stays the last good one.

The loop prints nothing and draws nothing: progress bars, pictures and loggers are callbacks
(:class:`Callback`), passed by the CLI's jobs or by anyone.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ebmlab import distributed as D
from ebmlab.objectives import Objective
from ebmlab.training.batches import BatchStream
from ebmlab.training.callbacks import Callback, as_callbacks
from ebmlab.training.checkpoint import CHECKPOINT_NAME, all_finite, remove_stale_temporaries, save_checkpoint, to_device
from ebmlab.training.history import METRICS_NAME, read_metrics, truncate_metrics
from ebmlab.training.interrupts import TrainingInterrupted, deferred_signals
from ebmlab.training.lock import RunLock
from ebmlab.training.schedules import OPTIMIZERS, learning_rate_at
from ebmlab.training.sharding import TrainSharding


class TrainingDivergedError(RuntimeError):
    """The loss, an energy or a gradient became NaN or infinite at ``step``."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"training diverged at step {step}: {what} is NaN or infinite; the last checkpoint "
                         f"is kept; lower the learning rate or the sampler's step size, or set grad_clip")


@dataclass
class FitResult:
    """What :func:`fit` returns: the trained ``model`` (EMA weights when kept, eval mode), the
    per-update ``history`` records, the ``objective`` (its state: buffer, chains, ``log Z``),
    the number of updates done and the run directory, if any."""

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


class TrainLoop:
    """A run's state and its update; :meth:`run` trains to ``settings.steps``.

    Built by :func:`fit` (any module, any data) and by :class:`ebmlab.training.run.Trainer`
    (from a config). ``run_state`` holds extra checkpoint entries of the builder (the config,
    the data split, the standardisation); ``info`` anything callbacks may want (the sampler
    kernel, the standardiser), never read by the loop.
    """

    def __init__(self, model: nn.Module, objective: Objective, x_train: torch.Tensor, settings: OptimSettings,
                 batch_generator: torch.Generator, objective_generator: torch.Generator, *,
                 support: str = "real", run_dir: str | Path | None = None, sharding: TrainSharding | None = None,
                 run_state: dict[str, Any] | None = None, model_info: dict[str, Any] | None = None,
                 callbacks: Iterable[Callback | Callable] = (), info: dict[str, Any] | None = None,
                 log_every: int | None = None, labels: torch.Tensor | None = None):
        self.settings = settings.validate()
        self.model, self.objective, self.x_train, self.support = model, objective, x_train, support
        #: class labels ``(N,)`` aligned with ``x_train`` for objectives that use them (batches are then ``(x, y)``)
        self.labels = None if labels is None else labels.to(x_train.device)
        self.sharding = sharding or TrainSharding()
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.run_state = dict(run_state or {})
        self.model_info = model_info
        self.info = dict(info or {})
        self.callbacks = as_callbacks(callbacks)
        self.batch_generator, self.objective_generator = batch_generator, objective_generator
        self.loss_function = self.sharding.loss_function(model, objective)
        self.batches = BatchStream(x_train.shape[0], settings.batch_size, batch_generator, x_train.device)
        groups = [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": settings.weight_decay}]
        extra = list(objective.parameters())
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        if settings.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=settings.lr, betas=tuple(settings.betas))
        else:
            self.optimizer = torch.optim.SGD(groups, lr=settings.lr, momentum=settings.momentum)
        self.params = [p for group in groups for p in group["params"]]
        self.ema = copy.deepcopy(model).requires_grad_(False) if settings.ema_decay > 0 else None
        self.step = 0
        self.elapsed = 0.0
        self.saved_step: int | None = None
        self.history: list[dict[str, Any]] = []
        #: records kept (history, metrics.jsonl) every this many updates, and at the last one
        self.log_every = max(1, settings.steps // 2000) if log_every is None else int(log_every)
        if self.log_every < 1:
            raise ValueError(f"log_every must be >= 1, got {log_every}")
        self.lock: RunLock | None = None  # the run directory's lock, held while the run writes

    # ------------------------------------------------------------------ state

    @property
    def trained_model(self) -> nn.Module:
        """The EMA weights when kept, else the model."""
        return self.ema if self.ema is not None else self.model

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content (a collective in a process group: gathers every rank's objective state)."""
        sharded = getattr(self.objective, "sharded_state", ())
        objective, layout = self.sharding.gather_objective(self.objective.state_dict(),
                                                           self.objective_generator.get_state(), sharded)
        state = {
            **self.run_state,
            "step": self.step,
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "model_info": self.model_info,
            "optimizer": self.optimizer.state_dict(),
            "objective": objective,
            "objective_info": {"name": self.objective.name, "learns_log_z": bool(self.objective.learns_log_z)},
            "rng": {"batches": self.batch_generator.get_state(), "objective": self.objective_generator.get_state()},
            "batches": self.batches.state_dict(),
            "elapsed": self.elapsed,
        }
        if layout is not None:
            state["distributed"] = layout
        return state

    def load_state_dict(self, state: dict[str, Any], reseed: Callable[[int], int] | None = None) -> None:
        """Restore a checkpoint. ``reseed(step)`` gives a fresh objective seed when the saved
        world size differs (per-rank generators cannot be carried over)."""
        from ebmlab.energy.errors import describe_load_error, missing_entries

        missing = missing_entries(state, ("model", "optimizer", "objective", "step", "rng.batches", "rng.objective",
                                          "batches"))
        if missing:
            raise ValueError(f"resume: the checkpoint lacks the entr{'ies' if len(missing) > 1 else 'y'} "
                             f"{', '.join(missing)}")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as err:
            raise ValueError(f"resume: the checkpoint does not fit this model or optimiser: "
                             f"{describe_load_error(err)}") from None
        layout = state.get("distributed")
        sharded = getattr(self.objective, "sharded_state", ())
        local = self.sharding.local_objective(state["objective"], layout, sharded)
        self.objective.load_state_dict(to_device(local, self.x_train.device))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
        self.step, self.elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        self.saved_step = self.step
        self.batch_generator.set_state(state["rng"]["batches"])
        generator_state = self.sharding.local_generator_state(layout, state["rng"]["objective"])
        if generator_state is None:
            if reseed is None:
                raise ValueError("resume: the run was saved with another number of processes; give a reseed rule")
            self.objective_generator.manual_seed(reseed(self.step))
        else:
            self.objective_generator.set_state(generator_state)
        self.batches.load_state_dict(state["batches"])
        if self.run_dir is not None and self.sharding.is_main:
            truncate_metrics(self.run_dir / METRICS_NAME, self.step)
            self.history = read_metrics(self.run_dir)

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0); refuses (diverged) a state with non-finite values.

        A collective in a process group: every rank calls it at the same steps.
        """
        if self.run_dir is None:
            return
        state = self.state_dict()
        local = {"model": self.model.state_dict(), "ema": state["ema"], "optimizer": state["optimizer"],
                 "objective": self.objective.state_dict()}
        flags = D.all_reduce_mean({part: 0.0 if all_finite(value) else 1.0 for part, value in local.items()})
        bad = [part for part, flag in flags.items() if flag > 0]
        if bad:
            raise TrainingDivergedError(self.step, f"the {' and '.join(bad)} state")
        if self.sharding.is_main:
            remove_stale_temporaries(self.run_dir)  # left by a write killed midway; we hold the lock
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        self.saved_step = self.step

    # ------------------------------------------------------------------ the loop

    def learning_rate(self, step: int) -> float:
        s = self.settings
        return learning_rate_at(step, s.lr, s.lr_schedule, s.warmup_steps, s.lr_decay_steps or s.steps)

    def update(self) -> dict[str, Any]:
        """One optimisation step; returns the step's metrics record."""
        s, step = self.settings, self.step + 1
        lr = self.learning_rate(step)
        index = self.sharding.shard_batch(self.batches.next())
        batch = self.x_train[index] if self.labels is None else (self.x_train[index], self.labels[index])
        self.model.train()
        try:
            loss, metrics = self.loss_function(batch, self.objective_generator)
        except Exception as err:  # a user's energy failing mid-run: name it and the step
            from ebmlab.energy.errors import EnergyRaisedError, energy_name, raised_by

            if not raised_by(err, self.model):
                raise
            raise EnergyRaisedError(energy_name(self.model), err, step) from err
        metrics, loss_value = self.sharding.reduce_metrics(metrics, loss)  # means over ranks
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if not math.isfinite(loss_value) or bad:
            raise TrainingDivergedError(step, "the loss" if not bad else f"the metric(s) {', '.join(bad)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip if s.grad_clip > 0 else math.inf))
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(step, "the gradient")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
                    p_ema.lerp_(p, 1.0 - s.ema_decay)
                for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
                    b_ema.copy_(b)
        self.step = step
        return {"step": step, **{k: float(v) for k, v in metrics.items()}, "lr": lr, "grad_norm": grad_norm}

    def run(self) -> FitResult:
        """Train to ``settings.steps`` (from the current step); returns a :class:`FitResult`.

        With a run directory, SIGINT and SIGTERM stop the run after the current update with a
        checkpoint at that step (:class:`~ebmlab.training.interrupts.TrainingInterrupted`).
        """
        s, main = self.settings, self.sharding.is_main
        writing = self.run_dir is not None and main  # rank 0 writes every file
        metrics_path = None if self.run_dir is None else self.run_dir / METRICS_NAME
        try:
            if writing:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                if self.lock is None:
                    self.lock = RunLock(self.run_dir).acquire()
                if self.step == 0:
                    metrics_path.write_text("", encoding="utf-8")
            start = time.perf_counter() - self.elapsed
            for callback in self.callbacks:
                callback.on_fit_start(self)
            with (metrics_path.open("a", encoding="utf-8") if writing else contextlib.nullcontext()) as log, \
                    deferred_signals(self.run_dir is not None) as signals:
                while self.step < s.steps and not self._stop_requested(signals):
                    record = self.update()
                    self.elapsed = time.perf_counter() - start
                    record["time"] = round(self.elapsed, 4)
                    for callback in self.callbacks:
                        callback.on_record(self, record)
                    if self.step % self.log_every == 0 or self.step == s.steps:
                        self.history.append(record)
                        if log is not None:
                            log.write(json.dumps(record) + "\n")
                            log.flush()
                    if self.step % s.checkpoint_every == 0 or self.step == s.steps:
                        self.save()
                    for callback in self.callbacks:
                        callback.on_step(self, record)
                if signals.received or self._stop_requested(signals):
                    if self.saved_step != self.step:
                        self.save()
                    raise TrainingInterrupted(signals.signum or 15, self.step, self.run_dir)
            if self.run_dir is not None and self.saved_step != self.step:
                self.save()  # steps = 0: still leave a loadable run
            D.barrier()  # every file is written before any rank reads one
            for callback in self.callbacks:
                callback.on_fit_end(self)
        finally:
            if self.lock is not None:
                self.lock.release()
                self.lock = None
        return FitResult(model=self.trained_model.eval(), history=list(self.history), objective=self.objective,
                         step=self.step, wall_time=time.perf_counter() - start, run_dir=self.run_dir)

    def _stop_requested(self, signals) -> bool:
        """Whether a signal asks to stop (on any rank: every rank stops at the same step)."""
        if not self.sharding.is_distributed:
            return signals.received
        return D.all_reduce_mean({"stop": 1.0 if signals.received else 0.0})["stop"] > 0


def derive_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of a run (data, split, model, batches, objective...)."""
    value = int(seed) & 0xFFFFFFFF
    for ch in stream:
        value = (value * 1_000_003 + ord(ch)) % (2**61 - 1)
    return value


__all__ = ["BatchStream", "Callback", "FitResult", "OptimSettings", "TrainLoop", "TrainingDivergedError",
           "as_callbacks", "derive_seed"]
