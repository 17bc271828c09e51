"""A config-driven run: ``train(config, out=RUN_DIR) -> RunResult``, a thin builder over the loop.

:class:`Trainer` turns a :class:`~ebmlab.training.config.TrainConfig` into the pieces of a
:class:`~ebmlab.training.loop.TrainLoop` — the data set and its train/held-out split, the
standardisation ``z = (x - μ)/s`` fitted on the training split, the model (a registered name or
an import spec), the sampler kernel and the objective — then runs the loop. Data, split and
initial weights come from seeds derived from ``config.seed``; the loop's two generators too, so
a run stopped at step k and resumed (``resume=True``) reproduces the uninterrupted run bit for
bit on one device. The checkpoint also holds the config, the model's description and the data
split, so :func:`ebmlab.load` rebuilds the trained energy over the original data space.

Under ``torchrun`` the trainer asks a :class:`~ebmlab.training.sharding.TrainSharding` where
ranks differ; rank 0 alone writes files. What the trainer needs to know of an objective it reads
from the objective's self-description (``uses_sampler``, ``supports``, ``model_aliases``,
``sharded_options``...), never from its name.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import torch
from torch import nn

from ebmlab import distributed as D
from ebmlab.data import Standardizer
from ebmlab.objectives import Objective, get_objective_class, make_objective
from ebmlab.samplers import Kernel, make_kernel
from ebmlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, remove_stale_temporaries
from ebmlab.training.lock import RunLock, check_run_directory
from ebmlab.training.config import TrainConfig, resolve_device
from ebmlab.training.heldout import HeldoutEvaluation
from ebmlab.training.history import read_metrics
from ebmlab.training.loading import CONFIG_NAME, energy_on_raw_data, load_run_data, split_run_data
from ebmlab.training.loop import (
    Callback, OptimSettings, TrainingDivergedError, TrainLoop, as_callbacks, derive_seed,
)
from ebmlab.training.schedules import learning_rate_at
from ebmlab.training.settings import SettingsError
from ebmlab.training.sharding import TrainSharding
from ebmlab.training.user_models import make_model

#: Settings that a resumed run must share with its checkpoint (they shape the saved state; the
#: optimiser's momentum, betas and weight decay are restored from it, so a new value would be ignored).
STRUCTURAL = ("data", "num_samples", "standardize", "heldout_fraction", "model", "model_kwargs", "objective",
              "objective_kwargs", "optimizer", "momentum", "betas", "weight_decay", "seed")
#: ``sampler = "auto"`` (the default): the kernel for the data's states (block Gibbs for a two-layer
#: model such as an RBM on discrete data, as :func:`ebmlab.objectives.contrastive.default_kernel`).
AUTO_SAMPLER = {"real": "ula", "binary": "gibbs", "categorical": "gibbs"}


@dataclass
class RunResult:
    """What :func:`train` returns.

    ``model`` is the network over standardised data (EMA weights when ``ema_decay > 0``);
    ``energy`` the same over the original data space (see :mod:`ebmlab.training.loading`).
    ``pictures`` lists files that callbacks wrote (see :mod:`ebmlab.jobs.pictures`).
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
    classification: dict[str, Any] = field(default_factory=dict)  # classifier EBMs: held-out figures
    start_step: int = 0  # the step this call began at: a resumed run's checkpoint step
    already_complete: bool = False  # resumed with nothing left to do: nothing was trained or written
    not_applied: tuple[str, ...] = ()  # settings changed on resuming a complete run: no step used them


def build_kernel(config: TrainConfig) -> Kernel:
    """The run's sampler kernel: ``make_kernel(sampler, step_size=, noise_scale=, **sampler_kwargs)``.

    ``step_size`` and ``noise_scale`` go to the kernels that take them; ``sampler_kwargs`` must
    all be options of the kernel (an unknown one is a ``ValueError`` listing the known ones).
    """
    from ebmlab.samplers import get_kernel_class

    fields = getattr(get_kernel_class(config.sampler), "__dataclass_fields__", {})
    options = {k: v for k, v in (("step_size", config.step_size), ("noise_scale", config.noise_scale)) if k in fields}
    options.update(config.sampler_kwargs)
    try:
        return make_kernel(config.sampler, **options)
    except TypeError as err:
        raise ValueError(f"sampler {config.sampler!r}: bad options {options}: {err}") from None


