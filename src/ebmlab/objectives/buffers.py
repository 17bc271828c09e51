"""Noise sources and the replay buffer used by contrastive objectives.

* :class:`NoiseSource` draws starting points for chains from a simple law fitted to the
  training data: uniform on the data range (per feature for vectors, one range for images),
  a diagonal Gaussian with the data's mean and standard deviation, Bernoulli(½) for binary
  data, or uniform over the K states for categorical data.
* :class:`ReplayBuffer` keeps ``N`` past negative samples (Du & Mordatch 2019, "Implicit
  Generation and Generalization in Energy-Based Models"): each update restarts a chain from
  noise with probability ``p`` and otherwise from a buffer entry, then writes the chain's end
  point back to the slot it came from.

Everything is plain tensors, so the whole state fits in a checkpoint.
"""

from __future__ import annotations

from typing import Any

import torch

NOISE_KINDS = ("uniform", "gaussian")


class NoiseSource:
    """A noise law fitted to data ``(N, *event_shape)``; ``sample(n, generator)`` -> ``(n, *event)``.

    ``kind`` is ``"uniform"`` or ``"gaussian"`` for real data; binary (``{0, 1}``) and
    categorical (``{0..K-1}``) supports always draw uniform states.
    """

    def __init__(self, kind: str = "uniform", support: str = "real", num_states: int = 2):
        if kind not in NOISE_KINDS:
            raise ValueError(f"NoiseSource: kind must be one of {NOISE_KINDS}, got {kind!r}")
        if support not in ("real", "binary", "categorical"):
            raise ValueError(f"NoiseSource: support must be real, binary or categorical, got {support!r}")
        self.kind, self.support, self.num_states = kind, support, int(num_states)
        self.low = self.high = self.mean = self.std = None
        self.event_shape: tuple[int, ...] | None = None

    def fit(self, data: torch.Tensor) -> "NoiseSource":
        """Record the data's range, mean and standard deviation (per feature for vector events)."""
        if data.dim() < 2 or data.shape[0] < 1:
            raise ValueError(f"NoiseSource: data must have shape (N >= 1, *event_shape), got {tuple(data.shape)}")
        data = data.detach()
        self.event_shape = tuple(data.shape[1:])
        if data.dim() == 2:
            self.low, self.high = data.min(0).values, data.max(0).values
            self.mean, self.std = data.mean(0), data.std(0) if data.shape[0] > 1 else torch.ones_like(data[0])
        else:
            self.low, self.high = data.min().expand(self.event_shape), data.max().expand(self.event_shape)
            self.mean = data.mean().expand(self.event_shape)
            self.std = (data.std() if data.numel() > 1 else torch.ones(())).expand(self.event_shape)
        if self.support == "categorical":
            self.num_states = max(self.num_states, int(data.max().item()) + 1)
        return self

    def sample(self, n: int, generator: torch.Generator | None) -> torch.Tensor:
        if self.low is None:
            raise RuntimeError("NoiseSource: call fit(data) before sample()")
        shape = (int(n), *self.event_shape)
        like = self.low
        if self.support == "binary":
            return torch.randint(0, 2, shape, generator=generator, device=like.device).to(like.dtype)
        if self.support == "categorical":
            return torch.randint(0, self.num_states, shape, generator=generator, device=like.device).to(like.dtype)
        if self.kind == "uniform":
            u = torch.rand(shape, generator=generator, dtype=like.dtype, device=like.device)
            return self.low + u * (self.high - self.low)
        z = torch.randn(shape, generator=generator, dtype=like.dtype, device=like.device)
        return self.mean + z * self.std

    def clamp(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` clipped to the data range."""
        return torch.maximum(torch.minimum(x, self.high), self.low)

    def state_dict(self) -> dict[str, Any]:
        return {"low": self.low, "high": self.high, "mean": self.mean, "std": self.std, "num_states": self.num_states}


class ReplayBuffer:
    """``N`` stored samples ``(N, *event_shape)`` with uniform draws without replacement.

    ``draw(n, generator)`` returns ``(x, index)``; ``update(index, x)`` writes chain end points
    back into the slots they were drawn from (indices are distinct, so the write is exact).
    """

    def __init__(self, samples: torch.Tensor):
        if samples.dim() < 2 or samples.shape[0] < 1:
            raise ValueError(f"ReplayBuffer: samples must have shape (N >= 1, *event_shape), got {tuple(samples.shape)}")
        self.samples = samples.detach().clone()

    def __len__(self) -> int:
        return self.samples.shape[0]

    def draw(self, n: int, generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        if n > len(self):
            raise ValueError(f"ReplayBuffer: cannot draw {n} distinct samples from a buffer of {len(self)}")
        index = torch.randperm(len(self), generator=generator, device=self.samples.device)[:n]
        return self.samples[index], index

    def update(self, index: torch.Tensor, x: torch.Tensor) -> None:
        self.samples[index] = x.detach().to(self.samples.dtype)
