"""Contrastive divergence for :class:`~ebmlab.energy.rbm.BernoulliRBM` in closed form, without autograd.

For the free energy ``F(v) = -b·v - Σ_j softplus(c_j + W_j·v)`` the parameter gradients are

    ∇_W F(v) = -σ(c + Wv) vᵀ,        ∇_b F(v) = -v,        ∇_c F(v) = -σ(c + Wv),

so the gradient of the contrastive-divergence loss ``L = mean_{B} F(v⁺) - mean_{C} F(v⁻)``
(:mod:`ebmlab.objectives.contrastive` with α = 0) over ``B`` data rows and ``C`` chains is

    ∇_W L = Σ_n s_n p_n v_nᵀ,    ∇_b L = Σ_n s_n v_n,    ∇_c L = Σ_n s_n p_n,
    p_n = σ(c + W v_n),    s_n = -1/B for a data row, +1/C for a chain,

i.e. ``-(⟨v hᵀ⟩_data - ⟨v hᵀ⟩_model)`` with the hidden units replaced by their conditional
means (Hinton 2010, "A practical guide to training RBMs", §3; scikit-learn's ``BernoulliRBM``
uses the same statistics). The negatives ``v⁻`` come from ``k`` block-Gibbs sweeps
``h ~ Bernoulli(σ(c + Wv))``, ``v ~ Bernoulli(σ(b + Wᵀh))`` (Hinton 2002; persistent chains:
Tieleman 2008), drawn in the same order from the same generator as
:class:`~ebmlab.samplers.block_gibbs.BlockGibbs` (on the CPU as ``rand < p``, which gives
``torch.bernoulli``'s values: :func:`ebmlab.energy.rbm.bernoulli`), so the chains are those of
the general path.

Layout. :class:`RBMContrastiveStep` reads the parameters from a flat vector
``θ⁺ = [W (H·V), b (V), c (H), 0]`` (the trainer's ``θ`` with one trailing zero), so that
``[W; b]`` is one ``(H+1, V)`` matrix and ``[c, 0]`` one bias: a single matrix product

    A = [c, 0] + D [W; b]ᵀ,   A[:, :H] = c + W v,   A[:, H] = b·v,     D = [v⁺; v⁻]  (B + C, V)

gives every hidden pre-activation and every visible term of the free energy. The rows ``D``
and the probabilities ``P = σ(A[:, :H])`` lie side by side in one ``(B + C, V + H)`` buffer
``X = [D, P]``, so one matrix-vector product ``Xᵀ s = [∇_b L; ∇_c L]`` gives both bias
gradients (they are adjacent in the flat layout ``[W, b, c]``). The gradient of update ``i``
of a call goes into slot ``i`` of a ``(slots, H·V + V + H)`` buffer and its ``A`` into slot
``i`` of a ``(slots, B + C, H + 1)`` buffer; the metric row ``[-mean F(v⁺), -mean F(v⁻),
‖∇L‖₂]`` of every update in a call is computed afterwards from those slots in a few calls
(:meth:`RBMContrastiveStep.metrics`), with ``-F(v) = b·v + Σ_j softplus(A_j)``. The uniforms
of all of an update's sweeps (per sweep ``C·H`` for the hidden draw, then ``C·V`` for the
visible one) come from one ``rand`` call: the same stream as one call per draw. The trainer turns a row into ``energy_pos``,
``energy_neg``, ``loss``, ``cd_gap`` and ``grad_norm``. The general autograd objective stays the
reference; ``tests/train/test_lean_rbm.py`` checks that both give the same update.
"""

from __future__ import annotations

import torch
from torch.nn.functional import softplus

#: Entries of a metric row (:meth:`RBMContrastiveStep.metrics`: the metric values of one update).
ROW = ("neg_energy_pos", "neg_energy_neg", "grad_norm")


