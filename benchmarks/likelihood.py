"""Benchmark: held-out likelihood of briefly trained EBMs, and AIS against quadrature.

For each objective (contrastive divergence with a replay buffer, exact / sliced / denoising
score matching, noise-contrastive estimation) and each 2-D toy set (8 gaussians, 2 spirals,
checkerboard) this script

1. trains an MLP energy with :func:`ebmlab.training.run.train`: by default with the settings
   ``ebmlab train --data DATA --objective OBJECTIVE`` uses (the defaults, then the recommended
   settings of :mod:`ebmlab.training.presets`), or with ``--fixed`` the same brief setting for
   every objective (MLP (64, 64), Adam at 2e-3, ``--steps`` updates);
2. computes ``log Z`` of the trained energy (over the raw data space) by grid quadrature on
   the held-out points' range widened by half its width per side (``missing`` is the
   quadrature's estimated mass beyond that box; ``inf`` means the density does not decay
   there, i.e. the model puts mass far from the data);
3. reports the held-out NLL ``mean E(x) + log Z`` on fresh draws of the toy set minus the true
   density's cross-entropy ``-mean log p_true(x)`` on the same points — a Monte-Carlo estimate
   of ``KL(p_true ‖ p_model)`` (≥ 0 up to noise) — with ``KL(p_true ‖ p_model)`` on the grid as
   a cross-check, and splits it into parts (:mod:`benchmarks.likelihood_parts`): ``noise floor``
   (``dsm`` only), ``KL(p ‖ p * N(0, σ²))`` at the final σ, what the σ-smoothed minimiser of DSM costs
   by design; ``weight KL``, the part due to the masses of the components of the true support alone
   (8 modes, 2 spiral arms, 8 squares; score matching does not see them when they are far apart);
   and ``rest`` = ``NLL − CE − noise floor − weight KL``, optimisation and capacity;
4. estimates ``log Z`` of the same energy by AIS (base: a Gaussian fitted to the training data;
   MALA transitions; sigmoid schedule) and reports ``AIS - quadrature`` and its z-score
   ``(AIS - quadrature) / SE``. AIS is a stochastic lower bound, so z is negative in
   expectation when the annealing is too short; ``|z| ≲ 3`` means agreement.

Objectives that do not normalise their model (score matching) can still give a finite NLL:
the density is normalised here by quadrature. NCE learns its own estimate of ``log Z``,
shown in the ``NCE log Z`` column for comparison.

Usage::

    python benchmarks/likelihood.py --threads 1          # the recommended setting of every objective
    python benchmarks/likelihood.py --fixed --steps 2000 # the same brief setting for all (the old table)
    python benchmarks/likelihood.py --quick              # 200 updates, small AIS: a smoke run
    python benchmarks/likelihood.py --objectives dsm --datasets 8gaussians --set objective_kwargs.sigma=0.05
    python benchmarks/likelihood.py --no-ais             # skip the AIS cross-check
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

try:  # run as ``python -m benchmarks.likelihood`` or imported as part of the package
    from .common import machine_description, resolve_device, set_threads
    from .likelihood_parts import component_weight_kl, noise_floor
except ImportError:  # run as ``python benchmarks/likelihood.py``
    from common import machine_description, resolve_device, set_threads
    from likelihood_parts import component_weight_kl, noise_floor

from ebmlab.training.config import TrainConfig
from ebmlab.data import load_dataset
from ebmlab.partition.likelihood import held_out_nll, log_likelihood
from ebmlab.metrics import grid_kl
from ebmlab.partition import BoundaryMassWarning, GaussianBase, GridResolutionWarning, ais, quadrature_log_z
from ebmlab.training.run import train

OBJECTIVES = ("pcd", "replay", "sm", "ssm", "dsm", "nce")
DATASETS = ("8gaussians", "2spirals", "checkerboard")
LABELS: dict[str, str] = {}


@dataclass
class Row:
    objective: str
    dataset: str
    train_seconds: float
    log_z_quad: float
    missing_mass: float
    nll: float
    true_ce: float
    excess_stderr: float
    grid_kl: float
    weight_kl: float
    log_z_ais: float
    ais_stderr: float
    ais_ess: float
    nce_log_z: float | None
    steps: int = 0
    error: str = ""
    noise_floor: float = math.nan

    @property
    def excess(self) -> float:
        return self.nll - self.true_ce

    @property
    def rest(self) -> float:
        """The gap less its by-design parts: ``NLL − CE − noise floor − weight KL`` (optimisation, capacity)."""
        return self.excess - (0.0 if math.isnan(self.noise_floor) else self.noise_floor) - self.weight_kl

    @property
    def ais_z(self) -> float:
        return (self.log_z_ais - self.log_z_quad) / self.ais_stderr if self.ais_stderr > 0 else math.nan


def train_config(objective: str, dataset: str, args, out: Path) -> TrainConfig:
    """The run's settings: those of ``ebmlab train`` (defaults < recommended < ``--set``), or with
    ``--fixed`` a brief run for every objective: MLP (64, 64), Adam, cosine schedule, ULA negatives."""
    if not args.fixed:
        return preset_config(objective, dataset, args)
    kwargs: dict = {}
    if objective == "dsm":
        kwargs["sigma"] = 0.1
    return TrainConfig(
        data=dataset, num_samples=args.train_points, objective=objective, objective_kwargs=kwargs,
        model="mlp", model_kwargs={"hidden": [64, 64]}, sampler="ula", sampler_steps=20, step_size=0.01,
        steps=args.steps, batch_size=256, lr=2e-3, seed=args.seed, device=str(args.device),
        checkpoint_every=max(args.steps, 1), heldout_fraction=0.0,
    )


def preset_config(objective: str, dataset: str, args) -> TrainConfig:
    """``ebmlab train --data DATASET --objective OBJECTIVE [--steps N] [--set ...]`` as a config."""
    from ebmlab.training.presets import recommend

    given = {"data": dataset, "objective": objective, "seed": args.seed, "device": str(args.device)}
    if args.steps is not None:
        given["steps"] = args.steps
    config = TrainConfig.from_dict({**TrainConfig().to_dict(), **given}).with_overrides(args.set)
    explicit = set(given) | {item.partition("=")[0].strip() for item in args.set}
    values, _ = recommend(config.to_dict(), explicit)
    return TrainConfig.from_dict(values)


def evaluate_model(objective: str, dataset: str, args, workdir: Path) -> Row:
    start = time.perf_counter()
    result = train(train_config(objective, dataset, args, workdir / f"{dataset}-{objective}"),
                   out=workdir / f"{dataset}-{objective}")
    seconds = time.perf_counter() - start
    energy = result.energy.eval()
    for p in energy.parameters():
        p.requires_grad_(False)

    eval_set = load_dataset(dataset, num_samples=args.eval_points, generator=torch.Generator().manual_seed(10_000 + args.seed))
    x = eval_set.x.to(args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryMassWarning)  # reported in the table instead
        warnings.simplefilter("ignore", GridResolutionWarning)  # the table reports NLL at the stated grid size
        quad = quadrature_log_z(energy, data=x, num_points=args.grid_points)
    nll = held_out_nll(energy, x, quad.log_z)
    true_log_p = eval_set.true_log_density(eval_set.x.double()).double().cpu()
    true_ce = float(-true_log_p.mean())
    excess_stderr = float((true_log_p - log_likelihood(energy, x, quad.log_z)).std() / math.sqrt(x.shape[0]))
    kl = grid_kl(lambda z: -eval_set.true_log_density(z.double()).to(z.dtype), energy, bounds=quad.bounds,
                 num_points=args.grid_points)
    weight_kl = component_weight_kl(energy, dataset, quad.bounds, args.grid_points)
    sigma = getattr(result.objective, "sigma", None) if objective == "dsm" else None
    floor = math.nan if sigma is None else noise_floor(dataset, float(sigma), _standardisation_std(energy))

    if args.no_ais:
        log_z_ais, ais_stderr, ais_ess = math.nan, math.nan, math.nan
    else:
        base = GaussianBase.fit(_training_data(result).to(args.device))
        generator = torch.Generator(device=args.device).manual_seed(args.seed)
        estimate = ais(energy, base=base, num_temperatures=args.ais_temperatures, num_runs=args.ais_runs,
                       kernel="mala", generator=generator)
        log_z_ais, ais_stderr, ais_ess = estimate.log_z, estimate.log_z_stderr, estimate.ess
    nce_log_z = getattr(energy, "learned_log_z", None)
    if nce_log_z is None and objective == "nce":
        state = result.objective.state_dict() if hasattr(result.objective, "state_dict") else {}
        nce_log_z = float(state["log_z"]) if "log_z" in state else None
    return Row(objective, dataset, seconds, quad.log_z, quad.missing_mass, nll, true_ce, excess_stderr, kl, weight_kl,
               log_z_ais, ais_stderr, ais_ess, nce_log_z, steps=result.step, noise_floor=floor)


def _standardisation_std(energy) -> list[float]:
    """The per-coordinate s.d. ``s`` of the run's standardisation ``z = (x − μ)/s`` (1 when there is none)."""
    std = getattr(energy, "std", None)
    return [1.0, 1.0] if std is None else [float(v) for v in std.reshape(-1).expand(2)]


