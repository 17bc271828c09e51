"""The compiled chain loop: ULA, MALA and HMC transitions run as ``torch.compile`` graphs.

``sample(energy, kernel, x0, ..., compile=True)`` (or ``compile=StepCompiler(...)``) runs every
transition of :func:`~ebmlab.samplers.loop.run_kernel` — burn-in with dual averaging and window
adaptation included — through :meth:`StepCompiler.run`: one compiled call of
:func:`~ebmlab.samplers.compiled_step.transitions` per ``unroll`` transitions, with the
step size, the dual-averaging state and the metric as tensor arguments (adaptation never
recompiles) and kept draws copied into preallocated ``(S, C, *event)`` buffers.

Random numbers are drawn outside the graph from the run's ``torch.Generator``, per transition
and in the eager kernels' order (``randn`` of x's shape, then HMC's ``rand((C,))`` ε jitter and
``randint`` path lengths, then the Metropolis ``rand((C,))``), so the generator advances as in
eager runs and the chains agree with eager ones to floating-point rounding.

NUTS is not a whole-transition graph: its trajectory doubles while any chain is still building,
a data-dependent number of leapfrog steps per transition that a fixed graph cannot hold without
running every chain to the maximal depth (``2^10`` gradients); with ``compile=True`` each leaf
of its tree is one graph instead, held by this class's cache (:mod:`ebmlab.samplers.nuts_compiled`).

CUDA graphs: ``StepCompiler(mode="reduce-overhead")`` replays the whole call as one CUDA graph,
which removes the launch cost that dominates small problems on a GPU; it needs chains on CUDA
(``ValueError`` otherwise). Outputs of a replay live in static buffers, so they are copied out
before the next call.
"""

from __future__ import annotations

import math
import time
import types
from typing import Callable

import torch

from ebmlab.energy.base import EnergyFn, check_energy_output
from ebmlab.samplers.adaptation import DualAveraging
from ebmlab.samplers.base import ChainState, Kernel, StepInfo
from ebmlab.samplers.compiled_step import StepSpec, transitions
from ebmlab.samplers.hmc import HMC
from ebmlab.samplers.langevin import MALA, ULA
from ebmlab.samplers.loop import ChainDivergedError, KernelRun, check_generator, initial_step_sizes

COMPILED_KERNELS = (ULA, MALA, HMC)
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def energy_value_and_grad(energy: EnergyFn) -> Callable:
    """``x ↦ (E(x), ∇ₓE(x))`` as a traceable function: the energy's own ``value_and_grad`` (an
    analytic one), else ``torch.func.grad_and_value`` of ``Σ_c E(x_c)``; a
    :class:`~ebmlab.energy.compiled.CompiledEnergy` is unwrapped (its graph would nest)."""
    inner = getattr(energy, "energy", None)
    if inner is not None and type(energy).__name__ == "CompiledEnergy":
        energy = inner
    own = getattr(energy, "value_and_grad", None)
    if own is not None:
        return own

    def summed(x: torch.Tensor):
        e = energy(x)
        if e.dim() == 2:
            e = e.squeeze(-1)
        return e.sum(), e

    grad_and_value = torch.func.grad_and_value(summed, has_aux=True)

    def vg(x: torch.Tensor):
        g, (_, e) = grad_and_value(x)
        return e, g

    return vg


def metric_tensors(kernel: Kernel) -> tuple[str, dict]:
    """The metric of ``kernel`` as ``(kind, {"inv": M⁻¹, "chol": L})`` for the graph."""
    metric = getattr(kernel, "metric", None)
    if metric is None or metric.inverse_mass_matrix is None:
        return "identity", {}
    if metric.is_dense:
        return "dense", {"inv": metric.inverse_mass_matrix, "chol": metric._chol_mass}
    return "diag", {"inv": metric.inverse_mass_matrix}