class RBMContrastiveStep:
    """CD-k / PCD-k gradients of a Bernoulli RBM in preallocated buffers (layout: module docstring).

    Args:
        theta: flat parameters with a trailing zero, ``[W (H·V), b (V), c (H), 0]``; read, never
            written (the trailing zero is what makes ``[c, 0]`` the bias of the joint product).
        grads: ``(slots, H·V + V + H)``; update ``i`` of a call writes ``∇L`` into ``grads[i]``.
        num_visible / num_hidden: V and H.
        batch_size: B, data rows per update.
        num_chains: C, negative chains (``C = B`` for CD-k, whose chains start at the batch).
        sweeps: block-Gibbs sweeps per update (k times the kernel's ``num_sweeps``).
        persistent: chains continue from the previous update (PCD) instead of the batch (CD).
        generator: the source of every Bernoulli draw.

    Shapes: :attr:`data` is ``(B, V)`` (the trainer writes the batch there), :attr:`chains`
    ``(C, V)`` (the persistent state; rows of a wider buffer, so not contiguous), :attr:`grad`
    the slot last written, ``(H·V + V + H,)``.
    """

    def __init__(self, theta: torch.Tensor, grads: torch.Tensor, num_visible: int, num_hidden: int, batch_size: int,
                 num_chains: int, sweeps: int, persistent: bool, generator: torch.Generator | None):
        V, H, B, C = int(num_visible), int(num_hidden), int(batch_size), int(num_chains)
        if not persistent and C != B:
            raise ValueError(f"RBMContrastiveStep: CD chains start at the batch, so num_chains must be {B}, got {C}")
        n = H * V + V + H
        if theta.shape != (n + 1,) or grads.dim() != 2 or grads.shape[1] != n:
            raise ValueError(f"RBMContrastiveStep: theta must have shape ({n + 1},) and grads (slots, {n}), got "
                             f"{tuple(theta.shape)} and {tuple(grads.shape)}")
        self.persistent, self.sweeps, self.generator = bool(persistent), int(sweeps), generator
        self.W, self.b, self.c = theta[: H * V].view(H, V), theta[H * V: H * V + V], theta[H * V + V: n]
        self.WT = self.W.T
        self.WbT = theta[: (H + 1) * V].view(H + 1, V).T   # [W; b]ᵀ, (V, H+1)
        self.c0 = theta[H * V + V:]                          # [c, 0], (H+1,)
        self.grads, self.slots = grads, grads.shape[0]
        self.grad = grads[0]
        self.grad_views = [(g[: H * V].view(H, V), g[H * V:]) for g in grads.unbind(0)]  # (∇_W, [∇_b; ∇_c])
        like = dict(dtype=theta.dtype, device=theta.device)
        self.X = torch.zeros(B + C, V + H, **like)   # [D, P]
        self.rows, self.probs = self.X[:, :V], self.X[:, V:]
        self.XT = self.X.T
        self.data, self.chains = self.rows[:B], self.rows[B:]
        self.pre = torch.zeros(self.slots, B + C, H + 1, **like)  # A of each update in a call
        self.pre_views = [(a, a[:, :H]) for a in self.pre.unbind(0)]
        self.scaled = torch.empty(B + C, H, **like)  # s_n σ(c + W v_n)
        self.scale = torch.cat([torch.full((B,), -1.0 / B, **like), torch.full((C,), 1.0 / C, **like)])
        self.scale_col = self.scale[:, None]
        self.means = torch.zeros(B + C, 2, **like)   # columns: mean over the data rows, over the chains
        self.means[:B, 0] = 1.0 / B
        self.means[B:, 1] = 1.0 / C
        self.hidden_pre = torch.empty(C, H, **like)
        self.hidden = torch.empty(C, H, **like)
        self.visible_pre = torch.empty(C, V, **like)
        self.fast_draws = theta.device.type == "cpu" and theta.dtype in (torch.float32, torch.float64)
        # rand < p gives torch.bernoulli's draws, faster; one call per update draws every sweep's uniforms
        self.uniform = torch.empty(self.sweeps * C * (H + V), **like)
        per_sweep = [u.split((C * H, C * V)) for u in self.uniform.split(C * (H + V))] if self.sweeps else []
        self.sweep_uniforms = [(uh.view(C, H), uv.view(C, V)) for uh, uv in per_sweep]

    def gibbs(self) -> None:
        """``sweeps`` block-Gibbs sweeps of :attr:`chains` in place (after :attr:`data` holds the batch)."""
        v, g, lt, addmm = self.chains, self.generator, torch.lt, torch.addmm
        hidden_pre, hidden, visible_pre = self.hidden_pre, self.hidden, self.visible_pre
        if not self.persistent:
            v.copy_(self.data)
        if self.fast_draws:
            torch.rand(self.uniform.shape, generator=g, out=self.uniform)
            for uh, uv in self.sweep_uniforms:
                addmm(self.c, v, self.WT, out=hidden_pre).sigmoid_()
                lt(uh, hidden_pre, out=hidden)
                addmm(self.b, hidden, self.W, out=visible_pre).sigmoid_()
                lt(uv, visible_pre, out=v)
            return
        for _ in range(self.sweeps):
            addmm(self.c, v, self.WT, out=hidden_pre).sigmoid_()
            torch.bernoulli(hidden_pre, generator=g, out=hidden)
            addmm(self.b, hidden, self.W, out=visible_pre).sigmoid_()
            torch.bernoulli(visible_pre, generator=g, out=v)

    def write_gradient(self, slot: int) -> torch.Tensor:
        """``∇L`` at the current chains into ``grads[slot]`` (also :attr:`grad`), ``A`` into its slot."""
        D, a_slot = self.rows, self.pre_views[slot]
        gW, gbc = self.grad_views[slot]
        torch.addmm(self.c0, D, self.WbT, out=a_slot[0])       # A = [c, 0] + D [W; b]ᵀ
        torch.sigmoid(a_slot[1], out=self.probs)               # P = σ(c + W v)
        torch.mul(self.probs, self.scale_col, out=self.scaled)
        torch.mm(self.scaled.T, D, out=gW)                     # ∇_W L = Σ_n s_n p_n v_nᵀ
        torch.mv(self.XT, self.scale, out=gbc)                 # [∇_b L; ∇_c L] = [D, P]ᵀ s
        self.grad = self.grads[slot]
        return self.grad

    def metrics(self, first: int, last: int, out: torch.Tensor) -> torch.Tensor:
        """Metric rows of slots ``first..last-1`` into ``out`` ``(last - first, 3)``: see :data:`ROW`."""
        if last > first:
            H = self.pre.shape[2] - 1
            pre = self.pre[first:last]
            terms = softplus(pre)                    # contiguous: 10× faster than on the (…, :H) view
            terms[:, :, H] = pre[:, :, H]            # the last column is b·v, not a softplus term
            free = terms.sum(2)                      # -F(v) per update and row
            out[:, :2] = free @ self.means
            torch.linalg.vector_norm(self.grads[first:last], dim=1, out=out[:, 2])
        return out

    def step(self, row: torch.Tensor | None = None) -> torch.Tensor:
        """Gibbs sweeps, then the gradient into slot 0; its metric row into ``row`` when given."""
        self.gibbs()
        grad = self.write_gradient(0)
        if row is not None:
            self.metrics(0, 1, row.view(1, len(ROW)))
        return grad


