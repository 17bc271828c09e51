"""Scale-out with :mod:`torch.distributed` (see :mod:`ebmlab.distributed.context`).

This package depends on nothing else of ebmlab: :mod:`~ebmlab.distributed.context` holds the
process context and collectives, :mod:`~ebmlab.distributed.shards` the sharding arithmetic.
"""

from ebmlab.distributed.context import *  # noqa: F401,F403
from ebmlab.distributed.context import __all__  # noqa: F401
