"""Name -> kernel class registry. ``register`` refuses duplicate names."""

from __future__ import annotations


from .base import Kernel

_KERNELS: dict[str, type[Kernel]] = {}


def register(cls: type[Kernel]) -> type[Kernel]:
    """Register a kernel class under ``cls.name`` (usable as a decorator)."""
    if not cls.name:
        raise ValueError(f"register: {cls.__name__} has no name")
    if cls.name in _KERNELS and _KERNELS[cls.name] is not cls:
        raise ValueError(f"register: a sampler named {cls.name!r} already exists ({_KERNELS[cls.name].__name__})")
    _KERNELS[cls.name] = cls
    return cls


def get_kernel_class(name: str) -> type[Kernel]:
    """The kernel class registered as ``name``; ``ValueError`` listing the known names otherwise."""
    try:
        return _KERNELS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {', '.join(sorted(_KERNELS))}") from None


def make_kernel(name: str, **hyperparameters) -> Kernel:
    """Instantiate the sampler ``name`` with the hyperparameters it accepts (others ignored)."""
    cls = get_kernel_class(name)
    fields = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in hyperparameters.items() if k in fields and v is not None})


def available() -> list[str]:
    return sorted(_KERNELS)


