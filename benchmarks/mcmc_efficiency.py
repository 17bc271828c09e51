"""Benchmark: ESS per gradient evaluation and ESS per second of ebmlab's gradient samplers,
side by side with BlackJAX's NUTS, on hard targets (issue 11, "Performance").

For each target of :mod:`benchmarks.mcmc_targets` (Neal's funnel 10-D non-centred and
centred, a 100-D Gaussian with scales 0.01..1, the banana, Bayesian logistic regression on
breast cancer) and each chain count, in the same run, from the same starting points:

* ``nuts``  — ``ebmlab.samplers.nuts.NUTS()`` (max tree depth 10), ``sample(..., adapt="window",
  metric="diag")``: Stan's windowed warm-up of step size and diagonal metric, pooled over chains;
* ``hmc``   — ``HMC(num_leapfrog=10)`` (default path jitter 0.2), the same window adaptation;
* ``mala``  — preconditioned ``MALA()``, the same window adaptation;
* ``pt``    — ``ParallelTempering`` (4 temperatures, T_max = 10, ladder adapted over the
  warm-up) over MALA with the metric that ``mala``'s warm-up learned (PT has no metric of its
  own to adapt), step size by dual averaging over the warm-up;
* ``bj_nuts`` — BlackJAX NUTS (max 10 doublings) after ``blackjax.window_adaptation(blackjax.nuts,
  log_density)``, vmapped over chains and jit-compiled. BlackJAX's window adaptation is a
  single-chain algorithm, so vmapping it gives every chain its own step size and metric,
  each estimated from that chain's warm-up alone (ebmlab pools the metric over chains).

Every sampler gets the same warm-up length and the same number of kept draws (no thinning).

Measured, per sampler: the bulk and tail ESS (``ebmlab.diagnostics.ess_bulk`` / ``ess_tail``,
rank-normalised split chains as ArviZ computes them) of the *worst* coordinate; the gradient
evaluations of the sampling phase summed over chains; and the wall time of the sampling phase
(warm-up and BlackJAX's compilation are timed apart and not counted in ESS/s). Gradient
evaluations:

* NUTS (both libraries): the per-draw count each reports (``record.num_grad_evals``;
  BlackJAX ``info.num_integration_steps``) — leapfrog steps of each chain's own tree. A batch
  of chains runs as long as its longest tree, so ESS/s also pays for chains waiting on others;
* HMC: ``L = 10`` per transition — what the batched integrator computes (a chain that drew a
  shorter path under the 20 % jitter keeps re-evaluating its gradient in place; its useful
  count is 9 on average);
* MALA: 1 per transition; PT: 4 per transition (one per temperature).

The ``vs BJ`` columns are ratios to BlackJAX NUTS on the same target and chain count, measured
in the same run (``ebmlab / BlackJAX``; > 1 means ebmlab is ahead). Without JAX and BlackJAX
installed the script runs ebmlab alone, says so, and gives ratios to ebmlab's NUTS instead.
Install them for the benchmark only (``pip install jax blackjax``; CPU jaxlib); they are not
ebmlab dependencies.

Repeats: ``--repeats R`` runs every (target, chains, sampler) R times with different seeds,
rounds interleaved so that drifting machine load hits all samplers alike, and reports the
median of each figure.

Usage::

    python benchmarks/mcmc_efficiency.py                       # full run (chains 128 and 1024)
    python benchmarks/mcmc_efficiency.py --quick               # smoke run, under a minute
    python benchmarks/mcmc_efficiency.py --targets banana --chains 128 --markdown out.md
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Sequence

import numpy as np
import torch

try:  # run as ``python -m benchmarks.mcmc_efficiency`` or imported as part of the package
    from .common import machine_description, set_threads
    from .mcmc_targets import TARGETS, Target, make_targets
except ImportError:  # run as ``python benchmarks/mcmc_efficiency.py``
    from common import machine_description, set_threads
    from mcmc_targets import TARGETS, Target, make_targets

from ebmlab.diagnostics import ess_bulk, ess_tail
from ebmlab.samplers import sample
from ebmlab.samplers.hmc import HMC
from ebmlab.samplers.langevin import MALA
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.tempering import ParallelTempering

EBMLAB_SAMPLERS = ("nuts", "hmc", "mala", "pt")
BLACKJAX = "bj_nuts"
SAMPLERS = (*EBMLAB_SAMPLERS, BLACKJAX)
HMC_LEAPFROG = 10
PT_TEMPERATURES, PT_MAX_TEMPERATURE = 4, 10.0
MAX_TREE_DEPTH = 10  # default for both libraries (--max-tree-depth)
ESS_CHUNK = 8  # coordinates per ESS call: bounds the memory of the FFTs on (N, C, 100) draws


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


# ----------------------------------------------------------------------------------------
# ebmlab
# ----------------------------------------------------------------------------------------


def ebmlab_kernel(sampler: str, mala_metric: Metric | None, warmup: int, max_tree_depth: int = MAX_TREE_DEPTH):
    """The kernel and the driver's adaptation mode for ``sampler``."""
    if sampler == "nuts":
        return NUTS(max_tree_depth=max_tree_depth), "window"
    if sampler == "hmc":
        return HMC(num_leapfrog=HMC_LEAPFROG), "window"
    if sampler == "mala":
        return MALA(), "window"
    if sampler == "pt":
        return ParallelTempering(base=MALA(metric=mala_metric), num_temperatures=PT_TEMPERATURES,
                                 max_temperature=PT_MAX_TEMPERATURE, ladder_burn_in=warmup), True
    raise ValueError(f"unknown ebmlab sampler {sampler!r}")


