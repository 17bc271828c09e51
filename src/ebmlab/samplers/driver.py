"""The run driver: burn-in with step-size adaptation, then kept draws with thinning.

``record = sample(energy, kernel, x0, num_steps=1000, burn_in=500, thin=1, generator=g)``

runs ``burn_in`` transitions (tuning ``step_size`` toward the kernel's target acceptance when
it is adaptive and ``adapt=True``), then ``num_steps`` transitions of which every ``thin``-th
is kept. Per-chain acceptance rates and divergence counts are measured after burn-in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

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
        kernel: the kernel after adaptation (holds the tuned ``step_size``).
        wall_time: seconds spent in the run, burn-in included.
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

    @property
    def num_chains(self) -> int:
        return self.final_state.num_chains

    @property
    def step_size(self) -> float | None:
        return getattr(self.kernel, "step_size", None)


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
    """

    state: ChainState
    kernel: Kernel
    x: torch.Tensor | None
    energy: torch.Tensor | None
    accepted: torch.Tensor
    accept_prob: torch.Tensor
    divergences: torch.Tensor
    num_steps: int

    @property
    def mean_accept_prob(self) -> float:
        """The acceptance probability averaged over chains and steps (1.0 for zero steps)."""
        return float(self.accept_prob.mean()) / self.num_steps if self.num_steps else 1.0


def run_kernel(kernel: Kernel, energy: EnergyFn, state: ChainState, num_steps: int,
               generator: torch.Generator | None, *, every: int = 0, adaptation: DualAveraging | None = None,
               callback: Callback | None = None, first_step: int = 1, check_finite: bool = False) -> KernelRun:
    """The one chain loop: ``num_steps`` transitions ``state, info = kernel.step(energy, state, generator)``.

    Every sampler run in ebmlab goes through here (:func:`sample`, contrastive-divergence
    chains, chain snapshots, AIS transitions). Options:

    * ``every > 0`` keeps ``x`` and ``E(x)`` after steps ``every, 2·every, ...``;
    * ``adaptation`` tunes ``step_size`` by dual averaging on the chains' mean acceptance
      probability after each step, ending on the averaged step size ``ε̄`` (the kernel must be
      adaptive);
    * ``callback(step, state, info)`` after each step, with ``step`` counted from ``first_step``;
    * ``check_finite`` raises :class:`ChainDivergedError` naming the step and the chains as
      soon as a chain's energy is NaN or infinite.
    """
    name = kernel.name or type(kernel).__name__
    check_generator(generator, state.x, name)
    num_chains = state.num_chains
    device = state.x.device
    accepted = torch.zeros(num_chains, device=device)
    accept_prob = torch.zeros(num_chains, device=device)
    divergences = torch.zeros(num_chains, dtype=torch.long, device=device)
    kept_x: list[torch.Tensor] = []
    kept_e: list[torch.Tensor] = []
    da_state = adaptation.init(kernel.step_size) if adaptation is not None else None
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
            da_state = adaptation.update(da_state, float(info.accept_prob.mean()))
            kernel = kernel.with_step_size(da_state.final_step_size if i == num_steps else da_state.step_size)
        if every and i % every == 0:
            kept_x.append(state.x)
            kept_e.append(state.energy)
        if callback is not None:
            callback(first_step + i - 1, state, info)
    x = torch.stack(kept_x) if kept_x else (state.x.new_zeros((0, *state.x.shape)) if every else None)
    e = torch.stack(kept_e) if kept_e else (state.energy.new_zeros((0, num_chains)) if every else None)
    return KernelRun(state, kernel, x, e, accepted, accept_prob, divergences, num_steps)


def sample(
    energy: EnergyFn,
    kernel: Kernel,
    x0: torch.Tensor,
    num_steps: int,
    burn_in: int = 0,
    thin: int = 1,
    generator: torch.Generator | None = None,
    adapt: bool = True,
    target_accept: float | None = None,
    callback: Callback | None = None,
    keep_samples: bool = True,
) -> ChainRecord:
    """Run every chain of ``x0`` (shape ``(C, *event)``) with ``kernel``.

    Args:
        energy: ``(C, *event) -> (C,)``.
        kernel: an initialised kernel, e.g. ``MALA(step_size=0.05)``.
        x0: starting states, one per chain (noise, data, zeros, exact draws...).
        num_steps: transitions after burn-in; every ``thin``-th is kept.
        burn_in: transitions before, during which adaptive kernels tune ``step_size``
            by dual averaging toward ``target_accept`` (the kernel's default if None).
        generator: the source of every random draw; seeded for reproducibility.
        callback: called as ``callback(step, state, info)`` after every transition
            (``step`` counts from 1 over burn-in and sampling together).
        keep_samples: set False to keep only the final state (saves memory).

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
    if isinstance(x0, torch.Tensor):
        check_generator(generator, x0, name)

    start = time.perf_counter()
    state = kernel.init(energy, x0)  # validates x0 against the kernel and the energy (check_start)
    check_start_energy(state, name, energy)
    adaptation = None
    if adapt and kernel.adaptive and burn_in > 0:
        adaptation = DualAveraging(target_accept=target_accept or kernel.default_target_accept)
    warm = run_kernel(kernel, energy, state, burn_in, generator, adaptation=adaptation, callback=callback,
                      check_finite=True)
    main = run_kernel(warm.kernel, energy, warm.state, num_steps, generator, every=thin if keep_samples else 0,
                      callback=callback, first_step=burn_in + 1, check_finite=True)
    kernel, state = main.kernel, main.state
    num_chains = x0.shape[0]
    event = tuple(x0.shape[1:])
    samples = main.x if main.x is not None else x0.new_zeros((0, num_chains, *event))
    energies = main.energy if main.energy is not None else x0.new_zeros((0, num_chains))
    accepted, divergences = main.accepted, main.divergences
    return ChainRecord(
        samples=samples,
        energy=energies,
        acceptance_rate=accepted / max(num_steps, 1),
        divergences=divergences,
        final_state=state,
        kernel=kernel,
        num_steps=num_steps,
        burn_in=burn_in,
        thin=thin,
        wall_time=time.perf_counter() - start,
    )
