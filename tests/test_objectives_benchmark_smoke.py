"""Smoke test of benchmarks/objectives.py: the script runs end to end on tiny settings.

It keeps the benchmark from rotting as the trainer and the objectives change; it asserts
nothing about speed or sample quality, only that every (data set, objective) pair trains,
is evaluated to finite figures, lands in the table and in the figure.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
TINY = ["--budget", "0.05", "--num-samples", "400", "--batch-size", "64", "--chains", "64", "--burn-in", "5",
        "--eval-steps", "5", "--grid-points", "33"]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    threads = torch.get_num_threads()
    yield importlib.import_module("benchmarks.objectives")
    torch.set_num_threads(threads)  # main() sets the thread count; leave the session's as it was


def test_objectives_benchmark_runs_on_tiny_settings(bench, tmp_path, capsys):
    figure = tmp_path / "figures" / "objectives.png"
    results = bench.main([*TINY, "--figure", str(figure)])
    pairs = [(d, o) for d in bench.DATASETS for o in bench.OBJECTIVES]
    assert [(r.dataset, r.objective) for r in results] == pairs
    for r in results:
        assert r.error == "", (r.dataset, r.objective, r.error)
        assert r.steps >= 1 and r.wall_seconds > 0 and math.isfinite(r.steps_per_second)
        assert all(math.isfinite(v) for v in (r.mmd2_mala, r.mmd2_grid, r.nll_gap, r.mala_step_size))
        assert r.energy is not None and r.settings
    out = capsys.readouterr().out
    assert "| objective | 8gaussians steps/s | 8gaussians MMD² (MALA) |" in out
    assert "| data (fresh draws) |" in out and "torch.set_num_threads(1)" in out
    assert all(f"| {o} | " in out for o in bench.OBJECTIVES)
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_objectives_benchmark_reports_a_diverged_model_and_carries_on(bench, monkeypatch, capsys):
    """A model whose training diverges is named in the table; the other models are still evaluated."""
    real_update = bench.Trainer.update

    def update(self):
        if self.config.objective == "sm":
            raise bench.TrainingDivergedError(self.step + 1, "the loss")
        return real_update(self)

    monkeypatch.setattr(bench.Trainer, "update", update)
    results = bench.main([*TINY, "--objectives", "sm,dsm", "--datasets", "8gaussians", "--no-figure"])
    by_name = {r.objective: r for r in results}
    assert "diverged at step 1" in by_name["sm"].error and by_name["dsm"].error == ""
    assert "| sm | 0.0 | diverged | diverged | diverged |" in capsys.readouterr().out


def test_objectives_benchmark_refuses_bad_options(bench):
    for argv in (["--budget", "0"], ["--objectives", "mle"], ["--datasets", "moons"], ["--chains", "1"]):
        with pytest.raises(SystemExit):
            bench.main(argv)