def mala_warmup_metric(target: Target, x0: np.ndarray, warmup: int, seed: int) -> Metric:
    """The metric that MALA's window adaptation learns (for ``pt`` when ``mala`` is not run)."""
    generator = torch.Generator().manual_seed(seed)
    warm = sample(target.energy, MALA(), torch.as_tensor(x0), num_steps=0, burn_in=warmup, adapt="window",
                  generator=generator)
    return warm.kernel.metric


def run_ebmlab(sampler: str, target: Target, x0: np.ndarray, warmup: int, draws: int, seed: int,
               mala_metric: Metric | None = None, max_tree_depth: int = MAX_TREE_DEPTH) -> tuple[Result, Metric | None]:
    """Warm-up (timed), then ``draws`` kept transitions continuing from it (timed apart)."""
    generator = torch.Generator().manual_seed(seed)
    kernel, adapt = ebmlab_kernel(sampler, mala_metric, warmup, max_tree_depth)
    x = torch.as_tensor(x0)
    start = time.perf_counter()
    warm = sample(target.energy, kernel, x, num_steps=0, burn_in=warmup, adapt=adapt, generator=generator)
    warm_time = time.perf_counter() - start
    start = time.perf_counter()
    record = sample(target.energy, warm.kernel, warm, num_steps=draws, adapt=False, generator=generator)
    sample_time = time.perf_counter() - start
    chains = x0.shape[0]
    if sampler == "nuts":
        grads, note = float(record.num_grad_evals.sum()), "reported"
    elif sampler == "hmc":
        grads, note = float(HMC_LEAPFROG * draws * chains), f"L={HMC_LEAPFROG} computed"
    elif sampler == "mala":
        grads, note = float(draws * chains), "1/step"
    else:
        grads, note = float(PT_TEMPERATURES * draws * chains), f"{PT_TEMPERATURES}/step"
    bulk, tail = worst_ess(record.samples.detach().double().numpy())
    step = record.kernel.step_size
    result = Result(target.name, chains, sampler, bulk, tail, grads, sample_time, warm_time,
                    divergences=int(record.divergences.sum()), num_draws=draws, grad_note=note,
                    step_size=float(step.float().mean()) if isinstance(step, torch.Tensor) else float(step))
    metric = getattr(record.kernel, "metric", None)
    return result, metric


# ----------------------------------------------------------------------------------------
# BlackJAX
# ----------------------------------------------------------------------------------------


def blackjax_available() -> str | None:
    """The versions of JAX and BlackJAX, or ``None`` when either is missing."""
    try:
        import blackjax
        import jax
    except ImportError:
        return None
    return f"jax {jax.__version__}, jaxlib {getattr(__import__('jaxlib'), '__version__', '?')}, " \
           f"blackjax {blackjax.__version__}"


