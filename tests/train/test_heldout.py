"""Held-out metrics during training (:mod:`ebmlab.training.heldout`) and the ``best`` checkpoint."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import ebmlab
from ebmlab.partition import BoundaryMassWarning, quadrature_log_z
from ebmlab.training import train
from ebmlab.training.checkpoint import load_checkpoint
from ebmlab.training.loading import load_run

BASE = {"data": "8gaussians", "num_samples": 400, "model_kwargs": {"hidden": [16, 16]}, "steps": 30, "batch_size": 64,
        "checkpoint_every": 10}


def test_heldout_metrics_at_the_interval_and_the_best_checkpoint(tmp_path):
    result = train({**BASE, "objective": "nce"}, out=tmp_path / "run", heldout_every=7)
    steps = [r["step"] for r in result.metrics if "heldout_loss" in r]
    assert steps == [7, 14, 21, 28, 30]
    assert all(math.isfinite(r["heldout_nll"]) for r in result.metrics if "heldout_loss" in r)
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    nlls = {r["step"]: r["heldout_nll"] for r in result.metrics if "heldout_nll" in r}
    assert best["heldout"]["step"] == min(nlls, key=nlls.get) and best["step"] == best["heldout"]["step"]
    # the best checkpoint reloads, and its held-out NLL recomputed independently is the recorded one
    run = load_run(tmp_path / "run", checkpoint="best")
    x = run.heldout_data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryMassWarning)  # a 30-step model still has mass at the edges
        log_z = quadrature_log_z(run.energy, data=x, num_points=257).log_z
    with torch.no_grad():
        nll = float(run.energy(x).double().mean()) + log_z
    assert nll == pytest.approx(nlls[best["step"]], rel=1e-5)


@pytest.mark.parametrize("objective,extra", [("pcd", {"sampler_steps": 3}), ("dsm", {})])
def test_evaluating_never_changes_the_run(tmp_path, objective, extra):
    """Same weights and objective state with and without held-out evaluation (its own generator;
    persistent chains restored): the evaluation observes the run, it does not take part."""
    settings = {**BASE, "objective": objective, **extra}
    watched = train(settings, out=tmp_path / "watched", heldout_every=3)
    plain = train(settings, out=tmp_path / "plain", heldout_every=0)
    for a, b in zip(watched.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.equal(a, b)
    assert not (tmp_path / "plain" / "best.pt").exists()
    state_a, state_b = load_checkpoint(tmp_path / "watched")["objective"], load_checkpoint(tmp_path / "plain")["objective"]
    for key in state_b:
        assert torch.equal(torch.as_tensor(state_a[key]), torch.as_tensor(state_b[key])), key


def test_load_best_without_one_says_so(tmp_path):
    train({**BASE, "objective": "dsm", "steps": 2}, out=tmp_path / "run", heldout_every=0)
    with pytest.raises(FileNotFoundError, match="no best.pt"):
        ebmlab.load(tmp_path / "run", checkpoint="best")
    with pytest.raises(ValueError, match="'last' or 'best'"):
        ebmlab.load(tmp_path / "run", checkpoint="first")


def test_image_runs_track_an_mmd_to_heldout_digits(tmp_path):
    """Replay-buffer samples against held-out digits on 4×4 pooled features: finite, recorded at
    the interval; a buffer of the held-out images themselves would give ≈ 0 (the feature map is
    checked on its own: pooling keeps shape (N, 16) for 8×8 images)."""
    from ebmlab.training.heldout import pooled_features

    result = train({"data": "digits", "num_samples": 300, "model": "conv", "model_kwargs": {"base_width": 4},
                    "objective": "replay", "sampler_steps": 2, "steps": 6, "batch_size": 32,
                    "objective_kwargs": {"buffer_size": 64}}, out=tmp_path / "run", heldout_every=3)
    values = [r["heldout_mmd"] for r in result.metrics if "heldout_mmd" in r]
    assert len(values) == 2 and all(math.isfinite(v) for v in values)
    assert pooled_features(torch.rand(5, 1, 8, 8)).shape == (5, 16)
