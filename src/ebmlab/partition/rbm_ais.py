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

and then moves ``v`` by one block-Gibbs sweep ``v → h → v`` of the intermediate RBM k
(:class:`TemperedRBM`), which leaves ``p_k`` invariant (Neal 2001): the library's
:class:`~ebmlab.samplers.BlockGibbs` kernel, run by the one chain loop
:func:`~ebmlab.samplers.driver.run_kernel`. ``Ẑ = Z_0 · mean(w)`` is unbiased for Z; its log has
delta-method standard error ``std(w) / (mean(w) √M)`` (:func:`~ebmlab.partition.ais.log_weight_statistics`,
shared with :func:`~ebmlab.partition.ais.ais`, whose :class:`~ebmlab.partition.ais.AISResult` is
also the result here).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch.nn.functional import softplus

from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.partition.ais import AISResult, log_weight_statistics
from ebmlab.samplers.base import ChainState
from ebmlab.samplers.block_gibbs import BlockGibbs
from ebmlab.samplers.driver import run_kernel


class RBMAISResult(AISResult):
    """:class:`AISResult` of :func:`rbm_ais` — the same fields (``log_z``, ``log_z_stderr``,
    ``ess``, ``log_weights``, ``log_z_base``, ``schedule``, ``samples``, ...).

    Kept for backward compatibility: ``effective_sample_size``, this result's former name for
    ``ess``, reads as a property and is accepted by the constructor (so
    ``dataclasses.replace(result, effective_sample_size=...)`` still works); new code uses ``ess``.
    """

    def __init__(self, *args, effective_sample_size: float | None = None, **kwargs):
        if effective_sample_size is not None:
            kwargs["ess"] = float(effective_sample_size)
        super().__init__(*args, **kwargs)

    @property
    def effective_sample_size(self) -> float:
        """Deprecated alias of :attr:`ess`."""
        return self.ess


@dataclass(frozen=True, eq=False)
class TemperedRBM:
    """The intermediate RBM k of the annealing path, as an energy with both conditionals.

    ``p_β(v, h) ∝ exp(a_β·v + β c·h + β hᵀWv)`` with ``a_β = (1 - β) b_A + β b``: an RBM with
    weights ``βW``, hidden biases ``βc`` and visible biases ``a_β`` (Salakhutdinov & Murray 2008).
    Free energy ``F_β(v) = -a_β·v - Σ_j softplus(β (c_j + W_j·v))``; conditionals
    ``p(h_j = 1 | v) = σ(β (c_j + W_j·v))``, ``p(v_i = 1 | h) = σ(a_β,i + β (Wᵀh)_i)``.
    Shapes: v ``(M, V)``, h ``(M, H)``; ``W`` (H, V), ``b`` and ``base_bias`` (V,), ``c`` (H,).
    """

    W: torch.Tensor
    b: torch.Tensor
    c: torch.Tensor
    base_bias: torch.Tensor
    beta: float
    support = "binary"
    num_states = 2

    @property
    def visible_bias(self) -> torch.Tensor:
        return (1.0 - self.beta) * self.base_bias + self.beta * self.b

    def hidden_logits(self, v: torch.Tensor) -> torch.Tensor:
        """``β (c + W v)``, shape ``(M, H)``."""
        return torch.addmm(self.c, v, self.W.T, beta=self.beta, alpha=self.beta)

    def __call__(self, v: torch.Tensor) -> torch.Tensor:
        """``F_β(v)``, shape ``(M,)``."""
        return -(v @ self.visible_bias) - softplus(self.hidden_logits(v)).sum(-1)

    def sample_hidden(self, v: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.bernoulli(torch.sigmoid(self.hidden_logits(v)), generator=generator)

    def sample_visible(self, h: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        logits = torch.addmm(self.visible_bias, h, self.W, alpha=self.beta)
        return torch.bernoulli(torch.sigmoid(logits), generator=generator)


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
            generator: torch.Generator | None = None, callback=None) -> RBMAISResult:
    """Estimate ``log Z`` of ``rbm`` by AIS from the base-rate RBM (Salakhutdinov & Murray 2008).

    Args:
        rbm: the target model (its parameters are read, not changed).
        base_visible_bias: ``b_A`` of shape ``(V,)`` (see :func:`base_rate_visible_bias`);
            zeros (the uniform distribution) when ``None``.
        betas: an increasing schedule from 0 to 1, or a number of temperatures for
            :func:`salakhutdinov_murray_betas`.
        num_runs: M, the number of independent annealing runs (done in parallel).
        generator: source of every random draw.
        callback: ``callback(k, beta_k)`` after each temperature (a progress bar; the library prints nothing).

    Returns:
        An :class:`AISResult` (:class:`RBMAISResult`): ``log_z = log_z_base + log mean w``,
        ``log_z_stderr``, ``ess``, ``log_weights (M,)``, ``schedule`` = the betas ``(K+1,)``,
        ``samples (M, *event_shape)`` the final states (importance samples of the model with
        weights ``w``), ``acceptance_rate`` ``(K-1,)`` (block Gibbs always accepts),
        ``step_sizes = None``, ``method = "rbm_ais"``.

    Runs in float64; cost ``O(K · M · V · H)``: four ``(M, V) × (V, H)`` products per temperature
    (the weight update, the two half-sweeps, and the free energy the kernel caches).
    """
    start = time.perf_counter()
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

    kernel = BlockGibbs()
    v = torch.bernoulli(torch.sigmoid(base).expand(num_runs, num_visible), generator=generator)
    state = kernel.init(TemperedRBM(W, b, c, base, 0.0), v)  # caches F_0(v)
    log_w = torch.zeros(num_runs, dtype=torch.float64, device=W.device)
    acceptance = []
    for k in range(1, len(beta_list)):
        path = TemperedRBM(W, b, c, base, beta_list[k])
        with torch.no_grad():
            free_energy = path(state.x)
        log_w += state.energy - free_energy  # F_{k-1}(v) - F_k(v)
        if k < len(beta_list) - 1:  # the last transition cannot change the weights
            run = run_kernel(kernel, path, ChainState(x=state.x, energy=free_energy, step=state.step), 1, generator)
            state = run.state
            acceptance.append(run.mean_accept_prob)
        if callback is not None:
            callback(k, beta_list[k])

    log_z_base = num_hidden * math.log(2.0) + float(softplus(base).sum())
    log_mean_w, stderr, ess = log_weight_statistics(log_w)
    return RBMAISResult(
        log_z=log_z_base + log_mean_w, log_z_stderr=stderr, ess=ess, log_weights=log_w.cpu(), schedule=betas,
        samples=state.x.reshape(num_runs, *rbm.event_shape),
        acceptance_rate=torch.tensor(acceptance, dtype=torch.float64), step_sizes=None, wall_time=time.perf_counter() - start, method="rbm_ais", log_z_base=log_z_base,
    )


__all__ = ["RBMAISResult", "TemperedRBM", "base_rate_visible_bias", "rbm_ais", "salakhutdinov_murray_betas"]
