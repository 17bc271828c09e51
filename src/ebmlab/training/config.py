"""The training configuration: every setting of a run, serialisable to and from TOML.

``TrainConfig`` is a flat dataclass of primitives (plus three option tables: ``model_kwargs``,
``objective_kwargs``, ``sampler_kwargs``), so a run's ``config.toml`` repeats it exactly and a
checkpoint stores it as a plain dict. Values meaning "off" are 0 or "" rather than ``None``
(TOML has no null): ``num_samples = 0`` (the data set's default size), ``grad_clip = 0``,
``ema_decay = 0``, ``heldout_fraction = 0``, ``lr_decay_steps = 0`` (= ``steps``), ``out = ""``
(a fresh directory under ``runs/``).

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

OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = ("constant", "cosine")
PROGRESS = ("auto", "on", "off")
TABLES = ("model_kwargs", "objective_kwargs", "sampler_kwargs")


@dataclass
class TrainConfig:
    """Every setting of a training run (see the module docstring for the "off" values).

    Data: ``data`` (a spec for :func:`ebmlab.data.load_dataset`: a toy name, ``digits``, a
    file...), ``num_samples``, ``standardize`` (fit ``z = (x - μ)/s`` on the training split),
    ``heldout_fraction`` (kept out of training, for evaluation).
    Model: ``model`` (a name in :mod:`ebmlab.training.models`) and ``model_kwargs``.
    Objective: ``objective`` (a name in :mod:`ebmlab.objectives`) and ``objective_kwargs``.
    Sampler (contrastive objectives, and model samples for pictures): ``sampler`` (a name in
    :mod:`ebmlab.samplers`), ``sampler_steps`` (transitions per update), ``step_size``,
    ``noise_scale`` (ULA only) and ``sampler_kwargs`` (e.g. ``num_states``, ``num_leapfrog``).
    Optimisation: ``steps``, ``batch_size``, ``optimizer`` (adam | sgd), ``lr``, ``momentum``
    (sgd), ``betas`` (adam), ``weight_decay``, ``lr_schedule`` (constant | cosine),
    ``warmup_steps``, ``lr_decay_steps``, ``grad_clip`` (max global norm), ``ema_decay``. The
    cosine schedule spans ``lr_decay_steps or steps``: set ``lr_decay_steps`` when a run will be
    extended (``steps=k`` now, resumed to ``steps=N`` later) to keep its schedule unchanged.
    Run: ``seed``, ``device`` (cpu | cuda | cuda:N | auto), ``checkpoint_every``, ``out``,
    ``progress`` (auto | on | off), ``plots``, ``plot_samples``, ``plot_sampler_steps``.
    """

    data: str = "8gaussians"
    num_samples: int = 0
    standardize: bool = True
    heldout_fraction: float = 0.1

    model: str = "mlp"
    model_kwargs: dict = field(default_factory=dict)

    objective: str = "dsm"
    objective_kwargs: dict = field(default_factory=dict)

    sampler: str = "ula"
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
    out: str = ""
    progress: str = "auto"
    plots: bool = True
    plot_samples: int = 2000
    plot_sampler_steps: int = 500

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
                raise ValueError(f"config: {f.name} must be {kind.__name__}, got {value!r}")
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
        _check(self.progress in PROGRESS, "progress", self.progress, f"one of {', '.join(PROGRESS)}")
        _check(self.plot_samples >= 1, "plot_samples", self.plot_samples, ">= 1")
        _check(self.plot_sampler_steps >= 0, "plot_sampler_steps", self.plot_sampler_steps, ">= 0")
        for name in TABLES:
            _check_table(name, getattr(self, name))
        return self

    # ------------------------------------------------------------------ conversion

    def to_dict(self) -> dict[str, Any]:
        """A deep copy as plain dicts, lists and primitives."""
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> "TrainConfig":
        """Build and validate from a mapping; unknown keys are a ``ValueError`` listing the known ones."""
        unknown = sorted(set(values) - set(_KINDS))
        if unknown:
            raise ValueError(f"config: unknown setting(s) {', '.join(unknown)}; known: {', '.join(_KINDS)}")
        return cls(**{k: _copy(v) for k, v in values.items()}).validate()

    def to_toml(self) -> str:
        return to_toml(self.to_dict())

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
        if not path.is_file():
            raise FileNotFoundError(f"config file {str(path)!r} does not exist")
        return cls.from_toml(path.read_text(encoding="utf-8"), source=str(path))

    def save(self, path: str | os.PathLike) -> Path:
        """Write the config as TOML, atomically."""
        text = self.to_toml().encode("utf-8")
        return atomic_write(path, lambda f: f.write(text))

    def with_overrides(self, assignments: Iterable[str]) -> "TrainConfig":
        """A validated copy with ``key=value`` assignments applied (``--set``).

        ``value`` is read as a TOML value (``0.1``, ``true``, ``[64, 64]``, ``"text"``) and,
        failing that, taken as a bare string. ``table.key=value`` sets an entry of
        ``model_kwargs``, ``objective_kwargs`` or ``sampler_kwargs``.
        """
        values = self.to_dict()
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or not key:
                raise ValueError(f"--set expects key=value, got {item!r}")
            value = parse_value(raw.strip())
            table, dot, sub = key.partition(".")
            if dot:
                if table not in TABLES:
                    raise ValueError(f"--set {key}: only {', '.join(TABLES)} take dotted keys")
                values[table][sub] = value
            elif key in _KINDS:
                values[key] = value
            else:
                raise ValueError(f"--set: unknown setting {key!r}; known: {', '.join(_KINDS)}")
        return TrainConfig.from_dict(values)


_KINDS: dict[str, type] = {
    f.name: {"str": str, "int": int, "float": float, "bool": bool, "dict": dict, "list": list}[str(f.type)]
    for f in dataclasses.fields(TrainConfig)
}


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
    """The learning rate of update ``step`` (1-based): linear warm-up, then constant or cosine to 0.

    Cosine: ``lr · ½(1 + cos(π t))`` with ``t = (step - 1 - warmup) / (T - warmup)``, where
    ``T = lr_decay_steps or steps``.
    """
    if config.warmup_steps and step <= config.warmup_steps:
        return config.lr * step / config.warmup_steps
    if config.lr_schedule == "constant":
        return config.lr
    total = config.lr_decay_steps or config.steps
    span = max(total - config.warmup_steps, 1)
    t = min(max(step - 1 - config.warmup_steps, 0) / span, 1.0)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def resolve_device(name: str) -> torch.device:
    """The device a ``device`` setting names (``auto``: CUDA when available); ``ValueError`` otherwise."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"config: device must be cpu, cuda, cuda:N or auto, got {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"config: device {name!r} was requested but no CUDA device is available")
    return device


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
