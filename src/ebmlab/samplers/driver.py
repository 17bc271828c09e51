"""The run driver: burn-in with adaptation, then kept draws with thinning.

``record = sample(energy, kernel, x0, num_steps=1000, burn_in=500, thin=1, generator=g)``

runs ``burn_in`` transitions (tuning the adaptive kernel toward its target acceptance:
``adapt=True`` the step size by dual averaging, ``adapt="window"`` Stan's windowed warm-up of
step size and metric; ``adapt_per_chain=True`` one step size per chain), then ``num_steps``
transitions of which every ``thin``-th is kept. Per-chain acceptance rates and divergence
counts are measured after burn-in. ``sample(energy, record.kernel, record, num_steps=...)``
continues a previous run from its final state with its tuned kernel, so burn-in and sampling
can be separate calls (bit for bit the same as one call with the same generator).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.base import ChainState, Kernel, StepInfo, check_start
from ebmlab.samplers.loop import (  # noqa: F401 — run_kernel and friends are re-exported from here
    Callback, ChainDivergedError, KernelRun, check_generator, check_start_energy, compiled_steps, initial_step_sizes,
    run_kernel,
)
from ebmlab.samplers.window_adaptation import WindowAdaptationInfo, step_size_adaptation, window_adaptation


@dataclass
class ChainRecord:
    """The result of :func:`sample`.

    Attributes:
        samples: kept draws, shape ``(num_kept, C, *event_shape)`` where
            ``num_kept = num_steps // thin``.
        energy: their energies, shape ``(num_kept, C)``.
        acceptance_rate: fraction of accepted proposals per chain after burn-in, ``(C,)``.
        divergences: NaN/infinite proposals per chain after burn-in, ``(C,)``.
        final_state: the :class:`ChainState` after the last step.
        kernel: the kernel after adaptation (holds the tuned ``step_size``, a float or one per
            chain ``(C,)``, and the tuned ``metric`` after window adaptation).
        wall_time: seconds spent in the run, burn-in included.
        adaptation: :class:`~ebmlab.samplers.window_adaptation.WindowAdaptationInfo` after
            ``adapt="window"``, else ``None``.
        stats: per-draw statistics of the kept draws, each ``(num_kept, C)``: ``accept_prob``,
            ``diverged`` and the kernel's own (NUTS: ``tree_depth``, ``num_grad_evals``,
            ``energy_error``).
        num_grad_evals: gradient evaluations per chain after burn-in ``(C,)`` when the kernel
            reports them (NUTS), else ``None``.
        compile_time: with ``compile=``, seconds spent on the first call of each new compiled
            graph (compilation, or an inductor-cache load, and one call), part of ``wall_time``.
    """

    samples: torch.Tensor
    energy: torch.Tensor
    acceptance_rate: torch.Tensor
    divergences: torch.Tensor
    final_state: ChainState
    kernel: Kernel
    num_steps: int
    burn_in: int
    thin: int
    wall_time: float
    adaptation: WindowAdaptationInfo | None = None
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    num_grad_evals: torch.Tensor | None = None
    compile_time: float | None = None

    @property
    def num_chains(self) -> int:
        return self.final_state.num_chains

    def to_arviz(self):
        """The draws as an ArviZ object with ``chain``/``draw`` dims and sample stats
        (:func:`ebmlab.diagnostics.to_arviz`; needs ``pip install ebmlab[arviz]``)."""
        from ebmlab.diagnostics import to_arviz

        return to_arviz(self)

    @property
    def step_size(self) -> float | torch.Tensor | None:
        return getattr(self.kernel, "step_size", None)


ADAPT = (True, False, None, "step_size", "window")


def _start(energy: EnergyFn, kernel: Kernel, x0, name: str) -> ChainState:
    """The chain state to start from: ``kernel.init(energy, x0)`` for a tensor (validated there),
    or the final state of a :class:`ChainRecord` / a :class:`ChainState` to continue, validated
    against the kernel (its cached energy and gradient are kept)."""
    if isinstance(x0, ChainRecord):
        x0 = x0.final_state
    if not isinstance(x0, ChainState):
        return kernel.init(energy, x0)  # validates x0 against the kernel and the energy (check_start)
    if kernel.uses_grad and x0.grad is None:
        return dataclasses.replace(kernel.init(energy, x0.x), step=x0.step)
    check_start(kernel, energy, x0.x)
    check_chains = getattr(kernel, "check_chains", None)
    if check_chains is not None:
        check_chains(x0.x)
    return x0


def sample(
    energy: EnergyFn,
    kernel: Kernel,
    x0: torch.Tensor | ChainRecord | ChainState,
    num_steps: int,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
    adapt: bool | str = True,
    target_accept: float | None = None,
    callback: Callback | None = None,
    keep_samples: bool = True,
    adapt_per_chain: bool | None = None,
    metric: str | None = "diag",
    compile=False,
) -> ChainRecord:
    """Run every chain of ``x0`` (shape ``(C, *event)``) with ``kernel``.

    Args:
        energy: ``(C, *event) -> (C,)``.
        kernel: an initialised kernel, e.g. ``MALA(step_size=0.05)``.
        x0: starting states, one per chain (noise, data, zeros, exact draws...); or a
            :class:`ChainRecord` (its ``final_state``) or a :class:`ChainState` to continue
            from — pass ``record.kernel`` as ``kernel`` to keep what burn-in tuned.
        num_steps: transitions after burn-in; every ``thin``-th is kept.
        burn_in: transitions before, during which adaptive kernels are tuned toward
            ``target_accept`` (the kernel's default if None).
        adapt: ``True`` (or ``"step_size"``): dual averaging of the step size; ``"window"``:
            Stan's windowed warm-up of step size and metric
            (:func:`~ebmlab.samplers.window_adaptation.window_adaptation`; HMC, MALA, NUTS);
            ``False``: no tuning.
        adapt_per_chain: tune one step size per chain, each by its own acceptance probability
            (the kernel's ``step_size`` becomes a ``(C,)`` tensor; HMC, MALA, NUTS). ``None``
            (default): the kernel's ``default_adapt_per_chain`` — per chain for NUTS (against
            BlackJAX's vmapped warm-up, ESS per gradient rose from 0.85 to 1.01 of its value on
            Neal's non-centred funnel and from 0.75 / 0.34 to 1.04 / 0.62 (bulk / tail) on the
            centred one; docs/benchmarks.md), one pooled step size for the others.
        metric: with ``adapt="window"``, the metric to learn: ``"diag"`` (default),
            ``"dense"`` (both pooled over chains), ``"diag_per_chain"`` (each chain its own
            diagonal from its own draws, for chains that sit in different regions) or ``None``
            (step size only).
        generator: the source of every random draw; seeded for reproducibility.
        callback: called as ``callback(step, state, info)`` after every transition
            (``step`` counts from 1 over burn-in and sampling together, continuing the
            count of a state passed in).
        keep_samples: set False to keep only the final state (saves memory).
        compile: ``True`` or a :class:`~ebmlab.samplers.compiled_loop.StepCompiler` (its mode,
            ``unroll``, ``on_compile`` callback): ULA, MALA and HMC transitions, burn-in
            adaptation included, run as ``torch.compile`` graphs of the whole transition, the
            same chains as eager to floating-point rounding (``record.compile_time`` says how
            long compiling took). NUTS runs its tree leaf by leaf, each leaf one graph
            (:mod:`~ebmlab.samplers.nuts_compiled`); other kernels raise ``ValueError``.

    Raises:
        TypeError: ``x0`` is not a floating :class:`torch.Tensor`.
        ValueError: bad arguments, a non-finite start, a kernel that does not sample the
            energy's support, an event shape other than ``energy.event_shape``, discrete
            states outside ``{0, ..., K-1}``, a generator on another device than ``x0``.
        ChainDivergedError: a chain's energy became non-finite (names step and chains).

    Everything is checked once, here and in ``kernel.init``, never inside the step loop.
    """
    name = kernel.name or type(kernel).__name__
    if num_steps < 0 or burn_in < 0:
        raise ValueError(f"{name}: num_steps and burn_in must be >= 0, got {num_steps}, {burn_in}")
    if thin < 1:
        raise ValueError(f"{name}: thin must be >= 1, got {thin}")
    if not any(adapt is a or (isinstance(adapt, str) and adapt == a) for a in ADAPT):
        raise ValueError(f"{name}: adapt must be True, False, 'step_size' or 'window', got {adapt!r}")
    if adapt != "window" and metric != "diag":
        raise ValueError(f"{name}: metric={metric!r} needs adapt='window' (got adapt={adapt!r})")
    if adapt_per_chain is None:
        adapt_per_chain = bool(adapt) and getattr(kernel, "default_adapt_per_chain", False)
    if adapt_per_chain and not getattr(kernel, "per_chain_adaptive", False):
        raise ValueError(f"{name}: adapt_per_chain=True needs a kernel with per-chain step sizes (hmc, mala, nuts), "
                         f"got {type(kernel).__name__}")
    if isinstance(x0, torch.Tensor):
        check_generator(generator, x0, name)
    compiled_before = type(kernel).__name__ == "CompiledNUTS"  # the tuned kernel of a sample(compile=True)
    if compiled_before and compile is True:
        compile = kernel.compiler  # its graphs serve this run too
    compiler = _compiler(compile, kernel, name)
    if compiler is not None and not compiler.handles(kernel):  # NUTS: every leaf of its tree compiled
        from ebmlab.samplers.nuts_compiled import compiled_nuts

        kernel = compiled_nuts(kernel, compiler)
    elif compiler is None and compiled_before:  # compile=False means eager leaves, whatever the kernel was
        from ebmlab.samplers.nuts_compiled import eager_nuts

        kernel = eager_nuts(kernel)
    compiled_already = 0.0 if compiler is None else compiler.compile_time

    start = time.perf_counter()
    with compiled_steps(compiler):
        record = _run(energy, kernel, x0, num_steps, burn_in, thin, generator, adapt, target_accept, callback,
                      keep_samples, adapt_per_chain, metric, name)
    record.wall_time = time.perf_counter() - start
    record.compile_time = None if compiler is None else compiler.compile_time - compiled_already
    return record


def _compiler(compile, kernel: Kernel, name: str):
    """The :class:`~ebmlab.samplers.compiled_loop.StepCompiler` of ``sample(compile=...)``, or
    ``None``; for NUTS it holds the compiled leaves (:func:`~ebmlab.samplers.nuts_compiled.compiled_nuts`)."""
    if compile is None or compile is False:
        return None
    from ebmlab.samplers.compiled_loop import COMPILED_KERNELS, StepCompiler

    if compile is True:
        compile = StepCompiler()
    if not isinstance(compile, StepCompiler):
        raise ValueError(f"{name}: compile must be True, False or a StepCompiler, got {type(compile).__name__}")
    if not (type(kernel) in COMPILED_KERNELS or kernel.name == "nuts"):
        raise ValueError(f"{name}: compile=True compiles the transitions of ula, mala and hmc (nuts: each leaf of "
                         f"its tree), got {type(kernel).__name__}; sample it without compile")
    return compile


def _run(energy, kernel, x0, num_steps, burn_in, thin, generator, adapt, target_accept, callback, keep_samples,
         adapt_per_chain, metric, name) -> ChainRecord:
    start = time.perf_counter()
    state = _start(energy, kernel, x0, name)
    check_start_energy(state, name, energy)
    first = state.step + 1
    delta = target_accept or kernel.default_target_accept
    info = None
    if adapt == "window" and burn_in > 0:
        kernel, state, info = window_adaptation(kernel, energy, state, burn_in, generator, metric=metric,
                                                target_accept=delta, per_chain=adapt_per_chain, callback=callback,
                                                first_step=first)
    elif adapt and kernel.adaptive and burn_in > 0:
        warm = step_size_adaptation(kernel, energy, state, burn_in, generator, delta, per_chain=adapt_per_chain,
                                    callback=callback, first_step=first)
        kernel, state = warm.kernel, warm.state
    else:
        warm = run_kernel(kernel, energy, state, burn_in, generator, callback=callback, first_step=first,
                          check_finite=True)
        kernel, state = warm.kernel, warm.state
    main = run_kernel(kernel, energy, state, num_steps, generator, every=thin if keep_samples else 0,
                      callback=callback, first_step=first + burn_in, check_finite=True)
    kernel, state = main.kernel, main.state
    num_chains, event = state.num_chains, tuple(state.x.shape[1:])
    samples = main.x if main.x is not None else state.x.new_zeros((0, num_chains, *event))
    energies = main.energy if main.energy is not None else state.x.new_zeros((0, num_chains))
    return ChainRecord(
        samples=samples,
        energy=energies,
        acceptance_rate=main.accepted / max(num_steps, 1),
        divergences=main.divergences,
        final_state=state,
        kernel=kernel,
        num_steps=num_steps,
        burn_in=burn_in,
        thin=thin,
        wall_time=time.perf_counter() - start,
        adaptation=info,
        stats=main.stats,
        num_grad_evals=main.num_grad_evals,
    )
