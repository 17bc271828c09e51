"""Data transforms: standardisation (with its Jacobian) and a train / held-out split.

Standardising ``z = (x - μ) / s`` elementwise changes densities by a constant Jacobian:

    log p_raw(x) = log p_std(z) + log |det ∂z/∂x| = log p_std(z) - Σ_e log s_e,

the sum running over every element ``e`` of the event (so a per-channel ``s_c`` of an image
counts ``H·W`` times). :meth:`Standardizer.log_det_jacobian` returns ``-Σ_e log s_e``, and
:meth:`Standardizer.log_prob_to_raw` / :meth:`Standardizer.log_prob_to_standardized` apply it,
so that a model trained on standardised data reports likelihoods in the data's own units.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch

PER_CHOICES = ("feature", "channel", "scalar")


@dataclass(frozen=True)
class Standardizer:
    """``z = (x - mean) / std`` over the event shape; ``mean`` and ``std`` broadcast to it.

    Build it with :meth:`fit`. ``per`` says what shares one mean and std:

    * ``"feature"`` — every event element has its own (vectors ``(N, d)``: per column);
    * ``"channel"`` — one per index of the first event axis (images ``(N, C, H, W)``: per channel);
    * ``"scalar"``  — one for the whole data set.

    Shapes: ``mean`` and ``std`` have ``len(event_shape)`` dimensions (``(d,)``, ``(C, 1, 1)``,
    ``(1, 1, 1)``, ...); inputs are ``(B, *event_shape)``.
    """

    mean: torch.Tensor
    std: torch.Tensor
    event_shape: tuple[int, ...]
    per: str = "feature"

    @classmethod
    def fit(cls, x: torch.Tensor, per: str | None = None, min_std: float = 1e-6) -> "Standardizer":
        """Fit to data ``x`` ``(N, *event)`` (population std, computed in float64).

        ``per`` defaults to ``"feature"`` for vectors and ``"channel"`` for anything with more
        event dimensions. A std at or below ``min_std`` (a constant feature) is replaced by 1,
        so such features are only centred.
        """
        x = torch.as_tensor(x)
        if per is None:
            per = "feature" if x.dim() <= 2 else "channel"
        if per not in PER_CHOICES:
            raise ValueError(f"Standardizer: per must be one of {', '.join(PER_CHOICES)}, got {per!r}")
        if x.dim() < 2 or x.shape[0] < 2:
            raise ValueError(f"Standardizer: need data (N, *event) with N >= 2, got shape {tuple(x.shape)}")
        if not torch.isfinite(x).all():
            raise ValueError("Standardizer: the data contain NaN or infinite values")
        event_shape = tuple(x.shape[1:])
        x64 = x.detach().to(torch.float64)
        if per == "feature":
            dims: tuple[int, ...] = (0,)
        elif per == "channel":
            dims = (0, *range(2, x.dim()))
        else:
            dims = tuple(range(x.dim()))
        mean = x64.mean(dim=dims, keepdim=True)[0]
        std = (x64 - mean).square().mean(dim=dims, keepdim=True).sqrt()[0]
        std = torch.where(std <= min_std, torch.ones_like(std), std)
        dtype = x.dtype if x.dtype.is_floating_point else torch.get_default_dtype()
        return cls(mean.to(dtype), std.to(dtype), event_shape, per)

    def _check(self, x: torch.Tensor, what: str) -> None:
        if tuple(x.shape[1:]) != self.event_shape:
            raise ValueError(
                f"Standardizer.{what}: expected input (B, {', '.join(map(str, self.event_shape))}), "
                f"got shape {tuple(x.shape)}"
            )

    def transform(self, x: torch.Tensor) -> torch.Tensor:
        """``z = (x - mean) / std``, shape ``(B, *event)`` -> ``(B, *event)``."""
        self._check(x, "transform")
        return (x - self.mean.to(x)) / self.std.to(x)

    def inverse_transform(self, z: torch.Tensor) -> torch.Tensor:
        """``x = mean + std · z``, the inverse of :meth:`transform`."""
        self._check(z, "inverse_transform")
        return self.mean.to(z) + self.std.to(z) * z

    def log_det_jacobian(self) -> float:
        """``log |det ∂z/∂x| = -Σ_e log std_e`` over all event elements (a constant)."""
        std = self.std.to(torch.float64).expand(self.event_shape)
        return float(-torch.log(std).sum())

    def log_prob_to_raw(self, log_prob_standardized: torch.Tensor) -> torch.Tensor:
        """``log p_raw(x) = log p_std(z) + log |det ∂z/∂x|``, shape ``(B,)``."""
        return log_prob_standardized + self.log_det_jacobian()

    def log_prob_to_standardized(self, log_prob_raw: torch.Tensor) -> torch.Tensor:
        """``log p_std(z) = log p_raw(x) - log |det ∂z/∂x|``, shape ``(B,)``."""
        return log_prob_raw - self.log_det_jacobian()

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None) -> "Standardizer":
        """A copy with ``mean`` and ``std`` on ``device`` / in ``dtype``."""
        return Standardizer(self.mean.to(device=device, dtype=dtype), self.std.to(device=device, dtype=dtype),
                            self.event_shape, self.per)

    def state_dict(self) -> dict[str, Any]:
        """Plain tensors and values, for ``torch.save`` in a checkpoint."""
        return {"mean": self.mean.clone(), "std": self.std.clone(), "event_shape": list(self.event_shape), "per": self.per}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any]) -> "Standardizer":
        """Rebuild from :meth:`state_dict`; a ``ValueError`` names any missing or inconsistent entry."""
        missing = [k for k in ("mean", "std", "event_shape", "per") if k not in state]
        if missing:
            raise ValueError(f"Standardizer.from_state_dict: missing entries {', '.join(missing)}")
        mean, std = torch.as_tensor(state["mean"]), torch.as_tensor(state["std"])
        event_shape = tuple(int(s) for s in state["event_shape"])
        try:
            torch.broadcast_shapes(mean.shape, std.shape, event_shape)
        except RuntimeError:
            raise ValueError(
                f"Standardizer.from_state_dict: mean {tuple(mean.shape)} and std {tuple(std.shape)} "
                f"do not broadcast to the event shape {event_shape}"
            ) from None
        if not bool((std > 0).all()):
            raise ValueError("Standardizer.from_state_dict: std must be > 0")
        return cls(mean, std, event_shape, str(state["per"]))


def split_indices(
    n: int, *, heldout_fraction: float = 0.1, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """A random split of ``range(n)``: sorted train and held-out index tensors.

    ``round(heldout_fraction · n)`` indices are held out (at least one, and at least one left
    for training); the permutation is drawn from ``generator``.
    """
    if not 0.0 < heldout_fraction < 1.0:
        raise ValueError(f"split: heldout_fraction must be in (0, 1), got {heldout_fraction}")
    if n < 2:
        raise ValueError(f"split: need at least 2 data points to split, got {n}")
    num_heldout = heldout_size(n, heldout_fraction)
    perm = torch.randperm(n, generator=generator, device=generator.device).cpu()
    return perm[num_heldout:].sort().values, perm[:num_heldout].sort().values


def train_heldout_split(
    x: torch.Tensor, *, heldout_fraction: float = 0.1, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``x`` ``(N, *event)`` into train and held-out rows (original order kept in each)."""
    train, heldout = split_indices(x.shape[0], heldout_fraction=heldout_fraction, generator=generator)
    return x[train.to(x.device)], x[heldout.to(x.device)]


def heldout_size(n: int, heldout_fraction: float) -> int:
    """How many of ``n`` points :func:`split_indices` holds out."""
    return min(max(1, round(heldout_fraction * n)), n - 1) if n >= 2 else 0

