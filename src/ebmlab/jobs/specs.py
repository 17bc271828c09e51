"""Energy SPECs: turn a short string into an energy module, its event shape and its support.

A SPEC is one of

* a built-in target (see :func:`list_builtin`): ``gaussian:D`` (``N(0, I_D)``),
  ``gaussian2d-corr`` (``N(0, Σ)`` with ``Σ = [[1, ρ], [ρ, 1]]``, ``ρ = 0.8``), ``gmm8``,
  ``banana``, ``funnel`` / ``funnel:D``, ``ising:L`` / ``ising:L:J`` / ``ising:L:J:h``,
  ``potts:L:K`` / ``potts:L:K:J``;
* ``path/to/file.py:NAME`` or ``package.module:NAME`` naming an ``nn.Module`` subclass
  (instantiated with no arguments), an ``nn.Module`` instance, or a factory taking no
  arguments that returns one;
* a run directory (one holding ``checkpoint.pt``), loaded with :func:`ebmlab.training.loading.load`.

``resolve_energy(spec, event_shape)`` returns ``(energy, event_shape, support)`` after a trial
forward pass on a batch of two; for a module that declares no event shape the shape may come
from ``shape_from`` (the ``--init`` file or the ``--data`` of a command), and for one that
declares no support, from ``support`` (``--support binary`` or ``categorical:K``,
:func:`parse_support`), so a module that fails or returns the wrong shape is refused
here, with a message naming the SPEC, rather than deep inside a sampler. Every problem is a
``ValueError`` (or ``FileNotFoundError``) with a one-line message.
"""

from __future__ import annotations

import inspect
import math
import os
import re
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn

from ebmlab.energy import Banana, Funnel, Gaussian, Ising, Potts, eight_gaussians
from ebmlab.energy.base import Energy, check_energy_output
from ebmlab.training.user_models import import_object

SUPPORTS = ("real", "binary", "categorical")
CORRELATION = 0.8  # ρ of ``gaussian2d-corr``
TRIAL_BATCH = 2


