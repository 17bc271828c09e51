"""ebmlab.diagnostics against ArviZ: stored reference numbers (always) and ArviZ itself (when installed).

The same definitions computed by two programs agree to rounding error: the tolerance is a
relative 1e-8 (observed: about 1e-14), far below any statistical difference, so a changed
definition (not splitting chains, another quantile, another truncation of the autocorrelation
sum) fails. ``tests/data/arviz_reference.json`` is written by ``scripts/arviz_reference.py``.
Negative controls: ebmlab's unsplit ESS (ArviZ's ``identity``) and raw split R-hat differ from
the rank-normalised split values on the same data by far more than the tolerance.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ebmlab import diagnostics as d

RTOL = 1e-8
REFERENCE = json.loads((Path(__file__).parent / "data" / "arviz_reference.json").read_text())
CASES = REFERENCE["cases"]

OURS = {
    "ess_bulk": d.ess_bulk,
    "ess_tail": d.ess_tail,
    "ess_tail_89": lambda x: d.ess_tail(x, prob=0.89),
    "ess_mean": d.ess_mean,
    "ess_identity": lambda x: d.effective_sample_size(x, method="identity"),
    "mcse_mean": d.mcse_mean,
    "mcse_sd": d.mcse_sd,
    "mcse_sd_squares": lambda x: d.mcse_sd(x, ess_of="squares"),
    "rhat": d.split_rhat,
    "rhat_split": lambda x: d.split_rhat(x, rank_normalize=False),
}


def import_quietly(name: str):
    """``pytest.importorskip`` without arviz 0.2x's once-a-day FutureWarning about ArviZ 1.0."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return pytest.importorskip(name)


def assert_close(ours, theirs, what: str) -> None:
    np.testing.assert_allclose(np.ravel(ours), np.ravel(theirs), rtol=RTOL, atol=0, err_msg=what)


@pytest.mark.parametrize("case", sorted(CASES))
def test_matches_stored_arviz_reference(case):
    draws = np.asarray(CASES[case]["draws"])
    reference = CASES[case]["reference"]
    assert {"ess_bulk", "ess_tail", "mcse_mean", "mcse_sd"} <= set(reference)
    for name, values in reference.items():
        assert_close(OURS[name](draws), values, f"{case}: {name}")


def test_trending_chain_ess_is_split_as_arviz_splits_it():
    """The trending chains: the unsplit ESS (ebmlab's before this change) over-reports more
    than twice; the bulk ESS is ArviZ's and the R-hat flags the trend."""
    draws = np.asarray(CASES["trending"]["draws"])
    reference = CASES["trending"]["reference"]
    bulk, unsplit = d.ess_bulk(draws), d.effective_sample_size(draws, method="identity")
    assert_close(bulk, reference["ess_bulk"], "trending bulk ESS")
    assert (unsplit > 2 * bulk).all()
    assert (d.split_rhat(draws) > 1.01).all()


def test_negative_controls_differ_beyond_tolerance():
    """Unsplit or un-normalised variants are not within the tolerance of ArviZ's numbers."""
    for case in ("random_walk", "trending", "cauchy"):
        draws = np.asarray(CASES[case]["draws"])
        ref = CASES[case]["reference"]
        for wrong, name in ((lambda x: d.effective_sample_size(x, method="identity"), "ess_bulk"),
                            (lambda x: d.split_rhat(x, rank_normalize=False), "rhat")):
            with pytest.raises(AssertionError):
                assert_close(wrong(draws), ref[name], f"{case}: {name}")


