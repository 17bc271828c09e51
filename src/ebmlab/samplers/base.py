"""Shared pieces of every MCMC kernel: the chain state, the step info, the Metropolis test.

A kernel is a frozen dataclass of hyperparameters with two pure methods::

    state = kernel.init(energy, x0)                       # caches E(x0) (and ∇E(x0))
    state, info = kernel.step(energy, state, generator)   # one transition of every chain

Chains are the batch dimension: per-chain values have shape ``(C,)``; nothing loops over
chains and nothing mutates the kernel. Every random draw names ``generator``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import ClassVar

import torch

from ebmlab.energy.base import (
    EnergyFn, Support, check_energy_output, event_shape_of, support_of, value_and_grad,
)


@dataclass(frozen=True)
class ChainState:
    """The state of C chains.

    Attributes:
        x: positions, shape ``(C, *event_shape)``.
        energy: ``E(x)``, shape ``(C,)`` — cached so no kernel recomputes it.
        grad: ``∇ₓE(x)``, shape of ``x``, or ``None`` for kernels that do not use it.
        step: transitions taken so far (drives systematic-scan site order).
    """

    x: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor | None = None
    step: int = 0

    @property
    def num_chains(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class StepInfo:
    """What one transition did, per chain (all shapes ``(C,)``).

    Attributes:
        accept_prob: the Metropolis–Hastings acceptance probability ``min(1, α)`` (1 for
            kernels without a correction, 0 where α is NaN).
        accepted: whether the proposal was taken.
        diverged: the proposal's energy (or acceptance ratio) was NaN or infinite.
    """

    accept_prob: torch.Tensor
    accepted: torch.Tensor
    diverged: torch.Tensor


def uniform_log(shape: tuple[int, ...], generator: torch.Generator | None, like: torch.Tensor) -> torch.Tensor:
    """``log u`` for ``u ~ U(0, 1)``, shape ``shape``; never ``-inf`` issues since u > 0 a.s."""
    u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
    return torch.log(u)


def metropolis_accept(log_alpha: torch.Tensor, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Metropolis–Hastings test in log space: accept iff ``log u < log α``, ``u ~ U(0,1)``.

    ``log_alpha`` has shape ``(C,)``. NaN means reject and is flagged as a divergence, as is
    ``+inf`` arising from an infinite energy difference (the proposal is rejected then too,
    since an infinite-energy state has zero probability; ``+inf`` can only come from the
    *current* energy being infinite, which the run driver refuses at the start).

    Returns ``(accepted, accept_prob, diverged)``, each of shape ``(C,)``.
    """
    safe = torch.nan_to_num(log_alpha, nan=-torch.inf, posinf=-torch.inf, neginf=-torch.inf)
    diverged = safe != log_alpha  # NaN or +inf; -inf is a plain reject
    accepted = uniform_log(safe.shape, generator, safe) < safe
    accept_prob = safe.clamp(max=0.0).exp_()
    return accepted, accept_prob, diverged


def select(accepted: torch.Tensor, new: torch.Tensor, old: torch.Tensor) -> torch.Tensor:
    """Per-chain ``where``: ``new[c]`` where ``accepted[c]`` else ``old[c]``; any trailing shape."""
    mask = accepted.view(accepted.shape + (1,) * (new.dim() - accepted.dim()))
    return torch.where(mask, new, old)


def select_state(accepted: torch.Tensor, proposal: ChainState, current: ChainState) -> ChainState:
    """The chain state after the accept/reject: one ``torch.where`` per field."""
    mask = accepted.view(accepted.shape + (1,) * (proposal.x.dim() - accepted.dim()))
    grad = None
    if proposal.grad is not None and current.grad is not None:
        grad = torch.where(mask, proposal.grad, current.grad)
    return ChainState(
        x=torch.where(mask, proposal.x, current.x),
        energy=torch.where(accepted, proposal.energy, current.energy),
        grad=grad,
        step=current.step + 1,
    )


