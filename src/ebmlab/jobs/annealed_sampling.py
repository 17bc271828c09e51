"""``ebmlab sample`` for noise-conditional runs: annealed Langevin (Song & Ermon 2019).

A run trained with the ``ncsn`` objective is sampled by Langevin dynamics annealed over its
noise levels σ₁ > … > σ_L (``steps_per_level`` steps at each, step ``ε σ_i²/σ_L²``), then one
denoising step, in the run's training space; samples are mapped back to the data space.

:func:`run_annealed_job` takes the :class:`~ebmlab.jobs.sampling.SampleJob` of any sampling job
and honours the same output contract (:mod:`ebmlab.jobs.sample_files`): every output checked
before sampling, ``--out`` as ``.npz`` or netCDF (``.nc``) with the documented fields, a
``wrote`` line. The record has a single kept draw per chain (the denoised end):
``samples (1, C, *event)``, ``energy (1, C)`` (the energy of energy-parametrised models; NaN for
score-parametrised ones, which have no energy), ``acceptance_rate`` ones and ``divergences``
zeros ``(C,)`` (nothing is rejected), ``step_size`` the ε used (in the training space), and
``burn_in = 0``, ``thin = 1``, ``num_steps`` = steps per level. ``--init`` is honoured: ``noise``
starts at ``σ₁ N(0, I)`` in the training space (Song & Ermon's start), ``zeros`` and ``FILE.npy``
are data-space starts. Options without a meaning here (``--burn-in``, ``--thin``, ``--metric``,
...) are refused in one line (:func:`check_annealed_options`).
"""

from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Collection

import torch

from ebmlab.energy.noise_conditional import NoiseConditionalModel
from ebmlab.samplers.annealed import DEFAULT_STEP_RATIO, StepCallback, annealed_langevin

ANNEALED = "annealed"
#: Langevin steps per noise level when ``--steps`` is not given: Song & Ermon's (2019) T = 100
#: (1,000 per level took over 12 minutes for 4,000 chains of the small NCSN on 2 cores).
ANNEALED_STEPS = 100
#: Chains and times kept for ``--plot-chains`` (the grid shows 8 chains, the traces 4).
PICTURE_CHAINS = 8
PICTURE_TIMES = 101
#: SampleJob field -> (option, its default): what annealed Langevin has no use for.
_INAPPLICABLE = {"burn_in": ("--burn-in", 500), "thin": ("--thin", 1), "num_leapfrog": ("--leapfrog", 10),
                 "target_accept": ("--target-accept", None), "max_tree_depth": ("--max-tree-depth", None),
                 "robust_uturn": ("--robust-uturn", None),
                 "metric": ("--metric", None), "base": ("--base", None), "num_temperatures": ("--temperatures", None),
                 "max_temperature": ("--max-temperature", None), "compile": ("--compile", False),
                 "compile_mode": ("--compile-mode", None)}


def noise_conditional_run(spec: str):
    """The loaded run when ``spec`` is a run directory of a noise-conditional model, else ``None``."""
    if not (os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "checkpoint.pt"))):
        return None
    from ebmlab.jobs.specs import load_training_run

    run = load_training_run(spec)
    return run if isinstance(run.model, NoiseConditionalModel) else None


def sample_run(run, num_samples: int, generator: torch.Generator | None = None, steps_per_level: int = 100,
               step_size: float | None = None, callback: StepCallback | None = None,
               x0: torch.Tensor | None = None) -> torch.Tensor:
    """Samples of a trained noise-conditional run (``ebmlab.training.loading.load_run(RUN_DIR)``) in data space.

    Runs :func:`~ebmlab.samplers.annealed.annealed_langevin` with ``run.model.score`` over its
    levels in its training (standardised) space, from ``x0`` ``(num_samples, *event)`` given in the
    training space or else ``σ₁ N(0, I)`` (as :func:`~ebmlab.samplers.annealed.sample_noise_conditional`),
    then undoes the standardisation; shape ``(num_samples, *run.event_shape)``. ``callback(step,
    x)`` sees training-space states. Raises ``ValueError`` when the run's model is not noise-conditional.
    """
    model = run.model
    if not isinstance(model, NoiseConditionalModel):
        raise ValueError(f"annealed Langevin needs a noise-conditional run (objective ncsn), got model "
                         f"{type(model).__name__}")
    if int(num_samples) < 1:
        raise ValueError(f"sample_run: num_samples must be >= 1, got {num_samples}")
    sigmas = model.sigmas
    if x0 is None:
        x0 = sigmas[0] * torch.randn((int(num_samples), *model.event_shape), generator=generator,
                                     dtype=sigmas.dtype, device=sigmas.device)
    x = annealed_langevin(model.score, x0, sigmas, steps_per_level, step_size, generator, True, callback)
    return x if run.standardizer is None else run.standardizer.inverse_transform(x)


