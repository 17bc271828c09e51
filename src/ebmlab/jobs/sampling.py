"""A sampling job from options: resolve the energy, start the chains, run, save, summarise.

``ebmlab sample`` is a thin wrapper around :func:`run_sampling_job`; Python users and the
distributed code can call the same pieces::

    job = SampleJob(energy="gmm8", sampler="mala", num_chains=64, num_steps=1000, burn_in=500,
                    out="samples.npz")
    result = run_sampling_job(job)          # writes samples.npz (atomically)
    print(format_summary(summarize(result)))

:func:`prepare` does everything that can fail on bad input — option checks, the output path,
the energy SPEC (see :mod:`ebmlab.jobs.specs`), the sampler/support match, the initial states and
their energies — before any sampling starts, raising ``ValueError`` with a one-line message.
A chain whose energy becomes NaN during the run raises
:class:`~ebmlab.samplers.driver.ChainDivergedError` (naming the step and the chains), and no
output file is written then.

The ``.npz`` holds ``samples`` ``(kept, C, *event)``, ``energy`` ``(kept, C)``,
``acceptance_rate`` ``(C,)``, ``divergences`` ``(C,)``, ``step_size`` (NaN for kernels without
one), ``event_shape``, ``wall_time``, and ``metadata``: a JSON string of the job's options and
results, with its main fields also stored as arrays of their own.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ebmlab.atomic import atomic_write
from ebmlab.jobs.progress import progress_bar
from ebmlab.samplers import ChainRecord, Kernel, available, get_kernel_class, kernel_options, make_kernel, sample
from ebmlab.jobs.specs import resolve_energy, support_of

INITS = ("noise", "zeros")
SUMMARY_DIMS = 4


@dataclass(frozen=True)
class SampleJob:
    """Options of one sampling job (those of ``ebmlab sample``). ``step_size=None`` keeps the
    kernel's default; ``init`` is ``"noise"``, ``"zeros"`` or a path to a ``.npy`` file."""

    energy: str
    sampler: str
    out: str
    num_chains: int = 16
    num_steps: int = 1000
    burn_in: int = 500
    thin: int = 1
    step_size: float | None = None
    num_leapfrog: int = 10
    seed: int = 0
    init: str = "noise"
    device: str = "cpu"
    compile: bool = False
    event_shape: tuple[int, ...] | None = None
    target_accept: float | None = None
    plot: str | None = None
    progress: bool = False


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


@dataclass
class SampleResult:
    """A finished job: the driver's record and the files written."""

    prepared: PreparedJob
    record: ChainRecord
    out: Path
    plot: Path | None


