"""A sampling job from options: resolve the energy, start the chains, run, save, summarise.

``ebmlab sample`` is a thin wrapper around :func:`run_sampling_job`; Python users and the
distributed code can call the same pieces::

    job = SampleJob(energy="gmm8", sampler="mala", num_chains=64, num_steps=1000, burn_in=500,
                    out="samples.npz")
    result = run_sampling_job(job)          # writes samples.npz (atomically)
    print(format_result(result))            # ebmlab.diagnostics.format_summary, speed, files

:func:`prepare` checks the options, the output paths and the energy SPEC (see
:mod:`ebmlab.jobs.specs`) and builds the initial states; :func:`ebmlab.samplers.sample` checks
the start against the kernel and the energy (support, states, finite energies) before its first
transition. Both raise ``ValueError`` with a one-line message before any sampling starts.
A chain whose energy becomes NaN during the run raises
:class:`~ebmlab.samplers.driver.ChainDivergedError` (naming the step and the chains), and no
output file is written then.

Output files (``--out``) are written atomically by :func:`~ebmlab.jobs.sample_files.save_record`
(re-exported here); :mod:`ebmlab.jobs.sample_files` describes the ``.npz`` and ``.nc`` layouts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebmlab.jobs.guards import (  # noqa: F401 - the guards of every job, re-exported here
    OS_REASONS, STATE_COPIES, StepCounter, check_path_names, check_sizes, energy_errors,
    format_bytes, is_sample_file, memory_available, output_errors,
)
from ebmlab.diagnostics.export import INSTALL_HINT, arviz_available
from ebmlab.distributed import is_main_process, resolve_device
from ebmlab.jobs.progress import progress_bar
from ebmlab.samplers import ChainRecord, Kernel, get_kernel_class, kernel_options, make_kernel, sample
from ebmlab.jobs.specs import resolve_energy, support_of
from ebmlab.jobs.sample_files import (  # noqa: F401 - re-exported
    FIGURE_SUFFIXES, check_figure_path, check_output_file, check_outputs, check_writable, save_netcdf, save_record,
)
from ebmlab.jobs.sampling_defaults import (
    check_sampler_options, check_sampler_support, compile_note, compiled, default_sampler, default_steps,
    init_event_shape, step_compiler,
)
from ebmlab.jobs.threads import lean_threads

INITS = ("noise", "zeros")
_KERNEL_ADVICE = re.compile(r"use an? \w+ kernel \(([^)]*)\)")
SUMMARY_DIMS = 4


@dataclass(frozen=True)
class SampleJob:
    """Options of one sampling job (those of ``ebmlab sample``). ``step_size=None`` keeps the
    kernel's default; ``init`` is ``"noise"``, ``"zeros"`` or a path to a ``.npy`` file.
    ``max_tree_depth``, ``robust_uturn``: NUTS's; ``metric``: ``"diag"``/``"dense"``/``"diag_per_chain"`` learns a mass matrix during
    burn-in (window adaptation; hmc, mala, nuts); ``base``, ``num_temperatures``,
    ``max_temperature``: parallel tempering's (``sampler="pt"``; the ladder adapts during burn-in).
    ``plot``, ``plot_chains``: pictures of the samples and of the chains over time (``.png``, ``.pdf``
    or ``.svg``); every output is checked before the energy is loaded (:func:`check_outputs`).
    ``sampler=None``: :func:`default_sampler` of the energy's support; ``num_steps=None``:
    :func:`default_steps` of the sampler. ``support``: ``binary`` or ``categorical:K`` for an
    energy that declares none; ``lean_threads``: set torch's thread count from the problem size
    (:func:`ebmlab.jobs.threads.lean_threads`)."""

    energy: str
    sampler: str | None
    out: str
    num_chains: int = 16
    num_steps: int | None = None
    burn_in: int = 500
    thin: int = 1
    step_size: float | None = None
    num_leapfrog: int = 10
    seed: int = 0
    init: str = "noise"
    device: str = "cpu"
    compile: bool = False
    compile_mode: str | None = None
    event_shape: tuple[int, ...] | None = None
    target_accept: float | None = None
    plot: str | None = None
    plot_chains: str | None = None
    progress: bool = False
    max_tree_depth: int | None = None
    robust_uturn: bool | None = None
    metric: str | None = None
    base: str | None = None
    num_temperatures: int | None = None
    max_temperature: float | None = None
    support: str | None = None
    lean_threads: bool = False


@dataclass
class PreparedJob:
    """Everything needed to run: the energy on its device, the kernel, the start ``x0``
    ``(C, *event)`` and the generator that every random draw of the job uses."""

    job: SampleJob
    energy: nn.Module
    event_shape: tuple[int, ...]
    support: str
    kernel: Kernel
    x0: torch.Tensor
    generator: torch.Generator
    device: torch.device
    compiler: object | None = None  # the StepCompiler of --compile for ula, mala and hmc


@dataclass
class SampleResult:
    """A finished job: the driver's record and the files written."""

    prepared: PreparedJob
    record: ChainRecord
    out: Path
    plot: Path | None
    plot_chains: Path | None = None


