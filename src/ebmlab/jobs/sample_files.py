"""Writing a sampling job's record: ``.npz`` or netCDF, atomically.

Output files (``--out``), written atomically. A ``.npz`` (``np.load(path)``) holds, with
``kept = num_steps // thin`` draws of ``C`` chains and the run's float dtype (float32 unless
``torch.set_default_dtype`` says otherwise):

* ``samples`` ``(kept, C, *event)`` float: the kept draws, draw-major (ArviZ's order is
  chain-major: ``samples.swapaxes(0, 1)``);
* ``energy`` ``(kept, C)`` float: ``E(x)`` of each kept draw (lower is likelier);
* ``acceptance_rate`` ``(C,)`` float: accepted proposals per step after burn-in;
* ``divergences`` ``(C,)`` int64: divergent transitions after burn-in;
* ``step_size`` ``()`` float64: the tuned step size (NaN for kernels without one); ``(chains,)``
  when it was tuned per chain (NUTS by default);
* ``wall_time`` ``()`` float64: seconds, burn-in included;
* ``event_shape`` ``(len(event),)`` int64;
* ``metadata`` ``()`` str: JSON of every option of the job and its results (``ebmlab_version``,
  ``kernel``, ``step_size``, ``num_kept``, ``divergences``, ...);
* copies of metadata fields, ``()`` each: ``energy_spec``, ``sampler``, ``init``, ``support``
  (str) and ``seed``, ``num_chains``, ``num_steps``, ``burn_in``, ``thin`` (int64).

A ``.nc`` is netCDF written through ArviZ (:func:`ebmlab.diagnostics.to_arviz`; ``pip install
ebmlab[arviz]``): group ``posterior`` with ``x`` ``(chain, draw, *event)``, group
``sample_stats`` with ``lp = -energy``, ``acceptance_rate``, ``step_size`` (and NUTS's per-draw
statistics when the record has them), the metadata JSON as the attribute ``ebmlab_metadata``;
read it with ``arviz.from_netcdf`` (or ``xarray.open_datatree``).

Before anything runs, :func:`check_outputs` checks every output path of a job: ``--out`` must end
in ``.npz`` or ``.nc`` and may replace only an empty file or a file ebmlab wrote
(:func:`~ebmlab.jobs.guards.is_sample_file`: a ``.npz`` with ``metadata``, a netCDF file whose ``posterior`` group has
the ``ebmlab_metadata`` attribute); ``--plot`` and ``--plot-chains`` must end in ``.png``,
``.pdf`` or ``.svg`` and may replace only an empty file or a picture ebmlab wrote
(:func:`ebmlab.jobs.image_grids.is_own_figure`, the creator metadata of every ebmlab picture);
no two outputs may name the same file. Every refusal is one line naming the option.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ebmlab.atomic import atomic_write
from ebmlab.jobs.guards import check_path_names, is_own_netcdf, is_sample_file
from ebmlab.samplers import ChainRecord

OUT_SUFFIXES = (".npz", ".nc")
FIGURE_SUFFIXES = (".png", ".pdf", ".svg")


def save_record(path: str | os.PathLike, record: ChainRecord, meta: dict) -> Path:
    """Write ``record`` and ``meta`` to ``path`` as ``.npz`` (or netCDF for a ``.nc`` path, see
    :func:`save_netcdf`), atomically (temp file + ``os.replace``); the layouts are in the module docstring."""
    path = Path(path)
    if path.suffix == ".nc":
        return save_netcdf(path, record, meta)
    step = record.step_size
    arrays = {
        "samples": record.samples.detach().cpu().numpy(),
        "energy": record.energy.detach().cpu().numpy(),
        "acceptance_rate": record.acceptance_rate.detach().cpu().numpy(),
        "divergences": record.divergences.detach().cpu().numpy(),
        "step_size": (step.detach().cpu().numpy().astype(np.float64) if isinstance(step, torch.Tensor)
                      else np.float64(step if step is not None else np.nan)),
        "wall_time": np.float64(record.wall_time),
        "event_shape": np.asarray(record.samples.shape[2:], dtype=np.int64),
        "metadata": np.asarray(json.dumps(meta)),
    }
    for key in ("energy_spec", "sampler", "seed", "num_chains", "num_steps", "burn_in", "thin", "init", "support"):
        value = meta.get("energy" if key == "energy_spec" else key)
        if value is not None:
            arrays[key] = np.asarray(value)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def save_netcdf(path: str | os.PathLike, record: ChainRecord, meta: dict) -> Path:
    """Write :func:`ebmlab.diagnostics.to_arviz` of ``record`` to ``path`` as netCDF, atomically,
    with ``meta`` as the JSON attribute ``ebmlab_metadata`` of its groups (needs ArviZ)."""
    from ebmlab.diagnostics import to_arviz

    data = to_arviz(record)
    for group in ("posterior", "sample_stats"):
        data[group].attrs["ebmlab_metadata"] = json.dumps(meta)
    path = Path(path)

    def write(f) -> None:
        with tempfile.TemporaryDirectory(dir=path.parent) as folder:
            written = Path(folder) / "record.nc"
            data.to_netcdf(str(written))
            f.write(written.read_bytes())

    return atomic_write(path, write)


def check_writable(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output path whose directory is missing or not writable, or that is a directory."""
    path = check_path_names(path, option)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{option} {str(path)!r} is a directory; give a file name")
    if path.exists() and not path.is_file():  # writing would replace a FIFO or a device with a zip file
        raise ValueError(f"{option} {str(path)!r} exists and is not a regular file (a FIFO, socket or device); "
                         f"give a new file name")
    if not parent.is_dir():
        reason = "is not a directory" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"{option} {str(path)!r}: directory {str(parent)!r} {reason}")
    try:  # a real probe: permission bits alone say nothing for root or read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise PermissionError(f"{option} {str(path)!r}: directory {str(parent)!r} is not writable ({err.strerror})") from None
    return path


