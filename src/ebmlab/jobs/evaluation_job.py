"""The ``ebmlab evaluate`` job: options -> energy and data -> one log Z report -> data metrics.

:class:`EvaluationJob` holds the options (those of the command); :func:`run_evaluation_job`
resolves the energy SPEC (:mod:`ebmlab.jobs.specs`) and the data, routes a Bernoulli RBM to
its own estimators and every other energy to the function of its ``--log-partition`` method
(:mod:`ebmlab.jobs.evaluation`; with ``ksd`` and no method, no log Z), adds the score-only
metrics with ``ksd`` (:func:`~ebmlab.jobs.evaluation.with_ksd`), and returns the
:class:`EvaluationReport`. Errors are one-line ``ValueError``; :func:`in_option_terms` puts the
library's in the command's terms (its advice to use AIS becomes ``use --log-partition ais``,
its parameter names the options).
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass

import torch

from ebmlab import distributed as D
from ebmlab.jobs.evaluation import (
    ais_report, exact_report, known_log_z, quadrature_report, rbm_report, with_data_metrics, with_ksd,
)
from ebmlab.jobs.evaluation_rbm import as_rbm
from ebmlab.jobs.evaluation_report import EvaluationReport
from ebmlab.jobs.sampling import STATE_COPIES, format_bytes, memory_available
from ebmlab.jobs.sampling import in_option_terms as kernel_terms
from ebmlab.jobs.specs import load_training_run, resolve_energy
from ebmlab.jobs.threads import lean_threads
from ebmlab.partition import METHODS

#: The library's advice for energies beyond enumeration or quadrature, and the command's.
AIS_ADVICE = ("estimate log Z by annealed importance sampling (AIS) instead: ebmlab.partition.ais",
              "use --log-partition ais")
#: Library parameter -> the ``ebmlab evaluate`` option that sets it.
OPTION_NAMES = {"num_temperatures": "--temperatures", "num_runs": "--runs", "num_points": "--grid-points",
                "num_steps": "--steps-per-temperature"}
_PARAMETER = re.compile(r"\b(" + "|".join(OPTION_NAMES) + r")\b")


@dataclass(frozen=True)
class EvaluationJob:
    """Options of one evaluation (those of ``ebmlab evaluate``). ``bounds`` is one
    ``[low, high]`` pair or one per dimension (see :func:`parse_bounds`); ``None`` values
    take the method's defaults. ``method`` may be ``None`` only with ``ksd`` (no log Z)."""

    energy: str
    method: str | None
    data: str | None = None
    temperatures: int | str | None = None          # or "adaptive" (AIS, not RBMs)
    schedule: str = "sigmoid"
    runs: int = 100
    sampler: str | None = None
    steps_per_temperature: int | None = None
    base_std: float | None = None
    reverse: bool = True
    bounds: list | None = None
    grid_points: int | None = None
    num_examples: int | None = None
    num_levels: int | None = None
    metrics: bool = True
    metric_samples: int = 1000
    event_shape: tuple[int, ...] | None = None
    seed: int = 0
    device: str = "cpu"
    ksd: bool = False                              # KSD and Fisher divergence of the data (with_ksd)
    ksd_bootstrap: int = 500
    progress: bool = False                         # AIS: a bar over the temperatures (standard error)
    support: str | None = None                     # for a module that declares none: binary, categorical:K
    lean_threads: bool = False                     # torch threads from the problem size (ebmlab.jobs.threads)


#: Other library phrases -> the command's.
PHRASES = (("give bounds=[(low, high), ...] or data", "give --bounds LO,HI (or one pair per dimension) or --data"),
           ("use ebmlab.partition.exact_log_z (enumeration) or ebmlab.partition.ais",
            "use --log-partition exact (enumeration) or --log-partition ais"),
           ("pass event_shape=(d,)", "pass --event-shape D"))
#: Options that apply to one log-Z method only: (method, the job's field, the option, its unset value).
METHOD_OPTIONS = (("ais", "temperatures", "--temperatures", None), ("ais", "sampler", "--sampler", None),
                  ("ais", "steps_per_temperature", "--steps-per-temperature", None),
                  ("ais", "base_std", "--base-std", None), ("ais", "reverse", "--no-reverse", True),
                  ("quadrature", "bounds", "--bounds", None), ("quadrature", "grid_points", "--grid-points", None))


def in_option_terms(message: str) -> str:
    """A library message in the command's terms: AIS advice as ``use --log-partition ais``,
    ``num_temperatures`` as ``--temperatures`` (see :data:`OPTION_NAMES`), :data:`PHRASES`, kernel
    advice as ``use --sampler ...`` (:func:`ebmlab.jobs.sampling.in_option_terms`)."""
    for library, command in PHRASES:
        message = message.replace(library, command)
    return kernel_terms(_PARAMETER.sub(lambda m: OPTION_NAMES[m[1]], message.replace(*AIS_ADVICE)))


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


