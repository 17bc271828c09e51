"""Smoke test of benchmarks/mcmc_efficiency.py: ``--quick`` runs end to end on one target, ebmlab only.

It keeps the benchmark from rotting as the samplers change; it asserts nothing about speed or
efficiency (those are measured by the benchmark, not tested).
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("benchmarks.mcmc_efficiency")


def test_mcmc_efficiency_quick_runs_without_blackjax(bench, tmp_path, capsys):
    out = tmp_path / "table.md"
    rows = bench.main(["--quick", "--no-blackjax", "--targets", "banana", "--chains", "8", "--warmup", "60",
                       "--draws", "40", "--markdown", str(out)])
    assert [(r.target, r.num_chains, r.sampler) for r in rows] == [("banana", 8, s) for s in bench.EBMLAB_SAMPLERS]
    for r in rows:
        assert r.num_draws == 40 and r.grad_evals > 0 and r.sample_time > 0
        assert math.isfinite(r.ess_bulk) and math.isfinite(r.ess_tail)
    nuts = rows[0]
    assert nuts.ratio_grad == pytest.approx(1.0) and nuts.ratio_time == pytest.approx(1.0)  # baseline: ebmlab nuts
    assert rows[1].grads_per_draw == bench.HMC_LEAPFROG and rows[2].grads_per_draw == 1
    printed = capsys.readouterr().out
    assert "BlackJAX not run (--no-blackjax)" in printed and "| target | chains | sampler |" in printed
    assert "bj_nuts" not in printed and "| banana | 8 | nuts |" in out.read_text()


def test_mcmc_efficiency_refuses_bad_options(bench):
    with pytest.raises(SystemExit):
        bench.main(["--targets", "rosenbrock"])
    with pytest.raises(SystemExit):
        bench.main(["--chains", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--max-tree-depth", "0"])
