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
atomically every ``checkpoint_every`` updates and at the end, one JSON record every
``log_every`` updates goes to ``metrics.jsonl`` (each metric averaged over the updates since
the previous record: :mod:`ebmlab.training.history`; flushed before every checkpoint and at
least once a second), and ``resume=True`` continues a stopped run bit for bit on one device.

Per update the loop does only the update: records are built at logged steps and at the steps
callbacks ask for (:attr:`Callback.record_every`), so between them it never returns to
Python bookkeeping. A Bernoulli RBM under CD/PCD with block Gibbs takes the lean path of
:mod:`ebmlab.training.rbm_lean` (closed-form gradient, flat optimiser, many updates per call);
when a setting rules it out, the reason goes once to every callback's ``on_notice``.

Divergence guard: a NaN or infinite loss, metric or gradient norm stops the run with
:class:`TrainingDivergedError` naming the step, before the optimiser applies it (the lean path
checks once per call and replays the call update by update when one failed, to the same
effect); a state with non-finite values is never written, so the last checkpoint stays the
last good one (the error says which step it holds, or that none was written yet).

The loop prints nothing and draws nothing: progress bars, pictures and loggers are callbacks
(:class:`Callback`), passed by the CLI's jobs or by anyone.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ebmlab import distributed as D
from ebmlab.objectives import Objective
from ebmlab.training.batches import BatchStream
from ebmlab.training.callbacks import Callback, as_callbacks, record_interval
from ebmlab.training.checkpoint import CHECKPOINT_NAME, all_finite, remove_stale_temporaries, save_checkpoint, to_device
from ebmlab.training.history import METRICS_NAME, MetricWindow, read_metrics, record_line, truncate_metrics
from ebmlab.training.interrupts import TrainingInterrupted, deferred_signals
from ebmlab.training.lock import RunLock
from ebmlab.training.rbm_lean import fold_rows
from ebmlab.training.schedules import learning_rate_at
from ebmlab.training.settings import FitResult, OptimSettings, TrainingDivergedError, derive_seed
from ebmlab.training.sharding import TrainSharding

