"""The training loop: ``train(config) -> RunResult``.

One loop serves every objective (:mod:`ebmlab.objectives`): each update draws a batch,
asks the objective for ``loss, metrics``, steps the optimiser, and appends the metrics to
``RUN_DIR/metrics.jsonl``. Every ``checkpoint_every`` updates (and at the end) the whole state
— model, optimiser, objective state (replay buffer, persistent chains, ``log Z``), EMA
weights, the batch order and every generator's state — is written atomically to
``RUN_DIR/checkpoint.pt`` (:mod:`ebmlab.checkpoint`).

Reproducibility: every random draw after set-up comes from two generators saved in the
checkpoint (``batches``: the epoch permutations; ``objective``: sampler noise, buffer restarts,
projections, noise draws); data, split and initial weights come from seeds derived from
``config.seed``. So on one device a run stopped at step k and resumed (``resume=True``)
reproduces the uninterrupted run bit for bit; ``metrics.jsonl`` is cut back to the checkpoint's
step on resume.

Divergence guard: a NaN or infinite loss, metric (energies) or gradient norm stops the run
with :class:`TrainingDivergedError` naming the step, before the optimiser applies it; a state
with non-finite weights is never written, so the last checkpoint stays the last good one.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .checkpoint import CHECKPOINT_NAME, all_finite, load_checkpoint, save_checkpoint, to_device
from .config import TrainConfig, learning_rate
from .data import Standardizer
from .models import build_model
from .objectives import Objective, get_objective_class, make_objective
from .runs import (
    CONFIG_NAME, METRICS_NAME, derive_seed, energy_on_raw_data, load_run_data, model_samples, read_metrics,
    save_pictures, split_run_data,
)
from .samplers import Kernel, make_kernel

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
    ``energy`` the same over the original data space (see :mod:`ebmlab.runs`).
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


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config: device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config: device {name!r} was requested but no CUDA device is available")
    return device


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<data>-<objective>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if taken)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(config.data).stem) or "data"
    base = Path("runs") / f"{stem}-{config.objective}-{datetime.now():%Y%m%d-%H%M%S}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


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
        self.device = resolve_device(config.device)
        checkpoint = None
        if resume:
            if not config.out:
                raise ValueError("resume: the config names no run directory (out)")
            checkpoint = load_checkpoint(Path(config.out) / CHECKPOINT_NAME)
            _check_resumable(TrainConfig.from_dict(checkpoint["config"]), config)
        else:
            if not config.out:
                config.out = str(default_run_dir(config))
            if (Path(config.out) / CHECKPOINT_NAME).exists():
                raise ValueError(f"{config.out!r} already holds a run (checkpoint.pt); resume it or choose another out")
        self.config = config
        self.run_dir = Path(config.out)
        self._setup_data()
        self._build()
        self.step = 0
        self.elapsed = 0.0
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
        self.support = self.dataset.support
        self.standardizer = Standardizer.fit(x_train) if cfg.standardize and self.support == "real" else None
        if self.standardizer is not None:
            x_train = self.standardizer.transform(x_train)
        self.x_train = x_train.to(self.device)

    def _build(self) -> None:
        cfg, device = self.config, self.device
        event_shape = tuple(self.dataset.event_shape)
        with torch.random.fork_rng(devices=[]):  # initial weights from the run's seed, global RNG untouched
            torch.manual_seed(derive_seed(cfg.seed, "model"))
            self.model = build_model(cfg.model, event_shape, **cfg.model_kwargs).to(device)
        self.model_info = {"name": cfg.model, "kwargs": copy.deepcopy(cfg.model_kwargs), "event_shape": list(event_shape)}
        self.kernel = build_kernel(cfg)
        objective_cls = get_objective_class(cfg.objective)
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
        self.objective = make_objective(cfg.objective, **options)
        self.batch_generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "batches"))
        self.objective_generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "objective"))
        self.objective.setup(self.model, self.x_train, self.objective_generator, support=self.support)
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
        self.objective.load_state_dict(to_device(state["objective"], self.device))
        if self.ema is not None:
            self.ema.load_state_dict(state["ema"] if state.get("ema") is not None else state["model"])
        self.batch_generator.set_state(state["rng"]["batches"])
        self.objective_generator.set_state(state["rng"]["objective"])
        self.batches.load_state_dict(state["batches"])
        self.step, self.elapsed = int(state["step"]), float(state.get("elapsed", 0.0))
        _truncate_metrics(self.run_dir / METRICS_NAME, self.step)

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict[str, Any]:
        return {
            "step": self.step,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "ema": None if self.ema is None else self.ema.state_dict(),
            "model_info": self.model_info,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": {"name": self.config.lr_schedule, "step": self.step},
            "objective": self.objective.state_dict(),
            "rng": {"batches": self.batch_generator.get_state(), "objective": self.objective_generator.get_state()},
            "batches": self.batches.state_dict(),
            "data": {"name": self.dataset.name, "event_shape": list(self.dataset.event_shape), "support": self.support,
                     "train_index": self.train_index, "heldout_index": self.heldout_index},
            "standardizer": None if self.standardizer is None else self.standardizer.state_dict(),
            "elapsed": self.elapsed,
        }

    def save(self) -> Path:
        """Write the checkpoint atomically; refuses (diverged) a state with non-finite values."""
        state = self.state_dict()
        for part in ("model", "ema", "optimizer", "objective"):
            if not all_finite(state[part]):
                raise TrainingDivergedError(self.step, f"the {part} state")
        return save_checkpoint(self.run_dir / CHECKPOINT_NAME, state)

    @property
    def trained_model(self) -> nn.Module:
        return self.ema if self.ema is not None else self.model

    # ------------------------------------------------------------------ the loop

    def update(self) -> dict[str, Any]:
        """One optimisation step; returns the step's metrics record."""
        cfg, step = self.config, self.step + 1
        lr = learning_rate(cfg, step)
        batch = self.x_train[self.batches.next()]
        self.model.train()
        loss, metrics = self.objective.loss(self.model, batch, self.objective_generator)
        bad = [k for k, v in metrics.items() if not math.isfinite(v)]
        if not bool(torch.isfinite(loss)) or bad:
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
        cfg = self.config
        self.run_dir.mkdir(parents=True, exist_ok=True)
        cfg.save(self.run_dir / CONFIG_NAME)
        metrics_path = self.run_dir / METRICS_NAME
        if self.step == 0:
            metrics_path.write_text("", encoding="utf-8")
        bar = self._progress_bar()
        start = time.perf_counter() - self.elapsed
        try:
            with metrics_path.open("a", encoding="utf-8") as log:
                while self.step < cfg.steps:
                    record = self.update()
                    self.elapsed = time.perf_counter() - start
                    record["time"] = round(self.elapsed, 4)
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
        if not (self.run_dir / CHECKPOINT_NAME).exists():
            self.save()  # steps = 0: still leave a loadable run
        model = self.trained_model.eval()
        standardizer = None if self.standardizer is None else self.standardizer.to(self.device)
        energy = energy_on_raw_data(model, standardizer, self.dataset.event_shape, self.support)
        metrics = read_metrics(self.run_dir)
        pictures: list[Path] = []
        if cfg.plots:
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
        return save_pictures(self.run_dir, model, energy, self.standardizer, self.x_train, samples, metrics)

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
        raise ValueError(f"resume: the run was trained with other settings ({detail})")


def _truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (the checkpoint's), dropping any later ones."""
    if not path.exists():
        return
    kept = [json.dumps(r) for r in read_metrics(path.parent) if int(r.get("step", 0)) <= step]
    text = "".join(line + "\n" for line in kept)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def train(config: TrainConfig | dict, resume: bool = False, callback: Callback | None = None) -> RunResult:
    """Train an energy as ``config`` says; with ``resume=True`` continue the run in ``config.out``.

    Returns a :class:`RunResult`. Raises ``ValueError`` for bad settings or data,
    :class:`TrainingDivergedError` when the loss, an energy or a gradient turns NaN or infinite.
    """
    return Trainer(config, resume=resume, callback=callback).run()


__all__ = ["BatchStream", "RunResult", "Trainer", "TrainingDivergedError", "build_kernel", "derive_seed",
           "learning_rate", "load_run_data", "train"]
