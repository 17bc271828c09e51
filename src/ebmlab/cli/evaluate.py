"""``ebmlab evaluate``: log Z of an energy, the NLL of data under it, and sample-quality metrics;
with ``--ksd`` (no log Z needed) the kernel Stein discrepancy of the data and the Fisher divergence.

Thin: parse options -> :class:`ebmlab.jobs.evaluation_job.EvaluationJob` ->
:func:`run_evaluation_job` -> print the report (:func:`format_report`), or exactly one JSON
object with ``--json``. The estimators, their defaults and the model samples for the metrics
are described in :mod:`ebmlab.jobs.evaluation` (RBMs: :mod:`ebmlab.jobs.evaluation_rbm`).

Exit status: 0 on success; 2 on bad input, with one line naming the alternative (quadrature
beyond 3 dimensions or enumeration of too many states -> AIS; K < 2; data whose shape does
not match the energy).
"""

from __future__ import annotations

import json
import os

import click

from ebmlab.cli.common import LEAN_THREADS_HELP, SUPPORT_HELP, OneLineErrors, is_terminal, set_threads, user_errors
from ebmlab.distributed import is_main_process
from ebmlab.jobs.evaluation import DEFAULT_TEMPERATURES
from ebmlab.jobs.evaluation_job import (
    EvaluationJob, in_option_terms, parse_bounds, run_evaluation_job, save_evaluation,
)
from ebmlab.jobs.evaluation_rbm import RBM_TEMPERATURES
from ebmlab.jobs.evaluation_report import format_report
from ebmlab.jobs.specs import parse_event_shape
from ebmlab.partition import METHODS

SAMPLERS = ("mala", "hmc", "nuts", "rwmh", "gibbs", "metropolis")  # AIS transitions (pt is no AIS move)


class Temperatures(click.ParamType):
    """``--temperatures``: an integer K, or ``adaptive`` (the library checks K >= 2)."""

    name = "K|adaptive"

    def convert(self, value, param, ctx):
        if value is None or isinstance(value, int) or value == "adaptive":
            return value
        try:
            return int(value)
        except ValueError:
            self.fail(f"must be an integer K >= 2 or 'adaptive', got {value!r}", param, ctx)


@click.command(cls=OneLineErrors, help="Estimate log Z of an energy; with --data, the data's NLL and sample metrics.",
               epilog="Exit status: 0 ok; 2 bad input (one line, naming the alternative).")
@click.option("--energy", "energy_spec", required=True, metavar="RUN_DIR|SPEC",
              help="A run directory, a built-in (gmm8, banana, gaussian:D, ising:L...), or file.py:NAME.")
@click.option("--data", "data_spec", default=None, metavar="FILE|NAME",
              help="Data set name or file (.npy, .npz, .csv), or 'heldout': the held-out split of the --energy run.")
@click.option("--log-partition", "method", default=None, type=click.Choice(METHODS),
              help="How to compute log Z (required unless --ksd, which needs no log Z).")
@click.option("--temperatures", type=Temperatures(), default=None,
              help=f"AIS: K temperatures (>= 2) [default: {DEFAULT_TEMPERATURES}; RBMs: {RBM_TEMPERATURES}], or "
                   "'adaptive': chosen by the conditional ESS of the weights (a pilot, then independent runs).")
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
@click.option("--ksd", is_flag=True,
              help="With --data: kernel Stein discrepancy of the data against the energy's score (IMQ kernel, "
                   "wild-bootstrap p-value) and, for data with a known density, the Fisher divergence to it.")
@click.option("--event-shape", default=None, metavar="D[,D...]",
              help="Event shape for energies that declare none [default: that of --data].")
@click.option("--support", default=None, metavar="binary|categorical:K", help=SUPPORT_HELP)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every random draw.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto (CUDA when available).")
@click.option("--threads", type=int, default=None, help=LEAN_THREADS_HELP.format(size="AIS runs (or the examples)"))
@click.option("--progress/--no-progress", default=None,
              help="AIS: a progress bar over the temperatures [default: on a terminal].")
@click.option("--json", "as_json", is_flag=True,
              help="Print exactly one JSON object; with a run directory as --energy, also save it as "
                   "RUN_DIR/evaluation.json (shown by ebmlab report).")
@user_errors(terms=in_option_terms)
def command(energy_spec, data_spec, method, temperatures, schedule, runs, sampler, steps_per_temperature, base_std,
            no_reverse, bounds, grid_points, num_examples, num_levels, no_metrics, ksd, event_shape, support, seed,
            device, threads, progress, as_json) -> None:
    if threads is not None:
        set_threads(threads)
    job = EvaluationJob(
        energy=energy_spec, method=method, data=data_spec, temperatures=temperatures, schedule=schedule, runs=runs,
        sampler=sampler, steps_per_temperature=steps_per_temperature, base_std=base_std, reverse=not no_reverse,
        bounds=parse_bounds(bounds), grid_points=grid_points, num_examples=num_examples, num_levels=num_levels,
        metrics=not no_metrics, event_shape=parse_event_shape(event_shape), seed=seed, device=device, ksd=ksd,
        support=support, lean_threads=threads is None, progress=is_terminal() if progress is None else progress,
    )
    report = run_evaluation_job(job)
    if not is_main_process():  # under torchrun every rank holds the same report; rank 0 prints it
        return
    click.echo(json.dumps(report.to_dict()) if as_json else format_report(report))
    if as_json and os.path.isdir(energy_spec):  # the run keeps its evaluation, for ebmlab report
        save_evaluation(report, energy_spec)
