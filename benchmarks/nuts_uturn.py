"""Benchmark: what Stan's extra U-turn checks cost or buy, ESS per gradient with and without.

ebmlab's NUTS checks every sub-tree and the merged trajectory with the generalised U-turn
criterion over the whole node and, by default, with Stan's (≥ 2.26) two checks of each half
extended by the adjacent leaf of the other, which stop some trajectories earlier;
``NUTS(robust_uturn=False)`` drops those (NumPyro's and BlackJAX's iterative NUTS make none either,
but take ``ρ - (p₋ + p₊)/2``, which does not run in circles). Without
them NUTS runs in circles on near-isotropic Gaussians (the 100-D Gaussian here, once its
metric is learned: expect the whole-node runs to take many times longer). For each seed this script
runs one warm-up (``adapt="window", metric="diag", adapt_per_chain=True``) and then both
kernels from the same states with the same parameters and the same generator seed, and
reports per seed the ESS per 1,000 gradients (bulk, tail; worst coordinate) and the gradients
per draw of each, then over seeds the geometric mean of whole-node ÷ robust with its
standard error as a factor (×/÷).

Usage::

    python benchmarks/nuts_uturn.py --target banana --seeds 12
    python benchmarks/nuts_uturn.py --target gauss100 --seeds 4 --compile
"""

from __future__ import annotations

import sys

import numpy as np
import torch

try:  # run as ``python -m benchmarks.nuts_uturn`` or as a script
    from .common import machine_description, set_threads
    from .mcmc_targets import make_targets
    from .nuts_swap import ebmlab_warm_up, geometric_summary, run_ebmlab, seed_parser
except ImportError:
    from common import machine_description, set_threads
    from mcmc_targets import make_targets
    from nuts_swap import ebmlab_warm_up, geometric_summary, run_ebmlab, seed_parser

VARIANTS = {"whole-node": False, "robust": True}


def main(argv=None) -> int:
    parser = seed_parser(__doc__.splitlines()[0])
    parser.add_argument("--compile", action="store_true", help="compiled NUTS (the same chains to rounding; faster "
                                                               "on large targets)")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    target = make_targets([args.target])[0]
    print(f"{args.target}, {args.chains} chains, {args.warmup} warm-up + {args.draws} draws; "
          f"{machine_description(torch.device('cpu'))}")
    rows = []
    for seed in range(args.seeds):
        params = ebmlab_warm_up(target, target.initial_positions(args.chains, seed), args.warmup, seed,
                                args.compile)
        cell = {name: run_ebmlab(target, params, args.draws, seed, robust, args.compile) for name, robust in VARIANTS.items()}
        rows.append(cell)
        print(f"seed {seed}: ESS per 1k gradients (bulk, tail, gradients per draw) " +
              "; ".join(f"{name} {v[0]:.2f}, {v[1]:.2f}, {v[2]:.1f}" for name, v in cell.items()), flush=True)
    log = {name: np.log(np.array([r[name][:2] for r in rows])) for name in VARIANTS}
    print(f"whole-node ÷ robust checks, ESS per gradient: {geometric_summary(log['whole-node'] - log['robust'])}")
    grads = {name: np.mean([r[name][2] for r in rows]) for name in VARIANTS}
    print("gradients per draw: " + ", ".join(f"{name} {g:.1f}" for name, g in grads.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
