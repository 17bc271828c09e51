"""The lean RBM path (closed-form CD/PCD + flat optimiser) against the general autograd objective.

Both paths draw the same batches and the same Bernoulli variates from the same generators, so
for a few updates they must agree to float rounding: parameters within 1e-5 (absolute, on
values of order 0.1-1 after float32 matrix products), persistent chains bit for bit, logged
metrics within 1e-4 relative. The negative control flips the sign of the lean gradient, which
moves the parameters by ``2 lr ‖∇L‖`` ≈ 0.1 per update — four orders above the tolerance.

The statistical check trains a 6-visible × 3-hidden RBM (enumerable: exact ``log Z``) on 4,000
exact draws of a known RBM and measures the held-out mean log-likelihood; see its docstring.
"""

from __future__ import annotations

import math

import pytest
import torch

import ebmlab
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.objectives.rbm_lean import RBMContrastiveStep
from ebmlab.samplers.block_gibbs import BlockGibbs
from ebmlab.training import TrainingDivergedError
from rbm_helpers import random_rbm

V, H = 12, 5


@pytest.fixture(scope="module")
def data() -> torch.Tensor:
    teacher = random_rbm(V, 4, scale=1.0, seed=3)
    return teacher.exact_sample(300, torch.Generator().manual_seed(1)).float()


def train(data, lean: bool, steps: int = 6, objective: str = "pcd", options=None, **settings):
    rbm = BernoulliRBM(V, H, weight_scale=0.1, generator=torch.Generator().manual_seed(0))
    opts = {"kernel": BlockGibbs(num_sweeps=2), "num_steps": 1, "lean": lean, **(options or {})}
    settings = {"batch_size": 20, "optimizer": "sgd", "lr": 0.1, "momentum": 0.0, "seed": 4, **settings}
    result = ebmlab.fit(rbm, objective, data, steps=steps, objective_options=opts, **settings)
    return rbm, result


def differences(data, **kwargs) -> dict[str, float]:
    """Largest differences between the lean and the general path after the same updates."""
    (lean, lean_run), (general, general_run) = train(data, True, **kwargs), train(data, False, **kwargs)
    out = {"params": max(float((p - q).detach().abs().max()) for p, q in zip(lean.parameters(), general.parameters()))}
    chains = getattr(lean_run.objective, "chains", None)
    if chains is not None:
        out["chains"] = float((chains - general_run.objective.chains).abs().max())
    out["metrics"] = max(abs(a[k] - b[k]) / max(1.0, abs(b[k])) for a, b in zip(lean_run.history, general_run.history)
                         for k in b if k not in ("time",))
    assert [r["step"] for r in lean_run.history] == [r["step"] for r in general_run.history]
    return out


SETTINGS = {
    "sgd": {},
    "momentum+wd": {"momentum": 0.5, "weight_decay": 1e-2},
    "adam+clip": {"optimizer": "adam", "lr": 0.02, "grad_clip": 0.5},
    "cosine+warmup+ema": {"lr_schedule": "cosine", "warmup_steps": 2, "ema_decay": 0.9, "momentum": 0.9},
    "cd-2": {"objective": "cd", "options": {"num_steps": 2}},
    "pcd-more-chains": {"options": {"num_chains": 32, "init": "data"}},
}


@pytest.mark.parametrize("name", sorted(SETTINGS))
def test_the_lean_update_is_the_general_update(data, name):
    diff = differences(data, **SETTINGS[name])
    assert diff["params"] < 1e-5, diff
    assert diff.get("chains", 0.0) == 0.0, diff
    assert diff["metrics"] < 1e-4, diff


def test_the_lean_path_is_what_users_get(data):
    """Through fit (the loop holds the engine) and through a config run (`ebmlab train`)."""
    from ebmlab.training.run import Trainer

    seen = []

    class Notes(ebmlab.Callback):
        def on_notice(self, loop, message):
            seen.append(message)

    _, run = train(data, True, steps=1, callbacks=[Notes()])
    assert seen == []
    trainer = Trainer({"data": "digits-binary", "model": "rbm", "model_kwargs": {"num_hidden": 8}, "objective": "pcd",
                       "sampler": "block_gibbs", "sampler_steps": 1, "optimizer": "sgd", "steps": 2,
                       "batch_size": 10}, out=None)
    try:
        assert trainer.loop.lean is not None
    finally:
        if trainer.loop.lock is not None:
            trainer.loop.lock.release()
    _, run = train(data, True, steps=1, options={"alpha": 0.1}, callbacks=[Notes()])
    assert len(seen) == 1 and "alpha=0.1" in seen[0] and "general autograd path" in seen[0]


