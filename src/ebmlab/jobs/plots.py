"""Plots for samplers and training: 2-D densities with samples, image grids, chains over time, traces, losses.

Everything uses matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by
the Agg canvas), so no display is needed and no global pyplot state or backend is touched.
Every picture says what it shows: a title, labelled axes, colour bars with their quantity
(energy, density); image grids are at least 600 pixels wide with their rows and columns
labelled (chains × time for chain grids); loss curves are smoothed, the raw values faint behind.
Functions that take a ``path`` write atomically: to a temporary file in the same directory,
then ``os.replace``, so a failed save leaves nothing half-written. The format comes from the
path's suffix (``.png``, ``.pdf``, ``.svg``...).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ebmlab.data.images import is_image_like
from ebmlab.jobs.image_grids import (  # noqa: F401  (re-exported: plots is the one module of pictures)
    GRID_MARGINS, chain_grid_figure, chain_grid_images, image_grid, image_grid_figure, is_own_figure, save_chain_grid,
    save_figure_file, save_image_grid, snapshot_indices,
)

ArrayLike = np.ndarray | torch.Tensor


def _numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120, tight: bool = True) -> Path:
    """Save ``fig`` atomically to ``path`` (format from the suffix); ``tight=False`` keeps the
    figure's own size (``figsize · dpi`` pixels). The file names ebmlab as its creator
    (:func:`~ebmlab.jobs.image_grids.figure_metadata`), so that :func:`is_own_figure` knows it."""
    kwargs = {"bbox_inches": "tight"} if tight else {}
    return save_figure_file(fig, path, dpi=dpi, **kwargs)


def bounds_from_samples(samples: ArrayLike, pad: float = 0.1, min_width: float = 1.0) -> tuple[float, float, float, float]:
    """``(xmin, xmax, ymin, ymax)`` covering 2-D ``samples`` (shape ``(..., 2)``) with a margin.

    Each axis spans ``[min, max]`` of the finite samples, widened to at least ``min_width``
    and then by ``pad`` times its width on both sides.
    """
    pts = _numpy(samples).reshape(-1, 2).astype(np.float64)
    pts = pts[np.isfinite(pts).all(axis=1)]
    if pts.shape[0] == 0:
        raise ValueError("bounds_from_samples: no finite 2-D samples")
    out = []
    for lo, hi in zip(pts.min(axis=0), pts.max(axis=0)):
        centre, half = 0.5 * (lo + hi), 0.5 * max(hi - lo, min_width)
        out += [centre - half * (1 + 2 * pad), centre + half * (1 + 2 * pad)]
    return tuple(float(v) for v in out)


def density_grid(energy: Callable[[torch.Tensor], torch.Tensor], bounds: Sequence[float], resolution: int = 200,
                 chunk: int = 16384) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``exp(-(E - min E))`` on a ``resolution × resolution`` grid over ``bounds``.

    Returns ``(xs, ys, density)`` with shapes ``(R,)``, ``(R,)``, ``(R, R)``, where
    ``density[i, j]`` is at ``(xs[j], ys[i])``; the density is unnormalised with maximum 1.
    The energy is evaluated without gradients in chunks, on the device of its parameters.
    """
    xmin, xmax, ymin, ymax = (float(b) for b in bounds)
    if not (xmax > xmin and ymax > ymin):
        raise ValueError(f"density_grid: bounds must be (xmin, xmax, ymin, ymax) with min < max, got {tuple(bounds)}")
    xs, ys = np.linspace(xmin, xmax, resolution), np.linspace(ymin, ymax, resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = torch.as_tensor(np.stack([gx.ravel(), gy.ravel()], axis=1), dtype=torch.get_default_dtype())
    params = [*getattr(energy, "parameters", lambda: [])(), *getattr(energy, "buffers", lambda: [])()]
    if params:
        pts = pts.to(device=params[0].device)
    with torch.no_grad():
        e = torch.cat([energy(p).reshape(-1) for p in pts.split(chunk)]).double().cpu().numpy()
    e = np.where(np.isfinite(e), e, np.inf)
    finite = np.isfinite(e)
    density = np.exp(-(e - e[finite].min())) if finite.any() else np.zeros_like(e)
    return xs, ys, density.reshape(resolution, resolution)


def plot_samples_2d(samples: ArrayLike, ax: Axes, max_points: int = 5000, **scatter_kwargs):
    """Scatter 2-D ``samples`` (shape ``(..., 2)``) on ``ax``, thinned evenly to ``max_points``."""
    pts = _numpy(samples).reshape(-1, 2)
    if pts.shape[0] > max_points:
        pts = pts[np.linspace(0, pts.shape[0] - 1, max_points).astype(int)]
    kwargs = {"s": 3, "alpha": 0.5, "color": "tab:red", "linewidths": 0} | scatter_kwargs
    return ax.scatter(pts[:, 0], pts[:, 1], **kwargs)


def axes_2d(ax: Axes, bounds: Sequence[float], labels: tuple[str, str] = ("x₁", "x₂")) -> None:
    """Limit ``ax`` to ``bounds = (xmin, xmax, ymin, ymax)`` at equal aspect, axes labelled."""
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal", adjustable="box")
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])