def check_output_file(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output path that does not end in ``.npz`` or ``.nc``, is not writable
    (:func:`check_writable`), or is an existing file that ebmlab did not write (:func:`~ebmlab.jobs.guards.is_sample_file`)."""
    path = check_writable(path, option)
    if path.suffix not in OUT_SUFFIXES:
        raise ValueError(f"{option} {str(path)!r}: the file name must end in .npz or .nc (netCDF)")
    if path.is_file() and not is_sample_file(path):
        raise FileExistsError(f"{option} {str(path)!r} exists and is not an ebmlab sample file; remove it or choose "
                              f"another name (sampling replaces only its own outputs)")
    return path


def check_figure_path(path: str | os.PathLike, option: str = "--plot") -> Path:
    """Refuse a figure path that does not end in .png, .pdf or .svg, is not writable, or is an
    existing non-empty file that is not a picture ebmlab wrote (:func:`~ebmlab.jobs.image_grids.is_own_figure`)."""
    if Path(path).suffix.lower() not in FIGURE_SUFFIXES:
        raise ValueError(f"{option} {str(path)!r}: the file name must end in .png, .pdf or .svg")
    path = check_writable(path, option)
    if path.is_file() and path.stat().st_size > 0:
        from ebmlab.jobs.image_grids import is_own_figure

        if not is_own_figure(path):
            raise FileExistsError(f"{option} {str(path)!r} exists and is not a picture ebmlab wrote; remove it or "
                                  f"choose another name (sampling replaces only its own outputs)")
    return path


def check_outputs(out: str | os.PathLike, plot: str | os.PathLike | None = None,
                  plot_chains: str | os.PathLike | None = None) -> None:
    """Check every output of a sampling job before it runs (:func:`check_output_file` for ``--out``,
    :func:`check_figure_path` for ``--plot`` and ``--plot-chains``) and that no two name one file."""
    check_output_file(out, "--out")
    named = {"--out": Path(out)}
    for option, path in (("--plot", plot), ("--plot-chains", plot_chains)):
        if path is None:
            continue
        check_figure_path(path, option)
        for other, seen in named.items():
            if os.path.abspath(seen) == os.path.abspath(path):
                raise ValueError(f"{option} and {other} name the same file {str(path)!r}; give each its own name")
        named[option] = Path(path)


__all__ = ["FIGURE_SUFFIXES", "OUT_SUFFIXES", "check_figure_path", "check_output_file", "check_outputs",
           "check_writable", "is_own_netcdf", "save_netcdf", "save_record"]