def load_data(job: EvaluationJob, event_shape: tuple[int, ...], loaded=None):
    """``(x (N, *event_shape), true_log_density or None)`` for ``job.data``: a data set spec, or
    ``heldout`` — the held-out split of the run directory given as ``job.energy``; ``loaded``:
    what :func:`read_data` returned already."""
    x, true_log_density = read_data(job) if loaded is None else loaded
    if tuple(x.shape[1:]) != tuple(event_shape):
        raise ValueError(f"data {job.data!r} of event shape {tuple(x.shape[1:])} do not match the energy's event "
                         f"shape {tuple(event_shape)}; use data and an energy of the same shape")
    return x, true_log_density


def read_data(job: EvaluationJob):
    """``(x (N, *event), true_log_density or None)`` for ``job.data``, before any shape check."""
    if job.data == "heldout":
        if not os.path.isdir(job.energy):
            raise ValueError("--data heldout needs a run directory as --energy; otherwise name a data set or file")
        run = load_training_run(job.energy)
        x, true_log_density = run.heldout_data(), run.dataset().true_log_density
        if len(x) == 0:
            raise ValueError(f"run {job.energy!r} kept no held-out data (heldout_fraction = 0); name a data set instead")
    else:
        from ebmlab.data import load_dataset

        dataset = load_dataset(job.data, num_samples=job.num_examples,
                               generator=torch.Generator().manual_seed(job.seed + 1))
        x, true_log_density = dataset.x, dataset.true_log_density
    return x, true_log_density


