"""The energy abstraction: any module or callable ``x -> E(x)`` with ``p(x) ∝ exp(-E(x))``.

An energy maps a batch ``x`` of shape ``(B, *event_shape)`` to energies of shape ``(B,)``.
Everything else follows from it:

* unnormalised log-probability   ``log_prob(x) = -E(x)``
* log-ratio                      ``log p(x) - log p(x') = E(x') - E(x)``   (Z cancels)
* score                          ``score(x) = ∇ₓ log p(x) = -∇ₓ E(x)``
* gradient                       ``grad(x) = ∇ₓ E(x)``

Gradients are taken with respect to ``x`` only, by autograd; the graph is discarded unless
``create_graph=True`` (needed by score-matching objectives that differentiate through the
score).  The functions work whether or not the energy's parameters require grad.

:class:`Energy` is an optional base class for energies that know their event shape or their
log-partition function; plain ``nn.Module`` s and callables work everywhere too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Protocol, Sequence, runtime_checkable

import torch
from torch import nn

EnergyFn = Callable[[torch.Tensor], torch.Tensor]


class EnergyShapeError(ValueError):
    """An energy returned something that is not a finite-shaped ``(B,)`` tensor."""


class Energy(nn.Module):
    """Base class for energies ``E: (B, *event_shape) -> (B,)``.

    Subclasses implement :meth:`forward`. Optional attributes:

    * ``event_shape`` — the shape of one sample, e.g. ``(2,)`` or ``(1, 28, 28)``.
    * :attr:`log_z` — ``log ∫ exp(-E(x)) dx`` (or the sum, for discrete spaces) when known
      in closed form; ``None`` otherwise.
    * ``support`` — ``"real"`` (default), ``"binary"`` ({0, 1}) or ``"categorical"``
      ({0..K-1} with ``K = num_states``); read it with :func:`support_of`.
    """

    event_shape: tuple[int, ...] | None = None
    support: str = "real"
    num_states: int = 2  # K for categorical supports

    @property
    def log_z(self) -> float | None:
        return None

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Unnormalised log-density ``-E(x)``, shape ``(B,)``."""
        return -self(x)


@runtime_checkable
class HasValueAndGrad(Protocol):
    """An energy that computes ``(E(x), ∇ₓE(x))`` itself (e.g. a compiled or analytic one)."""

    def value_and_grad(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]: ...


def event_shape_of(energy: EnergyFn, default: Sequence[int] | None = None) -> tuple[int, ...] | None:
    """The event shape an energy declares (attribute ``event_shape``), else ``default``."""
    shape = getattr(energy, "event_shape", None)
    if shape is None:
        return None if default is None else tuple(int(s) for s in default)
    return tuple(int(s) for s in shape)


SUPPORT_KINDS = ("real", "binary", "categorical")


@dataclass(frozen=True)
class Support:
    """The values one site of an energy's states takes: the one description kernels check.

    Attributes:
        kind: ``"real"`` (x ∈ ℝ), ``"binary"`` (x ∈ {0, 1}) or ``"categorical"``
            (x ∈ {0, ..., K-1}); discrete states are integers held in a float tensor.
        num_states: K for the discrete kinds (2 for binary), ``None`` for real.
    """

    kind: str
    num_states: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in SUPPORT_KINDS:
            raise ValueError(f"Support: kind must be one of {', '.join(SUPPORT_KINDS)}, got {self.kind!r}")
        k = self.num_states
        if self.kind == "real" and k is not None:
            raise ValueError(f"Support: a real support has no num_states, got {k}")
        if self.kind == "binary" and k != 2:
            raise ValueError(f"Support: a binary support has num_states 2, got {k}")
        if self.kind == "categorical" and not (isinstance(k, int) and k >= 2):
            raise ValueError(f"Support: a categorical support needs an int num_states >= 2, got {k!r}")

    @property
    def discrete(self) -> bool:
        return self.kind != "real"


