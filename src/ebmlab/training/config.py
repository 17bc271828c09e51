"""The training configuration: every setting of a run, serialisable to and from TOML.

``TrainConfig`` holds the *experiment* only — what shapes the trained model: data, model,
objective, sampler, optimisation and the run's seed, device and checkpoint interval. Where the
run is written (``out``) and how it is shown (progress bar, pictures) are arguments of
:func:`ebmlab.training.run.train` and of the CLI, not settings, so ``config.toml`` of one run
repeats it into another directory.

On disk the config has one TOML table per section (:data:`SECTIONS`)::

    [data]       name, num_samples, standardize, heldout_fraction
    [model]      name (a registered model or ``path/to/file.py:NAME`` / ``package.module:NAME``)
    [model.options]            keyword arguments of the model
    [objective]  name, and [objective.options]
    [sampler]    name, steps, step_size, noise_scale, and [sampler.options]
    [optim]      steps, batch_size, optimizer, lr, momentum, betas, weight_decay, lr_schedule,
                 warmup_steps, lr_decay_steps, grad_clip, ema_decay
    [run]        seed, device, checkpoint_every

In Python the same values are flat attributes (``config.lr``, ``config.model_kwargs``);
:meth:`TrainConfig.from_dict` accepts either form (checkpoints of ebmlab 0.1 hold the flat one),
and ``--set`` takes ``optim.lr=0.1``, ``model.options.hidden=[64, 64]`` or the flat names
(``lr=0.1``, ``model_kwargs.hidden=[64, 64]``). Values meaning "off" are 0 rather than ``None``
(TOML has no null): ``num_samples = 0`` (the data set's default size), ``grad_clip = 0``,
``ema_decay = 0``, ``heldout_fraction = 0``, ``lr_decay_steps = 0`` (= ``steps``).

TOML is read with :mod:`tomllib` and written by :func:`to_toml`, a small writer for exactly
the values a config holds: strings, booleans, integers, floats (``repr``, so they round-trip
bit for bit), lists of those, and nested tables.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch

from ebmlab.atomic import atomic_write
from ebmlab.distributed import resolve_device as _resolve_device
from ebmlab.training.schedules import LR_SCHEDULES, OPTIMIZERS, learning_rate_at

TABLES = ("model_kwargs", "objective_kwargs", "sampler_kwargs")


@dataclass
class TrainConfig:
    """Every setting of a training run (see the module docstring for the "off" values).

    Data: ``data`` (a spec for :func:`ebmlab.data.load_dataset`: a toy name, ``digits``, a
    file...), ``num_samples``, ``standardize`` (fit ``z = (x - μ)/s`` on the training split),
    ``heldout_fraction`` (kept out of training, for evaluation).
    Model: ``model`` (a name in :mod:`ebmlab.training.models`) and ``model_kwargs``.
    Objective: ``objective`` (a name in :mod:`ebmlab.objectives`) and ``objective_kwargs``.
    Sampler (contrastive objectives, pictures): ``sampler`` (a name in :mod:`ebmlab.samplers`; ``auto``:
    ula on real data, gibbs on binary or categorical), ``sampler_steps`` (transitions per update),
    ``step_size``, ``noise_scale`` (ULA only), ``sampler_kwargs`` (``num_states``, ``num_leapfrog``...).
    Optimisation: ``steps``, ``batch_size``, ``optimizer`` (adam | sgd), ``lr``, ``momentum``
    (sgd), ``betas`` (adam), ``weight_decay``, ``lr_schedule`` (constant | cosine),
    ``warmup_steps``, ``lr_decay_steps``, ``grad_clip`` (max global norm), ``ema_decay``. The
    cosine schedule spans ``lr_decay_steps or steps``: set ``lr_decay_steps`` when a run will be
    extended (``steps=k`` now, resumed to ``steps=N`` later) to keep its schedule unchanged.
    Run: ``seed``, ``device`` (cpu | cuda | cuda:N | auto), ``checkpoint_every``.
    """

    data: str = "8gaussians"
    num_samples: int = 0
    standardize: bool = True
    heldout_fraction: float = 0.1

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)

    objective: str = "dsm"
    objective_kwargs: dict = field(default_factory=dict)

    sampler: str = "auto"
    sampler_steps: int = 20
    step_size: float = 0.01
    noise_scale: float = 1.0
    sampler_kwargs: dict = field(default_factory=dict)

    steps: int = 5000
    batch_size: int = 256
    optimizer: str = "adam"
    lr: float = 2e-3
    momentum: float = 0.9
    betas: list = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 0.0
    lr_schedule: str = "cosine"
    warmup_steps: int = 0
    lr_decay_steps: int = 0
    grad_clip: float = 0.0
    ema_decay: float = 0.0

    seed: int = 0
    device: str = "cpu"
    checkpoint_every: int = 500

    # ------------------------------------------------------------------ validation

    def validate(self) -> "TrainConfig":
        """Coerce ints to floats where a float is meant, and check every value once.

        Raises ``ValueError`` naming the setting and the value received.
        """
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = _KINDS[f.name]
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
                setattr(self, f.name, value)
            if kind is dict and isinstance(value, Mapping):
                value = dict(value)
                setattr(self, f.name, value)
            ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
            if not ok:
                raise ValueError(f"config: {f.name} must be {kind.__name__} ({_KIND_NAMES[kind]}), got {type(value).__name__} {value!r}")
            _check(kind is not int or -2**63 <= value < 2**63, f.name, value, "an integer that fits in 64 bits")
        largest = torch.finfo(torch.get_default_dtype()).max
        for name in ("step_size", "noise_scale", "lr", "weight_decay"):  # grad_clip = inf is allowed: no clipping
            _check(abs(getattr(self, name)) <= largest, name, getattr(self, name),
                   f"a finite number representable in {torch.get_default_dtype()} (at most {largest:.3g})")
        _check(0 <= self.seed < 2**32, "seed", self.seed, "in [0, 2**32) (the run's streams derive from it)")
        for name in ("data", "model", "objective", "sampler", "device"):
            _check(bool(getattr(self, name).strip()), name, getattr(self, name), "a non-empty string")
        _check(self.num_samples >= 0, "num_samples", self.num_samples, ">= 0 (0 = the data set's default)")
        _check(0.0 <= self.heldout_fraction < 1.0, "heldout_fraction", self.heldout_fraction, "in [0, 1)")
        _check(self.sampler_steps >= 1, "sampler_steps", self.sampler_steps, ">= 1")
        _check(self.step_size > 0, "step_size", self.step_size, "> 0")
        _check(self.noise_scale >= 0, "noise_scale", self.noise_scale, ">= 0")
        _check(self.steps >= 0, "steps", self.steps, ">= 0")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, ">= 1")
        _check(self.optimizer in OPTIMIZERS, "optimizer", self.optimizer, f"one of {', '.join(OPTIMIZERS)}")
        _check(self.lr > 0 and math.isfinite(self.lr), "lr", self.lr, "> 0")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "in [0, 1)")
        _check(len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
               "betas", self.betas, "two numbers in [0, 1)")
        self.betas = [float(b) for b in self.betas]
        _check(self.weight_decay >= 0, "weight_decay", self.weight_decay, ">= 0")
        _check(self.lr_schedule in LR_SCHEDULES, "lr_schedule", self.lr_schedule, f"one of {', '.join(LR_SCHEDULES)}")
        _check(self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, ">= 0")
        _check(self.lr_decay_steps >= 0, "lr_decay_steps", self.lr_decay_steps, ">= 0 (0 = steps)")
        _check(self.grad_clip >= 0, "grad_clip", self.grad_clip, ">= 0 (0 = off)")
        _check(0.0 <= self.ema_decay < 1.0, "ema_decay", self.ema_decay, "in [0, 1) (0 = off)")
        _check(self.checkpoint_every >= 1, "checkpoint_every", self.checkpoint_every, ">= 1")
        for name in TABLES:
            _check_table(name, getattr(self, name))
        return self

    # ------------------------------------------------------------------ conversion

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts, lists and primitives."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build and validate from a mapping, sectioned (as in ``config.toml``) or flat.

        Unknown keys are a ``ValueError`` listing the known ones; a display or output setting
        (``out``, ``progress``, ``plots``...) is refused with a note that it is not part of
        the experiment.
        """
        flat = flatten_sections(values)
        moved = sorted(set(flat) & set(NOT_SETTINGS))
        if moved:
            raise ValueError(f"config: {', '.join(moved)} is not part of the experiment config; pass it to "
                             f"train(...) or as a command-line option instead")
        unknown = sorted(set(flat) - set(_KINDS))
        if unknown:
            raise ValueError(f"config: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_KINDS)}")
        return cls(**{k: _copy(v) for k, v in flat.items()}).validate()

    def to_sections(self) -> dict[str, dict[str, Any]]:
        """The config as ``{section: {key: value}}``, the layout of ``config.toml``."""
        return {section: {key: _copy(getattr(self, name)) for key, name in fields.items()}
                for section, fields in SECTIONS.items()}

    def to_toml(self) -> str:
        return to_toml(self.to_sections()).lstrip("\n")

    @classmethod
    def from_toml(cls, text: str, source: str = "config") -> "TrainConfig":
        try:
            values = tomllib.loads(text)
        except tomllib.TOMLDecodeError as err:
            raise ValueError(f"{source}: not valid TOML: {err}") from None
        return cls.from_dict(values)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "TrainConfig":
        """Read a TOML file written by :meth:`save` (or by hand)."""
        path = Path(path)
        name = f"config file {str(path)!r}"
        if not path.is_file():  # missing, a directory, a FIFO or a device
            kind = "does not exist" if not path.exists() else "is a directory" if path.is_dir() else "is not a regular file"
            raise (FileNotFoundError if not path.exists() else ValueError)(f"{name} {kind}; give a TOML file")
        text = path.read_bytes().decode("utf-8", errors="replace")
        if "\x00" in text or "\ufffd" in text:
            raise ValueError(f"{name} is not a TOML text file (it is binary: NUL bytes or invalid UTF-8)")
        return cls.from_toml(text, source=name)

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as TOML, atomically."""
        text = self.to_toml().encode("utf-8")
        return atomic_write(path, lambda f: f.write(text))

    def with_overrides(self, assignments: Iterable[str]) -> "TrainConfig":
        """A validated copy with ``key=value`` assignments applied (``--set``).

        ``value`` is read as a TOML value (``0.1``, ``true``, ``[64, 64]``, ``"text"``) and,
        failing that, taken as a bare string. ``key`` is a flat name (``lr``), a section key
        (``optim.lr``, ``sampler.steps``), or an option of the model, objective or sampler
        (``model.options.hidden``, or the flat ``model_kwargs.hidden``).
        """
        values, given = self.to_dict(), {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"--set expects key=value, got {item!r}")
            value = parse_value(raw.strip())
            name, sub = resolve_key(key)
            if sub is None:
                values[name] = value
            else:
                values[name][sub] = value
            given[name] = item
        try:
            return TrainConfig.from_dict(values)
        except ValueError as err:  # name the --set item that holds the refused value
            name = next((n for n in given if str(err).startswith((f"config: {n} ", f"config: {n}."))), None)
            raise err if name is None else ValueError(f"--set {given[name]}: {str(err).removeprefix('config: ')}") from None


_KIND_NAMES = {str: "a string", int: "an integer", float: "a number", bool: "true or false", dict: "a table", list: "a list"}
_KINDS: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}[str(f.type)]
    for f in dataclasses.fields(TrainConfig)
}


#: ``config.toml`` sections: ``{section: {key in the section: flat attribute}}``.
SECTIONS: dict[str, dict[str, str]] = {
    "data": {"name": "data", "num_samples": "num_samples", "standardize": "standardize",
             "heldout_fraction": "heldout_fraction"},
    "model": {"name": "model", "options": "model_kwargs"},
    "objective": {"name": "objective", "options": "objective_kwargs"},
    "sampler": {"name": "sampler", "steps": "sampler_steps", "step_size": "step_size", "noise_scale": "noise_scale",
                "options": "sampler_kwargs"},
    "optim": {"steps": "steps", "batch_size": "batch_size", "optimizer": "optimizer", "lr": "lr",
              "momentum": "momentum", "betas": "betas", "weight_decay": "weight_decay", "lr_schedule": "lr_schedule",
              "warmup_steps": "warmup_steps", "lr_decay_steps": "lr_decay_steps", "grad_clip": "grad_clip",
              "ema_decay": "ema_decay"},
    "run": {"seed": "seed", "device": "device", "checkpoint_every": "checkpoint_every"},
}
#: Output and display settings of ebmlab 0.1 configs: arguments of ``train`` / the CLI now.
NOT_SETTINGS = ("out", "progress", "plots", "plot_samples", "plot_sampler_steps")
_BY_SECTION_KEY = {f"{section}.{key}": name for section, fields in SECTIONS.items() for key, name in fields.items()}


def flatten_sections(values: Mapping[str, Any]) -> dict[str, Any]:
    """Flat settings from a sectioned mapping (``{"optim": {"lr": 0.1}}``), a flat one, or a mix.

    A section is recognised by its table value (``data = "8gaussians"`` is the flat name,
    ``[data]`` the section); a key a section does not have is a ``ValueError``.
    """
    flat: dict[str, Any] = {}
    for key, value in values.items():
        if key in SECTIONS and isinstance(value, Mapping):
            for sub, item in value.items():
                name = SECTIONS[key].get(sub)
                if name is None:
                    raise ValueError(f"config: section [{key}] has no setting {sub!r}; "
                                     f"known: {', '.join(SECTIONS[key])}")
                flat[name] = item
        else:
            flat[key] = value
    return flat


def resolve_key(key: str) -> tuple[str, str | None]:
    """``(flat attribute, option key or None)`` for a ``--set`` key; ``ValueError`` when unknown.

    ``lr`` / ``optim.lr`` -> ``("lr", None)``; ``model.options.hidden`` / ``model_kwargs.hidden``
    -> ``("model_kwargs", "hidden")``.
    """
    if key in _KINDS and key not in TABLES:
        return key, None
    if key in _BY_SECTION_KEY and _BY_SECTION_KEY[key] not in TABLES:
        return _BY_SECTION_KEY[key], None
    head, dot, sub = key.rpartition(".")
    table = _BY_SECTION_KEY.get(head, head)
    if dot and sub and table in TABLES:
        return table, sub
    if key in NOT_SETTINGS:
        raise ValueError(f"--set {key}: not part of the experiment config; use the command-line option instead")
    known = ", ".join(list(_BY_SECTION_KEY) + [f"{s}.options.KEY" for s in ("model", "objective", "sampler")])
    raise ValueError(f"--set: unknown setting {key!r}; known: {known}")


def _check(ok: bool, name: str, value: Any, expected: str) -> None:
    if not ok:
        raise ValueError(f"config: {name} must be {expected}, got {value!r}")


def _check_table(name: str, table: dict, where: str | None = None) -> None:
    where = where or name
    for key, value in table.items():
        if not isinstance(key, str) or not key:
            raise ValueError(f"config: {where} keys must be non-empty strings, got {key!r}")
        if isinstance(value, dict):
            _check_table(name, value, f"{where}.{key}")
        elif not _is_toml_value(value):
            raise ValueError(f"config: {where}.{key} must be a string, number, boolean or list, got {value!r}")


def _is_toml_value(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)):
        return True
    if isinstance(value, (list, tuple)):
        return all(_is_toml_value(v) or isinstance(v, dict) for v in value)
    return False


def _copy(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_copy(v) for v in value]
    return value


def learning_rate(config: TrainConfig, step: int) -> float:
    """The learning rate of update ``step`` (1-based) under ``config`` (:mod:`ebmlab.training.schedules`)."""
    return learning_rate_at(step, config.lr, config.lr_schedule, config.warmup_steps,
                            config.lr_decay_steps or config.steps)


def resolve_device(name: str) -> torch.device:
    """The device a ``device`` setting names (``auto``: CUDA when available); ``ValueError`` otherwise
    (:func:`ebmlab.distributed.resolve_device`, the one device rule)."""
    return _resolve_device(name, what="config: device")


def parse_value(text: str) -> Any:
    """A TOML value (``1``, ``0.5``, ``true``, ``[1, 2]``, ``"s"``), else the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


# ---------------------------------------------------------------------- TOML writer


def _toml_key(key: str) -> str:
    bare = key.replace("_", "").replace("-", "").isalnum() and key.isascii()
    return key if bare else json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """One TOML value: ``true``, ``3``, ``0.001``, ``inf``, ``"text"``, ``[1, 2]``, ``{ a = 1 }``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise ValueError(f"to_toml: cannot write {type(value).__name__} value {value!r}")


def to_toml(values: Mapping[str, Any], prefix: str = "") -> str:
    """A TOML document for ``values``: scalars and lists first, then one table per nested dict."""
    lines = [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items() if not isinstance(v, Mapping)]
    for key, value in values.items():
        if isinstance(value, Mapping):
            name = f"{prefix}{_toml_key(key)}"
            lines += ["", f"[{name}]", to_toml(value, prefix=f"{name}.").rstrip("\n")]
    return "\n".join(line for line in lines) + "\n"


__all__ = ["TrainConfig", "learning_rate", "parse_value", "resolve_device", "to_toml", "toml_value"]