def plot_density_2d(energy: Callable[[torch.Tensor], torch.Tensor], ax: Axes, bounds: Sequence[float],
                    samples: ArrayLike | None = None, resolution: int = 200, levels: int = 12,
                    colorbar: bool = True):
    """Filled contours of ``exp(-E)`` over ``bounds = (xmin, xmax, ymin, ymax)``, samples on top,
    with a colour bar of the density relative to its maximum (unnormalised: ``exp(-(E - min E))``).

    Returns the contour set. ``samples`` has shape ``(..., 2)``.
    """
    xs, ys, density = density_grid(energy, bounds, resolution)
    contours = ax.contourf(xs, ys, density, levels=np.linspace(0.0, 1.0, levels + 1), cmap="Blues")
    if colorbar:
        bar = ax.figure.colorbar(contours, ax=ax, fraction=0.046, pad=0.04, ticks=np.linspace(0, 1, 6))
        bar.set_label("density exp(−E), relative to its maximum")
    if samples is not None:
        plot_samples_2d(samples, ax)
    axes_2d(ax, bounds)
    return contours


def plot_energy_2d(energy: Callable[[torch.Tensor], torch.Tensor], ax: Axes, bounds: Sequence[float],
                   resolution: int = 200, levels: int = 16, quantile: float = 0.9):
    """Filled contours of the energy ``E(x) - min E`` (nats) over ``bounds``, with a colour bar;
    the colour scale stops at the ``quantile`` of the grid's values (higher energies share the top
    colour) so the far corners do not wash out the wells. Returns the contour set."""
    xs, ys, density = density_grid(energy, bounds, resolution)
    with np.errstate(divide="ignore"):
        e = -np.log(density)  # E - min E; inf where the density underflows
    finite = e[np.isfinite(e)]
    top = float(np.quantile(finite, quantile)) if finite.size else 1.0
    top = top if top > 0 else 1.0
    from matplotlib.ticker import MaxNLocator

    bounds_e = MaxNLocator(levels).tick_values(0.0, top)
    top = float(bounds_e[-1])
    contours = ax.contourf(xs, ys, np.minimum(e, top), levels=bounds_e, cmap="viridis")
    bar = ax.figure.colorbar(contours, ax=ax, fraction=0.046, pad=0.04, ticks=MaxNLocator(6).tick_values(0.0, top))
    bar.set_label(f"energy E(x) − min E (nats; ≥ {top:.3g} in the top colour)")
    axes_2d(ax, bounds)
    return contours


def plot_chains(samples: ArrayLike, path: str | os.PathLike, times: Sequence[int] | None = None,
                time_label: str = "kept draw") -> Path:
    """Chains over time, ``samples`` ``(draws, chains, *event)``: for image-like events
    (:func:`ebmlab.data.is_image_like`) a grid with one row per chain and one column per
    kept draw (:func:`save_chain_grid`), otherwise trace plots (:func:`plot_chain_trace`).
    ``times``: the ``time_label`` of each draw (default ``0 .. draws - 1``)."""
    times = range(samples.shape[0]) if times is None else times
    if is_image_like(tuple(samples.shape[2:])):
        return save_chain_grid(samples, path, times=times, time_label=time_label)
    return plot_chain_trace(samples, path, times=times, time_label=time_label)


