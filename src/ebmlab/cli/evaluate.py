"""``ebmlab evaluate``: log Z of an energy, the NLL of data under it, and sample-quality metrics.

Thin: parse options -> resolve the energy SPEC and the data -> :func:`evaluate` (one library
call per quantity) -> print a short report, or exactly one JSON object with ``--json``.

* ``--log-partition exact``: enumeration (discrete energies, ≤ 2²² states);
  ``quadrature``: a grid (continuous energies, ≤ 3 dimensions; bounds from ``--bounds``, else
  the data range widened by half its width per side); ``ais``: annealed importance sampling
  (any dimension; base fitted to the data, or ``N(0, base_std² I)``), plus a reverse-AIS upper
  bound started at exact draws when the energy has a sampler, else at the data (heuristic).
* A Bernoulli RBM (:class:`~ebmlab.energy.rbm.BernoulliRBM`, e.g. a run trained with
  ``--model rbm``) is routed to its own estimators (:mod:`ebmlab.jobs.evaluation_rbm`): ``exact``
  enumerates its smaller layer (≤ 22 units, whatever the number of visible units), ``ais``
  runs the RBM AIS of Salakhutdinov & Murray (2008) from the base-rate model fitted to the
  run's training data (for a run directory), else to ``--data``, else the uniform
  distribution, with ``--temperatures`` (default 1000, in their schedule's proportions) and
  ``--runs``; one block-Gibbs sweep per temperature. Model samples for the metrics are exact
  draws when the smaller layer has ≤ 20 units, else 1000 block-Gibbs sweeps from the base.
* With ``--data``: NLL in nats per example (``mean E(x) + log Z``; ``log_likelihood`` is its
  negative), bits per dimension, and,
  against model samples (exact draws, grid draws, or AIS samples resampled by weight), the
  MMD² permutation test and the energy distance (AIS samples are resampled by weight, then
  rejuvenated by a short MCMC run on the target, and compared on at most ``--runs`` points); for 2-D toy data with a known density, the
  true density's cross-entropy on the same points and ``KL(p_true ‖ p_model)`` on a grid.

Exit status: 0 on success; 2 on bad input, with one line naming the alternative (quadrature
beyond 3 dimensions or enumeration of too many states -> AIS; K < 2; data whose shape does
not match the energy).
"""

from __future__ import annotations

import json
import math
import os
import warnings
from typing import Any, Callable

import click
import torch

from ebmlab.partition.likelihood import bits_per_dim, check_data_shape, held_out_nll
from ebmlab.metrics import energy_distance, grid_kl, mmd_test
from ebmlab.partition import (
    BoundaryMassWarning, GaussianBase, MAX_STATES, METHODS, exact_log_z, exact_sample, fit_base, grid_sample,
    quadrature_log_z,
)
from ebmlab.distributed import is_main_process, local_device
from ebmlab.jobs.distributed import distributed_ais
from ebmlab.partition.ais import default_kernel, resolve_base
from ebmlab.samplers import sample
from ebmlab.partition.quadrature import MAX_DIMS, resolve_bounds
from ebmlab.cli.common import UserError, make_generator, resolve_device, user_errors
from ebmlab.jobs.evaluation_rbm import RBM_TEMPERATURES, as_rbm, rbm_log_z

SAMPLERS = ("mala", "hmc", "rwmh", "gibbs", "metropolis")
DEFAULT_TEMPERATURES = 200