def run_blackjax(target: Target, x0: np.ndarray, warmup: int, draws: int, seed: int,
                 max_tree_depth: int = MAX_TREE_DEPTH) -> Result:
    """BlackJAX NUTS with window adaptation, vmapped over chains and jit-compiled.

    Warm-up and sampling are compiled ahead of time (timed as ``compile_time``), then run.
    """
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.base import get_filter_adapt_info_fn

    log_density = target.jax_log_density()
    adaptation = blackjax.window_adaptation(blackjax.nuts, log_density, target_acceptance_rate=0.8,
                                            adaptation_info_fn=get_filter_adapt_info_fn(),
                                            max_num_doublings=max_tree_depth)

    def warm_one(key, position):
        (state, parameters), _ = adaptation.run(key, position, num_steps=warmup)
        return state, parameters["step_size"], parameters["inverse_mass_matrix"]

    def sample_one(key, state, step_size, inverse_mass_matrix):
        kernel = blackjax.nuts(log_density, step_size, inverse_mass_matrix, max_num_doublings=max_tree_depth)

        def body(state, key):
            state, info = kernel.step(key, state)
            return state, (state.position, info.num_integration_steps, info.is_divergent)

        _, out = jax.lax.scan(body, state, jax.random.split(key, draws))
        return out

    chains = x0.shape[0]
    key_warm, key_sample = jax.random.split(jax.random.key(seed))
    keys_warm, keys_sample = jax.random.split(key_warm, chains), jax.random.split(key_sample, chains)
    positions = jnp.asarray(x0)
    start = time.perf_counter()
    warm_compiled = jax.jit(jax.vmap(warm_one)).lower(keys_warm, positions).compile()
    compile_time = time.perf_counter() - start
    start = time.perf_counter()
    states, step_sizes, inv_mass = jax.block_until_ready(warm_compiled(keys_warm, positions))
    warm_time = time.perf_counter() - start
    start = time.perf_counter()
    sample_compiled = jax.jit(jax.vmap(sample_one)).lower(keys_sample, states, step_sizes, inv_mass).compile()
    compile_time += time.perf_counter() - start
    start = time.perf_counter()
    positions, steps, divergent = jax.block_until_ready(sample_compiled(keys_sample, states, step_sizes, inv_mass))
    sample_time = time.perf_counter() - start
    draws_np = np.asarray(positions, dtype=np.float64).transpose(1, 0, 2)  # (C, N, D) -> (N, C, D)
    bulk, tail = worst_ess(draws_np)
    return Result(target.name, chains, BLACKJAX, bulk, tail, float(np.asarray(steps, dtype=np.float64).sum()),
                  sample_time, warm_time, compile_time=compile_time, divergences=int(np.asarray(divergent).sum()),
                  step_size=float(np.median(np.asarray(step_sizes))), num_draws=draws, grad_note="reported")


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


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


def run(targets: list[Target], chain_counts: Sequence[int], samplers: Sequence[str], warmup: int, draws: int,
        repeats: int, seed: int, max_tree_depth: int = MAX_TREE_DEPTH, log=print,
        jsonl: str | None = None) -> list[Result]:
    """Every (target, chains) with every sampler, ``repeats`` interleaved rounds; medians
    (each also appended to ``jsonl`` as soon as it is measured, so a cut-short run keeps them)."""
    out = []
    for target in targets:
        for chains in chain_counts:
            per_sampler: dict[str, list[Result]] = {s: [] for s in samplers}
            for rep in range(repeats):
                run_seed = seed + 1000 * rep
                x0 = target.initial_positions(chains, run_seed)
                mala_metric = None
                for sampler in samplers:
                    if sampler == BLACKJAX:
                        res = run_blackjax(target, x0, warmup, draws, run_seed, max_tree_depth)
                    else:
                        if sampler == "pt" and mala_metric is None:  # pt needs mala's metric
                            mala_metric = mala_warmup_metric(target, x0, warmup, run_seed)
                        res, metric = run_ebmlab(sampler, target, x0, warmup, draws, run_seed, mala_metric, max_tree_depth)
                        if sampler == "mala":
                            mala_metric = metric
                    per_sampler[sampler].append(res)
                    log(f"  {target.name:9s} C={chains:5d} {sampler:8s} rep {rep + 1}: bulk {res.ess_bulk:9.1f} "
                        f"tail {res.ess_tail:9.1f} grads/draw {res.grads_per_draw:7.2f} sample {res.sample_time:7.2f}s "
                        f"warm-up {res.warmup_time:7.2f}s div {res.divergences} eps {res.step_size:.4g}")
            for s in samplers:
                out.append(median_result(per_sampler[s]))
                if jsonl:
                    with open(jsonl, "a") as f:
                        f.write(json.dumps({**dataclasses.asdict(out[-1]), "max_tree_depth": max_tree_depth,
                                            "warmup": warmup}) + "\n")
    return out


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", default=None, help=f"subset of {', '.join(TARGETS)} (default all)")
    p.add_argument("--chains", type=int, nargs="+", default=None, help="chain counts (default 128 1024)")
    p.add_argument("--samplers", nargs="+", default=None, help=f"subset of {', '.join(SAMPLERS)} (default all)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up transitions (default 500)")
    p.add_argument("--draws", type=int, default=None, help="kept draws per chain (default 1000)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration, medians reported (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tree-depth", type=int, default=MAX_TREE_DEPTH,
                   help="NUTS doublings at most, both libraries (default 10)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--no-blackjax", action="store_true", help="ebmlab only, even if BlackJAX is installed")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: 16 chains, 150 warm-up, 100 draws, targets banana and funnel_nc")
    p.add_argument("--markdown", default=None, help="also write the table to this file")
    p.add_argument("--jsonl", default=None, help="append every result to this file as one JSON line")
    p.add_argument("--table-from", nargs="+", default=None, metavar="JSONL",
                   help="run nothing: print the table of results saved by --jsonl (several runs merged)")
    args = p.parse_args(argv)
    if args.quick:
        args.targets = args.targets or ["banana", "funnel_nc"]
        args.chains = args.chains or [16]
        args.warmup = 150 if args.warmup is None else args.warmup
        args.draws = 100 if args.draws is None else args.draws
    args.targets = args.targets or list(TARGETS)
    args.chains = args.chains or [128, 1024]
    args.warmup = 500 if args.warmup is None else args.warmup
    args.draws = 1000 if args.draws is None else args.draws
    args.samplers = args.samplers or list(SAMPLERS)
    if any(t not in TARGETS for t in args.targets):
        p.error(f"--targets: choose from {', '.join(TARGETS)}, got {' '.join(args.targets)}")
    if any(s not in SAMPLERS for s in args.samplers):
        p.error(f"--samplers: choose from {', '.join(SAMPLERS)}, got {' '.join(args.samplers)}")
    if not 1 <= args.max_tree_depth <= 30:
        p.error(f"--max-tree-depth must be in 1..30, got {args.max_tree_depth}")
    if any(c < 1 for c in args.chains):
        p.error(f"--chains must be >= 1, got {args.chains}")
    if args.warmup < 20 or args.draws < 8 or args.repeats < 1:
        p.error(f"--warmup must be >= 20, --draws >= 8 and --repeats >= 1, got {args.warmup}, {args.draws}, "
                f"{args.repeats}")
    return args