def _on(energy, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``x`` on ``device`` in the energy's floating dtype."""
    dtype = next((t.dtype for t in [*energy.parameters(), *energy.buffers()] if t.is_floating_point()), x.dtype)
    return x.to(device=device, dtype=dtype)


def log_z_report(job: EvaluationJob, energy, event_shape, support: str, generator: torch.Generator,
                 x: torch.Tensor | None) -> EvaluationReport:
    """The report of ``job.method`` on ``energy`` (``x``: the data, or ``None``)."""
    rbm = as_rbm(energy)
    if rbm is not None:
        if job.temperatures == "adaptive":
            raise ValueError("--temperatures adaptive is not available for RBM AIS; give a number of temperatures")
        base_data, label = x, "the data"
        if job.method == "ais" and os.path.isdir(job.energy):  # Salakhutdinov & Murray: the training data's rates
            base_data, label = load_training_run(job.energy).train_data(), "the run's training data"
        return rbm_report(rbm, job.method, generator, support=support, runs=job.runs, sampler=job.sampler,
                          base_data=None if base_data is None else base_data.to(generator.device), base_label=label,
                          temperatures=job.temperatures, steps_per_temperature=job.steps_per_temperature,
                          progress=job.progress)
    if job.method == "exact":
        if support == "real":
            raise ValueError("--log-partition exact needs a discrete energy; use quadrature (<= 3 dims) or ais")
        return exact_report(energy, event_shape, support, generator)
    if job.method == "quadrature":
        return quadrature_report(energy, event_shape, support, generator, data=x, bounds=job.bounds,
                                 grid_points=job.grid_points)
    return ais_report(energy, event_shape, support, generator, data=x, temperatures=job.temperatures,
                      schedule=job.schedule, runs=job.runs, sampler=job.sampler,
                      steps_per_temperature=job.steps_per_temperature, base_std=job.base_std, reverse=job.reverse,
                      progress=job.progress)


def validate(job: EvaluationJob) -> None:
    """Check the counts, the seed and ``--base-std`` of ``job`` once (``ValueError`` naming the option)."""
    counts = (("--runs", job.runs, 1), ("--steps-per-temperature", job.steps_per_temperature, 1),
              ("--grid-points", job.grid_points, 2), ("--num-examples", job.num_examples, 1),
              ("--num-levels", job.num_levels, 2))
    if isinstance(job.temperatures, int) or job.temperatures is None:
        counts += (("--temperatures", job.temperatures, 2),)
    for option, value, low in counts:
        if value is not None and int(value) < low:
            raise ValueError(f"{option} must be >= {low}, got {value}")
    for method, name, option, unset in METHOD_OPTIONS:
        if getattr(job, name) != unset and job.method != method:
            raise ValueError(f"{option} applies to --log-partition {method} only, not to "
                             f"{'--log-partition ' + job.method if job.method else '--ksd alone'}; drop it")
    if job.base_std is not None and not (math.isfinite(job.base_std) and job.base_std > 0):
        raise ValueError(f"--base-std must be a finite number > 0, got {job.base_std}")
    if not 0 <= int(job.seed) < 2**64:
        raise ValueError(f"--seed must be in [0, 2**64), got {job.seed}")


def check_sizes(job: EvaluationJob, event_shape, device: torch.device) -> None:
    """Refuse up front a quadrature grid or an AIS run that would not fit in memory, saying how
    much it would need: a grid of ``P^d`` nodes of ``d`` float64 coordinates (``d`` =
    ``prod(event_shape)``); AIS's ``runs`` states (``STATE_COPIES`` working copies) and its
    per-temperature arrays."""
    d = math.prod(event_shape)
    have = memory_available(device)
    if job.method == "quadrature" and job.grid_points is not None and d <= 3:
        nodes = int(job.grid_points) ** d
        need = nodes * (d + 1) * 8
        if need > have:
            raise ValueError(f"--grid-points {job.grid_points} in {d} dimension{'s' if d > 1 else ''} is {nodes:.3g} "
                             f"nodes: the grid would need {format_bytes(need)} of memory, more than the "
                             f"{format_bytes(have)} of {device}; lower --grid-points")
    if job.method == "ais":
        temperatures = job.temperatures if isinstance(job.temperatures, int) else 0
        need = int(job.runs) * d * 8 * STATE_COPIES + temperatures * 8 * 4
        if need > have:
            given = f" and --temperatures {temperatures}" if temperatures else ""
            raise ValueError(f"--runs {job.runs}{given} would need "
                             f"{format_bytes(need)} of memory, more than the {format_bytes(have)} of {device}; "
                             f"lower --runs{' or --temperatures' if temperatures else ''}")


def run_evaluation_job(job: EvaluationJob) -> EvaluationReport:
    """Evaluate ``job`` on this process's device (``cuda`` -> ``cuda:LOCAL_RANK`` under
    torchrun, where every rank returns the same report). Raises ``ValueError`` (one line)."""
    if job.ksd and not job.data:
        raise ValueError("--ksd needs --data to test against the energy's score: --data heldout for a run, or a "
                         "data set or a file of samples (.npy); the energy's own exact samples would tell nothing")
    if job.method is None and not job.ksd:
        raise ValueError(f"--log-partition is required ({', '.join(METHODS)}) unless --ksd is given")
    if job.method not in (*METHODS, None):
        raise ValueError(f"--log-partition must be one of {', '.join(METHODS)}, got {job.method!r}")
    validate(job)
    device = D.local_device(D.resolve_device(job.device, what="--device"))
    loaded = []  # the data, read once: for the event shape of an energy that declares none, then for the metrics

    def data_shape():
        loaded.append(read_data(job))
        return tuple(loaded[0][0].shape[1:])

    energy, shape, support = resolve_energy(job.energy, job.event_shape, job.support,
                                            shape_from=data_shape if job.data else None)
    check_sizes(job, shape, device)
    if job.lean_threads:
        lean_threads(job.runs if job.method == "ais" else job.metric_samples, energy, shape, device)
    energy = energy.to(device).eval()
    energy.requires_grad_(False)
    x, true_log_density = load_data(job, shape, loaded[0] if loaded else None) if job.data else (None, None)
    x = None if x is None else _on(energy, x, device)
    generator = torch.Generator(device=device).manual_seed(int(job.seed))
    report = (log_z_report(job, energy, shape, support, generator, x) if job.method is not None
              else EvaluationReport(event_shape=tuple(shape), support=support))
    if x is not None and job.method is not None:
        report = with_data_metrics(report, energy, x, true_log_density=true_log_density, metrics=job.metrics,
                                   metric_samples=job.metric_samples, num_levels=job.num_levels, bounds=job.bounds,
                                   seed=job.seed)
    if job.ksd:
        report = with_ksd(report, energy, x, true_log_density=true_log_density, num_examples=job.metric_samples,
                          num_bootstrap=job.ksd_bootstrap, seed=job.seed)
    learned = getattr(energy, "learned_log_z", None)  # NCE runs learn an estimate of log Z
    exact = known_log_z(energy, shape, support, device) if job.method in ("ais", "quadrature") else None
    return report.replace(energy=job.energy, data=job.data, learned_log_z=None if learned is None else float(learned),
                          exact_log_z=exact)


#: Where :func:`save_evaluation` keeps a run's evaluation (read by ``ebmlab report``).
EVALUATION_NAME = "evaluation.json"


def save_evaluation(report: EvaluationReport, run_dir: str | os.PathLike) -> str:
    """Write ``report.to_dict()`` (the JSON of ``evaluate --json``) atomically to
    ``RUN_DIR/evaluation.json``, replacing an earlier evaluation; returns the path."""
    import json

    from ebmlab.atomic import atomic_write

    path = os.path.join(run_dir, EVALUATION_NAME)
    text = json.dumps(report.to_dict(), indent=2) + "\n"
    return str(atomic_write(path, lambda f: f.write(text.encode("utf-8"))))


__all__ = ["EVALUATION_NAME", "EvaluationJob", "in_option_terms", "load_data", "log_z_report", "parse_bounds",
           "run_evaluation_job", "save_evaluation"]