class Trainer:
    """Builds a run from ``config`` (and resumes it from ``out`` with ``resume=True``).

    ``callbacks`` are :class:`~ebmlab.training.loop.Callback` objects or functions
    ``f(step, record, trainer_loop)``; ``callback`` is one more such function.
    """

    def __init__(self, config: TrainConfig | dict, resume: bool = False, callback: Callable | None = None,
                 out: str | Path | None = None, callbacks: Iterable[Callback | Callable] = (),
                 log_every: int | None = None, heldout_every: int | None = None):
        config = TrainConfig.from_dict(config) if isinstance(config, dict) else copy.deepcopy(config).validate()
        self.config = config
        self.sharding = TrainSharding.current()
        self.device = D.local_device(resolve_device(config.device))
        checkpoint, self.start_step, self.saved_config = None, 0, None
        if out is None:
            if resume:
                raise ValueError("resume: name the run directory (out=RUN_DIR)")
            from ebmlab.training.loading import default_run_dir

            out = D.broadcast_object(str(default_run_dir(config)))
        lock = None
        try:
            if self.sharding.is_main:  # one writer per run directory, from here to the end of the run
                if not resume:
                    check_run_directory(out)
                lock = RunLock(out).acquire()
                remove_stale_temporaries(out)
            if resume:
                checkpoint = load_checkpoint(Path(out) / CHECKPOINT_NAME)
                if "config" not in checkpoint:
                    raise ValueError(f"resume: {str(out)!r} was trained by fit(); resume it with fit(..., resume=True)")
                self.saved_config = TrainConfig.from_dict(checkpoint["config"])
                _check_resumable(self.saved_config, config, out)
                self.start_step = int(checkpoint["step"])
                _check_steps(self.saved_config, config, self.start_step, out)
            elif (Path(out) / CHECKPOINT_NAME).exists():
                raise ValueError(f"{str(out)!r} already holds a run (checkpoint.pt); resume it or choose another out")
            self.run_dir = Path(out)
            self._setup_data()
            extra = as_callbacks(callbacks) + as_callbacks(callback)
            self._build(self._heldout_evaluation(heldout_every) + extra, log_every)
            self.loop.lock = lock
            if checkpoint is not None:
                self._restore(checkpoint)
        except BaseException:
            if lock is not None:
                lock.release()  # a refused run leaves the directory to others at once
            raise

    # ------------------------------------------------------------------ set-up

    def _setup_data(self) -> None:
        cfg = self.config
        self.dataset = load_run_data(cfg)
        x = self.dataset.x
        if x.shape[0] < 2:
            raise ValueError(f"{self.dataset.name}: need at least 2 data points, got {x.shape[0]}")
        self.train_index, self.heldout_index = split_run_data(cfg, x.shape[0])
        x_train = x[self.train_index]
        if x_train.shape[0] < 2:
            raise SettingsError(f"{self.dataset.name}: its {x.shape[0]} data points leave {x_train.shape[0]} for "
                                f"training after holding out {self.heldout_index.numel()} (heldout_fraction = "
                                f"{cfg.heldout_fraction:g}); training needs at least 2 (give more data)",
                                [({"heldout_fraction": 0}, "train on all of them")])
        self.sharding.check_batch(cfg.batch_size, x_train.shape[0])
        self.support = self.dataset.support
        self.standardizer = Standardizer.fit(x_train) if cfg.standardize and self.support == "real" else None
        if self.standardizer is not None:
            x_train = self.standardizer.transform(x_train)
        self.x_train = x_train.to(self.device)

    def _build(self, callbacks: list[Callback], log_every: int | None = None) -> None:
        cfg, device = self.config, self.device
        event_shape = tuple(self.dataset.event_shape)
        objective_cls = get_objective_class(cfg.objective)
        model_name = objective_cls.model_aliases.get(cfg.model, cfg.model)  # an objective's own model family
        with torch.random.fork_rng(devices=[]):  # initial weights from the run's seed, global RNG untouched
            torch.manual_seed(derive_seed(cfg.seed, "model"))
            model, self.model_info = make_model(model_name, event_shape, cfg.model_kwargs)
        self.model = model.to(device)
        model_support = getattr(self.model, "support", "real")  # discrete models (RBMs) declare theirs
        if model_support != "real" and model_support != self.support:
            hint = "; use binarised data (digits-binary, mnist-binary:DIR, or a file of 0/1 values)"
            raise ValueError(f"model {cfg.model!r} has {model_support} units but {self.dataset.name} is {self.support} "
                             f"data" + (hint if model_support == "binary" else ""))
        if model_support == "real" and self.support != "real":
            # a generic network on discrete data: its states are the data's (samplers read this)
            self.model.support = self.support
            if self.support == "categorical":
                self.model.num_states = int(self.x_train.max().item()) + 1
        if cfg.sampler == "auto":  # recorded as the kernel chosen, so config.toml repeats the run
            two_layer = all(callable(getattr(self.model, m, None)) for m in ("sample_hidden", "sample_visible"))
            cfg.sampler = "block_gibbs" if two_layer and self.support != "real" else AUTO_SAMPLER.get(self.support, "ula")
        self.kernel = build_kernel(cfg)
        if self.support not in objective_cls.supports:
            raise ValueError(f"objective {cfg.objective!r} needs {' or '.join(objective_cls.supports)} data; "
                             f"{self.dataset.name} is {self.support}")
        options = dict(cfg.objective_kwargs)
        if objective_cls.uses_sampler:
            kernel_supports = getattr(self.kernel, "supports", ("real",) if self.kernel.support == "real" else
                                      ("binary", "categorical"))
            if self.support not in kernel_supports:
                raise SettingsError(f"sampler {cfg.sampler!r} works on {' or '.join(kernel_supports)} states but "
                                    f"{self.dataset.name} is {self.support} data; choose a sampler for "
                                    f"{self.support} states", [({"sampler": AUTO_SAMPLER.get(self.support, "ula")}, ""),
                                                               ({"sampler": "auto"}, "chosen by the data's states")])
            options.setdefault("kernel", self.kernel)
            options.setdefault("num_steps", cfg.sampler_steps)
        self.objective = make_objective(cfg.objective, **self.sharding.objective_options(objective_cls, options))
        batch_generator = torch.Generator(device=device).manual_seed(derive_seed(cfg.seed, "batches"))
        objective_generator = torch.Generator(device=device).manual_seed(self._objective_seed())
        labels = None
        if objective_cls.uses_labels:
            if self.dataset.labels is None:
                raise ValueError(f"objective {cfg.objective!r} trains on labelled data, but {self.dataset.name} has no "
                                 f"labels (use digits, mnist:DIR or fashion-mnist:DIR)")
            labels = self.dataset.labels[self.train_index].to(device=device, dtype=torch.long)
        setup_labels = {"labels": labels} if labels is not None else {}
        self.objective.setup(self.model, self.x_train, objective_generator, support=self.support, **setup_labels)
        settings = OptimSettings(
            steps=cfg.steps, batch_size=cfg.batch_size, optimizer=cfg.optimizer, lr=cfg.lr, momentum=cfg.momentum,
            betas=tuple(cfg.betas), weight_decay=cfg.weight_decay, lr_schedule=cfg.lr_schedule,
            warmup_steps=cfg.warmup_steps, lr_decay_steps=cfg.lr_decay_steps, grad_clip=cfg.grad_clip,
            ema_decay=cfg.ema_decay, checkpoint_every=cfg.checkpoint_every)
        run_state = {
            "config": cfg.to_dict(),
            "scheduler": {"name": cfg.lr_schedule, "step": 0},
            "data": {"name": self.dataset.name, "event_shape": list(event_shape), "support": self.support,
                     "train_index": self.train_index, "heldout_index": self.heldout_index},
            "standardizer": None if self.standardizer is None else self.standardizer.state_dict(),
        }
        info = {"kernel": self.kernel, "standardizer": self.standardizer, "event_shape": event_shape,
                "seed": cfg.seed, "config": cfg, "data_name": self.dataset.name}
        self.loop = TrainLoop(self.model, self.objective, self.x_train, settings, batch_generator, objective_generator,
                              support=self.support, run_dir=self.run_dir, sharding=self.sharding, run_state=run_state,
                              model_info=self.model_info, callbacks=callbacks, info=info, log_every=log_every,
                              labels=labels)

    def _heldout_evaluation(self, every: int | None) -> list[Callback]:
        """Held-out metrics every ``every`` updates (default ``max(1, steps // 10)``; 0 = off)."""
        if every == 0 or self.heldout_index.numel() == 0:
            return []
        every = max(1, self.config.steps // 10) if every is None else int(every)
        x_heldout = self.dataset.x[self.heldout_index]
        labels = None
        if get_objective_class(self.config.objective).uses_labels and self.dataset.labels is not None:
            labels = self.dataset.labels[self.heldout_index].to(torch.long)
        return [HeldoutEvaluation(x_heldout, every, self.standardizer, seed=derive_seed(self.config.seed, "heldout"),
                                  labels=labels)]

    def _restore(self, state: dict[str, Any]) -> None:
        data = state["data"]
        if not (torch.equal(data["train_index"], self.train_index) and torch.equal(data["heldout_index"], self.heldout_index)):
            raise ValueError(f"resume: the data split of {self.config.data!r} differs from the checkpoint's")
        if self.standardizer is not None and state.get("standardizer") is not None:
            saved = Standardizer.from_state_dict(state["standardizer"])
            if not (torch.equal(saved.mean, self.standardizer.mean) and torch.equal(saved.std, self.standardizer.std)):
                raise ValueError(f"resume: the data {self.config.data!r} differ from the checkpoint's")
        self.loop.load_state_dict(state, reseed=self._objective_seed)

    def _objective_seed(self, step: int = 0) -> int:
        """This rank's objective-generator seed (``step`` > 0: re-derived after a world-size change)."""
        stream = "objective" if step == 0 else f"objective@{step}"
        return self.sharding.objective_seed(derive_seed(self.config.seed, stream))

    # ------------------------------------------------------------------ the loop's state

    @property
    def step(self) -> int:
        return self.loop.step

    @property
    def trained_model(self) -> nn.Module:
        return self.loop.trained_model

    def __getattr__(self, name: str) -> Any:
        # the loop's state (optimizer, ema, generators, batches...) reads through the trainer
        if name in ("optimizer", "ema", "batch_generator", "objective_generator", "batches", "history", "settings"):
            return getattr(self.__dict__["loop"], name)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def state_dict(self) -> dict[str, Any]:
        state = self.loop.state_dict()
        state["scheduler"] = {"name": self.config.lr_schedule, "step": self.loop.step}
        return state

    def update(self) -> dict[str, Any]:
        """One optimisation step; returns the step's metrics record."""
        return self.loop.update()

    def save(self) -> None:
        self.loop.save()

    def run(self) -> RunResult:
        """Train to ``config.steps``; writes ``config.toml`` (rank 0) first. A resumed run that
        has done its steps already trains, draws and writes nothing (``already_complete``)."""
        if self.saved_config is not None and self.start_step == self.config.steps:
            return self._complete()
        if self.sharding.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            self.config.save(self.run_dir / CONFIG_NAME)
        fitted = self.loop.run()
        pictures = [p for c in self.loop.callbacks for p in getattr(c, "written", [])]
        return self._result(fitted.model, fitted.step, fitted.wall_time, pictures=pictures)

    def _complete(self) -> RunResult:
        """The result of resuming a run that is done: its state as saved; which given settings differ."""
        if self.loop.lock is not None:
            self.loop.lock.release()
            self.loop.lock = None
        old, new = self.saved_config.to_dict(), self.config.to_dict()
        changed = tuple(k for k in new if new[k] != old.get(k))
        return self._result(self.loop.trained_model.eval(), self.start_step, 0.0, config=self.saved_config,
                            already_complete=True, not_applied=changed)

    def _result(self, model: nn.Module, step: int, wall_time: float, **extra: Any) -> RunResult:
        standardizer = None if self.standardizer is None else self.standardizer.to(self.device)
        energy = energy_on_raw_data(model, standardizer, self.dataset.event_shape, self.support)
        fields = {"config": self.config, **extra}
        return RunResult(run_dir=self.run_dir, step=step, model=model, energy=energy, objective=self.objective,
                         standardizer=self.standardizer, metrics=read_metrics(self.run_dir), wall_time=wall_time,
                         start_step=self.start_step, **fields)


def _check_resumable(saved: TrainConfig, config: TrainConfig, out: str | Path) -> None:
    old, new = saved.to_dict(), config.to_dict()
    changed = [k for k in STRUCTURAL if old[k] != new[k]]
    if changed:
        detail = "; ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise ValueError(f"resume: the run was trained with other settings ({detail}); set "
                         f"{', '.join(changed)} back to the values in {out}/config.toml, or train into "
                         f"another out directory")