def support_of(energy: EnergyFn) -> Support:
    """The :class:`Support` an energy declares: attribute ``support`` (default ``"real"``),
    K = 2 for ``"binary"``, ``K = int(energy.num_states)`` (>= 2) for ``"categorical"``.

    Raises ``ValueError`` naming the energy's class for an unknown kind or a bad K.
    """
    kind = getattr(energy, "support", "real")
    name = type(energy).__name__
    if kind not in SUPPORT_KINDS:
        raise ValueError(f"{name}: support must be one of {', '.join(map(repr, SUPPORT_KINDS))}, got {kind!r}")
    if kind == "real":
        return Support("real")
    if kind == "binary":
        return Support("binary", 2)
    raw = getattr(energy, "num_states", None)
    try:
        k = int(raw)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: a categorical energy needs an integer num_states >= 2, got {raw!r}") from None
    if k != raw or k < 2:
        raise ValueError(f"{name}: a categorical energy needs an integer num_states >= 2, got {raw!r}")
    return Support("categorical", k)


def check_energy_output(energy_value: torch.Tensor, x: torch.Tensor, where: str = "energy") -> torch.Tensor:
    """Check that ``energy_value`` has shape ``(B,)`` for ``x`` of shape ``(B, *event)``.

    A ``(B, 1)`` output (the usual last ``nn.Linear(..., 1)``) is squeezed to ``(B,)``.
    Raises :class:`EnergyShapeError` naming ``where`` and both shapes otherwise.
    """
    if not isinstance(energy_value, torch.Tensor):
        raise EnergyShapeError(
            f"{where}: the energy must return a torch.Tensor, got {type(energy_value).__name__}"
        )
    batch = x.shape[0]
    if energy_value.dim() == 2 and energy_value.shape == (batch, 1):
        energy_value = energy_value[:, 0]
    if energy_value.shape != (batch,):
        raise EnergyShapeError(
            f"{where}: the energy must map x of shape {tuple(x.shape)} to shape ({batch},), "
            f"got {tuple(energy_value.shape)}"
        )
    return energy_value


def energy(energy_fn: EnergyFn, x: torch.Tensor) -> torch.Tensor:
    """``E(x)``, shape ``(B,)``, with the output shape checked."""
    return check_energy_output(energy_fn(x), x)


def log_prob(energy_fn: EnergyFn, x: torch.Tensor) -> torch.Tensor:
    """Unnormalised log-probability ``log p̃(x) = -E(x)``, shape ``(B,)``."""
    return -energy(energy_fn, x)


def log_ratio(energy_fn: EnergyFn, x: torch.Tensor, x_prime: torch.Tensor) -> torch.Tensor:
    """``log p(x) - log p(x') = E(x') - E(x)``, shape ``(B,)``; the partition function cancels."""
    if x.shape != x_prime.shape:
        raise ValueError(f"log_ratio: x and x_prime must have the same shape, got {tuple(x.shape)} and {tuple(x_prime.shape)}")
    both = energy(energy_fn, torch.cat([x, x_prime], dim=0))
    e_x, e_xp = both.split(x.shape[0])
    return e_xp - e_x


