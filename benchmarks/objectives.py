"""Benchmark: every training objective on the same MLP energy and the same time budget.

Each objective (``cd``, ``pcd``, ``replay``, ``sm``, ``ssm``, ``dsm``, ``nce``) trains the same
network, ``MLPEnergy(2, (128, 128))`` with the same initial weights, optimiser (Adam, constant
learning rate), batch size and data (standardised; a fixed train / held-out split) on each
2-D toy set (8 gaussians, 2 spirals) for the same budget of seconds (wall clock by default,
``--clock cpu`` for process CPU time). Objective-specific settings are the library defaults
(printed with the results) except one: the contrastive objectives (``cd``, ``pcd``, ``replay``;
ULA negatives, ε = 0.01, 20 steps per update) get the energy-magnitude penalty
``α(E(x⁺)² + E(x⁻)²)`` of Du & Mordatch (2019) with ``α = --alpha`` (default 0.1). With the
library default ``α = 0`` their energy scale runs away within a 60 s budget (losses near
-1e9, a MALA step size tuned down to ~1e-7, NLL gaps of ~1e5 nats), with ``α = 1`` the
density stays too flat; ``--alpha 0`` reproduces the unregularised runs. For every trained
model the script reports

* **steps/s**: optimiser updates per wall-clock second of training;
* **MMD² (MALA)**: the unbiased MMD² (Gretton et al. 2012; Gaussian kernel, median-heuristic
  bandwidth on the pooled sample, :func:`ebmlab.metrics.mmd2`) between held-out data and model
  samples drawn by one shared procedure: ``--chains`` MALA chains (Roberts & Tweedie 1996)
  started from ``N(0, s² I)`` in the standardised space (the same starting points for every
  model), ``--burn-in`` transitions that tune the step size by dual averaging towards an
  acceptance of 0.574, ``--eval-steps`` more, and each chain's end point kept. ``‡`` marks a
  model whose chains barely moved (median distance from the start below 0.1 standardised
  units, e.g. a step size tuned to ~0 on a runaway energy): its MMD² then measures the start;
* **MMD² (grid)**: the same MMD² with samples drawn from the learned density on a quadrature
  grid (:func:`ebmlab.partition.grid_sample`): the density's quality without the sampler's
  mixing error (mass beyond the grid's box is ignored);
* **NLL gap**: the held-out NLL ``mean E(x) + log Z`` (``log Z`` by grid quadrature over the
  held-out range widened by half its width per side) minus the true density's cross-entropy
  ``-mean log p_true(x)`` on the same points — a Monte-Carlo estimate of
  ``KL(p_true ‖ p_model) ≥ 0``. ``†`` marks a model whose estimated mass beyond the box exceeds
  1e-3 (its ``log Z``, hence the gap, is then too optimistic).

A reference row, ``data (fresh draws)``, compares fresh draws of the toy set with the held-out
data: the MMD² noise floor at these sample sizes. The figure (``--figure``, default
``docs/figures/objectives.png``) shows the held-out data and each learned density
``exp(-E)``, one row per data set and one column per objective.

Timings: ``--threads`` (default 1) intra-op threads. On a 2-core machine shared with other
processes, two threads contending for the cores can be many times slower than one, so one
thread is the steadier default; the run-details list gives wall and CPU seconds per model
(CPU/wall well below 1 means the machine was busy).

Usage::

    python benchmarks/objectives.py                     # 60 s per objective per data set (~17 min)
    python benchmarks/objectives.py --budget 20
    python benchmarks/objectives.py --quick             # 5 s budgets, smaller evaluation
    python benchmarks/objectives.py --objectives dsm,nce --datasets 8gaussians --figure /tmp/o.png
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

try:  # run as ``python -m benchmarks.objectives`` or imported as part of the package
    from .common import machine_description, set_threads
except ImportError:  # run as ``python benchmarks/objectives.py``
    from common import machine_description, set_threads

from ebmlab.training.config import TrainConfig
from ebmlab.partition.likelihood import held_out_nll
from ebmlab.metrics import mmd2
from ebmlab.objectives.base import frozen
from ebmlab.partition import BoundaryMassWarning, GridResolutionWarning, grid_sample, quadrature_log_z
from ebmlab.training.loading import energy_on_raw_data
from ebmlab.training.loop import derive_seed
from ebmlab.samplers import MALA, sample
from ebmlab.training.run import Trainer, TrainingDivergedError

OBJECTIVES = ("cd", "pcd", "replay", "sm", "ssm", "dsm", "nce")
DATASETS = ("8gaussians", "2spirals")
HIDDEN = (128, 128)
REPO = Path(__file__).resolve().parents[1]
DEFAULT_FIGURE = REPO / "docs" / "figures" / "objectives.png"
MISSING_MASS_FLAG = 1e-3
STUCK_FLAG = 0.1  # median distance chains moved, standardised units
CONTRASTIVE = ("cd", "pcd", "replay")


@dataclass
class Result:
    """One (data set, objective) model: training figures, evaluation figures, or an error."""

    dataset: str
    objective: str
    steps: int = 0
    wall_seconds: float = 0.0
    cpu_seconds: float = 0.0
    final_loss: float = math.nan
    mmd2_mala: float = math.nan
    mmd2_grid: float = math.nan
    nll_gap: float = math.nan
    missing_mass: float = math.nan
    mala_step_size: float = math.nan
    mala_accept: float = math.nan
    mala_moved: float = math.nan
    settings: str = ""
    error: str = ""
    energy: torch.nn.Module | None = field(default=None, repr=False)

    @property
    def steps_per_second(self) -> float:
        return self.steps / self.wall_seconds if self.wall_seconds > 0 else math.nan


def train_config(objective: str, dataset: str, args: argparse.Namespace, out: Path) -> TrainConfig:
    """The shared settings; only ``objective`` differs between the models of one data set."""
    return TrainConfig(
        data=dataset, num_samples=args.num_samples, heldout_fraction=args.heldout_fraction, standardize=True,
        model="mlp", model_kwargs={"hidden": list(HIDDEN)}, objective=objective,
        objective_kwargs={"alpha": args.alpha} if objective in CONTRASTIVE else {},
        sampler="ula", sampler_steps=20, step_size=0.01, noise_scale=1.0,
        steps=2**62, batch_size=args.batch_size, optimizer="adam", lr=args.lr, lr_schedule="constant",
        seed=args.seed, device="cpu",
    )


def describe_objective(objective) -> str:
    """The objective's hyperparameters, e.g. ``kernel=ULA(step_size=0.01, noise_scale=1.0), num_steps=20``."""
    parts = []
    for key, value in vars(objective).items():
        if key.startswith("_"):
            continue
        if dataclasses.is_dataclass(value):
            inner = ", ".join(f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value))
            parts.append(f"{key}={type(value).__name__}({inner})")
        elif isinstance(value, (bool, int, float, str)):
            parts.append(f"{key}={value!r}")
    return ", ".join(parts)


