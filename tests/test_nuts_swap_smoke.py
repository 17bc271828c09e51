"""Smoke tests of benchmarks/nuts_swap.py (its summary arithmetic, and with JAX and BlackJAX
installed a tiny end-to-end run) and of benchmarks/nuts_uturn.py. They assert nothing about
which library or kernel is faster."""

from __future__ import annotations

import importlib
import math
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def bench(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module("benchmarks.nuts_swap")


def test_geometric_summary_is_the_geometric_mean_with_its_standard_error(bench):
    ratios = np.array([[2.0, 0.5], [0.5, 0.5], [1.0, 0.5]])
    text = bench.geometric_summary(np.log(ratios))
    se = np.log(ratios[:, 0]).std(ddof=1) / math.sqrt(3)
    assert text.startswith("bulk 1.000 ×/÷ ") and f"×/÷ {math.exp(se):.3f}" in text
    assert "tail 0.500 ×/÷ 1.000" in text  # no spread: the factor is exactly 1


def test_the_swap_runs_end_to_end_when_blackjax_is_installed(bench, capsys):
    pytest.importorskip("blackjax")
    assert bench.main(["--target", "banana", "--chains", "8", "--warmup", "30", "--draws", "20", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    for line in ("kernel (ebmlab ÷ BlackJAX NUTS, same parameters)", "warm-up (ebmlab ÷ BlackJAX parameters",
                 "all (ebmlab ÷ BlackJAX, each its own)"):
        assert line in out
    assert out.count("seed ") >= 2 and "nan" not in out.split("kernel (")[1].split("\n")[0]


def test_the_uturn_comparison_runs_end_to_end(monkeypatch, capsys):
    """benchmarks/nuts_uturn.py (no BlackJAX needed): both kernels run and the summary is finite."""
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("benchmarks.nuts_uturn")
    assert bench.main(["--target", "banana", "--chains", "8", "--warmup", "30", "--draws", "20", "--seeds", "2"]) == 0
    out = capsys.readouterr().out
    summary = [line for line in out.splitlines() if line.startswith("whole-node ÷ robust checks")]
    assert len(summary) == 1 and "nan" not in summary[0] and out.count("seed ") == 2
    assert "gradients per draw: whole-node" in out
