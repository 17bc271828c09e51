"""The training loop: ``train(config) -> RunResult``.

One loop serves every objective (:mod:`ebmlab.objectives`): each update draws a batch,
asks the objective for ``loss, metrics``, steps the optimiser, and appends the metrics to
``RUN_DIR/metrics.jsonl``. Every ``checkpoint_every`` updates (and at the end) the whole state
— model, optimiser, objective state (replay buffer, persistent chains, ``log Z``), EMA
weights, the batch order and every generator's state — is written atomically to
``RUN_DIR/checkpoint.pt`` (:mod:`ebmlab.training.checkpoint`).

Reproducibility: every random draw after set-up comes from two generators saved in the
checkpoint (``batches``: the epoch permutations; ``objective``: sampler noise, buffer restarts,
projections, noise draws); data, split and initial weights come from seeds derived from
``config.seed``. So on one device a run stopped at step k and resumed (``resume=True``)
reproduces the uninterrupted run bit for bit; ``metrics.jsonl`` is cut back to the checkpoint's
step on resume.

Divergence guard: a NaN or infinite loss, metric (energies) or gradient norm stops the run
with :class:`TrainingDivergedError` naming the step, before the optimiser applies it; a state
with non-finite weights is never written, so the last checkpoint stays the last good one.

Data parallel: under ``torchrun`` the trainer asks a
:class:`~ebmlab.training.sharding.TrainSharding` where ranks differ (batch shards, per-rank
objective generators and state, DDP-averaged gradients, metrics averaged over ranks); rank 0
alone writes files. With one process every such call is the identity.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from ebmlab import distributed as D
from ebmlab.training.checkpoint import CHECKPOINT_NAME, all_finite, load_checkpoint, save_checkpoint, to_device
from ebmlab.training.config import TrainConfig, learning_rate, resolve_device
from ebmlab.data import Standardizer
from ebmlab.training.sharding import TrainSharding
from ebmlab.training.models import build_model
from ebmlab.objectives import NoiseSource, Objective, get_objective_class, make_objective
from ebmlab.training.runs import (
    CONFIG_NAME, METRICS_NAME, chain_snapshots, default_run_dir, derive_seed, energy_on_raw_data, load_run_data,
    model_samples, read_metrics, save_pictures, split_run_data, truncate_metrics,
)
from ebmlab.samplers import Kernel, make_kernel

#: Settings that a resumed run must share with its checkpoint (they shape the saved state).
STRUCTURAL = ("data", "num_samples", "standardize", "heldout_fraction", "model", "model_kwargs", "objective",
              "objective_kwargs", "optimizer", "seed")
#: Metrics shown on the progress bar, when the objective reports them.
KEY_FIGURES = ("loss", "cd_gap", "accept", "log_z", "accuracy")

Callback = Callable[[int, dict, "Trainer"], None]


class TrainingDivergedError(RuntimeError):
    """The loss, an energy or a gradient became NaN or infinite at ``step``."""

    def __init__(self, step: int, what: str):
        self.step, self.what = step, what
        super().__init__(f"training diverged at step {step}: {what} is NaN or infinite; the last checkpoint "
                         f"is kept; lower the learning rate or the sampler's step size, or set grad_clip")


@dataclass
class RunResult:
    """What :func:`train` returns.

    ``model`` is the network over standardised data (EMA weights when ``ema_decay > 0``);
    ``energy`` the same over the original data space (see :mod:`ebmlab.training.runs`).
    """

    run_dir: Path
    config: TrainConfig
    step: int
    model: nn.Module
    energy: nn.Module
    objective: Objective
    standardizer: Standardizer | None
    metrics: list[dict[str, Any]]
    wall_time: float
    pictures: list[Path] = field(default_factory=list)


class BatchStream:
    """Batches without replacement within an epoch; a new permutation when one runs out.

    With ``batch_size >= n`` every batch is the full data (no randomness).
    """

    def __init__(self, n: int, batch_size: int, generator: torch.Generator, device: torch.device):
        self.n, self.batch_size, self.generator, self.device = n, min(batch_size, n), generator, device
        self.perm = torch.zeros(0, dtype=torch.long, device=device)
        self.cursor = 0

    def next(self) -> torch.Tensor:
        if self.batch_size == self.n:
            return torch.arange(self.n, device=self.device)
        if self.cursor + self.batch_size > self.perm.numel():
            self.perm = torch.randperm(self.n, generator=self.generator, device=self.device)
            self.cursor = 0
        index = self.perm[self.cursor:self.cursor + self.batch_size]
        self.cursor += self.batch_size
        return index

    def state_dict(self) -> dict[str, Any]:
        return {"perm": self.perm, "cursor": self.cursor}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.perm, self.cursor = state["perm"].to(self.device), int(state["cursor"])


class Trainer:
    """Holds a run's state; :meth:`run` trains to ``config.steps`` and returns a :class:`RunResult`.

    ``callback(step, record, trainer)`` is called after every update (after any checkpoint);
    an exception raised there (e.g. ``KeyboardInterrupt``) stops the run with the last
    checkpoint intact.
    """

    def __init__(self, config: TrainConfig | dict, resume: bool = False, callback: Callback | None = None):
        config = TrainConfig.from_dict(config) if isinstance(config, dict) else copy.deepcopy(config).validate()
        self.callback = callback
        self.sharding = TrainSharding.current()
        self.device = D.local_device(resolve_device(config.device))
        checkpoint = None
        if resume:
            if not config.out:
                raise ValueError("resume: the config names no run directory (out)")
            checkpoint = load_checkpoint(Path(config.out) / CHECKPOINT_NAME)
            _check_resumable(TrainConfig.from_dict(checkpoint["config"]), config)
        else:
            if not config.out:
                config.out = D.broadcast_object(str(default_run_dir(config)))
            if (Path(config.out) / CHECKPOINT_NAME).exists():
                raise ValueError(f"{config.out!r} already holds a run (checkpoint.pt); resume it or choose another out")
        self.config = config
        self.run_dir = Path(config.out)
        self._setup_data()
        self._build()
        self.step = 0
        self.elapsed = 0.0
        self.saved_step: int | None = None
        if checkpoint is not None:
            self._restore(checkpoint)

    # ------------------------------------------------------------------ set-up

    def _setup_data(self) -> None:
        cfg = self.config
        self.dataset = load_run_data(cfg)
        x = self.dataset.x
        if x.shape[0] < 2:
            raise ValueError(f"{self.dataset.name}: need at least 2 data points, got {x.shape[0]}")
        self.train_index, self.heldout_index = split_run_data(cfg, x.shape[0])
        x_train = x[self.train_index]
        self.sharding.check_batch(cfg.batch_size, x_train.shape[0])
        self.support = self.dataset.support
        self.standardizer = Standardizer.fit(x_train) if cfg.standardize and self.support == "real" else None
        if self.standardizer is not None:
            x_train = self.standardizer.transform(x_train)
        self.x_train = x_train.to(self.device)

    def _build(self) -> None:
        cfg, device = self.config, self.device
        event_shape = tuple(self.dataset.event_shape)
        objective_cls = get_objective_class(cfg.objective)
        # An objective may need its own model family (ncsn: mlp -> ncsn_mlp, conv -> ncsn_conv).
        model_name = getattr(objective_cls, "model_aliases", {}).get(cfg.model, cfg.model)
        with torch.random.fork_rng(devices=[]):  # initial weights from the run's seed, global RNG untouched
            torch.manual_seed(derive_seed(cfg.seed, "model"))
            self.model = build_model(model_name, event_shape, **cfg.model_kwargs).to(device)
        self.model_info = {"name": model_name, "kwargs": copy.deepcopy(cfg.model_kwargs), "event_shape": list(event_shape)}
        model_support = getattr(self.model, "support", "real")  # discrete models (RBMs) declare theirs
        if model_support != "real" and model_support != self.support:
            hint = "; use binarised data (digits-binary, mnist-binary:DIR, or a file of 0/1 values)"
            raise ValueError(f"model {cfg.model!r} has {model_support} units but {self.dataset.name} is {self.support} "
                             f"data" + (hint if model_support == "binary" else ""))
        self.kernel = build_kernel(cfg)
        supports = objective_cls.supports
        if self.support not in supports:
            raise ValueError(f"objective {cfg.objective!r} needs {' or '.join(supports)} data; "
                             f"{self.dataset.name} is {self.support}")
        options = dict(cfg.objective_kwargs)
        if objective_cls.uses_sampler:
            if (self.support == "real") != (self.kernel.support == "real"):
                raise ValueError(f"sampler {cfg.sampler!r} works on {self.kernel.support} states but "
                                 f"{self.dataset.name} is {self.support} data")
            options.setdefault("kernel", self.kernel)
            options.setdefault("num_steps", cfg.sampler_steps)
        self.objective = make_objective(cfg.objective, **self.sharding.objective_options(objective_cls, options))
        self.batch_generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "batches"))
        self.objective_generator = torch.Generator(device=device).manual_seed(self._objective_seed())
        self.objective.setup(self.model, self.x_train, self.objective_generator, support=self.support)
        self.loss_function = self.sharding.loss_function(self.model, self.objective)
        self.batches = BatchStream(self.x_train.shape[0], cfg.batch_size, self.batch_generator, device)
        groups = [{"params": [p for p in self.model.parameters() if p.requires_grad], "weight_decay": cfg.weight_decay}]
        extra = list(self.objective.parameters())
        if extra:
            groups.append({"params": extra, "weight_decay": 0.0})
        if cfg.optimizer == "adam":
            self.optimizer = torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
        else:
            self.optimizer = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)
        self.params = [p for group in groups for p in group["params"]]
        self.ema = None
        if cfg.ema_decay > 0:
            self.ema = copy.deepcopy(self.model).requires_grad_(False)

    def _restore(self, state: dict[str, Any]) -> None:
        data = state["data"]
        if not (torch.equal(data["train_index"], self.train_index) and torch.equal(data["heldout_index"], self.heldout_index)):
            raise ValueError(f"resume: the data split of {self.config.data!r} differs from the checkpoint's")
        if self.standardizer is not None and state.get("standardizer") is not None:
            saved = Standardizer.from_state_dict(state["standardizer"])
            if not (torch.equal(saved.mean, self.standardizer.mean) and torch.equal(saved.std, self.standardizer.std)):
                raise ValueError(f"resume: the data {self.config.data!r} differ from the checkpoint's")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        layout = state.get("distributed")
        self.objective.load_state_dict(to_device(self.sharding.local_objective(state["objective"], layout), self.device))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
        self.step, self.elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        self.saved_step = self.step
        self.batch_generator.set_state(state["rng"]["batches"])
        generator_state = self.sharding.local_generator_state(layout, state["rng"]["objective"])
        if generator_state is None:  # another world size: fresh per-rank streams, from the seed and the step
            self.objective_generator.manual_seed(self._objective_seed(self.step))
        else:
            self.objective_generator.set_state(generator_state)
        self.batches.load_state_dict(state["batches"])
        if self.sharding.is_main:
            truncate_metrics(self.run_dir / METRICS_NAME, self.step)

    def _objective_seed(self, step: int = 0) -> int:
        """This rank's objective-generator seed (``step`` > 0: re-derived after a world-size change)."""
        stream = "objective" if step == 0 else f"objective@{step}"
        return self.sharding.objective_seed(derive_seed(self.config.seed, stream))

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        """The checkpoint's content (a collective in a process group: gathers every rank's objective state)."""
        objective, layout = self.sharding.gather_objective(self.objective.state_dict(),
                                                           self.objective_generator.get_state())
        state = {
            "step": self.step,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "model_info": self.model_info,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.config.lr_schedule, "step": self.step},
            "objective": objective,
            "rng": {"batches": self.batch_generator.get_state(), "objective": self.objective_generator.get_state()},
            "batches": self.batches.state_dict(),
            "data": {"name": self.dataset.name, "event_shape": list(self.dataset.event_shape), "support": self.support,
                     "train_index": self.train_index, "heldout_index": self.heldout_index},
            "standardizer": None if self.standardizer is None else self.standardizer.state_dict(),
            "elapsed": self.elapsed,
        }
        if layout is not None:
            state["distributed"] = layout
        return state

    def save(self) -> None:
        """Write the checkpoint atomically (rank 0); refuses (diverged) a state with non-finite values.

        A collective in a process group: every rank calls it at the same steps.
        """
        state = self.state_dict()
        local = {"model": self.model.state_dict(), "ema": state["ema"], "optimizer": state["optimizer"],
                 "objective": self.objective.state_dict()}
        flags = D.all_reduce_mean({part: 0.0 if all_finite(value) else 1.0 for part, value in local.items()})
        bad = [part for part, flag in flags.items() if flag > 0]
        if bad:
            raise TrainingDivergedError(self.step, f"the {' and '.join(bad)} state")
        if self.sharding.is_main:
            save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)
        self.saved_step = self.step

    @property
    def trained_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.model

    # ------------------------------------------------------------------ the loop

    def update(self) -> dict[str, Any]:
        """One optimisation step; returns the step's metrics record."""
        cfg, step = self.config, self.step + 1
        lr = learning_rate(cfg, step)
        batch = self.x_train[self.sharding.shard_batch(self.batches.next())]
        self.model.train()
        loss, metrics = self.loss_function(batch, self.objective_generator)
        metrics, loss_value = self.sharding.reduce_metrics(metrics, loss)  # means over ranks
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if not math.isfinite(loss_value) or bad:
            raise TrainingDivergedError(step, "the loss" if not bad else f"the metric(s) {', '.join(bad)}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        max_norm = cfg.grad_clip if cfg.grad_clip > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.params, max_norm))
        if not math.isfinite(grad_norm):
            raise TrainingDivergedError(step, "the gradient")
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.optimizer.step()
        if self.ema is not None:
            with torch.no_grad():
                for p_ema, p in zip(self.ema.parameters(), self.model.parameters()):
                    p_ema.lerp_(p, 1.0 - cfg.ema_decay)
                for b_ema, b in zip(self.ema.buffers(), self.model.buffers()):
                    b_ema.copy_(b)
        self.step = step
        return {"step": step, **{k: float(v) for k, v in metrics.items()}, "lr": lr, "grad_norm": grad_norm}

    def run(self) -> RunResult:
        cfg, main = self.config, self.sharding.is_main
        metrics_path = self.run_dir / METRICS_NAME
        if main:  # rank 0 writes every file
            self.run_dir.mkdir(parents=True, exist_ok=True)
            cfg.save(self.run_dir / CONFIG_NAME)
            if self.step == 0:
                metrics_path.write_text("", encoding="utf-8")
        bar = self._progress_bar() if main else None
        start = time.perf_counter() - self.elapsed
        try:
            with (metrics_path.open("a", encoding="utf-8") if main else contextlib.nullcontext()) as log:
                while self.step < cfg.steps:
                    record = self.update()
                    self.elapsed = time.perf_counter() - start
                    record["time"] = round(self.elapsed, 4)
                    if log is not None:
                        log.write(json.dumps(record) + "\n")
                        log.flush()
                    if self.step % cfg.checkpoint_every == 0 or self.step == cfg.steps:
                        self.save()
                    if bar is not None:
                        bar.update(1)
                        if self.step % 10 == 0 or self.step == cfg.steps:
                            bar.set_postfix({k: f"{record[k]:.4g}" for k in KEY_FIGURES if k in record}, refresh=False)
                    if self.callback is not None:
                        self.callback(self.step, record, self)
        finally:
            if bar is not None:
                bar.close()
        if self.saved_step != self.step:
            self.save()  # steps = 0: still leave a loadable run
        D.barrier()  # every file is written before any rank reads one
        model = self.trained_model.eval()
        standardizer = None if self.standardizer is None else self.standardizer.to(self.device)
        energy = energy_on_raw_data(model, standardizer, self.dataset.event_shape, self.support)
        metrics = read_metrics(self.run_dir)
        pictures: list[Path] = []
        if cfg.plots and main:
            pictures = self.pictures(model, energy, metrics)
        return RunResult(run_dir=self.run_dir, config=cfg, step=self.step, model=model, energy=energy,
                         objective=self.objective, standardizer=self.standardizer, metrics=metrics,
                         wall_time=time.perf_counter() - start, pictures=pictures)

    def pictures(self, model: nn.Module, energy: nn.Module, metrics: list[dict[str, Any]]) -> list[Path]:
        """Draw model samples with the run's sampler and write the run's pictures."""
        cfg = self.config
        image_like = len(self.dataset.event_shape) > 1
        num = min(cfg.plot_samples, 64) if image_like else cfg.plot_samples
        generator = torch.Generator(device=self.device).manual_seed(derive_seed(cfg.seed, "pictures"))
        samples = model_samples(model, self.objective, self.kernel, self.x_train, num, cfg.plot_sampler_steps,
                                generator, self.support)
        chains = None
        if image_like:  # chains.png: 8 chains over time, the objective's own or the run's kernel from noise
            chains = self.objective.model_chains(model, 8, generator)
            if chains is None and cfg.plot_sampler_steps > 0:
                x0 = NoiseSource("uniform", support=self.support).fit(self.x_train).sample(8, generator)
                chains = chain_snapshots(model, self.kernel, x0, cfg.plot_sampler_steps, generator)
        return save_pictures(self.run_dir, model, energy, self.standardizer, self.x_train, samples, metrics, chains)

    def _progress_bar(self):
        import sys

        show = self.config.progress == "on" or (self.config.progress == "auto" and sys.stderr.isatty())
        if not show or self.step >= self.config.steps:
            return None
        from tqdm.auto import tqdm

        return tqdm(total=self.config.steps, initial=self.step, desc=f"train {self.config.objective}",
                    unit="step", dynamic_ncols=True)


def build_kernel(config: TrainConfig) -> Kernel:
    """The run's sampler kernel: ``make_kernel(sampler, step_size=, noise_scale=, **sampler_kwargs)``."""
    options = {"step_size": config.step_size, "noise_scale": config.noise_scale, **config.sampler_kwargs}
    try:
        return make_kernel(config.sampler, **options)
    except TypeError as err:
        raise ValueError(f"sampler {config.sampler!r}: bad options {options}: {err}") from None


def _check_resumable(saved: TrainConfig, config: TrainConfig) -> None:
    old, new = saved.to_dict(), config.to_dict()
    changed = [k for k in STRUCTURAL if old[k] != new[k]]
    if changed:
        detail = "; ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ValueError(f"resume: the run was trained with other settings ({detail}); set "
                         f"{', '.join(changed)} back to the values in {config.out}/config.toml, or train into "
                         f"another out directory")


def train(config: TrainConfig | dict, resume: bool = False, callback: Callback | None = None) -> RunResult:
    """Train an energy as ``config`` says; with ``resume=True`` continue the run in ``config.out``.

    Returns a :class:`RunResult`. Raises ``ValueError`` for bad settings or data,
    :class:`TrainingDivergedError` when the loss, an energy or a gradient turns NaN or infinite.
    """
    return Trainer(config, resume=resume, callback=callback).run()


__all__ = ["BatchStream", "RunResult", "Trainer", "TrainingDivergedError", "build_kernel", "derive_seed",
           "learning_rate", "load_run_data", "train"]
