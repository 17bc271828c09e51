"""Bad input, tried as a hostile user would: every row is one line ``ebmlab: error: ...``, exit 2.

One table of command lines (run in-process with click's ``CliRunner``; subprocesses only where
a file-size limit or torchrun is needed). Every row asserts exit status 2, exactly one output
line, that it starts with ``ebmlab: error:``, no traceback, and that the message names the
option, file or key at fault; rows that point at a file the user had assert it is untouched.
The library's side of the same promises (an exception type naming the argument) is in
``tests/test_bad_inputs_api.py``.
"""

from __future__ import annotations

import os
import pickle
import resource
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main

LONG = "x" * 300  # longer than any file system's 255-byte name limit
USER_ENERGIES = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Flaky(nn.Module):
        '''Fine on the trial batch and the start, then an IndexError on its 6th call.'''
        event_shape = (2,)
        calls = 0

        def forward(self, x):
            type(self).calls += 1
            if type(self).calls >= 6:
                return x[:, 5].sum()
            return 0.5 * x.pow(2).sum(-1)


    class Picky(nn.Module):
        event_shape = (2,)
        calls = 0

        def forward(self, x):
            type(self).calls += 1
            if type(self).calls >= 6:
                raise ValueError("x left the region I accept")
            return 0.5 * x.pow(2).sum(-1)


    class Detached(nn.Module):
        event_shape = (2,)

        def forward(self, x):
            return 0.5 * x.detach().pow(2).sum(-1)


    class Boom(nn.Module):
        '''A trainable energy that raises an IndexError at its 4th training call.'''
        def __init__(self, dim=2):
            super().__init__()
            self.w = nn.Parameter(torch.ones(dim))
            self.event_shape = (dim,)
            self.config = {"dim": dim}
            self.calls = 0

        def forward(self, x):
            if self.training:
                self.calls += 1
                if self.calls >= 4:
                    return x[:, 7].sum()
            return 0.5 * (self.w * x).pow(2).sum(-1)
    """
)


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """A directory of hostile files: binary, text-as-.npy, huge values, a FIFO, a directory, a user's
    files, a small trained run and copies of it with broken checkpoints."""
    d = tmp_path_factory.mktemp("bad")
    (d / "binary.toml").write_bytes(b"\x00\x01\x02\xff\xfe not toml")
    (d / "nul.toml").write_bytes(b"lr = 0.1\n\x00")
    (d / "adir").mkdir()
    (d / "afile").write_text("a user's file\n")
    (d / "notes.npz").write_bytes(b"PK\x03\x04 not an ebmlab file")
    (d / "text.npy").write_text("1,2\n3,4\n")
    (d / "text.npz").write_text("1,2\n3,4\n")
    (d / "zip.npy").write_bytes(b"PK\x03\x04" + b"\x00" * 60)
    with open(d / "pickle.npy", "wb") as f:
        pickle.dump({"a": 1}, f)
    np.save(d / "huge.npy", np.full((10, 2), 1e300))
    np.save(d / "ok.npy", np.zeros((10, 2)))
    np.save(d / "wrong_shape_init.npy", np.zeros((3, 5)))
    (d / "nan.csv").write_text("1,2\nnan,3\n")
    (d / "empty.csv").write_text("")
    (d / "ragged.csv").write_text("1,2\n3\n")
    (d / "energies.py").write_text(USER_ENERGIES)
    os.mkfifo(d / "fifo.npz")
    os.mkfifo(d / "fifo.npy")
    os.mkfifo(d / "fifo.toml")
    os.mkfifo(d / "fifo.png")
    (d / "bad.toml").write_text("lr = [1, \n")
    (d / "unknown.toml").write_text("nosuch = 1\n")
    (d / "user_run").mkdir()
    (d / "user_run" / "config.toml").write_text("# the user's own config\n")
    run = d / "run"
    done = CliRunner().invoke(main, ["train", "--data", "8gaussians", "--steps", "2", "--batch-size", "8",
                                     "--hidden", "8,8", "--out", str(run), "--no-plots", "--set", "num_samples=64",
                                     "--set", "lr_schedule=constant"])
    assert done.exit_code == 0, done.output
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    for name, change in (("run_missing", lambda s: s.pop("optimizer")),
                         ("run_shapes", lambda s: s["model"].update(
                             {k: torch.zeros(3, *v.shape[1:]) for k, v in list(s["model"].items())[:1]}))):
        copy = d / name
        copy.mkdir()
        (copy / "config.toml").write_bytes((run / "config.toml").read_bytes())
        broken = {**state, "model": dict(state["model"])}
        change(broken)
        torch.save(broken, copy / "checkpoint.pt")
    old = d / "run_pickle"
    old.mkdir()
    (old / "config.toml").write_bytes((run / "config.toml").read_bytes())
    with open(old / "checkpoint.pt", "wb") as f:
        pickle.dump({"format": "ebmlab-checkpoint", "version": 1}, f, protocol=4)
    return d


S = ["sample", "--energy", "gmm8", "--sampler", "mala", "--chains", "2", "--steps", "3", "--burn-in", "0"]
E = ["evaluate", "--energy", "gmm8"]
T = ["train", "--steps", "1", "--batch-size", "8", "--hidden", "8", "--no-plots", "--set", "num_samples=64"]

#: (id, arguments with {w} for the work directory, text the one line must contain, file that must stay as it was)
CLI_ROWS = [
    # the top level and usage
    ("unknown-command", ["nosuch"], "No such command 'nosuch'", None),
    ("unknown-top-option", ["--nosuch"], "--nosuch", None),
    ("evaluate-no-method", E, "--log-partition", None),
    ("evaluate-bad-choice", [*E, "--log-partition", "nosuch"], "--log-partition", None),
    ("sample-missing-out", ["sample", "--energy", "gmm8", "--sampler", "mala"], "--out", None),
    ("sample-no-energy", ["sample", "--out", "{w}/o.npz"], "--energy", None),
    ("sample-chains-not-int", [*S, "--chains", "two", "--out", "{w}/o.npz"], "--chains", None),
    ("sample-step-size-not-float", [*S, "--step-size", "fast", "--out", "{w}/o.npz"], "--step-size", None),
    ("sample-unknown-option", [*S, "--nosuch", "--out", "{w}/o.npz"], "--nosuch", None),
    ("train-optimizer-choice", [*T, "--optimizer", "rmsprop", "--out", "{w}/t"], "--optimizer", None),
    ("train-plot-samples-0", [*T, "--plot-samples", "0", "--out", "{w}/t"], "--plot-samples", None),
    # integers and floats that overflow, counts that are zero or negative, nan and inf
    ("sample-seed-2**70", [*S, "--seed", str(2**70), "--out", "{w}/o.npz"], "--seed", None),
    ("sample-seed-negative", [*S, "--seed", "-1", "--out", "{w}/o.npz"], "--seed", None),
    ("sample-threads-2**40", [*S, "--threads", str(2**40), "--out", "{w}/o.npz"], "--threads", None),
    ("sample-threads-negative", [*S, "--threads", "-1", "--out", "{w}/o.npz"], "--threads", None),
    ("sample-chains-2**70", [*S, "--chains", str(2**70), "--out", "{w}/o.npz"], "--chains", None),
    ("sample-chains-0", [*S, "--chains", "0", "--out", "{w}/o.npz"], "--chains", None),
    ("sample-steps-negative", [*S, "--steps", "-5", "--out", "{w}/o.npz"], "--steps", None),
    ("sample-burn-in-negative", [*S, "--burn-in", "-1", "--out", "{w}/o.npz"], "--burn-in", None),
    ("sample-thin-0", [*S, "--thin", "0", "--out", "{w}/o.npz"], "--thin", None),
    ("sample-thin-above-steps", [*S, "--thin", "10", "--out", "{w}/o.npz"], "--thin", None),
    ("sample-leapfrog-0", [*S, "--sampler", "hmc", "--leapfrog", "0", "--out", "{w}/o.npz"], "--leapfrog", None),
    ("sample-step-size-1e300", [*S, "--step-size", "1e300", "--out", "{w}/o.npz"], "--step-size", None),
    ("sample-step-size-nan", [*S, "--step-size", "nan", "--out", "{w}/o.npz"], "--step-size", None),
    ("sample-step-size-inf", [*S, "--step-size", "inf", "--out", "{w}/o.npz"], "--step-size", None),
    ("sample-step-size-negative", [*S, "--step-size", "-0.1", "--out", "{w}/o.npz"], "--step-size", None),
    ("sample-target-accept-nan", [*S, "--target-accept", "nan", "--out", "{w}/o.npz"], "--target-accept", None),
    ("sample-target-accept-1", [*S, "--target-accept", "1", "--out", "{w}/o.npz"], "--target-accept", None),
    ("evaluate-runs-0", [*E, "--log-partition", "ais", "--runs", "0"], "--runs", None),
    ("evaluate-runs-negative", [*E, "--log-partition", "ais", "--runs", "-3"], "--runs", None),
    ("evaluate-temperatures-1", [*E, "--log-partition", "ais", "--temperatures", "1"], "--temperatures", None),
    ("evaluate-steps-per-t-0", [*E, "--log-partition", "ais", "--steps-per-temperature", "0"],
     "--steps-per-temperature", None),
    ("evaluate-grid-points-1", [*E, "--log-partition", "quadrature", "--grid-points", "1"], "--grid-points", None),
    ("evaluate-num-levels-1", [*E, "--log-partition", "quadrature", "--num-levels", "1", "--data", "8gaussians"],
     "--num-levels", None),
    ("evaluate-base-std-negative", [*E, "--log-partition", "ais", "--base-std", "-1"], "--base-std", None),
    ("evaluate-base-std-nan", [*E, "--log-partition", "ais", "--base-std", "nan"], "--base-std", None),
    ("evaluate-seed-2**70", [*E, "--log-partition", "ais", "--seed", str(2**70)], "--seed", None),
    ("evaluate-bounds-nan", [*E, "--log-partition", "quadrature", "--bounds", "nan,4"], "bound", None),
    ("evaluate-bounds-reversed", [*E, "--log-partition", "quadrature", "--bounds", "4,-4"], "bound", None),
    ("evaluate-bounds-text", [*E, "--log-partition", "quadrature", "--bounds", "a,b"], "--bounds", None),
    ("evaluate-bounds-odd", [*E, "--log-partition", "quadrature", "--bounds", "1,2,3"], "--bounds", None),
    ("train-seed-2**70", [*T, "--seed", str(2**70), "--out", "{w}/t"], "--seed", None),
    ("train-seed-2**40", [*T, "--seed", str(2**40), "--out", "{w}/t"], "seed", None),
    ("train-threads-2**40", [*T, "--threads", str(2**40), "--out", "{w}/t"], "--threads", None),
    ("train-steps-negative", [*T, "--steps", "-1", "--out", "{w}/t"], "steps", None),
    ("train-batch-size-0", [*T, "--batch-size", "0", "--out", "{w}/t"], "batch_size", None),
    ("train-lr-1e300", [*T, "--lr", "1e300", "--out", "{w}/t"], "lr", None),
    ("train-lr-nan", [*T, "--lr", "nan", "--out", "{w}/t"], "lr", None),
    ("train-lr-negative", [*T, "--lr", "-1", "--out", "{w}/t"], "lr", None),
    ("train-step-size-inf", [*T, "--step-size", "inf", "--out", "{w}/t"], "step_size", None),
    ("train-momentum-1", [*T, "--momentum", "1", "--out", "{w}/t"], "momentum", None),
    ("train-hidden-text", [*T, "--hidden", "wide", "--out", "{w}/t"], "--hidden", None),
    ("train-hidden-0", [*T, "--hidden", "0", "--out", "{w}/t"], "--hidden", None),
    # absurd sizes: refused up front, with the memory or disk they would need
    ("sample-steps-1e12", [*S, "--steps", str(10**12), "--out", "{w}/o.npz"], "of memory", None),
    ("sample-chains-1e12", [*S, "--chains", str(10**12), "--out", "{w}/o.npz"], "--chains", None),
    ("sample-gaussian-1e12", ["sample", "--energy", f"gaussian:{10**12}", "--sampler", "mala", "--out", "{w}/o.npz"],
     "gaussian", None),
    ("evaluate-grid-1e7", [*E, "--log-partition", "quadrature", "--grid-points", str(10**7)], "--grid-points", None),
    ("evaluate-runs-1e12", [*E, "--log-partition", "ais", "--runs", str(10**12)], "--runs", None),
    ("evaluate-temperatures-1e12", [*E, "--log-partition", "ais", "--temperatures", str(10**12)], "--temperatures",
     None),
    ("train-steps-1e12", [*T, "--steps", str(10**12), "--out", "{w}/t"], "--steps", None),
    # empty strings
    ("sample-empty-energy", ["sample", "--energy", "", "--sampler", "mala", "--out", "{w}/o.npz"], "energy", None),
    ("sample-empty-sampler", ["sample", "--energy", "gmm8", "--sampler", "", "--out", "{w}/o.npz"], "sampler", None),
    ("sample-empty-out", [*S, "--out", ""], "--out", None),
    ("sample-empty-device", [*S, "--device", "", "--out", "{w}/o.npz"], "--device", None),
    ("sample-empty-event-shape-list", [*S, "--event-shape", ",", "--out", "{w}/o.npz"], "--event-shape", None),
    ("train-empty-data", [*T, "--data", "", "--out", "{w}/t"], "data", None),
    ("train-empty-model", [*T, "--model", "", "--out", "{w}/t"], "model", None),
    ("evaluate-empty-energy", ["evaluate", "--energy", "", "--log-partition", "ais"], "energy", None),
    # devices, specs and shapes
    ("sample-device-cuda99", [*S, "--device", "cuda:99", "--out", "{w}/o.npz"], "--device", None),
    ("sample-device-tpu", [*S, "--device", "tpu", "--out", "{w}/o.npz"], "--device", None),
    ("sample-unknown-energy", ["sample", "--energy", "nosuch", "--sampler", "mala", "--out", "{w}/o.npz"],
     "nosuch", None),
    ("sample-missing-energy-file", ["sample", "--energy", "{w}/none.py:X", "--sampler", "mala", "--out", "{w}/o.npz"],
     "none.py", None),
    ("sample-energy-not-a-module", ["sample", "--energy", "{w}/afile:X", "--sampler", "mala", "--out", "{w}/o.npz"],
     "afile", None),
    ("sample-energy-long-name", ["sample", "--energy", "{w}/" + LONG + ".py:X", "--sampler", "mala",
                                 "--out", "{w}/o.npz"], "energy", None),
    ("sample-energy-name-missing", ["sample", "--energy", "{w}/energies.py:Nope", "--sampler", "mala",
                                    "--out", "{w}/o.npz"], "Nope", None),
    ("sample-gaussian-0", ["sample", "--energy", "gaussian:0", "--sampler", "mala", "--out", "{w}/o.npz"], "D", None),
    ("sample-ising-text", ["sample", "--energy", "ising:big", "--sampler", "gibbs", "--out", "{w}/o.npz"], "L", None),
    ("sample-wrong-event-shape", [*S, "--event-shape", "3", "--out", "{w}/o.npz"], "--event-shape", None),
    ("sample-event-shape-text", [*S, "--event-shape", "a,b", "--out", "{w}/o.npz"], "--event-shape", None),
    ("sample-kernel-vs-support", ["sample", "--energy", "ising:4", "--sampler", "mala", "--out", "{w}/o.npz"],
     "--sampler", None),
    ("sample-unknown-sampler", [*S, "--sampler", "nosuch", "--out", "{w}/o.npz"], "nosuch", None),
    ("evaluate-exact-continuous", [*E, "--log-partition", "exact"], "exact", None),
    ("evaluate-quadrature-high-dim", ["evaluate", "--energy", "gaussian:8", "--log-partition", "quadrature"],
     "--log-partition ais", None),
    ("evaluate-data-wrong-shape", ["evaluate", "--energy", "gaussian:3", "--log-partition", "ais", "--data",
                                   "8gaussians"], "event shape", None),
    ("evaluate-heldout-no-run", [*E, "--log-partition", "ais", "--data", "heldout"], "heldout", None),
    ("train-unknown-model", [*T, "--model", "nosuch", "--out", "{w}/t"], "nosuch", None),
    ("train-unknown-objective", [*T, "--objective", "nosuch", "--out", "{w}/t"], "nosuch", None),
    ("train-unknown-sampler", [*T, "--sampler", "nosuch", "--out", "{w}/t"], "nosuch", None),
    ("train-unknown-data", [*T, "--data", "nosuch", "--out", "{w}/t"], "nosuch", None),
    ("train-model-kwargs-not-table", [*T, "--model-kwargs", "[1, 2]", "--out", "{w}/t"], "--model-kwargs", None),
    # paths: too long, directories, regular files where directories are needed, FIFOs
    ("sample-out-long-name", [*S, "--out", "{w}/" + LONG + ".npz"], "--out", None),
    ("sample-out-long-dir", [*S, "--out", "{w}/" + LONG + "/o.npz"], "--out", None),
    ("sample-plot-long-name", [*S, "--out", "{w}/o.npz", "--plot", "{w}/" + LONG + ".png"], "--plot", None),
    ("sample-plot-chains-long", [*S, "--out", "{w}/o.npz", "--plot-chains", "{w}/" + LONG + ".png"],
     "--plot-chains", None),
    ("sample-init-long-name", [*S, "--out", "{w}/o.npz", "--init", "{w}/" + LONG + ".npy"], "--init", None),
    ("sample-out-is-dir", [*S, "--out", "{w}/adir"], "--out", None),
    ("sample-out-under-file", [*S, "--out", "{w}/afile/o.npz"], "--out", "afile"),
    ("sample-out-missing-dir", [*S, "--out", "{w}/nodir/o.npz"], "--out", None),
    ("sample-out-fifo", [*S, "--out", "{w}/fifo.npz"], "--out", None),
    ("sample-out-device", [*S, "--out", "/dev/null"], "--out", None),
    ("sample-out-user-file", [*S, "--out", "{w}/afile"], "--out", "afile"),
    ("sample-out-user-npz", [*S, "--out", "{w}/notes.npz"], "--out", "notes.npz"),
    ("sample-plot-suffix", [*S, "--out", "{w}/o.npz", "--plot", "{w}/p.txt"], "--plot", None),
    ("sample-plot-fifo", [*S, "--out", "{w}/o.npz", "--plot", "{w}/fifo.png"], "--plot", None),
    ("sample-init-dir", [*S, "--out", "{w}/o.npz", "--init", "{w}/adir"], "--init", None),
    ("sample-init-fifo", [*S, "--out", "{w}/o.npz", "--init", "{w}/fifo.npy"], "--init", None),
    ("sample-init-text-npy", [*S, "--out", "{w}/o.npz", "--init", "{w}/text.npy"], "--init", "text.npy"),
    ("sample-init-pickle", [*S, "--out", "{w}/o.npz", "--init", "{w}/pickle.npy"], "--init", "pickle.npy"),
    ("sample-init-wrong-shape", [*S, "--out", "{w}/o.npz", "--init", "{w}/wrong_shape_init.npy"], "--init", None),
    ("sample-init-unknown", [*S, "--out", "{w}/o.npz", "--init", "gaussian"], "--init", None),
    ("sample-energy-dir-not-run", ["sample", "--energy", "{w}/adir", "--sampler", "mala", "--out", "{w}/o.npz"],
     "checkpoint.pt", None),
    ("train-out-is-file", [*T, "--out", "{w}/afile"], "afile", "afile"),
    ("train-out-long-name", [*T, "--out", "{w}/" + LONG], "--out", None),
    ("train-out-user-dir", [*T, "--out", "{w}/user_run"], "user_run", "user_run/config.toml"),
    ("train-out-and-resume", [*T, "--out", "{w}/t", "--resume", "{w}/run"], "--resume", None),
    ("train-resume-dir", ["train", "--resume", "{w}/adir"], "--resume", None),
    ("train-resume-file", ["train", "--resume", "{w}/afile"], "--resume", "afile"),
    ("train-resume-fewer-steps", ["train", "--resume", "{w}/run", "--steps", "1", "--no-plots"], "steps",
     "run/config.toml"),
    ("train-config-binary", [*T, "--config", "{w}/binary.toml", "--out", "{w}/t"], "binary.toml", None),
    ("train-config-nul", [*T, "--config", "{w}/nul.toml", "--out", "{w}/t"], "nul.toml", None),
    ("train-config-dir", [*T, "--config", "{w}/adir", "--out", "{w}/t"], "adir", None),
    ("train-config-fifo", [*T, "--config", "{w}/fifo.toml", "--out", "{w}/t"], "fifo.toml", None),
    ("train-config-missing", [*T, "--config", "{w}/none.toml", "--out", "{w}/t"], "none.toml", None),
    ("train-config-long-name", [*T, "--config", "{w}/" + LONG + ".toml", "--out", "{w}/t"], "--config", None),
    ("train-config-bad-toml", [*T, "--config", "{w}/bad.toml", "--out", "{w}/t"], "bad.toml", None),
    ("train-config-unknown-key", [*T, "--config", "{w}/unknown.toml", "--out", "{w}/t"], "nosuch", None),
    ("train-config-and-resume", [*T, "--config", "{w}/bad.toml", "--resume", "{w}/run"], "--config", None),
    # --set
    ("set-float-as-text", [*T, "--set", "lr=abc", "--out", "{w}/t"], "--set lr=abc", None),
    ("set-int-as-float", [*T, "--set", "steps=1.5", "--out", "{w}/t"], "--set steps=1.5", None),
    ("set-int-as-bool", [*T, "--set", "batch_size=true", "--out", "{w}/t"], "batch_size", None),
    ("set-bool-as-int", [*T, "--set", "standardize=3", "--out", "{w}/t"], "standardize", None),
    ("set-list-as-int", [*T, "--set", "betas=3", "--out", "{w}/t"], "betas", None),
    ("set-section-key", [*T, "--set", "optim.lr=abc", "--out", "{w}/t"], "lr", None),
    ("set-unknown-key", [*T, "--set", "nosuch=1", "--out", "{w}/t"], "nosuch", None),
    ("set-no-equals", [*T, "--set", "lr", "--out", "{w}/t"], "--set", None),
    ("set-empty-key", [*T, "--set", "=1", "--out", "{w}/t"], "--set", None),
    ("set-display-setting", [*T, "--set", "plots=false", "--out", "{w}/t"], "plots", None),
    ("set-seed-huge", [*T, "--set", f"seed={2**70}", "--out", "{w}/t"], "seed", None),
    # data files
    ("data-huge-values", [*T, "--data", "{w}/huge.npy", "--out", "{w}/t"], "huge.npy", "huge.npy"),
    ("data-text-as-npy", [*T, "--data", "{w}/text.npy", "--out", "{w}/t"], "text.npy", "text.npy"),
    ("data-text-as-npz", [*T, "--data", "{w}/text.npz", "--out", "{w}/t"], "text.npz", None),
    ("data-zip-as-npy", [*T, "--data", "{w}/zip.npy", "--out", "{w}/t"], "zip.npy", None),
    ("data-pickle-npy", [*T, "--data", "{w}/pickle.npy", "--out", "{w}/t"], "pickle.npy", None),
    ("data-fifo", [*T, "--data", "{w}/fifo.npy", "--out", "{w}/t"], "fifo.npy", None),
    ("data-dir", [*T, "--data", "{w}/adir", "--out", "{w}/t"], "adir", None),
    ("data-nan-csv", [*T, "--data", "{w}/nan.csv", "--out", "{w}/t"], "nan.csv", None),
    ("data-empty-csv", [*T, "--data", "{w}/empty.csv", "--out", "{w}/t"], "empty.csv", None),
    ("data-ragged-csv", [*T, "--data", "{w}/ragged.csv", "--out", "{w}/t"], "ragged.csv", None),
    ("data-long-name", [*T, "--data", "{w}/" + LONG + ".npy", "--out", "{w}/t"], "--data", None),
    ("evaluate-data-huge", [*E, "--log-partition", "quadrature", "--data", "{w}/huge.npy"], "huge.npy", None),
    ("evaluate-data-text-npy", [*E, "--log-partition", "quadrature", "--data", "{w}/text.npy"], "text.npy", None),
    ("evaluate-data-missing", [*E, "--log-partition", "quadrature", "--data", "{w}/none.npy"], "none.npy", None),
    # checkpoints: missing entries, other shapes, an old-style pickle (and no torch warning before the line)
    ("resume-missing-entry", ["train", "--resume", "{w}/run_missing", "--steps", "3", "--no-plots"], "optimizer",
     None),
    ("resume-other-shapes", ["train", "--resume", "{w}/run_shapes", "--steps", "3", "--no-plots"], "shape", None),
    ("resume-old-pickle", ["train", "--resume", "{w}/run_pickle", "--steps", "3", "--no-plots"], "checkpoint",
     "run_pickle/checkpoint.pt"),
    ("sample-run-other-shapes", ["sample", "--energy", "{w}/run_shapes", "--sampler", "mala", "--out", "{w}/o.npz"],
     "shape", None),
    ("sample-run-old-pickle", ["sample", "--energy", "{w}/run_pickle", "--sampler", "mala", "--out", "{w}/o.npz"],
     "checkpoint", None),
    ("evaluate-run-old-pickle", ["evaluate", "--energy", "{w}/run_pickle", "--log-partition", "ais"], "checkpoint",
     None),
    # a user's energy that misbehaves: detached, raising in the middle of a run
    ("energy-detached", ["sample", "--energy", "{w}/energies.py:Detached", "--sampler", "mala", "--steps", "3",
                         "--burn-in", "0", "--out", "{w}/o.npz"], "energy Detached: its output does not depend on x",
     None),
    ("energy-index-error", ["sample", "--energy", "{w}/energies.py:Flaky", "--sampler", "mala", "--chains", "2",
                            "--steps", "20", "--burn-in", "0", "--out", "{w}/o.npz"],
     "energy Flaky raised IndexError", None),
    ("energy-value-error", ["sample", "--energy", "{w}/energies.py:Picky", "--sampler", "hmc", "--chains", "2",
                            "--steps", "20", "--burn-in", "0", "--out", "{w}/o.npz"],
     "energy Picky raised ValueError: x left the region I accept at step", None),
    ("train-energy-index-error", ["train", "--model", "{w}/energies.py:Boom", "--steps", "10", "--batch-size", "8",
                                  "--no-plots", "--set", "num_samples=64", "--out", "{w}/boom"],
     "energy Boom raised IndexError", None),
]


def check_one_line(output: str, needle: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert lines[0].startswith("ebmlab: error: "), output
    assert "Traceback" not in output, output
    assert needle in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, needle, keep", [row[1:] for row in CLI_ROWS], ids=[row[0] for row in CLI_ROWS])
def test_bad_command_line_is_one_line_and_exit_2(work, args, needle, keep):
    args = [a.replace("{w}", str(work)) for a in args]
    before = (work / keep).read_bytes() if keep else None
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    check_one_line(result.output, needle)
    if keep:
        assert (work / keep).read_bytes() == before
    assert not (work / "o.npz").exists()


def test_the_ids_are_unique():
    assert len({row[0] for row in CLI_ROWS}) == len(CLI_ROWS)


# ---------------------------------------------------------------------- real processes: file-size limits


def ebmlab_limited(args: list[str], limit: int, cwd: Path) -> subprocess.CompletedProcess:
    """``ebmlab ARGS`` in a process whose files may not grow past ``limit`` bytes (RLIMIT_FSIZE)."""
    def limit_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    code = "from ebmlab.cli import main; main()"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True, text=True, timeout=120,
                          preexec_fn=limit_files, env=env)


@pytest.mark.parametrize("what, args, needle, keep", [
    ("npz", ["--out", "o.npz"], "--out", "o.npz"),
    ("plot", ["--out", "p.npz", "--plot", "p.png"], "--plot", None),
], ids=["npz", "plot"])
def test_a_file_size_limit_while_writing_is_one_line(tmp_path, what, args, needle, keep):
    """The .npz, or the plot after it, exceeds the file-size limit: one line naming the option;
    a sample file that was there before keeps its bytes (the write is atomic)."""
    if keep:  # an earlier output of the same job, which the failed write must not damage
        done = CliRunner().invoke(main, [*S, "--out", str(tmp_path / keep)])
        assert done.exit_code == 0, done.output
        before = (tmp_path / keep).read_bytes()
    limit, steps = (2000, "40") if what == "npz" else (15000, "4")  # the plot case: a small .npz, then a large .png
    done = ebmlab_limited([*S[:-4], "--chains", "4", "--steps", steps, "--burn-in", "0", *args], limit, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    line = check_one_line(done.stderr, needle)
    assert "file-size limit" in line
    if keep:
        assert (tmp_path / keep).read_bytes() == before
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_a_file_size_limit_while_checkpointing_is_one_line(tmp_path):
    done = ebmlab_limited([*T, "--out", "run"], 3000, tmp_path)
    assert done.returncode == 2, done.stdout + done.stderr
    line = check_one_line(done.stderr, "run directory")
    assert "file-size limit" in line
    assert not [p for p in (tmp_path / "run").iterdir() if p.name.endswith(".tmp")]


# ---------------------------------------------------------------------- torchrun: once, on rank 0


def test_a_torchrun_error_is_printed_once_by_rank_0(tmp_path):
    """Every rank refuses the bad --out and exits 2; only rank 0 prints the line. (torchrun then
    reports its workers' exit status 2 in its own summary, which is the launcher's, not ebmlab's.)"""
    script = tmp_path / "ebmlab_cli.py"
    script.write_text("from ebmlab.cli import main\nmain()\n")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", str(script),
               *S, "--out", str(tmp_path / "nodir" / "s.npz")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    output = done.stdout + done.stderr
    assert output.count("ebmlab: error:") == 1, output
    assert "exitcode  : 2" in output or "exitcode: 2" in output, output
    assert "--out" in next(line for line in output.splitlines() if line.startswith("ebmlab: error:"))
