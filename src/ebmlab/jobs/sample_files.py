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
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from ebmlab.atomic import atomic_write
from ebmlab.samplers import ChainRecord


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


__all__ = ["save_netcdf", "save_record"]
