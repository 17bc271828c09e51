"""Data-parallel training: what :class:`ebmlab.training.run.Trainer` does differently on several ranks.

The trainer holds one :class:`TrainSharding` (``world_size == 1`` outside a process group,
where every method is the identity) and asks it at the few places where ranks differ:

* **Data** — every rank draws the *same* global batch indices from the shared ``batches``
  generator and keeps its contiguous shard (:meth:`TrainSharding.shard_batch`); the global
  batch size must be a multiple of the world size.
* **Gradients** — the loss is computed through :class:`LossModule`, the energy plus the
  objective's own parameters (NCE's ``log Z``) wrapped in DistributedDataParallel, which
  averages gradients over ranks. With the per-example mean losses of every objective,

      ∇ (1/W) Σ_r mean_{b∈shard r} ℓ_b = ∇ mean_{b∈batch} ℓ_b,

  so one distributed step equals the one-process step on the whole batch with the same
  random draws for each example.
* **Randomness** — each rank's objective generator (sampler noise, buffer restarts,
  projections, DSM/NCE noise) is seeded with :func:`~ebmlab.distributed.rank_seed` of the
  run's objective seed; rank 0 keeps it unchanged.
* **Objective state** — persistent chains and replay buffers are per rank: count options
  (``buffer_size``, ``num_chains``) are split over ranks (:meth:`objective_options`), each
  rank keeps its own slice, and a checkpoint stores the slices concatenated in rank order.
* **Metrics** — averaged over ranks (:func:`~ebmlab.distributed.all_reduce_mean`) before the
  divergence check, so every rank stops at the same step.

Checkpoints (written by rank 0 only, atomically) keep the global view: ``objective`` holds
every rank's slices concatenated, so a one-process program (``ebmlab.load``, pictures) sees
all chains. The extra entry ``distributed`` records how to cut it back::

    {"world_size": W, "shard_sizes": {key: [n_0, ..., n_{W-1}]},
     "rank_state": [{entries of rank r that differ from rank 0's}],
     "rng_objective": [generator state of rank r]}

Resuming with the same W restores every rank exactly. With another W', sharded entries are
concatenated and re-split into W' contiguous blocks (:func:`~ebmlab.distributed.shard_indices`),
the other entries come from rank 0, and the objective generators are re-derived from the run's
seed and the checkpoint's step (the batch order stays exact: it is shared by all ranks).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Iterable

import torch
from torch import nn

from ebmlab import distributed as D

#: Objective-state entries holding per-rank rows in the objectives of ebmlab (each objective
#: declares its own as ``sharded_state``; this default serves checkpoint tools).
SHARDED_STATE_KEYS = ("chains", "buffer")


class LossModule(nn.Module):
    """``forward(batch, generator) -> objective.loss(energy, batch, generator)`` as one module.

    Holds the energy and the objective's learnable parameters, so that one
    DistributedDataParallel wrapper averages the gradients of both. The objective sees the
    energy itself (not a wrapper): its attributes and methods stay reachable.
    """

    def __init__(self, energy: nn.Module, objective: Any):
        super().__init__()
        self.energy = energy
        self.objective_params = nn.ParameterList(list(objective.parameters()))
        self.objective = objective

    def forward(self, batch: torch.Tensor, generator: torch.Generator | None):
        return self.objective.loss(self.energy, batch, generator)


@dataclass(frozen=True)
class TrainSharding:
    """How a training run is split over ``world_size`` ranks; this process is ``rank``."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def current(cls) -> "TrainSharding":
        """The sharding of the process group that torchrun describes (joined here if needed)."""
        ctx = D.init_distributed()
        return cls(ctx.rank, ctx.world_size)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    # ------------------------------------------------------------------ set-up

    def check_batch(self, batch_size: int, num_train: int) -> None:
        """The effective global batch (``min(batch_size, N)``) must split evenly over ranks."""
        D.check_divisible(min(int(batch_size), int(num_train)), self.world_size)

    def objective_seed(self, seed: int) -> int:
        return D.rank_seed(seed, self.rank)

    def objective_options(self, objective_cls: type, options: dict[str, Any]) -> dict[str, Any]:
        """``options`` with global counts (``buffer_size``, ``num_chains``) replaced by this rank's share.

        An option left out takes the class default, split the same way; 0 (automatic, e.g.
        one chain per batch element) stays 0 and resolves per rank.
        """
        if not self.is_distributed:
            return dict(options)
        options = dict(options)
        defaults = inspect.signature(objective_cls.__init__).parameters
        for key in getattr(objective_cls, "sharded_options", ()):
            if key in options:
                total = options[key]
            elif key in defaults and defaults[key].default is not inspect.Parameter.empty:
                total = defaults[key].default
            else:
                continue
            if isinstance(total, int) and total > 0:
                options[key] = D.split_count(total, self.rank, self.world_size, what=f"{key} (objective option)")
        return options

    def loss_function(self, energy: nn.Module, objective: Any):
        """``fn(batch, generator) -> (loss, metrics)``: DDP-wrapped in a group, plain otherwise."""
        if not self.is_distributed:
            return lambda batch, generator: objective.loss(energy, batch, generator)
        # a score-only loss leaves an additive offset of the energy without gradient
        unused = bool(getattr(objective, "score_only", False))
        return D.wrap_ddp(LossModule(energy, objective), find_unused_parameters=unused)

    # ------------------------------------------------------------------ each step

    def shard_batch(self, index: torch.Tensor) -> torch.Tensor:
        """This rank's block of the global batch indices ``(B,)`` -> ``(B/W,)``."""
        if not self.is_distributed:
            return index
        start, stop = D.shard_bounds(index.shape[0], self.rank, self.world_size)
        return index[start:stop]

    def reduce_metrics(self, metrics: dict[str, float], loss: torch.Tensor) -> tuple[dict[str, float], float]:
        """``(metrics averaged over ranks, loss averaged over ranks)``."""
        if not self.is_distributed:
            return metrics, float(loss.detach())
        merged = D.all_reduce_mean({**{k: float(v) for k, v in metrics.items()}, "\x00loss": float(loss.detach())})
        value = merged.pop("\x00loss")
        return merged, value

    # ------------------------------------------------------------------ checkpoints

    def gather_objective(self, state: dict[str, Any], generator_state: torch.Tensor,
                         sharded_keys: Iterable[str] = SHARDED_STATE_KEYS) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """Collect every rank's objective state and generator state (a collective).

        Returns ``(merged objective state, distributed entry)`` — meaningful on rank 0; a
        single process gets ``(state, None)`` back.
        """
        if not self.is_distributed:
            return state, None
        cpu_state = _to_cpu(state)
        gathered = D.all_gather_objects((cpu_state, generator_state.cpu()))
        states = [s for s, _ in gathered]
        merged, layout = merge_states(states, tuple(sharded_keys))
        layout["rng_objective"] = [g for _, g in gathered]
        return merged, layout

    def local_objective(self, merged: dict[str, Any], layout: dict[str, Any] | None,
                        sharded_keys: Iterable[str] = SHARDED_STATE_KEYS) -> dict[str, Any]:
        """This rank's objective state from a checkpoint's ``objective`` and ``distributed`` entries."""
        saved_world = int(layout["world_size"]) if layout else 1
        if saved_world == 1 and not self.is_distributed:
            return merged
        return split_state(merged, layout, self.rank, self.world_size, tuple(sharded_keys))

    def local_generator_state(self, layout: dict[str, Any] | None, rank0_state: torch.Tensor) -> torch.Tensor | None:
        """This rank's saved objective-generator state, or ``None`` when the world size changed
        (the caller then re-derives the generator from the seed and the step)."""
        saved_world = int(layout["world_size"]) if layout else 1
        if saved_world != self.world_size:
            return None
        return rank0_state if layout is None else layout["rng_objective"][self.rank]


