"""Resuming a run reproduces the uninterrupted run bit for bit (CPU), and the divergence guard.

Runs are tiny (180 training points, batches of 32, a 16-16 MLP, 12 steps) so that a run
crosses epoch boundaries, checkpoints several times and still takes well under a second.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ebmlab.training.checkpoint import load_checkpoint
from ebmlab.training.config import TrainConfig
from ebmlab.training.run import TrainingDivergedError
from train_helpers import make_trainer as Trainer, train

STEPS = 12


def small_config(out, objective: str, **overrides) -> dict:
    settings = dict(data="8gaussians", num_samples=200, model="mlp", model_kwargs={"hidden": [16, 16]},
                    objective=objective, steps=STEPS, batch_size=32, checkpoint_every=3, out=str(out),
                    plots=False, progress="off", sampler_steps=5, step_size=0.01)
    settings.update(overrides)
    return settings


VARIANTS = {
    # plain DSM, with EMA weights, Adam and a cosine schedule spanning the full run
    "dsm": dict(objective="dsm", ema_decay=0.9, lr_decay_steps=STEPS),
    # replay-buffer CD with ULA, spectral normalisation (power-iteration buffers), energy penalty
    "replay": dict(objective="replay", model_kwargs={"hidden": [16, 16], "spectral_norm": True},
                   objective_kwargs={"buffer_size": 100, "restart_prob": 0.2, "alpha": 0.1}, lr_schedule="constant"),
    # persistent CD with MALA (accept/reject draws), SGD with momentum and gradient clipping
    "pcd": dict(objective="pcd", sampler="mala", optimizer="sgd", lr=0.01, grad_clip=1.0, lr_schedule="constant"),
}


def assert_same(a, b, where="checkpoint"):
    """Nested dicts / lists / tensors equal exactly (tensors bit for bit)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def metrics_without_time(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if k != "time"} for line in lines]


def final_state(run_dir):
    state = load_checkpoint(run_dir)
    return {k: state[k] for k in ("step", "model", "ema", "optimizer", "objective", "rng", "batches", "data")}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_resume_reproduces_uninterrupted_run_bit_for_bit(tmp_path, variant):
    """Stop at step 6 (steps=6), resume to 12: weights, optimiser, objective state, generators
    and the metrics log equal those of one uninterrupted 12-step run."""
    options = VARIANTS[variant]
    full = train(small_config(tmp_path / "full", **options))
    first = small_config(tmp_path / "split", **{**options, "steps": 6})
    train(first)
    resumed = train(small_config(tmp_path / "split", **options), resume=True)
    assert full.step == resumed.step == STEPS
    assert_same(final_state(tmp_path / "full"), final_state(tmp_path / "split"))
    assert metrics_without_time(tmp_path / "full") == metrics_without_time(tmp_path / "split")
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("variant", ["replay", "pcd"])
def test_keyboard_interrupt_keeps_last_checkpoint_and_resume_matches(tmp_path, variant):
    """A KeyboardInterrupt raised by a callback at step 7 leaves the step-6 checkpoint; the
    log holds 7 records until resume cuts it back to 6; the resumed run ends bit-identical."""
    options = VARIANTS[variant]
    train(small_config(tmp_path / "full", **options))

    def interrupt(step, record, trainer):
        if step == 7:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(small_config(tmp_path / "cut", **options), callback=interrupt)
    assert load_checkpoint(tmp_path / "cut")["step"] == 6
    assert len(metrics_without_time(tmp_path / "cut")) == 7
    train(small_config(tmp_path / "cut", **options), resume=True)
    assert_same(final_state(tmp_path / "full"), final_state(tmp_path / "cut"))
    assert metrics_without_time(tmp_path / "full") == metrics_without_time(tmp_path / "cut")


def test_resume_refuses_changed_structure_and_missing_run(tmp_path):
    train(small_config(tmp_path / "run", "dsm", steps=3))
    with pytest.raises(ValueError, match="objective"):
        train(small_config(tmp_path / "run", "nce", steps=6), resume=True)
    with pytest.raises(FileNotFoundError):
        train(small_config(tmp_path / "none", "dsm"), resume=True)
    with pytest.raises(ValueError, match="already holds a run"):
        train(small_config(tmp_path / "run", "dsm"))


def test_divergence_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
    """A weight set to NaN after step 5 makes step 6's loss NaN: the error names step 6, the
    checkpoint stays at step 4 with finite weights, and the log ends at step 5."""

    def corrupt(step, record, trainer):
        if step == 5:
            with torch.no_grad():
                next(trainer.model.parameters()).view(-1)[0] = math.nan

    config = small_config(tmp_path / "run", "dsm", checkpoint_every=2)
    with pytest.raises(TrainingDivergedError, match="step 6") as info:
        train(config, callback=corrupt)
    assert info.value.step == 6
    state = load_checkpoint(tmp_path / "run")
    assert state["step"] == 4
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert metrics_without_time(tmp_path / "run")[-1]["step"] == 5


def test_divergence_of_sampler_energies_is_caught(tmp_path):
    """ULA with a step size of 1e30 overflows the negatives (energies inf or NaN): stopped at step 1."""
    config = small_config(tmp_path / "run", "cd", step_size=1e30, sampler_steps=20, checkpoint_every=1)
    with pytest.raises(TrainingDivergedError, match="step 1"):
        train(config)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_a_non_finite_state_is_never_written(tmp_path):
    trainer = Trainer(small_config(tmp_path / "run", "replay", steps=2))
    trainer.run()
    before = (tmp_path / "run" / "checkpoint.pt").read_bytes()
    trainer.objective.buffer.samples[0, 0] = math.inf
    with pytest.raises(TrainingDivergedError, match="objective"):
        trainer.save()
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == before
