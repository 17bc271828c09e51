"""The subtree builder of batched NUTS: one doubling of every chain's trajectory, leaf by leaf.

A doubling at depth ``j`` integrates ``2^j`` leapfrog steps ("leaves", indexed
``n = 0 … 2^j-1`` in build order) from one end of each chain's trajectory, in that chain's
direction. Recursively (Hoffman & Gelman 2014, Alg. 3; Betancourt 2017, App. A) the subtree is
a complete binary tree; here it is built *iteratively* (as NumPyro's iterative NUTS,
Phan et al. 2019): leaf ``n`` ends the sub-trees of levels ``l = 1 … tz(n+1)`` (``tz`` = the
number of trailing zero bits), which are checked as soon as leaf ``n`` exists.

U-turn criterion (Betancourt 2013, 2017 §A.4.2, the generalised criterion with momentum sums):
a node ``[s, e]`` is *turning* unless ``p♯_s·ρ > 0 and p♯_e·ρ > 0``, with ``p♯ = M⁻¹p`` and
``ρ = Σ_{i=s}^{e} p_i``. As Stan (≥ 2.26) does (``robust=True``, the default), a node with
halves ``[s, m-1]`` and ``[m, e]`` is checked three times: over the whole node, over the first
half extended by leaf ``m``, and over the second half extended by leaf ``m-1``; with
``robust=False`` over the whole node only (NumPyro's and BlackJAX's iterative NUTS make no
extra checks either, but subtract half the end momenta from ``ρ``).

Checkpoints: with ``R_n = Σ_{i≤n} p_i`` (``R_{-1} = R_{-2} = 0``), every sum above is a
difference of cumulative sums, so a node needs only values stored at its *start* leaf. Slot
``l`` (``1 ≤ l < max_tree_depth``) holds, for the start leaf ``s`` of the current level-``l``
node: ``p♯_s``, ``p♯_{s-1}``, ``R_s``, ``R_{s-1}``, ``R_{s-2}`` — a fixed ``(L, C, D)`` array
per quantity, written at the even leaves only. A level-``l`` node ``[s, e]`` (mid
``m = s + 2^{l-1}``) is checked with slot ``l`` (start ``s``) and, for ``l ≥ 2``, slot ``l-1``
(start ``m``); for ``l = 1`` the three checks coincide:

    whole   p♯_s,     p♯_e,  R_e - R_{s-1}
    first   p♯_s,     p♯_m,  R_m - R_{s-1}
    second  p♯_{m-1}, p♯_e,  R_e - R_{m-2}

Multinomial sampling inside a subtree (Betancourt 2017, App. A.3.2) is progressive and
unbiased: leaf ``n`` with weight ``w_n = exp(H₀ - H_n)`` replaces the subtree's candidate with
probability ``w_n / Σ_{i≤n} w_i`` (one uniform per chain per leaf), which draws the candidate
∝ ``w`` over the subtree's leaves. Shapes: ``C`` chains, positions ``(C, *event)``, momenta
and their sums flattened to ``(C, D)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ebmlab.energy.base import EnergyFn, energy_rows, value_and_grad
from ebmlab.samplers.base import uniform_log
from ebmlab.samplers.metric import Metric


def dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-chain dot product of ``(C, D)`` tensors, ``(C,)``."""
    return torch.linalg.vecdot(a, b)


