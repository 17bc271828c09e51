"""What batched NUTS does around each subtree: pick the end to grow from, then merge the subtree.

A transition of :class:`~ebmlab.samplers.nuts.NUTS` doubles its trajectory ``j = 0, 1, …``; each
doubling is

1. :func:`begin_doubling`: per chain a direction ``v = +1`` iff ``u < ½`` (``u ~ U(0, 1)``),
   the signed step ``v·ε``, the end the subtree grows from (the right end forward, the left end
   backward) and the ``p♯`` of the other end;
2. the subtree of ``2^j`` leaves (:mod:`ebmlab.samplers.nuts_tree`);
3. :func:`end_doubling`: Stan's biased progressive sampling between trajectory and subtree —
   the subtree's candidate replaces the trajectory's iff ``log u < log W_sub - log W_traj``
   (Betancourt 2017, App. A.3.2) — then ``log W ← log(W + W_sub)``, the new end, ``ρ ← ρ + ρ_sub``
   and the U-turn checks of the merged tree (whole, and with ``robust``, the default, each half
   extended by the adjacent leaf of the other; Stan ≥ 2.26). A chain stays active iff its subtree is
   valid and the merged tree does not turn.

The trajectory is a dict of tensors (:data:`TRAJECTORY` keys, ``(C, D)`` or ``(C,)``, positions
``(C, *event)``), so the same functions run eagerly (with :class:`~ebmlab.samplers.nuts_tree.RowChoice`)
and as ``torch.compile`` graphs (:class:`~ebmlab.samplers.nuts_compiled.CompiledNUTS`, with
:func:`where_choice`); both give the same numbers: rows are copied, never blended.
"""

from __future__ import annotations

from typing import Callable

import torch

from ebmlab.samplers.nuts_tree import Edge, Subtree, persists

#: The trajectory's entries: the two ends (``x``, ``p``, ``p♯``, ``∇E``), ``ρ = Σ p``, the
#: candidate (``x``, ``e``, ``g``, its energy error), ``log W``, and per chain the flags
#: ``active``, ``diverged``, ``moved`` and the counts ``depth``, ``num_leaves``, ``sum_accept``;
#: grouped by kind (``(C, D)`` vectors, float, boolean and integer ``(C,)`` rows), the order in
#: which the compiled kernel packs each kind into one tensor.
TRAJECTORY_VECTORS = ("left_x", "left_p", "left_sharp", "left_g", "right_x", "right_p", "right_sharp", "right_g",
                      "rho", "x", "g")
TRAJECTORY_FLOATS = ("e", "error", "log_weight", "sum_accept")
TRAJECTORY_FLAGS = ("active", "diverged", "moved")
TRAJECTORY_COUNTS = ("depth", "num_leaves")
TRAJECTORY = TRAJECTORY_VECTORS + TRAJECTORY_FLOATS + TRAJECTORY_FLAGS + TRAJECTORY_COUNTS

Choice = Callable[[torch.Tensor], Callable[[torch.Tensor, torch.Tensor], torch.Tensor]]


def where_choice(take: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Per chain, row ``c`` of ``a`` where ``take[c]`` else of ``b``, by ``torch.where`` with a
    broadcast mask (for traced code: no data-dependent indexing)."""

    def choose(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(take.view((-1,) + (1,) * (a.dim() - 1)), a, b)

    return choose


def start_trajectory(x0: torch.Tensor, p0: torch.Tensor, sharp0: torch.Tensor, grad0: torch.Tensor,
                     energy0: torch.Tensor) -> dict[str, torch.Tensor]:
    """The one-leaf trajectory at the start state: both ends there, ``ρ = p₀``, ``W = w(start) = 1``."""
    c = energy0.shape[0]
    active = torch.ones(c, dtype=torch.bool, device=x0.device)
    depth = torch.zeros(c, dtype=torch.long, device=x0.device)
    return dict(left_x=x0, left_p=p0, left_sharp=sharp0, left_g=grad0, right_x=x0, right_p=p0,
                right_sharp=sharp0, right_g=grad0, rho=p0, x=x0, e=energy0, g=grad0,
                error=torch.zeros_like(energy0), log_weight=torch.zeros_like(energy0), active=active,
                diverged=torch.zeros_like(active), moved=torch.zeros_like(active), depth=depth,
                num_leaves=torch.zeros_like(depth), sum_accept=torch.zeros_like(energy0))


def begin_doubling(choice: Choice, t: dict, u: torch.Tensor, magnitude: torch.Tensor):
    """Directions from ``u`` ``(C,)`` and step sizes ``magnitude`` ``(C,)``: returns ``forward``
    (bool), the signed steps ``eps`` ``(C,)``, the near end as ``(x, p, p♯, ∇E)`` and the far
    end's ``p♯``."""
    forward = u < 0.5
    eps = torch.where(forward, magnitude, -magnitude)
    by_direction = choice(forward)
    near = tuple(by_direction(t[f"right_{k}"], t[f"left_{k}"]) for k in ("x", "p", "sharp", "g"))
    return forward, eps, near, by_direction(t["left_sharp"], t["right_sharp"])


def end_doubling(choice: Choice, t: dict, sub: Subtree, forward: torch.Tensor, near: Edge, far_sharp: torch.Tensor,
                 log_u: torch.Tensor, take_last: bool = False, robust: bool = True) -> dict[str, torch.Tensor]:
    """The trajectory ``t`` merged with ``sub`` (module docstring, step 3); ``log_u`` ``(C,)`` is
    the log-uniform of the choice between them. ``take_last`` (tests only): take every valid
    subtree; ``robust``: Stan's two extra U-turn checks."""
    take = sub.valid if take_last else sub.valid & (log_u < sub.log_weight - t["log_weight"])
    choose = choice(take)
    rho_new = t["rho"] + sub.rho
    ok = persists(far_sharp, sub.far.sharp, rho_new)
    if robust:
        ok = ok & persists(far_sharp, sub.near_sharp, t["rho"] + sub.near_p)
        ok = ok & persists(near.sharp, sub.far.sharp, sub.rho + near.p)
    out = dict(x=choose(sub.x, t["x"]), g=choose(sub.grad, t["g"]), e=torch.where(take, sub.energy, t["e"]),
               error=torch.where(take, sub.energy_error, t["error"]), moved=t["moved"] | take,
               log_weight=torch.where(sub.valid, torch.logaddexp(t["log_weight"], sub.log_weight), t["log_weight"]),
               rho=choice(sub.valid)(rho_new, t["rho"]), depth=t["depth"] + sub.valid, active=sub.valid & ok,
               diverged=t["diverged"] | sub.diverged, num_leaves=t["num_leaves"] + sub.num_leaves,
               sum_accept=t["sum_accept"] + sub.sum_accept)
    far = (sub.far.x, sub.far.p, sub.far.sharp, sub.far.grad)
    to_right, to_left = choice(sub.valid & forward), choice(sub.valid > forward)  # valid and backward
    for key, value in zip(("x", "p", "sharp", "g"), far):
        out[f"right_{key}"] = to_right(value, t[f"right_{key}"])
        out[f"left_{key}"] = to_left(value, t[f"left_{key}"])
    return out


__all__ = ["TRAJECTORY", "TRAJECTORY_COUNTS", "TRAJECTORY_FLAGS", "TRAJECTORY_FLOATS", "TRAJECTORY_VECTORS",
           "begin_doubling", "end_doubling", "start_trajectory", "where_choice"]
