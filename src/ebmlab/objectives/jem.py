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

Labels and the trainer: the loop hands an objective ``batch = x_train[index]`` without the
index. So the objective receives the labels of the training rows once, aligned with the data
that :meth:`JEMObjective.setup` sees (``JEMObjective(labels=y)`` or ``setup(..., labels=y)``),
and finds each batch row's label by exact row match: an integer hash of the row's bytes looked
up in the sorted hashes of the training rows, then confirmed by comparing the rows themselves
(so a hash collision cannot mislabel; a row that is not a training row — a held-out row — is
unlabelled). ``loss(energy, batch, generator, labels=y_batch)`` takes explicit labels instead,
which is what a trainer that routes labels should call (see the report of this change).

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
_HASH_MODULUS = 2**61 - 1  # keys stay far from int64 overflow: chunk sums < 2^62
_HASH_CHUNK = 8192  # byte columns per partial sum (8192 · 255 · 2^40 < 2^62)


def row_keys(x: torch.Tensor) -> torch.Tensor:
    """An integer key per row of ``x`` ``(N, *event)`` -> ``(N,)`` int64, from the rows' bytes.

    Bitwise-equal rows get equal keys on any device (integer arithmetic, no rounding); distinct
    rows collide with probability about ``N² / 2^61`` (callers confirm matches row by row).
    """
    raw = x.detach().flatten(1).contiguous().view(torch.uint8).long()
    weights = torch.randint(1, 2**40, (raw.shape[1],), generator=torch.Generator().manual_seed(0x5EED))
    weights = weights.to(raw.device)
    key = torch.zeros(raw.shape[0], dtype=torch.long, device=raw.device)
    for start in range(0, raw.shape[1], _HASH_CHUNK):
        part = (raw[:, start:start + _HASH_CHUNK] * weights[start:start + _HASH_CHUNK]).sum(1)
        key = (key + part % _HASH_MODULUS) % _HASH_MODULUS
    return key


class RowLabels:
    """Labels of the rows of a data tensor, looked up by row content.

    ``RowLabels(data (N, *event), labels (N,))``; ``lookup(batch (B, *event)) -> (B,)`` long,
    the label of each row that is (bitwise) a row of ``data``, ``-1`` for any other row.
    Bitwise-equal data rows with different labels are refused (``ValueError``).
    """

    def __init__(self, data: torch.Tensor, labels: torch.Tensor):
        self.data = data.detach()
        self.labels = labels.to(data.device).long()
        keys = row_keys(self.data)
        self.keys, self.order = torch.sort(keys)
        same = self.keys[1:] == self.keys[:-1]
        if bool(same.any()):  # equal keys: the same row twice (or a collision) — labels must agree
            a, b = self.order[:-1][same], self.order[1:][same]
            rows_equal = (self.data[a] == self.data[b]).flatten(1).all(1)
            conflict = rows_equal & (self.labels[a] != self.labels[b])
            if bool(conflict.any()):
                i, j = int(a[conflict][0]), int(b[conflict][0])
                raise ValueError(f"jem: data rows {i} and {j} are equal but labelled {int(self.labels[i])} and "
                                 f"{int(self.labels[j])}")

    def lookup(self, batch: torch.Tensor) -> torch.Tensor:
        if tuple(batch.shape[1:]) != tuple(self.data.shape[1:]) or batch.dtype != self.data.dtype:
            return torch.full((batch.shape[0],), -1, dtype=torch.long, device=batch.device)
        keys = row_keys(batch)
        pos = torch.searchsorted(self.keys, keys).clamp_(max=self.keys.numel() - 1)
        index = self.order[pos]
        found = (self.keys[pos] == keys) & (self.data[index] == batch).flatten(1).all(1)
        return torch.where(found, self.labels[index], torch.full_like(index, -1))