def _setting_summary(config: TrainConfig) -> str:
    hidden = config.model_kwargs.get("hidden", [128, 128])
    extra = {k: v for k, v in config.model_kwargs.items() if k != "hidden"}
    if extra:
        hidden = f"{hidden} ({', '.join(f'{k}={v}' for k, v in extra.items())})"
    options = ", ".join(f"{k}={v}" for k, v in config.objective_kwargs.items())
    return (f"{config.model} {hidden}, {config.steps} updates of {config.batch_size}, {config.optimizer} lr {config.lr:g} "
            f"{config.lr_schedule}" + (f", EMA {config.ema_decay:g}" if config.ema_decay else "")
            + (f", {options}" if options else ""))


def _training_data(result) -> torch.Tensor:
    """The run's training points in the raw data space (the base of AIS is fitted to them)."""
    from ebmlab.training.loading import load_run_data

    return load_run_data(result.config).x


def _fmt(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    return f"{value:.{digits}f}"


def markdown_table(rows: list[Row]) -> str:
    header = ("| objective | data | updates | train s | log Z (quad) | missing | NLL | true CE | NLL − CE ± SE "
              "| grid KL | noise floor | weight KL | rest | log Z (AIS) ± SE | AIS − quad (z) | ESS | NCE log Z |")
    lines = [header, "|" + "|".join(["---"] * 17) + "|"]
    for r in rows:
        if r.error:
            lines.append(f"| {LABELS.get(r.objective, r.objective)} | {r.dataset} | failed: {r.error} |" + " |" * 14)
            continue
        floor = "—" if math.isnan(r.noise_floor) else _fmt(r.noise_floor)
        lines.append(
            f"| {LABELS.get(r.objective, r.objective)} | {r.dataset} | {r.steps} | {r.train_seconds:.1f} "
            f"| {_fmt(r.log_z_quad)} | {r.missing_mass:.1e} | {_fmt(r.nll)} | {_fmt(r.true_ce)} "
            f"| {_fmt(r.excess)} ± {_fmt(r.excess_stderr)} | {_fmt(r.grid_kl)} | {floor} | {_fmt(r.weight_kl)} | {_fmt(r.rest)} "
            f"| {_fmt(r.log_z_ais)} ± {_fmt(r.ais_stderr)} | {_fmt(r.log_z_ais - r.log_z_quad)} ({_fmt(r.ais_z, 1)}) "
            f"| {r.ais_ess:.0f} | {_fmt(r.nce_log_z)} |"
        )
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 updates, small AIS and grid")
    parser.add_argument("--fixed", action="store_true",
                        help="the same brief setting for every objective instead of its recommended one")
    parser.add_argument("--steps", type=int, default=None,
                        help="training updates per model (default: the recommended number; --fixed 2000; quick 200)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting of every run, as ebmlab train --set (repeatable)")
    parser.add_argument("--no-ais", action="store_true", help="skip the AIS estimate of log Z")
    parser.add_argument("--objectives", default=",".join(OBJECTIVES), help="comma-separated objective names")
    parser.add_argument("--datasets", default=",".join(DATASETS), help="comma-separated toy sets")
    parser.add_argument("--train-points", type=int, default=10_000)
    parser.add_argument("--eval-points", type=int, default=None, help="held-out draws (default 5000, quick 2000)")
    parser.add_argument("--grid-points", type=int, default=None, help="quadrature points per axis (default 513, quick 257)")
    parser.add_argument("--ais-temperatures", type=int, default=None, help="default 500, quick 100")
    parser.add_argument("--ais-runs", type=int, default=None, help="default 500, quick 100")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.steps is None and (quick or args.fixed):
        args.steps = 200 if quick else 2000
    args.eval_points = args.eval_points or (2000 if quick else 5000)
    args.grid_points = args.grid_points or (257 if quick else 513)
    args.ais_temperatures = args.ais_temperatures or (100 if quick else 500)
    args.ais_runs = args.ais_runs or (100 if quick else 500)
    args.device = resolve_device(args.device)
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    set_threads(args.threads)
    objectives = [o.strip() for o in args.objectives.split(",") if o.strip()]
    datasets = [d.strip() for d in args.datasets.split(",") if d.strip()]
    setting = f"{args.steps} updates per model" if args.fixed else "recommended settings"
    extra = f"; --set {' '.join(args.set)}" if args.set else ""
    print(f"# Held-out NLL and AIS vs quadrature ({setting}{extra})\n")
    print(machine_description(args.device) + "\n")
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="ebmlab-likelihood-") as tmp:
        for dataset in datasets:
            for objective in objectives:
                try:
                    rows.append(evaluate_model(objective, dataset, args, Path(tmp)))
                except Exception as err:  # one failed model should not hide the others' figures
                    message = str(err).splitlines()[0] if str(err) else type(err).__name__
                    rows.append(Row(objective, dataset, 0, *([math.nan] * 10), None, error=message[:80]))
                r = rows[-1]
                print(f"done: {dataset} / {objective}: {r.steps} updates in {r.train_seconds:.1f} s, NLL - CE "
                      f"{_fmt(r.excess)} ± {_fmt(r.excess_stderr)}, noise floor {_fmt(r.noise_floor)}, weight KL {_fmt(r.weight_kl)}, "
                      f"rest {_fmt(r.rest)}", file=sys.stderr, flush=True)
    print(markdown_table(rows))
    if not args.fixed:
        summaries = {f"{o}: {_setting_summary(preset_config(o, d, args))}" for d in datasets for o in objectives}
        print("\nSettings (ebmlab train --data DATA --objective OBJECTIVE):\n" + "\n".join(f"- {s}" for s in sorted(summaries)))
    ais_note = "AIS skipped (--no-ais)" if args.no_ais else (
        f"AIS: K = {args.ais_temperatures} sigmoid temperatures, {args.ais_runs} runs, MALA")
    print("\n'noise floor' (dsm): KL(p ‖ p * N(0, σ²)) at the run's final σ (standardised units), what a perfect "
          "fit of the smoothed data costs. 'weight KL': the part of the KL due to the masses of the true support's "
          "components alone (8 modes, 2 spiral arms, 8 squares; grid cells go to the nearest component). 'rest' = "
          "NLL − CE − noise floor − weight KL: optimisation and capacity.")
    print(f"{ais_note}; quadrature: {args.grid_points}² points; NLL on {args.eval_points} fresh draws, in nats per example.")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
