"""The two-process gloo harness shared by the distributed tests.

``run_group(checks, out, timeout_s)`` spawns ``WORLD`` processes with the torchrun
environment variables set, runs every ``checks[name](rank, tmp_dir)`` on each rank inside one
process group (start-up is the slow part, so each test module starts one group), and returns
``{rank: {name: "ok" | traceback}}``; the test that owns a check asserts its entry.
"""

from __future__ import annotations

import json
import os
import socket
import time
import traceback
import warnings
from pathlib import Path
from typing import Callable

import pytest
import torch
import torch.multiprocessing as mp

from ebmlab import distributed as D

WORLD = 2
Check = Callable[[int, Path], None]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _entry(rank: int, port: int, out_dir: str, checks: dict[str, Check], world: int) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    warnings.simplefilter("error")  # as in the test suite
    torch.set_num_threads(1)
    D.init_distributed(timeout=60)
    reports = {}
    for name, check in checks.items():
        tmp = Path(out_dir) / name
        tmp.mkdir(exist_ok=True)
        try:
            check(rank, tmp)
            reports[name] = "ok"
        except Exception:  # reported to the test that owns the check
            reports[name] = traceback.format_exc()
    (Path(out_dir) / f"rank{rank}.json").write_text(json.dumps(reports))
    D.destroy_distributed(synchronize=True)


def run_group(checks: dict[str, Check], out: Path, timeout_s: float, world: int = WORLD) -> dict[int, dict[str, str]]:
    """Run ``checks`` on a ``world``-process group; fail the test if it outlives ``timeout_s``."""
    context = mp.start_processes(_entry, args=(free_port(), str(out), checks, world), nprocs=world, join=False,
                                 start_method="spawn")
    deadline = time.monotonic() + timeout_s
    while not context.join(timeout=5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"the {world}-process group did not finish within {timeout_s} s")
    return {r: json.loads((out / f"rank{r}.json").read_text()) for r in range(world)}


def assert_ok(reports: dict[int, dict[str, str]], name: str) -> None:
    """Every rank ran check ``name`` without an exception."""
    for r in sorted(reports):
        assert reports[r][name] == "ok", f"rank {r}:\n{reports[r][name]}"
