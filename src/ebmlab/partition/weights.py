"""The statistics of AIS importance weights, and when their standard error can be believed.

:func:`log_weight_statistics` is the one weight statistic of every AIS estimator here; the
weight-ESS rule below is behind ``AISResult.reliable`` and ``AISResult.warning``.

AIS reports ``log Ẑ = log mean(w)`` with the delta-method standard error
``SE = std(w) / (√N mean(w))``; with the weights' effective sample size
``ESS = (Σ w)² / Σ w²`` (Kong 1992) this is ``SE ≈ √(1/ESS - 1/N)``. Both the estimate and its
SE are computed from the same few largest weights, and when those few dominate the sample has
not seen the weight distribution's tail: the mean is then low (AIS is a stochastic lower bound)
and the SE too small *together*, so ``|log Ẑ - log Z|`` can be many reported SEs — the
confident wrong answer of a 10-D Gaussian with scales 0.1..10 from N(0, 10² I), 5.25 ± 0.71
against 9.19 with ESS ≈ 5 of 100 runs. A small ESS is the visible symptom (Owen 2013, *Monte
Carlo theory, methods and examples*, §9.3: a small ESS signals trouble; a large one is no
guarantee), so the estimate is called unreliable when

    ESS < max(MIN_ESS, MIN_ESS_FRACTION · N) = max(30, 0.1 N).

Why these numbers:

* ``ESS ≥ 30``. The weighted runs are worth about ESS independent draws of the target (Kong
  1992; Liu 1996, "rule of thumb"), and the SE is a central-limit statement about a mean whose
  spread is estimated from the same draws: it needs the sample size at which a mean's normal
  approximation and its sample standard deviation are conventionally trusted (n ≈ 30: the
  sample SD of 30 Gaussian draws is within ±13 % at one standard error, √(1/(2·29))).
* ``ESS ≥ 0.1 N``. For log-normal weights (the limit of AIS log weights, a sum of many
  increments) with log-variance σ², ``ESS/N ≈ e^{-σ²}`` and the Berry–Esseen distance of the
  mean of N weights from normality is of order ``(N/ESS)^{3/2} / √N`` (third over second moment
  of the weights): at ESS = 0.1 N it is ≈ 32/√N, so the normal interval is not trustworthy even
  for thousands of runs below that fraction (SMC samplers are stricter still: they resample
  when the ESS falls below N/2, Doucet & Johansen 2011).

With reverse-AIS runs started at exact draws of the target, the upper bound must also agree
with the estimate (:func:`bracket_reason`): the ESS cannot see mass that no run reached, the
bracket can.

Passing ``min_ess=0`` switches the checks off (the behaviour before it existed); a number sets
the threshold directly.
"""

from __future__ import annotations

import math

import torch

MIN_ESS = 30.0
MIN_ESS_FRACTION = 0.1
#: What to raise, in the library's terms (``ebmlab evaluate`` puts it in its options' terms).
ADVICE = "raise num_temperatures or num_runs, or use schedule='adaptive'"


def log_weight_statistics(log_weights: torch.Tensor) -> tuple[float, float, float]:
    """``(log mean exp(lw), delta-method stderr of it, ESS)`` for log weights of shape ``(N,)``.

    The one weight statistic of every AIS estimator here (:func:`~ebmlab.partition.ais.ais`,
    :func:`~ebmlab.partition.rbm_ais.rbm_ais`, runs pooled over processes). With
    ``w̃ = exp(lw - max lw)``: ``log mean = max + log mean(w̃)``,
    ``stderr = std(w̃) / (√N mean(w̃))`` (unbiased std; ``inf`` for N < 2),
    ``ESS = (Σ w̃)² / Σ w̃²`` (Kong 1992). Runs whose weight is ``-inf`` count as weight 0.
    """
    lw = torch.as_tensor(log_weights, dtype=torch.float64).detach().cpu().flatten()
    if lw.numel() < 1 or torch.isnan(lw).any() or (lw == math.inf).any():
        raise ValueError(f"log_weight_statistics: need >= 1 log weights, none NaN or +inf, got {lw.numel()}")
    top = lw.max()
    if top == -math.inf:
        return -math.inf, math.inf, 0.0
    w = torch.exp(lw - top)
    mean = w.mean()
    n = lw.numel()
    stderr = float(w.std() / (math.sqrt(n) * mean)) if n > 1 else math.inf
    ess = float(w.sum() ** 2 / w.square().sum())
    return float(top + torch.log(mean)), stderr, ess


def combine_log_weights(*log_weights: torch.Tensor) -> tuple[float, float, float]:
    """``(log Ẑ, stderr, ESS)`` of the runs of several AIS calls (e.g. from several processes)."""
    return log_weight_statistics(torch.cat([torch.as_tensor(lw, dtype=torch.float64).flatten().cpu() for lw in log_weights]))


