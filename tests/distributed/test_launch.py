"""``ebmlab launch``: torchrun underneath, one line and exit status 2 when a rank refuses its input."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.distributed, pytest.mark.timeout(300)]

EXE = Path(sys.executable).with_name("ebmlab")


def test_a_bad_input_on_two_ranks_is_one_line_and_exit_2(tmp_path):
    done = subprocess.run([str(EXE), "launch", "--standalone", "--nproc-per-node", "2", "train", "--data", "nosuch",
                           "--out", str(tmp_path / "x")], capture_output=True, text=True, timeout=240)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ebmlab: error: unknown data set 'nosuch'"), done.stderr


def test_a_two_rank_run_trains(tmp_path):
    done = subprocess.run([str(EXE), "launch", "--standalone", "--nproc-per-node", "2", "train", "--steps", "4",
                           "--objective", "dsm", "--batch-size", "64", "--no-plots", "--out", str(tmp_path / "run")],
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr
    assert "trained dsm on 8gaussians for 4 steps" in done.stdout and (tmp_path / "run" / "checkpoint.pt").is_file()


@pytest.mark.parametrize("args,message", [
    ([], "name the ebmlab command"),
    (["report", "x"], "not a command that runs on several processes"),
])
def test_launch_refuses_what_it_cannot_run(args, message):
    done = subprocess.run([str(EXE), "launch", "--nproc-per-node", "2", *args], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2 and message in done.stderr and done.stderr.count("\n") == 1
