"""``ebmlab evaluate``: JSON and text reports, the three log Z methods, one-line errors (exit 2).

Small problems: these test the plumbing — the options reach the estimators, the JSON object
holds the documented keys and agrees with direct library calls — while the estimators'
statistics are tested in tests/partition.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.energy import Ising, eight_gaussians
from ebmlab.partition.likelihood import held_out_nll
from ebmlab.partition import exact_log_z
from evaluate_helpers import run, run_json


def test_quadrature_with_toy_data_json():
    """The model is the data density itself: log Z is the closed form (to 1e-6), NLL equals the
    true density's cross-entropy on the same points, and the metrics see no difference."""
    report = run_json("--energy", "gmm8", "--data", "8gaussians", "--num-examples", 600,
                      "--log-partition", "quadrature", "--grid-points", 257)
    assert report["method"] == "quadrature" and "log_z_stderr" not in report  # a grid has no Monte-Carlo error
    assert 0 <= report["grid_error"] < 1e-4  # smooth modes: halving the grid changes nothing
    assert report["log_z"] == pytest.approx(eight_gaussians().log_z, abs=1e-6)
    assert report["num_examples"] == 600
    assert report["nll"] == pytest.approx(report["true_nll"], abs=1e-5)
    assert report["bits_per_dim"] == pytest.approx(report["nll"] / (2 * math.log(2)))
    assert report["kl_true_model"] == pytest.approx(0.0, abs=1e-6)
    assert report["mmd_p_value"] > 1e-3 and report["warnings"] == []


def test_exact_on_ising_with_data_file(tmp_path):
    data = np.random.default_rng(0).integers(0, 2, size=(50, 3, 3)).astype(np.float32)
    path = tmp_path / "spins.npy"
    np.save(path, data)
    report = run_json("--energy", "ising:3:0.4", "--data", path, "--log-partition", "exact", "--no-metrics")
    ising = Ising(3, coupling=0.4)
    log_z = exact_log_z(ising)
    assert report["method"] == "exact" and report["log_z_stderr"] == 0
    assert report["log_z"] == pytest.approx(log_z, abs=1e-6)
    assert report["nll"] == pytest.approx(held_out_nll(ising, torch.as_tensor(data), log_z), abs=1e-5)
    assert report["num_examples"] == 50 and "mmd2" not in report
    text = run("--energy", "ising:3:0.4", "--log-partition", "exact").output
    assert text.startswith(f"log Z = {log_z:.4f} nats (exact)")  # no "± 0.0000" on an exact value


def test_ais_json_has_bracket_and_agrees_with_truth():
    """AIS on gmm8 with a base fitted to the data: within 4.5 of its standard errors of the
    closed form, with a reverse-AIS upper bound from exact draws."""
    report = run_json("--energy", "gmm8", "--data", "8gaussians", "--num-examples", 300, "--log-partition", "ais",
                      "--temperatures", 50, "--runs", 200, "--sampler", "hmc", "--seed", 1)
    assert report["method"] == "ais" and report["num_temperatures"] == 50 and report["num_runs"] == 200
    assert 0 < report["log_z_stderr"] < 0.2
    assert abs(report["log_z"] - eight_gaussians().log_z) < 4.5 * report["log_z_stderr"]
    assert report["upper_bound_source"] == "exact" and report["log_z_upper_stderr"] > 0
    assert report["nll"] == pytest.approx(report["true_nll"] - eight_gaussians().log_z + report["log_z"], abs=1e-4)
    assert {"mmd2", "mmd_p_value", "energy_distance", "ess"} <= set(report)


def test_ais_on_ising_text_report():
    result = run("--energy", "ising:3", "--log-partition", "ais", "--temperatures", 10, "--runs", 20)
    assert result.exit_code == 0, result.output
    assert "log Z =" in result.stdout and "(ais), K = 10, 20 runs" in result.stdout and "bracket" in result.stdout


def test_boundary_warning_is_reported():
    report = run_json("--energy", "gaussian:1", "--log-partition", "quadrature", "--bounds", "-2,2")
    assert report["missing_mass"] > 0.01 and "widen --bounds" in report["warnings"][0]


