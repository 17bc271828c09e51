"""Sharding arithmetic for multi-process runs: who does which items, with which seed.

Pure functions of ``(n, rank, world)`` — no process group needed — re-exported by
:mod:`ebmlab.distributed`. Blocks are contiguous and in rank order, so concatenating the
ranks' results in rank order restores the global order; sizes differ by at most one.
"""

from __future__ import annotations

import torch

_MASK63 = (1 << 63) - 1
_MASK64 = (1 << 64) - 1


def _check_rank(rank_: int, world: int) -> None:
    if int(world) < 1 or not 0 <= int(rank_) < int(world):
        raise ValueError(f"need 0 <= rank < world size and world size >= 1, got rank {rank_} of {world}")


def split_count(total: int, rank: int, world: int, what: str = "items") -> int:
    """This rank's share of ``total`` items: ``⌊total/W⌋``, plus one on the first ``total mod W`` ranks.

    Raises ``ValueError`` when ``total < world`` (a rank would get nothing to do).
    """
    _check_rank(rank, world)
    if int(total) < int(world):
        raise ValueError(f"cannot split {total} {what} over {world} processes; use at least {world} {what} "
                         f"(one per process) or fewer processes")
    base, extra = divmod(int(total), int(world))
    return base + (1 if rank < extra else 0)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """``(start, stop)`` of this rank's contiguous block of ``n`` items (sizes as :func:`split_count`)."""
    _check_rank(rank, world)
    base, extra = divmod(int(n), int(world))
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def shard_indices(n: int, rank: int, world: int) -> torch.Tensor:
    """The indices ``(n_r,)`` (long) of this rank's contiguous block of ``range(n)``.

    Blocks follow rank order and cover ``range(n)`` exactly once; their sizes differ by at
    most one (equal when ``world`` divides ``n``).
    """
    start, stop = shard_bounds(n, rank, world)
    return torch.arange(start, stop, dtype=torch.long)


def rank_seed(global_seed: int, rank: int) -> int:
    """The seed of rank ``rank``'s random stream, derived from the run's ``global_seed``.

    Rank 0 keeps ``global_seed`` itself, so one process reproduces a non-distributed run;
    other ranks get a SplitMix64 hash of ``(global_seed, rank)`` (Steele, Lea & Flood 2014),
    so streams of different ranks (and of neighbouring seeds) do not overlap in practice.
    Result in ``[0, 2⁶³)``.
    """
    if int(rank) < 0:
        raise ValueError(f"rank_seed: rank must be >= 0, got {rank}")
    if int(rank) == 0:
        return int(global_seed) & _MASK63
    z = (int(global_seed) * 0x9E3779B97F4A7C15 + int(rank) * 0xD1B54A32D192ED03) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return (z ^ (z >> 31)) & _MASK63


def check_divisible(batch: int, world: int) -> None:
    """Refuse a global batch size that the ranks cannot share equally."""
    if int(batch) % int(world) != 0:
        raise ValueError(f"batch size {batch} is not divisible by world size {world}; "
                         f"use a batch size that is a multiple of {world}")


__all__ = ["check_divisible", "rank_seed", "shard_bounds", "shard_indices", "split_count"]