def in_option_terms(message: str) -> str:
    """A library error in ``ebmlab sample``'s terms: the samplers' advice ``use a binary kernel
    (gibbs, metropolis, ...)`` becomes ``use --sampler gibbs, metropolis, ...``; a score model's
    ``annealed Langevin (ebmlab.samplers.annealed)`` becomes ``--sampler annealed``."""
    message = message.replace("annealed Langevin (ebmlab.samplers.annealed)", "annealed Langevin (--sampler annealed)")
    return _KERNEL_ADVICE.sub(r"use --sampler \1", message)


def validate(job: SampleJob) -> None:
    """Check the numeric and choice options of ``job`` (raises ``ValueError``); a ``None``
    sampler or step count (chosen later, from the energy) is checked once it is chosen."""
    if job.sampler is not None:
        get_kernel_class(job.sampler)  # unknown sampler -> ValueError listing the known ones
    for name, value, low in (("--chains", job.num_chains, 1), ("--steps", job.num_steps, 1),
                             ("--burn-in", job.burn_in, 0), ("--thin", job.thin, 1), ("--leapfrog", job.num_leapfrog, 1)):
        if value is not None and int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if job.num_steps is not None and job.thin > job.num_steps:
        raise ValueError(f"--thin {job.thin} is larger than --steps {job.num_steps}; no draw would be kept")
    if job.step_size is not None and not (math.isfinite(job.step_size) and job.step_size > 0):
        raise ValueError(f"--step-size must be a finite number > 0, got {job.step_size}")
    largest = torch.finfo(torch.get_default_dtype()).max
    if job.step_size is not None and job.step_size > largest:
        raise ValueError(f"--step-size {job.step_size:g} overflows {torch.get_default_dtype()} (at most {largest:.3g})")
    if not 0 <= int(job.seed) < 2**64:
        raise ValueError(f"--seed must be in [0, 2**64), got {job.seed}")
    if job.target_accept is not None and not (0 < job.target_accept < 1):
        raise ValueError(f"--target-accept must be in (0, 1), got {job.target_accept}")
    if job.sampler is None:
        return
    if job.max_tree_depth is not None and job.sampler != "nuts":
        raise ValueError(f"--max-tree-depth applies to --sampler nuts, not {job.sampler}")
    if job.robust_uturn is not None and job.sampler != "nuts":
        flag = "--robust-uturn" if job.robust_uturn else "--no-robust-uturn"
        raise ValueError(f"{flag} applies to --sampler nuts, not {job.sampler}")
    pt_given = [o for o, v in (("--base", job.base), ("--temperatures", job.num_temperatures),
                               ("--max-temperature", job.max_temperature)) if v is not None]
    if pt_given and job.sampler != "pt":
        raise ValueError(f"{', '.join(pt_given)} appl{'ies' if len(pt_given) == 1 else 'y'} to --sampler pt, "
                         f"not {job.sampler}")
    check_sampler_options(job.sampler, job.metric, job.base)
    if job.metric is not None and job.burn_in == 0:
        raise ValueError(f"--metric {job.metric} is learned during burn-in; give --burn-in > 0")
    if Path(job.out).suffix == ".nc" and not arviz_available():
        raise ValueError(f"--out {job.out}: writing netCDF needs ArviZ; {INSTALL_HINT} (or write a .npz)")


