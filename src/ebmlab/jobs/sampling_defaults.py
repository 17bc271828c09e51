"""What a sampling job chooses when it is not told: the sampler, the number of steps, the event
shape of an ``--init`` file, the compiled sampler step or energy (:mod:`ebmlab.jobs.sampling` uses them).

The sampler follows the energy's support as ``ebmlab evaluate``'s AIS transitions do (mala for
real, gibbs for binary or categorical; noise-conditional runs: annealed Langevin, see
:mod:`ebmlab.jobs.annealed_sampling`), and each sampler has its own default step count.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from ebmlab.distributed import is_main_process
from ebmlab.jobs.guards import StepCounter, energy_errors
from ebmlab.samplers import Kernel

#: Transitions after burn-in when ``num_steps`` is not given: each sampler's own (NUTS's
#: transitions cost up to 2^depth gradients each); annealed Langevin's is per noise level
#: (:data:`ebmlab.jobs.annealed_sampling.ANNEALED_STEPS`).
DEFAULT_STEPS = {"nuts": 500}
MCMC_STEPS = 1000


def default_sampler(support: str) -> str:
    """The kernel for an energy of ``support`` when none is named: mala (real), gibbs (discrete),
    as ``ebmlab evaluate`` picks its AIS transitions."""
    return "mala" if support == "real" else "gibbs"


def default_steps(sampler: str) -> int:
    """``num_steps`` for ``sampler`` when none is given (:data:`DEFAULT_STEPS`, else 1000)."""
    return DEFAULT_STEPS.get(sampler, MCMC_STEPS)


def init_event_shape(job) -> tuple[int, ...] | None:
    """The event shape of a ``SampleJob``'s ``--init FILE.npy``, for energies that declare none:
    ``(C, *event)`` when its first axis is the number of chains, else the whole shape (one start
    for every chain); ``None`` for ``noise`` or ``zeros``."""
    path = Path(job.init)
    if path.suffix != ".npy" or not path.is_file():
        return None
    from ebmlab.data.files import read_npy

    shape = read_npy(path, f"--init {job.init!r}").shape
    return tuple(shape[1:]) if len(shape) >= 2 and shape[0] == job.num_chains else tuple(shape)


def step_compiler(kernel: Kernel, support: str, mode: str | None = None):
    """The :class:`~ebmlab.samplers.compiled_loop.StepCompiler` of ``--compile`` for ula, mala and
    hmc on a real energy (their whole transition is compiled), else ``None`` (:func:`compiled`
    compiles the energy instead); ``mode`` is ``--compile-mode``."""
    from ebmlab.samplers.compiled_loop import StepCompiler

    if support != "real" or not StepCompiler.handles(kernel):
        if mode is not None:
            raise ValueError(f"--compile-mode {mode} compiles whole transitions of ula, mala or hmc; "
                             f"--sampler {kernel.name} compiles only its energy")
        return None
    return StepCompiler(mode=mode)


def compile_note(compiler) -> str | None:
    """The one line ``--compile`` prints after a run whose transitions were compiled: how long
    the graphs took (torch's inductor cache on disk makes a second run's much shorter)."""
    if compiler is None:
        return None
    graphs = f"{compiler.graphs} graph{'s' if compiler.graphs != 1 else ''}"
    return f"ebmlab: compiling the sampler step with torch.compile ({graphs}) done in {compiler.compile_time:.1f} s"


def compiled(energy: nn.Module, kernel: Kernel, x0: torch.Tensor, support: str) -> nn.Module:
    """``torch.compile`` of ``energy`` (:func:`ebmlab.energy.compile_energy`) for the kernels
    whose transitions are not compiled (nuts, rwmh, discrete kernels), compiled now on ``x0``
    rather than inside the first transition, saying so on standard error (rank 0), with the
    time it took once done."""
    from ebmlab.energy import compile_energy

    say = is_main_process()
    if say:
        print("ebmlab: compiling the energy with torch.compile ... ", end="", file=sys.stderr, flush=True)
    start = time.perf_counter()
    energy = compile_energy(energy)
    try:
        with energy_errors(energy.energy, kernel, StepCounter()):
            energy(x0)
            if support == "real" and kernel.uses_grad:
                energy.value_and_grad(x0)
    except BaseException:
        if say:
            print("failed", file=sys.stderr, flush=True)
        raise
    if say:
        print(f"done in {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    return energy


__all__ = ["DEFAULT_STEPS", "MCMC_STEPS", "compile_note", "compiled", "step_compiler", "default_sampler", "default_steps", "init_event_shape"]