#: ``metrics.jsonl`` is flushed before every checkpoint and at least this often (seconds).
FLUSH_SECONDS = 1.0


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
        # one CPU dtype for every parameter: the gradient norm needs no per-update grouping
        self._cpu_norm = bool(self.params) and all(p.device.type == "cpu" and p.dtype == self.params[0].dtype
                                                   for p in self.params)
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
        self.window = MetricWindow()  # the metrics since the last logged step
        self._group_lr: float | None = None
        self._flushed_at = 0.0  # run time of the last flush of metrics.jsonl
        if self.ema is not None:
            self._ema_params, self._model_params = list(self.ema.parameters()), list(model.parameters())
        from ebmlab.training.rbm_lean import lean_rbm_updates

        #: the lean RBM path (closed-form CD/PCD, flat optimiser) when it applies, else None
        self.lean, reason = lean_rbm_updates(self)
        #: notes on how the run is trained, passed once to each callback's ``on_notice``
        self.notes: list[str] = [reason] if reason else []

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
            "metrics_window": self.window.state_dict(),
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
        self.window.load_state_dict(state.get("metrics_window"))
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
            raise TrainingDivergedError(self.step, f"the {' and '.join(bad)} state", self.run_dir, self.saved_step)
        if self.sharding.is_main:
            remove_stale_temporaries(self.run_dir)  # left by a write killed midway; we hold the lock
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        self.saved_step = self.step

    # ------------------------------------------------------------------ the loop

    def learning_rate(self, step: int) -> float:
        s = self.settings
        return learning_rate_at(step, s.lr, s.lr_schedule, s.warmup_steps, s.lr_decay_steps or s.steps)

    def _step(self) -> tuple[dict[str, float], float]:
        """One optimisation step of the general path; returns ``(metrics with grad_norm, lr)``."""
        s, step = self.settings, self.step + 1
        lr = self.learning_rate(step)
        if self.labels is None and not self.sharding.is_distributed:
            batch = self.batches.next_rows(self.x_train)  # the same rows as x_train[batches.next()]
        else:
            index = self.sharding.shard_batch(self.batches.next())
            batch = self.x_train[index] if self.labels is None else (self.x_train[index], self.labels[index])
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
            what = "the loss" if not bad else f"the metric(s) {', '.join(bad)}"
            raise TrainingDivergedError(step, what, self.run_dir, self.saved_step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grads = [p.grad for p in self.params if p.grad is not None]
        if s.grad_clip > 0:
            grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, s.grad_clip))
        elif self._cpu_norm and grads:
            grad_norm = _cpu_total_norm(grads)
        else:
            grad_norm = _total_norm(grads)
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(step, "the gradient", self.run_dir, self.saved_step)
        if lr != self._group_lr:
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self._group_lr = lr
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                torch._foreach_lerp_(self._ema_params, self._model_params, 1.0 - s.ema_decay)
                for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
                    b_ema.copy_(b)
        self.step = step
        return {**{k: float(v) for k, v in metrics.items()}, "grad_norm": grad_norm}, lr

    def update(self) -> dict[str, Any]:
        """One optimisation step (general path); returns the step's metrics record."""
        self.model.train()
        metrics, lr = self._step()
        grad_norm = metrics.pop("grad_norm")
        return {"step": self.step, **metrics, "lr": lr, "grad_norm": grad_norm}

    def _chunk_length(self, intervals: list[int]) -> int:
        """Updates until the next step that needs the loop: a checkpoint, a callback's record, the end."""
        s, step = self.settings, self.step
        n = min(s.steps - step, s.checkpoint_every - step % s.checkpoint_every)
        for k in intervals:
            if k:
                n = min(n, k - step % k)
        return n

    def _after_update(self, metrics: dict[str, float], lr: float, elapsed: float, log, callbacks: list) -> None:
        """Fold one update into the window; at logged, callback and checkpoint steps do their work."""
        s, step = self.settings, self.step
        self.elapsed = elapsed
        logged = step % self.log_every == 0 or step == s.steps
        due = [c for c, k in callbacks if k and (step % k == 0 or step == s.steps)] if callbacks else callbacks
        if logged and not self.window.sums:
            means = metrics  # a window of one update: its own values
        else:
            self.window.add(metrics)
            means = self.window.mean() if logged or due else None
        record = None
        if logged or due:
            grad_norm = means.pop("grad_norm", 0.0)
            record = {"step": step, **means, "lr": lr, "grad_norm": grad_norm, "time": round(elapsed, 4)}
            for callback in due:
                callback.on_record(self, record)
        if logged:
            self.history.append(record)
            self.window.reset()
            if log is not None:
                log.write(record_line(record) + "\n")
                if elapsed - self._flushed_at >= FLUSH_SECONDS:  # readable while the run goes on
                    log.flush()
                    self._flushed_at = elapsed
        if step % s.checkpoint_every == 0 or step == s.steps:
            if log is not None:
                log.flush()  # the log reaches the checkpoint's step before the checkpoint does
            self.save()
        for callback in due:
            callback.on_step(self, record)

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
            for note in self.notes:
                for callback in self.callbacks:
                    callback.on_notice(self, note)
            callbacks = [(c, record_interval(c)) for c in self.callbacks]
            intervals = sorted({k for _, k in callbacks if k})
            with (metrics_path.open("a", encoding="utf-8") if writing else contextlib.nullcontext()) as log, \
                    deferred_signals(self.run_dir is not None) as signals:
                while self.step < s.steps and not self._stop_requested(signals):
                    n = self._chunk_length(intervals)
                    if self.lean is not None:
                        rows, lrs, times, bad = self.lean.run(self.step + 1, n, self.learning_rate,
                                                              lambda: signals.received)
                        fold_rows(self, rows, lrs, times, start, log, callbacks)
                        if bad is not None:
                            raise TrainingDivergedError(*bad, self.run_dir, self.saved_step)
                        continue
                    self.model.train()
                    for i in range(n):
                        if i and self._stop_requested(signals):
                            break
                        metrics, lr = self._step()
                        self._after_update(metrics, lr, time.perf_counter() - start, log, callbacks)
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
            if self.lean is not None:
                self.lean.release()
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


def _cpu_total_norm(grads: list[torch.Tensor]) -> float:
    """``‖(g_1, ..., g_n)‖₂`` from the per-tensor norms of CPU tensors of one dtype, read as floats."""
    return math.sqrt(math.fsum(float(n) ** 2 for n in torch._foreach_norm(grads)))


def _total_norm(grads: list[torch.Tensor]) -> float:
    """``‖(g_1, ..., g_n)‖₂`` of the gradients; one fused per-tensor norm when they share a device
    and dtype (``torch.nn.utils.get_total_norm`` groups them in Python first, a cost per update)."""
    if not grads:
        return 0.0
    first = grads[0]
    if all(g.device == first.device and g.dtype == first.dtype for g in grads):
        if first.device.type == "cpu":  # per-tensor norms read as floats: two fewer ops an update
            return _cpu_total_norm(grads)
        return float(torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads))))
    return float(torch.nn.utils.get_total_norm(grads))


__all__ = ["BatchStream", "Callback", "FitResult", "OptimSettings", "TrainLoop", "TrainingDivergedError",
           "as_callbacks", "derive_seed"]
