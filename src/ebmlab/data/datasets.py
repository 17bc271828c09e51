"""One entry point for every data source: ``load_dataset(spec) -> Dataset``.

``spec`` is one of

* a built-in 2-D toy set: ``8gaussians``, ``2spirals``, ``checkerboard``, ``rings``, ``moons``,
  ``pinwheel``, ``swissroll`` (``num_samples`` fresh draws, default 10,000);
* ``digits``, ``digits-binary`` (``(N, 1, 8, 8)``), ``digits-flat``, ``digits-binary-flat``
  (``(N, 64)``): scikit-learn's bundled 8×8 digits;
* ``mnist:DIR``, ``mnist-binary:DIR``, ``fashion-mnist:DIR``, ``fashion-mnist-binary:DIR``:
  IDX files in ``DIR`` (``split`` chooses train / test / all);
* ``images:DIR``: a folder of same-sized PNG files;
* a path to a ``.npy``, ``.npz`` or ``.csv`` file.

Relative paths are taken relative to ``root`` (default: the working directory); a bare
``mnist`` or ``images`` means ``DIR = root`` when ``root`` is given, and is refused otherwise
(name the directory). Every random choice (toy draws, the subset
picked by ``num_samples``) uses ``generator``, by default one seeded with 0.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ebmlab.data.files import SUPPORTED_SUFFIXES, is_data_file, load_array
from ebmlab.data.images import load_digits, load_image_folder, load_mnist
from ebmlab.data.toy2d import TOY_NAMES, TOY_SETS
from ebmlab.data.transforms import split_indices

DEFAULT_TOY_SAMPLES = 10_000
DIGITS_NAMES = ("digits", "digits-binary", "digits-flat", "digits-binary-flat")
DIR_SCHEMES = ("mnist", "mnist-binary", "fashion-mnist", "fashion-mnist-binary", "images")
SUPPORTS = ("real", "binary")


@dataclass(frozen=True, eq=False)
class Dataset:
    """A data set in memory.

    ``x`` ``(N, *event_shape)`` float tensor; ``support`` is ``"real"`` or ``"binary"``
    (values in {0, 1}); ``true_log_density`` maps ``(B, *event) -> (B,)`` normalised
    ``log p(x)`` when the data-generating density is known (toy sets), else ``None``;
    ``sampler(n, generator)`` draws fresh data for toy sets, else ``None``; ``labels``
    ``(N,)`` class labels where the source has them.
    """

    x: torch.Tensor
    name: str
    event_shape: tuple[int, ...]
    support: str = "real"
    true_log_density: Callable[[torch.Tensor], torch.Tensor] | None = None
    sampler: Callable[[int, torch.Generator | None], torch.Tensor] | None = None
    labels: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.support not in SUPPORTS:
            raise ValueError(f"{self.name}: support must be one of {', '.join(SUPPORTS)}, got {self.support!r}")
        if tuple(self.x.shape[1:]) != tuple(self.event_shape):
            raise ValueError(f"{self.name}: x has shape {tuple(self.x.shape)}, not (N, *{tuple(self.event_shape)})")

    def __len__(self) -> int:
        return self.x.shape[0]

    def subset(self, index: torch.Tensor) -> "Dataset":
        """The rows ``index`` (a long tensor) of ``x`` and ``labels``; everything else kept."""
        labels = None if self.labels is None else self.labels[index.to(self.labels.device)]
        return replace(self, x=self.x[index.to(self.x.device)], labels=labels)

    def split(self, heldout_fraction: float = 0.1, *, generator: torch.Generator) -> tuple["Dataset", "Dataset"]:
        """Random train / held-out split (see :func:`ebmlab.data.transforms.split_indices`)."""
        train, heldout = split_indices(len(self), heldout_fraction=heldout_fraction, generator=generator)
        return self.subset(train), self.subset(heldout)

    def check_event_shape(self, event_shape: tuple[int, ...] | list[int]) -> None:
        """Raise a ``ValueError`` naming the data set if its event shape is not ``event_shape``."""
        expected = tuple(int(s) for s in event_shape)
        if self.event_shape != expected:
            raise ValueError(
                f"{self.name}: data points have shape {self.event_shape} but {expected} is expected"
                + (f" ({self.event_shape[0]} values per row instead of {expected[0]})"
                   if len(expected) == 1 == len(self.event_shape) else "")
            )


def available_datasets() -> list[str]:
    """Every accepted spec form, for help texts and error messages."""
    return [*TOY_NAMES, *DIGITS_NAMES, *(f"{s}:DIR" for s in DIR_SCHEMES)]


def _make(x: np.ndarray | torch.Tensor, name: str, support: str, labels=None, **kw) -> Dataset:
    x = torch.as_tensor(x).to(torch.get_default_dtype())
    labels = None if labels is None else torch.as_tensor(labels, dtype=torch.long)
    return Dataset(x=x, name=name, event_shape=tuple(x.shape[1:]), support=support, labels=labels, **kw)


def _resolve(path: str, root: str | os.PathLike | None) -> Path:
    p = Path(path).expanduser()
    return p if p.is_absolute() or root is None else Path(root) / p


def _check_num_samples(num_samples, spec: str) -> int | None:
    if num_samples is None:
        return None
    if isinstance(num_samples, bool) or int(num_samples) != num_samples or num_samples < 1:
        raise ValueError(f"{spec}: num_samples must be a positive integer, got {num_samples!r}")
    return int(num_samples)


def load_dataset(
    spec: str,
    *,
    num_samples: int | None = None,
    generator: torch.Generator | None = None,
    root: str | os.PathLike | None = None,
    split: str = "train",
) -> Dataset:
    """Load the data set named by ``spec`` (see the module docstring for the forms).

    ``num_samples``: for toy sets the number of draws (default 10,000); for every other
    source a random subset of that many rows, drawn without replacement (default: all rows).
    ``split``: ``"train"``, ``"test"`` or ``"all"`` for MNIST-style sets (ignored otherwise).
    Unknown names raise a ``ValueError`` that lists the available ones.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"load_dataset: spec must be a non-empty string, got {spec!r}")
    spec = spec.strip()
    num_samples = _check_num_samples(num_samples, spec)
    if generator is None:
        generator = torch.Generator().manual_seed(0)

    key = spec.lower()
    if key in TOY_SETS:
        toy = TOY_SETS[key]
        x = toy.sample(DEFAULT_TOY_SAMPLES if num_samples is None else num_samples, generator)
        return Dataset(x=x, name=key, event_shape=(2,), support="real",
                       true_log_density=toy.log_density(), sampler=toy.sample)

    dataset = _load_fixed(spec, key, root, split)
    if num_samples is not None:
        if num_samples > len(dataset):
            raise ValueError(f"{dataset.name}: num_samples={num_samples} exceeds the {len(dataset)} data points")
        index = torch.randperm(len(dataset), generator=generator, device=generator.device)[:num_samples]
        dataset = dataset.subset(index.sort().values.cpu())
    return dataset