def initial_states(job: SampleJob, event_shape: tuple[int, ...], support: str, num_states: int,
                   generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """``x0`` of shape ``(C, *event)``: standard normal (real) or uniform states (discrete)
    for ``noise``; zeros; or a ``.npy`` file of shape ``(C, *event)`` or ``event`` (broadcast)."""
    shape = (job.num_chains, *event_shape)
    dtype = torch.get_default_dtype()
    if job.init == "noise":
        if support == "real":
            return torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return torch.randint(0, num_states, shape, generator=generator, device=device).to(dtype)
    if job.init == "zeros":
        return torch.zeros(shape, dtype=dtype, device=device)
    path = Path(job.init)
    if path.suffix != ".npy" or not path.is_file():
        raise FileNotFoundError(f"--init {job.init!r}: expected noise, zeros or an existing FILE.npy")
    from ebmlab.data.files import read_npy

    arr = raw = read_npy(path, f"--init {job.init!r}")  # a ValueError naming the option and what the file is
    if arr.shape == tuple(event_shape):
        arr = np.broadcast_to(arr, shape)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"--init {job.init!r}: expected a real array of shape {shape} or {tuple(event_shape)}, "
                         f"got {arr.dtype} {arr.shape}")
    bad = int(raw.size - np.count_nonzero(np.isfinite(raw)))
    if bad:
        raise ValueError(f"--init {job.init!r}: {bad} of {raw.size} values are NaN or infinite; give finite "
                         f"starting states")
    # discrete states in 0..K-1 are checked once, by ebmlab.samplers.sample
    return torch.as_tensor(np.array(arr, dtype=np.float64), dtype=dtype, device=device)


def _leapfrog(name: str, job: SampleJob) -> dict:
    """``--leapfrog`` has a default, for the kernels that take it."""
    return {"num_leapfrog": job.num_leapfrog} if "num_leapfrog" in kernel_options(name) else {}


def kernel_arguments(job: SampleJob) -> dict:
    """The hyperparameters ``make_kernel(job.sampler, ...)`` gets; for ``pt`` the base kernel is
    built here (with ``--leapfrog``) and the ladder adapts over the burn-in."""
    options = {"step_size": job.step_size, **_leapfrog(job.sampler, job), "max_tree_depth": job.max_tree_depth,
               "robust_uturn": job.robust_uturn}
    if job.sampler == "pt":
        base = job.base or "mala"
        options.update(base=make_kernel(base, **_leapfrog(base, job)), num_temperatures=job.num_temperatures,
                       max_temperature=job.max_temperature, ladder_burn_in=job.burn_in)
    return options


def sampling_options(job: SampleJob) -> dict:
    """The adaptation arguments of :func:`ebmlab.samplers.sample` for ``job``: dual averaging of the
    step size, or with ``metric`` Stan's window adaptation of step size and mass matrix."""
    if job.metric is None:
        return {"adapt": True}
    return {"adapt": "window", "metric": job.metric}


