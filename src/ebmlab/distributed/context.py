"""Scale-out with :mod:`torch.distributed`: process context, collectives and sharding arithmetic.

Every multi-process run of ebmlab is launched by ``torchrun`` (``python -m
torch.distributed.run --nproc-per-node N ...``), which starts N copies of the same program and
describes each one through environment variables: ``RANK`` (0..N-1), ``WORLD_SIZE`` (N),
``LOCAL_RANK`` (the index on this machine, which picks the GPU) and the rendezvous address
``MASTER_ADDR`` / ``MASTER_PORT``. :func:`init_distributed` reads them and joins the process
group; without them (or with ``WORLD_SIZE=1``) the program is one ordinary process and every
function here degrades to its single-process meaning (``rank() == 0``, collectives return their
input), so library code calls them unconditionally.

Work is split in one of two ways:

* **data parallel** (training): each rank draws the same global batch and keeps its shard
  (:func:`shard_indices`); gradients are averaged by :func:`wrap_ddp` (DistributedDataParallel),
  so with per-example mean losses the update equals the one-process update on the whole batch;
* **embarrassingly parallel** (sampling chains, AIS runs): each rank runs
  :func:`split_count` of the total with its own random stream (:func:`rank_seed`) and the
  results are concatenated across ranks (:func:`gather_tensor`).

Estimates that combine runs are recomputed from the gathered runs, never averaged over ranks:
:func:`log_mean_exp_across_ranks` is ``log (1/N) Σ_n w_n`` over all ``N = Σ_r N_r`` weights,
which differs from the mean of per-rank ``log Ẑ_r`` (lower in expectation by concavity of the
log, so more biased, and mis-weighted when the ranks hold different numbers of runs).

Backends: ``gloo`` on CPU; on a CUDA machine ``cpu:gloo,cuda:nccl`` (NCCL for GPU tensors, gloo
for the small CPU-side exchanges). Reference: Li et al. 2020, "PyTorch Distributed: Experiences
on Accelerating Data Parallel Training".
"""

from __future__ import annotations

import atexit
import math
import os
import zlib
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Callable, Mapping, TypeVar

import torch
import torch.distributed as dist

from ebmlab.distributed.shards import check_divisible, rank_seed, shard_bounds, shard_indices, split_count

#: The variables ``torchrun`` sets for each process.
ENV_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
#: Those a process of a multi-process run (``WORLD_SIZE > 1``) cannot start without.
RENDEZVOUS_VARS = ("RANK", "MASTER_ADDR", "MASTER_PORT")
_LAUNCH_HINT = "launch with torchrun (python -m torch.distributed.run --nproc-per-node N ...)"

T = TypeVar("T")


class DistributedSetupError(RuntimeError):
    """The environment does not describe a usable process group (a missing or bad variable)."""


class RemoteRankError(RuntimeError):
    """Another rank failed; raised on the ranks that did not, so that none waits forever."""

    def __init__(self, rank: int, kind: str, message: str):
        self.rank, self.kind, self.remote_message = rank, kind, message
        super().__init__(f"rank {rank} failed ({kind}): {message}")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: ``rank`` of ``world_size``, its ``local_rank`` and the backend.

    ``backend`` is ``None`` for a single process (no process group).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


# ---------------------------------------------------------------------- context


def _env_int(environ: Mapping[str, str], name: str, low: int, high: int | None = None) -> int:
    raw = environ[name]
    try:
        value = int(raw)
    except ValueError:
        raise DistributedSetupError(f"torch.distributed: {name} must be an integer, got {raw!r}") from None
    if value < low or (high is not None and value >= high):
        bound = f"in [{low}, {high})" if high is not None else f">= {low}"
        raise DistributedSetupError(f"torch.distributed: {name} must be {bound}, got {value}")
    return value


