"""Name -> kernel class registry. ``register`` refuses duplicate names."""

from __future__ import annotations

import dataclasses

from ebmlab.registry import Registry
from ebmlab.samplers.base import Kernel

_KERNELS: Registry[type[Kernel]] = Registry("sampler")


def register(cls: type[Kernel]) -> type[Kernel]:
    """Register a kernel class under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"register: {cls.__name__} has no name")
    return _KERNELS.add(cls.name, cls)


def get_kernel_class(name: str) -> type[Kernel]:
    """The kernel class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    return _KERNELS.get(name)


def kernel_options(name: str) -> tuple[str, ...]:
    """The hyperparameters the sampler ``name`` accepts (its dataclass fields), in order."""
    cls = get_kernel_class(name)
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else ()


def make_kernel(name: str, **hyperparameters) -> Kernel:
    """Instantiate the sampler ``name``; options that are ``None`` are dropped (the defaults apply).

    Raises ``ValueError`` naming any other option the kernel does not accept and listing those
    it does, e.g. ``make_kernel("gibbs", step_size=0.1)``.
    """
    cls = get_kernel_class(name)
    accepted = kernel_options(name)
    given = {k: v for k, v in hyperparameters.items() if v is not None}
    unknown = [k for k in given if k not in accepted]
    if unknown:
        raise ValueError(f"sampler {name!r} ({cls.__name__}): unknown option(s) {', '.join(map(repr, unknown))}; "
                         f"it accepts {', '.join(accepted) if accepted else 'no options'}")
    return cls(**given)


def available() -> list[str]:
    return _KERNELS.names()


