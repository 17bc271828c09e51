"""Name -> kernel class registry. ``register`` refuses duplicate names."""

from __future__ import annotations


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


def make_kernel(name: str, **hyperparameters) -> Kernel:
    """Instantiate the sampler ``name`` with the hyperparameters it accepts (others ignored)."""
    cls = get_kernel_class(name)
    fields = getattr(cls, "__dataclass_fields__", {})
    return cls(**{k: v for k, v in hyperparameters.items() if k in fields and v is not None})


def available() -> list[str]:
    return _KERNELS.names()