def train_for_budget(trainer: Trainer, budget: float, clock: str) -> tuple[int, float, float, float, str]:
    """Run ``trainer.update()`` until ``budget`` seconds of ``clock`` have passed (at least one update).

    Returns ``(steps, wall seconds, CPU seconds, last loss, error)``; ``error`` names the step at
    which training diverged (then ``steps`` counts the updates done before it), else ``""``.
    """
    now = time.perf_counter if clock == "wall" else time.process_time
    wall0, cpu0, start = time.perf_counter(), time.process_time(), now()
    loss, error = math.nan, ""
    try:
        while True:
            loss = trainer.update().get("loss", math.nan)
            if now() - start >= budget:
                break
    except TrainingDivergedError as err:
        error = f"training diverged at step {err.step} ({err.what})"
    return trainer.step, time.perf_counter() - wall0, time.process_time() - cpu0, loss, error


def mala_samples(model: torch.nn.Module, args: argparse.Namespace, seed: int) -> tuple[torch.Tensor, float, float, float]:
    """End points of the shared MALA procedure in the standardised space, ``(chains, 2)``.

    Returns ``(samples, tuned step size, mean acceptance after burn-in, median ‖x_end - x_0‖)``.
    """
    generator = torch.Generator().manual_seed(derive_seed(seed, "objectives-benchmark-mala"))
    x0 = args.init_scale * torch.randn(args.chains, 2, generator=generator)
    with frozen(model):
        record = sample(model, MALA(step_size=args.init_step_size), x0, num_steps=args.eval_steps,
                        burn_in=args.burn_in, generator=generator, adapt=True, keep_samples=False)
    x = record.final_state.x.detach()
    moved = float((x - x0).norm(dim=1).median())
    return x, float(record.kernel.step_size), float(record.acceptance_rate.mean()), moved


