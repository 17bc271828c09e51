"""``ebmlab sample`` on noise-conditional runs: annealed Langevin is the default sampler.

Plumbing only (a tiny run, a few steps per level); the sampler's statistics are tested in
``tests/samplers/test_annealed.py``.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from ebmlab.cli import main


def _train_tiny_ncsn(run_dir, parametrization: str) -> None:
    result = CliRunner().invoke(main, ["train", "--objective", "ncsn", "--steps", "20", "--batch-size", "64",
                                       "--set", f"model_kwargs.parametrization={parametrization}",
                                       "--no-plots", "--no-progress", "--out", str(run_dir)])
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("parametrization", ["energy", "score"])
def test_ncsn_run_defaults_to_annealed_langevin(tmp_path, parametrization):
    run_dir = tmp_path / "run"
    _train_tiny_ncsn(run_dir, parametrization)
    out = tmp_path / "s.npz"
    result = CliRunner().invoke(main, ["sample", "--energy", str(run_dir), "--chains", "32", "--steps", "3",
                                       "--out", str(out), "--plot", str(tmp_path / "s.png")])
    assert result.exit_code == 0, result.output
    assert "annealed Langevin" in result.output
    with np.load(out) as data:
        assert data["samples"].shape == (1, 32, 2)
        assert np.isfinite(data["samples"]).all()
        np.testing.assert_array_equal(data["acceptance_rate"], np.ones(32))
        assert np.isfinite(data["energy"]).all() == (parametrization == "energy")
        meta = json.loads(str(data["metadata"]))
    assert meta["sampler"] == "annealed" and meta["steps_per_level"] == 3
    assert (tmp_path / "s.png").stat().st_size > 0


def test_annealed_needs_a_noise_conditional_run(tmp_path):
    result = CliRunner().invoke(main, ["sample", "--energy", "gmm8", "--sampler", "annealed",
                                       "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 2
    assert "--objective ncsn" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "x.npz").exists()


def test_other_energies_default_to_their_supports_sampler(tmp_path):
    """Without --sampler an MCMC energy gets the sampler of its support (was: --sampler required)."""
    result = CliRunner().invoke(main, ["sample", "--energy", "gmm8", "--chains", "2", "--steps", "5", "--burn-in", "0",
                                       "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 0, result.output
    assert "with mala" in result.output


def test_a_score_model_under_another_sampler_is_told_the_option(tmp_path):
    _train_tiny_ncsn(tmp_path / "run", "score")
    result = CliRunner().invoke(main, ["sample", "--energy", str(tmp_path / "run"), "--sampler", "mala",
                                       "--chains", "4", "--steps", "5", "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 2 and "--sampler annealed" in result.output
    assert "ebmlab.samplers.annealed" not in result.output
