"""Export a chain record to ArviZ: ``to_arviz(record)``; ArviZ is an optional extra
(``pip install ebmlab[arviz]``) and is imported only when called.

The record is read by its attributes (duck typing, as the rest of :mod:`ebmlab.diagnostics`):
``samples`` ``(draws, chains, *event)``, ``energy`` ``(draws, chains)``, ``acceptance_rate``
``(chains,)``, ``divergences`` ``(chains,)``, ``kernel`` (its ``name``; or a ``sampler`` name), ``step_size`` (a float,
a ``(chains,)`` tensor or ``None``) or ``kernel.step_size``, and optionally ``stats``: a dict of
per-draw tensors ``(draws, chains)`` such as NUTS's ``tree_depth``, ``num_grad_evals``,
``energy_error``, ``accept_prob``, ``diverged``.
"""

from __future__ import annotations

import importlib.util
import warnings as _warnings
from typing import Any

import numpy as np

#: ebmlab's per-draw statistic -> ArviZ's sample_stats name (InferenceData schema).
STAT_NAMES = {"accept_prob": "acceptance_rate", "diverged": "diverging", "num_grad_evals": "n_steps",
              "tree_depth": "tree_depth", "energy_error": "energy_error"}
INSTALL_HINT = "pip install ebmlab[arviz]"


def arviz_available() -> bool:
    """Whether :func:`to_arviz` can run: ``arviz`` (0.x or ≥ 1.0) or ``arviz_base`` is installed."""
    return any(importlib.util.find_spec(name) is not None for name in ("arviz", "arviz_base"))


def _numpy(value: Any) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    return np.asarray(value)


def _from_dict(library: str | None):
    """``(flavour, from_dict)``: arviz 0.x's ``from_dict(posterior=..., ...)`` (``"arviz0"``) or
    arviz-base's ``from_dict({group: {...}})`` (``"arviz_base"``, what ArviZ ≥ 1.0 exports)."""
    if library not in (None, "arviz", "arviz_base"):
        raise ValueError(f"to_arviz: library must be None, 'arviz' or 'arviz_base', got {library!r}")
    if library in (None, "arviz") and importlib.util.find_spec("arviz") is not None:
        with _warnings.catch_warnings():  # arviz 0.2x announces its 1.0 refactor with a FutureWarning
            _warnings.simplefilter("ignore", FutureWarning)
            import arviz
        major = int(str(arviz.__version__).split(".")[0])
        return ("arviz0" if major < 1 else "arviz_base"), arviz.from_dict
    if library in (None, "arviz_base") and importlib.util.find_spec("arviz_base") is not None:
        import arviz_base

        return "arviz_base", arviz_base.from_dict
    raise ImportError(f"to_arviz needs ArviZ ({library or 'arviz or arviz_base'} is not installed): {INSTALL_HINT}")


def _per_draw(name: str, value: Any, draws: int, chains: int) -> np.ndarray:
    array = _numpy(value)
    if array.shape[:2] != (draws, chains):
        raise ValueError(f"to_arviz: record.stats[{name!r}] must have shape (draws={draws}, chains={chains}, ...) "
                         f"like the samples, got {array.shape}")
    return np.swapaxes(array, 0, 1)


def to_arviz(record: Any, var_name: str = "x", library: str | None = None):
    """The draws and sample statistics of ``record`` as an ArviZ object with ``chain``/``draw`` dims.

    Groups: ``posterior`` holds ``var_name`` ``(chain, draw, *event)`` (event dims named
    ``{var_name}_dim_0, ...``); ``sample_stats`` holds ``lp = -E(x)`` (ArviZ's unnormalised log
    density; E itself is not stored as ``energy``, which ArviZ reads as the Hamiltonian for its
    BFMI), ``step_size``, ``acceptance_rate`` (per draw from ``record.stats["accept_prob"]``,
    else each chain's post-burn-in rate repeated along ``draw``), and every ``record.stats``
    entry under ArviZ's name (``diverging``, ``tree_depth``, ``n_steps``, ``energy_error``;
    others keep theirs). Attributes: ``created_by``, ``sampler``, ``num_steps``, ``burn_in``,
    ``thin``, ``wall_time``, and per chain ``acceptance_rate_per_chain`` and
    ``divergences_per_chain`` (divergences are counted over all post-burn-in steps, kept or not).

    Returns an ``arviz.InferenceData`` with arviz 0.x, an ``xarray.DataTree`` with ArviZ ≥ 1.0 or
    arviz-base (``library=None`` picks ``arviz`` if installed, else ``arviz_base``; both have
    ``.to_netcdf(path)``). Raises ``ImportError`` (naming ``pip install ebmlab[arviz]``) without
    ArviZ, ``ValueError`` for a record without kept draws or a mis-shaped statistic.
    """
    flavour, from_dict = _from_dict(library)
    samples = _numpy(record.samples)
    if samples.ndim < 2 or samples.shape[0] == 0:
        raise ValueError(f"to_arviz: the record has no kept draws (samples of shape {samples.shape}); "
                         "sample with keep_samples=True")
    draws, chains = samples.shape[:2]
    stats = {"lp": -np.swapaxes(_numpy(record.energy), 0, 1).astype(np.float64)}
    for name, value in (getattr(record, "stats", None) or {}).items():
        stats[STAT_NAMES.get(name, name)] = _per_draw(name, value, draws, chains)
    rate = _numpy(record.acceptance_rate).astype(np.float64).reshape(-1)
    stats.setdefault("acceptance_rate", np.broadcast_to(rate[:, None], (chains, draws)).copy())
    step = getattr(record, "step_size", getattr(getattr(record, "kernel", None), "step_size", None))
    if step is not None:
        step = _numpy(step).astype(np.float64).reshape(-1)
        stats["step_size"] = np.broadcast_to(step[:, None] if step.size == chains else step[:1, None],
                                             (chains, draws)).copy()
    kernel = getattr(record, "kernel", None)
    sampler = getattr(record, "sampler", None) or getattr(kernel, "name", "") or type(kernel).__name__
    attrs = {"created_by": "ebmlab", "sampler": sampler,
             "acceptance_rate_per_chain": rate,
             "divergences_per_chain": _numpy(record.divergences).astype(np.int64).reshape(-1)}
    for key in ("num_steps", "burn_in", "thin", "wall_time"):
        if getattr(record, key, None) is not None:
            attrs[key] = getattr(record, key)
    posterior = {var_name: np.swapaxes(samples, 0, 1)}
    with _warnings.catch_warnings():  # the arrays are chain-major by construction, even with fewer draws than chains
        _warnings.filterwarnings("ignore", message="More chains", category=UserWarning)
        if flavour == "arviz0":
            return from_dict(posterior=posterior, sample_stats=stats, posterior_attrs=dict(attrs),
                             sample_stats_attrs=dict(attrs))
        return from_dict({"posterior": posterior, "sample_stats": stats}, attrs={"posterior": attrs, "sample_stats": attrs})


__all__ = ["INSTALL_HINT", "STAT_NAMES", "arviz_available", "to_arviz"]
