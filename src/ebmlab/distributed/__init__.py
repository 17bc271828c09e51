"""Scale-out with :mod:`torch.distributed` (see :mod:`ebmlab.distributed.context`).

This package depends on nothing else of ebmlab: :mod:`~ebmlab.distributed.context` holds the
process context and collectives, :mod:`~ebmlab.distributed.ddp` the DDP wrapper and
:mod:`~ebmlab.distributed.shards` the sharding arithmetic.
"""

from ebmlab.distributed.context import *  # noqa: F401,F403
from ebmlab.distributed.context import __all__ as _context_all
from ebmlab.distributed.ddp import wrap_ddp

__all__ = [*_context_all, "wrap_ddp"]