def min_ess_for(num_runs: int, min_ess: float | None = None) -> float:
    """The ESS below which an AIS result of ``num_runs`` runs is unreliable: ``min_ess`` if
    given, else ``max(MIN_ESS, MIN_ESS_FRACTION · num_runs)``."""
    if min_ess is not None:
        if not (float(min_ess) >= 0):
            raise ValueError(f"ais: min_ess must be >= 0 (0 switches the reliability check off), got {min_ess}")
        return float(min_ess)
    return max(MIN_ESS, MIN_ESS_FRACTION * int(num_runs))


def _ess_reason(ess: float, num_runs: int, stderr: float, min_ess: float | None, whose: str, what: str) -> str | None:
    """Why weights of this ESS are too few for their standard error, or None."""
    threshold = min_ess_for(num_runs, min_ess)
    if math.isfinite(stderr) and ess >= threshold * (1 - 1e-9):  # equal weights give ESS = N up to rounding
        return None
    if math.isfinite(stderr) and int(num_runs) < threshold and ess >= 0.9 * int(num_runs):
        runs = "reverse runs" if "reverse" in whose else "runs"
        return (f"there are only {int(num_runs)} {runs}, fewer than the {threshold:g} a standard error "
                f"needs (their weights agree: ESS {ess:.1f}), so {what} ({stderr:.3g}) cannot be trusted yet")
    return (f"the {whose} effective sample size is {ess:.1f} of {int(num_runs)} runs (below {threshold:g}), so "
            f"{what} ({stderr:.3g}) does not bound the error and log Z is likely {'under' if 'upper' not in what else 'over'}estimated")


#: The bracket check's threshold in combined standard errors (a sound pair exceeds it with
#: probability ≈ 0.3 %, and an estimate that passes it is within ≈ 3√2 ≈ 4.2 of its own
#: standard errors of any log Z inside the bracket).
BRACKET_Z = 3.0


def bracket_reason(log_z: float, stderr: float, upper: float, upper_stderr: float, reverse_ess: float,
                   num_reverse: int, min_ess: float | None) -> str | None:
    """Why a forward estimate and its reverse-AIS upper bound (Grosse, Ghahramani & Adams 2015)
    do not confirm each other, or None.

    Both are stochastic bounds, ``E[log Ẑ] ≤ log Z ≤ E[log Ẑ_up]``, with gaps of order their
    variances, so for sound runs ``(log Ẑ_up - log Ẑ) / √(SE² + SE_up²)`` is of order one. A
    gap beyond :data:`BRACKET_Z` (either sign) means at least one side missed mass its weights
    cannot show — the forward runs of Neal's funnel that never enter the neck report an ESS of
    80 of 100 at 8-13 standard errors below the truth. Reverse weights with a small ESS (the
    rule of :func:`min_ess_for`) make the bound, and so the check, meaningless: also unreliable.
    """
    if min_ess_for(num_reverse, min_ess) == 0:
        return None
    weak = _ess_reason(reverse_ess, num_reverse, upper_stderr, min_ess, "reverse runs'", "the upper bound's standard error")
    if weak is not None:
        return weak + ", so the bracket cannot confirm the estimate"
    combined = math.hypot(stderr, upper_stderr)
    gap = (upper - log_z) / combined if combined > 0 else math.inf
    if abs(gap) <= BRACKET_Z:
        return None
    return (f"the reverse-AIS upper bound {upper:.4g} ± {upper_stderr:.2g} lies {gap:+.1f} combined standard errors "
            f"from the estimate {log_z:.4g} ± {stderr:.2g} (beyond ±{BRACKET_Z:g}), so the runs have missed part of "
            f"the target's mass")


def result_reliability(ess: float, num_runs: int, log_z: float, stderr: float, min_ess: float | None = None,
                       upper: tuple[float, float, float, int] | None = None,
                       advice: str = ADVICE) -> tuple[bool, str | None]:
    """``(reliable, warning)`` of an AIS result: the ESS rule on the forward weights, and with
    ``upper = (log_z_upper, its stderr, reverse ESS, reverse runs)`` the bracket check
    (:func:`bracket_reason`). ``warning`` is one sentence: every reason found, then ``advice``."""
    reasons = [_ess_reason(ess, num_runs, stderr, min_ess, "importance weights'", "the standard error")]
    if upper is not None and reasons[0] is None:
        reasons.append(bracket_reason(log_z, stderr, *upper, min_ess))
    reasons = [r for r in reasons if r is not None]
    return (True, None) if not reasons else (False, f"unreliable AIS estimate: {'; '.join(reasons)}; {advice}")


__all__ = ["ADVICE", "BRACKET_Z", "MIN_ESS", "MIN_ESS_FRACTION", "combine_log_weights", "log_weight_statistics", "min_ess_for",
           "result_reliability", "bracket_reason"]
