"""Image grids: many images tiled into one labelled picture; chains over time as a grid.

:func:`image_grid` tiles images into one array; :func:`image_grid_figure` draws it scaled by an
integer factor (nearest neighbour) to at least 600 pixels wide, rows and columns labelled;
:func:`chain_grid_figure` lays out chains over time, one row per chain and one column per
snapshot. The ``save_*`` functions write atomically (format from the path's suffix). Imported
by, and re-exported from, :mod:`ebmlab.jobs.plots`.

Every picture ebmlab saves names ebmlab as its creator (:func:`figure_metadata`: the PNG text
chunk ``Software``, the PDF and SVG ``Creator``), which :func:`is_own_figure` reads back, so that
an output option replaces only ebmlab's own pictures, never a user's file.
"""

from __future__ import annotations

import math
import os
import struct
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from ebmlab.atomic import atomic_write

ArrayLike = np.ndarray | torch.Tensor


def _numpy(a: ArrayLike) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().cpu().numpy()
    return np.asarray(a)


#: The creator every ebmlab picture names (then the version), and where each format keeps it.
FIGURE_CREATOR = "ebmlab"
_CREATOR_KEYS = {"png": "Software", "pdf": "Creator", "svg": "Creator"}
_HEAD = 1 << 16


def figure_metadata(fmt: str) -> dict[str, str]:
    """The ``metadata=`` of ``Figure.savefig`` for format ``fmt``: ``{"Software": "ebmlab X"}`` for
    PNG, ``{"Creator": "ebmlab X"}`` for PDF and SVG, ``{}`` for formats without text metadata."""
    key = _CREATOR_KEYS.get(fmt.lower())
    if key is None:
        return {}
    from importlib.metadata import PackageNotFoundError, version

    try:
        return {key: f"{FIGURE_CREATOR} {version('ebmlab')}"}
    except PackageNotFoundError:
        return {key: FIGURE_CREATOR}


def _png_creator(data: bytes) -> bool:
    """Whether a PNG's text chunks (before its image data) hold ``Software`` = ``ebmlab ...``."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + length]
        if kind in (b"IDAT", b"IEND"):
            return False
        if kind in (b"tEXt", b"iTXt"):
            key, _, text = body.partition(b"\0")
            if kind == b"iTXt":  # compression flag and method, language tag, translated keyword
                text = text[2:].split(b"\0", 2)[-1] if text[:1] == b"\0" else b""
            if key == b"Software" and text.startswith(FIGURE_CREATOR.encode()):
                return True
        pos += 12 + length
    return False


def is_own_figure(path: str | os.PathLike) -> bool:
    """Whether the picture at ``path`` names ebmlab as its creator (:func:`figure_metadata`); any
    other file (a user's picture, text, a picture of another format than its suffix) is not."""
    fmt = Path(path).suffix.lstrip(".").lower()
    with open(path, "rb") as f:
        head = f.read(_HEAD)
        size = f.seek(0, os.SEEK_END)
        f.seek(max(size - _HEAD, 0))
        tail = f.read()
    if fmt == "png":
        return head.startswith(b"\x89PNG\r\n\x1a\n") and _png_creator(head)
    if fmt == "pdf":  # matplotlib writes the document information dictionary at the end
        return head.startswith(b"%PDF") and f"/Creator ({FIGURE_CREATOR}".encode() in tail
    if fmt == "svg":  # in the <metadata> block at the top
        return b"<svg" in head and f"<dc:title>{FIGURE_CREATOR}".encode() in head
    return False


def save_figure_file(fig: Figure, path: str | os.PathLike, **savefig_kwargs) -> Path:
    """``fig.savefig`` to ``path`` atomically, the format from the suffix, with ebmlab named as
    the creator (:func:`figure_metadata`)."""
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    metadata = figure_metadata(fmt)
    if metadata:
        savefig_kwargs["metadata"] = {**metadata, **savefig_kwargs.get("metadata", {})}
    return atomic_write(path, lambda f: fig.savefig(f, format=fmt, **savefig_kwargs))


def _save(fig: Figure, path: str | os.PathLike) -> Path:
    """``fig`` at its own size (``figsize · dpi`` pixels), atomically; the format from the suffix."""
    return save_figure_file(fig, path, dpi=fig.dpi)


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


#: Margins of a labelled image grid in pixels (left + right = top + bottom keeps a square grid square).
GRID_MARGINS = {"left": 78, "right": 18, "top": 42, "bottom": 54}
_GRID_DPI = 100


def _tick_positions(count: int, max_ticks: int = 16) -> np.ndarray:
    """Indices of at most ``max_ticks`` rows (or columns), evenly spread, the first and last kept."""
    return np.unique(np.linspace(0, count - 1, min(count, max_ticks)).round().astype(int))


def image_grid_figure(images: ArrayLike, nrow: int | None = None, *, title: str | None = None,
                      row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
                      xlabel: str | None = None, ylabel: str | None = None, min_width: int = 600,
                      padding: int = 1, **grid_kwargs) -> Figure:
    """A figure of :func:`image_grid` with its rows and columns labelled, the grid scaled by an
    integer factor (nearest neighbour: every pixel of every image stays a crisp square) to at
    least ``min_width`` pixels wide at 100 dpi (save with ``tight=False``).

    Default labels number the images: row ``r`` holds images ``r·n + 1 .. (r+1)·n``, columns
    ``1 .. n``. ``row_labels`` / ``col_labels`` name each row / column instead.
    """
    arr = _numpy(images)
    grid = image_grid(arr, nrow, padding=padding, **grid_kwargs)
    n = arr.shape[0]
    ncol = int(nrow) if nrow else math.ceil(math.sqrt(n))
    rows = math.ceil(n / ncol)
    h = (grid.shape[0] - padding) // rows - padding  # one image's height and width
    w = (grid.shape[1] - padding) // ncol - padding
    scale = max(1, math.ceil(min_width / grid.shape[1]))
    width, height = grid.shape[1] * scale, grid.shape[0] * scale
    m = GRID_MARGINS
    fig = Figure(figsize=((width + m["left"] + m["right"]) / _GRID_DPI, (height + m["top"] + m["bottom"]) / _GRID_DPI),
                 dpi=_GRID_DPI)
    total_w, total_h = width + m["left"] + m["right"], height + m["top"] + m["bottom"]
    ax = fig.add_axes((m["left"] / total_w, m["bottom"] / total_h, width / total_w, height / total_h))
    kwargs = {"cmap": "gray", "vmin": 0.0, "vmax": 1.0} if grid.ndim == 2 else {}
    ax.imshow(grid, interpolation="nearest", aspect="auto", extent=(0, grid.shape[1], grid.shape[0], 0), **kwargs)
    if row_labels is None:
        row_labels = [f"{r * ncol + 1}–{min(n, (r + 1) * ncol)}" if ncol > 1 else f"{r + 1}" for r in range(rows)]
    if col_labels is None:
        col_labels = [str(c + 1) for c in range(ncol)]
    ticks_r, ticks_c = _tick_positions(rows), _tick_positions(ncol)
    ax.set_yticks([padding + r * (h + padding) + h / 2 for r in ticks_r], [str(row_labels[r]) for r in ticks_r])
    ax.set_xticks([padding + c * (w + padding) + w / 2 for c in ticks_c], [str(col_labels[c]) for c in ticks_c])
    ax.tick_params(length=0, labelsize=8)
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel if xlabel is not None else "column", fontsize=9)
    ax.set_ylabel(ylabel if ylabel is not None else "images", fontsize=9)
    return fig


