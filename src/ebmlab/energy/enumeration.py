"""Enumeration of a discrete state space: every state, the exact log-partition function, exact draws.

For ``x ∈ {0..K-1}^D`` (binary data is K = 2),

    log Z = log Σ_x exp(-E(x)),

computed over the ``K^D`` states in batches with a running log-sum-exp,

    m ← logaddexp(m, logsumexp_b(-E(x_b))),

so memory is bounded by one batch whatever ``K^D`` is. Enumeration is refused above
``max_states`` (default ``2**22`` ≈ 4.2 million states); annealed importance sampling
(:func:`ebmlab.partition.ais`) estimates ``log Z`` in any dimension.

:func:`exact_sample` draws exact samples from ``p(x) = exp(-E(x))/Z`` by inverse-CDF over the
same stream (two passes, memory bounded), e.g. to start reverse AIS at exact draws.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import torch

from ebmlab.energy.base import EnergyFn, check_energy_output, event_shape_of

MAX_STATES = 2**22


def enumerate_states(num_sites: int, num_states: int = 2, batch_size: int = 65536,
                     dtype: torch.dtype | None = None, device=None) -> Iterator[torch.Tensor]:
    """Yield every configuration of ``num_sites`` sites with ``num_states`` values, in batches.

    Configuration number ``n`` has site ``i`` equal to digit ``i`` of ``n`` in base K
    (site 0 most significant), so batches come in lexicographic order. Each batch has
    shape ``(b, num_sites)`` and ``dtype`` (default float).
    """
    total = num_states**num_sites
    powers = num_states ** torch.arange(num_sites - 1, -1, -1, device=device)
    for start in range(0, total, batch_size):
        n = torch.arange(start, min(start + batch_size, total), device=device)
        yield ((n[:, None] // powers) % num_states).to(dtype or torch.get_default_dtype())


def energy_dtype(energy: EnergyFn) -> torch.dtype:
    """The floating dtype of the energy's first parameter or buffer, else the default dtype."""
    if isinstance(energy, torch.nn.Module):
        for tensor in list(energy.parameters()) + list(energy.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
    return torch.get_default_dtype()


def energy_device(energy: EnergyFn) -> torch.device:
    """The device of the energy's first parameter or buffer, else the CPU."""
    if isinstance(energy, torch.nn.Module):
        for tensor in list(energy.parameters()) + list(energy.buffers()):
            return tensor.device
    return torch.device("cpu")


def discrete_space(energy: EnergyFn, event_shape: Sequence[int] | None = None,
                   num_states: int | None = None, where: str = "exact_log_z") -> tuple[tuple[int, ...], int]:
    """The event shape and the number of values per site K of a discrete energy.

    ``event_shape`` defaults to ``energy.event_shape``; ``num_states`` to ``energy.num_states``
    for an energy whose ``support`` is ``"binary"`` or ``"categorical"``.
    """
    shape = event_shape_of(energy, event_shape)
    if event_shape is not None:
        shape = tuple(int(s) for s in event_shape)
    if shape is None:
        raise ValueError(f"{where}: the energy declares no event_shape; pass event_shape=(...)")
    if num_states is None:
        support = getattr(energy, "support", "real")
        if support == "binary":
            num_states = 2
        elif support == "categorical":
            num_states = int(getattr(energy, "num_states", 2))
        else:
            raise ValueError(
                f"{where}: enumeration needs a discrete energy (support 'binary' or 'categorical'), "
                f"got support {support!r}; for continuous energies use quadrature (<= 3 dims) or AIS"
            )
    if int(num_states) < 2:
        raise ValueError(f"{where}: num_states must be >= 2, got {num_states}")
    return shape, int(num_states)


def _check_size(num_sites: int, num_states: int, max_states: int, where: str) -> int:
    # Compare in log space first: K**D can be astronomically large.
    if num_sites * math.log(num_states) > math.log(max_states) + 1e-9:
        raise ValueError(
            f"{where}: {num_states}^{num_sites} states exceed the enumeration limit of {max_states}; "
            f"estimate log Z by annealed importance sampling (AIS) instead: ebmlab.partition.ais"
        )
    return num_states**num_sites


def _energy_batches(energy: EnergyFn, shape: tuple[int, ...], num_states: int, batch_size: int,
                    device, dtype) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(states (b, *shape), -E(states) as float64 (b,))`` over every state."""
    num_sites = math.prod(shape)
    for flat in enumerate_states(num_sites, num_states, batch_size=batch_size, dtype=dtype, device=device):
        states = flat.view(-1, *shape)
        with torch.no_grad():
            e = check_energy_output(energy(states), states, where="exact_log_z: energy")
        yield states, -e.detach().to(torch.float64)


def exact_log_z(energy: EnergyFn, event_shape: Sequence[int] | None = None, num_states: int | None = None,
                batch_size: int = 65536, max_states: int = MAX_STATES, device=None,
                dtype: torch.dtype | None = None) -> float:
    """``log Z = log Σ_x exp(-E(x))`` by enumeration over ``{0..K-1}^D``, in nats.

    Args:
        energy: maps ``(B, *event_shape)`` states (floats holding integers) to ``(B,)``.
        event_shape: shape of one state; default ``energy.event_shape``.
        num_states: K; default from ``energy.support`` / ``energy.num_states``.
        batch_size: states per energy evaluation (bounds the memory).
        max_states: refuse to enumerate more than this many states.
        dtype: dtype of the states fed to the energy (default: the energy's parameter dtype,
            else the default dtype); the sum is accumulated in float64 either way.

    Raises:
        ValueError: a continuous energy, or more than ``max_states`` states (names AIS).
    """
    shape, k = discrete_space(energy, event_shape, num_states)
    _check_size(math.prod(shape), k, max_states, "exact_log_z")
    device = device or energy_device(energy)
    if batch_size < 1:
        raise ValueError(f"exact_log_z: batch_size must be >= 1, got {batch_size}")
    total = torch.tensor(-math.inf, dtype=torch.float64)
    for _, log_p in _energy_batches(energy, shape, k, batch_size, device, dtype or energy_dtype(energy)):
        total = torch.logaddexp(total, torch.logsumexp(log_p, 0).cpu())
    return float(total)


def exact_sample(energy: EnergyFn, num_samples: int, generator: torch.Generator | None = None,
                 event_shape: Sequence[int] | None = None, num_states: int | None = None,
                 batch_size: int = 65536, max_states: int = MAX_STATES, device=None,
                 dtype: torch.dtype | None = None) -> torch.Tensor:
    """``num_samples`` exact i.i.d. draws from ``p(x) = exp(-E(x))/Z``, shape ``(n, *event_shape)``.

    Inverse-CDF sampling over the enumeration stream: sorted uniforms ``u_(1) ≤ ... ≤ u_(n)``
    are matched to states by the running cumulative probability, then shuffled. The first
    pass computes ``log Z``; memory is one batch plus the samples.
    """
    if num_samples < 1:
        raise ValueError(f"exact_sample: num_samples must be >= 1, got {num_samples}")
    shape, k = discrete_space(energy, event_shape, num_states, where="exact_sample")
    _check_size(math.prod(shape), k, max_states, "exact_sample")
    device = device or (generator.device if generator is not None else energy_device(energy))
    dtype = dtype or energy_dtype(energy)
    log_z = exact_log_z(energy, shape, k, batch_size=batch_size, max_states=max_states, device=device, dtype=dtype)
    u = torch.rand(num_samples, generator=generator, dtype=torch.float64, device=device).sort().values
    out = torch.empty((num_samples, *shape), dtype=dtype, device=device)
    cum_before = 0.0
    filled = 0
    for states, log_p in _energy_batches(energy, shape, k, batch_size, device, dtype):
        cdf = cum_before + torch.cumsum(torch.exp(log_p - log_z), 0)
        last = len(cdf) - 1
        # Samples whose uniform falls below this batch's cumulative end belong here.
        end = int(torch.searchsorted(u, cdf[-1], right=False))
        if end > filled:
            idx = torch.searchsorted(cdf, u[filled:end], right=True).clamp_(max=last)
            out[filled:end] = states[idx]
            filled = end
        cum_before = float(cdf[-1])
        if filled == num_samples:
            break
    if filled < num_samples:  # rounding: the total probability summed to slightly below 1
        out[filled:] = states[-1]
    perm = torch.randperm(num_samples, generator=generator, device=device)
    return out[perm]
