"""Evaluation: log Z of an energy by one method, then the data's NLL and sample metrics.

One function per method, each returning an :class:`~ebmlab.jobs.evaluation_report.EvaluationReport`
that also carries ``draw(n)``, the model samples the metrics compare with the data:

* :func:`exact_report` — enumeration of a discrete energy (≤ 2²² states); exact draws.
* :func:`quadrature_report` — a grid, continuous energies in ≤ 3 dimensions (bounds given, or
  the data range widened by half its width per side); draws from the grid.
* :func:`ais_report` — annealed importance sampling in any dimension (runs split over the
  ranks under torchrun), from a base fitted to the data, else ``N(0, base_std² I)``, else
  the library's default base; plus a reverse-AIS upper bound started at exact draws when the
  energy has a sampler or few states, else at the data (heuristic). Draws: the final states
  resampled by weight, then rejuvenated by a short MCMC run on the target (resample-move).
* :func:`rbm_report` — a Bernoulli RBM's own estimators (:mod:`ebmlab.jobs.evaluation_rbm`).

:func:`with_data_metrics` returns a new report with the NLL (nats per example, ``mean E(x) +
log Z``), bits per dimension and, against ``draw``, the MMD² permutation test and the energy
distance; for data with a known density, its cross-entropy and ``KL(p_true ‖ p_model)`` on a grid.
:func:`with_ksd` adds what needs only the energy's score (:mod:`ebmlab.metrics`): the
kernel Stein discrepancy of the data with its wild-bootstrap p-value and, for data with a known
differentiable density, the Fisher divergence to it.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Callable, Sequence

import torch

from ebmlab import distributed as D
from ebmlab.jobs.distributed import distributed_ais
from ebmlab.jobs.evaluation_rbm import RBM_TEMPERATURES, rbm_log_z
from ebmlab.jobs.evaluation_report import EvaluationReport
from ebmlab.jobs.progress import progress_bar
from ebmlab.metrics import energy_distance, fisher_divergence, grid_kl, ksd_test, mmd_test
from ebmlab.partition import BoundaryMassWarning, GaussianBase, exact_log_z, exact_sample, grid_sample
from ebmlab.partition import quadrature_log_z
from ebmlab.partition.ais import AISResult, default_kernel, resolve_base
from ebmlab.partition.likelihood import bits_per_dim, held_out_nll
from ebmlab.partition.quadrature import MAX_DIMS, GridResolutionWarning, resolve_bounds
from ebmlab.partition.weights import ADVICE
from ebmlab.samplers import sample

DEFAULT_TEMPERATURES = 200
#: Reverse AIS starts at exact draws by enumeration up to this many states.
MAX_REVERSE_STATES = 2**16
#: Transitions of the rejuvenating MCMC run after resampling (sweeps for single-site kernels).
REJUVENATION_STEPS, REJUVENATION_SWEEPS = 20, 5
HEURISTIC_SOURCE = "data (heuristic: valid only if the model fits the data)"
#: What to raise when AIS is unreliable, in the command's terms (the library's: ADVICE).
CLI_ADVICE = "raise --temperatures or --runs, or use --temperatures adaptive"
#: The same advice for a run whose schedule is already adaptive.
CLI_ADVICE_ADAPTIVE = "raise --runs or --steps-per-temperature, or use a kernel that mixes better (--sampler)"


def _num_states(energy) -> int:
    return int(getattr(energy, "num_states", 2))


def exact_report(energy, event_shape: Sequence[int], support: str, generator: torch.Generator) -> EvaluationReport:
    """log Z by enumerating every state of a discrete energy; ``draw`` gives exact draws."""
    shape, device = tuple(event_shape), generator.device
    log_z = exact_log_z(energy, shape, device=device)
    return EvaluationReport(method="exact", event_shape=shape, support=support, log_z=log_z, log_z_stderr=0.0,
                            draw=lambda n: exact_sample(energy, n, generator, shape, device=device))


def known_log_z(energy, event_shape: Sequence[int], support: str, device=None) -> float | None:
    """log Z when it is known without estimating it: the energy's own ``log_z`` (a number:
    closed form for analytic energies, enumeration inside Ising ≤ 4×4, Potts ≤ 2²² states and RBMs
    with ≤ 22 units in a layer), else the enumeration of a discrete energy of ≤ 2¹⁶ states; else None."""
    own = getattr(energy, "log_z", None)  # a learned log Z is a tensor, not a known number
    if isinstance(own, (int, float)) and not isinstance(own, bool) and math.isfinite(own):
        return float(own)
    sites = math.prod(event_shape)
    if support != "real" and sites * math.log(max(2, _num_states(energy))) <= math.log(MAX_REVERSE_STATES):
        return float(exact_log_z(energy, tuple(event_shape), device=device))
    return None


def _as_options(message: str) -> str:
    """A quadrature warning in the command line's words."""
    return message.replace("raise num_points", "raise --grid-points").replace("widen the bounds", "widen --bounds")


