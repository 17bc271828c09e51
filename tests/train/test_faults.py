"""Faults during training: signals, kills, two writers, and directories that are not runs.

Every run here is a real ``ebmlab train`` process (small MLP, 2-D data) so that signals, file
locks and ``kill -9`` behave as they do for a user. "Exact" means the resumed run's final
weights equal an uninterrupted run's bit for bit, and ``metrics.jsonl`` holds each step once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from ebmlab.training.checkpoint import load_checkpoint

EXE = Path(sys.executable).with_name("ebmlab")
STEPS = 800
RUN = ["--steps", STEPS, "--hidden", "8", "--batch-size", "32", "--no-plots", "--no-progress", "--set",
       "num_samples=300", "--set", "lr_schedule=\"constant\""]


def command(out, *extra):
    return [str(EXE), "train", *map(str, RUN), "--out", str(out), *map(str, extra)]


def start(out, *extra) -> subprocess.Popen:
    return subprocess.Popen(command(out, *extra), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_lines(path: Path, lines: int, process: subprocess.Popen, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.is_file() and path.read_text().count("\n") >= lines:
            return
        if process.poll() is not None:
            raise AssertionError(f"the run ended before {lines} steps: {process.stderr.read()}")
        time.sleep(0.02)
    raise AssertionError("timed out waiting for the run")


def steps_logged(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("faults") / "straight"
    done = subprocess.run(command(out), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return load_checkpoint(out)["model"]


@pytest.mark.parametrize("signum,status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_checkpoints_the_current_step_and_resume_is_exact(tmp_path, reference, signum, status):
    out = tmp_path / "run"
    process = start(out, "--set", "checkpoint_every=100000")  # no periodic checkpoint: only the signal's
    wait_for_lines(out / "metrics.jsonl", 50, process)
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == status, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("ebmlab: stopped by") and f"--resume {out}" in lines[0]
    step = int(load_checkpoint(out)["step"])
    assert 50 <= step < STEPS and f"at step {step}" in lines[0]
    resumed = subprocess.run([str(EXE), "train", "--resume", str(out), "--no-progress"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    final = load_checkpoint(out)["model"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    assert steps_logged(out) == list(range(1, STEPS + 1))


def test_kill_9_midway_leaves_no_temporaries_after_resume_and_resume_is_exact(tmp_path, reference):
    out = tmp_path / "run"
    process = start(out, "--set", "checkpoint_every=7")
    wait_for_lines(out / "metrics.jsonl", 200, process)
    process.kill()
    process.communicate(timeout=60)
    (out / ".checkpoint.pt.deadbeef0000.tmp").write_bytes(b"half a checkpoint")  # as a write killed midway leaves
    resumed = subprocess.run([str(EXE), "train", "--resume", str(out), "--no-progress"], capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert not list(out.glob(".checkpoint.pt.*.tmp"))
    final = load_checkpoint(out)["model"]
    assert all(torch.equal(final[k], reference[k]) for k in reference)
    assert steps_logged(out) == list(range(1, STEPS + 1))


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    out = tmp_path / "run"
    first = start(out, "--steps", 10**6, "--set", "checkpoint_every=100000")
    try:
        wait_for_lines(out / "metrics.jsonl", 5, first)
        for extra in ([], ["--resume", out]):
            args = command(out) if not extra else [str(EXE), "train", "--resume", str(out)]
            second = subprocess.run(args, capture_output=True, text=True, timeout=120)
            assert second.returncode == 2, second.stderr
            assert second.stderr.count("\n") == 1 and f"pid {first.pid}" in second.stderr, second.stderr
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    assert first.returncode == 143
    logged = steps_logged(out)  # a long run logs every k-th step (k = steps // 2000)
    every = logged[0]
    assert logged == list(range(every, every * len(logged) + 1, every))  # one writer: each record once, in order


def test_a_directory_of_user_files_is_refused_and_untouched(tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.toml").write_text("my own settings\n")
    done = subprocess.run(command(out), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "not an ebmlab run" in done.stderr and done.stderr.count("\n") == 1
    assert sorted(p.name for p in out.iterdir()) == ["config.toml"]
    assert (out / "config.toml").read_text() == "my own settings\n"
    a_file = tmp_path / "file.txt"
    a_file.write_text("keep\n")
    done = subprocess.run(command(a_file), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "is an existing file" in done.stderr and a_file.read_text() == "keep\n"


def test_resume_to_fewer_steps_is_refused_and_the_config_kept(tmp_path):
    out = tmp_path / "run"
    done = subprocess.run(command(out, "--steps", 40), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    before = (out / "config.toml").read_text()
    again = subprocess.run([str(EXE), "train", "--resume", str(out), "--steps", "10"], capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "has done 40 steps" in again.stderr and again.stderr.count("\n") == 1
    assert (out / "config.toml").read_text() == before
    assert int(load_checkpoint(out)["step"]) == 40


def test_interrupting_before_the_first_checkpoint_still_leaves_a_resumable_run(tmp_path):
    out = tmp_path / "run"
    process = start(out, "--set", "checkpoint_every=100000", "--steps", 10**6)
    wait_for_lines(out / "metrics.jsonl", 3, process)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    step = int(load_checkpoint(out)["step"])
    assert step >= 3
    assert os.path.exists(out / "config.toml")
