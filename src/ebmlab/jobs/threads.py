"""Lean thread defaults: one torch thread for small problems, torch's default for large ones.

``ebmlab sample``, ``evaluate`` and ``train`` call :func:`lean_threads` when ``--threads`` is
not given. The problem size is the work of one batched energy evaluation: the chains (or the
AIS runs, or the training batch) times the multiply-adds of one example,
:func:`multiply_adds` — for an MLP on D inputs with widths W, ``D·W + W² + W``, its parameter
count; for convolutions their weights times the positions they slide over.

Measured on this project's 2-core development machine (shared, load average 4-5 at the time),
MALA on ``mlp_energy((D,), hidden=(W, W))``, time per transition, best of 3 runs, 1 thread
against 2 threads (``torch.set_num_threads``)::

    chains  D    W   work (chains x MACs)   1 thread   2 threads   2/1
        16  2   32    1.9e4                  0.66 ms    0.63 ms    0.95
        16  2  128    2.7e5                  0.68 ms    33.3 ms     49
        64  2  128    1.1e6                  0.81 ms    32.7 ms     40
       256  2  128    4.4e6                  1.95 ms    5.80 ms    3.0
      1024  2  128    1.7e7                  2.81 ms    7.49 ms    2.7
       256 16  256    1.8e7                  2.17 ms    15.7 ms    7.3
      4096  2  128    7.0e7                  20.9 ms     226 ms     11
      1024 16  512    2.8e8                  40.9 ms     208 ms    5.1
      4096 16  512    1.1e9                   136 ms     233 ms    1.7
      8192 32  512    2.3e9                   212 ms     383 ms    1.8

A second run (load average 3.5) agreed: 2/1 between 3.3 and 54 from 1e6 to 2.8e8, 0.96 at 1.9e4.
A second thread never paid off at these sizes: below about 1e8 it costs 3-50x (the threads
wait on each other and on the machine's other processes), and even at 1e9 it is 1.7x slower.
:data:`LEAN_THRESHOLD` is therefore 1e10 multiply-adds per evaluation, beyond every
measured size (the ratio falls toward 1 as the work grows, so past it two threads may pay on an idle
machine); above it torch's default stands.
``--threads N`` (``0``: torch's default) overrides the choice; CUDA runs are left alone.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

#: Below this many multiply-adds per batched evaluation (chains x per-example MACs), one thread.
LEAN_THRESHOLD = 1e10


def multiply_adds(energy: nn.Module, event_shape: Sequence[int]) -> int:
    """Multiply-adds of one energy evaluation of a single example: the ``nn.Linear`` and
    convolution layers seen by a forward pass on one trial example (in eval mode, so nothing
    the model keeps changes), else (no such layers, or the
    pass fails) the parameter count, at least the event size."""
    from ebmlab.jobs.specs import support_of, trial_batch

    size = math.prod(event_shape)
    fallback = max(size, sum(p.numel() for p in energy.parameters()))
    total = 0

    def count(module: nn.Module, _inputs, output) -> None:
        nonlocal total
        if isinstance(output, torch.Tensor):
            if isinstance(module, nn.Linear):
                total += output.numel() * module.in_features
            elif isinstance(module, nn.modules.conv._ConvNd):
                total += output.numel() * module.weight[0].numel()

    hooks = [m.register_forward_hook(count) for m in energy.modules()
             if isinstance(m, (nn.Linear, nn.modules.conv._ConvNd))]
    if not hooks:
        return fallback
    training = energy.training
    try:  # in eval mode: no batch-norm statistics or spectral-norm iterations change
        energy.eval()
        support, num_states = support_of(energy)
        device = next((t.device for t in [*energy.parameters(), *energy.buffers()]), torch.device("cpu"))
        with torch.no_grad():
            energy(trial_batch(event_shape, support, num_states, batch=1).to(device))
    except Exception:  # a heuristic never fails the job; the energy's own checks come later
        return fallback
    finally:
        energy.train(training)
        for hook in hooks:
            hook.remove()
    return max(total, size)


def lean_threads(num_chains: int, energy: nn.Module, event_shape: Sequence[int],
                 device: torch.device | str = "cpu") -> int:
    """Set torch to one thread when ``num_chains`` x :func:`multiply_adds` is below
    :data:`LEAN_THRESHOLD` (CPU only); returns the thread count now in use."""
    if torch.device(device).type == "cpu" and num_chains * multiply_adds(energy, event_shape) < LEAN_THRESHOLD:
        torch.set_num_threads(1)
    return torch.get_num_threads()


__all__ = ["LEAN_THRESHOLD", "lean_threads", "multiply_adds"]
