"""What :func:`ebmlab.training.fit` accepts as data, turned into one tensor ``(N, *event)``.

Accepted: a tensor or numpy array; a ``torch.utils.data.Dataset`` (items stacked; an item that
is a tuple or list contributes its first element, e.g. ``(image, label)``); a ``DataLoader``
(its dataset, and its batch size); a built-in data name (:func:`ebmlab.data.load_dataset`).
The data are materialised once so that batches can be drawn by the loop's own generator,
which makes resumed runs exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ebmlab.data import load_dataset


def _dtype_of(energy: nn.Module) -> torch.dtype:
    for tensor in list(energy.parameters()) + list(energy.buffers()):
        if tensor.is_floating_point():
            return tensor.dtype
    return torch.get_default_dtype()


def _stack_dataset(dataset: Dataset) -> tuple[torch.Tensor, torch.Tensor | None]:
    try:
        n = len(dataset)  # type: ignore[arg-type]
    except TypeError:
        raise ValueError("fit: data is an iterable Dataset without a length; pass a tensor or a map-style "
                         "Dataset") from None
    if n == 0:
        raise ValueError("fit: data is an empty Dataset")
    items, labels = [], []
    for i in range(n):
        item = dataset[i]
        if isinstance(item, (tuple, list)):
            if len(item) > 1:
                labels.append(torch.as_tensor(item[1]))
            item = item[0]
        if isinstance(item, dict):
            raise TypeError(f"fit: the Dataset's items are dicts (keys {sorted(map(str, item))}); fit takes items "
                            f"that are an example, or an (example, label) pair: stack the examples into a tensor "
                            f"(e.g. torch.stack([d['x'] for d in dataset])) and pass that")
        try:
            items.append(torch.as_tensor(np.asarray(item)) if not isinstance(item, torch.Tensor) else item)
        except (TypeError, ValueError) as err:
            raise TypeError(f"fit: item {i} of the Dataset is a {type(item).__name__}, not an array of numbers "
                            f"({err})") from None
    y = torch.stack(labels) if len(labels) == n and all(label.dim() == 0 for label in labels) else None
    return torch.stack(items), y


def as_training_tensor(data: Any, energy: nn.Module) -> tuple[torch.Tensor, int | None, torch.Tensor | None]:
    """``(x (N, *event) in the energy's dtype, the DataLoader's batch size or None, labels (N,) or None)``.

    Labels come from a Dataset whose items are ``(x, y)`` pairs with scalar ``y``, or from a
    built-in data set that has them (digits, MNIST).

    Raises ``ValueError`` naming the problem: fewer than 2 rows, NaN/infinite values, an event
    shape other than the energy's declared ``event_shape``, an unsupported type.
    """
    batch_size, labels = None, None
    if isinstance(data, DataLoader):
        batch_size = data.batch_size
        data = data.dataset
    if isinstance(data, str):
        dataset = load_dataset(data)
        x, labels = dataset.x, dataset.labels
    elif isinstance(data, torch.Tensor):
        x = data
    elif isinstance(data, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(data))
    elif isinstance(data, Dataset):
        x, labels = _stack_dataset(data)
    else:
        raise TypeError(f"fit: data must be a tensor, a numpy array, a Dataset, a DataLoader or a data name, "
                        f"got {type(data).__name__}")
    if not (x.is_floating_point() or x.dtype in (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32,
                                                  torch.int64)):
        raise ValueError(f"fit: data must hold numbers, got dtype {x.dtype}")
    x = x.detach().to(_dtype_of(energy))
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"fit: data must have shape (N >= 2, *event_shape), got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        rows = (~torch.isfinite(x.flatten(1))).any(1).nonzero().flatten().tolist()
        raise ValueError(f"fit: data contain NaN or infinite values (rows {rows[:5]}{' ...' if len(rows) > 5 else ''})")
    declared = getattr(energy, "event_shape", None)
    if declared is not None and tuple(int(s) for s in declared) != tuple(x.shape[1:]):
        raise ValueError(f"fit: data events have shape {tuple(x.shape[1:])} but the energy "
                         f"{type(energy).__name__} declares event_shape {tuple(declared)}")
    return x, batch_size, None if labels is None else labels.to(torch.long)


__all__ = ["as_training_tensor"]
