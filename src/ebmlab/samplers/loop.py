"""The one chain loop, :func:`run_kernel`, that every sampler run in ebmlab goes through.

``run = run_kernel(kernel, energy, state, num_steps, generator, every=0, adaptation=None)``
runs ``num_steps`` transitions ``state, info = kernel.step(energy, state, generator)`` of all
C chains at once, optionally keeping states, tuning the step size by dual averaging, calling a
callback and stopping on a non-finite energy. :func:`~ebmlab.samplers.driver.sample` (burn-in,
thinning, records), window adaptation, contrastive divergence and AIS are built on it.
"""

from __future__ import annotations

import contextlib
import contextvars
from dataclasses import dataclass, field, fields, is_dataclass
from typing import Callable, Iterator

import torch

from ebmlab.energy.base import EnergyFn
from ebmlab.samplers.adaptation import DualAveraging
from ebmlab.samplers.base import ChainState, Kernel, StepInfo

Callback = Callable[[int, ChainState, StepInfo], None]


class ChainDivergedError(RuntimeError):
    """A chain's energy became NaN or infinite during a run that cannot reject it (e.g. ULA)."""

    def __init__(self, step: int, chains: list[int], sampler: str):
        self.step, self.chains = step, chains
        shown = ", ".join(map(str, chains[:10])) + (" ..." if len(chains) > 10 else "")
        super().__init__(
            f"{sampler}: chain(s) {shown} reached a NaN or infinite energy at step {step} "
            f"({len(chains)} chain(s) in all); lower the step size"
        )

def check_generator(generator: torch.Generator | None, x: torch.Tensor, sampler: str) -> None:
    """``ValueError`` unless ``generator`` (when given) draws on ``x``'s device."""
    if generator is None:
        return
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"{sampler}: generator must be a torch.Generator or None, got {type(generator).__name__}")
    g, d = generator.device, x.device
    if g.type != d.type or (g.index is not None and d.index is not None and g.index != d.index):
        raise ValueError(f"{sampler}: the generator is on device {g} but the chains are on {d}; "
                         f"create it with torch.Generator(device=x0.device)")


def check_start_energy(state: ChainState, sampler: str, energy: EnergyFn) -> None:
    """Refuse NaN/infinite starting energies, naming the chains."""
    bad = (~torch.isfinite(state.energy)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{sampler}: the energy ({type(energy).__name__}) is NaN or infinite at the start for "
                         f"chain(s) {bad[:10]}")


@dataclass
class KernelRun:
    """The result of :func:`run_kernel`.

    Attributes:
        state: the chain state after the last transition.
        kernel: the kernel after adaptation (its tuned ``step_size``), else the one given.
        x: states kept every ``every`` steps, ``(S, C, *event)`` with ``S = num_steps // every``;
            ``None`` when ``every == 0``.
        energy: their energies, ``(S, C)``, or ``None``.
        accepted: accepted proposals per chain, ``(C,)`` (float).
        accept_prob: summed acceptance probabilities per chain, ``(C,)``.
        divergences: NaN/infinite proposals per chain, ``(C,)`` (long).
        num_steps: transitions run.
        stats: per-draw statistics at the kept steps, each ``(S, C)``: ``accept_prob``,
            ``diverged``, and whatever extra per-chain fields the kernel's step info carries
            (NUTS: ``tree_depth``, ``num_grad_evals``, ``energy_error``); empty when ``every == 0``.
        num_grad_evals: gradient evaluations per chain over all steps, ``(C,)``, when the
            kernel reports them (NUTS), else ``None``.
    """

    state: ChainState
    kernel: Kernel
    x: torch.Tensor | None
    energy: torch.Tensor | None
    accepted: torch.Tensor
    accept_prob: torch.Tensor
    divergences: torch.Tensor
    num_steps: int
    stats: dict[str, torch.Tensor] = field(default_factory=dict)
    num_grad_evals: torch.Tensor | None = None

    @property
    def mean_accept_prob(self) -> float:
        """The acceptance probability averaged over chains and steps (1.0 for zero steps)."""
        return float(self.accept_prob.mean()) / self.num_steps if self.num_steps else 1.0


#: the compiled-step runner of the enclosing :func:`compiled_steps`, if any
_STEP_RUNNER: contextvars.ContextVar = contextvars.ContextVar("ebmlab_step_runner", default=None)


@contextlib.contextmanager
def compiled_steps(runner) -> Iterator[None]:
    """Route every :func:`run_kernel` inside the block whose kernel ``runner.handles`` through
    ``runner.run`` (a :class:`~ebmlab.samplers.compiled_loop.StepCompiler`), burn-in
    adaptation included; ``runner=None`` changes nothing."""
    token = _STEP_RUNNER.set(runner)
    try:
        yield
    finally:
        _STEP_RUNNER.reset(token)


def initial_step_sizes(kernel: Kernel, state: ChainState, per_chain: bool):
    """The step size dual averaging starts from: the kernel's (a float), or with ``per_chain``
    a ``(C,)`` float64 tensor on the chains' device (the kernel's float repeated, or its tensor)."""
    step = kernel.step_size
    if not per_chain:
        return float(step) if not isinstance(step, torch.Tensor) else step
    if isinstance(step, torch.Tensor):
        return step.detach().to(dtype=torch.float64, device=state.x.device).expand(state.num_chains).clone()
    return torch.full((state.num_chains,), float(step), dtype=torch.float64, device=state.x.device)


