"""The job layer behind ``ebmlab evaluate`` and ``ebmlab sample``: reports, option terms, devices.

Deterministic plumbing checks (the estimators' statistics are tested in tests/partition).
"""

from __future__ import annotations

import json

import pytest
import torch

from ebmlab.data import is_image_like
from ebmlab.distributed import resolve_device
from ebmlab.energy import Gaussian, Ising
from ebmlab.jobs import evaluation_job
from ebmlab.jobs.evaluation import ais_report, exact_report, quadrature_report, with_data_metrics
from ebmlab.jobs.evaluation_job import EvaluationJob, in_option_terms, run_evaluation_job
from ebmlab.jobs.evaluation_report import format_report
from ebmlab.partition import exact_log_z
from evaluate_helpers import run_json


def test_one_function_per_method_returns_a_report():
    ising, gen = Ising(2, coupling=0.3), torch.Generator().manual_seed(0)
    exact = exact_report(ising, (2, 2), "binary", gen)
    assert (exact.method, exact.log_z_stderr, exact.bounds) == ("exact", 0.0, None)
    assert exact.log_z == pytest.approx(exact_log_z(ising)) and exact.draw(5).shape == (5, 2, 2)
    gauss = Gaussian(torch.zeros(1))
    grid = quadrature_report(gauss, (1,), "real", gen, bounds=[-2.0, 2.0], grid_points=65)
    assert grid.grid_points == 65 and grid.bounds == [(-2.0, 2.0)] and "widen --bounds" in grid.warnings[0]
    ais = ais_report(gauss, (1,), "real", gen, temperatures=5, runs=8)
    assert (ais.sampler, ais.num_temperatures, ais.num_runs, ais.upper_bound_source) == ("mala", 5, 8, "exact")
    assert ais.draw(3).shape == (3, 1)


def test_data_metrics_give_a_new_report():
    ising, gen = Ising(2, coupling=0.3), torch.Generator().manual_seed(0)
    report = exact_report(ising, (2, 2), "binary", gen)
    x = torch.randint(0, 2, (40, 2, 2), generator=gen).float()
    full = with_data_metrics(report, ising, x, metric_samples=20)
    assert report.nll is None and report.mmd2 is None  # unchanged
    assert full.num_examples == 40 and full.metric_samples == 20 and full.log_z == report.log_z
    assert full.nll == pytest.approx(float(ising(x).mean()) + report.log_z)
    no_metrics = with_data_metrics(report, ising, x, metrics=False)
    assert no_metrics.nll == pytest.approx(full.nll) and no_metrics.mmd2 is None


def test_json_keys_follow_the_report_order_and_skip_what_does_not_apply():
    report = exact_report(Ising(2), (2, 2), "binary", torch.Generator().manual_seed(0)).replace(energy="ising:2")
    assert list(report.to_dict()) == ["method", "event_shape", "support", "warnings", "log_z", "log_z_stderr",
                                      "energy", "data"]
    assert report.to_dict()["data"] is None and json.loads(json.dumps(report.to_dict()))["event_shape"] == [2, 2]
    assert report.replace(mean_acceptance=float("nan")).to_dict()["mean_acceptance"] is None
    assert format_report(report).startswith("log Z = ") and "(exact)" in format_report(report)


def test_the_job_and_the_command_agree():
    job = EvaluationJob(energy="ising:2", method="exact", data=None)
    assert run_evaluation_job(job).to_dict() == run_json("--energy", "ising:2", "--log-partition", "exact")


def test_library_messages_in_option_terms():
    advice = "estimate log Z by annealed importance sampling (AIS) instead: ebmlab.partition.ais"
    assert in_option_terms(f"exact_log_z: 2^25 states; {advice}") == "exact_log_z: 2^25 states; use --log-partition ais"
    assert in_option_terms("ais: num_temperatures must be >= 2") == "ais: --temperatures must be >= 2"
    assert in_option_terms("ais: use a discrete kernel (gibbs, metropolis)") == "ais: use --sampler gibbs, metropolis"
    assert in_option_terms("nothing to change: num_temperatures_x") == "nothing to change: num_temperatures_x"
    with pytest.raises(ValueError, match="needs a discrete energy; use quadrature"):
        run_evaluation_job(EvaluationJob(energy="gmm8", method="exact"))
    assert evaluation_job.OPTION_NAMES["num_runs"] == "--runs"


def test_one_device_resolution():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="--device 'tpu9' is not a device name; use cpu, cuda, cuda:N or auto"):
        resolve_device("tpu9", what="--device")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:1' was requested but no CUDA device is available"):
            resolve_device("cuda:1")


@pytest.mark.parametrize("shape, image", [((8, 8), True), ((1, 8, 8), True), ((3, 4, 4), True), ((2, 4, 4), False),
                                          ((2,), False), ((64,), False), ((1, 1, 8, 8), False)])
def test_one_image_rule(shape, image):
    assert is_image_like(shape) is image
