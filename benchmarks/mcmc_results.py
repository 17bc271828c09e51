"""The results of benchmarks/mcmc_efficiency.py: one row per (target, chains, sampler), the
worst-coordinate ESS, ratios against a baseline measured in the same run, and the markdown table.

ESS: ``ebmlab.diagnostics.ess_bulk`` / ``ess_tail`` (rank-normalised split chains, as ArviZ)
of every coordinate of draws ``(N, C, D)``; a row keeps the minimum over coordinates.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass, replace
from typing import Sequence

import numpy as np

from ebmlab.diagnostics import ess_bulk, ess_tail

ESS_CHUNK = 8  # coordinates per ESS call: bounds the memory of the FFTs on (N, C, 100) draws
BLACKJAX = "bj_nuts"


@dataclass
class Result:
    """One sampler's run on one target: ESS of the worst coordinate, cost and time."""

    target: str
    num_chains: int
    sampler: str
    ess_bulk: float
    ess_tail: float
    grad_evals: float  # sampling phase, summed over chains
    sample_time: float  # seconds, sampling phase
    warmup_time: float  # seconds, warm-up (BlackJAX: execution, compilation excluded)
    compile_time: float = 0.0  # BlackJAX: jit compilation of warm-up and sampling
    divergences: int = 0
    step_size: float = float("nan")
    num_draws: int = 0
    grad_note: str = ""
    repeats: int = 1
    ratio_grad: float = float("nan")  # bulk ESS/grad against the baseline sampler
    ratio_time: float = float("nan")  # bulk ESS/s against the baseline sampler
    ratio_tail_grad: float = float("nan")
    ratio_tail_time: float = float("nan")

    @property
    def grads_per_draw(self) -> float:
        return self.grad_evals / max(self.num_draws * self.num_chains, 1)

    @property
    def bulk_per_grad(self) -> float:
        return self.ess_bulk / self.grad_evals

    @property
    def tail_per_grad(self) -> float:
        return self.ess_tail / self.grad_evals

    @property
    def bulk_per_s(self) -> float:
        return self.ess_bulk / self.sample_time

    @property
    def tail_per_s(self) -> float:
        return self.ess_tail / self.sample_time


def worst_ess(draws: np.ndarray) -> tuple[float, float]:
    """``(min bulk ESS, min tail ESS)`` over the coordinates of draws ``(N, C, D)``."""
    bulk, tail = [], []
    for start in range(0, draws.shape[2], ESS_CHUNK):
        chunk = draws[:, :, start:start + ESS_CHUNK]
        bulk.append(ess_bulk(chunk))
        tail.append(ess_tail(chunk))
    return float(np.nanmin(np.concatenate(bulk))), float(np.nanmin(np.concatenate(tail)))


def median_result(results: list[Result]) -> Result:
    """Medians of every figure over repeats (ESS and times separately)."""
    if len(results) == 1:
        return results[0]
    med = lambda attr: statistics.median(getattr(r, attr) for r in results)  # noqa: E731
    return replace(results[0], ess_bulk=med("ess_bulk"), ess_tail=med("ess_tail"), grad_evals=med("grad_evals"),
                   sample_time=med("sample_time"), warmup_time=med("warmup_time"), compile_time=med("compile_time"),
                   divergences=int(med("divergences")), step_size=med("step_size"), repeats=len(results))


def add_ratios(results: list[Result], baseline: str) -> None:
    """Fill the ratio columns against ``baseline`` on the same (target, chains), per repeat medians."""
    for r in results:
        base = next((b for b in results if b.sampler == baseline and b.target == r.target
                     and b.num_chains == r.num_chains), None)
        if base is None:
            continue
        r.ratio_grad = r.bulk_per_grad / base.bulk_per_grad
        r.ratio_time = r.bulk_per_s / base.bulk_per_s
        r.ratio_tail_grad = r.tail_per_grad / base.tail_per_grad
        r.ratio_tail_time = r.tail_per_s / base.tail_per_s


def fmt(value: float, digits: int = 3) -> str:
    if not math.isfinite(value):
        return "—"
    return f"{value:.{digits}g}" if abs(value) < 1e5 else f"{value:.3e}"


def table(results: list[Result], baseline: str) -> str:
    """The markdown table; ratio columns against ``baseline`` (bulk / tail)."""
    base = "BJ" if baseline == BLACKJAX else "nuts"
    head = ["target", "chains", "sampler", "grads/draw", "bulk ESS", "tail ESS", "bulk ESS/1k grad",
            "tail ESS/1k grad", "bulk ESS/s", "tail ESS/s", f"ESS/grad vs {base} (bulk/tail)",
            f"ESS/s vs {base} (bulk/tail)", "div", "ε", "sample s", "warm-up s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = [r.target, str(r.num_chains), r.sampler, fmt(r.grads_per_draw), fmt(r.ess_bulk, 4), fmt(r.ess_tail, 4),
               fmt(1e3 * r.bulk_per_grad), fmt(1e3 * r.tail_per_grad), fmt(r.bulk_per_s, 4), fmt(r.tail_per_s, 4),
               f"{fmt(r.ratio_grad)} / {fmt(r.ratio_tail_grad)}", f"{fmt(r.ratio_time)} / {fmt(r.ratio_tail_time)}",
               str(r.divergences), fmt(r.step_size), f"{r.sample_time:.1f}",
               f"{r.warmup_time:.1f}" + (f" (+{r.compile_time:.1f} jit)" if r.compile_time else "")]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def load_results(paths: Sequence[str]) -> list[Result]:
    """Results saved by ``--jsonl``, in file order (extra keys such as ``max_tree_depth`` dropped)."""
    names = {f.name for f in dataclasses.fields(Result)}
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [Result(**{k: v for k, v in json.loads(line).items() if k in names}) for line in f if line.strip()]
    return rows


__all__ = ["BLACKJAX", "Result", "add_ratios", "load_results", "median_result", "table", "worst_ess"]
