"""The library side of resuming (:func:`ebmlab.train`, ``resume=True``): which step counts and
schedules it refuses and with which fixes (:class:`SettingsError`), a complete run left as it is,
and ``sampler = "auto"`` choosing the kernel by the data's states."""

from __future__ import annotations

import hashlib

import pytest

from ebmlab.training.config import TrainConfig
from ebmlab.training.run import _check_steps, train
from ebmlab.training.settings import SettingsError

SMALL = dict(data="8gaussians", num_samples=300, model_kwargs={"hidden": [8, 8]}, objective="dsm", steps=15,
             batch_size=64, checkpoint_every=5)


def files(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir()) if p.is_file()}


def refusal(saved: dict, config: dict, done: int) -> SettingsError:
    with pytest.raises(SettingsError) as caught:
        _check_steps(TrainConfig(**saved), TrainConfig(**config), done, "runs/x")
    return caught.value


def test_a_settings_error_names_its_fixes_in_python_or_as_the_caller_writes_them():
    err = SettingsError("resume: no", [({"lr_decay_steps": 40, "lr_schedule": "cosine"}, "longer"), ({"steps": 20}, "")],
                        "nothing was changed")
    assert str(err) == "resume: no: lr_decay_steps=40, lr_schedule='cosine' (longer) or steps=20; nothing was changed"
    assert err.render(lambda s: "+".join(s)) == "resume: no: lr_decay_steps+lr_schedule (longer) or steps; nothing was changed"
    assert isinstance(err, ValueError)  # callers catching ValueError keep working


def test_extending_a_finished_cosine_schedule_needs_its_new_length():
    err = refusal(dict(steps=20), dict(steps=40), done=20)
    assert "ended its cosine learning-rate schedule at step 20" in str(err)
    assert [s for s, _ in err.fixes] == [{"lr_decay_steps": 40}, {"lr_schedule": "constant"}]
    assert "0.5 x lr at step 21" in str(err)  # the cosine over 40 steps, halfway at step 21


def test_stretching_a_stopped_cosine_schedule_offers_to_finish_it_as_planned():
    err = refusal(dict(steps=20), dict(steps=40), done=10)
    assert "stopped at step 10 of a cosine learning-rate schedule over 20 steps" in str(err)
    assert {"steps": 20} in [s for s, _ in err.fixes]


def test_fewer_steps_than_done_is_refused_before_the_schedule():
    err = refusal(dict(steps=100), dict(steps=30), done=100)
    assert "has done 100 steps, more than the 30 asked for" in str(err)
    assert err.fixes[0][0] == {"steps": 130, "lr_decay_steps": 130}
    constant = refusal(dict(steps=100, lr_schedule="constant"), dict(steps=30, lr_schedule="constant"), done=100)
    assert constant.fixes[0][0] == {"steps": 130}


@pytest.mark.parametrize("saved, config, done", [
    (dict(steps=20), dict(steps=20), 10),                                          # the planned steps
    (dict(steps=20), dict(steps=40, lr_decay_steps=40), 20),                       # a new length named
    (dict(steps=7, lr_decay_steps=15), dict(steps=15, lr_decay_steps=15), 7),      # planned ahead
    (dict(steps=20, lr_schedule="constant"), dict(steps=40, lr_schedule="constant"), 20),
    (dict(steps=20), dict(steps=40, lr_schedule="constant"), 20),                  # the schedule switched
    (dict(steps=20), dict(steps=20), 20),                                          # complete: nothing to do
])
def test_resumes_that_keep_or_name_the_schedule_pass(saved, config, done):
    _check_steps(TrainConfig(**saved), TrainConfig(**config), done, "runs/x")


def test_resuming_a_complete_run_trains_and_writes_nothing(tmp_path):
    out = tmp_path / "r"
    first = train(SMALL, out=out)
    assert not first.already_complete and first.start_step == 0
    before = files(out)
    again = train({**SMALL, "lr_schedule": "constant", "grad_clip": 1.0}, out=out, resume=True)
    assert again.already_complete and again.step == again.start_step == 15 and again.wall_time == 0.0
    assert again.not_applied == ("lr_schedule", "grad_clip")
    assert again.config.lr_schedule == "cosine"  # the run as it was trained
    assert files(out) == before
    more = train({**SMALL, "steps": 20, "lr_decay_steps": 20}, out=out, resume=True)
    assert not more.already_complete and (more.start_step, more.step) == (15, 20)


def test_the_auto_sampler_is_recorded_as_the_kernel_it_chose(tmp_path):
    assert TrainConfig().sampler == "auto"
    binary = train(dict(data="digits-binary-flat", num_samples=100, objective="cd", steps=2, batch_size=32),
                   out=tmp_path / "b")
    real = train({**SMALL, "objective": "cd", "steps": 2}, out=tmp_path / "r")
    assert (binary.config.sampler, real.config.sampler) == ("gibbs", "ula")
    assert TrainConfig.load(tmp_path / "b" / "config.toml").sampler == "gibbs"
    with pytest.raises(SettingsError, match="sampler 'mala' works on real states") as caught:
        train(dict(data="digits-binary-flat", num_samples=100, objective="pcd", sampler="mala", steps=2),
              out=tmp_path / "m")
    assert caught.value.fixes[0][0] == {"sampler": "gibbs"}


@pytest.mark.parametrize("change", [{"weight_decay": 0.1}, {"betas": [0.5, 0.6]}])
def test_resume_refuses_optimiser_settings_its_state_would_ignore(tmp_path, change):
    out = tmp_path / "run"
    settings = {**SMALL, "steps": 10, "lr_schedule": "constant"}
    train({**settings, "steps": 5}, out=out)
    with pytest.raises(ValueError, match=r"trained with other settings \(" + next(iter(change))):
        train({**settings, **change}, out=out, resume=True)
    assert train(settings, out=out, resume=True).step == 10


def test_auto_sampler_takes_block_gibbs_for_a_two_layer_model(tmp_path):
    rbm = train(dict(data="digits-binary-flat", num_samples=100, model="rbm", model_kwargs={"num_hidden": 8},
                     objective="cd", steps=2, batch_size=32, sampler="auto"), out=tmp_path / "rbm")
    assert rbm.config.sampler == "block_gibbs"
