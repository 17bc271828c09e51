"""JEM: train a classifier as an energy-based model of ``p(x, y)`` (Grathwohl et al. 2019).

For a :class:`~ebmlab.energy.classifier.ClassifierEnergy` with logits ``f(x)``,
``log p(x, y) = log p(y|x) + log p(x)`` with ``p(y|x) = softmax(f(x))[y]`` and
``p(x) ∝ exp(-E(x))``, ``E(x) = -logsumexp_y f(x)[y]``. The loss per update is

    L(θ) = CE(f(x⁺_lab), y_lab) + λ · [mean_b E(x⁺_b) - mean_b E(x⁻_b) + α · mean(E(x⁺)² + E(x⁻)²)]

with the cross-entropy over the batch's labelled rows and the contrastive divergence term over
every row; the negatives ``x⁻`` come from short-run SGLD chains out of a replay buffer (the
library's :class:`~ebmlab.objectives.contrastive.ReplayCD` does the sampling: ``num_steps``
kernel steps, restart from noise with probability ``restart_prob``; Du & Mordatch 2019) on the
frozen energy, so they carry no gradient. ``contrastive=0`` is the plain classifier (no sampler
runs): the negative control of the generative term. Rows without a label (label ``-1``) enter
only the contrastive term — JEM's semi-supervised setting.

Labels: the objective declares ``uses_labels``, so the trainer and :func:`ebmlab.fit` hand it
batches ``(x (B, *event), y (B,) long)``, the labels drawn with the same batch indices as the
rows, and pass the training labels to :meth:`JEMObjective.setup` (validated there, once). A
plain tensor batch is a batch of unlabelled rows.

Metrics: ``loss``, ``ce`` (on the labelled rows), ``accuracy`` (batch, labelled rows),
``labelled`` (fraction of the batch with a label) and, with the contrastive term, ``energy_pos``,
``energy_neg``, ``cd_gap = mean E(x⁻) - mean E(x⁺)``, ``accept`` and ``restarted``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from ebmlab.energy.base import EnergyFn, check_energy_output
from ebmlab.samplers import ULA, Kernel
from ebmlab.objectives.base import Metrics, Objective, check_positive
from ebmlab.objectives.contrastive import ReplayCD

#: SGLD ``x ← x - 0.1·∇E + 0.01 ξ`` = ULA(step_size=0.1, noise_scale=0.01/√0.2): JEM's noise of
#: standard deviation 0.01 per step (Grathwohl et al. 2019), with a step of 0.1 rather than their
#: 1 — at step 1 the chains of a small MLP classifier on the [0, 1] digits left the data range
#: by orders of magnitude within 10 steps.
DEFAULT_KERNEL = ULA(step_size=0.1, noise_scale=0.01 / math.sqrt(0.2))


class JEMObjective(Objective):
    """Cross-entropy on labelled rows plus λ × replay-buffer contrastive divergence on ``E(x)``.

    Args:
        contrastive: λ >= 0, the weight of the generative term (0: plain classifier).
        kernel: the SGLD kernel (name, ``{"name": ..., **options}`` or a kernel), default
            :data:`DEFAULT_KERNEL`.
        num_steps: sampler transitions per update (JEM uses 20).
        alpha: the energy-magnitude penalty of the contrastive term (default 0.1: without it,
            runs on the digits diverged — energies of order 1e7 — within a few hundred updates).
        clamp: clip negatives to the training data's range.
        buffer_size, restart_prob, noise: the replay buffer (see :class:`ReplayCD`).

    Labelled rows need a classifier energy (``logits(x)`` ``(B, K)``, ``forward = -logsumexp
    logits``: :class:`~ebmlab.energy.classifier.ClassifierEnergy`); on unlabelled batches the
    objective is the contrastive term alone and trains any energy.
    """

    name = "jem"
    uses_sampler = True
    uses_labels = True
    supports = ("real",)
    sharded_state = ("buffer",)
    sharded_options = ("buffer_size",)
    model_aliases = {"mlp": "jem", "conv": "jem"}

    def __init__(self, contrastive: float = 1.0, kernel: Kernel | str | dict | None = None, num_steps: int = 20,
                 alpha: float = 0.1, clamp: bool = True, buffer_size: int = 10000, restart_prob: float = 0.05,
                 noise: str = "uniform"):
        self.contrastive = check_positive(self.name, "contrastive", contrastive, allow_zero=True)
        self.replay = ReplayCD(DEFAULT_KERNEL if kernel is None else kernel, num_steps=num_steps, alpha=alpha,
                               clamp=clamp, buffer_size=buffer_size, restart_prob=restart_prob, noise=noise)

    @property
    def kernel(self) -> Kernel:
        return self.replay.kernel

    @property
    def num_steps(self) -> int:
        return self.replay.num_steps

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real", labels: torch.Tensor | None = None) -> None:
        """Check the training labels ``(N,)`` (class indices, -1 for unlabelled rows) against the
        energy and ``data`` ``(N, *event)``; with λ > 0, fill the replay buffer with noise fitted to ``data``."""
        if labels is not None:
            labels = torch.as_tensor(labels)
            if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
                raise ValueError(f"jem: labels must be a 1-D integer tensor (N,), got shape {tuple(labels.shape)} "
                                 f"dtype {labels.dtype}")
            if labels.shape[0] != data.shape[0]:
                raise ValueError(f"jem: {labels.shape[0]} labels for {data.shape[0]} data rows")
            if not callable(getattr(energy, "logits", None)):
                raise ValueError(f"jem: labels need a classifier energy with logits(x) (ClassifierEnergy); "
                                 f"got {type(energy).__name__}")
            k = int(getattr(energy, "num_classes", 0) or 0)
            if labels.numel() and (int(labels.min()) < -1 or (k and int(labels.max()) >= k)):
                raise ValueError(f"jem: labels must lie in 0..{k - 1 if k else 'K-1'} (or -1: unlabelled), got "
                                 f"values in {int(labels.min())}..{int(labels.max())}")
        elif self.contrastive == 0:
            raise ValueError("jem: contrastive=0 without labels leaves nothing to train")
        if self.contrastive > 0:
            self.replay.setup(energy, data, generator, support)

    def loss(self, energy: EnergyFn, batch: torch.Tensor | tuple[torch.Tensor, torch.Tensor],
             generator: torch.Generator | None) -> tuple[torch.Tensor, Metrics]:
        """``(CE + λ·CD, metrics)`` for ``batch`` = ``(x (B, *event), y (B,))`` (-1: unlabelled)
        or ``x`` alone (every row unlabelled)."""
        if isinstance(batch, (tuple, list)):
            if len(batch) != 2 or batch[1].shape != batch[0].shape[:1]:
                raise ValueError(f"jem: a labelled batch is (x (B, *event), y (B,)), got "
                                 f"{[tuple(b.shape) for b in batch]}")
            x, labels = batch[0], batch[1].to(batch[0].device).long()
        else:
            x, labels = batch, None
        labelled = labels >= 0 if labels is not None else None
        num_labelled = 0 if labelled is None else int(labelled.sum())
        if num_labelled and not callable(getattr(energy, "logits", None)):
            raise ValueError(f"jem: labelled rows need a classifier energy with logits(x), got {type(energy).__name__}")
        metrics: Metrics = {"labelled": num_labelled / max(1, x.shape[0])}
        if self.contrastive > 0:
            x_neg, sampler_metrics = self.replay.negatives(energy, x, generator)
            x_neg = x_neg.to(x.dtype)
            both = torch.cat([x, x_neg], dim=0)
        else:
            x_neg, sampler_metrics, both = None, {}, x
        if num_labelled:  # one pass gives both: E(x) = -logsumexp f(x) (ClassifierEnergy.forward)
            logits = energy.logits(both)
            e = -torch.logsumexp(logits, dim=1)
        else:
            logits, e = None, check_energy_output(energy(both), both, where=f"{self.name}: energy")
        loss = torch.zeros((), dtype=x.dtype, device=x.device)
        if num_labelled:
            lab_logits, lab_y = logits[: x.shape[0]][labelled], labels[labelled]
            ce = F.cross_entropy(lab_logits, lab_y)
            loss = loss + ce
            metrics["ce"] = float(ce.detach())
            metrics["accuracy"] = float((lab_logits.argmax(1) == lab_y).float().mean())
        if x_neg is not None:
            e_pos, e_neg = e.split([x.shape[0], x_neg.shape[0]])
            cd = e_pos.mean() - e_neg.mean()
            if self.replay.alpha > 0:
                cd = cd + self.replay.alpha * (e_pos.square().mean() + e_neg.square().mean())
            loss = loss + self.contrastive * cd
            pos, neg = float(e_pos.mean().detach()), float(e_neg.mean().detach())
            metrics.update({"energy_pos": pos, "energy_neg": neg, "cd_gap": neg - pos, **sampler_metrics,
                            "restarted": self.replay._restarted})
        metrics["loss"] = float(loss.detach())
        return loss, metrics

    def state_dict(self) -> dict[str, Any]:
        return self.replay.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        extra = set(state) - {"buffer"}
        if extra:
            raise ValueError(f"jem: unexpected objective state keys {sorted(extra)}")
        self.replay.load_state_dict(state)

    def model_samples(self, energy: EnergyFn, num_samples: int, generator: torch.Generator | None) -> torch.Tensor | None:
        return self.replay.model_samples(energy, num_samples, generator)

    def __repr__(self) -> str:
        return f"JEMObjective(contrastive={self.contrastive}, kernel={self.kernel!r}, num_steps={self.num_steps})"


__all__ = ["DEFAULT_KERNEL", "JEMObjective"]
