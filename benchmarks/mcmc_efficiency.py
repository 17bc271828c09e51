"""Benchmark: ESS per gradient evaluation and ESS per second of ebmlab's gradient samplers,
side by side with BlackJAX's NUTS, on hard targets.

For each target of :mod:`benchmarks.mcmc_targets` (Neal's funnel 10-D non-centred and
centred, a 100-D Gaussian with scales 0.01..1, the banana, Bayesian logistic regression on
breast cancer) and each chain count, in the same run, from the same starting points:

* ``nuts``  — ``ebmlab.samplers.nuts.NUTS()`` (max tree depth 10), ``sample(..., adapt="window",
  metric="diag", adapt_per_chain=True)``: Stan's windowed warm-up with one step size per chain
  (each chain's dual averaging on its own acceptance statistic) and the diagonal metric pooled
  over chains;
* ``nuts_pooled`` — the same with one step size for all chains (``adapt_per_chain=False``);
* ``nuts_pcm`` — ``nuts`` with one diagonal metric per chain, each from its own warm-up draws
  (``metric="diag_per_chain"``, as BlackJAX's vmapped window adaptation);
* ``nuts_compiled`` — ``nuts`` run with ``sample(..., compile=True)``: every leaf of the tree
  (leapfrog, multinomial update, U-turn checks) in ``torch.compile`` graphs of four leaves
  (``StepCompiler(unroll=4)``, :mod:`ebmlab.samplers.nuts_compiled`); its compile time is
  counted in the warm-up, that of a graph first built in the sampling phase (a compact batch
  size) included; ``nuts_pcm_compiled`` is ``nuts_pcm`` run the same way;
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

Threads: one torch intra-op thread unless ``--threads`` says otherwise. On a shared two-core
machine a second thread makes every op above torch's parallel grain (32,768 elements) wait for
a descheduled worker: MALA on the 100-D Gaussian at 128 chains measured 1.2 ms a step at one
thread and 13 ms at two (load average 3), and PT's K·C-row batch crosses the grain first.
With one torch thread XLA gets one too (``XLA_FLAGS`` intra-op parallelism 1, set before JAX
starts), so that per-second figures compare one core against one core.

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
import sys
import time
from typing import Sequence

import numpy as np
import torch

try:  # run as ``python -m benchmarks.mcmc_efficiency`` or imported as part of the package
    from .blackjax_mlp import limit_xla_threads
    from .common import machine_description, set_threads
    from .mcmc_blackjax import blackjax_available, run_blackjax
    from .mcmc_results import BLACKJAX, Result, add_ratios, load_results, median_result, table, worst_ess
    from .mcmc_targets import TARGETS, Target, make_targets
except ImportError:  # run as ``python benchmarks/mcmc_efficiency.py``
    from blackjax_mlp import limit_xla_threads
    from common import machine_description, set_threads
    from mcmc_blackjax import blackjax_available, run_blackjax
    from mcmc_results import BLACKJAX, Result, add_ratios, load_results, median_result, table, worst_ess
    from mcmc_targets import TARGETS, Target, make_targets

from ebmlab.samplers import sample
from ebmlab.samplers.compiled_loop import StepCompiler
from ebmlab.samplers.hmc import HMC
from ebmlab.samplers.langevin import MALA
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS
from ebmlab.samplers.tempering import ParallelTempering

EBMLAB_SAMPLERS = ("nuts", "hmc", "mala", "pt", "nuts_pooled", "nuts_pcm")  # run by default
COMPILED_SAMPLERS = ("nuts_compiled", "nuts_pcm_compiled")  # on request only (--samplers): compiling takes a minute or more
SAMPLERS = (*EBMLAB_SAMPLERS, *COMPILED_SAMPLERS, BLACKJAX)
HMC_LEAPFROG = 10
PT_TEMPERATURES, PT_MAX_TEMPERATURE = 4, 10.0
NUTS_UNROLL = 4  # nuts_compiled: leaves per compiled call
MAX_TREE_DEPTH = 10  # default for both libraries (--max-tree-depth)


# ----------------------------------------------------------------------------------------
# ebmlab
# ----------------------------------------------------------------------------------------


def ebmlab_kernel(sampler: str, mala_metric: Metric | None, warmup: int, max_tree_depth: int = MAX_TREE_DEPTH):
    """The kernel, the driver's adaptation mode and whether it tunes one step size per chain."""
    if sampler.startswith("nuts"):
        return NUTS(max_tree_depth=max_tree_depth), "window", sampler != "nuts_pooled"
    if sampler == "hmc":
        return HMC(num_leapfrog=HMC_LEAPFROG), "window", False
    if sampler == "mala":
        return MALA(), "window", False
    if sampler == "pt":
        return ParallelTempering(base=MALA(metric=mala_metric), num_temperatures=PT_TEMPERATURES,
                                 max_temperature=PT_MAX_TEMPERATURE, ladder_burn_in=warmup), True, False
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
    kernel, adapt, per_chain = ebmlab_kernel(sampler, mala_metric, warmup, max_tree_depth)
    x = torch.as_tensor(x0)
    start = time.perf_counter()
    # one cache for both phases; four leaves per compiled call
    compiled = StepCompiler(unroll=NUTS_UNROLL) if sampler in COMPILED_SAMPLERS else False
    warm = sample(target.energy, kernel, x, num_steps=0, burn_in=warmup, adapt=adapt, generator=generator,
                  adapt_per_chain=per_chain, metric="diag_per_chain" if sampler.startswith("nuts_pcm") else "diag",
                  compile=compiled)
    warm_time = time.perf_counter() - start
    start = time.perf_counter()
    record = sample(target.energy, warm.kernel, warm, num_steps=draws, adapt=False, generator=generator,
                    compile=compiled)
    sample_time = time.perf_counter() - start
    # a graph first needed after the warm-up (a compact batch size, say) is set-up, not sampling:
    # its compile time moves to the warm-up, as BlackJAX's jit time is kept apart
    late_compile = record.compile_time or 0.0
    sample_time, warm_time = sample_time - late_compile, warm_time + late_compile
    chains = x0.shape[0]
    if sampler.startswith("nuts"):
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
                    step_size=float(step.float().median()) if isinstance(step, torch.Tensor) else float(step))
    metric = getattr(record.kernel, "metric", None)
    return result, metric


# ----------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------


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


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--targets", nargs="+", default=None, help=f"subset of {', '.join(TARGETS)} (default all)")
    p.add_argument("--chains", type=int, nargs="+", default=None, help="chain counts (default 128 1024)")
    p.add_argument("--samplers", nargs="+", default=None, help=f"subset of {', '.join(SAMPLERS)} (default all but {', '.join(COMPILED_SAMPLERS)})")
    p.add_argument("--warmup", type=int, default=None, help="warm-up transitions (default 500)")
    p.add_argument("--draws", type=int, default=None, help="kept draws per chain (default 1000)")
    p.add_argument("--repeats", type=int, default=1, help="runs per configuration, medians reported (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tree-depth", type=int, default=MAX_TREE_DEPTH,
                   help="NUTS doublings at most, both libraries (default 10)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1; see the docstring)")
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
    args.samplers = args.samplers or [s for s in SAMPLERS if s not in COMPILED_SAMPLERS]
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


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    if args.table_from:
        results = load_results(args.table_from)
        baseline = BLACKJAX if any(r.sampler == BLACKJAX for r in results) else "nuts"
        add_ratios(results, baseline)
        print(table(results, baseline))
        return results
    set_threads(args.threads)
    limit_xla_threads(args.threads)  # the same one thread for XLA (read when JAX starts)
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
