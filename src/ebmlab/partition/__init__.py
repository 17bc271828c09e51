"""Log-partition functions ``log Z = log ∫ exp(-E(x)) dx``: exact, by quadrature, and by AIS.

* :func:`exact_log_z` — enumeration of every state of a discrete energy (≤ 2²² states);
* :func:`quadrature_log_z` — grid quadrature for continuous energies in 1–3 dimensions;
* :func:`ais` — annealed importance sampling in any dimension, with a reverse-AIS upper bound.

:func:`estimate_log_z` dispatches on a method name and returns a :class:`LogZEstimate`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ebmlab.energy.base import EnergyFn
from ebmlab.partition.ais import AISResult, ais, combine_log_weights, log_weight_statistics
from ebmlab.partition.bases import AnnealedEnergy, CategoricalBase, GaussianBase, fit_base
from ebmlab.energy.enumeration import MAX_STATES, exact_log_z, exact_sample
from ebmlab.partition.quadrature import (
    BoundaryMassWarning, GridResolutionWarning, QuadratureResult, grid_sample, quadrature_log_z,
)
from ebmlab.partition.schedules import linear_schedule, make_schedule, sigmoid_schedule

METHODS = ("exact", "quadrature", "ais")


@dataclass
class LogZEstimate:
    """``log Z`` by one of :data:`METHODS`.

    Attributes:
        log_z: the estimate, nats.
        log_z_stderr: its standard error (0 for the deterministic methods).
        method: ``"exact"``, ``"quadrature"`` or ``"ais"``.
        log_z_upper: an upper bound (reverse AIS) when available, else None.
        details: the method's own result (:class:`AISResult`, :class:`QuadratureResult`) or None.
    """

    log_z: float
    log_z_stderr: float
    method: str
    log_z_upper: float | None = None
    details: Any = field(default=None, repr=False)


def estimate_log_z(energy: EnergyFn, method: str, **options) -> LogZEstimate:
    """``log Z`` by ``method`` (``exact``, ``quadrature`` or ``ais``); ``options`` go to
    :func:`exact_log_z`, :func:`quadrature_log_z` or :func:`ais` respectively."""
    if method == "exact":
        return LogZEstimate(exact_log_z(energy, **options), 0.0, "exact")
    if method == "quadrature":
        result = quadrature_log_z(energy, **options)
        return LogZEstimate(result.log_z, 0.0, "quadrature", details=result)
    if method == "ais":
        result = ais(energy, **options)
        return LogZEstimate(result.log_z, result.log_z_stderr, "ais", result.log_z_upper, details=result)
    raise ValueError(f"estimate_log_z: method must be one of {', '.join(METHODS)}, got {method!r}")


__all__ = [
    "AISResult", "AnnealedEnergy", "BoundaryMassWarning", "CategoricalBase", "GridResolutionWarning", "GaussianBase", "LogZEstimate",
    "MAX_STATES", "METHODS", "QuadratureResult", "ais", "combine_log_weights", "estimate_log_z", "exact_log_z",
    "exact_sample", "fit_base", "grid_sample", "linear_schedule", "log_weight_statistics", "make_schedule",
    "quadrature_log_z", "sigmoid_schedule",
]
