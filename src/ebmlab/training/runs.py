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

import json
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
from ebmlab.training.models import build_model

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.toml"


def derive_seed(seed: int, stream: str) -> int:
    """A seed for one named random stream of a run (data, split, model, batches, objective...)."""
    value = int(seed) & 0xFFFFFFFF
    for ch in stream:
        value = (value * 1_000_003 + ord(ch)) % (2**61 - 1)
    return value


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


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (the checkpoint's), dropping any later ones."""
    if not path.exists():
        return
    kept = [json.dumps(r) for r in read_metrics(path.parent) if int(r.get("step", 0)) <= step]
    text = "".join(line + "\n" for line in kept)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


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


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records of ``RUN_DIR/metrics.jsonl`` (an empty list when absent)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by an interruption ends the readable history
    return records


@dataclass
class Run:
    """Everything a run directory holds, loaded.

    Attributes:
        energy: the trained energy over the original data space (standardisation folded in).
        model: the network over standardised data, as trained.
        standardizer: the fitted standardisation, or ``None``.
        config: the run's :class:`TrainConfig`.
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
    config: TrainConfig
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
        return load_run_data(self.config)

    def heldout_data(self) -> torch.Tensor:
        """The held-out rows in the original data space, ``(N_heldout, *event_shape)``."""
        return self.dataset().x[self.heldout_index]

    def train_data(self) -> torch.Tensor:
        """The training rows in the original data space, ``(N_train, *event_shape)``."""
        return self.dataset().x[self.train_index]


def load_run(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> Run:
    """Load a run directory (``checkpoint.pt`` + ``metrics.jsonl``).

    ``ema=True`` uses the exponential-moving-average weights when the run kept them.
    """
    run_dir = Path(run_dir)
    if not (run_dir / CHECKPOINT_NAME).is_file():
        raise FileNotFoundError(f"{str(run_dir)!r} is not a run directory: it has no {CHECKPOINT_NAME}")
    state = load_checkpoint(run_dir / CHECKPOINT_NAME)
    try:
        info, data = state["model_info"], state["data"]
        config = TrainConfig.from_dict(state["config"])
    except KeyError as err:
        raise ValueError(f"{str(run_dir)!r}: the checkpoint lacks the entry {err}") from None
    event_shape = tuple(int(s) for s in info["event_shape"])
    model = build_model(info["name"], event_shape, **info["kwargs"])
    weights = state["ema"] if ema and state.get("ema") is not None else state["model"]
    model.load_state_dict(weights)
    model.to(device).eval()
    standardizer = None
    if state.get("standardizer") is not None:
        standardizer = Standardizer.from_state_dict(state["standardizer"]).to(device)
    support = str(data.get("support", "real"))
    energy = energy_on_raw_data(model, standardizer, event_shape, support).to(device).eval()
    objective_state = state.get("objective") or {}
    log_z = objective_state.get("log_z") if config.objective == "nce" else None
    learned = None if log_z is None else float(log_z)
    if learned is not None:
        energy.learned_log_z = learned
    return Run(run_dir=run_dir, energy=energy, model=model, standardizer=standardizer, config=config,
               step=int(state["step"]), train_index=data["train_index"], heldout_index=data["heldout_index"],
               event_shape=event_shape, support=support, learned_log_z=learned,
               objective_state=objective_state, metrics=read_metrics(run_dir))


def model_samples(model: nn.Module, objective, kernel, x_train: torch.Tensor, num_samples: int, num_steps: int,
                  generator: torch.Generator, support: str = "real") -> torch.Tensor:
    """Samples of a trained model in its (standardised) training space, ``(n, *event_shape)``.

    The objective's own samples when it keeps some (replay buffer, persistent chains),
    otherwise ``num_steps`` transitions of ``kernel`` from noise spread over the data's range.
    """
    from ebmlab.objectives import NoiseSource, run_chains

    samples = objective.model_samples(model, num_samples, generator) if objective is not None else None
    if samples is None:
        x0 = NoiseSource("uniform", support=support).fit(x_train).sample(num_samples, generator)
        samples, _ = run_chains(model, kernel, x0, num_steps, generator)
    return samples.detach()


def chain_snapshots(model: nn.Module, kernel, x0: torch.Tensor, num_steps: int, generator: torch.Generator,
                    num_snapshots: int = 10) -> torch.Tensor:
    """Chains of ``kernel`` on the frozen ``model`` from ``x0`` ``(C, *event)``, seen at
    ``num_snapshots`` times evenly spaced over ``0..num_steps`` (the start included).

    Returns ``(S, C, *event)``, detached, with ``S = min(num_snapshots, num_steps + 1)``.
    """
    from ebmlab.objectives import frozen

    if num_steps < 0 or num_snapshots < 1:
        raise ValueError(f"chain_snapshots: need num_steps >= 0 and num_snapshots >= 1, got {num_steps}, {num_snapshots}")
    times = sorted({round(t * num_steps / max(num_snapshots - 1, 1)) for t in range(num_snapshots)})
    snapshots = [x0.detach().clone()] if times[0] == 0 else []
    with frozen(model):
        state = kernel.init(model, x0.detach())
        for step in range(1, num_steps + 1):
            state, _ = kernel.step(model, state, generator)
            if step in times:
                snapshots.append(state.x.detach().clone())
    return torch.stack(snapshots)


def save_pictures(run_dir: str | os.PathLike, model: nn.Module, energy: nn.Module, standardizer: Standardizer | None,
                  x_train: torch.Tensor, samples: torch.Tensor, metrics: list[dict[str, Any]],
                  chains: torch.Tensor | None = None) -> list[Path]:
    """The pictures of a run; returns the paths written.

    * 2-D data: ``density.png`` (the learned density ``exp(-E)`` over the data's range) and
      ``samples.png`` (data samples beside model samples);
    * image data: ``samples.png`` (a grid of model samples), ``data.png`` (a grid of data) and,
      given ``chains`` ``(S, C, *event)`` (see :func:`chain_snapshots`), ``chains.png``: one
      row per chain, one column per snapshot, time running left to right;
    * always, when there are metrics: ``loss.png`` (loss and key figures against the step).

    ``x_train``, ``samples`` and ``chains`` are in the training (standardised) space.
    """
    from matplotlib.figure import Figure

    from ebmlab.jobs import plots

    run_dir = Path(run_dir)
    raw = (lambda t: standardizer.inverse_transform(t)) if standardizer is not None else (lambda t: t)
    data, samples = raw(x_train).detach().cpu(), raw(samples).detach().cpu()
    finite = samples[torch.isfinite(samples.flatten(1)).all(1)]
    written: list[Path] = []
    event = tuple(data.shape[1:])
    if event == (2,):
        bounds = plots.bounds_from_samples(data, pad=0.15)
        if getattr(model, "parametrization", "energy") == "energy":  # a score-only network has no density
            fig = Figure(figsize=(5, 5))
            ax = fig.subplots()
            plots.plot_density_2d(energy, ax, bounds)
            ax.set_title("learned density exp(-E)")
            written.append(plots.save_figure(fig, run_dir / "density.png"))
        fig = Figure(figsize=(10, 5))
        for ax, points, title in zip(fig.subplots(1, 2), (data, finite), ("data", "model samples")):
            plots.plot_samples_2d(points, ax, s=2, alpha=0.4)
            ax.set_xlim(bounds[0], bounds[1])
            ax.set_ylim(bounds[2], bounds[3])
            ax.set_aspect("equal", adjustable="box")
            ax.set_title(f"{title} ({points.shape[0]})")
        written.append(plots.save_figure(fig, run_dir / "samples.png"))
    elif len(event) == 2 or (len(event) == 3 and event[0] in (1, 3)):
        written.append(plots.save_image_grid(finite[:64].clamp(data.min(), data.max()), run_dir / "samples.png"))
        written.append(plots.save_image_grid(data[:64], run_dir / "data.png"))
        if chains is not None:
            frames = raw(chains.flatten(0, 1)).reshape(chains.shape).detach().cpu()
            frames = torch.nan_to_num(frames, nan=float(data.min())).clamp(data.min(), data.max())
            bounds = (float(data.min()), float(data.max()))
            written.append(plots.save_chain_grid(frames, run_dir / "chains.png", value_range=bounds))
    keys = ("loss", "cd_gap", "accept", "log_z", "accuracy", "grad_norm")
    records = [{k: r[k] for k in ("step", *keys) if k in r} for r in metrics]
    if records:
        written.append(plots.plot_loss_curve(records, run_dir / "loss.png"))
    return written


def load(run_dir: str | os.PathLike, ema: bool = True, device: str | torch.device = "cpu") -> nn.Module:
    """The trained energy of ``run_dir`` over the original data space, in eval mode.

    The module has ``event_shape`` and ``support`` attributes; for NCE runs also
    ``learned_log_z`` (the learned estimate of its ``log Z``).
    """
    return load_run(run_dir, ema=ema, device=device).energy


__all__ = ["CONFIG_NAME", "METRICS_NAME", "Run", "StandardizedEnergy", "chain_snapshots", "default_run_dir",
           "derive_seed", "energy_on_raw_data", "load", "load_run", "load_run_data", "model_samples", "read_metrics", "save_pictures",
           "split_run_data", "truncate_metrics"]