def row_metrics(row: list[float]) -> dict[str, float]:
    """The contrastive objective's metrics from a metric row ``[-mean F(v⁺), -mean F(v⁻), ‖∇L‖]``.

    Same keys and order as :meth:`ebmlab.objectives.contrastive.ContrastiveDivergence.loss`
    (``accept`` is 1: block Gibbs always accepts), then ``grad_norm``.
    """
    pos, neg = -row[0], -row[1]
    return {"loss": pos - neg, "energy_pos": pos, "energy_neg": neg, "cd_gap": neg - pos, "accept": 1.0,
            "grad_norm": row[2]}


def row_columns(rows) -> dict:
    """:func:`row_metrics` of every row of ``rows`` (a float ``(n, 3)`` numpy array) as float64
    columns: the same keys in the same order, and the same doubles (IEEE arithmetic on the same
    operands, row by row)."""
    import numpy as np

    rows = np.asarray(rows, dtype=np.float64)
    pos, neg = -rows[:, 0], -rows[:, 1]
    return {"loss": pos - neg, "energy_pos": pos, "energy_neg": neg, "cd_gap": neg - pos,
            "accept": np.ones(len(rows)), "grad_norm": rows[:, 2]}


__all__ = ["ROW", "RBMContrastiveStep", "row_columns", "row_metrics"]