def persists(sharp_a: torch.Tensor, sharp_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``a♯·ρ > 0 and b♯·ρ > 0`` (no U-turn), ``(C,)`` bool; NaN counts as a U-turn
    (``minimum`` propagates it and ``NaN > 0`` is false)."""
    return torch.minimum(dot(sharp_a, rho), dot(sharp_b, rho)) > 0


def turning(sharp_a: torch.Tensor, sharp_b: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``not (a♯·ρ > 0 and b♯·ρ > 0)``, ``(C,)`` bool; NaN counts as turning."""
    return ~persists(sharp_a, sharp_b, rho)


@dataclass
class Edge:
    """One end of every chain's trajectory: ``x`` ``(C, *event)``, ``p`` and ``sharp = M⁻¹p``
    ``(C, D)``, ``grad = ∇E(x)`` ``(C, *event)``."""

    x: torch.Tensor
    p: torch.Tensor
    sharp: torch.Tensor
    grad: torch.Tensor


@dataclass
class Subtree:
    """What one doubling built, per chain (see :func:`build_subtree`).

    ``valid``: the chain built the whole subtree without a divergence or a sub-tree U-turn;
    ``diverged``: a leaf's energy error exceeded the limit (or was NaN); ``far``: the last leaf
    (the trajectory's new end); ``near_p``, ``near_sharp``: leaf 0; ``rho``: ``Σ p`` over the
    leaves; ``log_weight``: ``log Σ w``; candidate ``x``, ``energy``, ``grad``,
    ``energy_error``; ``sum_accept``: ``Σ min(1, w)``; ``num_leaves``: leaves built (= gradient
    evaluations).
    """

    valid: torch.Tensor
    diverged: torch.Tensor
    far: Edge
    near_p: torch.Tensor
    near_sharp: torch.Tensor
    rho: torch.Tensor
    log_weight: torch.Tensor
    x: torch.Tensor
    energy: torch.Tensor
    grad: torch.Tensor
    energy_error: torch.Tensor
    sum_accept: torch.Tensor
    num_leaves: torch.Tensor


class Checkpoints:
    """The slots of the module docstring: slot ``l`` holds the leaf tensors
    ``(p♯_s, p♯_{s-1}, R_s, R_{s-1}, R_{s-2})`` of the start leaf ``s`` of the current level-``l``
    node, by reference (each ``(C, D)``). ``robust``: also Stan's two checks of each half
    extended by the adjacent leaf of the other."""

    def __init__(self, num_levels: int, robust: bool = True):
        self.slots: list[tuple[torch.Tensor, ...] | None] = [None] * num_levels
        self.robust = robust

    def write(self, top: int, values: tuple[torch.Tensor, ...]) -> None:
        """The leaf's values into slots ``1 … top`` (the leaf starts the nodes of those levels;
        slot 0, a single leaf, is never read)."""
        for level in range(1, top + 1):
            self.slots[level] = values

    def node_persists(self, level: int, sharp_end: torch.Tensor, cum_end: torch.Tensor) -> torch.Tensor:
        """The checks of the level-``level`` node ending at the current leaf passed, ``(C,)`` bool."""
        sharp_s, _, _, cum_prev_s, _ = self.slots[level]
        ok = persists(sharp_s, sharp_end, cum_end - cum_prev_s)
        if self.robust and level > 1:  # for two leaves the three checks coincide (and slot 0 is not kept)
            sharp_m, sharp_prev_m, cum_m, _, cum_prev2_m = self.slots[level - 1]
            ok &= persists(sharp_s, sharp_m, cum_m - cum_prev_s)
            ok &= persists(sharp_prev_m, sharp_end, cum_end - cum_prev2_m)
        return ok


#: from this many elements on, :class:`RowChoice` copies rows by index: ``torch.where`` with a
#: ``(C, 1)`` mask costs 4–8× a multiply on CPU (measured at 1,024 × 100 float32: 100–180 µs
#: against 33 µs for gather + copy)
ROWS_BY_INDEX = 1 << 16


class RowChoice:
    """Per chain, row ``c`` of ``a`` where ``take[c]`` else of ``b``, for several pairs of tensors
    with one ``take`` ``(C,)`` bool: ``choose = RowChoice(take); x = choose(a_x, b_x); ...``.

    Small tensors go through ``torch.where`` with a mask expanded to their full shape, made
    once per shape and reused (on CPU, ``where`` with a broadcast ``(C, 1)`` mask costs about
    four times as much as with a same-shape mask at 1,024 × 2); large ones copy the chosen rows
    by index, the indices found once. Every result is a new tensor (neither input is modified)
    and exact (rows are copied, never blended).
    """

    def __init__(self, take: torch.Tensor):
        self.take = take
        self._masks: dict[torch.Size, torch.Tensor] = {}
        self._index: torch.Tensor | None = None

    def __call__(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a.numel() < ROWS_BY_INDEX:
            mask = self._masks.get(a.shape)
            if mask is None:
                mask = self.take.view((-1,) + (1,) * (a.dim() - 1))
                if a.dim() > 1:
                    mask = mask.expand(a.shape).contiguous()
                self._masks[a.shape] = mask
            return torch.where(mask, a, b)
        if self._index is None:
            self._index = self.take.nonzero().squeeze(1)
        return b.index_copy(0, self._index, a.index_select(0, self._index))


def trailing_zeros(n: int) -> int:
    """The number of trailing zero bits of ``n > 0``."""
    return (n & -n).bit_length() - 1


def leapfrog_leaf(energy: EnergyFn, metric: Metric, edge: Edge, eps_col: torch.Tensor, half_col: torch.Tensor,
                  building: torch.Tensor, num_building: int) -> tuple[Edge, torch.Tensor]:
    """One leapfrog step of signed per-chain size ε from ``edge``; returns the new edge and
    ``E(x')`` ``(C,)``. ``eps_col`` is ε and ``half_col`` ε/2, each ``(C, 1)``.

    ``p½ = p - ε/2 ∇E(x);  x' = x + ε M⁻¹p½;  p' = p½ - ε/2 ∇E(x')``. ``E`` and ``∇E`` are
    evaluated once, on the chains still ``building`` only (others get zeros, never used).
    """
    x = edge.x
    flat = x.dim() == 2
    p_half = torch.addcmul(edge.p, half_col, edge.grad if flat else edge.grad.flatten(1), value=-1.0)
    if flat:
        x_new = torch.addcmul(x, eps_col, metric.velocity(p_half))
    else:
        x_new = torch.addcmul(x.flatten(1), eps_col, metric.velocity(p_half)).view(x.shape)
    if num_building == x.shape[0]:
        e, g = value_and_grad(energy, x_new)
    else:
        idx = building.nonzero().squeeze(1)
        e_sub, g_sub = value_and_grad(energy_rows(energy, idx), x_new.index_select(0, idx))
        e = x.new_zeros(x.shape[0]).index_copy_(0, idx, e_sub.to(x.dtype))
        g = torch.zeros_like(x).index_copy_(0, idx, g_sub.to(x.dtype))
    p_new = torch.addcmul(p_half, half_col, g if flat else g.flatten(1), value=-1.0)
    return Edge(x_new, p_new, metric.velocity(p_new), g), e


def build_subtree(energy: EnergyFn, metric: Metric, start: Edge, eps: torch.Tensor, depth: int,
                  active: torch.Tensor, energy0: torch.Tensor, kinetic0: torch.Tensor, max_energy_error: float,
                  checkpoints: Checkpoints, generator: torch.Generator | None, take_last: bool = False) -> Subtree:
    """Build ``2^depth`` leaves from ``start`` for the ``active`` chains ``(C,)``, with signed
    per-chain step sizes ``eps`` ``(C,)``.

    A chain stops building at a leaf whose energy error ``ΔH = H - H₀`` (with
    ``H₀ = energy0 + kinetic0``) exceeds ``max_energy_error`` or is NaN (a divergence), or at
    which a sub-tree turns; its subtree is then invalid. The loop ends early once no chain
    builds. Random draws: one ``U(0, 1)`` of shape ``(C,)`` per leaf built (by any chain), for
    the progressive multinomial choice. ``take_last`` (tests only) keeps the newest leaf instead.

    A chain that is not building gets ``log w = -∞`` at every later leaf, so its weight, its
    candidate and its acceptance sum stay as they are without a mask of their own.
    """
    c = active.shape[0]
    building = active.clone()
    diverged = torch.zeros_like(active)
    eps_col, half_col = eps.view(-1, 1), (0.5 * eps).view(-1, 1)
    log_weight = torch.full_like(energy0, -torch.inf)
    sum_accept, num_leaves = energy0.new_zeros(c), torch.zeros(c, dtype=torch.long, device=active.device)
    cand_x, cand_e, cand_g, cand_err = start.x, energy0, start.grad, energy0.new_zeros(c)
    cum = torch.zeros_like(start.p)
    cum_prev, sharp_prev = cum, cum
    edge, near_p, near_sharp = start, start.p, start.sharp
    num_building = int(building.sum())
    for n in range(2**depth):
        if num_building == 0:
            break
        edge, e = leapfrog_leaf(energy, metric, edge, eps_col, half_col, building, num_building)
        kinetic = 0.5 * dot(edge.p, edge.sharp)  # = metric.kinetic_energy(edge.p)
        error = (e - energy0) + (kinetic - kinetic0)
        log_w = torch.where(building, error.neg(), -torch.inf).nan_to_num_(nan=-torch.inf, posinf=torch.inf,
                                                                           neginf=-torch.inf)
        fine = error <= max_energy_error  # False for NaN: a divergence
        log_weight_new = torch.logaddexp(log_weight, log_w)
        log_u = uniform_log((c,), generator, e)
        # leaf n replaces the candidate with probability w_n / Σ_{i≤n} w_i (never where log w = -∞)
        take = building if take_last else log_u < log_w - log_weight_new
        choose = RowChoice(take)
        cand_x, cand_g = choose(edge.x, cand_x), choose(edge.grad, cand_g)
        cand_e, cand_err = torch.where(take, e, cand_e), torch.where(take, error, cand_err)
        log_weight = log_weight_new
        sum_accept += log_w.clamp(max=0.0).exp_()
        num_leaves += building
        cum_prev2, cum_prev, cum = cum_prev, cum, cum + edge.p
        if n == 0:
            near_p, near_sharp = edge.p, edge.sharp
        top = depth if n == 0 else min(trailing_zeros(n), depth)
        if top > 0:
            checkpoints.write(top, (edge.sharp, sharp_prev, cum, cum_prev, cum_prev2))
        diverged |= building > fine  # building and not fine
        building = building & fine
        for level in range(1, min(trailing_zeros(n + 1), depth) + 1):
            building &= checkpoints.node_persists(level, edge.sharp, cum)
        sharp_prev = edge.sharp
        num_building = int(building.sum())
    return Subtree(building, diverged, edge, near_p, near_sharp, cum, log_weight, cand_x, cand_e, cand_g,
                   cand_err, sum_accept, num_leaves)
