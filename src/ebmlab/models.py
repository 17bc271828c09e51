"""Model registry: a name -> factory table that rebuilds energies from plain config values.

A factory is called as ``factory(event_shape, **kwargs)`` and returns an energy module
``(B, *event_shape) -> (B,)``; ``event_shape`` comes from the data, ``kwargs`` from the run's
config (primitives only: ints, floats, bools, strings, lists). Checkpoints therefore hold only
the name, the kwargs and the weights — loading a run never unpickles code.

Built in: ``"mlp"`` (:class:`~ebmlab.energy.neural.MLPEnergy`, flattening image events) and
``"conv"`` (:class:`~ebmlab.energy.neural.ConvEnergy`). Other modules register their own
models with :func:`register_model`; the modules listed in ``PLUGIN_MODULES`` are imported
on the first look-up so that their models are found by name when a run is loaded.
"""

from __future__ import annotations

import importlib
import math
from typing import Callable, Sequence

import torch
from torch import nn

from .energy.base import Energy
from .energy.neural import ConvEnergy, MLPEnergy
from .registry import Registry

ModelFactory = Callable[..., nn.Module]

_MODELS: Registry[ModelFactory] = Registry("model")

#: Modules that register models when imported (tried once, silently skipped when absent).
PLUGIN_MODULES: tuple[str, ...] = (
    "ebmlab.energy.rbm",
    "ebmlab.score_models",
)
_plugins_loaded = False


def register_model(name: str, factory: ModelFactory) -> ModelFactory:
    """Register ``factory(event_shape, **kwargs) -> nn.Module`` under ``name``; duplicates refused."""
    return _MODELS.add(name, factory)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in PLUGIN_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as err:
            if err.name is None or not module.startswith(err.name):
                raise


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _load_plugins()
    return _MODELS.names()


def get_model_factory(name: str) -> ModelFactory:
    """The factory registered as ``name``; ``ValueError`` listing the known names otherwise."""
    _load_plugins()
    return _MODELS.get(name)


def build_model(name: str, event_shape: Sequence[int], **kwargs) -> nn.Module:
    """Build model ``name`` for events of shape ``event_shape`` with the config ``kwargs``.

    Raises ``ValueError`` for an unknown name or a keyword the factory does not accept.
    """
    factory = get_model_factory(name)
    try:
        model = factory(tuple(int(s) for s in event_shape), **kwargs)
    except TypeError as err:
        raise ValueError(f"model {name!r}: bad options {kwargs}: {err}") from None
    if getattr(model, "event_shape", None) is None:
        try:
            model.event_shape = tuple(int(s) for s in event_shape)
        except AttributeError:
            pass
    return model


class FlattenedEnergy(Energy):
    """``E(x) = inner(x.flatten(1))``: runs a vector energy on events of any shape.

    Shapes: x ``(B, *event_shape)`` -> ``(B,)``.
    """

    def __init__(self, inner: nn.Module, event_shape: Sequence[int]):
        super().__init__()
        self.inner = inner
        self.event_shape = tuple(int(s) for s in event_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.flatten(1))


def _mlp(event_shape: tuple[int, ...], hidden: Sequence[int] = (128, 128), spectral_norm: bool = False) -> nn.Module:
    net = MLPEnergy(dim=math.prod(event_shape), hidden=tuple(hidden), spectral_norm=spectral_norm)
    return net if len(event_shape) == 1 else FlattenedEnergy(net, event_shape)


def _conv(event_shape: tuple[int, ...], base_width: int = 32, spectral_norm: bool = False) -> nn.Module:
    if len(event_shape) == 2:
        event_shape = (1, *event_shape)
        net = ConvEnergy(*event_shape, base_width=base_width, spectral_norm=spectral_norm)
        return _Unsqueezed(net, event_shape[1:])
    if len(event_shape) != 3:
        raise ValueError(f"model 'conv' needs image events (C, H, W) or (H, W), got event shape {event_shape}")
    return ConvEnergy(*event_shape, base_width=base_width, spectral_norm=spectral_norm)


class _Unsqueezed(Energy):
    """A ``(C=1, H, W)`` energy applied to ``(B, H, W)`` images."""

    def __init__(self, inner: nn.Module, event_shape: Sequence[int]):
        super().__init__()
        self.inner = inner
        self.event_shape = tuple(int(s) for s in event_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.unsqueeze(1))


register_model("mlp", _mlp)
register_model("conv", _conv)

__all__ = ["FlattenedEnergy", "PLUGIN_MODULES", "available_models", "build_model", "get_model_factory", "register_model"]