class JEMObjective(Objective):
    """Cross-entropy on labelled rows plus λ × replay-buffer contrastive divergence on ``E(x)``.

    Args:
        labels: ``(N,)`` class labels of the training rows, aligned with the ``data`` given to
            :meth:`setup` (``-1``: unlabelled); or pass them to :meth:`setup`. Not a config value.
        contrastive: λ >= 0, the weight of the generative term (0: plain classifier).
        kernel: the SGLD kernel (name, ``{"name": ..., **options}`` or a kernel), default
            :data:`DEFAULT_KERNEL`.
        num_steps: sampler transitions per update (JEM uses 20).
        alpha: the energy-magnitude penalty of the contrastive term (default 0.1: without it,
            runs on the digits diverged — energies of order 1e7 — within a few hundred updates).
        clamp: clip negatives to the training data's range.
        buffer_size, restart_prob, noise: the replay buffer (see :class:`ReplayCD`).

    Needs a classifier energy (``logits(x)`` ``(B, K)`` and ``forward = -logsumexp logits``)
    whenever labels are given; without labels the objective is the contrastive term alone
    (any energy), and with ``contrastive=0`` labels are required.
    """

    name = "jem"
    uses_sampler = True
    supports = ("real",)
    sharded_state = ("buffer",)
    sharded_options = ("buffer_size",)

    def __init__(self, labels: torch.Tensor | None = None, contrastive: float = 1.0,
                 kernel: Kernel | str | dict | None = None, num_steps: int = 20, alpha: float = 0.1,
                 clamp: bool = True, buffer_size: int = 10000, restart_prob: float = 0.05, noise: str = "uniform"):
        self.contrastive = check_positive(self.name, "contrastive", contrastive, allow_zero=True)
        self.replay = ReplayCD(DEFAULT_KERNEL if kernel is None else kernel, num_steps=num_steps, alpha=alpha,
                               clamp=clamp, buffer_size=buffer_size, restart_prob=restart_prob, noise=noise)
        self.initial_labels = None if labels is None else self._check_label_tensor(labels)
        self.row_labels: RowLabels | None = None

    @staticmethod
    def _check_label_tensor(labels: Any) -> torch.Tensor:
        labels = torch.as_tensor(labels)
        if labels.dim() != 1 or labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
            raise ValueError(f"jem: labels must be a 1-D integer tensor (N,), got shape {tuple(labels.shape)} "
                             f"dtype {labels.dtype}")
        if labels.numel() and int(labels.min()) < -1:
            raise ValueError(f"jem: labels must be class indices >= 0 or -1 (unlabelled), got {int(labels.min())}")
        return labels.long()

    @property
    def kernel(self) -> Kernel:
        return self.replay.kernel

    @property
    def num_steps(self) -> int:
        return self.replay.num_steps

    def setup(self, energy: EnergyFn, data: torch.Tensor, generator: torch.Generator | None = None,
              support: str = "real", labels: torch.Tensor | None = None) -> None:
        """Keep the training rows' labels (``labels`` or the constructor's) and, with λ > 0,
        fill the replay buffer with noise fitted to ``data`` ``(N, *event)``."""
        labels = self.initial_labels if labels is None else self._check_label_tensor(labels)
        is_classifier = callable(getattr(energy, "logits", None))
        if labels is None:
            if is_classifier:
                raise ValueError("jem: the classifier energy needs labels for the training rows: "
                                 "JEMObjective(labels=y) or setup(energy, data, labels=y), y (N,) in 0..K-1 "
                                 "(-1 for unlabelled rows); the config-driven trainer does not pass labels yet")
            if self.contrastive == 0:
                raise ValueError("jem: contrastive=0 without labels leaves nothing to train")
            self.row_labels = None
        else:
            if not is_classifier:
                raise ValueError(f"jem: labels need a classifier energy with logits(x) (ClassifierEnergy); "
                                 f"got {type(energy).__name__}")
            if labels.shape[0] != data.shape[0]:
                raise ValueError(f"jem: {labels.shape[0]} labels for {data.shape[0]} data rows")
            k = int(getattr(energy, "num_classes", 0) or 0)
            if k and labels.numel() and int(labels.max()) >= k:
                raise ValueError(f"jem: labels must lie in 0..{k - 1} (or -1), got {int(labels.max())}")
            self.row_labels = RowLabels(data, labels)
        if self.contrastive > 0:
            self.replay.setup(energy, data, generator, support)

    def loss(self, energy: EnergyFn, batch: torch.Tensor, generator: torch.Generator | None,
             labels: torch.Tensor | None = None) -> tuple[torch.Tensor, Metrics]:
        """``(CE + λ·CD, metrics)`` for ``batch`` ``(B, *event)``; ``labels`` ``(B,)`` (-1:
        unlabelled) override the lookup of the rows set up by :meth:`setup`."""
        if labels is None:
            labels = (self.row_labels.lookup(batch) if self.row_labels is not None
                      else torch.full((batch.shape[0],), -1, dtype=torch.long, device=batch.device))
        else:
            labels = self._check_label_tensor(labels).to(batch.device)
            if labels.shape[0] != batch.shape[0]:
                raise ValueError(f"jem: {labels.shape[0]} labels for a batch of {batch.shape[0]}")
        labelled = labels >= 0
        num_labelled = int(labelled.sum())
        metrics: Metrics = {"labelled": num_labelled / max(1, batch.shape[0])}
        if self.contrastive > 0:
            x_neg, sampler_metrics = self.replay.negatives(energy, batch, generator)
            x_neg = x_neg.to(batch.dtype)
            both = torch.cat([batch, x_neg], dim=0)
        else:
            x_neg, sampler_metrics, both = None, {}, batch
        if num_labelled:  # one pass gives both: E(x) = -logsumexp f(x) (ClassifierEnergy.forward)
            logits = energy.logits(both)
            e = -torch.logsumexp(logits, dim=1)
        else:
            logits, e = None, check_energy_output(energy(both), both, where=f"{self.name}: energy")
        loss = torch.zeros((), dtype=batch.dtype, device=batch.device)
        if num_labelled:
            lab_logits, lab_y = logits[: batch.shape[0]][labelled], labels[labelled]
            ce = F.cross_entropy(lab_logits, lab_y)
            loss = loss + ce
            metrics["ce"] = float(ce.detach())
            metrics["accuracy"] = float((lab_logits.argmax(1) == lab_y).float().mean())
        if x_neg is not None:
            e_pos, e_neg = e.split([batch.shape[0], x_neg.shape[0]])
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
        return (f"JEMObjective(contrastive={self.contrastive}, kernel={self.kernel!r}, num_steps={self.num_steps}, "
                f"labels={'none' if self.initial_labels is None else self.initial_labels.shape[0]})")


__all__ = ["DEFAULT_KERNEL", "JEMObjective", "RowLabels", "row_keys"]
