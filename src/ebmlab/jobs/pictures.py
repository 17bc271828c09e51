"""The pictures of a training run, drawn by a callback of the training loop.

:class:`RunPictures` is a :class:`~ebmlab.training.loop.Callback`: at the end of a run it draws
model samples (the objective's own when it keeps some — replay buffer, persistent chains —
otherwise the run's sampler kernel from noise) and writes

* 2-D data: ``density.png`` (the learned energy and density ``exp(-E)``, with colour bars) and
  ``samples.png`` (data beside model samples);
* image data: ``samples.png`` (a grid of model samples), ``data.png`` and ``chains.png``
  (chains over time: one row per chain, time left to right, labelled by sampler step);
* ``loss.png``: the loss and key figures against the step, smoothed with the raw values faint
  behind; a figure constant throughout (acceptance 1 of ULA or block Gibbs) gets no panel.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ebmlab.data import Standardizer, is_image_like
from ebmlab.jobs import plots
from ebmlab.objectives import NoiseSource, frozen, run_chains
from ebmlab.samplers import make_kernel
from ebmlab.samplers.driver import run_kernel
from ebmlab.training.loading import energy_on_raw_data
from ebmlab.training.loop import Callback, TrainLoop, derive_seed


def model_samples(model: nn.Module, objective, kernel, x_train: torch.Tensor, num_samples: int, num_steps: int,
                  generator: torch.Generator, support: str = "real") -> torch.Tensor:
    """Samples of a trained model in its (standardised) training space, ``(n, *event_shape)``.

    The objective's own samples when it keeps some (replay buffer, persistent chains),
    otherwise ``num_steps`` transitions of ``kernel`` from noise spread over the data's range.
    """
    samples = objective.model_samples(model, num_samples, generator) if objective is not None else None
    if samples is None:
        x0 = NoiseSource("uniform", support=support).fit(x_train).sample(num_samples, generator)
        samples, _ = run_chains(model, kernel, x0, num_steps, generator)
    return samples.detach()


def snapshot_times(num_steps: int, num_snapshots: int = 10) -> list[int]:
    """The sampler steps at which :func:`chain_snapshots` sees its chains: ``num_snapshots``
    evenly spaced over ``0..num_steps`` (both ends included, duplicates dropped)."""
    return sorted({round(t * num_steps / max(num_snapshots - 1, 1)) for t in range(num_snapshots)})


def chain_snapshots(model: nn.Module, kernel, x0: torch.Tensor, num_steps: int, generator: torch.Generator,
                    num_snapshots: int = 10) -> torch.Tensor:
    """Chains of ``kernel`` on the frozen ``model`` from ``x0`` ``(C, *event)``, seen at
    ``num_snapshots`` times evenly spaced over ``0..num_steps`` (the start included; see
    :func:`snapshot_times`).

    Returns ``(S, C, *event)``, detached, with ``S = min(num_snapshots, num_steps + 1)``.
    """
    if num_steps < 0 or num_snapshots < 1:
        raise ValueError(f"chain_snapshots: need num_steps >= 0 and num_snapshots >= 1, got {num_steps}, {num_snapshots}")
    times = snapshot_times(num_steps, num_snapshots)
    snapshots = [x0.detach().clone()] if times[0] == 0 else []
    wanted = set(times)

    def keep(step: int, state, info) -> None:
        if step in wanted:
            snapshots.append(state.x.detach().clone())

    with frozen(model):
        run_kernel(kernel, model, kernel.init(model, x0.detach()), num_steps, generator, callback=keep)
    return torch.stack(snapshots)


def save_pictures(run_dir: str | os.PathLike, model: nn.Module, energy: nn.Module, standardizer: Standardizer | None,
                  x_train: torch.Tensor, samples: torch.Tensor, metrics: list[dict[str, Any]],
                  chains: torch.Tensor | None = None, chain_times: list[int] | None = None) -> list[Path]:
    """The pictures of a run; returns the paths written.

    * 2-D data: ``density.png`` (the learned density ``exp(-E)`` over the data's range) and
      ``samples.png`` (data samples beside model samples);
    * image data: ``samples.png`` (a grid of model samples), ``data.png`` (a grid of data) and,
      given ``chains`` ``(S, C, *event)`` (see :func:`chain_snapshots`), ``chains.png``: one
      row per chain, one column per snapshot, time running left to right (columns labelled by
      ``chain_times``, the sampler step of each snapshot, when given);
    * always, when there are metrics: ``loss.png`` (loss and key figures against the step,
      smoothed, without panels for figures constant throughout).

    ``x_train``, ``samples`` and ``chains`` are in the training (standardised) space.
    """
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    raw = (lambda t: standardizer.inverse_transform(t)) if standardizer is not None else (lambda t: t)
    data, samples = raw(x_train).detach().cpu(), raw(samples).detach().cpu()
    finite = samples[torch.isfinite(samples.flatten(1)).all(1)]
    written: list[Path] = []
    event = tuple(data.shape[1:])
    if event == (2,):
        bounds = plots.bounds_from_samples(data, pad=0.15)
        if getattr(model, "parametrization", "energy") == "energy":  # a score-only network has no density
            fig = Figure(figsize=(11, 4.6), layout="constrained")
            left, right = fig.subplots(1, 2)
            plots.plot_energy_2d(energy, left, bounds)
            left.set_title("learned energy E(x)")
            plots.plot_density_2d(energy, right, bounds)
            right.set_title("learned density exp(−E) (unnormalised)")
            written.append(plots.save_figure(fig, run_dir / "density.png"))
        fig = Figure(figsize=(10, 5), layout="constrained")
        for ax, points, title, colour in zip(fig.subplots(1, 2, sharex=True, sharey=True), (data, finite),
                                             ("training data", "model samples"), ("tab:blue", "tab:red")):
            plots.plot_samples_2d(points, ax, s=2, alpha=0.4, color=colour)
            plots.axes_2d(ax, bounds)
            ax.set_title(f"{title} ({points.shape[0]:,} points)")
        if finite.shape[0] < samples.shape[0]:
            fig.supxlabel(f"{samples.shape[0] - finite.shape[0]} non-finite model samples not shown", fontsize=8)
        written.append(plots.save_figure(fig, run_dir / "samples.png"))
    elif is_image_like(event):
        shown = finite[:64].clamp(data.min(), data.max())
        written.append(plots.save_image_grid(shown, run_dir / "samples.png", title=f"model samples ({shown.shape[0]})",
                                             ylabel="samples"))
        written.append(plots.save_image_grid(data[:64], run_dir / "data.png",
                                             title=f"training data (first {min(64, data.shape[0])})"))
        if chains is not None:
            frames = raw(chains.flatten(0, 1)).reshape(chains.shape).detach().cpu()
            frames = torch.nan_to_num(frames, nan=float(data.min())).clamp(data.min(), data.max())
            bounds = (float(data.min()), float(data.max()))
            times = chain_times if chain_times is not None and len(chain_times) == chains.shape[0] else None
            written.append(plots.save_chain_grid(frames, run_dir / "chains.png", value_range=bounds, times=times,
                                                 title=f"{min(8, chains.shape[1])} model chains over time"))
    keys = ("loss", "heldout_loss", "heldout_nll", "cd_gap", "accept", "log_z", "accuracy", "grad_norm")
    records = [{k: r[k] for k in ("step", *keys) if k in r} for r in metrics]
    if records:
        written.append(plots.plot_loss_curve(records, run_dir / "loss.png"))
    return written


class RunPictures(Callback):
    """Write a run's pictures into ``run_dir`` (default: the loop's) when the run ends.

    ``num_samples`` model samples (at most 64 for images) from ``sampler_steps`` transitions of
    the run's kernel (``loop.info["kernel"]``, else ULA) unless the objective keeps samples.
    The paths written are in :attr:`written`.
    """

    def __init__(self, num_samples: int = 2000, sampler_steps: int = 500, run_dir: str | os.PathLike | None = None):
        if int(num_samples) < 1 or int(sampler_steps) < 0:
            raise ValueError(f"pictures: need num_samples >= 1 and sampler_steps >= 0, got {num_samples}, {sampler_steps}")
        self.num_samples, self.sampler_steps = int(num_samples), int(sampler_steps)
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.written: list[Path] = []

    def on_fit_end(self, loop: TrainLoop) -> None:
        run_dir = self.run_dir or loop.run_dir
        if run_dir is None or not loop.sharding.is_main:
            return
        info = loop.info
        kernel = info.get("kernel") or make_kernel("ula", step_size=0.01)
        standardizer = info.get("standardizer")
        event = tuple(loop.x_train.shape[1:])
        model = loop.trained_model.eval()
        energy = energy_on_raw_data(model, standardizer, event, loop.support)
        image_like = is_image_like(event)
        num = min(self.num_samples, 64) if image_like else self.num_samples
        generator = torch.Generator(device=loop.x_train.device).manual_seed(derive_seed(int(info.get("seed", 0)), "pictures"))
        samples = model_samples(model, loop.objective, kernel, loop.x_train, num, self.sampler_steps, generator,
                                loop.support)
        chains, times = None, None
        if image_like:  # chains.png: 8 chains over time, the objective's own or the run's kernel from noise
            chains = loop.objective.model_chains(model, 8, generator)
            if chains is None and self.sampler_steps > 0:
                x0 = NoiseSource("uniform", support=loop.support).fit(loop.x_train).sample(8, generator)
                chains = chain_snapshots(model, kernel, x0, self.sampler_steps, generator)
                times = snapshot_times(self.sampler_steps)
        self.written = save_pictures(run_dir, model, energy, standardizer, loop.x_train, samples, loop.history, chains,
                                     times)


__all__ = ["RunPictures", "chain_snapshots", "model_samples", "save_pictures", "snapshot_times"]
