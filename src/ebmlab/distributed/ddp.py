"""Data parallelism: wrap an energy in :class:`torch.nn.parallel.DistributedDataParallel` when
a process group is joined, so gradients are averaged over ranks during ``backward()``."""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from ebmlab.distributed.context import world_size


def wrap_ddp(module: nn.Module, find_unused_parameters: bool = False) -> nn.Module:
    """``DistributedDataParallel(module)`` in a process group; ``module`` itself otherwise.

    The wrapper averages the gradients of ``module``'s parameters over ranks during
    ``backward()`` and starts every rank from rank 0's parameters and buffers. Buffers are
    not re-broadcast at each forward (energies evaluated many times per step by samplers
    would pay a collective per call). ``find_unused_parameters=True`` is needed when some
    parameters get no gradient (score-matching losses do not depend on an energy's offset).
    """
    if world_size() == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"wrap_ddp: {type(module).__name__} has no parameter that requires grad")
    device = params[0].device
    options: dict[str, Any] = {"find_unused_parameters": bool(find_unused_parameters)}
    if device.type == "cuda":
        options["device_ids"] = [device.index if device.index is not None else torch.cuda.current_device()]
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        options["forward_sync_buffers"] = False
    else:  # torch < 2.13
        options["broadcast_buffers"] = False
    return DistributedDataParallel(module, **options)


__all__ = ["wrap_ddp"]
