"""Loading trained runs: ``ebmlab.load(RUN_DIR)`` returns the energy over the original data space.

A run trains ``E_std`` on standardised data ``z = (x - μ)/s``. Densities transform with the
Jacobian ``|∂z/∂x| = Π_e 1/s_e``:

    log p_raw(x) = log p_std(z) - Σ_e log s_e,    so    E_raw(x) = E_std((x - μ)/s) + Σ_e log s_e

(:meth:`ebmlab.data.Standardizer.log_det_jacobian` is ``-Σ_e log s_e``). The constant keeps
normalised densities normalised and leaves ``Z`` unchanged: ``Z_raw = Z_std``.

Nothing in a run directory is executed: the network is rebuilt from the model registry
(:mod:`ebmlab.training.models`) with the name and options stored in the checkpoint, and the weights are
read with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint
from ebmlab.training.config import TrainConfig
from ebmlab.data import Dataset, load_dataset
from ebmlab.data.transforms import Standardizer, split_indices
from ebmlab.energy.base import Energy
from ebmlab.energy.errors import describe_load_error
from ebmlab.training.history import METRICS_NAME, read_metrics
from ebmlab.training.loop import derive_seed
from ebmlab.training.user_models import build_from_info

CONFIG_NAME = "config.toml"


def load_run_data(config: TrainConfig) -> Dataset:
    """The data set of a run: ``config.data`` drawn / subsampled with the run's data seed."""
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "data"))
    return load_dataset(config.data, num_samples=config.num_samples or None, generator=generator)


