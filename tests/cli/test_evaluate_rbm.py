"""``ebmlab evaluate`` on Bernoulli RBMs: exact log Z by the smaller layer, RBM AIS, NLL in nats and bits/dim.

The run is a 12-hidden-unit RBM trained for a few hundred PCD updates on ``digits-binary``;
its exact ``log Z`` (2^12 hidden states) is the oracle for the AIS estimate.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.partition.likelihood import held_out_nll
from ebmlab.partition.rbm_ais import base_rate_visible_bias, rbm_ais
from ebmlab.training.loading import load, load_run
from train_helpers import train
from evaluate_helpers import run, run_json

Z_TOLERANCE = 3.0
TEMPERATURES, RUNS = 1000, 100


@pytest.fixture(scope="module")
def rbm_run(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("rbm") / "run"
    train(dict(data="digits-binary", model="rbm", model_kwargs={"num_hidden": 12}, objective="pcd",
               sampler="block_gibbs", sampler_steps=1, standardize=False, optimizer="sgd", lr=0.05, momentum=0.5,
               weight_decay=1e-4, batch_size=100, steps=300, plots=False, progress="off", out=str(out)))
    return str(out)


def test_a_loaded_rbm_run_is_the_rbm_itself(rbm_run):
    energy = load(rbm_run)
    assert isinstance(energy, BernoulliRBM) and (energy.num_visible, energy.num_hidden) == (64, 12)


def test_exact_json_fields(rbm_run):
    report = run_json("--energy", rbm_run, "--data", "heldout", "--log-partition", "exact", "--no-metrics")
    run_ = load_run(rbm_run)
    log_z = run_.energy.exact_log_z()
    nll = held_out_nll(run_.energy, run_.heldout_data(), log_z)
    assert report["log_z"] == pytest.approx(log_z, abs=1e-6) and report["log_z_stderr"] == 0
    assert (report["model"], report["num_visible"], report["num_hidden"]) == ("rbm", 64, 12)
    assert (report["enumerated_layer"], report["enumerated_units"]) == ("hidden", 12)
    assert report["nll"] == pytest.approx(nll, abs=1e-6) and report["log_likelihood"] == pytest.approx(-nll)
    assert report["bits_per_dim"] == pytest.approx(nll / (64 * math.log(2)))
    assert report["num_examples"] == len(run_.heldout_index)


def test_ais_agrees_with_exact(rbm_run):
    """RBM AIS through the CLI (base rates of the run's training data) is within 3 SE of exact log Z.

    Detects an error in log Z (or a wrong energy routed to AIS) of about 3·SE, here ≈ 0.02 nats
    (SE ≈ 0.007 with 1,000 temperatures and 100 runs). Negative control: the same AIS on the RBM
    with its weights scaled by 1.05 (log Z moves by about 0.6 nats) lands more than 3 SE from the
    exact value.
    """
    exact = run_json("--energy", rbm_run, "--data", "heldout", "--log-partition", "exact", "--no-metrics")
    ais = run_json("--energy", rbm_run, "--data", "heldout", "--log-partition", "ais", "--temperatures", TEMPERATURES,
                   "--runs", RUNS, "--seed", 3, "--no-metrics")
    assert (ais["num_temperatures"], ais["num_runs"], ais["sampler"]) == (TEMPERATURES, RUNS, "block_gibbs")
    assert ais["base"] == "base-rate model of the run's training data" and 0 < ais["log_z_stderr"] < 0.05
    assert abs(ais["log_z"] - exact["log_z"]) <= Z_TOLERANCE * ais["log_z_stderr"], (ais["log_z"], exact["log_z"])
    assert ais["nll"] - exact["nll"] == pytest.approx(ais["log_z"] - exact["log_z"], abs=1e-6)

    run_ = load_run(rbm_run)
    wrong = load(rbm_run)
    with torch.no_grad():
        wrong.W.mul_(1.05)
    bad = rbm_ais(wrong, base_rate_visible_bias(run_.train_data()), betas=TEMPERATURES, num_runs=RUNS,
                  generator=torch.Generator().manual_seed(3))
    assert abs(bad.log_z - exact["log_z"]) > Z_TOLERANCE * bad.log_z_stderr, (bad.log_z, exact["log_z"])


def test_text_report_and_metrics(rbm_run):
    result = run("--energy", rbm_run, "--data", "digits-binary", "--num-examples", 200, "--log-partition", "exact")
    assert result.exit_code == 0, result.output
    assert "RBM with 64 visible and 12 hidden units: enumerated its hidden layer (2^12 states)" in result.stdout
    assert "bits/dim" in result.stdout and "MMD²" in result.stdout


def test_an_rbm_spec_with_many_visible_units(tmp_path):
    """Routing is by type, not by run: a file SPEC returning an RBM with 784 visible units and
    10 hidden ones is enumerated over its hidden layer; 30 hidden units are refused."""
    (tmp_path / "models.py").write_text(
        "import torch\nfrom ebmlab.energy.rbm import BernoulliRBM\n"
        "def small():\n    return BernoulliRBM(784, 10, event_shape=(1, 28, 28), weight_scale=0.1,\n"
        "                        generator=torch.Generator().manual_seed(0))\n"
        "def wide():\n    return BernoulliRBM(784, 30, event_shape=(1, 28, 28))\n")
    report = run_json("--energy", f"{tmp_path / 'models.py'}:small", "--log-partition", "exact")
    rbm = BernoulliRBM(784, 10, event_shape=(1, 28, 28), weight_scale=0.1, generator=torch.Generator().manual_seed(0))
    assert report["log_z"] == pytest.approx(rbm.exact_log_z(), abs=1e-6)
    ais = run_json("--energy", f"{tmp_path / 'models.py'}:small", "--log-partition", "ais", "--temperatures", 20,
                   "--runs", 10, "--no-metrics")
    assert ais["base"] == "uniform distribution" and ais["num_temperatures"] == 20  # no data, no run
    result = run("--energy", f"{tmp_path / 'models.py'}:wide", "--log-partition", "exact")
    assert result.exit_code == 2
    assert "smaller layer (hidden) has 30 units" in result.stderr and "use --log-partition ais" in result.stderr
    result = run("--energy", f"{tmp_path / 'models.py'}:wide", "--log-partition", "quadrature")
    assert result.exit_code == 2
