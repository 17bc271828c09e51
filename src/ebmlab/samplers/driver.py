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

from ebmlab.energy.base import EnergyFn, check_energy_output
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


def validate_start(energy: EnergyFn, x0: torch.Tensor, sampler: str) -> None:
    """Refuse an empty batch or NaN/infinite starting energies, naming the chains."""
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"{sampler}: x0 must have shape (num_chains >= 1, *event_shape), got {tuple(x0.shape)}")
    if not torch.isfinite(x0).all():
        raise ValueError(f"{sampler}: x0 contains NaN or infinite values")
    with torch.no_grad():
        e = check_energy_output(energy(x0), x0, where=f"{sampler}: energy at x0")
    bad = (~torch.isfinite(e)).nonzero().flatten().tolist()
    if bad:
        raise ValueError(f"{sampler}: the energy is NaN or infinite at the start for chain(s) {bad[:10]}")


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
    progress: bool = False,
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
        progress: show a tqdm progress bar.
        keep_samples: set False to keep only the final state (saves memory).

    Raises:
        ValueError: bad arguments or a non-finite start.
        ChainDivergedError: a chain's energy became non-finite (names step and chains).
    """
    name = kernel.name or type(kernel).__name__
    if num_steps < 0 or burn_in < 0:
        raise ValueError(f"{name}: num_steps and burn_in must be >= 0, got {num_steps}, {burn_in}")
    if thin < 1:
        raise ValueError(f"{name}: thin must be >= 1, got {thin}")
    validate_start(energy, x0, name)

    start = time.perf_counter()
    state = kernel.init(energy, x0)
    adaptation = None
    if adapt and kernel.adaptive and burn_in > 0:
        adaptation = DualAveraging(target_accept=target_accept or kernel.default_target_accept)
        da_state = adaptation.init(kernel.step_size)

    num_chains = x0.shape[0]
    accepted = torch.zeros(num_chains, device=x0.device)
    divergences = torch.zeros(num_chains, dtype=torch.long, device=x0.device)
    kept_x: list[torch.Tensor] = []
    kept_e: list[torch.Tensor] = []

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=burn_in + num_steps, desc=name, unit="step", leave=False)
    try:
        for t in range(1, burn_in + num_steps + 1):
            state, info = kernel.step(energy, state, generator)
            bad = ~torch.isfinite(state.energy)
            if bad.any():
                raise ChainDivergedError(t, bad.nonzero().flatten().tolist(), name)
            if t <= burn_in:
                if adaptation is not None:
                    da_state = adaptation.update(da_state, float(info.accept_prob.mean()))
                    kernel = kernel.with_step_size(
                        da_state.final_step_size if t == burn_in else da_state.step_size
                    )
            else:
                accepted += info.accepted
                divergences += info.diverged
                if keep_samples and (t - burn_in) % thin == 0:
                    kept_x.append(state.x)
                    kept_e.append(state.energy)
            if callback is not None:
                callback(t, state, info)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    event = tuple(x0.shape[1:])
    samples = torch.stack(kept_x) if kept_x else x0.new_zeros((0, num_chains, *event))
    energies = torch.stack(kept_e) if kept_e else x0.new_zeros((0, num_chains))
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
