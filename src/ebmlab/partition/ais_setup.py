"""What :func:`ebmlab.partition.ais.ais` starts from when the caller names less: the kernel for a
registry name, set up for the base (:func:`default_kernel`), and the base distribution itself
(:func:`resolve_base`)."""

from __future__ import annotations

import torch
from torch import nn

from ebmlab.energy.base import EnergyFn, event_shape_of
from ebmlab.partition.bases import CategoricalBase, GaussianBase, fit_base
from ebmlab.samplers.base import Kernel
from ebmlab.samplers.registry import get_kernel_class, make_kernel


def default_kernel(name: str, base: nn.Module) -> Kernel:
    """The registered kernel ``name`` set up for ``base``; only options the kernel declares are passed.

    Discrete bases: ``num_states`` (if the kernel has it). Continuous bases: a step size scaled
    to the base's median std ``s`` for the built-in kernels (``mala``/``ula`` ``0.25 s²``,
    ``hmc`` ``0.3 s`` with 5 leapfrog steps and step-size jitter 0.9, ``nuts`` ``0.3 s`` with
    trees of depth ≤ 6, ``rwmh`` ``0.5 s``); other kernels keep their defaults.

    HMC's jitter (each run draws its step from ``ε·[0.1, 1.9]`` at every transition, independently
    of its state, so each transition still leaves its temperature invariant) matters on targets
    whose parts differ in scale. The step is tuned on all runs at once; on a mixture of a narrow
    and a wide mode the runs in the narrow one then reject nearly every trajectory, fall behind
    the path, and the weights understate the error. Measured over 40 seeds, 2-D mixture 0.3·N(−2e₁, 0.2²)
    + 0.7·N(2e₁, 1), base N(0, 3² I), K = 200: (log Ẑ − log Z)/SE has s.d. 1.68 and mean −1.02
    with 3 runs confidently (flagged reliable) more than 4.5 SE off, and 0.96, −0.11 and none with the jitter. NUTS is a valid AIS transition: it leaves each
    intermediate distribution invariant, and its trajectory length adapts to the temperature.

    Raises:
        ValueError: an unknown kernel name (the registry lists the known ones).
    """
    fields = getattr(get_kernel_class(name), "__dataclass_fields__", {})
    if isinstance(base, CategoricalBase):
        return make_kernel(name, **({"num_states": base.num_states} if "num_states" in fields else {}))
    s = float(base.std.median()) if isinstance(base, GaussianBase) else 1.0
    options = {"mala": {"step_size": 0.25 * s**2}, "ula": {"step_size": 0.25 * s**2},
               "hmc": {"step_size": 0.3 * s, "num_leapfrog": 5, "jitter": 0.9}, "rwmh": {"step_size": 0.5 * s},
               "nuts": {"step_size": 0.3 * s, "max_tree_depth": 6}}.get(name, {})
    return make_kernel(name, **{k: v for k, v in options.items() if k in fields})


def resolve_base(energy: EnergyFn, base: nn.Module | None, data: torch.Tensor | None,
                 event_shape: Sequence[int] | None) -> nn.Module:
    """The given base, else one fitted to ``data``, else uniform sites for a discrete energy, else
    ``N(mean, diag cov)`` of an analytic energy."""
    if base is not None:
        if not (hasattr(base, "log_prob") and hasattr(base, "sample")):
            raise ValueError("ais: base must have log_prob(x) and sample(n, generator), e.g. GaussianBase")
        return base
    support = getattr(energy, "support", "real")
    if data is not None:
        return fit_base(torch.as_tensor(data), support, int(getattr(energy, "num_states", 2)))
    shape = event_shape_of(energy, event_shape)
    if support in ("binary", "categorical") and shape is not None:
        k = 2 if support == "binary" else int(getattr(energy, "num_states", 2))
        return CategoricalBase(torch.ones(*shape, k))
    mean, cov = getattr(energy, "mean", None), getattr(energy, "covariance", None)
    if isinstance(mean, torch.Tensor) and isinstance(cov, torch.Tensor):
        return GaussianBase(mean.detach().clone(), torch.sqrt(torch.diagonal(cov.detach())))
    raise ValueError("ais: give a base distribution (GaussianBase(mean, std)) or data to fit one to")


__all__ = ["default_kernel", "resolve_base"]