def _check_steps(saved: TrainConfig, config: TrainConfig, done: int, out: str | Path) -> None:
    """Refuse a resume to fewer steps than the run has done, and one that would change a cosine
    schedule spanning the run's ``steps`` without saying how the rate goes on."""
    cosine = saved.lr_schedule == config.lr_schedule == "cosine" and not config.lr_decay_steps
    where = f"resume: the run in {str(out)!r}"
    if config.steps < done:
        more = done + config.steps
        settings = {"steps": more, **({"lr_decay_steps": more} if cosine else {})}
        raise SettingsError(f"{where} has done {done} steps, more than the {config.steps} asked for: steps counts "
                            f"the run's total, not the steps to add; to train {config.steps} more",
                            [(settings, f"the cosine schedule stretched over {more} steps" if cosine else "")],
                            "nothing was changed")
    span = saved.lr_decay_steps or saved.steps
    if not cosine or config.steps == done or config.steps == span:
        return
    rate = learning_rate_at(done + 1, 1.0, "cosine", config.warmup_steps, config.steps)
    if done >= span:
        problem = (f"{where} ended its cosine learning-rate schedule at step {span} (the rate has decayed to 0); "
                   f"to train on to step {config.steps}, say how the rate goes on")
    else:
        was = learning_rate_at(done + 1, 1.0, "cosine", config.warmup_steps, span)
        problem = (f"{where} stopped at step {done} of a cosine learning-rate schedule over {span} steps; "
                   f"training to step {config.steps} would stretch it mid-run (the rate of step {done + 1}: "
                   f"{rate:.2g} x lr instead of {was:.2g} x lr); say how the rate goes on")
    fixes = [({"lr_decay_steps": config.steps}, f"the cosine over {config.steps} steps: {rate:.2g} x lr at step "
                                               f"{done + 1}, 0 at step {config.steps}"),
             ({"lr_schedule": "constant"}, f"lr = {config.lr:g} for every further step")]
    if done < span:
        fixes.append(({"steps": span}, "finish the run as planned"))
    raise SettingsError(problem, fixes, "nothing was changed")


