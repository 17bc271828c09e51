"""BlackJAX's NUTS for benchmarks/mcmc_efficiency.py: ``blackjax.window_adaptation`` then
``blackjax.nuts``, vmapped over chains and jit-compiled (JAX and BlackJAX are optional: the
benchmark runs ebmlab alone without them).

BlackJAX's window adaptation is a single-chain algorithm, so vmapping it gives every chain its
own step size and diagonal metric, each estimated from that chain's warm-up alone.
"""

from __future__ import annotations

import time

import numpy as np

try:  # run as ``python -m benchmarks.mcmc_efficiency`` or imported as part of the package
    from .mcmc_results import BLACKJAX, Result, worst_ess
    from .mcmc_targets import Target
except ImportError:  # run as ``python benchmarks/mcmc_efficiency.py``
    from mcmc_results import BLACKJAX, Result, worst_ess
    from mcmc_targets import Target

MAX_TREE_DEPTH = 10  # default for both libraries (--max-tree-depth)


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


__all__ = ["blackjax_available", "run_blackjax"]
