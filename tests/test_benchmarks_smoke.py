"""Smoke test of benchmarks/samplers.py: the script runs end to end on tiny settings.

It keeps the benchmark from rotting as the library changes; it asserts nothing about speed.
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
    return importlib.import_module("benchmarks.samplers")


def test_sampler_benchmark_runs_on_tiny_settings(bench, tmp_path, capsys):
    out = tmp_path / "table.md"
    rows = bench.main(["--quick", "--no-compile", "--chains", "8", "--repeats", "1", "--warmup", "1",
                       "--budget", "0", "--num-leapfrog", "2", "--markdown", str(out)])
    references = {"mlp": ["floor", "gemm bound"], "conv": ["floor"]}  # the conv energy has no Linear > 4 wide
    assert [(r.model, r.sampler) for r in rows] == [(m, s) for m in bench.MODELS
                                                    for s in [*references[m], *bench.SAMPLERS]]
    gemm = next(r for r in rows if r.sampler == "gemm bound")
    assert 0 < gemm.eager < gemm.baseline_time  # a part of the floor's work
    for r in rows:
        assert r.num_chains == 8 and r.compiled is None
        assert math.isfinite(r.eager_ratio) and r.eager > 0 and r.baseline_time > 0
        assert r.baseline == ("fwd" if r.sampler == "rwmh" else "fwd+bwd")
    assert next(r for r in rows if r.sampler == "hmc").goal == pytest.approx(2 * bench.GOAL)
    table = out.read_text()
    assert "| model | chains | sampler |" in table and "hmc (L=2)" in table
    assert "| model | chains | sampler |" in capsys.readouterr().out


def test_sampler_benchmark_refuses_bad_options(bench):
    with pytest.raises(SystemExit):
        bench.main(["--chains", "0"])
    with pytest.raises(SystemExit):
        bench.main(["--models", "resnet"])