def prepare(job: SampleJob) -> PreparedJob:
    """Validate ``job`` and build energy, kernel, ``x0`` and generator; nothing is sampled yet.

    The start itself (finite, of the energy's support, finite energies) and the kernel's match
    to the energy's support are checked once, by :func:`ebmlab.samplers.sample`, before its
    first transition; :func:`in_option_terms` phrases those errors for the command line.
    """
    validate(job)
    check_outputs(job.out, job.plot, job.plot_chains)
    device = resolve_device(job.device, what="--device")

    extras = {"support": job.support} if job.support is not None else {}  # keyword arguments only where used
    if Path(job.init).suffix == ".npy":
        extras["shape_from"] = lambda: init_event_shape(job)
    energy, event_shape, support = resolve_energy(job.energy, job.event_shape, **extras)
    if job.sampler is None or job.num_steps is None:  # the defaults of the energy's support and the sampler
        sampler = job.sampler or default_sampler(support)
        job = dataclasses.replace(job, sampler=sampler, num_steps=job.num_steps or default_steps(sampler))
        validate(job)
    check_sizes(job.num_chains, job.num_steps, job.thin, tuple(event_shape), device, job.out)
    if job.lean_threads:
        lean_threads(job.num_chains, energy, event_shape, device)
    _, num_states = support_of(energy)
    energy = energy.to(device).eval()
    energy.requires_grad_(False)
    generator = torch.Generator(device=device).manual_seed(int(job.seed))
    x0 = initial_states(job, event_shape, support, num_states, generator, device)
    kernel = make_kernel(job.sampler, **kernel_arguments(job))
    check_sampler_support(job.sampler, job.base, kernel, energy, job.energy, support)
    compiler = step_compiler(kernel, support, job.compile_mode) if job.compile else None
    if compiler is not None:
        compiler.check(x0, "--compile-mode")
    elif job.compile:
        energy = compiled(energy, kernel, x0, support)
    return PreparedJob(job, energy, tuple(event_shape), support, kernel, x0, generator, device, compiler)


def metadata(prepared: PreparedJob, record: ChainRecord | None = None) -> dict:
    """The job's options and (when ``record`` is given) its results, as JSON-able values."""
    kernel = prepared.kernel if record is None else record.kernel
    meta = metadata_of(prepared.job, prepared.event_shape, prepared.support, repr(kernel))
    if record is not None:
        step = record.step_size  # a float, or one per chain (a (C,) tensor) when tuned per chain
        meta.update(step_size=step.tolist() if isinstance(step, torch.Tensor) else step, wall_time=record.wall_time,
                    num_kept=int(record.samples.shape[0]), divergences=int(record.divergences.sum()))
        if record.compile_time is not None:
            meta["compile_time"] = record.compile_time
    return meta


def metadata_of(job: SampleJob, event_shape: tuple[int, ...], support: str, kernel: str) -> dict:
    """The options of ``job`` as JSON-able values (``step_size`` as ``initial_step_size``), with
    the ebmlab version, the event shape, the support and a description of the kernel."""
    options = dataclasses.asdict(job)
    options.pop("progress")
    options["initial_step_size"] = options.pop("step_size")
    options["event_shape"] = list(event_shape)
    return {"ebmlab_version": _version(), **options, "support": support, "kernel": kernel}


def _version() -> str:
    from importlib.metadata import version

    return version("ebmlab")


@contextlib.contextmanager
def subnormals_flushed(device: torch.device):
    """Flush subnormal floats to zero on the CPU for the block (``torch.set_flush_denormal``),
    then restore the default. Chains that wander where an activation's ``exp`` underflows (a
    SiLU MLP's tails) otherwise compute on subnormals, which the CPU handles in microcode:
    measured, ``MLPEnergy(2, (128, 128))`` at 1,024 chains after step-size adaptation, one
    forward+backward took 1.9-2.2x as long as at the start (MALA 2.1x the floor, HMC 2.5x per
    gradient), and 0.75-1.1x with subnormals flushed (MALA 1.04x, HMC 1.18x). Values below
    1.2e-38 (float32) become 0, which no energy or acceptance ratio resolves anyway. The flag
    is per thread: torch's intra-op worker threads keep theirs."""
    flush = device.type == "cpu" and torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flush:
            torch.set_flush_denormal(False)


