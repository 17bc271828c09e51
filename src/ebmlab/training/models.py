"""Model registry: a name -> factory table that rebuilds energies from plain config values.

A factory is called as ``factory(event_shape, **kwargs)`` and returns an energy module
``(B, *event_shape) -> (B,)``; ``event_shape`` comes from the data, ``kwargs`` from the run's
config (primitives only: ints, floats, bools, strings, lists). Checkpoints therefore hold only
the name, the kwargs and the weights — loading a run never unpickles code.

Built in, registered explicitly below: ``mlp`` and ``conv`` (:mod:`ebmlab.energy.neural`),
``rbm`` (:mod:`ebmlab.energy.rbm`), ``ncsn_mlp`` and ``ncsn_conv``
(:mod:`ebmlab.energy.noise_conditional`). Other code registers with :func:`register_model`;
installed packages add models through the ``ebmlab.models`` entry-point group
(``[project.entry-points."ebmlab.models"] mine = "pkg.module:factory"``), loaded on the first
look-up.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Callable, Sequence

from torch import nn

from ebmlab.energy.classifier import jem_energy
from ebmlab.energy.neural import conv_energy, mlp_energy
from ebmlab.energy.noise_conditional import ncsn_conv, ncsn_mlp
from ebmlab.energy.rbm import make_rbm
from ebmlab.registry import Registry, check_options

ModelFactory = Callable[..., nn.Module]

#: The entry-point group through which installed packages register models.
ENTRY_POINT_GROUP = "ebmlab.models"

_MODELS: Registry[ModelFactory] = Registry("model")
_entry_points_loaded = False


def register_model(name: str, factory: ModelFactory) -> ModelFactory:
    """Register ``factory(event_shape, **kwargs) -> nn.Module`` under ``name``; duplicates refused."""
    return _MODELS.add(name, factory)


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    _entry_points_loaded = True
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name not in _MODELS:
            register_model(point.name, point.load())


def available_models() -> list[str]:
    """Registered model names, sorted."""
    _load_entry_points()
    return _MODELS.names()


def get_model_factory(name: str) -> ModelFactory:
    """The factory registered as ``name``; ``ValueError`` listing the known names otherwise."""
    _load_entry_points()
    return _MODELS.get(name)


def build_model(name: str, event_shape: Sequence[int], **kwargs) -> nn.Module:
    """Build model ``name`` for events of shape ``event_shape`` with the config ``kwargs``.

    Raises ``ValueError`` for an unknown name or a keyword the factory does not accept.
    """
    factory = get_model_factory(name)
    check_options("model", name, factory, kwargs, skip=1)  # the first parameter is event_shape
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


for _name, _factory in (("mlp", mlp_energy), ("conv", conv_energy), ("rbm", make_rbm),
                        ("ncsn_mlp", ncsn_mlp), ("ncsn_conv", ncsn_conv)):
    register_model(_name, _factory)
register_model("jem", jem_energy)  # a classifier read as an energy (ebmlab.energy.classifier)

__all__ = ["ENTRY_POINT_GROUP", "available_models", "build_model", "get_model_factory", "register_model"]