def plot_chain_trace(samples: ArrayLike, path: str | os.PathLike, max_dims: int = 4, max_chains: int = 4,
                     times: Sequence[int] | None = None, time_label: str = "kept draw") -> Path:
    """Trace plots of ``samples`` (shape ``(draws, chains, *event)``): one panel per coordinate
    (the first ``max_dims`` of the flattened event), one line per chain (the first ``max_chains``),
    against ``times`` (default ``0 .. draws - 1``) labelled ``time_label``."""
    arr = _numpy(samples)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"plot_chain_trace: samples must be (draws >= 1, chains, *event), got {arr.shape}")
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    dims = min(max_dims, flat.shape[2])
    chains = min(max_chains, flat.shape[1])
    fig = Figure(figsize=(8, 1.3 + 1.6 * dims), layout="constrained")
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    steps = np.arange(flat.shape[0]) if times is None else np.asarray(list(times))
    if steps.shape != (flat.shape[0],):
        raise ValueError(f"plot_chain_trace: need one time per draw ({flat.shape[0]}), got {steps.shape[0]}")
    for d, ax in enumerate(axes):
        for c in range(chains):
            ax.plot(steps, flat[:, c, d], lw=0.7, label=f"chain {c + 1}")
        ax.set_ylabel(f"x[{d}]")
    axes[0].set_title(f"traces of {chains} chain{'s' if chains > 1 else ''} (first {dims} coordinates)")
    if chains > 1:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", fontsize=8, ncols=chains, frameon=False)
    axes[-1].set_xlabel(time_label)
    return save_figure(fig, path)


def _loss_series(metrics) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """``{name: (steps, values)}`` from ``{name: values}`` or a list of per-step dicts."""
    series: dict[str, tuple[list, list]] = {}
    if isinstance(metrics, Mapping):
        for name, values in metrics.items():
            vals = _numpy(values).astype(np.float64).reshape(-1)
            series[str(name)] = (list(range(len(vals))), list(vals))
    elif isinstance(metrics, Sequence) and all(isinstance(m, Mapping) for m in metrics):
        for i, record in enumerate(metrics):
            step = record.get("step", i)
            for name, value in record.items():
                if name != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                    steps, vals = series.setdefault(str(name), ([], []))
                    steps.append(step)
                    vals.append(float(value))
    else:
        raise ValueError("plot_loss_curve: metrics must be {name: values} or a list of {name: value, 'step': n} dicts")
    return {k: (np.asarray(s, dtype=np.float64), np.asarray(v, dtype=np.float64)) for k, (s, v) in series.items() if v}


def smooth(values: ArrayLike, window: float | None = None) -> np.ndarray:
    """A debiased exponential moving average of ``values`` ``(T,)`` (as TensorBoard smooths):
    ``m_t = β m_{t-1} + (1 - β) v_t``, shown as ``m_t / (1 - β^t)``, ``β = 1 - 1/window``;
    ``window`` defaults to ``T / 15`` (at least 1: no smoothing). Non-finite values are skipped."""
    v = _numpy(values).astype(np.float64).reshape(-1)
    window = max(1.0, v.size / 15) if window is None else float(window)
    if window < 1:
        raise ValueError(f"smooth: window must be >= 1, got {window}")
    beta = 1.0 - 1.0 / window
    out, mean, weight = np.empty_like(v), 0.0, 0.0
    for i, x in enumerate(v):
        if np.isfinite(x):
            mean, weight = beta * mean + (1 - beta) * x, beta * weight + (1 - beta)
        out[i] = mean / weight if weight > 0 else np.nan
    return out