def _load_fixed(spec: str, key: str, root, split: str) -> Dataset:
    """Every non-toy source, loaded in full."""
    if key in DIGITS_NAMES:
        binary, flat = "binary" in key, key.endswith("-flat")
        x, labels = load_digits(binary=binary, flat=flat)
        return _make(x, key, "binary" if binary else "real", labels)

    scheme, sep, arg = spec.partition(":")
    scheme = scheme.lower()
    if scheme in DIR_SCHEMES:
        if arg.strip():
            directory = _resolve(arg.strip(), root)
        elif root is not None:
            directory = Path(root)
        else:
            raise ValueError(f"{spec}: give a directory, as {scheme}:/path/to/dir (or pass root)")
        if scheme == "images":
            x, _ = load_image_folder(directory)
            return _make(x, f"images:{directory}", "real")
        binary = scheme.endswith("-binary")
        variant = scheme.removesuffix("-binary")
        x, labels = load_mnist(directory, split=split, variant=variant, binary=binary)
        return _make(x, f"{scheme}:{directory}", "binary" if binary else "real", labels)

    path = _resolve(spec, root)
    if is_data_file(spec) or path.is_file():
        array = load_array(path)
        support = "binary" if bool(np.isin(array, (0.0, 1.0)).all()) else "real"
        return _make(array, str(path), support)
    if path.is_dir():
        raise ValueError(
            f"{path}: is a directory; use images:{spec} for a folder of PNG files or mnist:{spec} for IDX files"
        )
    raise ValueError(
        f"unknown data set {spec!r}; choose one of {', '.join(available_datasets())}, "
        f"or give a path to a {'/'.join(SUPPORTED_SUFFIXES)} file"
    )
