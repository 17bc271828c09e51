"""One leaf (or a few) of compiled NUTS for every chain, as a pure function of tensors.

The trajectory of batched NUTS (:mod:`ebmlab.samplers.nuts`) doubles while any chain builds, a
data-dependent number of leaves, so the transition itself cannot be one fixed graph. Its leaf
can (:mod:`ebmlab.samplers.nuts_compiled` compiles it): :func:`leaf` does, for every chain at once, everything :func:`~ebmlab.samplers.nuts_tree.build_subtree`
does per leaf —

* the leapfrog step ``p½ = p - ε/2 ∇E(x);  x' = x + ε M⁻¹p½;  p' = p½ - ε/2 ∇E(x')`` with the
  energy's value and gradient (Hoffman & Gelman 2014);
* the energy error ``ΔH = H(x', p') - H₀``, the divergence test ``ΔH > max_energy_error`` (or
  NaN) and the acceptance sum ``Σ min(1, e^{-ΔH})``;
* the progressive multinomial update (Betancourt 2017, App. A.3.2): with ``log w = -ΔH`` the leaf
  replaces the candidate iff ``log u < log w - log Σ_{i≤n} w_i``;
* the checkpoint write and the generalised U-turn checks of every sub-tree the leaf ends
  (Betancourt 2013; with ``LeafSpec.robust``, the default, the two extra checks of Stan ≥ 2.26; see
  :mod:`ebmlab.samplers.nuts_tree`).

Checkpoints as tensors: the slots form one ``(L + 1, 5, C, D)`` buffer (``L =
max(max_tree_depth - 1, 1)``) of ``(p♯_s, p♯_{s-1}, R_s, R_{s-1}, R_{s-2})`` (``R`` the
cumulative momentum sum). As in NumPyro's iterative NUTS (Phan et al. 2019), an even leaf ``n``
writes slot ``k = popcount(n >> 1)`` and an odd leaf checks the sub-trees of levels
``l = 1 … t`` (``t`` its trailing one bits) whose start leaves sit in slots ``k_max - l + 1``
with ``k_max = popcount(n >> 1)``; the mid-point of level ``l`` is slot ``k_max - l + 2``. The
leaf gets ``(write slot, k_max, t)`` as a ``(3,)`` long tensor (odd leaves write the spare slot
``L``), and checks all ``L`` slots with a mask, so one graph serves every leaf, depth, step
size and metric value: it never recompiles across leaves, doublings or adaptation (a change of
metric kind — identity to diagonal — or of the chains' shapes builds one more graph).

Unrolled calls (``StepCompiler(unroll=k)``, k a power of two; 4 when the compiler leaves it to
the kernel): one graph runs ``k`` leaves of a doubling with ``2^j > k`` leaves; a doubling of
``2^j ≤ k`` leaves is one call of its own graph, whose every leaf knows its sub-trees
(``LeafSpec.whole``: no masked checks). A block starts at a multiple of ``k``, so the parity and the
number of sub-trees of each of its leaves but the last are known when tracing: even leaves only
write, odd ones check just their own ``t`` slots, and only the last leaf checks all ``L`` with a
mask. The uniforms of all ``k`` leaves are drawn before the call; when every chain stops inside
the block, the generator is set back and advanced by the leaves eager NUTS would have run (the
leaves after the stop change nothing that is read: every chain's log w is -∞).

Random numbers are drawn outside the graph, from the run's generator in the eager order (the
momenta, per doubling the directions, per leaf one ``rand((C,))``, the choice between subtrees),
so compiled and eager chains agree to floating-point rounding. The one host synchronisation per
leaf is the "does any chain still build?" test that the eager loop makes too (on the CPU it
costs a few µs); without it the draws of the two would part.

Differences from eager: the gradient is evaluated on all ``C`` chains (eager: the building ones
only), the masked checks read all ``L`` slots (``O(L·C·D)``), and an unrolled block computes
up to ``k - 1`` leaves past the point where every chain stopped. Shapes: ``x`` ``(C, *event)``,
momenta and slots flattened to ``(C, D)``.
"""


from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable

import torch

from ebmlab.samplers.compiled_step import velocity
from ebmlab.samplers.nuts_tree import persists, trailing_zeros


#: leaves per compiled call when the StepCompiler leaves ``unroll`` to the kernel (measured on the
#: banana at 128 chains: 4 leaves a call take half the time per leaf of 1)
DEFAULT_UNROLL = 4