def train(config: TrainConfig | dict, resume: bool = False, callback: Callable | None = None, *,
          out: str | Path | None = None, callbacks: Iterable[Callback | Callable] = (),
          log_every: int | None = None, heldout_every: int | None = None) -> RunResult:
    """Train an energy as ``config`` says into the run directory ``out`` (default: a fresh
    ``runs/DATA-OBJECTIVE-TIME``); with ``resume=True`` continue the run in ``out``.

    ``heldout_every``: held-out metrics (:mod:`ebmlab.training.heldout`: the objective's loss, and
    the NLL for data of ≤ 3 dimensions) and the ``best.pt`` checkpoint every this many updates
    when the run holds out data (default ``max(1, steps // 10)``; 0 = off).
    ``log_every``: records in ``metrics.jsonl`` every this many updates (default: a few thousand
    rows at most, ``max(1, steps // 2000)``). Returns a :class:`RunResult`; resuming a run that has
    done its ``steps`` trains nothing (``already_complete``). ``steps`` is the run's total; a cosine
    schedule spanning it (``lr_decay_steps = 0``) goes on to more steps only with a new
    ``lr_decay_steps`` or ``lr_schedule="constant"``. Raises ``ValueError`` (a :class:`SettingsError`
    naming the settings that would do, for refused combinations) for bad settings or data,
    :class:`TrainingDivergedError` when the loss, an energy or a gradient turns NaN or infinite.
    """
    return Trainer(config, resume=resume, callback=callback, out=out, callbacks=callbacks, log_every=log_every,
                   heldout_every=heldout_every).run()


__all__ = ["AUTO_SAMPLER", "RunResult", "STRUCTURAL", "SettingsError", "Trainer", "TrainingDivergedError", "build_kernel", "train"]