def save_image_grid(images: ArrayLike, path: str | os.PathLike, nrow: int | None = None, min_width: int = 600,
                    **figure_kwargs) -> Path:
    """Save :func:`image_grid_figure` of ``images`` (``(N, H, W)``, ``(N, 1, H, W)`` or
    ``(N, 3, H, W)``) to ``path``: the grid at least ``min_width`` pixels wide, rows and
    columns labelled (``title``, ``row_labels``, ``col_labels``, ``xlabel``, ``ylabel``,
    ``value_range``, ``padding`` and ``pad_value`` are passed on)."""
    fig = image_grid_figure(images, nrow, min_width=min_width, **figure_kwargs)
    return _save(fig, path)


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
    picked = arr[snapshot_indices(arr.shape[0], max_snapshots), :max_chains]  # (S', C', *image)
    return np.swapaxes(picked, 0, 1).reshape(-1, *arr.shape[2:])


def snapshot_indices(num_snapshots: int, max_snapshots: int) -> np.ndarray:
    """The snapshots :func:`chain_grid_images` keeps: at most ``max_snapshots`` of
    ``0 .. num_snapshots - 1``, evenly spaced, the first and the last kept."""
    count = min(max_snapshots, num_snapshots)
    return np.unique(np.linspace(0, num_snapshots - 1, count).round().astype(int))


def chain_grid_figure(snapshots: ArrayLike, max_chains: int = 8, max_snapshots: int = 10,
                      times: Sequence[int] | None = None, time_label: str = "sampler step",
                      title: str | None = None, **figure_kwargs) -> Figure:
    """Chains over time as a labelled image grid (:func:`image_grid_figure`): one row per chain
    (``chain 1 ..``), one column per snapshot, time running left to right, columns labelled by
    ``times`` (the ``time_label`` of each of the ``S`` snapshots, e.g. the sampler step) or else
    by the snapshot's index.

    ``snapshots`` has shape ``(S, C, *image)`` with image ``(H, W)``, ``(1, H, W)`` or
    ``(3, H, W)`` (e.g. a sampler's kept draws); see :func:`chain_grid_images`.
    """
    arr = _numpy(snapshots)
    images = chain_grid_images(arr, max_chains, max_snapshots)
    chains = min(max_chains, arr.shape[1])
    kept = snapshot_indices(arr.shape[0], max_snapshots)
    if times is not None and len(times) != arr.shape[0]:
        raise ValueError(f"save_chain_grid: need one time per snapshot ({arr.shape[0]}), got {len(times)}")
    col_labels = [str(int(times[i])) for i in kept] if times is not None else [str(int(i)) for i in kept]
    return image_grid_figure(images, nrow=len(kept), row_labels=[f"chain {c + 1}" for c in range(chains)],
                             col_labels=col_labels, xlabel=f"{time_label if times is not None else 'snapshot'} →",
                             ylabel="chain", title=title or f"{chains} chains over time", **figure_kwargs)


def save_chain_grid(snapshots: ArrayLike, path: str | os.PathLike, max_chains: int = 8, max_snapshots: int = 10,
                    **figure_kwargs) -> Path:
    """Save :func:`chain_grid_figure` of ``snapshots`` ``(S, C, *image)`` to ``path`` (``times``,
    ``time_label``, ``title``, ``min_width``, ``value_range``... are passed on)."""
    fig = chain_grid_figure(snapshots, max_chains, max_snapshots, **figure_kwargs)
    return _save(fig, path)


__all__ = ["FIGURE_CREATOR", "GRID_MARGINS", "chain_grid_figure", "figure_metadata", "is_own_figure", "save_figure_file", "chain_grid_images", "image_grid", "image_grid_figure",
           "save_chain_grid", "save_image_grid", "snapshot_indices"]