def context_from_env(environ: Mapping[str, str] | None = None) -> DistContext:
    """Parse the torchrun variables (without joining anything); ``DistContext()`` when absent.

    Raises :class:`DistributedSetupError` naming the variable when ``WORLD_SIZE > 1`` and a
    rendezvous variable (``RANK``, ``MASTER_ADDR``, ``MASTER_PORT``) is missing or malformed.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("WORLD_SIZE"):
        return DistContext()
    world = _env_int(environ, "WORLD_SIZE", 1)
    if world == 1:
        return DistContext()
    for name in RENDEZVOUS_VARS:
        if not environ.get(name):
            raise DistributedSetupError(
                f"torch.distributed: WORLD_SIZE={world} but the rendezvous variable {name} is not set; "
                f"{_LAUNCH_HINT}, or set {', '.join(RENDEZVOUS_VARS)} for every process"
            )
    rank_ = _env_int(environ, "RANK", 0, world)
    _env_int(environ, "MASTER_PORT", 1, 65536)
    local = _env_int(environ, "LOCAL_RANK", 0) if environ.get("LOCAL_RANK") else rank_
    return DistContext(rank=rank_, world_size=world, local_rank=local)


def default_backend() -> str:
    """``cpu:gloo,cuda:nccl`` where CUDA and NCCL are available, else ``gloo``."""
    if torch.cuda.is_available() and dist.is_nccl_available():
        return "cpu:gloo,cuda:nccl"
    return "gloo"


def init_distributed(backend: str | None = None, timeout: float | None = None) -> DistContext:
    """Join the process group that torchrun describes; idempotent; a no-op for one process.

    Args:
        backend: ``None`` for :func:`default_backend` (gloo on CPU, NCCL for CUDA tensors).
        timeout: seconds a collective may wait for the other ranks (torch's default if None).

    Returns the :class:`DistContext`. Raises :class:`DistributedSetupError` when
    ``WORLD_SIZE > 1`` but a rendezvous variable is missing, naming it.
    """
    if dist.is_available() and dist.is_initialized():
        return current_context()
    ctx = context_from_env()
    if not ctx.is_distributed:
        return ctx
    if not dist.is_available():
        raise DistributedSetupError("torch.distributed is not available in this PyTorch build")
    backend = backend or default_backend()
    options: dict[str, Any] = {"backend": backend, "rank": ctx.rank, "world_size": ctx.world_size,
                               "init_method": "env://"}
    if timeout is not None:
        options["timeout"] = timedelta(seconds=float(timeout))
    dist.init_process_group(**options)
    atexit.register(destroy_distributed)
    return current_context()


#: seconds :func:`destroy_distributed` waits for the other ranks before it leaves the group anyway.
LEAVE_TIMEOUT_S = 60.0


def destroy_distributed(synchronize: bool = False, timeout: float = LEAVE_TIMEOUT_S) -> None:
    """Leave the process group (if any); safe to call twice.

    Args:
        synchronize: first wait (up to ``timeout`` seconds) until every rank has arrived here, so
            that all ranks tear the group down together. torch asks for the destruction to be
            collective: a rank that leaves while a peer still holds its connections can abort
            (gloo's ``terminate called without an active exception``). Use it on the normal exit
            path only; after an error the other ranks may never arrive.
        timeout: the wait's limit in seconds; past it the rank leaves without the others.
    """
    if not (dist.is_available() and dist.is_initialized()):
        return
    if synchronize and dist.get_world_size() > 1:
        try:
            if "gloo" in str(dist.get_backend()):
                dist.monitored_barrier(timeout=timedelta(seconds=float(timeout)))
            else:
                dist.barrier()
        except RuntimeError:  # a rank that never arrived: leave anyway
            pass
    dist.destroy_process_group()


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def current_context() -> DistContext:
    """The context of the joined process group (``DistContext()`` when there is none)."""
    if not is_initialized():
        return DistContext()
    local = int(os.environ.get("LOCAL_RANK", dist.get_rank()))
    return DistContext(rank=dist.get_rank(), world_size=dist.get_world_size(), local_rank=local,
                       backend=str(dist.get_backend()))


def rank() -> int:
    """This process's rank in the process group; 0 without one."""
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    """The number of processes in the group; 1 without one."""
    return dist.get_world_size() if is_initialized() else 1


def is_main_process() -> bool:
    """Rank 0: the process that prints, writes files and checkpoints."""
    return rank() == 0


def resolve_device(name: str | torch.device, what: str = "device") -> torch.device:
    """The device ``name`` names (``cpu``, ``cuda``, ``cuda:N``...; ``auto``: CUDA when available).

    ``ValueError`` starting with ``what`` (``"--device"``, ``"config: device"``) for a string
    that names no device, or a CUDA device that is absent.
    """
    if not isinstance(name, torch.device) and str(name).strip() == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name if isinstance(name, torch.device) else str(name).strip())
    except RuntimeError:
        raise ValueError(f"{what} {name!r} is not a device name; use cpu, cuda, cuda:N or auto") from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise ValueError(f"{what} {str(name)!r} was requested but no CUDA device is available; use cpu")
        if (device.index or 0) >= count:
            raise ValueError(f"{what} {str(name)!r}: only {count} CUDA device(s) are visible (cuda:0 to cuda:{count - 1})")
    return device


def local_device(device: torch.device | str) -> torch.device:
    """The device of this rank (:func:`resolve_device`): ``cuda`` becomes ``cuda:LOCAL_RANK``
    (and current) in a group."""
    device = resolve_device(device)
    if device.type == "cuda" and device.index is None and world_size() > 1:
        device = torch.device("cuda", current_context().local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    return device


def _collective_device() -> torch.device:
    """Where small bookkeeping tensors live: CPU when gloo serves CPU tensors, else this GPU."""
    backend = str(dist.get_backend()) if is_initialized() else "gloo"
    if "gloo" in backend:
        return torch.device("cpu")
    return torch.device("cuda", torch.cuda.current_device())


def barrier() -> None:
    """Wait until every rank gets here (a no-op for one process)."""
    if world_size() > 1:
        dist.all_reduce(torch.zeros(1, device=_collective_device()))


# ---------------------------------------------------------------------- collectives


def all_gather_objects(obj: Any) -> list[Any]:
    """``[obj of rank 0, ..., obj of rank W-1]`` on every rank (picklable objects)."""
    if world_size() == 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``obj`` on every rank."""
    if world_size() == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def _checksum(keys: list[str]) -> float:
    return float(zlib.crc32("\x00".join(keys).encode("utf-8")))


def all_reduce_mean(metrics: Mapping[str, float]) -> dict[str, float]:
    """The mean over ranks of each value of ``metrics`` (floats), in one all-reduce.

    Every rank must pass the same keys; a mismatch is a ``ValueError``. A NaN or infinite
    value on any rank makes that entry non-finite on every rank.
    """
    values = {k: float(v) for k, v in metrics.items()}
    world = world_size()
    if world == 1:
        return values
    keys = sorted(values)
    check = _checksum(keys)
    packed = torch.tensor([values[k] for k in keys] + [check], dtype=torch.float64, device=_collective_device())
    dist.all_reduce(packed)
    if float(packed[-1]) != world * check:
        raise ValueError(f"all_reduce_mean: the ranks reported different metric names (rank {rank()}: {keys})")
    mean = dict(zip(keys, (packed[:-1] / world).tolist()))
    return {k: mean[k] for k in values}


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """The elementwise sum of ``t`` over ranks (a new tensor)."""
    t = t.detach().clone()
    if world_size() > 1:
        dist.all_reduce(t)
    return t


def gather_tensor(t: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """Concatenate every rank's ``t`` along ``dim`` in rank order, on every rank.

    Sizes along ``dim`` may differ between ranks (chains or runs split unevenly): each rank's
    tensor is padded to the largest, all-gathered, and trimmed. The other dimensions and the
    dtype must agree (``ValueError`` otherwise). Shape: ``(Σ_r n_r, ...)`` at ``dim``.
    """
    if world_size() == 1:
        return t
    moved = t.detach().movedim(dim, 0).contiguous()
    metas = all_gather_objects((tuple(moved.shape), str(moved.dtype)))
    shapes, dtypes = [m[0] for m in metas], {m[1] for m in metas}
    if len(dtypes) > 1 or len({s[1:] for s in shapes}) > 1:
        raise ValueError(f"gather_tensor: ranks hold tensors of different shapes or dtypes along dim {dim}: "
                         f"{[(s, d) for s, d in metas]}")
    wire = moved.to(torch.uint8) if moved.dtype == torch.bool else moved
    longest = max(s[0] for s in shapes)
    padded = torch.zeros((longest, *wire.shape[1:]), dtype=wire.dtype, device=wire.device)
    padded[:wire.shape[0]] = wire
    parts = [torch.empty_like(padded) for _ in shapes]
    dist.all_gather(parts, padded)
    out = torch.cat([p[:s[0]] for p, s in zip(parts, shapes)], dim=0).to(moved.dtype)
    return out.movedim(0, dim)


def log_mean_exp_across_ranks(log_w: torch.Tensor) -> float:
    """``log (1/N) Σ_n exp(log_w_n)`` over the log weights of *every* rank (N in all).

    One log-mean-exp over the concatenation, computed in float64 — not the mean of per-rank
    estimates, which by Jensen's inequality is lower in expectation and wrong for unequal
    splits. ``-inf`` weights count as zero.
    """
    lw = gather_tensor(torch.as_tensor(log_w).detach().flatten().to(torch.float64))
    if lw.numel() == 0:
        raise ValueError("log_mean_exp_across_ranks: no log weights on any rank")
    return float(torch.logsumexp(lw, 0) - math.log(lw.numel()))


def collectively(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ``fn`` on every rank; if it raises on any rank, raise on every rank.

    The failing rank re-raises its own exception; the others raise :class:`RemoteRankError`
    naming the first failing rank and its message. Wrap a step that can fail on one rank only
    (a diverged chain, a bad state) before the next collective, so no rank waits forever.
    """
    try:
        value, error = fn(*args, **kwargs), None
    except Exception as err:  # reported to the other ranks, then re-raised below
        value, error = None, err
    if world_size() == 1:
        if error is not None:
            raise error
        return value
    reports = all_gather_objects(None if error is None else (type(error).__name__, str(error)))
    if error is not None:
        raise error
    for r, report in enumerate(reports):
        if report is not None:
            raise RemoteRankError(r, *report)
    return value


__all__ = [
    "DistContext", "DistributedSetupError", "ENV_VARS", "RENDEZVOUS_VARS", "RemoteRankError", "all_gather_objects",
    "all_reduce_mean", "all_reduce_sum", "barrier", "broadcast_object", "check_divisible", "collectively",
    "context_from_env", "current_context", "default_backend", "destroy_distributed", "gather_tensor",
    "init_distributed", "is_initialized", "is_main_process", "local_device", "log_mean_exp_across_ranks", "rank",
    "rank_seed", "resolve_device", "shard_bounds", "shard_indices", "split_count", "world_size",
]
