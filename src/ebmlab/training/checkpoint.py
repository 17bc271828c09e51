"""Run checkpoints: plain tensors and primitive containers, written atomically.

A checkpoint is one ``dict`` saved with :func:`torch.save` to ``RUN_DIR/checkpoint.pt``:

* ``format`` / ``version`` — identify the file;
* ``step`` — updates done;
* ``config`` — the :class:`~ebmlab.training.config.TrainConfig` as a dict of primitives;
* ``model`` / ``ema`` — state dicts of the energy network (``ema`` only with EMA);
* ``model_info`` — ``{"name", "kwargs", "event_shape"}`` to rebuild it from the registry;
* ``optimizer`` — the optimiser's state dict;
* ``objective`` — the objective's state (replay buffer, persistent chains, ``log Z``...);
* ``rng`` — ``{"batches": ..., "objective": ...}`` generator states (``ByteTensor``);
* ``batches`` — the epoch permutation and the position in it;
* ``data`` — name, event shape, support and the train / held-out indices;
* ``standardizer`` — its state dict, or ``None``;
* ``elapsed`` — training seconds so far.

:func:`save_checkpoint` writes to a temporary file and renames it over the old one, so the
file on disk is always a complete checkpoint. :func:`load_checkpoint` uses
``torch.load(weights_only=True)``: nothing in the file can execute code.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from ebmlab.atomic import atomic_write

FORMAT = "ebmlab-checkpoint"
VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` (with ``format`` and ``version`` added) to ``path`` atomically."""
    payload = {"format": FORMAT, "version": VERSION, **state}
    return atomic_write(path, lambda f: torch.save(payload, f))


def remove_stale_temporaries(run_dir: str | os.PathLike) -> list[Path]:
    """Delete ``.checkpoint.pt.*.tmp`` files that a write killed midway left in ``run_dir``.

    Call only while holding the run's lock (:mod:`ebmlab.training.lock`): then no other writer
    can own them. Returns the paths removed.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return []
    stale = sorted(run_dir.glob(f".{CHECKPOINT_NAME}.*.tmp"))
    for path in stale:
        path.unlink(missing_ok=True)
    return stale


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (``weights_only=True``).

    ``path`` is the file or a run directory holding ``checkpoint.pt``. Raises
    ``FileNotFoundError`` when absent and ``ValueError`` when the file is not a checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {str(path)!r}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # unpickling errors, truncated files, foreign formats
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"{str(path)!r} is not a readable ebmlab checkpoint: {first}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ValueError(f"{str(path)!r} is not an ebmlab checkpoint")
    if state.get("version") != VERSION:
        raise ValueError(f"{str(path)!r}: checkpoint version {state.get('version')} is not supported (expected {VERSION})")
    return state


def to_device(tree: Any, device: torch.device | str) -> Any:
    """A copy of nested dicts / lists with every tensor moved to ``device``."""
    if isinstance(tree, torch.Tensor):
        return tree.to(device)
    if isinstance(tree, dict):
        return {k: to_device(v, device) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(to_device(v, device) for v in tree)
    return tree


def all_finite(tree: Any) -> bool:
    """Whether every floating-point tensor in nested dicts / lists is finite."""
    if isinstance(tree, torch.Tensor):
        return not tree.is_floating_point() or bool(torch.isfinite(tree).all())
    if isinstance(tree, dict):
        return all(all_finite(v) for v in tree.values())
    if isinstance(tree, (list, tuple)):
        return all(all_finite(v) for v in tree)
    return True


__all__ = ["CHECKPOINT_NAME", "FORMAT", "VERSION", "all_finite", "load_checkpoint", "remove_stale_temporaries",
           "save_checkpoint", "to_device"]