def _finite(value: Any) -> Any:
    """JSON-safe: non-finite floats become None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    return value


def parse_bounds(text: str | None) -> list[float] | list[list[float]] | None:
    """``"-4,4"`` (every dimension) or ``"-4,4,-3,3"`` (one pair per dimension)."""
    if text is None or not text.strip():
        return None
    try:
        values = [float(v) for v in text.replace(";", ",").split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"--bounds must be numbers like -4,4 or -4,4,-3,3, got {text!r}") from None
    if len(values) < 2 or len(values) % 2:
        raise ValueError(f"--bounds needs pairs LOW,HIGH (one pair, or one per dimension), got {text!r}")
    return values if len(values) == 2 else [values[i:i + 2] for i in range(0, len(values), 2)]


def _log_z(energy, event_shape, support, method, x, bounds, grid_points, temperatures, schedule, runs, sampler,
           steps_per_temperature, base_std, reverse, generator, device, report) -> Callable[[int], torch.Tensor]:
    """Fill ``report`` with the log Z fields; return a function drawing n model samples."""
    temperatures = DEFAULT_TEMPERATURES if temperatures is None else temperatures
    if method == "exact":
        report["log_z"] = exact_log_z(energy, event_shape, device=device)
        report["log_z_stderr"] = 0.0
        return lambda n: exact_sample(energy, n, generator, event_shape, device=device)
    if method == "quadrature":
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", BoundaryMassWarning)
            result = quadrature_log_z(energy, bounds=bounds, data=x, num_points=grid_points, event_shape=event_shape,
                                      device=device)
        report.update(log_z=result.log_z, log_z_stderr=0.0, missing_mass=result.missing_mass,
                      bounds=result.bounds, grid_points=result.num_points)
        report["warnings"] += [str(w.message) for w in caught if issubclass(w.category, BoundaryMassWarning)]
        return lambda n: grid_sample(energy, n, result.bounds, result.num_points, generator, device=device)

    if x is not None:
        base = fit_base(x, support, int(getattr(energy, "num_states", 2)))
    elif base_std is not None and support == "real":
        base = GaussianBase(torch.zeros(event_shape), float(base_std))
    else:
        try:
            base = resolve_base(energy, None, None, event_shape)
        except ValueError:
            raise ValueError("AIS needs a base distribution: give --data (a Gaussian is fitted to it) "
                             "or --base-std S for N(0, S² I)") from None
    base = base.to(device)
    if sampler is None:
        sampler = "mala" if support == "real" else "gibbs"
    reverse_samples, source = None, None
    if reverse:
        own = getattr(energy, "sample", None)
        num_sites = math.prod(event_shape)
        if callable(own):
            reverse_samples, source = own(runs, generator), "exact"
        elif support != "real" and num_sites * math.log(max(2, int(getattr(energy, "num_states", 2)))) <= math.log(2**16):
            reverse_samples, source = exact_sample(energy, runs, generator, event_shape, device=device), "exact"
        elif x is not None:
            index = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[:runs]
            reverse_samples, source = x[index.to(x.device)], "data (heuristic: valid only if the model fits the data)"
    # = ais(...) in one process; under torchrun the runs are split over the ranks and log Z is
    # one log-mean-exp over the weights of every run
    result = distributed_ais(energy, base=base, num_temperatures=temperatures, schedule=schedule, kernel=sampler,
                             num_runs=runs, num_steps=steps_per_temperature, generator=generator,
                             reverse_samples=reverse_samples, event_shape=event_shape, device=device)
    report.update(log_z=result.log_z, log_z_stderr=result.log_z_stderr, ess=result.ess,
                  num_temperatures=result.num_temperatures, num_runs=result.num_runs, sampler=sampler,
                  mean_acceptance=float(result.acceptance_rate.mean()) if result.acceptance_rate.numel() else None)
    if result.log_z_upper is not None:
        report.update(log_z_upper=result.log_z_upper, log_z_upper_stderr=result.log_z_upper_stderr,
                      upper_bound_source=source)

    def resample_move(n: int) -> torch.Tensor:
        """Importance resampling of the AIS final states, then MCMC at β = 1 to rejuvenate the copies
        (20 transitions, or 5 sweeps for single-site kernels) with the last tuned step size."""
        probs = torch.softmax(result.log_weights, 0)
        index = torch.multinomial(probs, n, replacement=True, generator=torch.Generator().manual_seed(generator.initial_seed()))
        kernel = default_kernel(sampler, base)
        if result.step_sizes is not None and result.step_sizes.numel():
            kernel = kernel.with_step_size(float(result.step_sizes[-1]))
        steps = 5 * math.prod(event_shape) if kernel.support == "discrete" else 20
        record = sample(energy, kernel, result.samples[index.to(result.samples.device)], num_steps=steps,
                        generator=generator, adapt=False, keep_samples=False)
        return record.final_state.x

    return resample_move


def evaluate(energy, event_shape: tuple[int, ...], support: str, method: str, x: torch.Tensor | None = None,
             true_log_density: Callable[[torch.Tensor], torch.Tensor] | None = None, *, bounds=None,
             grid_points: int | None = None, temperatures: int | None = None, schedule: str = "sigmoid", runs: int = 100,
             sampler: str | None = None, steps_per_temperature: int | None = None, base_std: float | None = None,
             reverse: bool = True, metrics: bool = True, metric_samples: int = 1000, num_levels: int | None = None,
             seed: int = 0, device: torch.device | str = "cpu",
             base_data: torch.Tensor | None = None) -> dict[str, Any]:
    """Evaluate ``energy``: log Z by ``method``, and with data ``x`` ``(N, *event_shape)`` the NLL
    (nats per example) and the sample-quality metrics. Returns a JSON-ready dict.

    A Bernoulli RBM goes to its own estimators (see the module docstring); its AIS base rates
    come from ``base_data`` (e.g. the run's training data) when given, else from ``x``.
    ``temperatures`` (AIS) defaults to 200, or 1000 for a Bernoulli RBM."""
    if method not in METHODS:
        raise ValueError(f"--log-partition must be one of {', '.join(METHODS)}, got {method!r}")
    if temperatures is None and as_rbm(energy) is not None:
        temperatures = RBM_TEMPERATURES
    device = torch.device(device)
    generator = make_generator(seed, device)
    report: dict[str, Any] = {"method": method, "event_shape": list(event_shape), "support": support, "warnings": []}
    if x is not None:
        check_data_shape(energy, x, where="evaluate")
        x = x.to(device=device, dtype=next((t.dtype for t in [*energy.parameters(), *energy.buffers()]
                                            if t.is_floating_point()), x.dtype))
    rbm = as_rbm(energy)
    if rbm is not None:
        source, label = (base_data, "the run's training data") if base_data is not None else (x, "the data")
        source = None if source is None else source.to(device)
        draw = rbm_log_z(rbm, method, source, label, temperatures, runs, sampler, steps_per_temperature, generator,
                         report)
    else:
        draw = _log_z(energy, event_shape, support, method, x, bounds, grid_points, temperatures, schedule, runs,
                      sampler, steps_per_temperature, base_std, reverse, generator, device, report)
    if x is None:
        return report

    dims = math.prod(event_shape)
    nll = held_out_nll(energy, x, report["log_z"])
    with torch.no_grad():
        spread = float(energy(x[:4096]).double().std()) if len(x) > 1 else 0.0
    report.update(nll=nll, nll_stderr=math.hypot(report["log_z_stderr"], spread / math.sqrt(len(x))),
                  log_likelihood=-nll, num_examples=int(len(x)), bits_per_dim=bits_per_dim(nll, dims, num_levels))
    if true_log_density is not None:
        true_nll = float(-true_log_density(x.detach().cpu().double()).mean())
        report.update(true_nll=true_nll, excess_nll=nll - true_nll)
    if metrics:
        cpu = torch.Generator().manual_seed(seed)
        # AIS has only ``runs`` particles: more resampled copies than that would be judged
        # on the particle approximation's mode weights rather than on the model.
        m = min(metric_samples, len(x), runs if method == "ais" else metric_samples)
        data_sub = x[torch.randperm(len(x), generator=cpu)[:m].to(x.device)].detach().cpu()
        model = draw(m).detach().cpu()
        test = mmd_test(data_sub, model, num_permutations=200, generator=cpu)
        report.update(mmd2=test.mmd2, mmd_p_value=test.p_value, energy_distance=energy_distance(data_sub, model),
                      metric_samples=m)
        if true_log_density is not None and support == "real" and len(event_shape) == 1 and event_shape[0] <= MAX_DIMS:
            box = report.get("bounds") or resolve_bounds(event_shape[0], bounds, x, where="evaluate")
            report["kl_true_model"] = grid_kl(lambda z: -true_log_density(z.double()).to(z.dtype), energy, bounds=box,
                                              event_shape=event_shape)
    return report


def format_report(report: dict[str, Any]) -> str:
    """The human-readable summary printed without ``--json``."""
    method = report["method"]
    lines = [f"log Z = {report['log_z']:.4f} ± {report['log_z_stderr']:.4f} nats ({method})"]
    if method == "ais":
        lines[0] += f", K = {report['num_temperatures']}, {report['num_runs']} runs, ESS {report['ess']:.1f}"
        if report.get("log_z_upper") is not None:
            lines.append(f"  bracket [{report['log_z']:.4f}, {report['log_z_upper']:.4f}] "
                         f"(reverse AIS from {report['upper_bound_source']})")
    if report.get("model") == "rbm":
        how = (f"enumerated its {report['enumerated_layer']} layer (2^{report['enumerated_units']} states)"
               if method == "exact" else f"RBM AIS (Salakhutdinov & Murray 2008) from the {report['base']}")
        lines.append(f"  RBM with {report['num_visible']} visible and {report['num_hidden']} hidden units: {how}")
    if method == "quadrature":
        lines.append(f"  {report['grid_points']} points per axis on {report['bounds']}; "
                     f"estimated missing mass {report['missing_mass']:.2g}")
    if "nll" in report:
        lines.append(f"NLL = {report['nll']:.4f} ± {report['nll_stderr']:.4f} nats/example over "
                     f"{report['num_examples']} examples ({report['bits_per_dim']:.4f} bits/dim)")
    if "true_nll" in report:
        lines.append(f"  true density's cross-entropy {report['true_nll']:.4f}; excess NLL {report['excess_nll']:.4f}")
    if "mmd2" in report:
        lines.append(f"MMD² = {report['mmd2']:.5f} (permutation p = {report['mmd_p_value']:.3f}), energy distance "
                     f"{report['energy_distance']:.5f}, on {report['metric_samples']} data vs model samples")
    if "learned_log_z" in report:
        lines.append(f"NCE's learned log Z = {report['learned_log_z']:.4f}")
    if "kl_true_model" in report:
        lines.append(f"KL(p_true ‖ p_model) on a grid = {report['kl_true_model']:.4f} nats")
    lines += [f"warning: {w}" for w in report["warnings"]]
    return "\n".join(lines)


class _OneLineErrors(click.Command):
    """Report usage errors (missing option, bad choice...) as one line, exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise UserError(f"{err.format_message()} (see 'ebmlab evaluate --help')") from err


def _load_data(spec: str, energy_spec: str, event_shape, num_examples: int | None, seed: int):
    """``(x, true_log_density or None)`` for ``--data``: a data set spec, or ``heldout`` — the
    held-out split of the run directory given as ``--energy``."""
    if spec == "heldout":
        if not os.path.isdir(energy_spec):
            raise ValueError("--data heldout needs a run directory as --energy; otherwise name a data set or file")
        from ebmlab.training.runs import load_run

        run = load_run(energy_spec)
        x, true_log_density = run.heldout_data(), run.dataset().true_log_density
        if len(x) == 0:
            raise ValueError(f"run {energy_spec!r} kept no held-out data (heldout_fraction = 0); name a data set instead")
    else:
        from ebmlab.data import load_dataset

        dataset = load_dataset(spec, num_samples=num_examples, generator=torch.Generator().manual_seed(seed + 1))
        x, true_log_density = dataset.x, dataset.true_log_density
    if tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"data {spec!r} of event shape {tuple(x.shape[1:])} do not match the energy's event "
                         f"shape {tuple(event_shape)}; use data and an energy of the same shape")
    return x, true_log_density