def value_and_grad(
    energy_fn: EnergyFn, x: torch.Tensor, create_graph: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(E(x), ∇ₓE(x))`` with shapes ``(B,)`` and ``x.shape``.

    Uses the energy's own ``value_and_grad`` when it has one (analytic or compiled energies),
    otherwise autograd on ``sum_b E(x_b)`` — the sum's gradient is the per-example gradient
    because examples do not interact. With ``create_graph=False`` both outputs are detached.
    """
    if not create_graph:
        own = getattr(energy_fn, "value_and_grad", None)  # the HasValueAndGrad protocol, checked cheaply
        if own is not None:
            return own(x)
    with torch.enable_grad():
        x_in = x if (create_graph and x.requires_grad) else x.detach().requires_grad_(True)
        e = check_energy_output(energy_fn(x_in), x_in)
        g = None
        if e.requires_grad:  # else the output was detached from x (no_grad, .detach(), numpy)
            (g,) = torch.autograd.grad(e.sum(), x_in, create_graph=create_graph, allow_unused=True)
        if g is None:
            name = type(energy_fn).__name__ if isinstance(energy_fn, torch.nn.Module) else \
                getattr(energy_fn, "__name__", type(energy_fn).__name__)
            raise ValueError(f"energy {name}: its output does not depend on x (no gradient flows back to the "
                             f"input: is it detached, computed under torch.no_grad() or in numpy?)")
    if create_graph:
        return e, g
    return e.detach(), g.detach()


def energy_rows(energy_fn: EnergyFn, index: torch.Tensor) -> EnergyFn:
    """The energy of rows ``index`` ``(n,)`` of the full batch, for evaluating a subset of chains.

    Most energies treat every row alike and are returned unchanged. An energy with per-row
    parameters (a tempered replica's β, a class per chain) defines ``select_rows(index)``, returning
    the energy whose row ``j`` is row ``index[j]`` of the full batch; NUTS uses it to evaluate
    only the chains still building their trees.
    """
    rows = getattr(energy_fn, "select_rows", None)
    return energy_fn if rows is None else rows(index)


def grad(energy_fn: EnergyFn, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """``∇ₓE(x)``, shape ``x.shape``."""
    return value_and_grad(energy_fn, x, create_graph=create_graph)[1]


def score(energy_fn: EnergyFn, x: torch.Tensor, create_graph: bool = False) -> torch.Tensor:
    """The score ``∇ₓ log p(x) = -∇ₓE(x)``, shape ``x.shape``."""
    return -grad(energy_fn, x, create_graph=create_graph)


# --------------------------------------------------------------------------------------
# Discrete data: the energy change of changing one site, for a batch of chains at once.
# --------------------------------------------------------------------------------------


def _flat_site_index(x: torch.Tensor, site: torch.Tensor | int) -> torch.Tensor:
    """Per-chain flat site index, shape ``(C,)`` (long), from an int or a ``(C,)`` tensor."""
    num_chains = x.shape[0]
    if isinstance(site, int):
        return torch.full((num_chains,), site, dtype=torch.long, device=x.device)
    return site.to(device=x.device, dtype=torch.long).expand(num_chains)


def set_site(x: torch.Tensor, site: torch.Tensor | int, value: torch.Tensor | float) -> torch.Tensor:
    """A copy of ``x`` (shape ``(C, *event)``) with flat site ``site[c]`` of chain c set to ``value[c]``."""
    idx = _flat_site_index(x, site)
    flat = x.reshape(x.shape[0], -1).clone()
    value_t = torch.as_tensor(value, dtype=x.dtype, device=x.device).expand(x.shape[0])
    flat.scatter_(1, idx[:, None], value_t[:, None])
    return flat.view_as(x)


def get_site(x: torch.Tensor, site: torch.Tensor | int) -> torch.Tensor:
    """Value of flat site ``site[c]`` in chain c, shape ``(C,)``."""
    idx = _flat_site_index(x, site)
    return x.reshape(x.shape[0], -1).gather(1, idx[:, None])[:, 0]


def site_energies(energy_fn: EnergyFn, x: torch.Tensor, site: torch.Tensor | int, num_states: int) -> torch.Tensor:
    """Energies of ``x`` with site ``site[c]`` set to each of the K values ``0..K-1``.

    Returns shape ``(C, K)``: entry ``[c, k] = E(x_c with x_{c,site_c} = k)``. Uses the
    energy's own ``site_energies(x, site)`` when it has one, otherwise evaluates the energy on
    the ``C·K`` modified states in one batch.
    """
    own = getattr(energy_fn, "site_energies", None)
    if callable(own):
        return own(x, _flat_site_index(x, site))
    num_chains = x.shape[0]
    variants = [set_site(x, site, float(k)) for k in range(num_states)]
    e = energy(energy_fn, torch.cat(variants, dim=0))
    return e.view(num_states, num_chains).T


def delta_energy_flip(energy_fn: EnergyFn, x: torch.Tensor, site: torch.Tensor | int) -> torch.Tensor:
    """``E(x with site flipped) - E(x)`` for binary ``x ∈ {0,1}``, shape ``(C,)``.

    Uses the energy's own ``delta_energy_flip(x, site)`` when it has one (e.g. the Ising
    model's local field), otherwise two batched energy evaluations.
    """
    own = getattr(energy_fn, "delta_energy_flip", None)
    if callable(own):
        return own(x, _flat_site_index(x, site))
    flipped = set_site(x, site, 1.0 - get_site(x, site))
    both = energy(energy_fn, torch.cat([flipped, x], dim=0))
    e_new, e_old = both.split(x.shape[0])
    return e_new - e_old


def num_sites(x: torch.Tensor) -> int:
    """Number of sites in one event of ``x`` (shape ``(C, *event)``)."""
    return math.prod(x.shape[1:])
