"""``ebmlab sample`` for noise-conditional runs: annealed Langevin (Song & Ermon 2019).

A run trained with the ``ncsn`` objective is sampled by Langevin dynamics annealed over its
noise levels σ₁ > … > σ_L (``steps_per_level`` steps at each, step ``ε σ_i²/σ_L²``), then one
denoising step, in the run's training space; samples are mapped back to the data space.
The ``.npz`` has the layout of an MCMC job with a single kept draw per chain:
``samples (1, C, *event)``, ``acceptance_rate (C,)`` (ones: nothing is rejected), ``energy
(1, C)`` (the energy at σ_L for energy-parametrised models, else NaN).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from ebmlab.atomic import atomic_write
from ebmlab.energy.noise_conditional import NoiseConditionalModel
from ebmlab.samplers.annealed import StepCallback, sample_noise_conditional

ANNEALED = "annealed"
#: Langevin steps per noise level when ``--steps`` is not given: Song & Ermon's (2019) T = 100
#: (1,000 per level took over 12 minutes for 4,000 chains of the small NCSN on 2 cores).
ANNEALED_STEPS = 100


def noise_conditional_run(spec: str):
    """The loaded run when ``spec`` is a run directory of a noise-conditional model, else ``None``."""
    if not (os.path.isdir(spec) and os.path.isfile(os.path.join(spec, "checkpoint.pt"))):
        return None
    from ebmlab.jobs.specs import load_training_run

    run = load_training_run(spec)
    return run if isinstance(run.model, NoiseConditionalModel) else None


def sample_run(run, num_samples: int, generator: torch.Generator | None = None, steps_per_level: int = 100,
               step_size: float | None = None, callback: StepCallback | None = None) -> torch.Tensor:
    """Samples of a trained noise-conditional run (``ebmlab.training.loading.load_run(RUN_DIR)``) in data space.

    Runs :func:`sample_noise_conditional` on ``run.model`` in its training (standardised)
    space, then undoes the standardisation; shape ``(num_samples, *run.event_shape)``.
    Raises ``ValueError`` when the run's model is not noise-conditional.
    """
    if not isinstance(run.model, NoiseConditionalModel):
        raise ValueError(f"annealed Langevin needs a noise-conditional run (objective ncsn), got model "
                         f"{type(run.model).__name__}")
    x = sample_noise_conditional(run.model, num_samples, generator, steps_per_level, step_size, True, callback)
    return x if run.standardizer is None else run.standardizer.inverse_transform(x)


def run_annealed_job(run, out: str, num_chains: int, steps_per_level: int | None, step_size: float | None,
                     seed: int, plot: str | None = None, device: str = "cpu", progress: bool = False,
                     lean_threads: bool = False) -> dict:
    """Sample ``num_chains`` chains of ``run`` by annealed Langevin and write ``out`` atomically;
    ``steps_per_level=None`` is :data:`ANNEALED_STEPS`; on ``device`` (``auto``: CUDA when
    available), with a progress bar over the steps on standard error when ``progress``; with
    ``lean_threads``, torch's thread count from the problem size (:mod:`ebmlab.jobs.threads`).

    Returns a summary dict (chains, levels, steps per level, wall time, samples/s).
    """
    from ebmlab.distributed import resolve_device
    from ebmlab.jobs.progress import progress_bar

    steps_per_level = ANNEALED_STEPS if steps_per_level is None else steps_per_level
    if num_chains < 1 or steps_per_level < 1:
        raise ValueError(f"annealed: chains and steps must be >= 1, got {num_chains}, {steps_per_level}")
    if step_size is not None and not step_size > 0:
        raise ValueError(f"annealed: step_size must be > 0, got {step_size}")
    device = resolve_device(device, what="--device")
    for module in (run.model, run.energy):  # the energy wraps the model with the run's standardisation
        module.to(device)
    if lean_threads:
        from ebmlab.jobs.threads import lean_threads as choose_threads

        choose_threads(num_chains, run.model, tuple(run.model.event_shape), device)
    generator = torch.Generator(device=device).manual_seed(int(seed))
    levels = int(run.model.sigmas.numel()) if hasattr(run.model, "sigmas") else 0
    start = time.perf_counter()
    with progress_bar(levels * steps_per_level + 1, ANNEALED, progress) as advance:
        x = sample_run(run, num_chains, generator, steps_per_level=steps_per_level, step_size=step_size,
                       callback=advance)
    wall = time.perf_counter() - start
    energy = np.full((1, num_chains), np.nan)
    if getattr(run.model, "parametrization", "score") == "energy":
        with torch.no_grad():
            energy = run.energy(x).detach().cpu().numpy()[None]
    x = x.detach().cpu()
    for module in (run.model, run.energy):  # the picture's grid is on the CPU
        module.to("cpu")
    meta = {"sampler": ANNEALED, "num_chains": num_chains, "steps_per_level": steps_per_level,
            "step_size": step_size, "seed": seed, "num_levels": levels, "wall_time": wall}
    arrays = {
        "samples": x.detach().cpu().numpy()[None],
        "energy": energy,
        "acceptance_rate": np.ones(num_chains),
        "step_size": np.float64(np.nan if step_size is None else step_size),
        "wall_time": np.float64(wall),
        "event_shape": np.asarray(x.shape[1:], dtype=np.int64),
        "metadata": np.asarray(json.dumps(meta)),
    }
    atomic_write(Path(out), lambda f: np.savez(f, **arrays))
    if plot is not None:
        from ebmlab.jobs.plots import plot_samples

        has_energy = getattr(run.model, "parametrization", "score") == "energy"
        plot_samples(run.energy if has_energy else None, x[None], plot)
    meta["samples_per_s"] = num_chains / max(wall, 1e-9)
    return meta


def format_annealed_summary(meta: dict) -> str:
    return (f"sampled with annealed Langevin: {meta['num_chains']} chains, {meta['num_levels']} noise levels × "
            f"{meta['steps_per_level']} steps, {meta['wall_time']:.2f} s ({meta['samples_per_s']:.3g} samples/s)")
