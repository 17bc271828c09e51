"""Leaving a process group together: ``destroy_distributed(synchronize=True)`` waits for the
slowest rank, so that no rank tears down its connections while a peer still uses them (the CLI
calls it after every command that succeeded)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ebmlab import distributed as D
from process_group import assert_ok, run_group

LATE_S = 1.5  # how long rank 1 keeps working before it leaves


def leave_together(rank: int, tmp: Path) -> None:
    if rank == 1:
        time.sleep(LATE_S)
    start = time.monotonic()
    D.destroy_distributed(synchronize=True)
    waited = time.monotonic() - start
    assert not D.is_initialized()
    D.destroy_distributed(synchronize=True)  # a second call is a no-op
    (tmp / f"waited{rank}.json").write_text(json.dumps(waited))


def test_ranks_leave_the_group_together(tmp_path):
    reports = run_group({"leave": leave_together}, tmp_path, timeout_s=120)
    assert_ok(reports, "leave")
    waited = [json.loads((tmp_path / "leave" / f"waited{r}.json").read_text()) for r in (0, 1)]
    # rank 0 arrived first and waited for rank 1 (an unsynchronised leave returns at once)
    assert waited[0] > 0.6 * LATE_S, waited
    assert waited[1] < LATE_S, waited
