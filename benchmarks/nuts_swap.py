"""Benchmark: how much of a NUTS-vs-BlackJAX ratio is the kernel, the warm-up or the seed.

`benchmarks/mcmc_efficiency.py` compares ebmlab's NUTS with BlackJAX's, each after its own
window adaptation. On a target whose worst-coordinate ESS is set by rare chains (the banana's
arms), one run's ratio moves a lot from seed to seed. This script separates the parts: for each
seed it runs both warm-ups from the same starting points, then **both kernels with both
parameter sets** (per-chain step sizes and diagonal metrics, the final warm-up states), each
for ``--draws`` draws, four runs in all:

===========================  ======================================================
ebmlab params, ebmlab kernel  what ebmlab's ``sample(adapt="window")`` gives
ebmlab params, BJ kernel      BlackJAX's NUTS with ebmlab's tuned parameters
BJ params, ebmlab kernel      ebmlab's NUTS with BlackJAX's tuned parameters
BJ params, BJ kernel          what ``blackjax.window_adaptation`` + ``blackjax.nuts`` give
===========================  ======================================================

and reports, over seeds, the geometric mean of three ratios of ESS per gradient (bulk / tail,
worst coordinate) with its standard error as a factor (×/÷): the **kernel** (ebmlab's ÷
BlackJAX's NUTS on the same parameters, both parameter sets pooled), the **warm-up** (ebmlab's ÷
BlackJAX's parameters on the same kernel, both kernels pooled) and **all** (what the two
libraries give, the ratio mcmc_efficiency.py reports). The spread of the single-run ratios is
printed too: it is what one seed of the efficiency benchmark can move by.

ebmlab runs eagerly here (its compiled NUTS draws the same chains to rounding); ebmlab's
warm-up is ``adapt="window", metric="diag", adapt_per_chain=True`` (the pooled metric
broadcast to a ``(C, D)`` per-chain metric so that both kernels take both sets). Needs JAX and
BlackJAX (``pip install jax blackjax``).

Usage::

    python benchmarks/nuts_swap.py --target banana --seeds 12      # about a minute a seed
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import torch

try:  # run as ``python -m benchmarks.nuts_swap`` or as a script
    from .blackjax_mlp import limit_xla_threads
    from .common import machine_description, set_threads
    from .mcmc_results import worst_ess
    from .mcmc_targets import TARGETS, make_targets
except ImportError:
    from blackjax_mlp import limit_xla_threads
    from common import machine_description, set_threads
    from mcmc_results import worst_ess
    from mcmc_targets import TARGETS, make_targets

from ebmlab.samplers import sample
from ebmlab.samplers.metric import Metric
from ebmlab.samplers.nuts import NUTS

PARAMS = ("ebmlab", "bj")


def ebmlab_warm_up(target, x0: np.ndarray, warmup: int, seed: int, compile: bool = False):
    """ebmlab's tuned ``(step sizes (C,), inverse metric (C, D), final positions (C, D))``."""
    warm = sample(target.energy, NUTS(), torch.as_tensor(x0), num_steps=0, burn_in=warmup, adapt="window",
                  metric="diag", adapt_per_chain=True, generator=torch.Generator().manual_seed(seed), compile=compile)
    inv = warm.kernel.metric.inverse_mass_matrix.double().numpy()
    return (warm.kernel.step_size.double().numpy(), np.broadcast_to(inv, x0.shape).copy(),
            warm.final_state.x.double().numpy())


def warm_ups(target, x0: np.ndarray, warmup: int, seed: int):
    """Both libraries' tuned ``(step sizes (C,), inverse metric (C, D), final positions (C, D))``."""
    import blackjax
    import jax
    import jax.numpy as jnp

    ours = ebmlab_warm_up(target, x0, warmup, seed)
    log_density = target.jax_log_density()
    adaptation = blackjax.window_adaptation(blackjax.nuts, log_density, target_acceptance_rate=0.8)

    def one(key, position):
        (state, parameters), _ = adaptation.run(key, position, num_steps=warmup)
        return parameters["step_size"], parameters["inverse_mass_matrix"], state.position

    keys = jax.random.split(jax.random.key(seed), x0.shape[0])
    theirs = tuple(np.asarray(a, dtype=np.float64) for a in jax.jit(jax.vmap(one))(keys, jnp.asarray(x0)))
    return {"ebmlab": ours, "bj": theirs}


def run_ebmlab(target, params, draws: int, seed: int, robust_uturn: bool = False,
               compile: bool = False) -> tuple[float, float, float]:
    """ESS per 1,000 gradients (bulk, tail) of ebmlab's NUTS with ``params`` (and ``robust_uturn``;
    ``compile``: compiled leaves, the same chains to rounding), and its gradients per draw (mean
    over chains)."""
    steps, inv, x = params
    dtype = target.energy(torch.zeros(1, target.dim)).dtype
    kernel = NUTS(step_size=torch.as_tensor(steps, dtype=dtype), metric=Metric(torch.as_tensor(inv, dtype=dtype),
                                                                               per_chain=True), robust_uturn=robust_uturn)
    record = sample(target.energy, kernel, torch.as_tensor(x, dtype=dtype), num_steps=draws, adapt=False,
                    generator=torch.Generator().manual_seed(seed + 1), compile=compile)
    bulk, tail = worst_ess(record.samples.double().numpy())
    grads = float(record.num_grad_evals.sum())
    return 1e3 * bulk / grads, 1e3 * tail / grads, grads / (draws * x.shape[0])