def random_draws(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ar = np.zeros((157, 6, 3))
    for t in range(1, 157):
        ar[t] = 0.8 * ar[t - 1] + rng.standard_normal((6, 3))
    return {"ar": ar, "exp": rng.exponential(size=(40, 3, 2)), "walk": rng.standard_normal((9, 2, 2)).cumsum(0),
            "ties": rng.integers(0, 3, size=(100, 4, 2)).astype(float)}


@pytest.mark.parametrize("seed", [0, 1])
def test_matches_arviz_stats_when_installed(seed):
    """Fresh data against arviz-stats (ArviZ >= 1.0), including short chains and ties."""
    import_quietly("arviz_stats")
    from arviz_stats.base import array_stats as stats

    for name, x in random_draws(seed).items():
        a, axes = np.moveaxis(x, 0, 1), {"chain_axis": 0, "draw_axis": 1}
        assert_close(d.ess_bulk(x), stats.ess(a, method="bulk", **axes), f"{name} bulk")
        assert_close(d.ess_tail(x), stats.ess(a, method="tail", prob=(0.05, 0.95), **axes), f"{name} tail")
        assert_close(d.ess_mean(x), stats.ess(a, method="mean", **axes), f"{name} mean")
        assert_close(d.split_rhat(x), stats.rhat(a, method="rank", **axes), f"{name} rhat")
        assert_close(d.mcse_mean(x), stats.mcse(a, method="mean", **axes), f"{name} mcse_mean")
        assert_close(d.mcse_sd(x), stats.mcse(a, method="sd", **axes), f"{name} mcse_sd")


def test_matches_arviz_0x_when_installed():
    """arviz 0.x's own functions: the same ESS, R-hat and MCSE of the mean; its MCSE of the sd
    uses the ESS of the squared deviations (``ess_of="squares"``)."""
    az = import_quietly("arviz")
    if int(az.__version__.split(".")[0]) >= 1:
        pytest.skip("arviz >= 1.0 is arviz-stats, tested above")
    for name, x in random_draws(2).items():
        for i in range(x.shape[2]):
            a = x[:, :, i].T
            expected = [az.ess(a, method="bulk"), az.ess(a, method="tail"), az.rhat(a), az.mcse(a), az.mcse(a, method="sd")]
            ours = [d.ess_bulk(x)[i], d.ess_tail(x)[i], d.split_rhat(x)[i], d.mcse_mean(x)[i],
                    d.mcse_sd(x, ess_of="squares")[i]]
            assert_close(ours, expected, f"{name}[{i}]")


# ----------------------------------------------------------------------------------------
# to_arviz
# ----------------------------------------------------------------------------------------


def small_record():
    from ebmlab.energy import Gaussian
    from ebmlab.samplers import MALA, sample

    target = Gaussian(torch.zeros(3), torch.eye(3))
    gen = torch.Generator().manual_seed(0)
    return sample(target, MALA(step_size=0.5), target.sample(4, generator=gen), num_steps=20, burn_in=10,
                  generator=gen)


def libraries() -> list[str]:
    found = []
    for name in ("arviz", "arviz_base"):
        try:
            import_quietly(name)
            found.append(name)
        except pytest.skip.Exception:
            pass
    return found


@pytest.mark.parametrize("library", ["arviz", "arviz_base"])
def test_to_arviz_has_chain_draw_dims_and_sample_stats(library, tmp_path):
    if library not in libraries():
        pytest.skip(f"{library} is not installed")
    record = small_record()
    data = d.to_arviz(record, library=library)
    posterior, stats = data["posterior"], data["sample_stats"]
    x = posterior["x"]
    assert x.dims[:2] == ("chain", "draw") and x.shape == (4, 20, 3)
    np.testing.assert_array_equal(x.values, record.samples.numpy().swapaxes(0, 1))
    np.testing.assert_allclose(stats["lp"].values, -record.energy.numpy().T)
    np.testing.assert_allclose(stats["step_size"].values, float(record.step_size))
    per_draw = getattr(record, "stats", None) or {}
    expected = (per_draw["accept_prob"].numpy().T if "accept_prob" in per_draw  # per draw when the driver keeps it
                else np.broadcast_to(record.acceptance_rate.numpy()[:, None], (4, 20)))
    np.testing.assert_allclose(stats["acceptance_rate"].values, expected)
    np.testing.assert_allclose(stats.attrs["acceptance_rate_per_chain"], record.acceptance_rate.numpy())
    assert stats.attrs["sampler"] == "mala" and stats.attrs["created_by"] == "ebmlab"
    path = tmp_path / "run.nc"
    data.to_netcdf(str(path))
    assert path.stat().st_size > 0


def test_to_arviz_takes_per_draw_stats_under_arviz_names():
    if not libraries():
        pytest.skip("no ArviZ installed")
    record = small_record()
    draws, chains = record.energy.shape
    per_draw = {"tree_depth": torch.full((draws, chains), 3), "num_grad_evals": torch.full((draws, chains), 7),
                "energy_error": torch.zeros(draws, chains), "diverged": torch.zeros(draws, chains, dtype=torch.bool),
                "accept_prob": torch.full((draws, chains), 0.25)}
    fields = {**vars(record), "step_size": torch.full((chains,), 0.1), "stats": per_draw}
    stats = d.to_arviz(SimpleNamespace(**fields))["sample_stats"]
    assert {"tree_depth", "n_steps", "energy_error", "diverging", "acceptance_rate", "step_size", "lp"} <= set(stats.data_vars)
    assert stats["tree_depth"].dims == ("chain", "draw") and int(stats["n_steps"].max()) == 7
    np.testing.assert_allclose(stats["acceptance_rate"].values, 0.25)
    np.testing.assert_allclose(stats["step_size"].values, 0.1)
    with pytest.raises(ValueError, match=r"stats\['tree_depth'\] must have shape"):
        d.to_arviz(SimpleNamespace(**{**vars(record), "stats": {"tree_depth": torch.zeros(chains, draws + 1)}}))


def test_to_arviz_without_arviz_names_the_extra(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name.startswith("arviz") else real(name, *a))
    assert not d.arviz_available()
    with pytest.raises(ImportError, match=r"pip install ebmlab\[arviz\]"):
        d.to_arviz(small_record())
