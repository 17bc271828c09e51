"""Classifier energies: a K-class classifier read as an energy-based model (JEM).

A network ``f`` with logits ``f(x) ∈ ℝ^K`` defines (Grathwohl et al. 2019, "Your classifier is
secretly an energy based model and you should treat it like one")

    E(x, y) = -f(x)[y]                      (joint energy, p(x, y) ∝ exp(f(x)[y]))
    E(x)    = -logsumexp_y f(x)[y]          (marginal energy, p(x) = Σ_y p(x, y))
    p(y|x)  = exp(-E(x, y)) / exp(-E(x)) = softmax(f(x))[y]   (the classifier itself)

:class:`ClassifierEnergy` is an :class:`~ebmlab.energy.base.Energy` whose ``forward`` is the
marginal ``E(x)``, so every sampler and objective works on it unchanged; :meth:`~ClassifierEnergy.logits`
and :meth:`~ClassifierEnergy.joint_energy` expose the classifier, and
:meth:`~ClassifierEnergy.conditional` returns ``E(x | y) = -f(x)[y]`` (= ``-log p(x|y)`` up to
the class's ``log Z_y``) as an energy module of its own, for class-conditional sampling.

Shapes: ``x`` ``(B, *event_shape)``; logits ``(B, K)``; energies ``(B,)``; labels ``(B,)`` long
in ``0..K-1``. Factories (``factory(event_shape, **options)``): :func:`digit_classifier` (a
small conv net for 8×8 images), :func:`mlp_classifier` (vectors, or flattened images) and
:func:`jem_energy` (the ``jem`` model: conv for images, MLP for vectors).
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from ebmlab.energy.base import Energy


def _check_labels(owner: str, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    if y.dim() != 1 or y.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ValueError(f"{owner}: labels must be a 1-D integer tensor, got shape {tuple(y.shape)} dtype {y.dtype}")
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= num_classes):
        raise ValueError(f"{owner}: labels must lie in 0..{num_classes - 1}, got values in "
                         f"{int(y.min())}..{int(y.max())}")
    return y.long()


class ClassifierEnergy(Energy):
    """``E(x) = -logsumexp_y f(x)[y]`` for a classifier ``net: (B, *event) -> (B, K)`` logits.

    Args:
        net: any module returning logits ``(B, num_classes)``.
        num_classes: K >= 2.
        event_shape: the shape of one input; default ``net.event_shape`` when it has one.

    ``logits(x)`` ``(B, K)``; ``joint_energy(x, y)`` ``(B,)``; ``forward(x)`` ``(B,)``;
    ``conditional(y)`` an energy ``x -> -f(x)[y]`` (see :class:`ConditionalEnergy`).

    It holds a network, not plain options, so a run of :func:`ebmlab.fit` that must load in a
    fresh process names the factory that built it: ``fit(..., run_dir=DIR,
    model_spec="ebmlab.energy.classifier:mlp_classifier", model_kwargs={"num_classes": 10})``
    (the config trainer records the registered ``jem`` model by itself).
    """

    def __init__(self, net: nn.Module, num_classes: int, event_shape: Sequence[int] | None = None):
        super().__init__()
        if isinstance(num_classes, bool) or int(num_classes) != num_classes or num_classes < 2:
            raise ValueError(f"ClassifierEnergy: num_classes must be an integer >= 2, got {num_classes!r}")
        self.net = net
        self.num_classes = int(num_classes)
        shape = event_shape if event_shape is not None else getattr(net, "event_shape", None)
        self.event_shape = None if shape is None else tuple(int(s) for s in shape)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """``f(x)``, shape ``(B, K)``."""
        out = self.net(x)
        if out.shape != (x.shape[0], self.num_classes):
            raise ValueError(f"ClassifierEnergy: the net must return logits ({x.shape[0]}, {self.num_classes}), "
                             f"got {tuple(out.shape)}")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The marginal energy ``-logsumexp_y f(x)[y]``, shape ``(B,)``."""
        return -torch.logsumexp(self.logits(x), dim=1)

    def joint_energy(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``E(x, y) = -f(x)[y]`` for labels ``y`` ``(B,)``, shape ``(B,)``."""
        y = _check_labels("ClassifierEnergy.joint_energy", y, self.num_classes)
        if y.shape[0] != x.shape[0]:
            raise ValueError(f"ClassifierEnergy.joint_energy: {x.shape[0]} inputs but {y.shape[0]} labels")
        return -self.logits(x).gather(1, y.to(x.device).unsqueeze(1)).squeeze(1)

    def class_probabilities(self, x: torch.Tensor) -> torch.Tensor:
        """``p(y|x) = softmax(f(x))``, shape ``(B, K)``."""
        return torch.softmax(self.logits(x), dim=1)

    def conditional(self, y: int | torch.Tensor) -> "ConditionalEnergy":
        """The class-conditional energy ``E(x | y) = -f(x)[y]`` as a module (see :class:`ConditionalEnergy`)."""
        return ConditionalEnergy(self, y)


class ConditionalEnergy(Energy):
    """``E(x | y) = -f(x)[y]``: the energy of ``p(x | y) ∝ exp(f(x)[y])`` for a fixed class.

    ``y`` is one class (every row gets it) or a ``(C,)`` tensor, one class per chain: a batch
    ``(B, *event)`` with ``B`` a multiple of ``C`` reads row ``i`` with class ``y[i mod C]``
    (the stacking of parallel tempering's replicas, row ``k·C + c`` for chain ``c``). Every
    sampler that evaluates a subset of the chains (NUTS) asks for their rows with
    :meth:`select_rows`; a batch that is not a multiple of ``C`` is refused, never mislabelled. Shares
    the classifier's parameters (nothing is copied).
    """

    def __init__(self, classifier: ClassifierEnergy, y: int | torch.Tensor):
        super().__init__()
        k = classifier.num_classes
        if isinstance(y, torch.Tensor) and y.dim() > 0:
            y = _check_labels("ClassifierEnergy.conditional", y, k)
            if y.numel() == 0:
                raise ValueError("ClassifierEnergy.conditional: y is an empty tensor")
        else:
            value = int(y)
            if value != y or not 0 <= value < k:
                raise ValueError(f"ClassifierEnergy.conditional: y must be a class in 0..{k - 1}, got {y!r}")
            y = torch.tensor(value)
        self.classifier = classifier
        self.register_buffer("y", y.long(), persistent=False)
        self.event_shape = classifier.event_shape
        self.num_classes = k

    def select_rows(self, index: torch.Tensor) -> "ConditionalEnergy":
        """The energy of rows ``index`` ``(n,)`` of the batch: row ``j`` gets class
        ``y[index[j] mod C]`` (:func:`~ebmlab.energy.base.energy_rows`)."""
        if self.y.dim() == 0:
            return self
        return ConditionalEnergy(self.classifier, self.y.index_select(0, index.to(self.y.device) % self.y.shape[0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = self.classifier.logits(x)
        if self.y.dim() == 0:
            return -logits[:, int(self.y)]
        c = self.y.shape[0]
        if x.shape[0] % c:
            raise ValueError(f"ConditionalEnergy: a batch of {x.shape[0]} rows is not a multiple of the {c} classes "
                             f"given (one per chain); a sampler that evaluates a subset of the chains must "
                             f"ask for their rows, energy.select_rows(index)")
        y = self.y.to(logits.device).repeat(x.shape[0] // c)
        return -logits.gather(1, y.unsqueeze(1)).squeeze(1)


# ---------------------------------------------------------------------- networks and factories


class DigitConvNet(nn.Module):
    """Logits for small images ``(B, C, H, W) -> (B, K)``: two 3×3 conv blocks (SiLU), a
    stride-2 one, global average pooling and a linear head. Smooth (SiLU) so Langevin works."""

    def __init__(self, channels: int = 1, num_classes: int = 10, width: int = 32):
        super().__init__()
        if min(channels, num_classes, width) < 1:
            raise ValueError(f"DigitConvNet: channels, num_classes and width must be >= 1, got "
                             f"{channels}, {num_classes}, {width}")
        self.body = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.SiLU(),
            nn.AdaptiveAvgPool2d(2), nn.Flatten(),
            nn.Linear(8 * width, 2 * width), nn.SiLU(),
            nn.Linear(2 * width, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class MLPNet(nn.Module):
    """Logits for vectors (images are flattened) ``(B, *event) -> (B, K)``, SiLU between layers."""

    def __init__(self, dim: int, num_classes: int = 10, hidden: Sequence[int] = (128, 128)):
        super().__init__()
        sizes = [int(dim), *map(int, hidden), int(num_classes)]
        if min(sizes) < 1:
            raise ValueError(f"MLPNet: dim, hidden sizes and num_classes must be >= 1, got {sizes}")
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), nn.SiLU()]
        self.body = nn.Sequential(*layers[:-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.flatten(1))


class _Channelled(nn.Module):
    """A ``(C=1, H, W)`` net applied to ``(B, H, W)`` images."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.unsqueeze(1))


def digit_classifier(event_shape: tuple[int, ...] = (1, 8, 8), num_classes: int = 10, width: int = 32) -> ClassifierEnergy:
    """A :class:`ClassifierEnergy` over a :class:`DigitConvNet` for images ``(C, H, W)`` or ``(H, W)``."""
    shape = tuple(int(s) for s in event_shape)
    if len(shape) == 2:
        return ClassifierEnergy(_Channelled(DigitConvNet(1, num_classes, width)), num_classes, shape)
    if len(shape) != 3:
        raise ValueError(f"digit_classifier: needs image events (C, H, W) or (H, W), got event shape {shape}")
    return ClassifierEnergy(DigitConvNet(shape[0], num_classes, width), num_classes, shape)


def mlp_classifier(event_shape: tuple[int, ...], num_classes: int = 10,
                   hidden: Sequence[int] = (128, 128)) -> ClassifierEnergy:
    """A :class:`ClassifierEnergy` over an :class:`MLPNet` (image events are flattened)."""
    shape = tuple(int(s) for s in event_shape)
    return ClassifierEnergy(MLPNet(math.prod(shape), num_classes, hidden), num_classes, shape)


def jem_energy(event_shape: tuple[int, ...], num_classes: int = 10, width: int = 32,
               hidden: Sequence[int] = (128, 128), architecture: str = "auto") -> ClassifierEnergy:
    """The ``jem`` model: ``architecture="conv"`` (:func:`digit_classifier`, ``width``) or ``"mlp"``
    (:func:`mlp_classifier`, ``hidden``; image events flattened). ``"auto"``: the MLP for vectors and
    small images (at most 16×16 pixels, where it trained faster and better than the conv net: 0.978
    against 0.933 held-out accuracy on the 8×8 digits with the JEM preset), the conv net for larger ones."""
    shape = tuple(int(s) for s in event_shape)
    if architecture not in ("auto", "conv", "mlp"):
        raise ValueError(f"jem: architecture must be auto, conv or mlp, got {architecture!r}")
    image = len(shape) in (2, 3)
    if architecture == "auto":
        architecture = "conv" if image and math.prod(shape[-2:]) > 256 else "mlp"
    if architecture == "conv":
        if not image:
            raise ValueError(f"jem: architecture 'conv' needs image events (C, H, W) or (H, W), got {shape}")
        return digit_classifier(shape, num_classes, width)
    return mlp_classifier(shape, num_classes, hidden)


__all__ = ["ClassifierEnergy", "ConditionalEnergy", "DigitConvNet", "MLPNet", "digit_classifier", "jem_energy",
           "mlp_classifier"]