def run_blackjax(target, params, draws: int, seed: int) -> tuple[float, float]:
    """ESS per 1,000 gradients (bulk, tail) of BlackJAX's NUTS with ``params``."""
    import blackjax
    import jax
    import jax.numpy as jnp

    log_density = target.jax_log_density()

    def one(key, position, step_size, inverse_mass_matrix):
        kernel = blackjax.nuts(log_density, step_size, inverse_mass_matrix)

        def body(state, k):
            state, info = kernel.step(k, state)
            return state, (state.position, info.num_integration_steps)

        return jax.lax.scan(body, kernel.init(position), jax.random.split(key, draws))[1]

    steps, inv, x = (jnp.asarray(a, dtype=jnp.float32) for a in params)
    keys = jax.random.split(jax.random.key(seed + 1), x.shape[0])
    positions, counts = jax.jit(jax.vmap(one))(keys, x, steps, inv)
    bulk, tail = worst_ess(np.asarray(positions, dtype=np.float64).transpose(1, 0, 2))
    grads = float(np.asarray(counts, dtype=np.float64).sum())
    return 1e3 * bulk / grads, 1e3 * tail / grads


def geometric_summary(log_ratios: np.ndarray) -> str:
    """``"bulk g ×/÷ s, tail g ×/÷ s"`` from log ratios ``(n, 2)``: geometric mean and its SE factor."""
    mean = log_ratios.mean(0)
    se = log_ratios.std(0, ddof=1) / np.sqrt(len(log_ratios)) if len(log_ratios) > 1 else np.full(2, np.nan)
    return f"bulk {np.exp(mean[0]):.3f} ×/÷ {np.exp(se[0]):.3f}, tail {np.exp(mean[1]):.3f} ×/÷ {np.exp(se[1]):.3f}"


def seed_parser(description: str) -> argparse.ArgumentParser:
    """The options of the per-seed comparisons (this script and benchmarks/nuts_uturn.py)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--target", default="banana", choices=TARGETS)
    parser.add_argument("--chains", type=int, default=1024)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seeds", type=int, default=12, help="seeds 0 .. N-1")
    parser.add_argument("--threads", type=int, default=1)
    return parser


def main(argv=None) -> int:
    args = seed_parser(__doc__.splitlines()[0]).parse_args(argv)
    set_threads(args.threads)
    limit_xla_threads(args.threads)
    target = make_targets([args.target])[0]
    print(f"{args.target}, {args.chains} chains, {args.warmup} warm-up + {args.draws} draws; "
          f"{machine_description(torch.device('cpu'))}")
    ess = []  # per seed: {(params, kernel): (bulk, tail)}
    for seed in range(args.seeds):
        x0 = target.initial_positions(args.chains, seed)
        params = warm_ups(target, x0, args.warmup, seed)
        cell = {}
        for p in PARAMS:
            cell[p, "ebmlab"] = run_ebmlab(target, params[p], args.draws, seed)[:2]
            cell[p, "bj"] = run_blackjax(target, params[p], args.draws, seed)
        ess.append(cell)
        print(f"seed {seed}: ESS per 1k gradients (bulk, tail) " +
              "; ".join(f"{p} params + {k} kernel {v[0]:.2f}, {v[1]:.2f}" for (p, k), v in cell.items()), flush=True)
    log = {key: np.log(np.array([c[key] for c in ess])) for key in ess[0]}
    kernel = np.concatenate([log[p, "ebmlab"] - log[p, "bj"] for p in PARAMS])
    warm = np.concatenate([log["ebmlab", k] - log["bj", k] for k in ("ebmlab", "bj")])
    both = log["ebmlab", "ebmlab"] - log["bj", "bj"]
    print(f"kernel (ebmlab ÷ BlackJAX NUTS, same parameters): {geometric_summary(kernel)}")
    print(f"warm-up (ebmlab ÷ BlackJAX parameters, same kernel): {geometric_summary(warm)}")
    print(f"all (ebmlab ÷ BlackJAX, each its own): {geometric_summary(both)}; single runs "
          f"{np.exp(both[:, 0]).min():.2f}–{np.exp(both[:, 0]).max():.2f} (bulk), "
          f"{np.exp(both[:, 1]).min():.2f}–{np.exp(both[:, 1]).max():.2f} (tail)")
    same = np.concatenate([log[p, "ebmlab"] - log[p, "bj"] for p in PARAMS])
    print(f"one run's ratio on identical parameters spans {np.exp(same[:, 0]).min():.2f}–{np.exp(same[:, 0]).max():.2f} "
          f"(bulk): the seed-to-seed noise of a single comparison")
    return 0


if __name__ == "__main__":
    sys.exit(main())
