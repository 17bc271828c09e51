#!/usr/bin/env python
"""Regenerate tests/data/arviz_reference.json: ArviZ's diagnostics on small fixed data sets.

    .venv/bin/pip install arviz-stats arviz   # arviz-stats: ArviZ >= 1.0's statistics
    .venv/bin/python scripts/arviz_reference.py

The draws are stored in the file (rounded to 6 decimals, ebmlab's layout
``(num_draws, num_chains, num_dims)``) so the test needs neither ArviZ nor a stable random
stream. Values come from ``arviz_stats.base.array_stats`` (the ArviZ >= 1.0 definitions); the
MCSE of the sd as arviz 0.x computes it (``mcse_sd_squares``) comes from arviz 0.x when it is
installed. tests/test_diagnostics_arviz.py compares ebmlab.diagnostics with every number here.
"""

from __future__ import annotations

import json
import warnings
from importlib.metadata import version
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "tests" / "data" / "arviz_reference.json"


def datasets() -> dict[str, np.ndarray]:
    """Named draws ``(num_draws, num_chains, num_dims)``: mixing, trending, antithetic,
    heavy-tailed, discrete, single-chain and disagreeing chains; odd lengths drop a middle draw."""
    rng = np.random.default_rng(20240611)
    ar = np.zeros((200, 4, 1))
    for t in range(1, 200):
        ar[t] = 0.5 * ar[t - 1] + rng.standard_normal((4, 1))
    shifted = rng.standard_normal((61, 4, 1))
    shifted[:, 0] += 1.5
    return {
        "iid": rng.standard_normal((61, 4, 2)),
        "random_walk": rng.standard_normal((61, 4, 2)).cumsum(axis=0),
        "trending": ar + np.linspace(0.0, 4.0, 200)[:, None, None],
        "antithetic": 0.8 * np.cumprod(-np.ones((61, 4, 2)), axis=0) + rng.standard_normal((61, 4, 2)),
        "cauchy": rng.standard_cauchy((61, 4, 2)),
        "binary": (rng.random((60, 4, 2)) < 0.3).astype(float),
        "one_chain": rng.standard_normal((80, 1, 2)).cumsum(axis=0),
        "shifted_chain": shifted,
    }


def reference(x: np.ndarray) -> dict[str, list[float]]:
    from arviz_stats.base import array_stats as stats

    a = np.moveaxis(x, 0, 1)  # ArviZ's (chain, draw, ...)
    axes = {"chain_axis": 0, "draw_axis": 1}
    values = {
        "ess_bulk": stats.ess(a, method="bulk", **axes),
        "ess_tail": stats.ess(a, method="tail", prob=(0.05, 0.95), **axes),
        "ess_tail_89": stats.ess(a, method="tail", prob=0.89, **axes),
        "ess_mean": stats.ess(a, method="mean", **axes),
        "ess_identity": stats.ess(a, method="identity", **axes),
        "mcse_mean": stats.mcse(a, method="mean", **axes),
        "mcse_sd": stats.mcse(a, method="sd", **axes),
    }
    if x.shape[1] >= 2:
        values["rhat"] = stats.rhat(a, method="rank", **axes)
        values["rhat_split"] = stats.rhat(a, method="split", **axes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            import arviz
        if int(arviz.__version__.split(".")[0]) < 1:
            values["mcse_sd_squares"] = [arviz.mcse(a[..., i], method="sd") for i in range(a.shape[-1])]
    except ImportError:
        pass
    return {k: [float(v) for v in np.ravel(val)] for k, val in values.items()}


def main() -> None:
    versions = {}
    for name in ("arviz-stats", "arviz-base", "arviz", "numpy", "scipy"):
        try:
            versions[name] = version(name)
        except Exception:
            pass
    cases = {}
    for name, x in datasets().items():
        x = np.round(x, 6)
        cases[name] = {"draws": x.tolist(), "reference": reference(x)}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps({"generated_by": "scripts/arviz_reference.py", "versions": versions,
                               "layout": "draws[num_draws][num_chains][num_dims]", "cases": cases}) + "\n")
    print(f"wrote {OUT} ({len(cases)} cases; {', '.join(f'{k} {v}' for k, v in versions.items())})")


if __name__ == "__main__":
    main()