def draw(kernel: Kernel, spec: StepSpec, state: ChainState, generator, steps: int) -> dict:
    """The random numbers of ``steps`` transitions, drawn in the eager kernels' order and stacked
    to ``(steps, C, *event)`` / ``(steps, C)``."""
    x, c = state.x, state.num_chains
    names = ["noise"] + (["jitter"] if spec.jitter > 0 else []) + \
        (["path"] if spec.fewest_leapfrog < spec.num_leapfrog else []) + (["u"] if spec.family != "ula" else [])
    out: dict[str, list] = {name: [] for name in names}
    for _ in range(steps):
        out["noise"].append(torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device))
        if "jitter" in out:
            out["jitter"].append(torch.rand(c, generator=generator, dtype=x.dtype, device=x.device))
        if "path" in out:
            out["path"].append(torch.randint(spec.fewest_leapfrog, spec.num_leapfrog + 1, (c,), generator=generator,
                                             device=x.device))
        if "u" in out:
            out["u"].append(torch.rand(c, generator=generator, dtype=state.energy.dtype, device=x.device))
    return {name: torch.stack(values) for name, values in out.items()}


class StepCompiler:
    """Compiles and runs whole transitions; pass one as ``sample(..., compile=StepCompiler())``.

    Args:
        mode: ``torch.compile`` mode; ``"reduce-overhead"`` replays CUDA graphs (CUDA only).
        unroll: transitions per compiled call (k); more amortise the call overhead (about 0.1 ms
            a call on a CPU), and a run whose length is not a multiple of k masks the surplus
            transitions of its last call (so the graph does not depend on the run's length).
            ``None``: 4 for ULA and MALA, 1 for HMC, whose graph holds ``k·L`` gradients and
            compiles for minutes when unrolled (measured, MLP at 1,024 chains: MALA 0.85x
            the eager floor with k = 4 against 0.98x with k = 1; HMC, L = 5: 3.7x and 3.4x,
            compiled in 94 s and 16 s).
        backend, fullgraph, dynamic: passed to ``torch.compile``.
        on_compile: ``on_compile(seconds, spec)`` after each new graph's first call (its
            compile time, one transition call included).
        compact: NUTS only: once at most ``1/compact`` of the chains still build a subtree of more
            than ``2·unroll`` leaves, its remaining leaves run on those chains alone, gathered into
            a batch of ``C/compact`` rows, and again into ``C/compact²`` rows once at most that
            many build, down to 16 rows (one more graph per batch size), so that the gradient is
            not evaluated on chains that wait (``None``: never; only for energies that treat
            every row alike).

    Attributes: ``compile_time`` (seconds, all graphs) and ``graphs`` (how many were built).
    """

    def __init__(self, mode: str | None = None, unroll: int | None = None, backend: str | Callable = "inductor",
                 fullgraph: bool = False, dynamic: bool | None = None,
                 on_compile: Callable[[float, StepSpec], None] | None = None, compact: int | None = 4):
        if unroll is not None and (not isinstance(unroll, int) or unroll < 1):
            raise ValueError(f"StepCompiler: unroll must be an integer >= 1 or None, got {unroll!r}")
        if compact is not None and (isinstance(compact, bool) or not isinstance(compact, int) or compact < 2):
            raise ValueError(f"StepCompiler: compact must be an integer >= 2 or None, got {compact!r}")
        self.compact = compact
        self.mode, self.unroll, self.backend = mode, unroll, backend
        self.fullgraph, self.dynamic, self.on_compile = fullgraph, dynamic, on_compile
        self.compile_time, self.graphs = 0.0, 0
        self._compiled: dict = {}

    @staticmethod
    def handles(kernel: Kernel) -> bool:
        return type(kernel) in COMPILED_KERNELS

    def check(self, x: torch.Tensor, where: str) -> None:
        """``ValueError`` for ``mode="reduce-overhead"`` (CUDA graphs) on chains not on CUDA."""
        if self.mode == "reduce-overhead" and x.device.type != "cuda":
            raise ValueError(f"{where}: compile mode {self.mode!r} replays CUDA graphs and needs chains on a CUDA "
                             f"device, got {x.device}; use the default mode on {x.device.type}")

    def spec(self, kernel: Kernel, state: ChainState, steps: int, every: int, adaptation, per_chain: bool,
             callback, metric: str) -> StepSpec:
        k = self.unroll or (1 if isinstance(kernel, HMC) else 4)
        common = dict(metric=metric, unroll=k, masked=k > 1, trace=k > 1 and bool(every or callback),
                      per_chain=per_chain or isinstance(kernel.step_size, torch.Tensor))
        if adaptation is not None:
            common.update(adapt="per_chain" if per_chain else "pooled",
                          dual_averaging=(adaptation.target_accept, adaptation.gamma, adaptation.t0, adaptation.kappa))
        if isinstance(kernel, ULA):
            return StepSpec("ula", noise_scale=float(kernel.noise_scale), **common)
        if isinstance(kernel, MALA):
            return StepSpec("mala", **common)
        num = int(kernel.num_leapfrog)
        fewest = math.ceil((1.0 - kernel.path_jitter) * num - 1e-9)
        return StepSpec("hmc", num_leapfrog=num, fewest_leapfrog=min(fewest, num), jitter=float(kernel.jitter),
                        max_energy_error=float(kernel.max_energy_error), **common)

    def _function(self, spec: StepSpec, energy: EnergyFn) -> tuple[Callable, float | None]:
        """The compiled function of ``spec`` on ``energy`` and, when it is new, the seconds its
        set-up took (``torch.compile`` imports its compiler stack on first use), else ``None``."""
        key = (spec, id(energy))
        if key in self._compiled:
            return self._compiled[key][1], None
        start = time.perf_counter()
        vg = energy_value_and_grad(energy)

        def call(carry, draws, metric):
            return transitions(spec, vg, carry, draws, metric)

        # torch.compile caches graphs per code object, at most 8 (``recompile_limit``): each spec
        # gets its own copy of the code so the graphs of many specs never evict one another.
        name = f"compiled_{spec.family}_{len(self._compiled)}"
        call = types.FunctionType(call.__code__.replace(co_name=name, co_qualname=name), call.__globals__, name,
                                  None, call.__closure__)
        fn = torch.compile(call, mode=self.mode, backend=self.backend, fullgraph=self.fullgraph, dynamic=self.dynamic)
        self._compiled[key] = (energy, fn)  # the energy is held so its id is not reused
        return fn, time.perf_counter() - start

    def _call(self, fn, carry, draws, metric, spec: StepSpec, setup: float | None):
        """One compiled call; the first of a new function is timed as its compilation."""
        graphs = self.mode in CUDA_GRAPH_MODES and carry["x"].is_cuda  # max-autotune replays them on CUDA too
        start = time.perf_counter() if setup is not None else 0.0
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()
        with torch.no_grad():
            carry, out = fn(carry, draws, metric)
        if graphs:  # replay outputs live in static buffers that the next replay overwrites
            carry, out = torch.utils._pytree.tree_map(torch.clone, (carry, out))
        if setup is not None:
            if carry["x"].is_cuda:
                torch.cuda.synchronize(carry["x"].device)
            seconds = setup + time.perf_counter() - start
            self.compile_time += seconds
            self.graphs += 1
            if self.on_compile is not None:
                self.on_compile(seconds, spec)
        return carry, out

    def run(self, kernel: Kernel, energy: EnergyFn, state: ChainState, num_steps: int, generator, *, every: int = 0,
            adaptation: DualAveraging | None = None, per_chain: bool = False, callback=None, first_step: int = 1,
            check_finite: bool = False) -> KernelRun:
        """:func:`~ebmlab.samplers.loop.run_kernel` with compiled transitions (same arguments,
        same :class:`KernelRun`, the same chains to floating-point rounding)."""
        name = kernel.name or type(kernel).__name__
        check_generator(generator, state.x, name)
        self.check(state.x, name)
        x, c, device = state.x, state.num_chains, state.x.device
        kind, metric = metric_tensors(kernel)
        spec = self.spec(kernel, state, num_steps, every, adaptation, per_chain, callback, kind)
        fn, setup = self._function(spec, energy)
        eps0 = initial_step_sizes(kernel, state, per_chain)
        eps = torch.as_tensor(eps0, dtype=torch.float64, device=device)
        carry = {"x": x, "e": state.energy, "g": state.grad, "eps": eps,
                 "accepted": torch.zeros(c, device=device), "accept_prob": torch.zeros(c, device=device),
                 "divergences": torch.zeros(c, dtype=torch.long, device=device)}
        if adaptation is not None:
            da = adaptation.init(eps0)
            carry["da"] = {f: torch.as_tensor(getattr(da, f), dtype=torch.float64, device=device).clone()
                           for f in ("error_avg", "log_step", "log_step_avg", "mu")}
            carry["da"]["t"] = torch.zeros((), dtype=torch.float64, device=device)
        kept = num_steps // every if every else 0
        buf_x = x.new_empty((kept, *x.shape)) if every else None
        buf_e = state.energy.new_empty((kept, c)) if every else None
        buf_stats = {"accept_prob": state.energy.new_empty((kept, c)), "diverged": torch.empty((kept, c), dtype=torch.bool,
                                                                                               device=device)} if every else {}
        done, k = 0, spec.unroll
        while done < num_steps:
            n = min(k, num_steps - done)
            draws = draw(kernel, spec, state, generator, n)
            if n < k:  # the last call of a run that is not a multiple of k: surplus transitions are no-ops
                draws = {key: torch.cat([v, v[-1:].expand(k - n, *v.shape[1:])]) for key, v in draws.items()}
            if spec.masked:
                draws["active"] = torch.arange(k, device=device) < n
            carry, out = self._call(fn, carry, draws, metric, spec, setup)
            setup = None
            if check_finite and bool(out["nonfinite"][:n].any()):
                j = int(out["nonfinite"][:n].any(dim=1).nonzero()[0])
                raise ChainDivergedError(first_step + done + j, out["nonfinite"][j].nonzero().flatten().tolist(), name)
            for j in range(n):
                i = done + j + 1
                last = j == n - 1
                if every and i % every == 0:
                    s = i // every - 1
                    buf_x[s].copy_(carry["x"] if last else out["x"][j])
                    buf_e[s].copy_(carry["e"] if last else out["e"][j])
                    buf_stats["accept_prob"][s].copy_(out["accept_prob"][j])
                    buf_stats["diverged"][s].copy_(out["diverged"][j])
                if callback is not None:
                    st = ChainState(carry["x"], carry["e"], carry["g"], state.step + i) if last else \
                        ChainState(out["x"][j], out["e"][j], None, state.step + i)
                    callback(first_step + i - 1, st, StepInfo(out["accept_prob"][j], out["accepted"][j],
                                                             out["diverged"][j]))
            done += n
        if num_steps:
            check_energy_output(carry["e"], carry["x"], f"{name}: compiled transition")
        final = ChainState(carry["x"], carry["e"], carry["g"], state.step + num_steps)
        if adaptation is not None and num_steps:
            step = torch.exp(carry["da"]["log_step_avg"])
            kernel = kernel.with_step_size(step if per_chain else float(step))
        return KernelRun(final, kernel, buf_x, buf_e, carry["accepted"], carry["accept_prob"], carry["divergences"],
                         num_steps, buf_stats)


__all__ = ["COMPILED_KERNELS", "StepCompiler", "draw", "energy_value_and_grad", "metric_tensors"]
