"""Annealed importance sampling for the partition function of a Bernoulli RBM.

The setup of Salakhutdinov & Murray (2008), "On the quantitative analysis of deep belief
networks". The start is a base-rate model ``p_A(v) ∝ exp(b_A·v)`` (independent visible units,
``b_A`` fitted to the data marginals), whose ``Z_A`` is known. The intermediate distributions
mix base and target with the hidden units summed out: for ``0 = β_0 < β_1 < ... < β_K = 1``,

    p*_k(v) = exp(-F_k(v)),
    F_k(v) = -((1 - β_k) b_A + β_k b)·v - Σ_j softplus(β_k (c_j + W_j·v)),

i.e. an RBM with weights ``β_k W``, hidden biases ``β_k c`` and visible biases
``(1 - β_k) b_A + β_k b``. At ``β = 0`` each hidden unit contributes a factor 2, so
``log Z_0 = H log 2 + Σ_i softplus(b_A,i)``; at ``β = 1``, ``F_K = F`` the target free energy.

Each of the M runs starts at an exact draw ``v_0 ~ p_A`` and, for k = 1..K, accumulates

    log w += F_{k-1}(v) - F_k(v)

and then moves ``v`` by one block-Gibbs sweep ``v → h → v`` of the intermediate RBM k, which
leaves ``p_k`` invariant (Neal 2001). ``Ẑ = Z_0 · mean(w)`` is unbiased for Z; its log has
delta-method standard error ``std(w) / (mean(w) √M)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn.functional import softplus

from ebmlab.energy.rbm import BernoulliRBM


@dataclass(frozen=True)
class RBMAISResult:
    """The AIS estimate.

    Attributes:
        log_z: ``log Ẑ = log Z_0 + logmeanexp(log w)``.
        log_z_stderr: delta-method standard error of ``log Ẑ``.
        log_weights: the M importance log-weights ``log w`` (float64), shape ``(M,)``.
        log_z_base: ``log Z_0`` of the starting distribution.
        effective_sample_size: ``(Σw)² / Σw²`` of the weights.
    """

    log_z: float
    log_z_stderr: float
    log_weights: torch.Tensor
    log_z_base: float
    effective_sample_size: float


def salakhutdinov_murray_betas(num_temperatures: int = 14500, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The piecewise-uniform schedule of Salakhutdinov & Murray (2008), scaled to any length.

    Their 14,500 temperatures are spaced 1e-3 on [0, 0.5], 1e-4 on [0.5, 0.9] and 1e-5 on
    [0.9, 1]; the same proportions (500 : 4000 : 10000) are kept for ``num_temperatures``.
    Returns ``β_0 = 0 < ... < β_K = 1``, shape ``(num_temperatures + 1,)``.
    """
    if int(num_temperatures) < 3:
        raise ValueError(f"salakhutdinov_murray_betas: num_temperatures must be >= 3, got {num_temperatures}")
    k = int(num_temperatures)
    n1 = max(1, round(k * 500 / 14500))
    n2 = max(1, round(k * 4000 / 14500))
    n3 = max(1, k - n1 - n2)
    parts = [torch.linspace(0.0, 0.5, n1 + 1, dtype=dtype)[:-1],
             torch.linspace(0.5, 0.9, n2 + 1, dtype=dtype)[:-1],
             torch.linspace(0.9, 1.0, n3 + 1, dtype=dtype)]
    return torch.cat(parts)


def base_rate_visible_bias(data: torch.Tensor, pseudo_count: float = 1.0) -> torch.Tensor:
    """``b_A,i = logit(p̂_i)`` with ``p̂_i = (Σ_n v_ni + α) / (N + 2α)``, shape ``(V,)``.

    The maximum-likelihood independent model of the data ``(N, *event)`` with ``α``
    pseudo-counts per value, so units that are always on or off keep a finite bias.
    """
    if data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(f"base_rate_visible_bias: data must have shape (N >= 1, ...), got {tuple(data.shape)}")
    if not pseudo_count > 0:
        raise ValueError(f"base_rate_visible_bias: pseudo_count must be > 0, got {pseudo_count}")
    flat = data.reshape(data.shape[0], -1).double()
    p = (flat.sum(0) + pseudo_count) / (flat.shape[0] + 2 * pseudo_count)
    return torch.log(p) - torch.log1p(-p)


