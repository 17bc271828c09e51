"""A name -> component table shared by the sampler, objective and model registries.

``Registry(kind)`` maps names to classes or factories. Registering a *different* component
under a taken name is refused (re-registering the same one is a no-op, so modules can be
re-imported), and an unknown name is a ``ValueError`` that lists the known ones.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Generic, Mapping, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Components of one ``kind`` ("sampler", "objective", "model") by name."""

    def __init__(self, kind: str):
        self.kind = kind
        self._items: dict[str, T] = {}

    def add(self, name: str, item: T) -> T:
        """Register ``item`` under ``name``; returns ``item`` (usable inside decorators)."""
        if not isinstance(name, str) or not name:
            raise ValueError(f"register {self.kind}: the name must be a non-empty string, got {name!r}")
        taken = self._items.get(name)
        if taken is not None and taken is not item:
            shown = getattr(taken, "__name__", repr(taken))
            raise ValueError(f"register {self.kind}: a {self.kind} named {name!r} already exists ({shown})")
        self._items[name] = item
        return item

    def get(self, name: str) -> T:
        """The component registered as ``name``; ``ValueError`` listing the known names otherwise."""
        try:
            return self._items[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items


def accepted_options(factory: Callable, skip: int = 0) -> tuple[str, ...] | None:
    """The keyword options ``factory`` takes (after its first ``skip`` positional parameters), or
    ``None`` when it takes ``**kwargs`` (anything goes) or has no inspectable signature."""
    try:
        params = list(inspect.signature(factory).parameters.values())[skip:]
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    return tuple(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))


def check_options(kind: str, name: str, factory: Callable, options: Mapping[str, Any], skip: int = 0) -> None:
    """``ValueError`` naming the options ``factory`` does not take and listing those it does."""
    accepted = accepted_options(factory, skip)
    if accepted is None:
        return
    unknown = [k for k in options if k not in accepted]
    if unknown:
        raise ValueError(f"{kind} {name!r}: unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"it accepts {', '.join(accepted) if accepted else 'no options'}")
