"""Log-likelihood of data under an energy-based model, given its log-partition function.

    log p(x) = -E(x) - log Z                 (nats)
    NLL      = -(1/N) Σ_n log p(x_n)         (nats per example)

Bits per dimension, for D-dimensional data, is ``NLL / (D ln 2)``. For 8-bit images the
convention (Theis, van den Oord & Bethge 2016; used by PixelCNN, Glow, ...) is the
*discrete* likelihood of the integer pixels under the continuous density with uniform
dequantisation: if the model's data are the 256 levels mapped into an interval of width
``data_range`` (1 for ``[0, 1]``, 2 for ``[-1, 1]``), each pixel's bin has width
``Δ = data_range / num_levels`` and ``P(bin) ≈ p(x) Δ``, so

    bits/dim = (NLL + D log(num_levels / data_range)) / (D ln 2).

:func:`bits_per_dim` adds this correction only when ``num_levels`` is given. For discrete
energies (Ising, binarised images) ``Z`` is a sum, the likelihood is already a probability,
and no correction applies.

``NLL = mean E(x) + log Z`` grows with ``log Z``. An AIS estimate of ``log Z`` is a stochastic
lower bound, so the NLL computed from it is optimistic (too low) in expectation; report the
AIS standard error with it, or use the reverse-AIS upper bound on ``log Z`` for a
conservative NLL.
"""

from __future__ import annotations

import math

import torch

from ebmlab.energy.base import EnergyFn, check_energy_output, event_shape_of


def check_data_shape(energy: EnergyFn, x: torch.Tensor, where: str = "held_out_nll") -> None:
    """Refuse data whose event shape differs from the energy's declared ``event_shape``."""
    if not isinstance(x, torch.Tensor) or x.dim() < 1 or x.shape[0] < 1:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{where}: data must be a tensor of shape (N >= 1, *event_shape), got {shape}")
    expected = event_shape_of(energy)
    if expected is not None and tuple(x.shape[1:]) != tuple(expected):
        raise ValueError(
            f"{where}: data of event shape {tuple(x.shape[1:])} do not match the energy's event shape "
            f"{tuple(expected)}; reshape the data or use a matching energy"
        )


def log_likelihood(energy: EnergyFn, x: torch.Tensor, log_z: float, batch_size: int = 4096) -> torch.Tensor:
    """``log p(x_n) = -E(x_n) - log Z`` for each example, shape ``(N,)`` float64, nats.

    ``x`` has shape ``(N, *event_shape)``; the energy is evaluated in batches without gradients.
    """
    check_data_shape(energy, x, where="log_likelihood")
    if not math.isfinite(float(log_z)):
        raise ValueError(f"log_likelihood: log_z must be finite, got {log_z}")
    if batch_size < 1:
        raise ValueError(f"log_likelihood: batch_size must be >= 1, got {batch_size}")
    parts = []
    device = next((t.device for t in [*getattr(energy, "parameters", list)(), *getattr(energy, "buffers", list)()]), x.device)
    with torch.no_grad():
        for chunk in x.to(device).split(batch_size):
            parts.append(-check_energy_output(energy(chunk), chunk, where="log_likelihood: energy").detach().to(torch.float64).cpu())
    return torch.cat(parts) - float(log_z)


def held_out_nll(energy: EnergyFn, x: torch.Tensor, log_z: float, batch_size: int = 4096) -> float:
    """Mean negative log-likelihood ``-(1/N) Σ log p(x_n)`` in nats per example."""
    return float(-log_likelihood(energy, x, log_z, batch_size).mean())


def bits_per_dim(nll: float, num_dims: int, num_levels: int | None = None, data_range: float = 1.0) -> float:
    """``(nll + D log(num_levels / data_range)) / (D ln 2)``; the correction only if ``num_levels``.

    Args:
        nll: mean negative log-likelihood in nats per example (continuous density).
        num_dims: D, the number of dimensions per example.
        num_levels: quantisation levels of the raw data (256 for 8-bit), or None for none.
        data_range: width of the interval the levels were mapped into (1 for [0, 1]).
    """
    if num_dims < 1:
        raise ValueError(f"bits_per_dim: num_dims must be >= 1, got {num_dims}")
    correction = 0.0
    if num_levels is not None:
        if num_levels < 2 or data_range <= 0:
            raise ValueError(f"bits_per_dim: need num_levels >= 2 and data_range > 0, got {num_levels}, {data_range}")
        correction = num_dims * math.log(num_levels / data_range)
    return (float(nll) + correction) / (num_dims * math.log(2))


__all__ = ["bits_per_dim", "check_data_shape", "held_out_nll", "log_likelihood"]