def is_constant(values: ArrayLike) -> bool:
    """Whether the finite ``values`` are all equal (a metric constant by construction, like the
    acceptance rate 1 of ULA or block Gibbs, gets no panel)."""
    v = _numpy(values).astype(np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    return v.size > 1 and bool(np.all(v == v[0]))


def plot_smoothed(ax: Axes, steps: ArrayLike, values: ArrayLike, color=None, label: str | None = None,
                  window: float | None = None):
    """The raw ``values`` faint and their :func:`smooth` curve bold on ``ax``; returns the bold line."""
    (raw,) = ax.plot(steps, values, lw=0.8, alpha=0.25, color=color)
    (line,) = ax.plot(steps, smooth(values, window), lw=1.6, color=raw.get_color(), label=label)
    return line


def loss_curve_figure(metrics, title: str | None = None, ncols: int | None = None) -> Figure:
    """One panel per metric against the update step, smoothed with the raw values faint behind
    (:func:`plot_smoothed`); a metric constant throughout gets no panel but a note under the
    figure. ``metrics`` is ``{name: values}`` or a list of records ``[{"step": 1, "loss": 1.2,
    ...}, ...]`` (non-numeric fields are skipped)."""
    series = _loss_series(metrics)
    if not series:
        raise ValueError("plot_loss_curve: no numeric metrics to plot")
    constant = {k: v[np.isfinite(v)][0] for k, (_, v) in series.items() if is_constant(v)}
    shown = {k: v for k, v in series.items() if k not in constant} or series
    ncols = ncols or (1 if len(shown) <= 3 else 2)
    nrows = math.ceil(len(shown) / ncols)
    fig = Figure(figsize=(7 if ncols == 1 else 11, 1.0 + 2.1 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, sharex=True, squeeze=False).reshape(-1)
    for ax, (name, (steps, values)) in zip(axes, shown.items()):
        plot_smoothed(ax, steps, values)
        ax.set_ylabel(name)
        ax.set_title(f"{name}: last {values[-1]:.4g}", fontsize=9, loc="left")
        ax.grid(alpha=0.3)
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    for ax in axes[:len(shown)][-ncols:]:
        ax.set_xlabel("update step")
        ax.xaxis.set_tick_params(labelbottom=True)
    fig.suptitle(title or "training metrics (faint: raw; bold: smoothed)", fontsize=11)
    if constant and len(shown) < len(series):
        fig.supxlabel("constant throughout (not plotted): " + ", ".join(f"{k} = {v:.4g}" for k, v in constant.items()),
                      fontsize=8, color="0.35")
    return fig


def plot_loss_curve(metrics, path: str | os.PathLike, title: str | None = None) -> Path:
    """Save :func:`loss_curve_figure` of ``metrics`` to ``path``."""
    return save_figure(loss_curve_figure(metrics, title), path)


def plot_samples(energy, samples: ArrayLike, path: str | os.PathLike, max_images: int = 64) -> Path:
    """The default picture of a sampling run ``samples`` (shape ``(draws, chains, *event)``).

    2-D events: density contours of ``exp(-E)`` (when ``energy`` is not ``None``) with every
    draw scattered on top; image-like
    events ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)``: a grid of each chain's last draw (at
    most ``max_images``); anything else: trace plots.
    """
    arr = _numpy(samples)
    event = arr.shape[2:]
    draws = f"{arr.shape[0]} draws × {arr.shape[1]} chains"
    if event == (2,):
        fig = Figure(figsize=(6, 5), layout="constrained")
        ax = fig.subplots()
        if energy is None:
            plot_samples_2d(arr, ax)
            axes_2d(ax, bounds_from_samples(arr))
        else:
            plot_density_2d(energy, ax, bounds_from_samples(arr), samples=arr)
        ax.set_title(f"samples ({draws})" + (" on the density exp(−E)" if energy is not None else ""))
        return save_figure(fig, path)
    if is_image_like(event):
        shown = min(max_images, arr.shape[1])
        return save_image_grid(arr[-1, :max_images], path, title=f"last draw of {shown} chains")
    return plot_chain_trace(arr, path)


__all__ = [
    "axes_2d", "bounds_from_samples", "chain_grid_figure", "chain_grid_images", "density_grid", "image_grid", "image_grid_figure", "is_constant",
    "loss_curve_figure", "plot_chain_trace", "plot_chains", "plot_density_2d", "plot_energy_2d", "plot_loss_curve",
    "plot_samples", "plot_samples_2d", "plot_smoothed", "save_chain_grid", "save_figure", "save_image_grid", "smooth",
    "snapshot_indices",
]
