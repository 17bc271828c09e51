"""Models named by an import spec — ``path/to/file.py:NAME`` or ``package.module:NAME`` — and how
a run records any model so that a fresh process can rebuild it.

``NAME`` is an ``nn.Module`` subclass or a factory, called with the run's model options
(``NAME(**kwargs)``, plus ``event_shape=`` when it has a parameter of that name), or an
``nn.Module`` instance (no options). A run stores, in its
checkpoint's ``model_info``, one of

* ``{"name": "mlp", "kwargs": {...}, "event_shape": [...], "factory": "pkg.mod:fn"}`` — a
  registered model (``factory`` lets a fresh process that has not registered the name — a
  model registered from a user's module — find it again);
* ``{"import": "pkg.mod:NAME" or "/abs/path/file.py:NAME", "kwargs": {...}, "event_shape": [...]}``;
* ``{"class": "__main__.Mine", ...}`` — a class that cannot be imported again (defined in a
  script): :func:`build_from_info` then says how to make the run loadable.

Rebuilding imports the named module (as ``ebmlab`` does for ``--energy file.py:NAME``) and reads
weights with ``torch.load(weights_only=True)``: nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any, Sequence

from torch import nn

from ebmlab.training.models import available_models, build_model, get_model_factory


def is_import_spec(text: str) -> bool:
    """Whether ``text`` names an object to import (``file.py:NAME`` / ``pkg.mod:NAME``)."""
    target, sep, attr = text.rpartition(":")
    return bool(sep and target and attr and attr.isidentifier())


def _one_line(err: BaseException) -> str:
    text = str(err).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(err).__name__}: {first}" if first else type(err).__name__


def _is_file_target(target: str) -> bool:
    return target.endswith(".py") or "/" in target or os.sep in target


def _import_file(spec: str, path: Path, what: str) -> object:
    if not path.is_file():
        raise FileNotFoundError(f"{what} {spec!r}: file {str(path)!r} not found")
    digest = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    module_name = f"ebmlab_user_{path.stem}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    loader_spec = importlib.util.spec_from_file_location(module_name, path)
    if loader_spec is None or loader_spec.loader is None:
        raise ValueError(f"{what} {spec!r}: cannot import {str(path)!r} as a Python file")
    module = importlib.util.module_from_spec(loader_spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up here
    try:
        loader_spec.loader.exec_module(module)
    except BaseException as err:
        del sys.modules[module_name]
        if not isinstance(err, Exception):
            raise
        raise ValueError(f"{what} {spec!r}: importing {str(path)!r} failed: {_one_line(err)}") from err
    return module


def import_object(spec: str, what: str = "model") -> object:
    """The object ``NAME`` of ``path/to/file.py:NAME`` or ``package.module:NAME``.

    Raises ``ValueError`` / ``FileNotFoundError`` with one line naming ``what`` and the spec.
    """
    target, sep, attr = spec.rpartition(":")
    if not sep or not target or not attr:
        raise ValueError(f"{what} {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    if _is_file_target(target):
        module = _import_file(spec, Path(target), what)
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as err:
            raise ValueError(f"{what} {spec!r}: cannot import module {target!r} ({_one_line(err)})") from err
        except Exception as err:
            raise ValueError(f"{what} {spec!r}: importing module {target!r} failed: {_one_line(err)}") from err
    if not hasattr(module, attr):
        raise ValueError(f"{what} {spec!r}: {target!r} has no attribute {attr!r}")
    return getattr(module, attr)


def canonical_spec(spec: str) -> str:
    """``spec`` with a file path made absolute (so a run loads from any working directory)."""
    target, _, attr = spec.rpartition(":")
    return f"{Path(target).resolve()}:{attr}" if _is_file_target(target) else spec


def _takes_event_shape(obj: object) -> bool:
    try:
        return "event_shape" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def build_user_model(spec: str, kwargs: dict[str, Any] | None = None, what: str = "model",
                     event_shape: Sequence[int] | None = None) -> nn.Module:
    """An ``nn.Module`` from the import ``spec``: ``NAME(**kwargs)``, or the instance ``NAME``.

    A class or factory with a parameter named ``event_shape`` also receives the data's event
    shape (``NAME(event_shape=..., **kwargs)``), as registered factories do.
    """
    kwargs = dict(kwargs or {})
    obj = import_object(spec, what)
    if isinstance(obj, nn.Module):
        if kwargs:
            raise ValueError(f"{what} {spec!r} is a module instance; it takes no options, got {sorted(kwargs)}")
        return obj
    if not callable(obj):
        raise ValueError(f"{what} {spec!r}: expected an nn.Module subclass, instance or factory, "
                         f"got {type(obj).__name__}")
    if event_shape is not None and "event_shape" not in kwargs and _takes_event_shape(obj):
        kwargs["event_shape"] = tuple(int(s) for s in event_shape)
    try:
        module = obj(**kwargs)
    except TypeError as err:
        raise ValueError(f"{what} {spec!r}: calling {getattr(obj, '__name__', 'it')}(**{kwargs}) failed: "
                         f"{_one_line(err)}") from err
    except Exception as err:
        raise ValueError(f"{what} {spec!r}: building it failed: {_one_line(err)}") from err
    if not isinstance(module, nn.Module):
        raise ValueError(f"{what} {spec!r}: the factory returned {type(module).__name__}, not an nn.Module")
    return module


def make_model(name: str, event_shape: Sequence[int], kwargs: dict[str, Any]) -> tuple[nn.Module, dict[str, Any]]:
    """``(model, model_info)`` for a registered name or an import spec (see the module docstring)."""
    shape = [int(s) for s in event_shape]
    if is_import_spec(name):
        model = build_user_model(name, kwargs, event_shape=shape)
        spec = canonical_spec(name)
        if getattr(model, "event_shape", None) is None:
            try:
                model.event_shape = tuple(shape)
            except AttributeError:
                pass
        return model, {"import": spec, "kwargs": dict(kwargs), "event_shape": shape}
    info: dict[str, Any] = {"name": name, "kwargs": dict(kwargs), "event_shape": shape}
    factory = get_model_factory(name)
    where = getattr(factory, "__module__", "__main__")
    qualname = getattr(factory, "__qualname__", "<locals>")
    if where not in (None, "__main__") and not where.startswith("ebmlab_user_") and "<locals>" not in qualname:
        info["factory"] = f"{where}:{qualname}"  # found again where the name is not registered
    return build_model(name, shape, **kwargs), info


def _primitive(value: Any) -> bool:
    if isinstance(value, (str, bool, int, float)) or value is None:
        return True
    if isinstance(value, (list, tuple)):
        return all(_primitive(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _primitive(v) for k, v in value.items())
    return False


def describe_module(module: nn.Module, spec: str | None, kwargs: dict[str, Any] | None,
                    event_shape: Sequence[int]) -> dict[str, Any]:
    """The ``model_info`` of a module trained by :func:`ebmlab.training.fit`.

    ``spec`` given: that import spec with ``kwargs``. Otherwise the module's class, when its
    module can be imported again (not ``__main__``), with ``kwargs`` or the module's ``config``
    attribute (the constructor arguments, as ebmlab's networks keep them).
    """
    shape = [int(s) for s in event_shape]
    if kwargs is None:
        config = getattr(module, "config", None)
        kwargs = dict(config) if isinstance(config, dict) and _primitive(config) else {}
    if spec is not None:
        if not is_import_spec(spec):
            raise ValueError(f"fit: model_spec must be path/to/file.py:NAME or package.module:NAME, got {spec!r}")
        return {"import": canonical_spec(spec), "kwargs": dict(kwargs), "event_shape": shape}
    cls = type(module)
    where = cls.__module__
    if where == "__main__" or "<locals>" in cls.__qualname__ or where.startswith("ebmlab_user_"):
        return {"class": f"{where}.{cls.__qualname__}", "kwargs": dict(kwargs), "event_shape": shape}
    return {"import": f"{where}:{cls.__qualname__}", "kwargs": dict(kwargs), "event_shape": shape}


def build_from_info(info: dict[str, Any], where: str = "run") -> nn.Module:
    """Rebuild the (untrained) model a checkpoint's ``model_info`` describes."""
    shape = tuple(int(s) for s in info.get("event_shape", ()))
    kwargs = dict(info.get("kwargs") or {})
    if "name" in info:
        if info["name"] in available_models() or "factory" not in info:
            return build_model(info["name"], shape, **kwargs)
        factory = import_object(info["factory"], what=f"{where}: model {info['name']!r}")
        return factory(shape, **kwargs)
    if "import" in info:
        try:
            model = build_user_model(info["import"], kwargs, what=f"{where}: model", event_shape=shape or None)
        except ValueError as err:
            if "required" not in str(err):
                raise
            recorded = f"only the arguments {kwargs}" if kwargs else "no arguments"
            raise ValueError(f"{err}; the run recorded {recorded} for it (the module keeps no config of its "
                             f"constructor's arguments): to make such a run loadable, pass fit(..., model_spec='package.module:"
                             f"factory', model_kwargs={{...}}) naming a function that rebuilds it") from None
        if getattr(model, "event_shape", None) is None and shape:
            try:
                model.event_shape = shape
            except AttributeError:
                pass
        return model
    raise ValueError(f"{where}: the model class {info.get('class', '?')} was defined in a script, so a new process "
                     f"cannot import it; define it in an importable module or a file, and pass "
                     f"model_spec='path/to/file.py:NAME' (and model_kwargs) to fit")


__all__ = ["build_from_info", "build_user_model", "canonical_spec", "describe_module", "import_object",
           "is_import_spec", "make_model"]