def quadrature_report(energy, event_shape: Sequence[int], support: str, generator: torch.Generator, *,
                      data: torch.Tensor | None = None, bounds=None, grid_points: int | None = None) -> EvaluationReport:
    """log Z on a grid of ``grid_points`` per axis over ``bounds`` (default: from ``data``
    ``(N, d)``); a boundary-mass warning becomes one of the report's ``warnings``."""
    device = generator.device
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", BoundaryMassWarning)
        warnings.simplefilter("always", GridResolutionWarning)
        result = quadrature_log_z(energy, bounds=bounds, data=data, num_points=grid_points,
                                  event_shape=tuple(event_shape), device=device)
    found = tuple(_as_options(str(w.message)) for w in caught
                  if issubclass(w.category, (BoundaryMassWarning, GridResolutionWarning)))
    return EvaluationReport(
        method="quadrature", event_shape=tuple(event_shape), support=support, warnings=found, log_z=result.log_z,
        grid_error=result.grid_error, missing_mass=result.missing_mass, bounds=result.bounds,
        grid_points=result.num_points,
        draw=lambda n: grid_sample(energy, n, result.bounds, result.num_points, generator, device=device))


def ais_base(energy, event_shape: Sequence[int], support: str, data: torch.Tensor | None = None,
             base_std: float | None = None):
    """The AIS base: fitted to ``data`` ``(N, *event)``, else ``N(0, base_std² I)`` (real
    support), else the library's default (:func:`ebmlab.partition.ais.resolve_base`)."""
    given = None
    if data is None and base_std is not None and support == "real":
        given = GaussianBase(torch.zeros(tuple(event_shape)), float(base_std))
    if data is None and given is None:
        try:
            return resolve_base(energy, None, None, event_shape)
        except ValueError:
            raise ValueError("AIS needs a base distribution: give --data (a Gaussian is fitted to it) "
                             "or --base-std S for N(0, S² I)") from None
    return resolve_base(energy, given, data, event_shape)


def reverse_start(energy, event_shape: Sequence[int], support: str, n: int, generator: torch.Generator,
                  data: torch.Tensor | None = None) -> tuple[torch.Tensor | None, str | None]:
    """``(x (n, *event), source)`` to start reverse AIS at: the energy's own exact sampler, else
    exact draws by enumeration (discrete, ≤ 2¹⁶ states), else ``n`` data points (heuristic),
    else ``(None, None)``."""
    own = getattr(energy, "sample", None)
    if callable(own):
        return own(n, generator), "exact"
    sites = math.prod(event_shape)
    if support != "real" and sites * math.log(max(2, _num_states(energy))) <= math.log(MAX_REVERSE_STATES):
        return exact_sample(energy, n, generator, tuple(event_shape), device=generator.device), "exact"
    if data is not None:
        index = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))[:n]
        return data[index.to(data.device)], HEURISTIC_SOURCE
    return None, None


def resample_move(energy, result: AISResult, sampler: str, base, event_shape: Sequence[int],
                  generator: torch.Generator) -> Callable[[int], torch.Tensor]:
    """``draw(n)``: importance resampling of the AIS final states, then MCMC at β = 1 to
    rejuvenate the copies (20 transitions, or 5 sweeps for single-site kernels) with the last
    tuned step size (Gilks & Berzuini 2001)."""

    def draw(n: int) -> torch.Tensor:
        probs = torch.softmax(result.log_weights, 0)
        index = torch.multinomial(probs, n, replacement=True,
                                  generator=torch.Generator().manual_seed(generator.initial_seed()))
        kernel = default_kernel(sampler, base)
        if result.step_sizes is not None and result.step_sizes.numel():
            kernel = kernel.with_step_size(float(result.step_sizes[-1]))
        steps = (REJUVENATION_SWEEPS * math.prod(event_shape) if kernel.support == "discrete"
                 else REJUVENATION_STEPS)
        record = sample(energy, kernel, result.samples[index.to(result.samples.device)], num_steps=steps,
                        generator=generator, adapt=False, keep_samples=False)
        return record.final_state.x

    return draw


