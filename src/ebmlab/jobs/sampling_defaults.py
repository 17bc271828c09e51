"""What a sampling job chooses when it is not told: the sampler, the number of steps, the event
shape of an ``--init`` file, the compiled sampler step or energy (:mod:`ebmlab.jobs.sampling` uses them).

The sampler follows the energy's support as ``ebmlab evaluate``'s AIS transitions do (mala for
real, gibbs for binary or categorical; noise-conditional runs: annealed Langevin, see
:mod:`ebmlab.jobs.annealed_sampling`), and each sampler has its own default step count. :func:`check_sampler_options` and
:func:`check_sampler_support` refuse, in option terms, a sampler the options or the energy cannot
use, naming the samplers (or ``--base`` samplers for ``--sampler pt``) that would do.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from torch import nn

from ebmlab.distributed import is_main_process
from ebmlab.jobs.guards import StepCounter, energy_errors
from ebmlab.samplers import Kernel, available, get_kernel_class, kernel_options

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


#: Kernels that parallel tempering cannot run at every temperature: itself, and block Gibbs, whose
#: exact conditionals a tempered energy does not have.
NOT_TEMPERED = ("pt", "block_gibbs")


def _listed(names: list[str], option: str = "--sampler") -> str:
    return f"{option} " + (", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else names[0])


def metric_samplers() -> list[str]:
    """The samplers ``--metric`` applies to: those whose kernel takes a ``metric`` (hmc, mala, nuts)."""
    return [name for name in available() if "metric" in kernel_options(name)]


def base_samplers() -> list[str]:
    """The samplers ``--sampler pt`` can run at every temperature (``--base``)."""
    return [name for name in available() if name not in NOT_TEMPERED]


def check_sampler_options(sampler: str, metric: str | None, base: str | None) -> None:
    """Refuse ``--metric`` for a sampler without a mass matrix and a ``--base`` that parallel
    tempering cannot run, each in one line naming the option and the samplers that take it."""
    if metric is not None and sampler not in metric_samplers():
        raise ValueError(f"--metric {metric} applies to {_listed(metric_samplers())} (a mass matrix learned "
                         f"during burn-in), not --sampler {sampler}; drop --metric")
    if sampler != "pt" or base is None:
        return
    if base == "block_gibbs":
        raise ValueError("--base block_gibbs: block Gibbs draws from the energy's own conditionals, which a tempered "
                         "energy does not have; use --base gibbs or gwg")
    if base == "pt":
        raise ValueError(f"--base pt: parallel tempering cannot run itself at every temperature; choose "
                         f"{_listed(base_samplers(), '--base')}")
    if base not in base_samplers():
        raise ValueError(f"--base {base!r} is not a sampler; choose "
                         f"{_listed(base_samplers(), '--base')}")


def _samplers_for(kind: str, energy: nn.Module, tempered: bool) -> list[str]:
    """The registered samplers of states of ``kind`` that can run on ``energy`` (block Gibbs only on
    two-layer models; under parallel tempering neither it nor pt), the default first."""
    two_layer = hasattr(energy, "sample_hidden") and hasattr(energy, "sample_visible")
    names = [name for name in available() if name != "pt" and kind in get_kernel_class(name).supports
             and (name != "block_gibbs" or (two_layer and not tempered))]
    first = default_sampler(kind)
    return sorted(names, key=lambda name: name != first)


def check_sampler_support(sampler: str, base: str | None, kernel: Kernel, energy: nn.Module, spec: str,
                          support: str) -> None:
    """Refuse a kernel that does not sample states of the energy's ``support``, naming the
    ``--sampler`` (for ``pt``: ``--base``) choices that do; :func:`ebmlab.samplers.sample` checks
    the same for library callers, in the library's terms."""
    if support in kernel.supports:
        return
    tempered = sampler == "pt"
    given = f"--sampler pt runs --base {base or 'mala'}, which" if tempered else f"--sampler {sampler}"
    choices = _samplers_for(support, energy, tempered)
    advice = f"use {_listed(choices, '--base' if tempered else '--sampler')}" if choices else "no sampler does"
    raise ValueError(f"{given} samples {' or '.join(kernel.supports)} states, but energy {spec!r} has support "
                     f"{support}; {advice}")


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


__all__ = ["DEFAULT_STEPS", "MCMC_STEPS", "NOT_TEMPERED", "base_samplers", "check_sampler_options",
           "check_sampler_support", "metric_samplers", "compile_note", "compiled", "step_compiler", "default_sampler", "default_steps", "init_event_shape"]

