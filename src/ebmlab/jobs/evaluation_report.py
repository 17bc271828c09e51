"""The report of an evaluation: log Z and how it was obtained, and the data metrics.

:class:`EvaluationReport` is what every function of :mod:`ebmlab.jobs.evaluation` returns; it
is frozen, so adding the data metrics gives a new report. :meth:`EvaluationReport.to_dict` is
the JSON object of ``ebmlab evaluate --json`` (fields that do not apply are left out) and
:func:`format_report` the text it prints otherwise.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

#: Keys present in :meth:`EvaluationReport.to_dict` even when ``None`` (``data`` is ``null``
#: without ``--data``).
ALWAYS_PRESENT = ("data",)


@dataclass(frozen=True, kw_only=True)
class EvaluationReport:
    """log Z of an energy by one method, and (with data) the NLL and sample-quality metrics; with
    ``--ksd``, the score-only goodness of fit (then log Z may be absent: ``method`` ``None``).

    Every field is a plain JSON-able value, given by keyword, in the order of the JSON object;
    ``None`` means "does not apply" and is left out of :meth:`to_dict`. Shapes: ``event_shape`` is the energy's; ``bounds`` one ``(low, high)``
    pair per dimension. Units: nats (``nll`` per example), bits per dimension.
    """

    method: str | None = None                     # exact, quadrature or ais; None: no log Z (--ksd alone)
    event_shape: tuple[int, ...]
    support: str                                  # real, binary or categorical
    warnings: tuple[str, ...] = ()
    # a Bernoulli RBM (ebmlab.jobs.evaluation_rbm)
    model: str | None = None                      # "rbm"
    num_visible: int | None = None
    num_hidden: int | None = None
    log_z: float | None = None
    log_z_stderr: float | None = None             # 0 for exact; None for quadrature (no randomness)
    # quadrature
    grid_error: float | None = None               # |log Z on the grid − on every other point|, nats
    missing_mass: float | None = None             # estimated mass beyond the bounds (fraction)
    bounds: list | None = None
    grid_points: int | None = None                # per axis
    # exact enumeration of an RBM's smaller layer
    enumerated_layer: str | None = None
    enumerated_units: int | None = None
    # AIS
    ess: float | None = None
    num_temperatures: int | None = None
    num_runs: int | None = None
    sampler: str | None = None
    schedule: str | None = None                   # RBM AIS: salakhutdinov-murray
    log_z_base: float | None = None               # RBM AIS
    base: str | None = None                       # RBM AIS: what the base model was fitted to
    mean_acceptance: float | None = None          # NaN when no intermediate temperature
    log_z_upper: float | None = None              # reverse AIS
    log_z_upper_stderr: float | None = None
    upper_bound_source: str | None = None         # "exact", or data (heuristic)
    reliable: bool | None = None                  # AIS: whether log_z_stderr can be believed
    warning: str | None = None                    # AIS: why not, and what to raise (null when reliable)
    # data metrics (with_data_metrics)
    nll: float | None = None
    nll_stderr: float | None = None
    log_likelihood: float | None = None
    num_examples: int | None = None
    bits_per_dim: float | None = None
    true_nll: float | None = None                 # the true density's cross-entropy (toy data)
    excess_nll: float | None = None
    mmd2: float | None = None
    mmd_p_value: float | None = None
    energy_distance: float | None = None
    metric_samples: int | None = None
    kl_true_model: float | None = None            # KL(p_true || p_model) on a grid
    # goodness of fit from the score alone (with_ksd; ebmlab.metrics)
    ksd: float | None = None                      # KSD² U-statistic, IMQ kernel (may be < 0)
    ksd_p_value: float | None = None              # wild bootstrap, i.i.d. Rademacher signs
    ksd_examples: int | None = None
    fisher_divergence: float | None = None        # ½ E‖s_model - s_true‖² over the data (known density)
    fisher_divergence_stderr: float | None = None
    # what was evaluated (the job's SPECs), and what the energy itself says
    energy: str | None = None
    data: str | None = None
    learned_log_z: float | None = None            # NCE runs learn an estimate of log Z
    exact_log_z: float | None = None              # known without estimating (closed form, enumeration)
    #: ``draw(n) -> (n, *event_shape)`` model samples for the metrics; not part of the report.
    draw: Callable[[int], torch.Tensor] | None = field(default=None, repr=False, compare=False)

    def replace(self, **changes: Any) -> EvaluationReport:
        """A new report with ``changes`` applied (the report itself is frozen)."""
        return dataclasses.replace(self, **changes)

    def with_warning(self, message: str) -> EvaluationReport:
        return self.replace(warnings=(*self.warnings, message))

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of ``ebmlab evaluate --json``: fields in declaration order, those that
        do not apply left out, non-finite floats as ``None``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            present = f.name in ALWAYS_PRESENT or (f.name == "warning" and self.reliable is not None)
            if f.name == "draw" or (value is None and not present):
                continue
            if isinstance(value, tuple):
                value = list(value)
            out[f.name] = None if isinstance(value, float) and not math.isfinite(value) else value
        return out


def crossed_bracket(r: EvaluationReport) -> str:
    """The one sentence for a crossed AIS bracket (lower end above the upper)."""
    gap = r.log_z - r.log_z_upper
    if r.upper_bound_source != "exact":
        return (f"note: the lower end lies {gap:.4f} nats above the upper, but the reverse runs started at the data, "
                f"not at exact draws, so that end is no bound and the crossing says nothing about log Z.")
    combined = math.hypot(r.log_z_stderr or 0.0, r.log_z_upper_stderr or 0.0)
    within = f" ({gap / combined:.1f} combined standard errors)" if combined > 0 else ""
    return (f"note: the lower end lies {gap:.4f} nats above the upper{within}, which is Monte-Carlo noise: both "
            f"ends estimate the same log Z.")


def format_report(report: EvaluationReport) -> str:
    """The human-readable summary that ``ebmlab evaluate`` prints without ``--json``."""
    r = report
    error_bar = (f"± {r.log_z_stderr:.4f} " if r.reliable is not False and r.log_z is not None
                 and r.log_z_stderr is not None and r.method != "exact" else "")  # no bare ±; none when exact
    lines = [f"log Z = {r.log_z:.4f} {error_bar}nats ({r.method})"] if r.log_z is not None else []
    if r.method == "ais":
        lines[0] += f", K = {r.num_temperatures}, {r.num_runs} runs, ESS {r.ess:.1f}"
        if r.reliable is False:
            lines[0] += ", UNRELIABLE (no error bar)"
            lines.append(f"warning: {r.warning}")
        if r.log_z_upper is not None:
            lines.append(f"  bracket [{r.log_z:.4f}, {r.log_z_upper:.4f}] (reverse AIS from {r.upper_bound_source})")
            if r.log_z_upper < r.log_z and (r.reliable is not False or r.upper_bound_source != "exact"):
                lines.append(f"  {crossed_bracket(r)}")
    if r.exact_log_z is not None and r.log_z is not None and r.method != "exact":
        lines.append(f"exact log Z = {r.exact_log_z:.4f} nats (known for this energy); the estimate is "
                     f"{r.log_z - r.exact_log_z:+.4f} from it")
    if r.model == "rbm":
        how = (f"enumerated its {r.enumerated_layer} layer (2^{r.enumerated_units} states)" if r.method == "exact"
               else f"RBM AIS (Salakhutdinov & Murray 2008) from the {r.base}")
        lines.append(f"  RBM with {r.num_visible} visible and {r.num_hidden} hidden units: {how}")
    if r.method == "quadrature":
        lines.append(f"  {r.grid_points} points per axis on {r.bounds}; grid error {r.grid_error:.2g} nats (log Z on "
                     f"every other point differs by that); estimated missing mass {r.missing_mass:.2g}")
    if r.nll is not None:
        lines.append(f"NLL = {r.nll:.4f} ± {r.nll_stderr:.4f} nats/example over {r.num_examples} examples "
                     f"({r.bits_per_dim:.4f} bits/dim)")
    if r.true_nll is not None:
        lines.append(f"  true density's cross-entropy {r.true_nll:.4f}; excess NLL {r.excess_nll:.4f}")
    if r.mmd2 is not None:
        lines.append(f"MMD² = {r.mmd2:.5f} (permutation p = {r.mmd_p_value:.3f}), energy distance "
                     f"{r.energy_distance:.5f}, on {r.metric_samples} data vs model samples")
    if r.learned_log_z is not None:
        lines.append(f"NCE's learned log Z = {r.learned_log_z:.4f}")
    if r.kl_true_model is not None:
        lines.append(f"KL(p_true ‖ p_model) on a grid = {r.kl_true_model:.4f} nats")
    if r.ksd is not None:
        lines.append(f"KSD² = {r.ksd:.5f} (IMQ kernel; wild-bootstrap p = {r.ksd_p_value:.3f}) on {r.ksd_examples} "
                     f"data points")
    if r.fisher_divergence is not None:
        lines.append(f"Fisher divergence to the data's true density = {r.fisher_divergence:.4f} ± "
                     f"{r.fisher_divergence_stderr:.4f}")
    lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


__all__ = ["EvaluationReport", "crossed_bracket", "format_report"]
