"""Per-data-set settings on the 2-D toy sets (:data:`ebmlab.training.presets.TOY_DATA_SETTINGS`).

Deterministic: ``recommend`` on a config layers defaults < ``TOY_SETTINGS[objective]`` <
``TOY_DATA_SETTINGS[objective][data]`` and leaves every setting the user names alone. The
negative control: a data set without an entry gets the objective's settings unchanged.
"""

from __future__ import annotations

import pytest

from ebmlab.training import presets
from ebmlab.training.config import TrainConfig
from ebmlab.training.presets import TOY_DATA_SETTINGS, TOY_SETTINGS, recommend, recommended_settings


@pytest.fixture
def override(monkeypatch):
    """A per-data entry for cd on 2 spirals that changes one top-level and one table setting."""
    entry = {"2spirals": {"step_size": 0.123, "objective_kwargs.alpha": 0.456}}
    monkeypatch.setitem(presets.TOY_DATA_SETTINGS, "cd", {**TOY_DATA_SETTINGS.get("cd", {}), **entry})
    return entry["2spirals"]


def test_per_data_settings_win_over_the_objectives(override):
    settings = recommended_settings("mlp", "cd", " 2Spirals ")  # data names as the CLI takes them
    assert {k: settings[k] for k in override} == override
    for key, value in TOY_SETTINGS["cd"].items():
        if key not in override:
            assert settings[key] == value, key
    values, _ = recommend({**TrainConfig().to_dict(), "data": "2spirals", "objective": "cd"}, {"data", "objective"})
    assert (values["step_size"], values["objective_kwargs"]["alpha"]) == (0.123, 0.456)


def test_negative_control_other_data_sets_keep_the_objectives_settings(override):
    settings = recommended_settings("mlp", "cd", "moons")
    assert settings == {**TOY_SETTINGS["cd"], **TOY_DATA_SETTINGS["cd"].get("moons", {})}
    assert settings.get("step_size") != 0.123


def test_the_user_beats_the_per_data_setting(override):
    given = {**TrainConfig().to_dict(), "data": "2spirals", "objective": "cd", "step_size": 0.5}
    values, _ = recommend(given, {"data", "objective", "step_size"})
    assert values["step_size"] == 0.5 and values["objective_kwargs"]["alpha"] == 0.456


def test_every_entry_names_a_toy_set_and_a_preset_objective():
    from ebmlab.data.toy2d import TOY_NAMES

    for objective, per_data in TOY_DATA_SETTINGS.items():
        assert objective in TOY_SETTINGS, objective
        assert set(per_data) <= set(TOY_NAMES), sorted(per_data)
        for data, settings in per_data.items():
            defaults = TrainConfig().to_dict()
            assert all((k.partition(".")[0] if "." in k else k) in defaults for k in settings), sorted(settings)
            TrainConfig.from_dict(recommend({**TrainConfig().to_dict(), "data": data, "objective": objective},
                                            {"data", "objective"})[0])  # the merged config validates


def test_cd_on_the_checkerboard_and_2_spirals_uses_the_deeper_network():
    """The measured settings (docs/likelihood.md: checkerboard 0.043 / 0.034 / 0.034 nats and
    2 spirals 0.044 / 0.042 / 0.046 at seeds 0 / 1 / 2); the negative control: 8 gaussians keeps
    the objective's settings (CD-20 with ULA on the default network)."""
    values, _ = recommend({**TrainConfig().to_dict(), "data": "checkerboard", "objective": "cd"}, {"data", "objective"})
    assert values["model_kwargs"]["hidden"] == [256] * 4 and values["steps"] == 9000 and values["sampler"] == "mala"
    spirals, _ = recommend({**TrainConfig().to_dict(), "data": "2spirals", "objective": "cd"}, {"data", "objective"})
    assert spirals["model_kwargs"]["hidden"] == [256] * 4 and spirals["steps"] == 5000
    assert (spirals["sampler"], spirals["step_size"], spirals["sampler_steps"]) == ("mala", 0.005, 10)
    other, _ = recommend({**TrainConfig().to_dict(), "data": "8gaussians", "objective": "cd"}, {"data", "objective"})
    assert other["model_kwargs"].get("hidden") != [256] * 4 and other["sampler"] != "mala"
    assert other["steps"] == TOY_SETTINGS["cd"]["steps"]


def test_dsm_on_2_spirals_uses_antithetic_noise_for_10000_updates():
    """The measured setting (docs/likelihood.md: 0.038 / 0.031 / 0.029 / 0.053 nats at seeds 0-3);
    the negative control: 8 gaussians keeps the objective's plain DSM."""
    values, _ = recommend({**TrainConfig().to_dict(), "data": "2spirals", "objective": "dsm"}, {"data", "objective"})
    assert values["objective_kwargs"]["antithetic"] is True and values["steps"] == 10000 and values["lr"] == 0.0035
    assert values["objective_kwargs"]["anneal_steps"] == 7000 and values["objective_kwargs"]["sigma"] == 0.03
    assert values["model_kwargs"]["hidden"] == [256] * 3 and values["standardize"] is True
    other, _ = recommend({**TrainConfig().to_dict(), "data": "8gaussians", "objective": "dsm"}, {"data", "objective"})
    assert "antithetic" not in other["objective_kwargs"] and other["lr"] == TOY_SETTINGS["dsm"]["lr"]


def test_dsm_on_the_checkerboard_uses_the_raw_data_and_the_deeper_network():
    """The measured setting (docs/likelihood.md: 0.059 / 0.066 / 0.063 nats at seeds 0-2); a
    setting the user names still wins."""
    config = {**TrainConfig().to_dict(), "data": "checkerboard", "objective": "dsm"}
    values, _ = recommend(config, {"data", "objective"})
    assert values["standardize"] is False and values["model_kwargs"]["hidden"] == [256] * 4
    assert values["objective_kwargs"]["antithetic"] is True and values["steps"] == 15000
    assert values["batch_size"] == 128
    assert values["objective_kwargs"]["anneal_steps"] == 10500 and values["objective_kwargs"]["sigma"] == 0.03
    named, _ = recommend({**config, "standardize": True, "steps": 2000}, {"data", "objective", "standardize", "steps"})
    assert named["standardize"] is True and named["steps"] == 2000 and named["objective_kwargs"]["anneal_steps"] == 1400
