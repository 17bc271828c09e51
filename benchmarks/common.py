"""Timing helpers shared by the benchmark scripts.

Every benchmark times its baseline in the same run and reports ratios to it, so figures from
different machines compare. A timing is the median over ``repeats`` timed calls after
``warmup`` untimed ones; on CUDA the device is synchronised around every timed call.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    """Seconds per call: the median and the spread of ``repeats`` timed calls."""

    median: float
    minimum: float
    maximum: float
    repeats: int

    @property
    def ms(self) -> float:
        return 1e3 * self.median


def synchronize(device: torch.device) -> None:
    """Wait for queued work on ``device`` (a no-op on CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn: Callable[[], object], device: torch.device, repeats: int = 5, warmup: int = 1,
              inner: int = 1) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timings of ``inner`` calls each.

    Returns seconds per call (each timing divided by ``inner``). Use ``inner > 1`` when one
    call is short next to the timer's resolution and the synchronisation.
    """
    if repeats < 1 or inner < 1 or warmup < 0:
        raise ValueError(f"time_call: repeats and inner must be >= 1 and warmup >= 0, got {repeats}, {inner}, {warmup}")
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            fn()
        synchronize(device)
        times.append((time.perf_counter() - start) / inner)
    return Timing(statistics.median(times), min(times), max(times), repeats)


def set_threads(num_threads: int | None) -> int:
    """Set torch's intra-op CPU threads (``None`` keeps the current number); returns the number in use."""
    if num_threads is not None:
        if num_threads < 1:
            raise ValueError(f"set_threads: num_threads must be >= 1, got {num_threads}")
        torch.set_num_threads(int(num_threads))
    return torch.get_num_threads()


def resolve_device(name: str) -> torch.device:
    """``"cpu"``, ``"cuda"`` or ``"cuda:N"``; refuses CUDA when it is not available."""
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: CUDA is not available on this machine")
    return device


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_description(device: torch.device) -> str:
    """One line naming the processor (or GPU), the thread count and the software versions."""
    if device.type == "cuda":
        hw = f"{torch.cuda.get_device_name(device)} (CUDA {torch.version.cuda})"
    else:
        load = ", load average %.1f" % os.getloadavg()[0] if hasattr(os, "getloadavg") else ""
        hw = f"{_cpu_model()}, {os.cpu_count()} logical CPU(s), {torch.get_num_threads()} torch thread(s){load}"
    return f"{hw}; torch {torch.__version__}; Python {platform.python_version()}; {platform.system()} {platform.machine()}"