def rbm_ais(rbm: BernoulliRBM, base_visible_bias: torch.Tensor | None = None,
            betas: torch.Tensor | int = 14500, num_runs: int = 100,
            generator: torch.Generator | None = None) -> RBMAISResult:
    """Estimate ``log Z`` of ``rbm`` by AIS from the base-rate RBM (Salakhutdinov & Murray 2008).

    Args:
        rbm: the target model (its parameters are read, not changed).
        base_visible_bias: ``b_A`` of shape ``(V,)`` (see :func:`base_rate_visible_bias`);
            zeros (the uniform distribution) when ``None``.
        betas: an increasing schedule from 0 to 1, or a number of temperatures for
            :func:`salakhutdinov_murray_betas`.
        num_runs: M, the number of independent annealing runs (done in parallel).
        generator: source of every random draw.

    Runs in float64; cost ``O(K · M · V · H)``.
    """
    W, b, c = (p.detach().double() for p in (rbm.W, rbm.b, rbm.c))
    num_hidden, num_visible = W.shape
    if base_visible_bias is None:
        base = torch.zeros(num_visible, dtype=torch.float64, device=W.device)
    else:
        base = torch.as_tensor(base_visible_bias).to(dtype=torch.float64, device=W.device).reshape(-1)
        if base.shape != (num_visible,):
            raise ValueError(f"rbm_ais: base_visible_bias must have shape ({num_visible},), got {tuple(base.shape)}")
        if not torch.isfinite(base).all():
            raise ValueError("rbm_ais: base_visible_bias must be finite (use pseudo-counts for constant units)")
    if isinstance(betas, int):
        betas = salakhutdinov_murray_betas(betas)
    betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
    if betas.numel() < 2 or betas[0] != 0 or betas[-1] != 1 or (betas.diff() <= 0).any():
        raise ValueError("rbm_ais: betas must increase strictly from 0 to 1 (at least two values)")
    if int(num_runs) < 2:
        raise ValueError(f"rbm_ais: num_runs must be >= 2, got {num_runs}")
    num_runs = int(num_runs)
    beta_list = betas.tolist()

    def neg_free_energy(v: torch.Tensor, logits: torch.Tensor, beta: float) -> torch.Tensor:
        """``-F_β(v)`` given ``logits = c + Wv``; shape ``(M,)``."""
        return v @ ((1.0 - beta) * base + beta * b) + softplus(beta * logits).sum(-1)

    uniform = lambda shape: torch.rand(shape, generator=generator, dtype=torch.float64, device=W.device)  # noqa: E731
    v = (uniform((num_runs, num_visible)) < torch.sigmoid(base)).double()
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=W.device)
    for k in range(1, len(beta_list)):
        beta = beta_list[k]
        logits = torch.addmm(c, v, W.T)
        log_w += neg_free_energy(v, logits, beta) - neg_free_energy(v, logits, beta_list[k - 1])
        if k < len(beta_list) - 1:  # the last transition cannot change the weights
            h = (uniform((num_runs, num_hidden)) < torch.sigmoid(beta * logits)).double()
            visible_logits = torch.addmm((1.0 - beta) * base + beta * b, h, beta * W)
            v = (uniform((num_runs, num_visible)) < torch.sigmoid(visible_logits)).double()

    log_z_base = num_hidden * math.log(2.0) + float(softplus(base).sum())
    log_mean_w = float(torch.logsumexp(log_w, 0)) - math.log(num_runs)
    w = torch.exp(log_w - log_w.max())
    stderr = float(w.std() / (w.mean() * math.sqrt(num_runs)))
    ess = float(w.sum() ** 2 / w.square().sum())
    return RBMAISResult(log_z=log_z_base + log_mean_w, log_z_stderr=stderr, log_weights=log_w,
                        log_z_base=log_z_base, effective_sample_size=ess)


__all__ = ["RBMAISResult", "base_rate_visible_bias", "rbm_ais", "salakhutdinov_murray_betas"]
