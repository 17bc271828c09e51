"""The run summary: per-dimension statistics, the sampler's statistics, and plain warnings.

``summary(record)`` -> :class:`Summary` (mean, std, MCSE of both, bulk and tail ESS,
rank-normalised split R-hat of the first dimensions and of the energy; acceptance and
divergences); ``format_summary(record)`` is its text, the one run summary that ``ebmlab sample``
prints; ``warnings(record)`` the sentences a person should read, each saying what to try.

When to worry (Vehtari et al. 2021, §4): R-hat above 1.01; a bulk or tail ESS below 100 per
chain — here ``100·min(M, 4)``: 100 per chain for up to four chains (their recommended 400 for
four), 400 in all with more, since the precision of an average depends on the total ESS and
thousands of short chains would otherwise always warn; chains that never accept; divergences.
The sentences name library options (``step_size``, ``burn_in``, ``num_steps``,
``target_accept``, ``sampler='nuts'``); :mod:`ebmlab.jobs.sampling` shows them as command-line
options.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from ebmlab.diagnostics.core import (
    TAIL_PROB, _bulk, _constant, _flat, _mcse_mean, _mcse_sd, _normal_scores, _rank_rhat, _split_ess, _tail, as_draws,
    split_chains,
)

RHAT_THRESHOLD = 1.01
MIN_ESS_PER_CHAIN = 100
MAX_COUNTED_CHAINS = 4


@dataclass(frozen=True)
class AcceptanceSummary:
    """Per-run sampler statistics taken from a :class:`~ebmlab.samplers.ChainRecord`.

    ``mean``/``min``/``max`` are over the chains' acceptance rates; ``divergences`` counts
    divergent transitions over all chains, ``chains_with_divergences`` the chains with any,
    ``never_accepted`` the chains whose acceptance rate is 0 after burn-in. ``accept_prob``
    is the mean over draws and chains of the per-draw acceptance probability (``None`` when
    the record has none): what ``target_accept`` tunes. For Metropolis-type kernels it is
    close to ``mean``; for NUTS it is the accept statistic averaged over the trajectory
    (Hoffman & Gelman 2014, eq. 12), while ``mean`` is the fraction of draws that moved.
    :func:`format_summary` prints it when the two differ by more than 0.02.
    """

    mean: float
    min: float
    max: float
    divergences: int
    step_size: float | None
    sampler: str
    chains_with_divergences: int = 0
    never_accepted: int = 0
    num_steps: int | None = None
    accept_prob: float | None = None


@dataclass(frozen=True)
class Summary:
    """Per-dimension statistics of MCMC draws; every array has shape ``(len(names),)``.

    ``names`` label the rows: ``"x[i]"`` (or ``"x[i,j,k]"`` for image events) for the first
    dimensions of the flattened event, and ``"energy"`` when built from a record. ``rhat`` is
    the rank-normalised split R-hat (NaN for one chain); ``warnings`` the plain sentences of
    :func:`warnings`.
    """

    names: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    mcse_mean: np.ndarray
    mcse_sd: np.ndarray
    ess_bulk: np.ndarray
    ess_tail: np.ndarray
    rhat: np.ndarray
    num_draws: int
    num_chains: int
    num_dims: int
    acceptance: AcceptanceSummary | None = None
    warnings: tuple[str, ...] = ()

    @property
    def ess(self) -> np.ndarray:
        """The bulk ESS (this column's name before the split into bulk and tail)."""
        return self.ess_bulk


def _dim_names(event: tuple[int, ...], count: int) -> list[str]:
    if not event:
        return ["x"]
    names = []
    for i in range(count):
        idx = np.unravel_index(i, event)
        names.append("x[" + ",".join(str(int(j)) for j in idx) + "]")
    return names


def _rows(flat: np.ndarray) -> list[np.ndarray]:
    """mean, std, MCSE of mean and sd, bulk and tail ESS, R-hat of ``(N, M, D)`` draws."""
    pooled = flat.reshape(-1, flat.shape[2])
    ess_mean, halves = _split_ess(flat), split_chains(flat)
    z_halves = _normal_scores(halves)  # shared by the bulk ESS and the bulk R-hat
    columns = [_mcse_mean(flat, ess_mean), _mcse_sd(flat, "draws", ess_mean), _bulk(flat, z_halves),
               _tail(flat, TAIL_PROB)]
    constant = _constant(flat)
    for column in columns:
        column[constant] = np.nan
    rhat = _rank_rhat(halves, z_halves) if flat.shape[1] >= 2 else np.full(flat.shape[2], np.nan)
    return [pooled.mean(axis=0), pooled.std(axis=0, ddof=1), *columns, rhat]


def _acceptance(record: Any) -> AcceptanceSummary:
    rate = np.asarray(record.acceptance_rate.detach().double().cpu().numpy()).reshape(-1)
    divergences = np.asarray(record.divergences.detach().cpu().numpy()).reshape(-1)
    step = getattr(record, "step_size", None)
    if hasattr(step, "detach"):
        step = step.detach().double().cpu().numpy()
    if step is not None and np.size(step) > 1:  # one step size per chain: report their median
        step = float(np.median(np.asarray(step)))
    num_steps = getattr(record, "num_steps", None)
    stats = getattr(record, "stats", None) or {}
    accept_prob = stats.get("accept_prob")
    if accept_prob is not None:
        accept_prob = float(accept_prob.detach().double().mean()) if accept_prob.numel() else None
    return AcceptanceSummary(
        mean=float(rate.mean()), min=float(rate.min()), max=float(rate.max()),
        divergences=int(divergences.sum()), chains_with_divergences=int((divergences > 0).sum()),
        never_accepted=int((rate == 0).sum()) if num_steps != 0 else 0,
        step_size=None if step is None else float(step),
        sampler=getattr(record.kernel, "name", "") or type(record.kernel).__name__,
        num_steps=num_steps,
        accept_prob=accept_prob,
    )


def _worst(values: np.ndarray, names: Sequence[str], largest: bool) -> tuple[float, str] | None:
    """The largest (or smallest) value that is not NaN and its row name; ``None`` if all are NaN."""
    rows = np.flatnonzero(~np.isnan(values))
    if rows.size == 0:
        return None
    i = int(rows[np.argmax(values[rows]) if largest else np.argmin(values[rows])])
    return float(values[i]), names[i]


def min_ess_for(num_chains: int) -> int:
    """The ESS below which :func:`warnings` warns: ``100 · min(num_chains, 4)`` (module docstring)."""
    return MIN_ESS_PER_CHAIN * min(int(num_chains), MAX_COUNTED_CHAINS)


def _other(sampler: str | None, name: str, advice: str) -> str:
    """``advice`` about switching to sampler ``name``, unless the run already used it."""
    return "" if sampler == name else advice


def _sentences(s: Summary, min_ess: float) -> tuple[str, ...]:
    out = []
    sampler = None if s.acceptance is None else s.acceptance.sampler
    worst = _worst(s.rhat, s.names, largest=True)
    if worst is not None and worst[0] > RHAT_THRESHOLD:
        shown = _fmt(worst[0], 3) if round(worst[0], 3) > RHAT_THRESHOLD else _fmt(worst[0], 4)  # never "1.010 (above 1.01)"
        out.append(f"R-hat is {shown} for {worst[1]} (above {RHAT_THRESHOLD}): the chains disagree: they have "
                   "not all reached the target, or are short for their autocorrelation; try a longer burn_in and "
                   "more num_steps" + _other(sampler, "pt", ", or sampler='pt' if the target has separated modes") + ".")
    low = [(kind, *w) for kind, col in (("bulk", s.ess_bulk), ("tail", s.ess_tail))
           if (w := _worst(col, s.names, largest=False)) is not None and w[0] < min_ess]
    if low:
        parts = " and ".join(f"{kind} ESS {value:.0f} for {name}" for kind, value, name in low)
        rule = f"{MIN_ESS_PER_CHAIN} per chain" + (f", counting at most {MAX_COUNTED_CHAINS} chains"
                                                   if s.num_chains > MAX_COUNTED_CHAINS else "")
        out.append(f"Low effective sample size ({parts}, below {min_ess:.0f}: {rule}): means, quantiles and R-hat "
                   "are not yet reliable; try more num_steps" + _other(sampler, "nuts", ", or sampler='nuts' for a continuous target")
                   + ".")
    acc = s.acceptance
    if acc is not None and acc.never_accepted:
        out.append(f"{acc.never_accepted} of {s.num_chains} chain(s) never accepted a proposal after burn-in and "
                   "are stuck where they started; try a smaller step_size, or a longer burn_in to tune it.")
    if acc is not None and acc.divergences:
        out.append(f"{acc.divergences} divergent transition(s) in {acc.chains_with_divergences} of {s.num_chains} "
                   "chain(s): the step is too large for part of the target and the draws there are biased; try a "
                   "smaller step_size" + _other(sampler, "nuts", ", a higher target_accept, or sampler='nuts'")
                   + (" or a higher target_accept" if sampler == "nuts" else "") + ".")
    return tuple(out)


def summary(record_or_samples: Any, max_dims: int = 8, min_ess: float | None = None) -> Summary:
    """Mean, std, MCSE, bulk/tail ESS and rank-normalised split R-hat of the first ``max_dims``
    dimensions, with the warnings of :func:`warnings`.

    Args:
        record_or_samples: a :class:`~ebmlab.samplers.ChainRecord` (its ``samples``, plus an
            ``energy`` row and the acceptance statistics; any object with ``samples``,
            ``energy``, ``acceptance_rate``, ``divergences``, ``kernel``) or draws of shape
            ``(num_draws >= 4, num_chains, *event)``.
        max_dims: how many leading dimensions of the flattened event to report (>= 1).
        min_ess: the ESS to warn below; default :func:`min_ess_for` the number of chains.

    R-hat needs two chains and is NaN otherwise. Warnings look at the rows reported.
    """
    if int(max_dims) < 1:
        raise ValueError(f"summary: max_dims must be >= 1, got {max_dims}")
    record = record_or_samples if hasattr(record_or_samples, "acceptance_rate") else None
    samples = record.samples if record is not None else record_or_samples
    draws = as_draws(samples, "summary")
    flat = _flat(draws)
    shown = min(int(max_dims), flat.shape[2])
    names = _dim_names(tuple(draws.shape[2:]), shown)
    columns = _rows(flat[:, :, :shown])
    acceptance = None
    if record is not None:
        energy = as_draws(record.energy, "summary (energy)")[:, :, None]
        columns = [np.concatenate([c, e]) for c, e in zip(columns, _rows(energy))]
        names.append("energy")
        acceptance = _acceptance(record)
    result = Summary(tuple(names), *columns, draws.shape[0], draws.shape[1], flat.shape[2], acceptance)
    threshold = min_ess_for(draws.shape[1]) if min_ess is None else float(min_ess)
    object.__setattr__(result, "warnings", _sentences(result, threshold))
    return result


def warnings(record_or_summary: Any, max_dims: int = 8) -> tuple[str, ...]:
    """The plain-sentence warnings of a run (module docstring), ``()`` when nothing is wrong.

    ``record_or_summary``: a :class:`Summary`, a :class:`~ebmlab.samplers.ChainRecord` or draws
    ``(num_draws, num_chains, *event)``; flags R-hat > 1.01, bulk or tail ESS below
    :func:`min_ess_for`, chains that never accept, and divergences.
    """
    if isinstance(record_or_summary, Summary):
        return record_or_summary.warnings
    return summary(record_or_summary, max_dims=max_dims).warnings


def _fmt(value: float, digits: int) -> str:
    """``digits`` decimals, or that many significant digits for very large or small values."""
    if not np.isfinite(value):
        return str(value)  # "nan", "inf", "-inf"
    if abs(value) >= 1e5 or (value != 0 and abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{value:.{digits}f}"


def _whole(value: float) -> str:
    return "nan" if np.isnan(value) else f"{value:.0f}"


def format_summary(result: Summary | Any, max_dims: int = 8) -> str:
    """A plain-text table of a :class:`Summary` (or of ``summary(result, max_dims)``).

    One row per reported dimension with columns ``mean, std, mcse_mean, mcse_sd, ess_bulk,
    ess_tail, r_hat`` (ArviZ's names and order), a line with the draw counts and, for a record,
    the acceptance rate, divergences and step size; then one ``warning:`` line per warning.
    This is the one run summary: ``ebmlab sample`` prints it between its header and footer.
    """
    if not isinstance(result, Summary):
        result = summary(result, max_dims=max_dims)
    header = ("", "mean", "std", "mcse_mean", "mcse_sd", "ess_bulk", "ess_tail", "r_hat")
    rows: list[Sequence[str]] = [header]
    for i, name in enumerate(result.names):
        rows.append((name, _fmt(result.mean[i], 3), _fmt(result.std[i], 3), _fmt(result.mcse_mean[i], 3),
                     _fmt(result.mcse_sd[i], 3), _whole(result.ess_bulk[i]), _whole(result.ess_tail[i]),
                     _fmt(result.rhat[i], 3)))
    widths = [max(len(r[j]) for r in rows) for j in range(len(header))]
    lines = ["  ".join(r[0].ljust(widths[0]) if j == 0 else r[j].rjust(widths[j]) for j in range(len(r)))
             for r in rows]
    shown = sum(1 for n in result.names if n != "energy")
    lines.append(f"{result.num_draws} draws x {result.num_chains} chains; "
                 f"showing {shown} of {result.num_dims} dimension(s)")
    acc = result.acceptance
    if acc is not None:
        step = "" if acc.step_size is None else f"; step_size {acc.step_size:.4g}"
        where = f" in {acc.chains_with_divergences} chain(s)" if acc.divergences else ""
        shown = acc.accept_prob is not None and abs(acc.accept_prob - acc.mean) > 0.02  # NUTS; else they agree
        prob = f"; mean acceptance probability {acc.accept_prob:.3f}" if shown else ""
        lines.append(f"{acc.sampler}: acceptance mean {acc.mean:.3f} (min {acc.min:.3f}, "
                     f"max {acc.max:.3f}){prob}; divergences {acc.divergences}{where}{step}")
    lines.extend(f"warning: {w}" for w in result.warnings)
    return "\n".join(lines)


__all__ = ["AcceptanceSummary", "Summary", "format_summary", "min_ess_for", "summary", "warnings"]