class _LegacySupport:
    """``kernel.support`` on a kernel class or instance: ``"discrete"`` if it samples any
    discrete kind, else ``"real"`` — the old two-valued description, derived from ``supports``."""

    def __get__(self, obj, owner) -> str:
        return "discrete" if any(kind != "real" for kind in owner.supports) else "real"


class Kernel:
    """Mixin for kernel dataclasses: names, capabilities, and the two ``init`` flavours.

    Class attributes:
        name: registry name (``"mala"``...).
        uses_grad: whether ``init`` must cache ``∇ₓE``.
        adaptive: whether ``step_size`` can be tuned during burn-in toward ``target_accept``.
        supports: the :class:`~ebmlab.energy.base.Support` kinds it samples, e.g. ``("real",)``
            or ``("binary", "categorical")``; ``support`` (read-only) is the old
            ``"real"``/``"discrete"`` summary of it.
    """

    name: ClassVar[str] = ""
    uses_grad: ClassVar[bool] = False
    adaptive: ClassVar[bool] = False
    supports: ClassVar[tuple[str, ...]] = ("real",)
    support = _LegacySupport()
    default_target_accept: ClassVar[float] = 0.5

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        legacy = cls.__dict__.get("support")
        if isinstance(legacy, str) and "supports" not in cls.__dict__:  # a third-party kernel of the old style
            cls.supports = ("binary", "categorical") if legacy == "discrete" else ("real",)
            cls.support = _LegacySupport()

    def __post_init__(self) -> None:
        self.validate()

    def init(self, energy: EnergyFn, x: torch.Tensor) -> ChainState:
        """The initial state: ``x`` with its energy (and gradient if the kernel uses it) cached.

        ``x`` is validated once here (:func:`check_start`); ``TypeError`` / ``ValueError``
        name the kernel, the energy and what was received.
        """
        check_start(self, energy, x)
        x = x.detach()
        where = f"{type(self).__name__}: energy at x0"
        try:
            if self.uses_grad:
                e, g = value_and_grad(energy, x)
                return ChainState(x=x, energy=check_energy_output(e, x, where), grad=g)
            with torch.no_grad():
                return ChainState(x=x, energy=check_energy_output(energy(x), x, where).detach())
        except RuntimeError as err:
            explain_start_failure(type(self).__name__, energy, x, err)
            raise

    def num_states_for(self, energy: EnergyFn, support: Support) -> int | None:
        """K the kernel will use on ``energy`` (``None`` for real states); kernels with their
        own ``num_states`` check it against the energy's here."""
        return support.num_states

    def with_step_size(self, step_size: float):
        """A copy of the kernel with another step size (used by adaptation)."""
        return dataclasses.replace(self, step_size=float(step_size))

    def validate(self) -> None:
        """Check hyperparameters; raise ``ValueError`` naming the kernel and the value."""
        step = getattr(self, "step_size", None)
        if step is not None and not (float(step) > 0):
            raise ValueError(f"{type(self).__name__}: step_size must be > 0, got {step}")


#: registered kernels for each support kind, for error messages (base cannot import the registry)
KERNELS_FOR = {"real": "mala, hmc, nuts, rwmh or ula", "binary": "gibbs, metropolis, gwg or block_gibbs",
               "categorical": "gibbs, metropolis or gwg"}


def _shown(values: torch.Tensor, limit: int = 5) -> str:
    unique = torch.unique(values.detach().flatten().cpu())
    text = ", ".join(f"{float(v):g}" for v in unique[:limit])
    return text + (", ..." if unique.numel() > limit else "")


