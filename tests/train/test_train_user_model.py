"""``ebmlab train --model path/to/file.py:NAME``: a user's module trains from the CLI, and its run
works in new processes — ``ebmlab sample``, ``ebmlab evaluate`` and ``ebmlab.load`` — without
the file being imported by anyone but ebmlab (the run stores the import spec and the options)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ebmlab.training.checkpoint import load_checkpoint

HERE = Path(__file__).resolve().parent
EXE = Path(sys.executable).with_name("ebmlab")


def ebmlab(*args, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([str(EXE), *map(str, args)], capture_output=True, text=True, timeout=180, cwd=cwd)


@pytest.fixture(scope="module")
def user_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("user") / "run"
    done = ebmlab("train", "--model", HERE / "user_model_file.py:DiagonalGaussian", "--model-kwargs", "{ dim = 2 }",
                  "--data", "8gaussians", "--objective", "nce", "--steps", 40, "--batch-size", 128, "--no-plots",
                  "--set", "num_samples=600", "--out", out)
    assert done.returncode == 0, done.stderr
    return out


def test_the_run_records_the_import_spec_not_code(user_run):
    info = load_checkpoint(user_run)["model_info"]
    assert info["import"] == f"{HERE / 'user_model_file.py'}:DiagonalGaussian" and info["kwargs"] == {"dim": 2}


def test_sample_evaluate_and_load_in_new_processes(user_run, tmp_path):
    sampled = ebmlab("sample", "--energy", user_run, "--sampler", "mala", "--chains", 64, "--steps", 20,
                     "--burn-in", 20, "--out", tmp_path / "s.npz")
    assert sampled.returncode == 0, sampled.stderr
    evaluated = ebmlab("evaluate", "--energy", user_run, "--data", "heldout", "--log-partition", "quadrature", "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    report = json.loads(evaluated.stdout)
    assert report["log_z"] is not None
    code = "import sys, ebmlab; e = ebmlab.load(sys.argv[1]); print(type(e.inner).__name__, e.event_shape)"
    loaded = subprocess.run([sys.executable, "-c", code, str(user_run)], capture_output=True, text=True, timeout=120,
                            cwd=tmp_path)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stdout.split()[0] == "DiagonalGaussian"


def test_a_package_module_spec_and_a_factory_with_event_shape(tmp_path):
    """``package.module:NAME`` works as well, and a factory taking ``event_shape`` gets the data's."""
    done = ebmlab("train", "--model", "ebmlab.energy.neural:MLPEnergy", "--model-kwargs", "{ dim = 2, hidden = [8] }",
                  "--steps", 3, "--no-plots", "--set", "num_samples=200", "--out", tmp_path / "pkg")
    assert done.returncode == 0, done.stderr
    done = ebmlab("train", "--model", HERE / "user_model_file.py:make_small_mlp", "--model-kwargs", "{ width = 4 }",
                  "--steps", 3, "--no-plots", "--set", "num_samples=200", "--out", tmp_path / "factory")
    assert done.returncode == 0, done.stderr
    weights = load_checkpoint(tmp_path / "factory")["model"]
    assert weights["1.weight"].shape == torch.Size([4, 2])


@pytest.mark.parametrize("model,message", [
    ("nosuch.py:Thing", "file 'nosuch.py' not found"),
    ("ebmlab.energy.neural:Nope", "has no attribute 'Nope'"),
    ("no_such_package_xyz:Thing", "cannot import module"),
])
def test_bad_model_specs_are_one_line(tmp_path, model, message):
    done = ebmlab("train", "--model", model, "--steps", 1, "--no-plots", "--out", tmp_path / "x")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and message in done.stderr and "Traceback" not in done.stderr