def ais_report(energy, event_shape: Sequence[int], support: str, generator: torch.Generator, *,
               data: torch.Tensor | None = None, temperatures: int | str | None = None, schedule: str = "sigmoid",
               runs: int = 100, sampler: str | None = None, steps_per_temperature: int | None = None,
               base_std: float | None = None, reverse: bool = True, progress: bool = False) -> EvaluationReport:
    """log Z by AIS with ``temperatures`` (default 200; ``"adaptive"``: the library's adaptive
    schedule) in the ``schedule`` and ``runs`` runs using ``sampler`` (default: mala for real,
    gibbs for discrete support), and with ``reverse`` the reverse-AIS upper bound; see the module
    docstring. ``reliable``/``warning`` are the library's (the bracket takes part only when the
    reverse runs started at exact draws), the advice in the command's terms. With ``progress``, a
    bar over the temperatures of every pass (on standard error, rank 0 only)."""
    if temperatures == "adaptive":
        temperatures, schedule = None, "adaptive"
    shape, device = tuple(event_shape), generator.device
    base = ais_base(energy, shape, support, data, base_std).to(device)
    sampler = sampler or ("mala" if support == "real" else "gibbs")
    start, source = reverse_start(energy, shape, support, runs, generator, data) if reverse else (None, None)
    # = ais(...) in one process; under torchrun the runs are split over the ranks and log Z is
    # one log-mean-exp over the weights of every run
    count = DEFAULT_TEMPERATURES if temperatures is None else int(temperatures)
    passes = 1 + (start is not None)  # the adaptive pilot's length is not known in advance: no total
    total = None if schedule == "adaptive" else (count - 1) * passes
    with progress_bar(total, "AIS", progress and D.is_main_process(), unit="temperature") as advance:
        result = distributed_ais(energy, base=base, num_temperatures=count, schedule=schedule, kernel=sampler,
                                 num_runs=runs, num_steps=steps_per_temperature, generator=generator,
                                 reverse_samples=start, event_shape=shape, device=device, callback=advance)
    if source != "exact":  # a heuristic upper bound cannot confirm or refute the estimate
        result = dataclasses.replace(result, check_bracket=False)
    acceptance = float(result.acceptance_rate.mean()) if result.acceptance_rate.numel() else math.nan
    upper = result.log_z_upper is not None
    return EvaluationReport(
        method="ais", event_shape=shape, support=support, log_z=result.log_z, log_z_stderr=result.log_z_stderr,
        ess=result.ess, num_temperatures=result.num_temperatures, num_runs=result.num_runs, sampler=sampler,
        mean_acceptance=acceptance, log_z_upper=result.log_z_upper, log_z_upper_stderr=result.log_z_upper_stderr,
        upper_bound_source=source if upper else None, reliable=result.reliable,
        warning=None if result.warning is None else result.warning.replace(
            ADVICE, CLI_ADVICE_ADAPTIVE if schedule == "adaptive" else CLI_ADVICE),
        draw=resample_move(energy, result, sampler, base, shape, generator))


def rbm_report(rbm, method: str, generator: torch.Generator, *, support: str = "binary",
               base_data: torch.Tensor | None = None, base_label: str = "the data", temperatures: int | None = None,
               runs: int = 100, sampler: str | None = None,
               steps_per_temperature: int | None = None, progress: bool = False) -> EvaluationReport:
    """log Z of a Bernoulli RBM by :func:`ebmlab.jobs.evaluation_rbm.rbm_log_z`: ``exact`` over
    its smaller layer, or RBM AIS (``temperatures`` default 1000) from the base-rate model of
    ``base_data`` ``(N, *event)`` (uniform when ``None``), described as ``base_label``."""
    fields: dict = {"warnings": []}
    count = RBM_TEMPERATURES if temperatures is None else temperatures
    with progress_bar(int(count) - 1, "RBM AIS", progress and method == "ais" and D.is_main_process(),
                      unit="temperature") as advance:
        draw = rbm_log_z(rbm, method, base_data, base_label, count, runs, sampler, steps_per_temperature, generator,
                         fields, callback=advance)
    found = tuple(fields.pop("warnings"))
    return EvaluationReport(method=method, event_shape=tuple(rbm.event_shape), support=support, warnings=found,
                            draw=draw, **fields)