def _int_arg(spec: str, name: str, text: str, minimum: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise ValueError(f"energy {spec!r}: {name} must be an integer, got {text!r}") from None
    if value < minimum:
        raise ValueError(f"energy {spec!r}: {name} must be >= {minimum}, got {value}")
    if value >= 2**31:
        raise ValueError(f"energy {spec!r}: {name} must be below 2**31, got {value}")
    return value


def _float_arg(spec: str, name: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"energy {spec!r}: {name} must be a number, got {text!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"energy {spec!r}: {name} must be a finite number, got {text!r}")
    return value


def _gaussian(spec: str, args: list[str]) -> nn.Module:
    return Gaussian(torch.zeros(_int_arg(spec, "D", args[0], 1)))


def _gaussian_corr(spec: str, args: list[str]) -> nn.Module:
    cov = torch.tensor([[1.0, CORRELATION], [CORRELATION, 1.0]])
    return Gaussian(torch.zeros(2), covariance=cov)


def _funnel(spec: str, args: list[str]) -> nn.Module:
    return Funnel(dim=_int_arg(spec, "D", args[0], 2)) if args else Funnel()


def _ising(spec: str, args: list[str]) -> nn.Module:
    size = _int_arg(spec, "L", args[0], 2)
    coupling = _float_arg(spec, "J", args[1]) if len(args) > 1 else 0.3
    field = _float_arg(spec, "h", args[2]) if len(args) > 2 else 0.0
    return Ising(size, coupling, field)


def _potts(spec: str, args: list[str]) -> nn.Module:
    size, k = _int_arg(spec, "L", args[0], 2), _int_arg(spec, "K", args[1], 2)
    coupling = _float_arg(spec, "J", args[2]) if len(args) > 2 else 0.5
    return Potts(size, k, coupling)


# name -> (syntax, description, min args, max args, builder)
_BUILTINS: dict[str, tuple[str, str, int, int, Callable[[str, list[str]], nn.Module]]] = {
    "gaussian": ("gaussian:D", "standard Gaussian N(0, I) in D dimensions", 1, 1, _gaussian),
    "gaussian2d-corr": ("gaussian2d-corr", f"2-D Gaussian with correlation {CORRELATION}", 0, 0, _gaussian_corr),
    "gmm8": ("gmm8", "8 Gaussians on a ring of radius 2 (std 0.2)", 0, 0, lambda s, a: eight_gaussians()),
    "banana": ("banana", "twisted Gaussian (Haario et al. 1999), a=1, b=1", 0, 0, lambda s, a: Banana()),
    "funnel": ("funnel[:D]", "Neal's funnel in D dimensions (default 2), scale 3", 0, 1, _funnel),
    "ising": ("ising:L[:J[:h]]", "L×L periodic Ising model, coupling J (0.3), field h (0)", 1, 3, _ising),
    "potts": ("potts:L:K[:J]", "L×L periodic K-state Potts model, coupling J (0.5)", 2, 3, _potts),
}


def list_builtin() -> list[str]:
    """The built-in SPEC syntaxes, e.g. ``["gaussian:D", "gaussian2d-corr", ...]``."""
    return [entry[0] for entry in _BUILTINS.values()]


def describe_builtin() -> dict[str, str]:
    """``{syntax: one-line description}`` for every built-in SPEC."""
    return {entry[0]: entry[1] for entry in _BUILTINS.values()}


def _builtin(spec: str) -> nn.Module | None:
    name, *args = spec.split(":")
    if name not in _BUILTINS:
        return None
    syntax, _, low, high, build = _BUILTINS[name]
    if not low <= len(args) <= high:
        raise ValueError(f"energy {spec!r}: expected the form {syntax}")
    try:
        return build(spec, args)
    except (RuntimeError, MemoryError) as err:  # the allocator refused the energy's own tensors
        found = re.search(r"tried to allocate (\d+) bytes", str(err))
        if found is None and not isinstance(err, MemoryError):
            raise
        need = f" ({int(found[1]) / 1e9:.3g} GB for one of its tensors)" if found else ""
        raise ValueError(f"energy {spec!r} is too large for this machine's memory{need}; choose a smaller size") \
            from None


def _instantiate(spec: str, obj: object) -> nn.Module:
    """An ``nn.Module`` from a subclass, an instance, or a no-argument factory."""
    if isinstance(obj, nn.Module):
        return obj
    if not callable(obj):
        raise ValueError(f"energy {spec!r}: expected an nn.Module subclass, instance or factory, got {type(obj).__name__}")
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        try:
            needs_args = any(p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                             for p in inspect.signature(obj).parameters.values())
        except (TypeError, ValueError):
            needs_args = False
        if isinstance(obj, type) or needs_args:
            raise ValueError(f"energy {spec!r}: expected an nn.Module subclass, instance or a factory taking no "
                             f"arguments, got {getattr(obj, '__name__', type(obj).__name__)}")
    try:
        module = obj()
    except Exception as err:
        raise ValueError(f"energy {spec!r}: calling {getattr(obj, '__name__', 'it')}() failed: {_one_line(err)}") from err
    if not isinstance(module, nn.Module):
        raise ValueError(f"energy {spec!r}: the factory returned {type(module).__name__}, not an nn.Module")
    return module


def _from_object_spec(spec: str) -> nn.Module:
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(
            f"unknown energy {spec!r}; use a built-in ({', '.join(list_builtin())}), path/to/file.py:NAME, "
            "package.module:NAME or a run directory"
        )
    return _instantiate(spec, import_object(spec, what="energy"))


def load_training_run(run_dir: str | os.PathLike):
    """The run in ``run_dir`` (:func:`ebmlab.training.loading.load_run`): model, energy, config,
    data splits."""
    from ebmlab.training.loading import load_run

    return load_run(run_dir)


def _from_run_dir(spec: str, run_dir: Path) -> tuple[nn.Module, tuple[int, ...] | None]:
    if not (run_dir / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"energy {spec!r}: directory {str(run_dir)!r} has no checkpoint.pt (not a run directory)")
    try:
        from ebmlab.training.loading import load
    except ImportError as err:
        raise ValueError(f"energy {spec!r}: loading run directories needs ebmlab.training.loading, which is not "
                         f"available ({_one_line(err)})") from err
    try:
        loaded = load(run_dir)
    except Exception as err:
        raise ValueError(f"energy {spec!r}: could not load the run directory: {_one_line(err)}") from err
    module = loaded if isinstance(loaded, nn.Module) else None
    for attr in ("energy", "model"):
        if module is None and isinstance(getattr(loaded, attr, None), nn.Module):
            module = getattr(loaded, attr)
    if module is None:
        raise ValueError(f"energy {spec!r}: ebmlab.training.loading.load returned {type(loaded).__name__}, with no energy module")
    shape = getattr(module, "event_shape", None) or getattr(loaded, "event_shape", None)
    if shape is None:
        config = getattr(loaded, "config", None)
        shape = config.get("event_shape") if isinstance(config, dict) else None
    return module, (tuple(int(s) for s in shape) if shape is not None else None)


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def support_of(energy: nn.Module) -> tuple[str, int]:
    """``(support, num_states)`` declared by an energy; ``("real", 2)`` when it declares none."""
    support = getattr(energy, "support", "real")
    num_states = int(getattr(energy, "num_states", 2))
    return support, num_states


def parse_support(text: str | None) -> tuple[str, int] | None:
    """``"binary"`` -> ``("binary", 2)``, ``"categorical:K"`` -> ``("categorical", K)`` (K >= 2);
    ``None`` -> ``None``. ``ValueError`` naming ``--support`` otherwise."""
    if text is None:
        return None
    name, _, k = str(text).strip().partition(":")
    if name == "binary" and not k:
        return "binary", 2
    if name == "categorical" and k.strip().isdigit() and 2 <= int(k) < 2**31:
        return "categorical", int(k)
    raise ValueError(f"--support must be binary or categorical:K with K >= 2 states (e.g. categorical:3), got {text!r}")


def declared_support(energy: nn.Module) -> str | None:
    """The ``support`` an energy declares itself (instance or class attribute), or ``None`` when it
    declares none (a plain module, or an :class:`~ebmlab.energy.base.Energy` keeping the base's ``real``)."""
    if "support" in vars(energy):
        return vars(energy)["support"]
    for cls in type(energy).__mro__:
        if "support" in vars(cls):
            return None if cls is Energy else vars(cls)["support"]
    return None


def apply_support(spec: str, energy: nn.Module, support: tuple[str, int], text: str | None = None,
                  declared: str | None = None) -> None:
    """Give ``energy`` the ``support`` (and ``num_states``) of ``--support`` when it declares none
    (sets the attributes on the module); ``ValueError`` when it declares a different one.
    ``declared``: the support the energy is known to have though it does not say so itself (a
    built-in target's ``real``)."""
    name, k = support
    given = text or (name if name == "binary" else f"{name}:{k}")
    declared = declared_support(energy) or declared
    if declared is None:
        energy.support, energy.num_states = name, k
        return
    states = int(getattr(energy, "num_states", 2))
    if declared != name or (name == "categorical" and states != k):
        own = declared if declared != "categorical" else f"categorical:{states}"
        raise ValueError(f"energy {spec!r} declares support {own}, but --support {given} was given; drop --support")


def trial_batch(event_shape: Sequence[int], support: str, num_states: int, batch: int = TRIAL_BATCH) -> torch.Tensor:
    """A small deterministic batch ``(batch, *event_shape)`` of valid states for ``support``."""
    generator = torch.Generator().manual_seed(0)
    shape = (batch, *event_shape)
    if support == "real":
        return torch.randn(shape, generator=generator)
    return torch.randint(0, num_states, shape, generator=generator).to(torch.get_default_dtype())


def check_forward(spec: str, energy: nn.Module, event_shape: Sequence[int], support: str, num_states: int) -> None:
    """Evaluate ``energy`` on a trial batch; ``ValueError`` naming ``spec`` if it fails or has the wrong shape."""
    x = trial_batch(event_shape, support, num_states)
    device = next((t.device for t in [*energy.parameters(), *energy.buffers()]), None)
    if device is not None:
        x = x.to(device)
    try:
        with torch.no_grad():
            out = energy(x)
    except Exception as err:
        raise ValueError(f"energy {spec!r} failed on a trial batch of shape {tuple(x.shape)}: {_one_line(err)}") from err
    check_energy_output(out, x, where=f"energy {spec!r}")


def parse_event_shape(text: str | None) -> tuple[int, ...] | None:
    """``"1,28,28"`` -> ``(1, 28, 28)``; ``None`` or ``""`` -> ``None``."""
    if text is None or not text.strip():
        return None
    parts = [p.strip() for p in text.strip().strip("()[]").split(",") if p.strip()]
    try:
        shape = tuple(int(p) for p in parts)
    except ValueError:
        raise ValueError(f"--event-shape must be comma-separated positive integers like 1,28,28, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise ValueError(f"--event-shape must be comma-separated positive integers like 1,28,28, got {text!r}")
    return shape


def resolve_energy(spec: str, event_shape: Sequence[int] | None = None, support: str | None = None,
                   shape_from: Callable[[], Sequence[int] | None] | None = None) -> tuple[nn.Module, tuple[int, ...], str]:
    """Resolve ``spec`` to ``(energy, event_shape, support)``.

    ``event_shape`` is needed only when the energy has no ``event_shape`` attribute; when
    both are given they must agree. Without either, ``shape_from()`` (e.g. the shape of an
    ``--init`` file or of ``--data``) gives it. ``support`` is ``"real"``, ``"binary"`` or
    ``"categorical"`` (from the energy's ``support`` attribute, default ``"real"``); the
    argument ``support`` (``"binary"`` or ``"categorical:K"``, :func:`parse_support`) declares
    it for a module that declares none, and must agree with one that does (a built-in target
    always does). Numeric SPEC parameters must be finite (``ising:4:nan`` is refused here). The
    energy is checked by a forward pass on a batch of two, which must give shape ``(2,)``
    (or ``(2, 1)``). Raises ``ValueError`` / ``FileNotFoundError`` naming ``spec``.
    """
    spec = str(spec).strip()
    if not spec:
        raise ValueError("energy: empty SPEC; use a built-in name, path/to/file.py:NAME, package.module:NAME or a run directory")
    given_support = parse_support(support)
    declared_by_run = builtin = None
    if os.path.isdir(spec):
        energy, declared_by_run = _from_run_dir(spec, Path(spec))
    else:
        energy = builtin = _builtin(spec)
        if energy is None:
            energy = _from_object_spec(spec)
    declared = getattr(energy, "event_shape", None) or declared_by_run
    declared = tuple(int(s) for s in declared) if declared is not None else None
    given = tuple(int(s) for s in event_shape) if event_shape is not None else None
    if declared is not None and given is not None and declared != given:
        raise ValueError(f"energy {spec!r} has event shape {declared}, but --event-shape {given} was given")
    shape = declared if declared is not None else given
    if shape is None and shape_from is not None:
        found = shape_from()
        shape = tuple(int(s) for s in found) if found is not None else None
    if shape is None:
        raise ValueError(f"energy {spec!r} does not declare an event_shape; pass --event-shape (e.g. 2 or 1,28,28), "
                         f"or a start --init FILE.npy (sample) or --data (evaluate) of that shape")
    if given_support is not None:  # a built-in target's support is its own, declared or not
        apply_support(spec, energy, given_support, support,
                      declared=support_of(energy)[0] if builtin is not None else None)
    support, num_states = support_of(energy)
    if support not in SUPPORTS:
        raise ValueError(f"energy {spec!r}: support must be one of {', '.join(SUPPORTS)}, got {support!r}")
    if support == "categorical" and num_states < 2:
        raise ValueError(f"energy {spec!r}: num_states must be >= 2 for a categorical support, got {num_states}")
    check_forward(spec, energy, shape, support, num_states)
    return energy, shape, support


__all__ = ["apply_support", "declared_support", "describe_builtin", "list_builtin", "load_training_run",
           "parse_event_shape", "parse_support", "resolve_energy", "support_of", "trial_batch"]
