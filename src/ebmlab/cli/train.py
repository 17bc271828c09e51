"""``ebmlab train``: train an energy on a data set and write a run directory.

Thin: options -> :class:`ebmlab.training.config.TrainConfig` -> :func:`ebmlab.jobs.training.run_train_job`
(the library's ``train`` with a progress bar and pictures as callbacks) -> a summary.
Settings are layered: the defaults, then the settings recommended for the model and data
(:mod:`ebmlab.training.presets`: RBMs, Langevin on images, each objective on the 2-D toy sets, where
NCE is the objective when none is named) where nothing later names them, then
``--config FILE.toml`` (or the run's own ``config.toml`` with ``--resume RUN_DIR``), then the
explicit options, then ``--set key=value``.
RUN_DIR receives ``checkpoint.pt``, ``metrics.jsonl``, ``config.toml`` (every setting of the
experiment, so ``--config RUN_DIR/config.toml`` repeats the run into a new directory) and the
pictures. ``--model`` takes a registered name or ``path/to/file.py:NAME`` /
``package.module:NAME`` (an ``nn.Module`` class or factory, called with ``--model-kwargs``).
Exit status: 0 ok; 2 bad input or a diverged run (one line saying which checkpoint, if any, is kept);
130 on SIGINT, 143 on SIGTERM (a checkpoint at the current step is written first: continue with ``--resume RUN_DIR``).
"""

from __future__ import annotations

from pathlib import Path

import click
import torch

from ebmlab.training.config import OPTIMIZERS, TrainConfig
from ebmlab.data import available_datasets
from ebmlab.training.models import available_models
from ebmlab.objectives import available_objectives
from ebmlab.samplers import available
from ebmlab.cli.common import LEAN_THREADS_HELP, OneLineErrors, UserError, set_threads, user_errors


_D = TrainConfig()  # the defaults shown in --help