def test_negative_control_a_sign_flipped_lean_gradient_is_caught(data, monkeypatch):
    original = RBMContrastiveStep.write_gradient

    def flipped(self, slot):
        return original(self, slot).neg_()

    monkeypatch.setattr(RBMContrastiveStep, "write_gradient", flipped)
    diff = differences(data, **SETTINGS["momentum+wd"])
    assert diff["params"] > 1e-2, diff


def test_resume_of_a_lean_run_is_exact(tmp_path, data):
    """Interrupted at step 7 (checkpoints every 3, records every 4: the checkpoint at 6 holds a
    logging window of two updates), resumed to 14: the same state and the same records."""
    settings = dict(momentum=0.5, weight_decay=1e-3, checkpoint_every=3, log_every=4)

    class Interrupt(ebmlab.Callback):
        record_every = 7

        def on_step(self, loop, record):
            raise KeyboardInterrupt

    train(data, True, steps=14, run_dir=tmp_path / "full", **settings)
    with pytest.raises(KeyboardInterrupt):
        train(data, True, steps=14, run_dir=tmp_path / "split", callbacks=[Interrupt()], **settings)
    train(data, True, steps=14, run_dir=tmp_path / "split", resume=True, **settings)
    from train.test_train_resume import assert_same, final_state, metrics_without_time

    assert_same(final_state(tmp_path / "full"), final_state(tmp_path / "split"))
    assert metrics_without_time(tmp_path / "full") == metrics_without_time(tmp_path / "split")
    assert [r["step"] for r in metrics_without_time(tmp_path / "full")] == [4, 8, 12, 14]


def test_divergence_inside_a_lean_call_names_the_step_and_keeps_the_state_before_it(data, monkeypatch):
    """A gradient poisoned (NaN) at the 7th update of a 20-update call: the call is replayed update by
    update, the error names step 7, and the model holds the state after step 6 — bit for bit that
    of a clean 6-step run."""
    clean, _ = train(data, True, steps=6, momentum=0.5)
    original, calls = RBMContrastiveStep.write_gradient, []

    def poisoned(self, slot):
        grad = original(self, slot)
        calls.append(1)
        if len(calls) in (7, 27):  # the 7th update of the first pass and of the replay
            grad[0] = math.nan
        return grad

    monkeypatch.setattr(RBMContrastiveStep, "write_gradient", poisoned)
    rbm = BernoulliRBM(V, H, weight_scale=0.1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError, match="step 7") as info:
        ebmlab.fit(rbm, "pcd", data, steps=20, batch_size=20, optimizer="sgd", lr=0.1, momentum=0.5, seed=4,
                   objective_options={"kernel": BlockGibbs(num_sweeps=2), "num_steps": 1})
    assert info.value.step == 7 and len(calls) == 27
    for p, q in zip(rbm.parameters(), clean.parameters()):
        assert torch.equal(p.detach(), q.detach())


def held_out_ll(rbm: BernoulliRBM, x: torch.Tensor) -> tuple[float, float]:
    """Mean held-out log-likelihood per example with exact ``log Z``, and its standard error."""
    with torch.no_grad():
        ll = -rbm.double()(x.double()).detach() - rbm.double().exact_log_z()
    return float(ll.mean()), float(ll.std() / math.sqrt(ll.numel()))