def split_run_data(config: TrainConfig, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Train and held-out row indices of a run (sorted, long)."""
    if config.heldout_fraction == 0:
        return torch.arange(n), torch.zeros(0, dtype=torch.long)
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "split"))
    return split_indices(n, heldout_fraction=config.heldout_fraction, generator=generator)


def default_run_dir(config: TrainConfig) -> Path:
    """``runs/<data>-<objective>-<YYYYmmdd-HHMMSS>`` (with a numeric suffix if taken)."""
    stem = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(config.data).stem) or "data"
    base = Path("runs") / f"{stem}-{config.objective}-{datetime.now():%Y%m%d-%H%M%S}"
    path, k = base, 1
    while path.exists():
        path, k = Path(f"{base}-{k}"), k + 1
    return path


class StandardizedEnergy(Energy):
    """``E_raw(x) = E_std((x - mean)/std) - log_det_jacobian``: a standardised-space energy on raw data.

    Shapes: x ``(B, *event_shape)`` -> ``(B,)``. Extra positional / keyword arguments (a noise
    level for noise-conditional models) are passed to the inner energy unchanged.
    """

    def __init__(self, inner: nn.Module, standardizer: Standardizer, support: str = "real"):
        super().__init__()
        self.inner = inner
        self.register_buffer("mean", standardizer.mean.detach().clone())
        self.register_buffer("std", standardizer.std.detach().clone())
        self.log_det_jacobian = float(standardizer.log_det_jacobian())
        self.event_shape = tuple(standardizer.event_shape)
        self.support = support

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        z = (x - self.mean) / self.std
        return self.inner(z, *args, **kwargs) - self.log_det_jacobian


def energy_on_raw_data(model: nn.Module, standardizer: Standardizer | None, event_shape, support: str) -> nn.Module:
    """The raw-data energy of a run: ``model`` itself without standardisation, else wrapped."""
    if standardizer is None:
        model.event_shape = tuple(int(s) for s in event_shape)
        model.support = support
        return model
    return StandardizedEnergy(model, standardizer, support)


@dataclass
class Run:
    """Everything a run directory holds, loaded.

    Attributes:
        energy: the trained energy over the original data space (standardisation folded in).
        model: the network over standardised data, as trained.
        standardizer: the fitted standardisation, or ``None``.
        config: the run's :class:`TrainConfig`, or ``None`` for a run of :func:`ebmlab.training.fit`
            (whose data are the caller's: :meth:`dataset` then raises).
        step: updates done.
        train_index / heldout_index: rows of the loaded data set used for training / held out.
        learned_log_z: NCE's learned ``log Z`` of ``energy`` (``None`` for other objectives).
        objective_state: the objective's saved state (replay buffer, chains... in standardised space).
        metrics: the per-step records of ``metrics.jsonl``.
    """

    run_dir: Path
    energy: nn.Module
    model: nn.Module
    standardizer: Standardizer | None
    config: TrainConfig | None
    step: int
    train_index: torch.Tensor
    heldout_index: torch.Tensor
    event_shape: tuple[int, ...]
    support: str
    learned_log_z: float | None = None
    objective_state: dict[str, Any] = field(default_factory=dict)
    metrics: list[dict[str, Any]] = field(default_factory=list)

    def dataset(self):
        """The run's data set, reloaded with the run's seed (see :func:`ebmlab.data.load_dataset`)."""
        if self.config is None:
            raise ValueError(f"{str(self.run_dir)!r} was trained by fit() on the caller's own data; "
                             f"the run does not hold them")
        return load_run_data(self.config)

    def heldout_data(self) -> torch.Tensor:
        """The held-out rows in the original data space, ``(N_heldout, *event_shape)``."""
        return self.dataset().x[self.heldout_index]

    def train_data(self) -> torch.Tensor:
        """The training rows in the original data space, ``(N_train, *event_shape)``."""
        return self.dataset().x[self.train_index]


CHECKPOINTS = {"last": CHECKPOINT_NAME, "best": "best.pt"}


def load_run(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu",
             checkpoint: str = "last") -> Run:
    """Load a run directory (``checkpoint.pt`` + ``metrics.jsonl``).

    ``ema=True`` uses the exponential-moving-average weights when the run kept them;
    ``checkpoint="best"`` the state at the best held-out evaluation (``best.pt``).
    """
    run_dir = Path(run_dir)
    if checkpoint not in CHECKPOINTS:
        raise ValueError(f"load: checkpoint must be 'last' or 'best', got {checkpoint!r}")
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory: it has no {CHECKPOINT_NAME}")
    if not (run_dir / CHECKPOINTS[checkpoint]).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} has no {CHECKPOINTS[checkpoint]} (held-out evaluation was off)")
    state = load_checkpoint(run_dir / CHECKPOINTS[checkpoint])
    missing = [key for key in ("model_info", "data", "model", "step") if key not in state]
    if missing or not isinstance(state.get("model_info"), dict) or "event_shape" not in state["model_info"]:
        raise ValueError(f"{str(run_dir)!r}: the checkpoint lacks the entr{'ies' if len(missing) > 1 else 'y'} "
                         f"{', '.join(missing) or 'model_info.event_shape'}")
    info, data = state["model_info"], state["data"]
    config = TrainConfig.from_dict(state["config"]) if state.get("config") is not None else None
    event_shape = tuple(int(s) for s in info["event_shape"])
    model = build_from_info(info, where=str(run_dir))
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    saved_dtypes = {w.dtype for w in weights.values() if torch.is_tensor(w) and w.is_floating_point()}
    if len(saved_dtypes) == 1:  # one precision throughout (a mixed model keeps the dtypes it builds with)
        model.to(saved_dtypes.pop())  # else load_state_dict would copy float64 weights into float32 ones
    try:
        model.load_state_dict(weights)
    except (RuntimeError, ValueError, TypeError, AttributeError) as err:
        raise ValueError(f"{str(run_dir)!r}: the checkpoint's weights do not fit the rebuilt model: "
                         f"{describe_load_error(err)}") from None
    model.to(device).eval()
    standardizer = None
    if state.get("standardizer") is not None:
        standardizer = Standardizer.from_state_dict(state["standardizer"]).to(device)
    support = str(data.get("support", "real"))
    energy = energy_on_raw_data(model, standardizer, event_shape, support).to(device).eval()
    objective_state = state.get("objective") or {}
    empty = torch.zeros(0, dtype=torch.long)
    old_nce = config is not None and config.objective == "nce"  # checkpoints of ebmlab 0.1
    learns_log_z = (state.get("objective_info") or {}).get("learns_log_z", old_nce)
    log_z = objective_state.get("log_z") if learns_log_z else None
    learned = None if log_z is None else float(log_z)
    if learned is not None:
        energy.learned_log_z = learned
    return Run(run_dir=run_dir, energy=energy, model=model, standardizer=standardizer, config=config,
               step=int(state["step"]), train_index=data.get("train_index", empty),
               heldout_index=data.get("heldout_index", empty),
               event_shape=event_shape, support=support, learned_log_z=learned,
               objective_state=objective_state, metrics=read_metrics(run_dir))


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu",
         checkpoint: str = "last") -> nn.Module:
    """The trained energy of ``run_dir`` over the original data space, in eval mode
    (``checkpoint="best"``: at the best held-out evaluation).

    The module has ``event_shape`` and ``support`` attributes; for NCE runs also
    ``learned_log_z`` (the learned estimate of its ``log Z``).
    """
    return load_run(run_dir, ema=ema, device=device, checkpoint=checkpoint).energy


__all__ = ["CONFIG_NAME", "METRICS_NAME", "Run", "StandardizedEnergy", "default_run_dir", "derive_seed",
           "energy_on_raw_data", "load", "load_run", "load_run_data", "read_metrics", "split_run_data"]