def check_annealed_options(job, given: Collection[str] = (), declared_shape: tuple[int, ...] | None = None) -> None:
    """Refuse, in one line, the options of ``job`` that annealed Langevin cannot honour: those in
    ``given`` (the options named on the command line) or set away from their defaults; a
    ``--support`` (the run's support is real) and an ``--event-shape`` other than the run's."""
    if job.support is not None:
        raise ValueError(f"energy {job.energy!r} declares support real, but --support {job.support} was given; "
                         f"drop --support")
    if job.event_shape is not None and declared_shape is not None and tuple(job.event_shape) != tuple(declared_shape):
        raise ValueError(f"energy {job.energy!r} has event shape {tuple(declared_shape)}, but --event-shape "
                         f"{tuple(job.event_shape)} was given")
    named = [option for field, (option, default) in _INAPPLICABLE.items()
             if option in given or getattr(job, field) != default]
    if named:
        options = ", ".join(named)
        raise ValueError(f"{options} do{'es' if len(named) == 1 else ''} not apply to annealed Langevin (the sampler "
                         f"of runs trained with --objective ncsn: no burn-in, thinning or adaptation, one kept draw "
                         f"per chain); drop {'it' if len(named) == 1 else 'them'}")


@dataclass
class AnnealedRecord:
    """What :func:`~ebmlab.jobs.sample_files.save_record` writes for an annealed run (the fields of
    a :class:`~ebmlab.samplers.ChainRecord` it reads): one kept draw per chain."""

    samples: torch.Tensor  # (1, C, *event)
    energy: torch.Tensor  # (1, C); NaN for score-parametrised models
    acceptance_rate: torch.Tensor  # (C,) ones
    divergences: torch.Tensor  # (C,) zeros
    step_size: float
    wall_time: float
    num_steps: int
    burn_in: int = 0
    thin: int = 1
    sampler: str = ANNEALED


@dataclass
class AnnealedResult:
    """A finished annealed job: the record, its metadata and the files written."""

    record: AnnealedRecord
    meta: dict
    out: Path
    plot: Path | None = None
    plot_chains: Path | None = None


def _start(run, job, generator: torch.Generator, device: torch.device) -> torch.Tensor:
    """The training-space start ``(C, *event)`` of ``--init``: ``σ₁ N(0, I)`` for noise (as
    :func:`sample_run` draws it), else the data-space zeros or ``FILE.npy``
    (:func:`~ebmlab.jobs.sampling.initial_states`), standardised."""
    sigmas = run.model.sigmas
    if job.init == "noise":
        return sigmas[0] * torch.randn((job.num_chains, *run.model.event_shape), generator=generator,
                                       dtype=sigmas.dtype, device=sigmas.device)
    from ebmlab.jobs.sampling import initial_states

    x0 = initial_states(job, tuple(run.model.event_shape), "real", 2, generator, device).to(run.model.sigmas.dtype)
    return x0 if run.standardizer is None else run.standardizer.transform(x0)


def _snapshots(total: int):
    """A callback keeping the first chains at most :data:`PICTURE_TIMES` evenly spaced steps of
    ``0..total`` (training space), and the list they go to."""
    count = min(PICTURE_TIMES, total + 1)
    times = sorted({round(i * total / max(count - 1, 1)) for i in range(count)})
    kept: list[tuple[int, torch.Tensor]] = []

    def keep(step: int, x: torch.Tensor) -> None:
        if step in times:
            kept.append((step, x[:PICTURE_CHAINS].detach().clone()))

    return keep, kept


