"""Plots for samplers and training: 2-D densities with samples, image grids, chains over time, traces, losses.

Everything uses matplotlib's object-oriented API (``matplotlib.figure.Figure``, rendered by
the Agg canvas), so no display is needed and no global pyplot state or backend is touched.
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

from ebmlab.atomic import atomic_write
from ebmlab.data.images import is_image_like

ArrayLike = np.ndarray | torch.Tensor


def _numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


def _fmt(path: str | os.PathLike) -> str:
    return Path(path).suffix.lstrip(".").lower() or "png"


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 120) -> Path:
    """Save ``fig`` atomically to ``path`` (format from the suffix)."""
    return atomic_write(path, lambda f: fig.savefig(f, format=_fmt(path), dpi=dpi, bbox_inches="tight"))


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


def plot_density_2d(energy: Callable[[torch.Tensor], torch.Tensor], ax: Axes, bounds: Sequence[float],
                    samples: ArrayLike | None = None, resolution: int = 200, levels: int = 12):
    """Filled contours of ``exp(-E)`` over ``bounds = (xmin, xmax, ymin, ymax)``, samples on top.

    Returns the contour set. ``samples`` has shape ``(..., 2)``.
    """
    xs, ys, density = density_grid(energy, bounds, resolution)
    contours = ax.contourf(xs, ys, density, levels=np.linspace(0.0, 1.0, levels + 1), cmap="Blues")
    if samples is not None:
        plot_samples_2d(samples, ax)
    ax.set_xlim(bounds[0], bounds[1])
    ax.set_ylim(bounds[2], bounds[3])
    ax.set_aspect("equal", adjustable="box")
    return contours


def image_grid(images: ArrayLike, nrow: int | None = None, padding: int = 1, pad_value: float = 0.5,
               value_range: tuple[float, float] | None = None) -> np.ndarray:
    """Tile images into one array, ``nrow`` images per row (default ``ceil(√N)``).

    ``images`` has shape ``(N, H, W)``, ``(N, 1, H, W)`` or ``(N, 3, H, W)``. Values are mapped
    to [0, 1] linearly from ``value_range`` (default: the finite min and max of all images) and
    clipped. Returns ``(rows·H + (rows+1)·padding, nrow·W + (nrow+1)·padding)``, with a last
    axis of 3 for colour images; the gaps hold ``pad_value``.
    """
    arr = _numpy(images).astype(np.float64)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if not (arr.ndim == 3 or (arr.ndim == 4 and arr.shape[1] == 3)) or arr.shape[0] < 1:
        raise ValueError(f"image_grid: images must be (N, H, W), (N, 1, H, W) or (N, 3, H, W), got {arr.shape}")
    if arr.ndim == 4:
        arr = arr.transpose(0, 2, 3, 1)
    finite = arr[np.isfinite(arr)]
    lo, hi = value_range if value_range is not None else ((finite.min(), finite.max()) if finite.size else (0.0, 1.0))
    arr = np.clip((np.nan_to_num(arr, nan=lo) - lo) / (hi - lo if hi > lo else 1.0), 0.0, 1.0)
    n, h, w = arr.shape[:3]
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(n))
    if ncol < 1:
        raise ValueError(f"image_grid: nrow must be >= 1, got {nrow}")
    rows = math.ceil(n / ncol)
    grid = np.full((rows * h + (rows + 1) * padding, ncol * w + (ncol + 1) * padding, *arr.shape[3:]), pad_value)
    for i in range(n):
        r, c = divmod(i, ncol)
        top, left = padding + r * (h + padding), padding + c * (w + padding)
        grid[top:top + h, left:left + w] = arr[i]
    return grid


def save_image_grid(images: ArrayLike, path: str | os.PathLike, nrow: int | None = None, min_size: int = 256,
                    **grid_kwargs) -> Path:
    """Save :func:`image_grid` of ``images`` to ``path``, upscaled by an integer factor
    (nearest neighbour) so the longer side is at least ``min_size`` pixels."""
    from matplotlib.image import imsave

    grid = image_grid(images, nrow, **grid_kwargs)
    scale = max(1, math.ceil(min_size / max(grid.shape[:2])))
    grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grid.ndim == 2 else {}
    return atomic_write(path, lambda f: imsave(f, grid, format=_fmt(path), **kwargs))


def chain_grid_images(snapshots: ArrayLike, max_chains: int = 8, max_snapshots: int = 10) -> np.ndarray:
    """Chains over time as one image list: ``snapshots`` ``(S, C, *image)`` -> ``(C'·S', *image)``.

    Keeps the first ``max_chains`` chains and ``max_snapshots`` snapshots evenly spaced from the
    first to the last (both kept), ordered chain by chain, so that with ``nrow = S'`` each row
    of :func:`image_grid` is one chain and each column one time.
    """
    arr = _numpy(snapshots)
    if arr.ndim < 4 or arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ValueError(f"chain_grid_images: snapshots must be (S >= 1, C >= 1, *image), got {arr.shape}")
    if max_chains < 1 or max_snapshots < 1:
        raise ValueError(f"chain_grid_images: max_chains and max_snapshots must be >= 1, got {max_chains}, {max_snapshots}")
    count = min(max_snapshots, arr.shape[0])
    times = np.unique(np.linspace(0, arr.shape[0] - 1, count).round().astype(int))
    picked = arr[times, :max_chains]  # (S', C', *image)
    return np.swapaxes(picked, 0, 1).reshape(-1, *arr.shape[2:])


def save_chain_grid(snapshots: ArrayLike, path: str | os.PathLike, max_chains: int = 8, max_snapshots: int = 10,
                    **grid_kwargs) -> Path:
    """Save chains over time as an image grid: one row per chain, one column per snapshot.

    ``snapshots`` has shape ``(S, C, *image)`` with image ``(H, W)``, ``(1, H, W)`` or
    ``(3, H, W)`` (e.g. a sampler's kept draws); see :func:`chain_grid_images`.
    """
    images = chain_grid_images(snapshots, max_chains, max_snapshots)
    columns = images.shape[0] // min(max_chains, _numpy(snapshots).shape[1])
    return save_image_grid(images, path, nrow=columns, **grid_kwargs)


def plot_chains(samples: ArrayLike, path: str | os.PathLike) -> Path:
    """Chains over time, ``samples`` ``(draws, chains, *event)``: for image-like events
    (:func:`ebmlab.data.is_image_like`) a grid with one row per chain and one column per
    snapshot (:func:`save_chain_grid`), otherwise trace plots (:func:`plot_chain_trace`)."""
    if is_image_like(tuple(samples.shape[2:])):
        return save_chain_grid(samples, path)
    return plot_chain_trace(samples, path)


def plot_chain_trace(samples: ArrayLike, path: str | os.PathLike, max_dims: int = 4, max_chains: int = 4) -> Path:
    """Trace plots of ``samples`` (shape ``(draws, chains, *event)``): one panel per coordinate
    (the first ``max_dims`` of the flattened event), one line per chain (the first ``max_chains``)."""
    arr = _numpy(samples)
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise ValueError(f"plot_chain_trace: samples must be (draws >= 1, chains, *event), got {arr.shape}")
    flat = arr.reshape(arr.shape[0], arr.shape[1], -1)
    dims = min(max_dims, flat.shape[2])
    fig = Figure(figsize=(8, 1.8 * dims))
    axes = fig.subplots(dims, 1, sharex=True, squeeze=False)[:, 0]
    for d, ax in enumerate(axes):
        for c in range(min(max_chains, flat.shape[1])):
            ax.plot(flat[:, c, d], lw=0.7)
        ax.set_ylabel(f"x[{d}]")
    axes[-1].set_xlabel("kept draw")
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


def plot_loss_curve(metrics, path: str | os.PathLike) -> Path:
    """One panel per metric against the step: ``metrics`` is ``{name: values}`` or a list of
    per-step records ``[{"step": 0, "loss": 1.2, ...}, ...]`` (non-numeric fields are skipped)."""
    series = _loss_series(metrics)
    if not series:
        raise ValueError("plot_loss_curve: no numeric metrics to plot")
    fig = Figure(figsize=(7, 2.2 * len(series)))
    axes = fig.subplots(len(series), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, (steps, values)) in zip(axes, series.items()):
        ax.plot(steps, values, lw=1.0)
        ax.set_ylabel(name)
    axes[-1].set_xlabel("step")
    return save_figure(fig, path)


def plot_samples(energy, samples: ArrayLike, path: str | os.PathLike, max_images: int = 64) -> Path:
    """The default picture of a sampling run ``samples`` (shape ``(draws, chains, *event)``).

    2-D events: density contours of ``exp(-E)`` (when ``energy`` is not ``None``) with every
    draw scattered on top; image-like
    events ``(H, W)``, ``(1, H, W)`` or ``(3, H, W)``: a grid of each chain's last draw (at
    most ``max_images``); anything else: trace plots.
    """
    arr = _numpy(samples)
    event = arr.shape[2:]
    if event == (2,):
        fig = Figure(figsize=(5, 5))
        ax = fig.subplots()
        if energy is None:
            plot_samples_2d(arr, ax)
            ax.set_aspect("equal")
        else:
            plot_density_2d(energy, ax, bounds_from_samples(arr), samples=arr)
        return save_figure(fig, path)
    if is_image_like(event):
        return save_image_grid(arr[-1, :max_images], path)
    return plot_chain_trace(arr, path)


__all__ = [
    "bounds_from_samples", "chain_grid_images", "density_grid", "image_grid", "plot_chain_trace", "plot_chains",
    "plot_density_2d", "plot_loss_curve", "plot_samples", "plot_samples_2d", "save_chain_grid", "save_figure",
    "save_image_grid",
]
