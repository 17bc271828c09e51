"""BlackJAX MALA and HMC steps on the benchmark's ``MLPEnergy``, for benchmarks/samplers.py.

The torch energy's weights are copied into a JAX function of the same arithmetic,
``E(x) = W₃ silu(W₂ silu(W₁x + b₁) + b₂) + b₃`` (float32), and ``log p = -E``. One call runs
``steps`` transitions of every chain: ``jax.lax.scan`` over a step that ``jax.vmap`` maps
over the chains (``blackjax.mala`` / ``blackjax.hmc`` with ``L`` integration steps and an
identity inverse mass matrix), jit-compiled once before timing. JAX and BlackJAX are
optional: :func:`blackjax_available` says whether they import.

Threads: XLA's CPU backend picks its own thread pool; :func:`limit_xla_threads` (before JAX is
imported) asks for one intra-op thread when the torch side runs with one.
"""

from __future__ import annotations

import os
from typing import Callable

import torch


def limit_xla_threads(num_threads: int | None) -> None:
    """With ``num_threads == 1``, tell XLA (through ``XLA_FLAGS``, read when JAX starts) to run
    its CPU ops on one thread; other values leave XLA's default."""
    if num_threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "intra_op_parallelism_threads" not in flags:
            os.environ["XLA_FLAGS"] = (flags + " --xla_cpu_multi_thread_eigen=false "
                                       "intra_op_parallelism_threads=1").strip()


def blackjax_available() -> str | None:
    """``"jax X, blackjax Y"`` when both import, else ``None``."""
    try:
        import blackjax
        import jax
    except ImportError:
        return None
    return f"jax {jax.__version__}, blackjax {blackjax.__version__}"


def jax_mlp_energy(energy: torch.nn.Module) -> Callable:
    """``x ↦ E(x)`` for one state ``x`` ``(D,)``, with the ``nn.Linear`` weights of ``energy.net``
    (an ``MLPEnergy``: Linear, SiLU, ..., Linear) as float32 JAX arrays."""
    import jax
    import jax.numpy as jnp

    layers = [(jnp.asarray(m.weight.detach().cpu().numpy()), jnp.asarray(m.bias.detach().cpu().numpy()))
              for m in energy.net if isinstance(m, torch.nn.Linear)]

    def e(x):
        h = x
        for w, b in layers[:-1]:
            h = jax.nn.silu(h @ w.T + b)
        w, b = layers[-1]
        return (h @ w.T + b)[0]

    return e


def blackjax_stepper(energy: torch.nn.Module, x: torch.Tensor, sampler: str, step_size: float,
                     num_leapfrog: int, steps: int, seed: int = 0) -> Callable[[], object]:
    """A callable that runs ``steps`` BlackJAX transitions of all ``C`` chains of ``x`` ``(C, D)``
    and waits for them; the chain state carries over from call to call. Compiled here."""
    import blackjax
    import jax
    import jax.numpy as jnp

    e = jax_mlp_energy(energy)

    def log_density(position):
        return -e(position)

    if sampler == "mala":
        kernel = blackjax.mala(log_density, step_size)
    elif sampler == "hmc":
        kernel = blackjax.hmc(log_density, step_size, jnp.ones(x.shape[1], dtype=jnp.float32), num_leapfrog)
    else:
        raise ValueError(f"blackjax_stepper: sampler must be mala or hmc, got {sampler!r}")
    num_chains = x.shape[0]
    state = jax.vmap(kernel.init)(jnp.asarray(x.detach().cpu().numpy()))

    @jax.jit
    def run(state, key):
        def body(state, key):
            state, _ = jax.vmap(kernel.step)(jax.random.split(key, num_chains), state)
            return state, None

        state, _ = jax.lax.scan(body, state, jax.random.split(key, steps))
        return state

    carry = {"state": state, "key": jax.random.PRNGKey(seed)}

    def call():
        carry["key"], sub = jax.random.split(carry["key"])
        carry["state"] = run(carry["state"], sub)
        jax.block_until_ready(carry["state"])
        return carry["state"]

    call()  # compile
    return call


__all__ = ["blackjax_available", "blackjax_stepper", "jax_mlp_energy", "limit_xla_threads"]