@dataclass(frozen=True)
class LeafSpec:
    """What fixes a leaf graph: ``family`` (``"nuts_leaf"``), ``metric`` (``"identity"``,
    ``"diag"``, ``"dense"``), ``num_slots`` ``L``, ``max_energy_error``, ``unroll`` (leaves
    per call), ``whole``: the call is a whole doubling (``2^j = unroll`` leaves), so its last
    leaf ends ``j`` sub-trees, known when tracing (no masked checks), and ``robust``: Stan's
    extra U-turn checks."""

    family: str
    metric: str
    num_slots: int
    max_energy_error: float
    unroll: int = 1
    whole: bool = False
    robust: bool = True


def _col(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view((-1,) + (1,) * (like.dim() - 1))


def _all_levels_persist(spec: LeafSpec, slots, index, sharp, cum) -> torch.Tensor:
    """The checks of every sub-tree the leaf ends, over all ``L`` slots with a mask, ``(C,)``."""
    num = spec.num_slots
    s, sp, r, rp, rp2 = slots[:num].unbind(1)  # each (L, C, D)
    k = torch.arange(num, device=sharp.device)
    top, levels = index[1], index[2]
    checked = ((k <= top) & (k > top - levels)).view(-1, 1)
    ok = persists(s, sharp, cum - rp)  # the whole node, (L, C)
    if not spec.robust:
        return (ok | ~checked).all(0)
    halves = persists(s[:-1], s[1:], r[1:] - rp[:-1]) & persists(sp[1:], sharp, cum - rp2[1:])
    halves = torch.cat([halves, torch.ones_like(ok[:1])]) | (k >= top).view(-1, 1)  # one leaf: no halves
    return (ok & halves | ~checked).all(0)


def leaf(spec: LeafSpec, vg: Callable, c: dict, log_u: torch.Tensor, index: torch.Tensor, slots: torch.Tensor,
         metric: dict, levels: int | None = None) -> dict:
    """One leaf for every chain (module docstring); pure but for the write into ``slots``.

    ``c`` holds the edge ``x`` ``(C, *event)``, ``p`` ``(C, D)``, ``g``; ``eps`` and ``half``
    (ε and ε/2, ``(C, 1)``); ``building``, ``diverged`` (bool) and ``num_leaves`` (long) ``(C,)``;
    ``energy0``, ``kinetic0``, ``log_weight``, ``sum_accept``, ``cand_e``, ``cand_err`` ``(C,)``;
    ``cand_x``, ``cand_g``; ``cum``, ``cum_prev`` ``(C, D)``. ``log_u`` ``(C,)``,
    ``index`` ``(3,)`` long, ``slots`` ``(L + 1, 5, C, D)``. Returns the entries of ``c`` that
    change (all but ``cum_prev``, which becomes the old ``cum``: the caller moves it, so that no
    output aliases an input) with ``sharp`` (``M⁻¹p'``) and ``any`` (a 0-dim bool: some chain
    still builds). ``levels``: how many sub-trees the leaf ends when that is known when tracing
    (0 for an even leaf, which writes its slot; ``t`` for an odd one, which checks slots
    ``k_max … k_max - t + 1`` only), ``None`` for any leaf (write and masked checks of all slots).
    """
    x, p, g, building = c["x"], c["p"], c["g"], c["building"]
    p_half = torch.addcmul(p, c["half"], g.flatten(1), value=-1.0)
    x_new = torch.addcmul(x.flatten(1), c["eps"], velocity(spec, metric, p_half)).view(x.shape)
    e, g_new = vg(x_new)
    e, g_new = e.reshape(-1).to(x.dtype), g_new.to(x.dtype)
    p_new = torch.addcmul(p_half, c["half"], g_new.flatten(1), value=-1.0)
    sharp = velocity(spec, metric, p_new)
    kinetic = 0.5 * torch.linalg.vecdot(p_new, sharp)
    error = (e - c["energy0"]) + (kinetic - c["kinetic0"])
    log_w = torch.where(building, error.neg(), -torch.inf).nan_to_num(nan=-torch.inf, posinf=torch.inf,
                                                                      neginf=-torch.inf)
    fine = error <= spec.max_energy_error  # False for NaN: a divergence
    log_weight = torch.logaddexp(c["log_weight"], log_w)
    take = log_u < log_w - log_weight
    cum_prev2, cum_prev, cum = c["cum_prev"], c["cum"], c["cum"] + p_new
    if not levels:  # even leaves (0) write their slot, unknown parity (None) the spare one for odd n
        sharp_prev = velocity(spec, metric, p)  # the previous leaf's p♯ (at leaf 0 never read)
        slots.index_copy_(0, index[:1], torch.stack([sharp, sharp_prev, cum, cum_prev, cum_prev2]).unsqueeze(0))
    diverged = c["diverged"] | (building & ~fine)
    building = building & fine
    if levels is None:
        building = building & _all_levels_persist(spec, slots, index, sharp, cum)
    top = index[1]
    for level in range(1, (levels or 0) + 1):  # the leaf's own sub-trees, a known number of them
        sharp_s, _, _, cum_prev_s, _ = slots.index_select(0, (top - (level - 1)).view(1))[0].unbind(0)
        ok = persists(sharp_s, sharp, cum - cum_prev_s)
        if spec.robust and level > 1:
            sharp_m, sharp_prev_m, cum_m, _, cum_prev2_m = slots.index_select(0, (top - (level - 2)).view(1))[0].unbind(0)
            ok = ok & persists(sharp_s, sharp_m, cum_m - cum_prev_s) & persists(sharp_prev_m, sharp, cum - cum_prev2_m)
        building = building & ok
    return dict(x=x_new, p=p_new, g=g_new, sharp=sharp, building=building, diverged=diverged,
                log_weight=log_weight, sum_accept=c["sum_accept"] + log_w.clamp(max=0.0).exp(),
                num_leaves=c["num_leaves"] + c["building"], cand_x=torch.where(_col(take, x), x_new, c["cand_x"]),
                cand_g=torch.where(_col(take, x), g_new, c["cand_g"]), cand_e=torch.where(take, e, c["cand_e"]),
                cand_err=torch.where(take, error, c["cand_err"]), cum=cum, any=building.any())


def leaves(spec: LeafSpec, vg: Callable, c: dict, log_u: torch.Tensor, index: torch.Tensor, slots: torch.Tensor,
           metric: dict) -> dict:
    """``spec.unroll`` consecutive leaves (:func:`leaf`), ``log_u`` ``(k, C)``, ``index`` ``(k, 3)``.

    Returns :func:`leaf`'s entries after the last leaf, ``any`` ``(k,)`` (after each leaf), and
    for ``k > 1`` also ``cum_prev`` and the first leaf's ``first_p``, ``first_sharp``. Leaves
    run after every chain has stopped change nothing a caller reads (every chain's log w is
    -∞ and its subtree invalid), so the caller only has to rewind the generator.
    """
    c, anys, first = dict(c), [], None
    for k in range(spec.unroll):
        prev = c["cum"]
        # a block starts at a multiple of k, so below its last leaf the parity and the trailing
        # ones of n are those of the offset
        levels = trailing_zeros(k + 1) if k < spec.unroll - 1 or spec.whole else None
        new = leaf(spec, vg, c, log_u[k], index[k], slots, metric, levels)
        anys.append(new.pop("any"))
        c.update(new)
        c["cum_prev"] = prev
        if k == 0:
            first = (new["p"], new["sharp"])
    out = {name: c[name] for name in new}
    out["any"] = torch.stack(anys)
    if spec.unroll > 1:
        out.update(cum_prev=c["cum_prev"], first_p=first[0], first_sharp=first[1])
    return out


@functools.lru_cache(maxsize=4096)
def block_index(n: int, k: int, num_slots: int, device: torch.device) -> torch.Tensor:
    """``(k, 3)``: :func:`_leaf_index` of leaves ``n … n+k-1``."""
    return torch.stack([_leaf_index(i, num_slots, device) for i in range(n, n + k)])


@functools.lru_cache(maxsize=4096)
def _leaf_index(n: int, num_slots: int, device: torch.device) -> torch.Tensor:
    """``(write slot, k_max, t)`` of leaf ``n`` (module docstring)."""
    top = bin(n >> 1).count("1")
    if n % 2 == 0:
        return torch.tensor([top, top, 0], device=device)
    return torch.tensor([num_slots, top, trailing_zeros(n + 1)], device=device)


__all__ = ["DEFAULT_UNROLL", "LeafSpec", "block_index", "leaf", "leaves"]