def _to_cpu(tree: Any) -> Any:
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: _to_cpu(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(_to_cpu(v) for v in tree)
    return tree


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and bool(torch.equal(a, b)))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def merge_states(states: list[dict[str, Any]], sharded_keys: tuple[str, ...] = SHARDED_STATE_KEYS
                 ) -> tuple[dict[str, Any], dict[str, Any]]:
    """One objective state from the ranks' states ``[s_0, ..., s_{W-1}]``.

    Sharded entries present on every rank as tensors are concatenated along dim 0 in rank
    order; every other entry is taken from rank 0, and a rank whose entry differs keeps its
    own in ``layout["rank_state"]``. Returns ``(merged, layout)``.
    """
    merged: dict[str, Any] = {}
    layout: dict[str, Any] = {"world_size": len(states), "shard_sizes": {}, "rank_state": [{} for _ in states]}
    keys = list(dict.fromkeys(k for s in states for k in s))
    for key in keys:
        values = [s.get(key) for s in states]
        if key in sharded_keys and all(isinstance(v, torch.Tensor) for v in values):
            merged[key] = torch.cat(values, dim=0)
            layout["shard_sizes"][key] = [int(v.shape[0]) for v in values]
            continue
        if key in states[0]:
            merged[key] = values[0]
        for r, value in enumerate(values[1:], start=1):
            if key in states[r] and not _same(value, values[0]):
                layout["rank_state"][r][key] = value
    return merged, layout


def split_state(merged: dict[str, Any], layout: dict[str, Any] | None, rank: int, world: int,
                sharded_keys: tuple[str, ...] = SHARDED_STATE_KEYS) -> dict[str, Any]:
    """Rank ``rank``'s objective state (of ``world``) from a merged state and its layout.

    Same world size as saved: the exact slices and rank-specific entries. Otherwise each
    sharded entry ``(N, ...)`` is re-split into ``world`` contiguous blocks (``N >= world``).
    """
    saved_world = int(layout["world_size"]) if layout else 1
    state = dict(merged)
    for key in sharded_keys:
        value = merged.get(key)
        if not isinstance(value, torch.Tensor):
            continue
        if saved_world == world and layout and key in layout["shard_sizes"]:
            sizes = layout["shard_sizes"][key]
            start = sum(sizes[:rank])
            state[key] = value[start:start + sizes[rank]].clone()
        else:
            D.split_count(value.shape[0], rank, world, what=f"rows of the checkpoint's objective state {key!r}")
            start, stop = D.shard_bounds(value.shape[0], rank, world)
            state[key] = value[start:stop].clone()
    if saved_world == world and layout:
        state.update(layout["rank_state"][rank])
    return state


__all__ = ["LossModule", "SHARDED_STATE_KEYS", "TrainSharding",
           "merge_states", "split_state"]