def check_writable(path: str | os.PathLike, option: str = "--out") -> Path:
    """Refuse an output path whose directory is missing or not writable, or that is a directory."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise IsADirectoryError(f"{option} {str(path)!r} is a directory; give a file name")
    if not parent.is_dir():
        reason = "is not a directory" if parent.exists() else "does not exist"
        raise FileNotFoundError(f"{option} {str(path)!r}: directory {str(parent)!r} {reason}")
    try:  # a real probe: permission bits alone say nothing for root or read-only mounts
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise PermissionError(f"{option} {str(path)!r}: directory {str(parent)!r} is not writable ({err.strerror})") from None
    return path


def validate(job: SampleJob) -> None:
    """Check the numeric and choice options of ``job`` (raises ``ValueError``)."""
    get_kernel_class(job.sampler)  # unknown sampler -> ValueError listing the known ones
    for name, value, low in (("--chains", job.num_chains, 1), ("--steps", job.num_steps, 1),
                             ("--burn-in", job.burn_in, 0), ("--thin", job.thin, 1), ("--leapfrog", job.num_leapfrog, 1)):
        if int(value) < low:
            raise ValueError(f"{name} must be >= {low}, got {value}")
    if job.thin > job.num_steps:
        raise ValueError(f"--thin {job.thin} is larger than --steps {job.num_steps}; no draw would be kept")
    if job.step_size is not None and not (math.isfinite(job.step_size) and job.step_size > 0):
        raise ValueError(f"--step-size must be a finite number > 0, got {job.step_size}")
    if job.target_accept is not None and not (0 < job.target_accept < 1):
        raise ValueError(f"--target-accept must be in (0, 1), got {job.target_accept}")
    if job.plot is not None and Path(job.plot).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise ValueError(f"--plot {job.plot!r}: the file name must end in .png, .pdf or .svg")


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
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as err:
        raise ValueError(f"--init {job.init!r}: cannot read it as a .npy array ({type(err).__name__})") from err
    if arr.shape == tuple(event_shape):
        arr = np.broadcast_to(arr, shape)
    if arr.shape != shape or not np.issubdtype(arr.dtype, np.number) or np.iscomplexobj(arr):
        raise ValueError(f"--init {job.init!r}: expected a real array of shape {shape} or {tuple(event_shape)}, "
                         f"got {arr.dtype} {arr.shape}")
    x0 = torch.as_tensor(np.array(arr, dtype=np.float64), dtype=dtype, device=device)
    if not torch.isfinite(x0).all():
        raise ValueError(f"--init {job.init!r} contains NaN or infinite values")
    if support != "real" and not ((x0 == x0.round()) & (x0 >= 0) & (x0 < num_states)).all():
        raise ValueError(f"--init {job.init!r}: a {support} energy needs integer states in 0..{num_states - 1}")
    return x0


def prepare(job: SampleJob) -> PreparedJob:
    """Validate ``job`` and build energy, kernel, ``x0`` and generator; nothing is sampled yet."""
    validate(job)
    check_writable(job.out, "--out")
    if job.plot is not None:
        check_writable(job.plot, "--plot")
    device = torch.device(job.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was requested but no CUDA device is available; use --device cpu")

    energy, event_shape, support = resolve_energy(job.energy, job.event_shape)
    kernel_support = get_kernel_class(job.sampler).support
    if (support == "real") != (kernel_support == "real"):
        wanted = ", ".join(n for n in available() if (get_kernel_class(n).support == "real") == (support == "real"))
        raise ValueError(f"sampler {job.sampler!r} cannot sample energy {job.energy!r} ({support} support); "
                         f"use --sampler {wanted}")
    _, num_states = support_of(energy)
    energy = energy.to(device).eval()
    energy.requires_grad_(False)
    generator = torch.Generator(device=device).manual_seed(int(job.seed))
    x0 = initial_states(job, event_shape, support, num_states, generator, device)
    with torch.no_grad():
        e0 = energy(x0).reshape(-1)
    bad = (~torch.isfinite(e0)).nonzero().flatten().tolist()
    if bad:
        shown = ", ".join(map(str, bad[:10])) + (" ..." if len(bad) > 10 else "")
        raise ValueError(f"energy {job.energy!r} is NaN or infinite at the start (--init {job.init}) "
                         f"for chain(s) {shown}")
    if job.compile:
        from ebmlab.energy import compile_energy

        energy = compile_energy(energy)
    kernel = make_kernel(job.sampler, step_size=job.step_size, num_leapfrog=job.num_leapfrog if "num_leapfrog" in kernel_options(job.sampler) else None)
    return PreparedJob(job, energy, tuple(event_shape), support, kernel, x0, generator, device)


def metadata(prepared: PreparedJob, record: ChainRecord | None = None) -> dict:
    """The job's options and (when ``record`` is given) its results, as JSON-able values."""
    options = dataclasses.asdict(prepared.job)
    options.pop("progress")
    options["initial_step_size"] = options.pop("step_size")
    options["event_shape"] = list(prepared.event_shape)
    kernel = prepared.kernel if record is None else record.kernel
    meta = {"ebmlab_version": _version(), **options, "support": prepared.support, "kernel": repr(kernel)}
    if record is not None:
        meta.update(step_size=record.step_size, wall_time=record.wall_time,
                    num_kept=int(record.samples.shape[0]), divergences=int(record.divergences.sum()))
    return meta


def _version() -> str:
    from importlib.metadata import version

    return version("ebmlab")


def save_record(path: str | os.PathLike, record: ChainRecord, meta: dict) -> Path:
    """Write ``record`` and ``meta`` to ``path`` as ``.npz``, atomically (temp file + ``os.replace``)."""
    path = Path(path)
    step = record.step_size
    arrays = {
        "samples": record.samples.detach().cpu().numpy(),
        "energy": record.energy.detach().cpu().numpy(),
        "acceptance_rate": record.acceptance_rate.detach().cpu().numpy(),
        "divergences": record.divergences.detach().cpu().numpy(),
        "step_size": np.float64(step if step is not None else np.nan),
        "wall_time": np.float64(record.wall_time),
        "event_shape": np.asarray(record.samples.shape[2:], dtype=np.int64),
        "metadata": np.asarray(json.dumps(meta)),
    }
    for key in ("energy_spec", "sampler", "seed", "num_chains", "num_steps", "burn_in", "thin", "init", "support"):
        value = meta.get("energy" if key == "energy_spec" else key)
        if value is not None:
            arrays[key] = np.asarray(value)
    return atomic_write(path, lambda f: np.savez(f, **arrays))


