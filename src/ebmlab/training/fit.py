"""``fit``: train any energy module on any data with one objective, from Python.

    result = ebmlab.fit(MyEnergy(), "dsm", x, steps=2000, lr=1e-3, seed=0)
    result.model, result.history

The module is trained in place by the one :class:`~ebmlab.training.loop.TrainLoop` (a
:class:`~ebmlab.energy.rbm.BernoulliRBM` under ``"cd"``/``"pcd"`` with block Gibbs by its lean
closed-form path, :mod:`ebmlab.training.rbm_lean`; ``objective_options={"lean": False}`` keeps
the general autograd objective); with ``run_dir`` the run is checkpointed atomically and
resumes exactly (``resume=True``), and its checkpoint records how to rebuild the module
(:mod:`ebmlab.training.user_models`), so :func:`ebmlab.load` and ``ebmlab sample|evaluate
--energy RUN_DIR`` work in a fresh process.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch
from torch import nn

from ebmlab.objectives import Objective, make_objective
from ebmlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint, remove_stale_temporaries
from ebmlab.training.lock import RunLock, check_run_directory
from ebmlab.training.data_input import as_training_tensor
from ebmlab.training.loop import Callback, FitResult, OptimSettings, TrainLoop, derive_seed
from ebmlab.training.settings import SettingsError

#: Settings a resumed fit must share with its checkpoint: the optimiser's own (restored from its
#: state, so a new value would be ignored) and what shapes the batches.
RESUME_FIXED = ("batch_size", "optimizer", "objective", "num_data", "momentum", "betas", "weight_decay")
#: The batch size when neither ``batch_size`` nor a DataLoader gives one.
DEFAULT_BATCH_SIZE = 256
from ebmlab.training.sharding import TrainSharding
from ebmlab.training.user_models import describe_module


def fit(energy: nn.Module, objective: str | Objective, data: Any, *, steps: int, batch_size: int | None = None,
        optimizer: str = "adam", lr: float = 1e-3, momentum: float = 0.9, betas: Sequence[float] = (0.9, 0.999),
        weight_decay: float = 0.0, lr_schedule: str = "constant", warmup_steps: int = 0, lr_decay_steps: int = 0,
        generator: torch.Generator | None = None, seed: int | None = None, ema_decay: float = 0.0,
        grad_clip: float = 0.0, objective_options: dict[str, Any] | None = None,
        callbacks: Iterable[Callback | Callable] = (), run_dir: str | Path | None = None, resume: bool = False,
        checkpoint_every: int = 500, log_every: int | None = None, labels: Any = None, model_spec: str | None = None,
        model_kwargs: dict[str, Any] | None = None) -> FitResult:
    """Train any energy module on any data with one objective; returns a :class:`FitResult`.

    Args:
        energy: any ``nn.Module`` mapping ``(B, *event) -> (B,)``; trained in place.
        objective: a registered name (``"dsm"``, ``"nce"``, ``"pcd"``...; options in
            ``objective_options``) or an :class:`~ebmlab.objectives.Objective`.
        data: a tensor or numpy array ``(N, *event)``, a ``torch.utils.data.Dataset`` (its items,
            or their first element, stacked), a ``DataLoader`` (its dataset, and its batch size
            unless ``batch_size`` is given), or a built-in data name (``"8gaussians"``).
            Batches are drawn by ebmlab, without replacement within an epoch, so a resumed run
            sees the same batches.
        steps: total number of updates (a resumed run continues up to it).
        optimizer / lr / momentum / betas / weight_decay: ``"adam"`` or ``"sgd"`` and its settings.
        lr_schedule: ``"constant"`` or ``"cosine"`` (spanning ``lr_decay_steps or steps``), after
            ``warmup_steps`` of linear warm-up.
        generator: the source of the objective's random draws; its seed also seeds the batch
            order. Or ``seed`` (default 0) for both. Not both.
        ema_decay: keep an exponential moving average of the weights (returned as the model).
        grad_clip: maximum global gradient norm (0 = off).
        callbacks: :class:`Callback` objects or functions ``f(step, record, loop)``.
        run_dir: write ``checkpoint.pt`` (every ``checkpoint_every`` updates, atomically) and
            ``metrics.jsonl`` there; ``resume=True`` continues the run it holds exactly when
            called with the same arguments. The batch size, optimiser (with its momentum, betas
            and weight decay), objective and number of rows must not change (refused);
            ``steps`` may grow (a cosine schedule then needs ``lr_decay_steps`` or
            ``lr_schedule="constant"``); ``lr``, ``warmup_steps``, ``ema_decay``, ``grad_clip``
            and the objective's options are taken as given from the resumed step on.
        labels: class indices ``(N,)`` for objectives that train on labelled data (``uses_labels``:
            classifier EBMs); also read from a Dataset of ``(x, y)`` pairs or a labelled data name.
        log_every: keep a record in ``history`` (and ``metrics.jsonl``) every this many updates
            and at the last (default: ``max(1, steps // 2000)``, a few thousand rows at most); each
            metric of a record is its mean over the updates since the previous one.
        model_spec / model_kwargs: how to rebuild ``energy`` in a fresh process
            (``"package.module:Class"`` or ``"path/to/file.py:NAME"`` called with
            ``model_kwargs``), stored in the checkpoint for :func:`ebmlab.load`. By default the
            energy's class, when it is importable, with its ``config`` attribute as arguments.

    Raises:
        ValueError: bad arguments or data (names the argument and what was received).
        TrainingDivergedError: the loss, an energy or a gradient became NaN or infinite.
    """
    if not isinstance(energy, nn.Module):
        raise TypeError(f"fit: energy must be a torch.nn.Module, got {type(energy).__name__}")
    if generator is not None and seed is not None:
        raise ValueError("fit: give generator or seed, not both")
    if isinstance(objective, str):
        objective = make_objective(objective, **(objective_options or {}))
    elif not isinstance(objective, Objective):
        raise TypeError(f"fit: objective must be a name or an ebmlab.objectives.Objective, got {type(objective).__name__}")
    elif objective_options:
        raise ValueError("fit: objective_options apply only when the objective is given by name")
    x, loader_batch, found_labels = as_training_tensor(data, energy)
    if objective.uses_labels:
        labels = found_labels if labels is None else torch.as_tensor(labels, dtype=torch.long)
        if labels is None or labels.shape != (x.shape[0],):
            raise ValueError(f"fit: objective {objective.name!r} trains on labelled data; pass labels=(N,) class "
                             f"indices or a Dataset of (x, y) pairs" + ("" if labels is None else
                             f" (got labels of shape {tuple(labels.shape)} for {x.shape[0]} rows)"))
    elif labels is not None:
        raise ValueError(f"fit: labels were given but objective {objective.name!r} does not train on labels")
    if batch_size is None:  # a DataLoader's own batch size, else 256
        batch_size = loader_batch if loader_batch is not None else DEFAULT_BATCH_SIZE
    device = next((t.device for t in list(energy.parameters()) + list(energy.buffers())), x.device)
    x = x.to(device)
    support = str(getattr(energy, "support", "real"))
    if support not in objective.supports:
        raise ValueError(f"fit: objective {objective.name!r} needs {' or '.join(objective.supports)} data; "
                         f"the energy {type(energy).__name__} has support {support!r}"
                         + (f"; declare the energy's states with energy.support = 'binary' (or 'categorical' and "
                            f"energy.num_states = K)" if support == "real" else ""))
    settings = OptimSettings(steps=steps, batch_size=batch_size, optimizer=optimizer, lr=float(lr), momentum=momentum,
                             betas=tuple(betas), weight_decay=weight_decay, lr_schedule=lr_schedule,
                             warmup_steps=warmup_steps, lr_decay_steps=lr_decay_steps, grad_clip=grad_clip,
                             ema_decay=ema_decay, checkpoint_every=checkpoint_every).validate()
    base_seed = int(generator.initial_seed()) if generator is not None else int(seed or 0)
    batch_generator = torch.Generator(device=device).manual_seed(derive_seed(base_seed, "batches"))
    sharding = TrainSharding.current()  # under torchrun: data parallel, one shard of each batch per rank
    sharding.check_batch(settings.batch_size, x.shape[0])
    objective_generator = generator or torch.Generator(device=device).manual_seed(
        sharding.objective_seed(derive_seed(base_seed, "objective")))
    checkpoint, lock = None, None
    try:
        if run_dir is not None:
            path = Path(run_dir) / CHECKPOINT_NAME
            if sharding.is_main:  # one writer per run directory, from here to the end of the run
                if not resume:
                    check_run_directory(run_dir, what="fit: run_dir")
                lock = RunLock(run_dir).acquire()
                remove_stale_temporaries(run_dir)
            if resume:
                checkpoint = load_checkpoint(path)
                if int(checkpoint["step"]) > steps:
                    raise ValueError(f"fit: the run in {str(run_dir)!r} has done {int(checkpoint['step'])} steps; steps "
                                     f"must be at least that, got {steps}")
            elif path.exists():
                raise ValueError(f"fit: {str(run_dir)!r} already holds a run (checkpoint.pt); pass resume=True or "
                                 f"choose another run_dir")
        elif resume:
            raise ValueError("fit: resume=True needs run_dir")
        setup_labels = {"labels": labels.to(device)} if labels is not None else {}
        objective.setup(energy, x, objective_generator, support=support, **setup_labels)
        info = describe_module(energy, model_spec, model_kwargs, tuple(x.shape[1:]))
        run_state = {"fit": {"steps": steps, "batch_size": settings.batch_size, "optimizer": optimizer,
                             "objective": objective.name, "num_data": int(x.shape[0]), "lr_schedule": lr_schedule,
                             "lr_decay_steps": lr_decay_steps, "momentum": float(momentum),
                             "betas": [float(b) for b in betas], "weight_decay": float(weight_decay)},
                     "data": {"event_shape": list(x.shape[1:]), "support": support}}
        loop = TrainLoop(energy, objective, x, settings, batch_generator, objective_generator, support=support,
                         run_dir=run_dir, sharding=sharding, run_state=run_state, model_info=info, callbacks=callbacks,
                         log_every=log_every, labels=labels)
        loop.lock = lock
        if checkpoint is not None:
            saved = checkpoint.get("fit", {})
            changed = [k for k in RESUME_FIXED if k in saved and saved[k] != run_state["fit"][k]]
            if changed:
                raise ValueError("fit: resume with other settings than the run's: " + "; ".join(
                    f"{k}: {saved[k]!r} -> {run_state['fit'][k]!r}" for k in changed) + " (the optimiser's state "
                    "holds them; set them back, or start a new run_dir from the trained weights)")
            _check_schedule(saved, settings, int(checkpoint["step"]), run_dir)
            loop.load_state_dict(checkpoint, reseed=lambda step: sharding.objective_seed(
                derive_seed(base_seed, f"objective@{step}")))
    except BaseException:
        if lock is not None:
            lock.release()  # a refused run leaves the directory to others at once
        raise
    return loop.run()


def _check_schedule(saved: dict, settings: OptimSettings, done: int, run_dir) -> None:
    """Refuse a resume whose cosine schedule, spanning ``steps`` (``lr_decay_steps = 0``), would
    change length mid-run: the resumed updates would not get the rates of the run as started."""
    saved_steps = saved.get("steps")
    cosine = settings.lr_schedule == saved.get("lr_schedule", settings.lr_schedule) == "cosine"
    if not cosine or settings.lr_decay_steps or saved_steps in (None, settings.steps) or done == settings.steps:
        return
    fixes = [({"lr_decay_steps": settings.steps}, f"a cosine over {settings.steps} steps from here on"),
             ({"lr_schedule": "constant"}, f"lr = {settings.lr:g} for every further update")]
    if done < saved_steps:
        fixes.append(({"steps": saved_steps}, "finish the run as planned"))
    raise SettingsError(f"fit: the run in {str(run_dir)!r} follows a cosine learning-rate schedule over its "
                        f"{saved_steps} steps; resuming with steps={settings.steps} would change it mid-run, so "
                        f"say how the rate goes on", fixes, "nothing was changed")


__all__ = ["fit"]