def load_results(paths: Sequence[str]) -> list[Result]:
    """Results saved by ``--jsonl``, in file order (extra keys such as ``max_tree_depth`` dropped)."""
    names = {f.name for f in dataclasses.fields(Result)}
    rows = []
    for path in paths:
        with open(path) as f:
            rows += [Result(**{k: v for k, v in json.loads(line).items() if k in names}) for line in f if line.strip()]
    return rows


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.table_from:
        results = load_results(args.table_from)
        baseline = BLACKJAX if any(r.sampler == BLACKJAX for r in results) else "nuts"
        add_ratios(results, baseline)
        print(table(results, baseline))
        return results
    set_threads(args.threads)
    versions = None if args.no_blackjax else blackjax_available()
    samplers = [s for s in args.samplers if s != BLACKJAX or versions is not None]
    notes = []
    if BLACKJAX in args.samplers and versions is None:
        notes.append("BlackJAX not run (" + ("--no-blackjax" if args.no_blackjax else
                     "jax/blackjax not installed; `pip install jax blackjax` for the comparison") +
                     "): ebmlab columns only, ratios against ebmlab's nuts.")
    baseline = BLACKJAX if BLACKJAX in samplers else ("nuts" if "nuts" in samplers else samplers[0])
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    log(f"machine: {machine_description(torch.device('cpu'))}" + (f"; {versions}" if versions else ""))
    start = time.perf_counter()
    results = run(make_targets(args.targets), args.chains, samplers, args.warmup, args.draws, args.repeats, args.seed,
                  args.max_tree_depth, log=log, jsonl=args.jsonl)
    add_ratios(results, baseline)
    text = table(results, baseline)
    header = (f"MCMC efficiency: {args.warmup} warm-up + {args.draws} draws per chain, repeats {args.repeats}, "
              f"seed {args.seed}, NUTS max tree depth {args.max_tree_depth}; worst coordinate; ratios ebmlab/{baseline} in the same run.\n"
              f"machine: {machine_description(torch.device('cpu'))}" + (f"; {versions}" if versions else "") +
              f"\ntotal wall time {time.perf_counter() - start:.0f} s")
    print(header)
    for note in notes:
        print(note)
    print(text)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(header + "\n\n" + "".join(n + "\n" for n in notes) + "\n" + text + "\n")
    return results


if __name__ == "__main__":
    main()