def evaluate(trainer: Trainer, result: Result, heldout: torch.Tensor, true_log_density, args) -> None:
    """Fill in ``result``'s MMD² figures and NLL gap for the trained model of ``trainer``."""
    model = trainer.trained_model.eval()
    energy = energy_on_raw_data(model, trainer.standardizer, trainer.dataset.event_shape, trainer.support)
    result.energy = energy
    samples, result.mala_step_size, result.mala_accept, result.mala_moved = mala_samples(model, args, args.seed)
    raw = trainer.standardizer.inverse_transform(samples) if trainer.standardizer is not None else samples
    result.mmd2_mala = mmd2(raw, heldout)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryMassWarning)  # reported as missing mass instead
        warnings.simplefilter("ignore", GridResolutionWarning)  # the table reports NLL at the stated grid size
        quad = quadrature_log_z(energy, data=heldout, num_points=args.grid_points)
    result.missing_mass = quad.missing_mass
    generator = torch.Generator().manual_seed(derive_seed(args.seed, "objectives-benchmark-grid"))
    exact = grid_sample(energy, args.chains, bounds=quad.bounds, num_points=args.grid_points, generator=generator)
    result.mmd2_grid = mmd2(exact, heldout)
    true_ce = float(-true_log_density(heldout.double()).mean())
    result.nll_gap = held_out_nll(energy, heldout, quad.log_z) - true_ce


def run_one(dataset: str, objective: str, args: argparse.Namespace, workdir: Path) -> tuple[Result, torch.Tensor | None]:
    """Train and evaluate one model; returns the result and the held-out data (raw space)."""
    result = Result(dataset, objective)
    heldout = None
    try:
        trainer = Trainer(train_config(objective, dataset, args, workdir / f"{dataset}-{objective}"),
                          out=workdir / f"{dataset}-{objective}")
        result.settings = describe_objective(trainer.objective)
        heldout = trainer.dataset.x[trainer.heldout_index]
        result.steps, result.wall_seconds, result.cpu_seconds, result.final_loss, result.error = train_for_budget(
            trainer, args.budget, args.clock)
        if result.error:
            return result, heldout
        evaluate(trainer, result, heldout, trainer.dataset.true_log_density, args)
    except Exception as err:  # one failed model should not hide the others' figures
        message = str(err).splitlines()[0] if str(err) else type(err).__name__
        result.error = f"{type(err).__name__}: {message[:120]}"
    return result, heldout


def reference_mmd2(dataset: str, heldout: torch.Tensor, args: argparse.Namespace) -> float:
    """MMD² between ``--chains`` fresh draws of the toy set and the held-out data (the noise floor)."""
    from ebmlab.data import load_dataset

    generator = torch.Generator().manual_seed(derive_seed(args.seed, "objectives-benchmark-reference"))
    fresh = load_dataset(dataset, num_samples=args.chains, generator=generator).x
    return mmd2(fresh, heldout)