def run_sampling_job(job: SampleJob) -> SampleResult:
    """Prepare, sample, write ``job.out`` (and ``job.plot``), and return the result.

    Raises ``ValueError``/``FileNotFoundError``/``PermissionError`` on bad input before
    sampling, and :class:`~ebmlab.samplers.driver.ChainDivergedError` when a chain's energy turns
    NaN or infinite; no output file is written in either case.
    """
    prepared = prepare(job)
    with progress_bar(job.burn_in + job.num_steps, prepared.kernel.name, job.progress) as advance:
        record = sample(prepared.energy, prepared.kernel, prepared.x0, num_steps=job.num_steps, burn_in=job.burn_in,
                        thin=job.thin, generator=prepared.generator, adapt=True, target_accept=job.target_accept,
                        callback=advance)
    out = save_record(job.out, record, metadata(prepared, record))
    plot = None
    if job.plot is not None:
        from ebmlab.jobs.plots import plot_samples

        plot = plot_samples(prepared.energy, record.samples, job.plot)
    return SampleResult(prepared, record, out, plot)


def summarize(result: SampleResult, max_dims: int = SUMMARY_DIMS) -> dict:
    """Acceptance, divergences, tuned step size, speed, and ESS and split R-hat of the first
    ``max_dims`` coordinates (and of the energy), from :mod:`ebmlab.diagnostics`."""
    from ebmlab.diagnostics import effective_sample_size, split_rhat

    record, job = result.record, result.prepared.job
    acc = record.acceptance_rate.detach().cpu().double()
    kept, chains = record.samples.shape[:2]
    flat = record.samples.detach().reshape(kept, chains, -1)[:, :, :max_dims].cpu().double().numpy()
    energy = record.energy.detach().cpu().double().numpy()[:, :, None]
    summary = {
        "energy": job.energy, "sampler": job.sampler, "num_chains": chains, "num_kept": kept,
        "acceptance_mean": float(acc.mean()), "acceptance_min": float(acc.min()),
        "divergences": int(record.divergences.sum()),
        "chains_with_divergences": int((record.divergences > 0).sum()),
        "step_size": record.step_size, "wall_time": record.wall_time,
        "samples_per_second": chains * (job.burn_in + job.num_steps) / max(record.wall_time, 1e-12),
        "out": str(result.out), "plot": None if result.plot is None else str(result.plot),
    }
    for key, estimator in (("ess", effective_sample_size), ("rhat", split_rhat)):
        try:
            summary[key] = [float(v) for v in np.ravel(estimator(flat))]
            summary[f"{key}_energy"] = float(np.ravel(estimator(energy))[0])
        except ValueError as err:  # too few draws or chains for the estimator
            summary[f"{key}_error"] = str(err).splitlines()[0] if str(err) else "ValueError"
    return summary


def format_summary(summary: dict) -> str:
    """The human-readable summary that ``ebmlab sample`` prints."""
    step = summary["step_size"]
    lines = [
        f"sampled {summary['energy']} with {summary['sampler']}: {summary['num_chains']} chains, "
        f"{summary['num_kept']} kept draws each",
        f"acceptance: mean {summary['acceptance_mean']:.3f}, min {summary['acceptance_min']:.3f}",
        f"divergences: {summary['divergences']} (in {summary['chains_with_divergences']} chains)",
        f"step size: {'n/a' if step is None else f'{step:.4g}'}",
    ]
    for key, label, fmt in (("ess", "ESS:  ", ".1f"), ("rhat", "R-hat:", ".3f")):
        if key in summary:
            lines.append(f"{label} " + "  ".join(f"x[{i}] {v:{fmt}}" for i, v in enumerate(summary[key]))
                         + f"  energy {summary[f'{key}_energy']:{fmt}}")
        else:
            lines.append(f"{label} n/a ({summary[f'{key}_error']})")
    lines.append(f"speed: {summary['samples_per_second']:.4g} samples/s "
                 f"(chain transitions incl. burn-in, {summary['wall_time']:.2f} s)")
    lines.append(f"wrote {summary['out']}" + (f" and {summary['plot']}" if summary["plot"] else ""))
    return "\n".join(lines)


__all__ = ["PreparedJob", "SampleJob", "SampleResult", "check_writable", "format_summary", "initial_states",
           "metadata", "prepare", "run_sampling_job", "save_record", "summarize", "validate"]
