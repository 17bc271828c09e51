"""MCMC diagnostics as ArviZ computes them, the run summary with its warnings, and export to ArviZ.

* :mod:`~ebmlab.diagnostics.core` — bulk and tail ESS, rank-normalised split R-hat, MCSE of the
  mean and of the sd (Vehtari et al. 2021), on draws ``(num_draws, num_chains, *event)``;
* :mod:`~ebmlab.diagnostics.summary` — :func:`summary`, :func:`format_summary`, :func:`warnings`;
* :mod:`~ebmlab.diagnostics.export` — :func:`to_arviz` (ArviZ is an optional extra).

Imports nothing of ebmlab outside this package: records are read by their attributes.
"""

from ebmlab.diagnostics.core import (
    as_draws, autocovariance, combined_autocorrelation, effective_sample_size, ess_bulk, ess_mean, ess_tail,
    mcse_mean, mcse_sd, rank_normalize, split_chains, split_rhat,
)
from ebmlab.diagnostics.summary import AcceptanceSummary, Summary, format_summary, min_ess_for, summary, warnings
from ebmlab.diagnostics.export import arviz_available, to_arviz

__all__ = ["AcceptanceSummary", "Summary", "arviz_available", "as_draws", "autocovariance",
           "combined_autocorrelation", "effective_sample_size", "ess_bulk", "ess_mean", "ess_tail", "format_summary",
           "mcse_mean", "mcse_sd", "min_ess_for", "rank_normalize", "split_chains", "split_rhat", "summary",
           "to_arviz", "warnings"]