def _num(value: float, spec: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return format(value, spec)


def markdown_table(results: list[Result], references: dict[str, float], datasets: Sequence[str],
                   objectives: Sequence[str]) -> str:
    """Rows: objectives (and the ``data`` reference); per data set: steps/s, MMD² (MALA, grid), NLL gap."""
    by_key = {(r.dataset, r.objective): r for r in results}
    header = ["objective"]
    for d in datasets:
        header += [f"{d} steps/s", f"{d} MMD² (MALA)", f"{d} MMD² (grid)", f"{d} NLL gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    row = ["data (fresh draws)"]
    for d in datasets:
        row += ["—", _num(references.get(d, math.nan), ".5f"), "—", "0 (by definition)"]
    lines.append("| " + " | ".join(row) + " |")
    for o in objectives:
        row = [o]
        for d in datasets:
            r = by_key.get((d, o))
            if r is None or r.error:
                why = "not run" if r is None else ("diverged" if "diverged" in r.error else "failed")
                row += [_num(r.steps_per_second, ".1f") if r is not None else "—", why, why, why]
                continue
            gap = _num(r.nll_gap, ".3f") + ("†" if not r.missing_mass <= MISSING_MASS_FLAG else "")
            mala = _num(r.mmd2_mala, ".5f") + ("‡" if not r.mala_moved >= STUCK_FLAG else "")
            row += [_num(r.steps_per_second, ".1f"), mala, _num(r.mmd2_grid, ".5f"), gap]
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def run_details(results: list[Result]) -> str:
    """One line per model: steps, wall and CPU seconds, last loss, the MALA step size and acceptance, errors."""
    lines = []
    for r in results:
        head = f"- {r.dataset} / {r.objective}: {r.steps} steps, {r.wall_seconds:.1f} s wall, {r.cpu_seconds:.1f} s CPU"
        if r.error:
            lines.append(f"{head}; {r.error}")
        else:
            lines.append(f"{head}, last loss {r.final_loss:.4g}; MALA ε = {r.mala_step_size:.3g}, "
                         f"acceptance {r.mala_accept:.2f}, median move {r.mala_moved:.2f}; "
                         f"mass beyond the quadrature box {r.missing_mass:.1e}")
    return "\n".join(lines)


def plot_figure(results: list[Result], heldout: dict[str, torch.Tensor], datasets: Sequence[str],
                objectives: Sequence[str], path: Path, title: str) -> Path:
    """Held-out data, then each learned density ``exp(-E)``; one row per data set."""
    from matplotlib.figure import Figure

    from ebmlab.jobs import plots

    by_key = {(r.dataset, r.objective): r for r in results}
    fig = Figure(figsize=(2.0 * (1 + len(objectives)), 2.15 * len(datasets) + 0.35), layout="constrained")
    axes = fig.subplots(len(datasets), 1 + len(objectives), squeeze=False)
    for i, d in enumerate(datasets):
        data = heldout.get(d)
        bounds = plots.bounds_from_samples(data, pad=0.15) if data is not None else (-4.0, 4.0, -4.0, 4.0)
        if data is not None:
            plots.plot_samples_2d(data, axes[i, 0], s=1, alpha=0.5, color="tab:blue")
        axes[i, 0].set_xlim(bounds[0], bounds[1])
        axes[i, 0].set_ylim(bounds[2], bounds[3])
        axes[i, 0].set_aspect("equal", adjustable="box")
        axes[i, 0].set_title("held-out data" if i == 0 else "", fontsize=9)
        axes[i, 0].set_ylabel(d, fontsize=10)
        for j, o in enumerate(objectives, start=1):
            ax, r = axes[i, j], by_key.get((d, o))
            if r is not None and r.energy is not None:
                plots.plot_density_2d(r.energy, ax, bounds, resolution=150)
                ax.set_title(f"{o}\nMMD² {r.mmd2_mala:.4f}" if i == 0 else f"MMD² {r.mmd2_mala:.4f}", fontsize=9)
            else:
                ax.text(0.5, 0.5, "not run" if r is None else "diverged" if "diverged" in r.error else "failed",
                        ha="center", va="center", transform=ax.transAxes)
                ax.set_title(o if i == 0 else "", fontsize=9)
                ax.set_aspect("equal", adjustable="box")
        for ax in axes[i]:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.suptitle(title, fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    return plots.save_figure(fig, path, dpi=110)


def _names(text: str, known: Sequence[str], what: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    unknown = [n for n in names if n not in known]
    if not names or unknown:
        raise argparse.ArgumentTypeError(f"--{what}: choose from {', '.join(known)}, got {text!r}")
    return names


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="5 s budgets, 1000 chains, 200+200 MALA steps, 257² grid")
    p.add_argument("--budget", type=float, default=None, help="seconds of training per model (default 60; 5 with --quick)")
    p.add_argument("--clock", choices=("wall", "cpu"), default="wall", help="the budget's clock (default wall)")
    p.add_argument("--objectives", type=lambda s: _names(s, OBJECTIVES, "objectives"), default=list(OBJECTIVES))
    p.add_argument("--datasets", type=lambda s: _names(s, DATASETS, "datasets"), default=list(DATASETS))
    p.add_argument("--num-samples", type=int, default=20_000, help="toy draws, split into train / held-out")
    p.add_argument("--heldout-fraction", type=float, default=0.1)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate (constant)")
    p.add_argument("--alpha", type=float, default=0.1, help="energy-magnitude penalty of cd, pcd, replay (default 0.1)")
    p.add_argument("--chains", type=int, default=None, help="MALA chains = model samples (default 2000; 1000 quick)")
    p.add_argument("--burn-in", type=int, default=None, help="MALA adaptation steps (default 500; 200 quick)")
    p.add_argument("--eval-steps", type=int, default=None, help="MALA steps after burn-in (default 500; 200 quick)")
    p.add_argument("--init-scale", type=float, default=2.0, help="MALA start: N(0, s² I) in standardised units")
    p.add_argument("--init-step-size", type=float, default=0.01, help="MALA step size before adaptation")
    p.add_argument("--grid-points", type=int, default=None, help="quadrature points per axis (default 513; 257 quick)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    p.add_argument("--figure", type=Path, default=DEFAULT_FIGURE, help="where to write the figure")
    p.add_argument("--no-figure", dest="figure", action="store_const", const=None, help="skip the figure")
    args = p.parse_args(argv)
    q = args.quick
    args.budget = args.budget if args.budget is not None else (5.0 if q else 60.0)
    args.chains = args.chains or (1000 if q else 2000)
    args.burn_in = args.burn_in if args.burn_in is not None else (200 if q else 500)
    args.eval_steps = args.eval_steps if args.eval_steps is not None else (200 if q else 500)
    args.grid_points = args.grid_points or (257 if q else 513)
    problems = [f"--{name} must be {rule}, got {value}" for name, value, ok, rule in [
        ("budget", args.budget, args.budget > 0, "> 0"), ("chains", args.chains, args.chains >= 2, ">= 2"),
        ("burn-in", args.burn_in, args.burn_in >= 0, ">= 0"), ("eval-steps", args.eval_steps, args.eval_steps >= 0, ">= 0"),
        ("grid-points", args.grid_points, args.grid_points >= 3, ">= 3"), ("threads", args.threads, args.threads >= 1, ">= 1"),
        ("init-scale", args.init_scale, args.init_scale > 0, "> 0"), ("lr", args.lr, args.lr > 0, "> 0"),
        ("alpha", args.alpha, args.alpha >= 0, ">= 0"),
        ("init-step-size", args.init_step_size, args.init_step_size > 0, "> 0")] if not ok]
    if problems:
        p.error("; ".join(problems))
    return args


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    threads = set_threads(args.threads)
    machine = machine_description(torch.device("cpu"))
    print(f"# Objectives on 2-D toy data: {args.budget:g} s of {args.clock}-clock training per model\n")
    print(f"Machine: {machine}. torch.set_num_threads({threads}).\n")
    results: list[Result] = []
    heldout: dict[str, torch.Tensor] = {}
    references: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="ebmlab-objectives-") as tmp:
        for dataset in args.datasets:
            for objective in args.objectives:
                result, points = run_one(dataset, objective, args, Path(tmp))
                results.append(result)
                if points is not None and dataset not in heldout:
                    heldout[dataset] = points
                    references[dataset] = reference_mmd2(dataset, points, args)
                status = result.error or f"{result.steps} steps, MMD² {result.mmd2_mala:.5f}"
                print(f"done: {dataset} / {objective}: {status}", file=sys.stderr, flush=True)
    print(markdown_table(results, references, args.datasets, args.objectives))
    n_heldout = next((len(v) for v in heldout.values()), 0)
    print(f"\nModel: MLPEnergy(2, {HIDDEN}) (SiLU), same initial weights for every objective; Adam, lr {args.lr:g} "
          f"(constant), batch {args.batch_size}; data standardised; {args.num_samples - n_heldout} training / "
          f"{n_heldout} held-out points; seed {args.seed}.")
    print(f"Model samples: {args.chains} MALA chains from N(0, {args.init_scale:g}² I) in the standardised space "
          f"(the same starting points for every model), {args.burn_in} burn-in steps with dual-averaging step-size "
          f"adaptation (target acceptance 0.574, from ε = {args.init_step_size:g}), then {args.eval_steps} steps; "
          f"one sample per chain (its end point); ‡ = median move < {STUCK_FLAG:g}. Grid samples: {args.chains} "
          f"draws from exp(-E) on {args.grid_points}² nodes. MMD²: unbiased, Gaussian kernel, median-heuristic "
          f"bandwidth, vs the {n_heldout} held-out points. NLL gap: held-out NLL (quadrature log Z, {args.grid_points}² nodes) "
          f"minus the true cross-entropy, nats; † = mass beyond the box > {MISSING_MASS_FLAG:g}.")
    print(f"\nObjective settings (library defaults, except alpha = {args.alpha:g} for {', '.join(CONTRASTIVE)}):")
    for o in args.objectives:
        settings = next((r.settings for r in results if r.objective == o and r.settings), "")
        print(f"- {o}: {settings or '—'}")
    print("\nRun details:")
    print(run_details(results))
    if args.figure is not None:
        title = (f"learned densities exp(-E) after {args.budget:g} s of training per model "
                 f"(MLP {HIDDEN[0]}x{HIDDEN[1]}, {threads} thread(s)); MMD² vs held-out data, MALA samples")
        written = plot_figure(results, heldout, args.datasets, args.objectives, Path(args.figure), title)
        print(f"\nFigure: {written}")
    return results


if __name__ == "__main__":
    main()
    sys.exit(0)
