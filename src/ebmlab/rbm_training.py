"""A compact training loop for Bernoulli RBMs: (persistent) contrastive divergence with SGD.

Each update takes a minibatch ``v⁺`` of shape ``(B, *event)``, draws negatives ``v⁻`` with
``k`` block-Gibbs sweeps — from the previous update's chains for PCD (Tieleman 2008), from the
batch for CD-k (Hinton 2002) — and descends the surrogate loss of
:mod:`ebmlab.objectives.contrastive`,

    L(θ) = mean_b F_θ(v⁺_b) - mean_b F_θ(v⁻_b),

whose gradient is the stochastic negative log-likelihood gradient; for the RBM it is
``∂L/∂W = -(E_data[σ(c + Wv) vᵀ] - E_model[σ(c + Wv) vᵀ])`` and likewise for the biases.
Optimiser: SGD with momentum, and weight decay (an L2 penalty ``½λ‖W‖²``) on ``W`` only
(Hinton 2010, "A practical guide to training restricted Boltzmann machines").
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .energy.rbm import BernoulliRBM
from .objectives import make_objective
from .samplers import BlockGibbs


@dataclass
class RBMTrainingHistory:
    """Per-epoch records of :func:`train_rbm`.

    Attributes:
        epoch_times: wall-clock seconds of each epoch.
        losses: mean surrogate loss ``mean F(v⁺) - mean F(v⁻)`` over the epoch's updates.
        num_updates: parameter updates taken in all.
    """

    epoch_times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    num_updates: int = 0


def train_rbm(rbm: BernoulliRBM, data: torch.Tensor, num_epochs: int = 10, batch_size: int = 10,
              learning_rate: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
              num_gibbs_steps: int = 1, persistent: bool = True, num_chains: int = 0,
              generator: torch.Generator | None = None,
              callback: Callable[[int, BernoulliRBM, float], None] | None = None) -> RBMTrainingHistory:
    """Train ``rbm`` in place on binary ``data`` of shape ``(N, *event)`` (V values per example).

    Args:
        num_epochs: passes over the data, each in a fresh random order.
        batch_size: examples per update (the last batch of an epoch may be smaller).
        learning_rate, momentum, weight_decay: SGD settings (weight decay on ``W`` only).
        num_gibbs_steps: block-Gibbs sweeps per update (the k of CD-k / PCD-k).
        persistent: PCD (chains carried across updates, started from uniform noise) if True,
            CD-k (chains started at the batch) if False.
        num_chains: persistent chains (0: the batch size).
        callback: ``callback(epoch, rbm, mean_loss)`` after every epoch (epochs count from 1).

    Returns:
        :class:`RBMTrainingHistory`.
    """
    if not isinstance(rbm, BernoulliRBM):
        raise ValueError(f"train_rbm: rbm must be a BernoulliRBM, got {type(rbm).__name__}")
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 1:
        raise ValueError(f"train_rbm: data must be a tensor of shape (N >= 1, *event), got "
                         f"{tuple(data.shape) if isinstance(data, torch.Tensor) else type(data).__name__}")
    if not ((data == 0) | (data == 1)).all():
        raise ValueError("train_rbm: data must hold only 0s and 1s (binarise it first)")
    data = rbm.flat(data).reshape(data.shape[0], *rbm.event_shape).to(rbm.W.dtype)
    for name, value in (("num_epochs", num_epochs), ("batch_size", batch_size), ("num_gibbs_steps", num_gibbs_steps)):
        if int(value) < 1:
            raise ValueError(f"train_rbm: {name} must be >= 1, got {value}")
    if not learning_rate > 0 or not 0 <= momentum < 1 or not weight_decay >= 0:
        raise ValueError(f"train_rbm: need learning_rate > 0, 0 <= momentum < 1, weight_decay >= 0; got "
                         f"{learning_rate}, {momentum}, {weight_decay}")

    kernel = BlockGibbs()
    if persistent:
        objective = make_objective("pcd", kernel=kernel, num_steps=int(num_gibbs_steps),
                                   num_chains=int(num_chains), init="noise")
    else:
        objective = make_objective("cd", kernel=kernel, num_steps=int(num_gibbs_steps))
    objective.setup(rbm, data, generator=generator, support="binary")
    optimizer = torch.optim.SGD(
        [{"params": [rbm.W], "weight_decay": float(weight_decay)},
         {"params": [rbm.b, rbm.c], "weight_decay": 0.0}],
        lr=float(learning_rate), momentum=float(momentum),
    )
    history = RBMTrainingHistory()
    n, batch_size = data.shape[0], int(batch_size)
    rbm.train()
    for epoch in range(1, int(num_epochs) + 1):
        start = time.perf_counter()
        order = torch.randperm(n, generator=generator, device=data.device)
        total = 0.0
        for first in range(0, n, batch_size):
            batch = data[order[first:first + batch_size]]
            loss, _ = objective.loss(rbm, batch, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
            history.num_updates += 1
        history.epoch_times.append(time.perf_counter() - start)
        history.losses.append(total / -(-n // batch_size))
        if callback is not None:
            callback(epoch, rbm, history.losses[-1])
    return history


__all__ = ["RBMTrainingHistory", "train_rbm"]