def run_annealed_job(run, job, given: Collection[str] = ()) -> AnnealedResult:
    """Sample ``job.num_chains`` chains of the noise-conditional ``run`` by annealed Langevin and
    write ``job.out`` (and ``job.plot``, ``job.plot_chains``) atomically; ``job.num_steps=None``
    is :data:`ANNEALED_STEPS` per level. ``given``: the options named on the command line, for
    :func:`check_annealed_options`. On ``job.device`` with a progress bar when ``job.progress``;
    with ``job.lean_threads``, torch's thread count from the problem size. Raises ``ValueError``
    (and the path errors of :func:`~ebmlab.jobs.sample_files.check_outputs`) before sampling, and
    :class:`~ebmlab.samplers.driver.ChainDivergedError` when a chain blows up; nothing is written then.
    """
    from ebmlab.diagnostics.export import INSTALL_HINT, arviz_available
    from ebmlab.distributed import resolve_device
    from ebmlab.jobs.guards import check_sizes, output_errors
    from ebmlab.jobs.progress import progress_bar
    from ebmlab.jobs.sample_files import check_outputs, save_record
    from ebmlab.jobs.sampling import metadata_of, validate

    event_shape = tuple(int(s) for s in run.model.event_shape)
    check_annealed_options(job, given, event_shape)
    job = dataclasses.replace(job, sampler=ANNEALED, num_steps=job.num_steps or ANNEALED_STEPS)
    validate(dataclasses.replace(job, sampler=None))  # chains, steps, step size, seed
    check_outputs(job.out, job.plot, job.plot_chains)
    if Path(job.out).suffix == ".nc" and not arviz_available():
        raise ValueError(f"--out {job.out}: writing netCDF needs ArviZ; {INSTALL_HINT} (or write a .npz)")
    device = resolve_device(job.device, what="--device")
    check_sizes(job.num_chains, 1, 1, event_shape, device, job.out)
    for module in (run.model, run.energy):  # the energy wraps the model with the run's standardisation
        module.to(device)
    if job.lean_threads:
        from ebmlab.jobs.threads import lean_threads as choose_threads

        choose_threads(job.num_chains, run.model, event_shape, device)
    generator = torch.Generator(device=device).manual_seed(int(job.seed))
    x0 = _start(run, job, generator, device)
    sigmas = run.model.sigmas
    levels, steps = int(sigmas.numel()), int(job.num_steps)
    step_size = job.step_size if job.step_size is not None else DEFAULT_STEP_RATIO * float(sigmas[-1]) ** 2
    keep, kept = _snapshots(levels * steps + 1) if job.plot_chains is not None else (None, [])
    start = time.perf_counter()
    with progress_bar(levels * steps + 1, ANNEALED, job.progress) as advance:
        def callback(step: int, x: torch.Tensor) -> None:
            if advance is not None:
                advance(step, x)
            if keep is not None:
                keep(step, x)

        if keep is not None:
            keep(0, x0)
        x = sample_run(run, job.num_chains, generator, steps, step_size, callback, x0=x0)
    wall = time.perf_counter() - start
    energy = torch.full((1, job.num_chains), float("nan"), dtype=x.dtype)
    if getattr(run.model, "parametrization", "score") == "energy":
        with torch.no_grad():
            energy = run.energy(x).detach().reshape(1, -1)
    x = x.detach().cpu()
    for module in (run.model, run.energy):  # the pictures are drawn on the CPU
        module.to("cpu")
    record = AnnealedRecord(samples=x[None], energy=energy.cpu(), acceptance_rate=torch.ones(job.num_chains),
                            divergences=torch.zeros(job.num_chains, dtype=torch.int64), step_size=step_size,
                            wall_time=wall, num_steps=steps)
    meta = metadata_of(job, event_shape, "real", f"annealed Langevin ({levels} levels x {steps} steps, final denoising)")
    meta.update(burn_in=0, thin=1, step_size=step_size, steps_per_level=steps, num_levels=levels, wall_time=wall,
                num_kept=1, divergences=0, has_energy=bool(torch.isfinite(energy).all()))
    with output_errors("--out", job.out):
        out = save_record(job.out, record, meta)
    result = AnnealedResult(record, meta, out)
    if job.plot is not None:
        from ebmlab.jobs.plots import plot_samples

        with output_errors("--plot", job.plot):
            has_energy = getattr(run.model, "parametrization", "score") == "energy"
            result.plot = plot_samples(run.energy if has_energy else None, x[None], job.plot)
    if job.plot_chains is not None:
        from ebmlab.jobs.plots import plot_chains

        snapshots = torch.stack([s for _, s in kept])
        if run.standardizer is not None:
            snapshots = run.standardizer.inverse_transform(snapshots.cpu().flatten(0, 1)).view(snapshots.shape)
        with output_errors("--plot-chains", job.plot_chains):
            result.plot_chains = plot_chains(snapshots.cpu(), job.plot_chains, times=[t for t, _ in kept],
                                             time_label="annealed Langevin step")
    meta["samples_per_s"] = job.num_chains / max(wall, 1e-9)
    return result


def format_annealed_summary(result: AnnealedResult) -> str:
    """What ``ebmlab sample`` prints for an annealed run: chains, levels and steps, time, files written."""
    from ebmlab.jobs.sampling import wrote_line

    meta = result.meta
    lines = [f"sampled {meta['energy']} with annealed Langevin: {meta['num_chains']} chains, {meta['num_levels']} "
             f"noise levels × {meta['steps_per_level']} steps, {meta['wall_time']:.2f} s "
             f"({meta['samples_per_s']:.3g} samples/s)"]
    if not meta["has_energy"]:
        lines.append("energy: n/a (a score-parametrised model has no energy; the file's energy is NaN)")
    lines.append(wrote_line(result.out, result.plot, result.plot_chains))
    return "\n".join(lines)


__all__ = ["ANNEALED", "ANNEALED_STEPS", "AnnealedRecord", "AnnealedResult", "check_annealed_options",
           "format_annealed_summary", "noise_conditional_run", "run_annealed_job", "sample_run"]