@click.command(cls=_OneLineErrors, help="Estimate log Z of an energy; with --data, the data's NLL and sample metrics.",
               epilog="Exit status: 0 ok; 2 bad input (one line, naming the alternative).")
@click.option("--energy", "energy_spec", required=True, metavar="RUN_DIR|SPEC",
              help="A run directory, a built-in (gmm8, banana, gaussian:D, ising:L...), or file.py:NAME.")
@click.option("--data", "data_spec", default=None, metavar="FILE|NAME",
              help="Data set name or file (.npy, .npz, .csv), or 'heldout': the held-out split of the --energy run.")
@click.option("--log-partition", "method", required=True, type=click.Choice(METHODS), help="How to compute log Z.")
@click.option("--temperatures", type=int, default=None,
              help=f"AIS: K temperatures (>= 2) [default: {DEFAULT_TEMPERATURES}; RBMs: {RBM_TEMPERATURES}].")
@click.option("--schedule", type=click.Choice(["sigmoid", "linear"]), default="sigmoid", show_default=True,
              help="AIS temperature schedule.")
@click.option("--runs", type=int, default=100, show_default=True, help="AIS: independent runs.")
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="AIS transition kernel (default: mala for continuous, gibbs for discrete energies).")
@click.option("--steps-per-temperature", type=int, default=None, help="AIS: transitions per temperature.")
@click.option("--base-std", type=float, default=None, help="AIS without --data: base N(0, S² I).")
@click.option("--no-reverse", is_flag=True, help="AIS: skip the reverse-AIS upper bound.")
@click.option("--bounds", default=None, metavar="LO,HI[,LO,HI...]", help="Quadrature box: one pair or one per dimension.")
@click.option("--grid-points", type=int, default=None, help="Quadrature: points per axis.")
@click.option("--num-examples", type=int, default=None, help="Examples to draw/keep from --data.")
@click.option("--num-levels", type=int, default=None, help="Quantisation levels of the data (256 for 8-bit data scaled to [0, 1]) for bits/dim.")
@click.option("--no-metrics", is_flag=True, help="Skip MMD / energy distance / KL.")
@click.option("--event-shape", default=None, metavar="D[,D...]", help="Event shape for energies that declare none.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--json", "as_json", is_flag=True, help="Print exactly one JSON object.")
@user_errors
def command(energy_spec, data_spec, method, temperatures, schedule, runs, sampler, steps_per_temperature, base_std,
            no_reverse, bounds, grid_points, num_examples, num_levels, no_metrics, event_shape, seed, device,
            as_json) -> None:
    from ebmlab.jobs.specs import parse_event_shape, resolve_energy

    try:
        torch_device = resolve_device(device)
    except RuntimeError:
        raise UserError(f"--device {device!r} is not a device name; use cpu, cuda or cuda:N") from None
    torch_device = local_device(torch_device)  # cuda -> cuda:LOCAL_RANK under torchrun
    if method == "ais" and temperatures is not None and temperatures < 2:
        raise UserError(f"--temperatures must be >= 2 (the base and the target), got {temperatures}")
    energy, shape, support = resolve_energy(energy_spec, parse_event_shape(event_shape))
    energy = energy.to(torch_device).eval() if isinstance(energy, torch.nn.Module) else energy
    for p in energy.parameters():
        p.requires_grad_(False)
    if method == "exact" and support == "real":
        raise UserError("--log-partition exact needs a discrete energy; use quadrature (<= 3 dims) or ais")
    too_many = math.prod(shape) * math.log(int(getattr(energy, "num_states", 2))) > math.log(MAX_STATES)
    if method == "exact" and too_many and as_rbm(energy) is None:  # RBMs enumerate their smaller layer
        raise UserError(f"--log-partition exact: too many states to enumerate for event shape {shape} "
                        f"(limit {MAX_STATES}); use --log-partition ais")
    if method == "quadrature" and (len(shape) != 1 or shape[0] > MAX_DIMS):
        raise UserError(f"--log-partition quadrature works in at most {MAX_DIMS} dimensions, the energy has event "
                        f"shape {shape}; use --log-partition ais")
    x, true_log_density = _load_data(data_spec, energy_spec, shape, num_examples, seed) if data_spec else (None, None)
    base_data = None
    if method == "ais" and as_rbm(energy) is not None and os.path.isdir(energy_spec):
        from ebmlab.training.runs import load_run

        base_data = load_run(energy_spec).train_data()  # base rates of the training data (Salakhutdinov & Murray)
    report = evaluate(energy, shape, support, method, x, true_log_density, bounds=parse_bounds(bounds),
                      grid_points=grid_points, temperatures=temperatures, schedule=schedule, runs=runs,
                      sampler=sampler, steps_per_temperature=steps_per_temperature, base_std=base_std,
                      reverse=not no_reverse, metrics=not no_metrics, num_levels=num_levels, seed=seed,
                      device=torch_device, base_data=base_data)
    report.update(energy=energy_spec, data=data_spec)
    if getattr(energy, "learned_log_z", None) is not None:  # NCE runs learn an estimate of log Z
        report["learned_log_z"] = float(energy.learned_log_z)
    if not is_main_process():  # under torchrun every rank holds the same report; rank 0 prints it
        return
    if as_json:
        click.echo(json.dumps(_finite(report)))
    else:
        click.echo(format_report(report))
