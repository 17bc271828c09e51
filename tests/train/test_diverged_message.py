"""``TrainingDivergedError`` says what the run directory holds when training diverges.

Three cases, each checked against the directory itself: a checkpoint of step N is kept (the
error names N, and the file holds step N); none was written yet (divergence before the first
``checkpoint_every`` updates: the directory has no ``checkpoint.pt``, and the message must not
claim one); no ``run_dir`` at all. The lean RBM path raises through the same words. The
negative control is the old sentence, "the last checkpoint is kept", which must appear in none
of the cases without a checkpoint.
"""

from __future__ import annotations

import math
import pickle

import pytest
import torch
from torch import nn

import ebmlab
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.objectives.rbm_lean import RBMContrastiveStep
from ebmlab.samplers import BlockGibbs
from ebmlab.training import TrainingDivergedError
from ebmlab.training.checkpoint import CHECKPOINT_NAME, load_checkpoint


class NaNAfter(nn.Module):
    """``E(x) = w·x + b``, NaN from forward call ``calls + 1`` on (dsm calls it once per update)."""

    def __init__(self, calls: int):
        super().__init__()
        self.net, self.calls, self.n = nn.Linear(2, 1), calls, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.n += 1
        e = self.net(x).squeeze(-1)
        return e * math.nan if self.n > self.calls else e


def diverge(run_dir, nan_after: int, checkpoint_every: int) -> TrainingDivergedError:
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError) as info:
        ebmlab.fit(NaNAfter(nan_after), "dsm", x, steps=50, batch_size=20, run_dir=run_dir,
                   checkpoint_every=checkpoint_every)
    return info.value


def test_divergence_before_the_first_checkpoint_says_none_was_written(tmp_path):
    err = diverge(tmp_path / "run", nan_after=3, checkpoint_every=10)
    assert err.step == 4 and err.checkpoint_step is None and err.run_dir == tmp_path / "run"
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()
    assert "no checkpoint was written to" in str(err) and str(tmp_path / "run") in str(err)
    assert "is kept" not in str(err)


def test_divergence_after_a_checkpoint_names_its_step(tmp_path):
    err = diverge(tmp_path / "run", nan_after=5, checkpoint_every=2)
    assert err.step == 6 and err.checkpoint_step == 4
    assert load_checkpoint(tmp_path / "run")["step"] == 4
    assert "the checkpoint of step 4 in" in str(err) and "is kept" in str(err)


def test_a_resumed_run_keeps_the_checkpoint_it_resumed_from(tmp_path):
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    model = NaNAfter(10**9)
    ebmlab.fit(model, "dsm", x, steps=4, batch_size=20, run_dir=tmp_path / "run", checkpoint_every=10)
    model.calls = model.n + 1  # the second update after resuming diverges, before the next checkpoint
    with pytest.raises(TrainingDivergedError) as info:
        ebmlab.fit(model, "dsm", x, steps=50, batch_size=20, run_dir=tmp_path / "run", checkpoint_every=10,
                   resume=True)
    assert info.value.step == 6 and info.value.checkpoint_step == 4
    assert "the checkpoint of step 4 in" in str(info.value)


def test_without_a_run_dir_nothing_was_saved():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError, match=r"nothing was saved \(no run_dir was given\)") as info:
        ebmlab.fit(NaNAfter(2), "dsm", x, steps=10, batch_size=20)
    assert info.value.step == 3 and info.value.run_dir is None and "checkpoint" not in str(info.value)


def test_the_lean_rbm_path_says_the_same(tmp_path, monkeypatch):
    """A NaN gradient at update 3 of the lean path, checkpoints every 5: none written yet. (A call runs
    the 5 updates to the checkpoint, then replays them one by one: the 3rd of each pass is poisoned.)"""
    original, calls = RBMContrastiveStep.write_gradient, []

    def poisoned(self, slot):
        grad = original(self, slot)
        calls.append(1)
        if len(calls) in (3, 8):
            grad[0] = math.nan
        return grad

    monkeypatch.setattr(RBMContrastiveStep, "write_gradient", poisoned)
    data = torch.randint(0, 2, (60, 6), generator=torch.Generator().manual_seed(1)).float()
    rbm = BernoulliRBM(6, 3, weight_scale=0.1, generator=torch.Generator().manual_seed(0))
    with pytest.raises(TrainingDivergedError) as info:
        ebmlab.fit(rbm, "pcd", data, steps=20, batch_size=20, run_dir=tmp_path / "run", checkpoint_every=5,
                   objective_options={"kernel": BlockGibbs(), "num_steps": 1})
    assert info.value.step == 3 and info.value.checkpoint_step is None and len(calls) == 8
    assert "no checkpoint was written" in str(info.value)
    assert not (tmp_path / "run" / CHECKPOINT_NAME).exists()


def test_the_error_pickles_with_its_fields(tmp_path):
    err = TrainingDivergedError(7, "the loss", tmp_path, 5)
    copy = pickle.loads(pickle.dumps(err))
    assert (copy.step, copy.what, copy.run_dir, copy.checkpoint_step, str(copy)) == (7, "the loss", tmp_path, 5, str(err))
