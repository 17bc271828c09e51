"""``TrainConfig``: TOML round trips (bit-exact floats), validation messages, ``--set`` overrides."""

from __future__ import annotations

import math
import tomllib

import pytest

from ebmlab.training.config import TrainConfig, to_toml, toml_value


def test_toml_round_trip_is_exact():
    config = TrainConfig(
        data="data/my file \"quoted\" é.npy", lr=0.1 + 0.2, weight_decay=1e-300, grad_clip=math.inf,
        model_kwargs={"hidden": [64, 32], "spectral_norm": True},
        objective_kwargs={"sigma": 1 / 3, "kernel": {"name": "mala", "step_size": 5e-324}},
        sampler_kwargs={"num_states": 3, "scan": "random"}, betas=[0.5, 0.9], ema_decay=0.999,
    ).validate()
    text = config.to_toml()
    again = TrainConfig.from_toml(text)
    assert again == config
    assert again.lr == 0.1 + 0.2 and again.objective_kwargs["kernel"]["step_size"] == 5e-324
    assert tomllib.loads(text)["model"]["options"] == {"hidden": [64, 32], "spectral_norm": True}


def test_toml_values():
    assert toml_value(True) == "true" and toml_value(3) == "3" and toml_value(-math.inf) == "-inf"
    assert toml_value(1.0) == "1.0" and toml_value("a\nb") == '"a\\nb"'
    assert tomllib.loads(to_toml({"a": math.nan}))["a"] != tomllib.loads(to_toml({"a": math.nan}))["a"]
    assert tomllib.loads(to_toml({"odd key": 1, "t": {"u": {"v": [1, 2]}}})) == {"odd key": 1, "t": {"u": {"v": [1, 2]}}}
    with pytest.raises(ValueError, match="cannot write"):
        toml_value(object())


def test_save_and_load(tmp_path):
    config = TrainConfig(objective="replay", steps=7)
    config.save(tmp_path / "c.toml")
    assert TrainConfig.load(tmp_path / "c.toml") == config
    with pytest.raises(FileNotFoundError):
        TrainConfig.load(tmp_path / "missing.toml")
    (tmp_path / "bad.toml").write_text("steps = = 3")
    with pytest.raises(ValueError, match="not valid TOML"):
        TrainConfig.load(tmp_path / "bad.toml")


@pytest.mark.parametrize("values, message", [
    ({"steps": -1}, "steps must be >= 0"),
    ({"lr": 0}, "lr must be > 0"),
    ({"optimizer": "rmsprop"}, "optimizer must be one of adam, sgd"),
    ({"lr_schedule": "step"}, "lr_schedule"),
    ({"batch_size": 1.5}, "batch_size must be int"),
    ({"standardize": "yes"}, "standardize must be bool"),
    ({"heldout_fraction": 1.0}, "heldout_fraction"),
    ({"ema_decay": 1.0}, "ema_decay"),
    ({"betas": [0.9]}, "betas"),
    ({"model_kwargs": {"hidden": None}}, "model_kwargs.hidden"),
    ({"colour": "red"}, "unknown setting"),
])
def test_validation_names_the_setting(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)


def test_ints_become_floats():
    config = TrainConfig.from_dict({"lr": 1, "grad_clip": 2})
    assert isinstance(config.lr, float) and isinstance(config.grad_clip, float)


def test_overrides():
    config = TrainConfig().with_overrides(["lr=0.5", "objective=nce", "model_kwargs.hidden=[8, 8]",
                                           "objective_kwargs.noise_ratio=2", "data=moons", "run.seed=7",
                                           "sampler.steps=3", "model.options.width=4"])
    assert (config.lr, config.objective, config.data, config.seed, config.sampler_steps) == (0.5, "nce", "moons", 7, 3)
    assert config.model_kwargs == {"hidden": [8, 8], "width": 4} and config.objective_kwargs == {"noise_ratio": 2}
    for bad, message in [("lr", "key=value"), ("nope=1", "unknown setting"), ("steps.x=1", "unknown setting"),
                         ("steps=many", "steps must be int"), ("plots=false", "not part of the experiment"),
                         ("optim.nope=1", "unknown setting")]:
        with pytest.raises(ValueError, match=message):
            TrainConfig().with_overrides([bad])


def test_config_toml_has_one_table_per_section_and_reads_back():
    config = TrainConfig(lr=0.25, model_kwargs={"hidden": [8]}, sampler_steps=7, seed=3)
    tables = tomllib.loads(config.to_toml())
    assert set(tables) == {"data", "model", "objective", "sampler", "optim", "run"}
    assert tables["optim"]["lr"] == 0.25 and tables["sampler"]["steps"] == 7 and tables["run"]["seed"] == 3
    assert tables["model"] == {"name": "mlp", "options": {"hidden": [8]}}
    assert TrainConfig.from_toml(config.to_toml()) == config
    assert TrainConfig.from_dict(config.to_dict()) == config  # the flat form (0.1 checkpoints) too


@pytest.mark.parametrize("values,message", [
    ({"out": "runs/x"}, "not part of the experiment"),
    ({"optim": {"lr": 0.1, "nope": 1}}, r"section \[optim\] has no setting 'nope'"),
    ({"plots": True}, "not part of the experiment"),
])
def test_output_and_display_settings_are_refused(values, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.from_dict(values)
