"""Name -> objective class registry. ``register_objective`` refuses duplicate names."""

from __future__ import annotations

from typing import Any

from ebmlab.registry import Registry, check_options
from ebmlab.objectives.base import Objective

_OBJECTIVES: Registry[type[Objective]] = Registry("objective")


def register_objective(cls: type[Objective]) -> type[Objective]:
    """Register an objective class under ``cls.name`` (usable as a decorator)."""
    if not getattr(cls, "name", ""):
        raise ValueError(f"register_objective: {cls.__name__} has no name")
    return _OBJECTIVES.add(cls.name, cls)


def get_objective_class(name: str) -> type[Objective]:
    """The class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    return _OBJECTIVES.get(name)


def make_objective(name: str, **kwargs: Any) -> Objective:
    """Instantiate objective ``name``; an option it does not take is a ``ValueError``."""
    cls = get_objective_class(name)
    check_options("objective", name, cls, kwargs)
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ValueError(f"objective {name!r}: bad options {sorted(kwargs)}: {err}") from None


def available_objectives() -> list[str]:
    """Registered objective names, sorted."""
    return _OBJECTIVES.names()