def test_lean_pcd_learns_a_known_rbm_and_matches_the_general_path():
    """4,000 exact draws of a 6×3 teacher RBM, 1,000 held out; PCD-1, batch 50, 600 updates.

    The held-out mean log-likelihood must rise above the initial model's by more than 4.5 of
    its standard errors (≈ 0.02 nats here; the rise is ≈ 0.3), must come within 0.1 nats of the
    teacher's own (the trained model's paired difference from the teacher is ≈ 0.03, its SE
    ≈ 0.005), and lean and general training must agree within 1e-3 nats (the same draws: only
    float rounding separates them). Negative control: the same training with the lean gradient's
    sign flipped must fail the first check.
    """
    teacher = random_rbm(6, 3, scale=1.5, seed=7)
    x = teacher.exact_sample(4000, torch.Generator().manual_seed(8)).float()
    x_train, x_test = x[:3000], x[3000:]
    settings = dict(steps=600, batch_size=50, optimizer="sgd", lr=0.1, momentum=0.5, seed=2)

    def trained(lean: bool, flip: bool = False):
        rbm = BernoulliRBM(6, 3, weight_scale=0.01, generator=torch.Generator().manual_seed(0))
        before = held_out_ll(BernoulliRBM(6, 3, weight_scale=0.01, generator=torch.Generator().manual_seed(0)), x_test)
        if flip:
            original = RBMContrastiveStep.write_gradient

            def flipped(self, slot):
                return original(self, slot).neg_()

            RBMContrastiveStep.write_gradient = flipped
        try:
            ebmlab.fit(rbm, "pcd", x_train, objective_options={"kernel": BlockGibbs(), "num_steps": 1, "lean": lean},
                       **settings)
        finally:
            if flip:
                RBMContrastiveStep.write_gradient = original
        return before, held_out_ll(rbm, x_test)

    (ll0, se0), (ll_lean, se_lean) = trained(True)
    _, (ll_general, _) = trained(False)
    ll_teacher, _ = held_out_ll(teacher, x_test)
    assert ll_lean - ll0 > 4.5 * math.hypot(se0, se_lean), (ll0, ll_lean)
    assert ll_teacher - ll_lean < 0.1, (ll_teacher, ll_lean)
    assert abs(ll_lean - ll_general) < 1e-3, (ll_lean, ll_general)
    (_, _), (ll_flipped, se_flipped) = trained(True, flip=True)
    assert not ll_flipped - ll0 > 4.5 * math.hypot(se0, se_flipped), (ll0, ll_flipped)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fast_bernoulli_draws_are_torch_bernoullis(dtype):
    """``rand < p`` gives torch.bernoulli's values and leaves the generator in the same state;
    negative control: another seed gives other values."""
    from ebmlab.energy.rbm import bernoulli

    for shape in [(7, 3), (10, 64), (100, 256)]:
        p = torch.rand(shape, generator=torch.Generator().manual_seed(9), dtype=dtype)
        g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
        expected = torch.bernoulli(p, generator=g1)
        assert torch.equal(bernoulli(p, g2), expected) and torch.equal(g1.get_state(), g2.get_state())
        out = torch.empty_like(p)
        bernoulli(p, torch.Generator().manual_seed(5), out=out)
        assert torch.equal(out, expected)
        assert not torch.equal(bernoulli(p, torch.Generator().manual_seed(6)), expected)


@pytest.mark.parametrize("log_every", [7, 10, 64])
def test_window_records_equal_a_sequential_fold_of_per_update_records(data, log_every):
    """The lean path folds the updates between logged steps into the metric window in bulk. Its
    records must be the exact (bit-for-bit) sequential window means of the same run's per-update
    records (``log_every = 1``: every row then goes through the one-row path). 150 updates with
    checkpoints every 40 make chunks end off the logging grid. Negative control: the mean of a
    window shifted by one update differs."""
    steps = 150
    _, single = train(data, True, steps=steps, log_every=1, checkpoint_every=40)
    _, windowed = train(data, True, steps=steps, log_every=log_every, checkpoint_every=40)
    per_update = {r["step"]: r for r in single.history}
    keys = [k for k in windowed.history[0] if k not in ("step", "lr", "time")]
    start = 0
    shifted_differs = False
    for record in windowed.history:
        end = record["step"]
        window = [per_update[t] for t in range(start + 1, end + 1)]
        for key in keys:
            total = 0.0
            for r in window:
                total += r[key]
            assert record[key] == total / len(window), (end, key)
            shifted = [per_update[t][key] for t in range(start + 2, min(end + 1, steps) + 1)]
            if key == "loss" and len(shifted) > 1 and sum(shifted) / len(shifted) != record[key]:
                shifted_differs = True
        start = end
    assert [r["step"] for r in windowed.history][-1] == steps
    assert len(windowed.history) == -(-steps // log_every)
    assert shifted_differs