@pytest.mark.parametrize("args, needle", [
    (["--energy", "gaussian:4", "--log-partition", "quadrature"], "use --log-partition ais"),
    (["--energy", "ising:5", "--log-partition", "exact"], "use --log-partition ais"),
    (["--energy", "gmm8", "--log-partition", "exact"], "needs a discrete energy; use quadrature"),
    (["--energy", "gmm8", "--log-partition", "ais", "--temperatures", 1], "--temperatures must be >= 2"),
    (["--energy", "gaussian:3", "--data", "8gaussians", "--log-partition", "ais"], "do not match the energy's event shape"),
    (["--energy", "gmm8", "--log-partition", "quadrature", "--bounds", "1,2,3"], "--bounds needs pairs"),
    (["--energy", "gmm8", "--log-partition", "simpson"], "Invalid value for '--log-partition'"),
])
def test_bad_input_is_one_line_with_exit_code_2(args, needle):
    result = run(*args)
    assert result.exit_code == 2, result.output
    message = result.stderr.strip()
    assert len(message.splitlines()) == 1 and message.startswith("ebmlab: error:"), message
    assert needle in message


def test_quadrature_on_a_grid_too_coarse_warns_with_its_grid_error_and_no_bare_plus_minus():
    """Neal's funnel's neck is narrower than a 513-point grid: the report's grid error covers the
    true error (0.11) and the warning names --grid-points, not --bounds; a fine grid is right."""
    from ebmlab.energy import Funnel

    coarse = run_json("--energy", "funnel", "--log-partition", "quadrature")
    truth = Funnel(2).log_z
    assert coarse["grid_error"] >= abs(coarse["log_z"] - truth) > 0.05
    assert any("raise --grid-points" in w for w in coarse["warnings"])
    assert not any("widen --bounds" in w for w in coarse["warnings"])
    text = run("--energy", "funnel", "--log-partition", "quadrature").output
    assert "±" not in text.splitlines()[0] and "grid error" in text
    fine = run_json("--energy", "funnel", "--log-partition", "quadrature", "--grid-points", 2049)
    assert abs(fine["log_z"] - truth) <= fine["grid_error"] and abs(fine["log_z"] - truth) < 0.01


@pytest.mark.parametrize("args, message", [
    (["--log-partition", "quadrature", "--temperatures", "5"], "--temperatures applies to --log-partition ais only"),
    (["--log-partition", "quadrature", "--no-reverse"], "--no-reverse applies to --log-partition ais only"),
    (["--log-partition", "exact", "--sampler", "hmc"], "--sampler applies to --log-partition ais only"),
    (["--log-partition", "ais", "--grid-points", "65"], "--grid-points applies to --log-partition quadrature only"),
    (["--log-partition", "ais", "--bounds", "-4,4"], "--bounds applies to --log-partition quadrature only"),
])
def test_options_of_another_method_are_refused_not_ignored(args, message):
    result = run("--energy", "gaussian:2", *args)
    assert result.exit_code == 2 and message in result.output
    method = args[1]  # the same option with its own method runs
    own = {"ais": ["--log-partition", "ais", "--temperatures", "5", "--runs", "30"],
           "quadrature": ["--log-partition", "quadrature", "--grid-points", "65"]}
    assert run("--energy", "gaussian:2", *own["quadrature" if method == "ais" else "ais"]).exit_code == 0


def test_library_advice_is_given_in_option_terms():
    """Messages raised by the library name the command's options, not Python arguments."""
    discrete = run("--energy", "ising:3", "--log-partition", "quadrature")
    assert discrete.exit_code == 2 and "use --log-partition exact (enumeration) or --log-partition ais" in discrete.output
    assert "ebmlab.partition" not in discrete.output


def test_in_option_terms_translates_the_quadrature_bounds_advice():
    from ebmlab.jobs.evaluation_job import in_option_terms
    from ebmlab.partition.quadrature import resolve_bounds

    with pytest.raises(ValueError) as err:
        resolve_bounds(2)
    assert "--bounds LO,HI" in in_option_terms(str(err.value)) and "bounds=[" not in in_option_terms(str(err.value))