def _hidden(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UserError(f"--hidden expects comma-separated layer widths like 128,128, got {text!r}") from None
    if not sizes or any(s < 1 for s in sizes):
        raise UserError(f"--hidden expects positive layer widths like 128,128, got {text!r}")
    return sizes


#: Settings that have an option of their own (the others are ``--set KEY=VALUE``).
_OPTION_SETTINGS = ("data", "model", "objective", "steps", "batch_size", "lr", "optimizer", "momentum", "weight_decay",
                    "sampler", "sampler_steps", "step_size", "noise_scale", "seed", "device")


def as_options(settings: dict) -> str:
    """Settings as this command's options: ``{"steps": 40, "lr_decay_steps": 40}`` ->
    ``--steps 40 --set lr_decay_steps=40`` (for the library's :class:`SettingsError` fixes)."""
    from ebmlab.training.config import toml_value

    def text(value) -> str:
        return value if isinstance(value, str) and value.replace("_", "").isalnum() else toml_value(value)

    return " ".join(f"--{key.replace('_', '-')} {text(value)}" if key in _OPTION_SETTINGS else f"--set {key}={text(value)}"
                    for key, value in settings.items())


#: Models whose ``--hidden`` is one integer: the model option it sets.
_HIDDEN_AS_ONE = {"rbm": "num_hidden", "conv": "base_width"}


def _hidden_setting(model: str, text: str) -> tuple[str, int | list[int]]:
    """``(model_kwargs key, value)`` for ``--hidden``: layer widths, or one integer for rbm / conv."""
    sizes = _hidden(text)
    if model not in _HIDDEN_AS_ONE:
        return "hidden", sizes
    if len(sizes) != 1:
        raise UserError(f"--hidden for model {model!r} is one integer (its {_HIDDEN_AS_ONE[model]}), got {text!r}")
    return _HIDDEN_AS_ONE[model], sizes[0]


def _model_kwargs(text: str | None) -> dict | None:
    """``--model-kwargs '{ hidden = [64, 64] }'`` as a dict (a TOML inline table)."""
    if text is None:
        return None
    from ebmlab.training.config import parse_value

    value = parse_value(text.strip())
    if not isinstance(value, dict):
        raise UserError(f"--model-kwargs expects a TOML inline table like '{{ hidden = [64, 64] }}', got {text!r}")
    return value


def _file_keys(path: str) -> set[str]:
    """The settings a TOML file names, as flat keys (``lr``, ``model_kwargs.hidden``; a whole
    option table counts as its name); unreadable files are left to the loader."""
    import tomllib

    from ebmlab.training.config import TABLES, flatten_sections

    try:
        with open(path, "rb") as f:
            flat = flatten_sections(tomllib.load(f))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return set()
    keys = set(flat)
    for table in TABLES:
        if isinstance(flat.get(table), dict):
            keys |= {f"{table}.{key}" for key in flat[table]}
    return keys


def build_config(config_file: str | None, resume: str | None, options: dict, assignments: tuple[str, ...],
                 notes: list[str] | None = None) -> TrainConfig:
    """Layer the settings: defaults < recommended (:mod:`ebmlab.training.presets`) < file (or the resumed
    run's config) < options < ``--set``. Notes for the user (data replaced) go to ``notes``."""
    from ebmlab.training.presets import recommend

    if config_file and resume:
        raise UserError("--config and --resume exclude each other: a resumed run keeps its own config.toml")
    options = dict(options)
    if resume:
        path = Path(resume) / "config.toml"
        if not path.is_file():
            raise UserError(f"--resume {resume}: not a run directory (no config.toml)")
        config = TrainConfig.load(path)
    else:
        config = TrainConfig.load(config_file) if config_file else TrainConfig()
    hidden = options.pop("hidden", None)
    model_kwargs = options.pop("model_kwargs", None)
    given = {k: v for k, v in options.items() if v is not None}
    set_keys = {item.partition("=")[0].strip() for item in assignments}
    explicit = (_file_keys(config_file) if config_file else set()) | set(given) | set_keys
    values = config.to_dict()
    values.update(given)
    if model_kwargs is not None:
        values["model_kwargs"] = {**values["model_kwargs"], **model_kwargs}
    config = TrainConfig.from_dict(values).with_overrides(assignments)
    values = config.to_dict()
    if hidden is not None:  # read once the model is known; --set model_kwargs.KEY still wins
        key, value = _hidden_setting(config.model, hidden)
        if f"model_kwargs.{key}" not in set_keys:
            values["model_kwargs"][key] = value
        explicit.add(f"model_kwargs.{key}")
    if not resume:
        values, messages = recommend(values, explicit)
        if notes is not None:
            notes.extend(messages)
    return TrainConfig.from_dict(values)


@click.command(cls=OneLineErrors, help="Train an energy-based model; writes RUN_DIR with checkpoint.pt, metrics.jsonl, "
                                        "config.toml and pictures. Settings left unset take the values recommended "
                                        "for the model and data where there are some (--model rbm: PCD with block "
                                        "Gibbs and SGD on binary data; cd/pcd/replay on images: short-run Langevin "
                                        "in [0, 1]; the 2-D toy sets: nce with 4 noise draws per point and a 3x256 MLP unless "
                                        "another objective is named, dsm with an annealed noise level); "
                                        "config.toml records every value used.",
               epilog="Exit status: 0 ok; 2 bad input or a diverged run; 130 on SIGINT, 143 on SIGTERM (checkpointed first; continue with --resume).")
@click.option("--data", default=None, metavar="NAME|FILE",
              help=f"Data set [default: {_D.data}]: {', '.join(available_datasets())}, or a .npy/.npz/.csv file.")
@click.option("--model", default=None, metavar="NAME|FILE.py:NAME",
              help=f"Model [default: {_D.model}]: {', '.join(available_models())}, or path/to/file.py:NAME / "
                   "package.module:NAME naming an nn.Module class or factory.")
@click.option("--model-kwargs", "model_kwargs", default=None, metavar="TOML",
              help="Options of the model as a TOML inline table, e.g. '{ hidden = [64, 64] }'.")
@click.option("--objective", default=None, metavar="NAME",
              help=f"Objective [default: nce on the 2-D toy sets, else {_D.objective}]: {', '.join(available_objectives())}.")
@click.option("--steps", type=int, default=None,
              help=f"Optimisation steps [default: {_D.steps}, or the recommended number, e.g. 6,000 for cd on the toy sets].")
@click.option("--batch-size", type=int, default=None, help=f"Batch size [default: {_D.batch_size}].")
@click.option("--lr", type=float, default=None, help=f"Learning rate [default: {_D.lr}, {_D.lr_schedule} schedule].")
@click.option("--optimizer", type=click.Choice(OPTIMIZERS), default=None, help=f"Optimiser [default: {_D.optimizer}].")
@click.option("--momentum", type=float, default=None, help=f"SGD momentum [default: {_D.momentum}].")
@click.option("--weight-decay", type=float, default=None,
              help=f"L2 weight decay of the model's parameters [default: {_D.weight_decay}].")
@click.option("--sampler", default=None, metavar="NAME",
              help=f"MCMC kernel for contrastive objectives and pictures [default: {_D.sampler}: ula on real data, "
                   f"gibbs on binary or categorical data]: {', '.join(available())}.")
@click.option("--sampler-steps", type=int, default=None, help=f"Sampler transitions per update [default: {_D.sampler_steps}].")
@click.option("--step-size", type=float, default=None, help=f"Sampler step size [default: {_D.step_size}].")
@click.option("--noise-scale", type=float, default=None, help=f"ULA noise scale [default: {_D.noise_scale}].")
@click.option("--hidden", default=None, metavar="W[,W...]",
              help="mlp: layer widths [default: 128,128; 256,256,256 for nce on the toy sets]; rbm: the number of hidden units [64]; "
                   "conv: the base channel width [32].")
@click.option("--seed", type=int, default=None, help=f"Seed of every random stream of the run [default: {_D.seed}].")
@click.option("--device", default=None, help=f"cpu, cuda, cuda:N or auto [default: {_D.device}].")
@click.option("--out", default=None, metavar="RUN_DIR", help="Run directory [default: runs/DATA-OBJECTIVE-TIME].")
@click.option("--resume", default=None, metavar="RUN_DIR",
              help="Continue the run in RUN_DIR: a stopped run to its steps, or a finished one to more --steps (the "
                   "run's total, not the steps to add; a cosine schedule then needs its new length, e.g. --steps "
                   "6000 --set lr_decay_steps=6000).")
@click.option("--config", "config_file", default=None, metavar="FILE.toml", help="Start from the settings in FILE.toml.")
@click.option("--set", "assignments", multiple=True, metavar="KEY=VALUE",
              help="Any setting, e.g. --set ema_decay=0.999 --set objective_kwargs.sigma=0.2 (repeatable).")
@click.option("--threads", type=int, default=None, help=LEAN_THREADS_HELP.format(size="the batch size"))
@click.option("--progress/--no-progress", default=None, help="Progress bar [default: on a terminal].")
@click.option("--no-plots", is_flag=True, help="Skip the pictures (the metrics, and a classifier's held-out accuracy "
                                                "and calibration in classification.json, are still written).")
@click.option("--log", "log", type=click.Choice(["csv", "tensorboard", "none"]), default="none", show_default=True,
              help="Also log the metrics to RUN_DIR/metrics.csv or TensorBoard event files in RUN_DIR/tensorboard/ "
                   "(needs pip install tensorboard).")
@click.option("--log-every", type=click.IntRange(min=1), default=None,
              help="Record the metrics (metrics.jsonl and --log) every N updates and at the last [default: "
                   "steps // 2000, at least 1: at most a few thousand rows].")
@click.option("--plot-samples", type=click.IntRange(min=1), default=2000, show_default=True,
              help="Model samples drawn for the pictures (at most 64 for images).")
@click.option("--plot-sampler-steps", type=click.IntRange(min=0), default=None,
              help="Sampler transitions for the picture samples [default: 1000 for RBMs, 200 for Langevin on "
                   "images, else 500].")
@user_errors
def command(data, model, model_kwargs, objective, steps, batch_size, lr, optimizer, momentum, weight_decay, sampler,
            sampler_steps, step_size, noise_scale, hidden, seed, device, out, resume, config_file, assignments, threads,
            progress, no_plots, log, log_every, plot_samples, plot_sampler_steps) -> None:
    from ebmlab import distributed as D
    from ebmlab.jobs.training import run_train_job
    from ebmlab.training.loading import default_run_dir
    from ebmlab.training.interrupts import TrainingInterrupted
    from ebmlab.training.loop import TrainingDivergedError
    from ebmlab.training.settings import SettingsError

    options = {"data": data, "model": model, "objective": objective, "steps": steps, "batch_size": batch_size,
               "lr": lr, "optimizer": optimizer, "momentum": momentum, "weight_decay": weight_decay, "sampler": sampler,
               "sampler_steps": sampler_steps, "step_size": step_size,
               "noise_scale": noise_scale, "hidden": hidden, "seed": seed, "device": device,
               "model_kwargs": _model_kwargs(model_kwargs)}
    if resume is not None and out is not None and Path(out) != Path(resume):
        raise UserError("--out and --resume name different directories; a resumed run stays in its RUN_DIR")
    notes: list[str] = []
    config = build_config(config_file, resume, options, assignments, notes)
    D.init_distributed()  # joins the torchrun group, if any (a no-op for one process)
    if D.is_main_process():
        for note in notes:
            click.echo(f"ebmlab: note: {note}", err=True)
    if threads is not None:
        set_threads(threads)
    out = resume if resume is not None else out
    if out is None:  # one name for every rank of a torchrun group
        out = D.broadcast_object(str(default_run_dir(config)))
    shown = "auto" if progress is None else ("on" if progress else "off")
    try:
        result = run_train_job(config, out, resume=resume is not None, progress=shown, plots=not no_plots,
                               plot_samples=plot_samples, plot_sampler_steps=plot_sampler_steps, log=log,
                               log_every=log_every, lean_threads=threads is None)
    except SettingsError as err:  # the library's sentence, its fixes named as this command's options
        raise UserError(err.render(as_options)) from err
    except TrainingDivergedError as err:
        raise UserError(str(err)) from err
    except TrainingInterrupted as err:
        if D.is_main_process():
            click.echo(f"ebmlab: stopped by {err.signal_name} at step {err.step}; the checkpoint is saved: continue "
                       f"with 'ebmlab train --resume {out}'", err=True)
        raise SystemExit(err.exit_status) from None
    except KeyboardInterrupt:
        if D.is_main_process():
            if (Path(out) / "checkpoint.pt").is_file():
                hint = f"the last checkpoint is kept: continue with 'ebmlab train --resume {out}'"
            else:
                hint = "no checkpoint was written yet: start again"
            click.echo(f"ebmlab: interrupted; {hint}", err=True)
        raise SystemExit(130) from None
    if not D.is_main_process():
        return
    if result.already_complete:
        _report_complete(result)
        return
    last = result.metrics[-1] if result.metrics else {}
    figures = ", ".join(f"{k} {last[k]:.4g}" for k in ("loss", "cd_gap", "log_z") if k in last)
    files = ", ".join(p.name for p in result.pictures)
    click.echo(f"trained {result.config.objective} on {result.config.data} for {result.step} steps in "
               f"{result.wall_time:.1f} s" + (f" ({figures})" if figures else ""))
    if result.classification:
        c = result.classification
        shown = "; class-conditional samples: class_samples.png" if "class_samples" in c else ""
        click.echo(f"held-out accuracy {c['accuracy']:.3f}, expected calibration error {c['ece']:.3f} "
                   f"(15 bins), NLL {c['nll']:.3f} nats (classification.json){shown}")
    click.echo(f"run directory: {result.run_dir}" + (f" (pictures: {files})" if files else ""))


def _report_complete(result) -> None:
    """What ``--resume`` says of a run that had done its steps: nothing trained, how to go on."""
    config, out = result.config, result.run_dir
    cosine = config.lr_schedule == "cosine" and not config.lr_decay_steps
    more = " --steps N" + (" --set lr_decay_steps=N" if cosine else "")
    click.echo(f"the run in {out} is already complete ({result.step} of {config.steps} steps): nothing was trained "
               f"and its files are unchanged; to train further: ebmlab train --resume {out}{more} "
               f"(N > {result.step}, the new total)")
    if result.not_applied:
        click.echo(f"ebmlab: note: not applied, as no step is left to use them: "
                   f"{', '.join(result.not_applied)} (config.toml keeps the run's values)", err=True)