def run_sampling_job(job: SampleJob) -> SampleResult:
    """Prepare, sample, write ``job.out`` (and ``job.plot``), and return the result.

    Raises ``ValueError``/``FileNotFoundError``/``PermissionError`` on bad input before
    sampling, and :class:`~ebmlab.samplers.driver.ChainDivergedError` when a chain's energy turns
    NaN or infinite; no output file is written in either case.
    """
    prepared = prepare(job)
    job = prepared.job  # with the sampler and steps chosen for the energy
    steps = StepCounter()
    with progress_bar(job.burn_in + job.num_steps, prepared.kernel.name, job.progress) as advance, \
            energy_errors(prepared.energy, prepared.kernel, steps), subnormals_flushed(prepared.device):
        record = sample(prepared.energy, prepared.kernel, prepared.x0, num_steps=job.num_steps, burn_in=job.burn_in,
                        thin=job.thin, generator=prepared.generator, target_accept=job.target_accept,
                        callback=steps.track(advance), compile=prepared.compiler or False, **sampling_options(job))
    note = compile_note(prepared.compiler)
    if note is not None and is_main_process():
        print(note, file=sys.stderr, flush=True)
    with output_errors("--out", job.out):
        out = save_record(job.out, record, metadata(prepared, record))
    plot = None
    if job.plot is not None:
        from ebmlab.jobs.plots import plot_samples

        with output_errors("--plot", job.plot):
            plot = plot_samples(prepared.energy, record.samples, job.plot)
    chains = None
    if job.plot_chains is not None:
        from ebmlab.jobs.plots import plot_chains as draw_chains

        with output_errors("--plot-chains", job.plot_chains):
            chains = draw_chains(record.samples, job.plot_chains)
    return SampleResult(prepared, record, out, plot, chains)


def wrote_line(out, plot=None, plot_chains=None) -> str:
    """What a job reports of its files: ``wrote s.npz`` or ``wrote s.npz and s.png``, then a line
    ``wrote chains.png`` for the picture of the chains over time."""
    line = f"wrote {out}" + (f" and {plot}" if plot is not None else "")
    return line + (f"\nwrote {plot_chains}" if plot_chains is not None else "")


def format_result(result: SampleResult, max_dims: int = SUMMARY_DIMS) -> str:
    """What ``ebmlab sample`` prints: the job, :func:`ebmlab.diagnostics.format_summary` of the
    record (mean, std, MCSE, bulk and tail ESS and R-hat of the first ``max_dims`` coordinates and
    of the energy; acceptance, divergences, step size; its warnings in option terms), parallel
    tempering's swap and round-trip rates (:func:`tempering_lines`), the speed and the files written."""
    from ebmlab.diagnostics import format_summary
    from ebmlab.jobs.sampling_summary import tempering_lines, warning_in_option_terms

    record, job = result.record, result.prepared.job
    kept, chains = record.samples.shape[:2]
    lines = [f"sampled {job.energy} with {job.sampler}: {chains} chains, {kept} kept draws each"]
    try:
        lines.extend(warning_in_option_terms(line) for line in format_summary(record, max_dims=max_dims).splitlines())
    except ValueError as err:  # too few draws for ESS and R-hat
        lines.append(f"diagnostics: n/a ({str(err).splitlines()[0]})")
    lines.extend(tempering_lines(record.final_state))
    speed = chains * (job.burn_in + job.num_steps) / max(record.wall_time, 1e-12)
    lines.append(f"speed: {speed:.4g} samples/s (chain transitions incl. burn-in, {record.wall_time:.2f} s)")
    lines.append(wrote_line(result.out, result.plot, result.plot_chains))
    return "\n".join(lines)


__all__ = ["FIGURE_SUFFIXES", "PreparedJob", "SampleJob", "SampleResult", "check_figure_path", "check_output_file",
           "check_outputs", "check_writable", "format_result", "in_option_terms", "initial_states", "kernel_arguments", "metadata", "metadata_of", "prepare",
           "run_sampling_job", "sampling_options", "save_netcdf", "save_record", "validate", "wrote_line"]
