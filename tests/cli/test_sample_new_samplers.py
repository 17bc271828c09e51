"""``ebmlab sample`` with NUTS (--max-tree-depth, --metric), parallel tempering (--base,
--temperatures, --max-temperature), netCDF output (--out FILE.nc) and the summary's warnings.

Plumbing only (a few chains, tens of steps): options reach the kernel and the record, the
output files read back, bad combinations are refused in one line before anything runs. The
samplers' statistics are tested in tests/samplers/.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.jobs.sampling_summary import tempering_lines, warning_in_option_terms


def run(*args):
    return CliRunner().invoke(main, ["sample", *map(str, args)])


def ok(*args):
    result = run(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def meta_of(path: Path) -> dict:
    with np.load(path) as data:
        return json.loads(str(data["metadata"]))


def test_nuts_with_tree_depth_and_window_adapted_metric(tmp_path):
    out = tmp_path / "nuts.npz"
    result = ok("--energy", "gmm8", "--sampler", "nuts", "--max-tree-depth", 3, "--metric", "diag",
                "--chains", 3, "--steps", 20, "--burn-in", 30, "--out", out)
    meta = meta_of(out)
    assert (meta["sampler"], meta["max_tree_depth"], meta["metric"]) == ("nuts", 3, "diag")
    assert "max_tree_depth=3" in meta["kernel"] and "Metric(" in meta["kernel"]  # the learned mass matrix
    assert "sampled gmm8 with nuts: 3 chains, 20 kept draws each" in result.output
    assert "ess_bulk" in result.output and "nuts: acceptance mean" in result.output


def test_no_robust_uturn_reaches_the_nuts_kernel_and_is_refused_elsewhere(tmp_path):
    out = tmp_path / "whole.npz"
    ok("--energy", "gmm8", "--sampler", "nuts", "--no-robust-uturn", "--chains", 3, "--steps", 10, "--burn-in", 20,
       "--out", out)
    meta = meta_of(out)
    assert meta["robust_uturn"] is False and "robust_uturn=False" in meta["kernel"], meta["kernel"]
    default = tmp_path / "default.npz"
    ok("--energy", "gmm8", "--sampler", "nuts", "--chains", 3, "--steps", 10, "--burn-in", 20, "--out", default)
    assert "robust_uturn=True" in meta_of(default)["kernel"]
    for flag in ("--robust-uturn", "--no-robust-uturn"):
        result = run("--energy", "gmm8", "--sampler", "mala", flag, "--out", tmp_path / "mala.npz")
        assert result.exit_code == 2 and f"{flag} applies to --sampler nuts, not mala" in result.output
    assert not (tmp_path / "mala.npz").exists()


def test_nuts_with_one_diagonal_metric_per_chain(tmp_path):
    """``--metric diag_per_chain``: every chain learns its own diagonal (the kernel's metric is per
    chain, one row of inverse masses per chain); the pooled ``diag`` is not per chain (control)."""
    out = tmp_path / "pcm.npz"
    ok("--energy", "gmm8", "--sampler", "nuts", "--metric", "diag_per_chain", "--max-tree-depth", 4, "--chains", 3,
       "--steps", 10, "--burn-in", 40, "--out", out)
    meta = meta_of(out)
    assert meta["metric"] == "diag_per_chain" and "per_chain=True" in meta["kernel"], meta["kernel"]
    pooled = tmp_path / "pooled.npz"
    ok("--energy", "gmm8", "--sampler", "nuts", "--metric", "diag", "--max-tree-depth", 4, "--chains", 3,
       "--steps", 10, "--burn-in", 40, "--out", pooled)
    assert "per_chain=True" not in meta_of(pooled)["kernel"]


def test_hmc_dense_metric(tmp_path):
    out = tmp_path / "hmc.npz"
    ok("--energy", "gmm8", "--sampler", "hmc", "--metric", "dense", "--leapfrog", 3, "--chains", 3, "--steps", 10,
       "--burn-in", 30, "--out", out)
    meta = meta_of(out)
    assert meta["metric"] == "dense" and "num_leapfrog=3" in meta["kernel"]


def test_parallel_tempering_reports_swap_and_round_trip_rates(tmp_path):
    out = tmp_path / "pt.npz"
    result = ok("--energy", "gmm8", "--sampler", "pt", "--base", "hmc", "--leapfrog", 3, "--temperatures", 4,
                "--max-temperature", 20, "--chains", 3, "--steps", 30, "--burn-in", 20, "--out", out)
    meta = meta_of(out)
    assert (meta["base"], meta["num_temperatures"], meta["max_temperature"]) == ("hmc", 4, 20.0)
    assert "HMC(" in meta["kernel"] and "num_leapfrog=3" in meta["kernel"]
    (line,) = [text for text in result.output.splitlines() if text.startswith("pt: 4 temperatures 1 ")]
    assert " 20; swap rates " in line and "round trips" in line and "in 30 rounds" in line
    rates = [float(r) for r in line.split("swap rates ")[1].split(";")[0].split()]
    assert len(rates) == 3 and all(0 <= r <= 1 for r in rates)


def test_parallel_tempering_over_gibbs_on_a_discrete_energy(tmp_path):
    out = tmp_path / "pt_ising.npz"
    result = ok("--energy", "ising:3", "--sampler", "pt", "--base", "gibbs", "--temperatures", 3, "--chains", 2,
                "--steps", 10, "--burn-in", 5, "--out", out)
    with np.load(out) as data:
        assert data["samples"].shape == (10, 2, 3, 3) and set(np.unique(data["samples"])) <= {0.0, 1.0}
    assert "pt: 3 temperatures" in result.output


@pytest.mark.parametrize("args, message", [
    (["--sampler", "mala", "--max-tree-depth", "4"], "--max-tree-depth applies to --sampler nuts, not mala"),
    (["--sampler", "nuts", "--temperatures", "4"], "--temperatures applies to --sampler pt, not nuts"),
    (["--sampler", "mala", "--base", "hmc", "--max-temperature", "5"],
     "--base, --max-temperature apply to --sampler pt, not mala"),
    (["--sampler", "nuts", "--metric", "diag", "--burn-in", "0"], "--metric diag is learned during burn-in"),
    (["--sampler", "rwmh", "--metric", "diag"], "--metric diag applies to --sampler hmc, mala or nuts"),
    (["--sampler", "nuts", "--metric", "full"], "'full' is not one of 'diag', 'dense'"),
    (["--sampler", "pt", "--base", "nosuch"], "nosuch"),
    (["--sampler", "pt", "--temperatures", "1"], "num_temperatures must be an integer >= 2"),
])
def test_bad_combinations_are_one_line_errors(tmp_path, args, message):
    out = tmp_path / "x.npz"
    result = run("--energy", "gmm8", "--chains", 2, "--steps", 5, "--burn-in", 5, *args, "--out", out)
    text = result.output.strip()
    assert result.exit_code == 2, (text, result.exception)
    assert len(text.splitlines()) == 1 and text.startswith("ebmlab: error: ") and message in text, text
    assert not out.exists()


def test_netcdf_output_reads_back_with_arviz(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        az = pytest.importorskip("arviz")
    out = tmp_path / "run.nc"
    ok("--energy", "gmm8", "--sampler", "nuts", "--max-tree-depth", 3, "--chains", 3, "--steps", 12, "--burn-in", 10,
       "--out", out)
    data = az.from_netcdf(str(out))
    posterior, stats = data["posterior"], data["sample_stats"]
    assert posterior["x"].shape == (3, 12, 2) and posterior["x"].dims[:2] == ("chain", "draw")
    assert {"lp", "step_size", "acceptance_rate"} <= set(stats.data_vars)
    assert json.loads(posterior.attrs["ebmlab_metadata"])["sampler"] == "nuts"
    assert [p.name for p in tmp_path.iterdir()] == ["run.nc"]  # no temporary left behind


def test_netcdf_without_arviz_is_refused_before_sampling(tmp_path, monkeypatch):
    import ebmlab.jobs.sampling as sampling

    monkeypatch.setattr(sampling, "arviz_available", lambda: False)
    out = tmp_path / "run.nc"
    result = run("--energy", "gmm8", "--sampler", "mala", "--chains", 2, "--steps", 5, "--out", out)
    assert result.exit_code == 2
    assert result.output.strip() == (f"ebmlab: error: --out {out}: writing netCDF needs ArviZ; "
                                     "pip install ebmlab[arviz] (or write a .npz)")
    assert not out.exists()


def test_summary_warnings_speak_in_options(tmp_path):
    """A short run from noise on the 8 gaussians: the R-hat and ESS warnings name --burn-in,
    --steps and --sampler pt, never the library's argument names."""
    result = ok("--energy", "gmm8", "--sampler", "mala", "--chains", 4, "--steps", 40, "--burn-in", 10,
                "--out", tmp_path / "s.npz")
    lines = [line for line in result.output.splitlines() if line.startswith("warning: ")]
    assert any(line.startswith("warning: R-hat is ") and "--burn-in" in line and "--sampler pt" in line
               for line in lines)
    assert any("Low effective sample size" in line and "--steps" in line for line in lines)
    assert not any(word in line for line in lines for word in ("burn_in", "num_steps", "sampler='"))


def test_option_terms_and_tempering_lines_units():
    assert warning_in_option_terms("warning: try a smaller step_size, a higher target_accept, or sampler='nuts'.") \
        == "warning: try a smaller --step-size, a higher --target-accept, or --sampler nuts."
    assert warning_in_option_terms("mala: step_size 0.1") == "mala: step_size 0.1"  # only warnings change
    assert tempering_lines(SimpleNamespace(x=torch.zeros(2))) == []  # not a tempered state
    state = SimpleNamespace(swap_accept=torch.tensor([5.0, 0.0]), swap_attempts=torch.tensor([10.0, 10.0]),
                            swap_rounds=20, round_trips=torch.zeros(2, dtype=torch.long), num_chains=2,
                            betas=torch.tensor([1.0, 0.5, 0.1]))
    head, rare, none = tempering_lines(state)
    assert head.startswith("pt: 3 temperatures 1 2 10; swap rates 0.50 0.00; round trips 0 per swap round")
    assert rare.startswith("warning: replicas at temperatures 2 and 10 swap in 0.0% of tries")
    assert none.startswith("warning: no replica went from the coldest to the hottest")