def with_data_metrics(report: EvaluationReport, energy, x: torch.Tensor, *,
                      true_log_density: Callable[[torch.Tensor], torch.Tensor] | None = None, metrics: bool = True,
                      metric_samples: int = 1000, num_levels: int | None = None, bounds=None,
                      seed: int = 0) -> EvaluationReport:
    """``report`` plus the metrics of data ``x`` ``(N, *event_shape)``: NLL (nats per example,
    its standard error from log Z's and the energies' spread), bits per dimension (``num_levels``
    quantisation levels), the true density's cross-entropy; with ``metrics``, MMD² and the
    energy distance of ``min(metric_samples, N)`` data points (at most ``num_runs`` for AIS,
    whose particles are that many) against ``report.draw``, and the grid KL for ≤ 3-D
    continuous data with a ``true_log_density``. A new report; ``report`` is unchanged."""
    shape = report.event_shape
    nll = held_out_nll(energy, x, report.log_z)
    with torch.no_grad():
        spread = float(energy(x[:4096]).double().std()) if len(x) > 1 else 0.0
    out = report.replace(nll=nll, nll_stderr=math.hypot(report.log_z_stderr or 0.0, spread / math.sqrt(len(x))),
                         log_likelihood=-nll, num_examples=int(len(x)),
                         bits_per_dim=bits_per_dim(nll, math.prod(shape), num_levels))
    if true_log_density is not None:
        true_nll = float(-true_log_density(x.detach().cpu().double()).mean())
        out = out.replace(true_nll=true_nll, excess_nll=nll - true_nll)
    if not metrics or report.draw is None:
        return out
    cpu = torch.Generator().manual_seed(seed)
    m = min(metric_samples, len(x), report.num_runs if report.method == "ais" else metric_samples)
    data_sub = x[torch.randperm(len(x), generator=cpu)[:m].to(x.device)].detach().cpu()
    model = report.draw(m).detach().cpu()
    test = mmd_test(data_sub, model, num_permutations=200, generator=cpu)
    out = out.replace(mmd2=test.mmd2, mmd_p_value=test.p_value, energy_distance=energy_distance(data_sub, model),
                      metric_samples=m)
    if true_log_density is not None and report.support == "real" and len(shape) == 1 and shape[0] <= MAX_DIMS:
        box = report.bounds or resolve_bounds(shape[0], bounds, x, where="evaluate")
        kl = grid_kl(lambda z: -true_log_density(z.double()).to(z.dtype), energy, bounds=box, event_shape=shape)
        out = out.replace(kl_true_model=kl)
    return out


def with_ksd(report: EvaluationReport, energy, x: torch.Tensor, *,
             true_log_density: Callable[[torch.Tensor], torch.Tensor] | None = None, num_examples: int = 1000,
             num_bootstrap: int = 500, seed: int = 0) -> EvaluationReport:
    """``report`` plus the KSD² (U-statistic, IMQ kernel c = 1, β = -1/2) of ``min(num_examples,
    N)`` points of the data ``x (N, *event_shape)`` against ``energy``'s score, with its
    wild-bootstrap p-value (``num_bootstrap`` i.i.d. Rademacher replicates: data points are
    independent draws) and, with a ``true_log_density``, the Fisher divergence
    ``½ E‖s_model - s_true‖²`` over all of ``x`` with its standard error (a warning instead when
    that density has no score, e.g. the checkerboard's). Needs real support."""
    if report.support != "real":
        raise ValueError(f"--ksd needs a continuous energy (real support), got {report.support} support; "
                         f"drop --ksd for discrete energies")
    cpu = torch.Generator().manual_seed(seed)
    m = min(num_examples, len(x))
    test = ksd_test(x[torch.randperm(len(x), generator=cpu)[:m].to(x.device)], energy, num_bootstrap=num_bootstrap,
                    generator=cpu)
    out = report.replace(ksd=test.ksd2, ksd_p_value=test.p_value, ksd_examples=m)
    if true_log_density is None:
        return out
    try:
        fisher = fisher_divergence(x, energy, lambda z: -true_log_density(z.cpu().double()))
    except ValueError:  # a piecewise-constant density (checkerboard) has no gradient; NaN scores
        return out.with_warning("no Fisher divergence: the data's true density has no usable score "
                                "(not differentiable, or NaN)")
    return out.replace(fisher_divergence=fisher.fisher_divergence, fisher_divergence_stderr=fisher.stderr)


__all__ = ["DEFAULT_TEMPERATURES", "ais_base", "ais_report", "exact_report", "quadrature_report", "rbm_report",
           "resample_move", "reverse_start", "with_data_metrics", "with_ksd"]
