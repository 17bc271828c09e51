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

:class:`RBMContrastiveStep` computes one update's gradient into a flat buffer laid out
``[W (H·V), b (V), c (H)]`` with every intermediate preallocated (``out=`` and in-place ops):
one matrix product gives the hidden pre-activations of data and chains at once, the rows
``D = [v⁺; v⁻]`` of shape ``(B + C, V)`` sharing one buffer. Its metric row is
``[-mean F(v⁺), -mean F(v⁻), ‖∇L‖₂]`` (the trainer turns it into ``energy_pos``, ``energy_neg``,
``loss``, ``cd_gap`` and ``grad_norm``). The general autograd objective stays the reference;
``tests/train/test_lean_rbm.py`` checks that both give the same update.
"""

from __future__ import annotations

import torch
from torch.nn.functional import softplus

#: Entries of :attr:`RBMContrastiveStep.row` (metric values of one update).
ROW = ("neg_energy_pos", "neg_energy_neg", "grad_norm")


class RBMContrastiveStep:
    """One CD-k / PCD-k gradient of a Bernoulli RBM in preallocated buffers.

    Args:
        theta: flat parameters ``[W (H·V), b (V), c (H)]``; read, never written.
        grad: flat buffer of the same layout that receives ``∇L``.
        num_visible / num_hidden: V and H.
        batch_size: B, data rows per update.
        num_chains: C, negative chains (``C = B`` for CD-k, whose chains start at the batch).
        sweeps: block-Gibbs sweeps per update (k times the kernel's ``num_sweeps``).
        persistent: chains continue from the previous update (PCD) instead of the batch (CD).
        generator: the source of every Bernoulli draw.

    Shapes: :attr:`data` is ``(B, V)`` (the trainer writes the batch there), :attr:`chains`
    ``(C, V)`` (the persistent state), :attr:`row` ``(3,)`` (see :data:`ROW`).
    """

    def __init__(self, theta: torch.Tensor, grad: torch.Tensor, num_visible: int, num_hidden: int, batch_size: int,
                 num_chains: int, sweeps: int, persistent: bool, generator: torch.Generator | None):
        V, H, B, C = int(num_visible), int(num_hidden), int(batch_size), int(num_chains)
        if not persistent and C != B:
            raise ValueError(f"RBMContrastiveStep: CD chains start at the batch, so num_chains must be {B}, got {C}")
        self.persistent, self.sweeps, self.generator = bool(persistent), int(sweeps), generator
        self.W, self.b, self.c = theta[: H * V].view(H, V), theta[H * V: H * V + V], theta[H * V + V:]
        self.WT = self.W.T
        self.gW, self.gb, self.gc = grad[: H * V].view(H, V), grad[H * V: H * V + V], grad[H * V + V:]
        self.grad = grad
        like = dict(dtype=theta.dtype, device=theta.device)
        self.rows = torch.zeros(B + C, V, **like)   # D = [v⁺; v⁻]
        self.data, self.chains = self.rows[:B], self.rows[B:]
        self.pre = torch.empty(B + C, H, **like)     # c + W v for every row
        self.probs = torch.empty(B + C, H, **like)   # σ(c + W v)
        self.scaled = torch.empty(B + C, H, **like)  # s_n σ(c + W v_n)
        self.free = torch.empty(B + C, **like)       # -F(v) per row
        self.scale = torch.cat([torch.full((B,), -1.0 / B, **like), torch.full((C,), 1.0 / C, **like)])
        self.scale_col = self.scale[:, None]
        self.means = torch.zeros(2, B + C, **like)   # rows: mean over the data rows, over the chains
        self.means[0, :B] = 1.0 / B
        self.means[1, B:] = 1.0 / C
        self.hidden_pre = torch.empty(C, H, **like)
        self.hidden = torch.empty(C, H, **like)
        self.visible_pre = torch.empty(C, V, **like)
        self.fast_draws = theta.device.type == "cpu" and theta.dtype in (torch.float32, torch.float64)
        self.hidden_uniform = torch.empty(C, H, **like)  # rand < p: torch.bernoulli's draws, faster
        self.visible_uniform = torch.empty(C, V, **like)
        self.row = torch.zeros(len(ROW), **like)
        self.ones_hidden = torch.ones(H, **like)  # row sums as matrix-vector products (cheaper than sum)
        self.ones_rows = torch.ones(B + C, **like)

    def gibbs(self) -> None:
        """``sweeps`` block-Gibbs sweeps of :attr:`chains` in place (after :attr:`data` holds the batch)."""
        v, g = self.chains, self.generator
        if not self.persistent:
            v.copy_(self.data)
        for _ in range(self.sweeps):
            torch.addmm(self.c, v, self.WT, out=self.hidden_pre).sigmoid_()
            self._draw(self.hidden_pre, self.hidden_uniform, self.hidden)
            torch.addmm(self.b, self.hidden, self.W, out=self.visible_pre).sigmoid_()
            self._draw(self.visible_pre, self.visible_uniform, v)

    def _draw(self, probs: torch.Tensor, uniform: torch.Tensor, out: torch.Tensor) -> None:
        """``out ~ Bernoulli(probs)`` with torch.bernoulli's values (see :func:`ebmlab.energy.rbm.bernoulli`)."""
        if self.fast_draws:
            torch.lt(torch.rand(uniform.shape, generator=self.generator, out=uniform), probs, out=out)
        else:
            torch.bernoulli(probs, generator=self.generator, out=out)

    def gradient(self, row: torch.Tensor | None = None) -> torch.Tensor:
        """``∇L`` into :attr:`grad` at the current chains; the metric row into ``row`` (default :attr:`row`)."""
        row = self.row if row is None else row
        self.write_gradient(row[:2], row[2])
        return self.grad

    def write_gradient(self, energies: torch.Tensor, norm: torch.Tensor) -> None:
        """:meth:`gradient` with the metric row's two parts given as views: ``energies`` (2,) and ``norm`` ()."""
        D = self.rows
        torch.addmm(self.c, D, self.WT, out=self.pre)
        torch.sigmoid(self.pre, out=self.probs)
        torch.mul(self.probs, self.scale_col, out=self.scaled)
        torch.mm(self.scaled.T, D, out=self.gW)
        torch.mv(D.T, self.scale, out=self.gb)
        torch.mv(self.scaled.T, self.ones_rows, out=self.gc)
        torch.mv(softplus(self.pre), self.ones_hidden, out=self.free)
        self.free.addmv_(D, self.b)                  # -F(v) = b·v + Σ_j softplus(c_j + W_j·v)
        torch.mv(self.means, self.free, out=energies)
        torch.linalg.vector_norm(self.grad, out=norm)

    def step(self, row: torch.Tensor | None = None) -> torch.Tensor:
        """Gibbs sweeps, then the gradient (see :meth:`gibbs` and :meth:`gradient`)."""
        self.gibbs()
        return self.gradient(row)


def row_metrics(row: list[float]) -> dict[str, float]:
    """The contrastive objective's metrics from a metric row ``[-mean F(v⁺), -mean F(v⁻), ‖∇L‖]``.

    Same keys and order as :meth:`ebmlab.objectives.contrastive.ContrastiveDivergence.loss`
    (``accept`` is 1: block Gibbs always accepts), then ``grad_norm``.
    """
    pos, neg = -row[0], -row[1]
    return {"loss": pos - neg, "energy_pos": pos, "energy_neg": neg, "cd_gap": neg - pos, "accept": 1.0,
            "grad_norm": row[2]}


__all__ = ["ROW", "RBMContrastiveStep", "row_metrics"]