def check_start(kernel: Kernel, energy: EnergyFn, x0: torch.Tensor) -> Support:
    """Validate starting states ``x0`` ``(C, *event)`` for ``kernel`` on ``energy``, once.

    Checks, in order: ``x0`` is a floating :class:`torch.Tensor` (``TypeError``) of shape
    ``(C >= 1, *event)`` with finite values; the energy's :class:`Support` kind is one the
    kernel samples; the event shape equals ``energy.event_shape`` when declared; discrete
    states are integers in ``{0, ..., K-1}``. Each ``ValueError`` names the kernel, the
    energy's class and the value received. Returns the energy's support.
    """
    kname, ename = type(kernel).__name__, type(energy).__name__
    if not isinstance(x0, torch.Tensor):
        raise TypeError(f"{kname}: x0 must be a torch.Tensor, got {type(x0).__module__}.{type(x0).__name__} "
                        f"(energy {ename}); convert it with torch.as_tensor(x0, dtype=torch.float32)")
    if not torch.is_floating_point(x0):
        raise TypeError(f"{kname}: x0 must be a floating tensor (discrete states are integers held in floats), "
                        f"got dtype {x0.dtype} (energy {ename}); pass x0.float()")
    if x0.dim() < 2 or x0.shape[0] < 1:
        raise ValueError(f"{kname}: x0 must have shape (num_chains >= 1, *event_shape), got {tuple(x0.shape)} "
                         f"(energy {ename})")
    if not torch.isfinite(x0).all():
        raise ValueError(f"{kname}: x0 contains NaN or infinite values (energy {ename})")
    support = support_of(energy)
    if support.kind not in kernel.supports:
        raise ValueError(f"{kname} samples {' or '.join(kernel.supports)} states but the energy {ename} has "
                         f"support {support.kind!r}; use a {support.kind} kernel ({KERNELS_FOR[support.kind]})"
                         + (", or declare discrete states with energy.support = 'binary' (or 'categorical' and "
                            "energy.num_states = K)" if support.kind == "real" else ""))
    shape = event_shape_of(energy)
    if shape is not None and tuple(x0.shape[1:]) != shape:
        raise ValueError(f"{kname}: x0 has event shape {tuple(x0.shape[1:])} (x0 shape {tuple(x0.shape)}) but the "
                         f"energy {ename} declares event_shape {shape}")
    k = kernel.num_states_for(energy, support)
    if k is not None:
        bad = (x0 != x0.round()) | (x0 < 0) | (x0 > k - 1)
        if bad.any():
            values = "{0, 1}" if k == 2 else f"{{0, ..., {k - 1}}}"
            raise ValueError(f"{kname}: x0 must hold integer states in {values} (K = {k}) for the {support.kind} "
                             f"energy {ename}, got value(s) {_shown(x0[bad])}")
    return support


def _first_floating_tensor(energy: EnergyFn) -> torch.Tensor | None:
    """The first floating parameter or buffer of a module energy (``None`` for a plain function)."""
    if not isinstance(energy, torch.nn.Module):
        return None
    for t in (*energy.parameters(), *energy.buffers()):
        if torch.is_floating_point(t):
            return t
    return None


def explain_start_failure(kname: str, energy: EnergyFn, x0: torch.Tensor, err: RuntimeError) -> None:
    """Re-raise torch's ``RuntimeError`` from the first energy evaluation at ``x0`` as a one-line
    ``ValueError`` when ``x0``'s dtype or device differs from the module energy's weights (torch's
    own message speaks of ``mat1`` and ``mat2``); return (to let the caller re-raise) otherwise.
    Mixed dtypes that torch promotes (an elementwise energy) never get here."""
    ref = _first_floating_tensor(energy)
    if ref is None:
        return
    ename = type(energy).__name__
    if ref.device != x0.device:
        raise ValueError(f"{kname}: x0 is on {x0.device} but the energy {ename}'s parameters are on {ref.device}; "
                         f"pass x0.to({str(ref.device)!r}) or move the energy with energy.to(x0.device)") from err
    if ref.dtype != x0.dtype:
        name = str(ref.dtype).removeprefix("torch.")
        raise ValueError(f"{kname}: x0 is {str(x0.dtype).removeprefix('torch.')} but the energy {ename}'s parameters "
                         f"are {name}; pass x0.to(torch.{name}) or convert the energy with energy.to(x0.dtype)") from err


def sq_norm(t: torch.Tensor) -> torch.Tensor:
    """Per-chain squared Euclidean norm over the event dims: ``(C, *event) -> (C,)``."""
    flat = t.flatten(1)
    return torch.linalg.vecdot(flat, flat)


def gaussian_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise of ``x``'s shape, dtype and device, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