def run_kernel(kernel: Kernel, energy: EnergyFn, state: ChainState, num_steps: int,
               generator: torch.Generator | None, *, every: int = 0, adaptation: DualAveraging | None = None,
               per_chain: bool = False, callback: Callback | None = None, first_step: int = 1,
               check_finite: bool = False) -> KernelRun:
    """The one chain loop: ``num_steps`` transitions ``state, info = kernel.step(energy, state, generator)``.

    Every sampler run in ebmlab goes through here (:func:`sample`, contrastive-divergence
    chains, chain snapshots, AIS transitions). Options:

    * ``every > 0`` keeps ``x`` and ``E(x)`` after steps ``every, 2·every, ...``;
    * ``adaptation`` tunes ``step_size`` by dual averaging on the chains' mean acceptance
      probability after each step, ending on the averaged step size ``ε̄`` (the kernel must be
      adaptive); with ``per_chain=True`` each chain's own acceptance probability tunes its own
      step size (a ``(C,)`` tensor; kernels with ``per_chain_adaptive``);
    * ``callback(step, state, info)`` after each step, with ``step`` counted from ``first_step``;
    * ``check_finite`` raises :class:`ChainDivergedError` naming the step and the chains as
      soon as a chain's energy is NaN or infinite.

    Inside :func:`compiled_steps` (``sample(..., compile=True)``), ULA, MALA and HMC runs go
    through the compiled loop instead (:mod:`ebmlab.samplers.compiled_loop`): same arguments,
    same result, the same chains to floating-point rounding.
    """
    runner = _STEP_RUNNER.get()
    if runner is not None and num_steps > 0 and runner.handles(kernel):
        return runner.run(kernel, energy, state, num_steps, generator, every=every, adaptation=adaptation,
                          per_chain=per_chain, callback=callback, first_step=first_step, check_finite=check_finite)
    name = kernel.name or type(kernel).__name__
    check_generator(generator, state.x, name)
    num_chains = state.num_chains
    device = state.x.device
    accepted = torch.zeros(num_chains, device=device)
    accept_prob = torch.zeros(num_chains, device=device)
    divergences = torch.zeros(num_chains, dtype=torch.long, device=device)
    kept_x: list[torch.Tensor] = []
    kept_e: list[torch.Tensor] = []
    kept_stats: dict[str, list[torch.Tensor]] = {}
    grad_evals = None
    da_state = adaptation.init(initial_step_sizes(kernel, state, per_chain)) if adaptation is not None else None
    for i in range(1, num_steps + 1):
        state, info = kernel.step(energy, state, generator)
        if check_finite:
            bad = ~torch.isfinite(state.energy)
            if bad.any():
                raise ChainDivergedError(first_step + i - 1, bad.nonzero().flatten().tolist(), name)
        accepted += info.accepted
        accept_prob += info.accept_prob.to(accept_prob.dtype)
        divergences += info.diverged
        if da_state is not None:
            stat = info.accept_prob.detach().to(torch.float64) if per_chain else float(info.accept_prob.mean())
            da_state = adaptation.update(da_state, stat)
            kernel = kernel.with_step_size(da_state.final_step_size if i == num_steps else da_state.step_size)
        extra = per_draw_fields(info)
        if "num_grad_evals" in extra:
            grad_evals = info.num_grad_evals if grad_evals is None else grad_evals + info.num_grad_evals
        if every and i % every == 0:
            kept_x.append(state.x)
            kept_e.append(state.energy)
            for key in ("accept_prob", "diverged", *extra):
                kept_stats.setdefault(key, []).append(getattr(info, key))
        if callback is not None:
            callback(first_step + i - 1, state, info)
    x = torch.stack(kept_x) if kept_x else (state.x.new_zeros((0, *state.x.shape)) if every else None)
    e = torch.stack(kept_e) if kept_e else (state.energy.new_zeros((0, num_chains)) if every else None)
    stats = {key: torch.stack(values) for key, values in kept_stats.items()}
    return KernelRun(state, kernel, x, e, accepted, accept_prob, divergences, num_steps, stats, grad_evals)


_BASE_FIELDS = frozenset(f.name for f in fields(StepInfo))


def per_draw_fields(info: StepInfo) -> tuple[str, ...]:
    """The extra per-chain ``(C,)`` tensor fields of a kernel's step info beyond :class:`StepInfo`."""
    cls = type(info)
    cached = _EXTRA_FIELDS.get(cls)
    if cached is None:
        cached = tuple(f.name for f in fields(info) if f.name not in _BASE_FIELDS) if is_dataclass(info) else ()
        _EXTRA_FIELDS[cls] = cached
    num_chains = info.accepted.shape[0]
    return tuple(k for k in cached if isinstance(getattr(info, k), torch.Tensor)
                 and getattr(info, k).shape == (num_chains,))


_EXTRA_FIELDS: dict[type, tuple[str, ...]] = {}
