"""Neural energies: an MLP for vectors and a small convolutional net for images.

Both map ``(B, *event_shape)`` to ``(B,)``. SiLU (Swish) activations keep the energy smooth,
so its score ``-∇ₓE`` is continuous — Langevin samplers need that. ``spectral_norm=True``
wraps every linear/conv layer in spectral normalisation (Miyato et al. 2018), which bounds
the network's Lipschitz constant and is a common stabiliser for contrastive training.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ebmlab.energy.base import Energy


def _maybe_sn(layer: nn.Module, spectral_norm: bool) -> nn.Module:
    return nn.utils.parametrizations.spectral_norm(layer) if spectral_norm else layer


class MLPEnergy(Energy):
    """``E(x) = MLP(x)``: ``dim -> hidden[0] -> ... -> 1`` with SiLU between layers.

    Shapes: x ``(B, dim)`` -> ``(B,)``.
    """

    def __init__(self, dim: int = 2, hidden: Sequence[int] = (128, 128), spectral_norm: bool = False):
        super().__init__()
        if dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"MLPEnergy: dim and hidden sizes must be >= 1, got {dim}, {tuple(hidden)}")
        sizes = [int(dim), *map(int, hidden)]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [_maybe_sn(nn.Linear(a, b), spectral_norm), nn.SiLU()]
        layers.append(_maybe_sn(nn.Linear(sizes[-1], 1), spectral_norm))
        self.net = nn.Sequential(*layers)
        self.event_shape = (int(dim),)
        self.config = {"dim": int(dim), "hidden": list(map(int, hidden)), "spectral_norm": bool(spectral_norm)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


class ConvEnergy(Energy):
    """A small convolutional energy for images ``(B, C, H, W)`` -> ``(B,)``.

    Three stride-2 3×3 conv blocks (SiLU) with ``width, 2·width, 4·width`` channels, global
    average pooling, and a linear head. Works for any H, W ≥ 4.
    """

    def __init__(self, channels: int = 1, height: int = 28, width: int = 28, base_width: int = 32,
                 spectral_norm: bool = False):
        super().__init__()
        if min(channels, height, width, base_width) < 1:
            raise ValueError("ConvEnergy: channels, height, width and base_width must be >= 1")
        c1, c2, c3 = base_width, 2 * base_width, 4 * base_width
        self.net = nn.Sequential(
            _maybe_sn(nn.Conv2d(channels, c1, 3, stride=1, padding=1), spectral_norm), nn.SiLU(),
            _maybe_sn(nn.Conv2d(c1, c2, 3, stride=2, padding=1), spectral_norm), nn.SiLU(),
            _maybe_sn(nn.Conv2d(c2, c3, 3, stride=2, padding=1), spectral_norm), nn.SiLU(),
            _maybe_sn(nn.Conv2d(c3, c3, 3, stride=2, padding=1), spectral_norm), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            _maybe_sn(nn.Linear(c3, 1), spectral_norm),
        )
        self.event_shape = (int(channels), int(height), int(width))
        self.config = {"channels": int(channels), "height": int(height), "width": int(width),
                       "base_width": int(base_width), "spectral_norm": bool(spectral_norm)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).squeeze(-1)


# ---------------------------------------------------------------------- factories (event_shape, **options)


class FlattenedEnergy(Energy):
    """``E(x) = inner(x.flatten(1))``: runs a vector energy on events of any shape.

    Shapes: x ``(B, *event_shape)`` -> ``(B,)``.
    """

    def __init__(self, inner: nn.Module, event_shape: Sequence[int]):
        super().__init__()
        self.inner = inner
        self.event_shape = tuple(int(s) for s in event_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.flatten(1))


def mlp_energy(event_shape: tuple[int, ...], hidden: Sequence[int] = (128, 128), spectral_norm: bool = False) -> nn.Module:
    """The ``mlp`` model: :class:`MLPEnergy` on events of any shape (image events are flattened)."""
    net = MLPEnergy(dim=math.prod(event_shape), hidden=tuple(hidden), spectral_norm=spectral_norm)
    return net if len(event_shape) == 1 else FlattenedEnergy(net, event_shape)


def conv_energy(event_shape: tuple[int, ...], base_width: int = 32, spectral_norm: bool = False) -> nn.Module:
    """The ``conv`` model: :class:`ConvEnergy` on image events ``(C, H, W)`` or ``(H, W)``."""
    if len(event_shape) == 2:
        event_shape = (1, *event_shape)
        net = ConvEnergy(*event_shape, base_width=base_width, spectral_norm=spectral_norm)
        return _Unsqueezed(net, event_shape[1:])
    if len(event_shape) != 3:
        raise ValueError(f"model 'conv' needs image events (C, H, W) or (H, W), got event shape {event_shape}")
    return ConvEnergy(*event_shape, base_width=base_width, spectral_norm=spectral_norm)


class _Unsqueezed(Energy):
    """A ``(C=1, H, W)`` energy applied to ``(B, H, W)`` images."""

    def __init__(self, inner: nn.Module, event_shape: Sequence[int]):
        super().__init__()
        self.inner = inner
        self.event_shape = tuple(int(s) for s in event_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.unsqueeze(1))
