"""Recommended settings (:mod:`ebmlab.training.presets`): what they fill in, and that explicit settings win."""

from __future__ import annotations

import pytest

from ebmlab.training.config import TrainConfig
from ebmlab.training.presets import (
    IMAGE_LANGEVIN_SETTINGS, RBM_SETTINGS, binary_variant, is_image_data, recommend, recommended_settings,
)


def values(**settings) -> dict:
    return TrainConfig.from_dict(settings).to_dict()


@pytest.mark.parametrize("spec, binary", [
    ("digits", "digits-binary"), ("DIGITS", "digits-binary"), ("digits-flat", "digits-binary-flat"),
    ("mnist:/data/mnist", "mnist-binary:/data/mnist"), ("fashion-mnist:rel/dir", "fashion-mnist-binary:rel/dir"),
    ("mnist", "mnist-binary"), ("digits-binary", None), ("mnist-binary:/d", None), ("8gaussians", None),
    ("images:/pngs", None), ("x.npy", None),
])
def test_binary_variant(spec, binary):
    assert binary_variant(spec) == binary


def test_is_image_data():
    assert all(map(is_image_data, ["digits", "digits-binary", "mnist:/d", "fashion-mnist-binary:/d", "images:/d"]))
    assert not any(map(is_image_data, ["digits-flat", "8gaussians", "data.npy", "moons"]))


def test_rbm_settings_fill_only_what_is_not_explicit():
    config, notes = recommend(values(model="rbm", lr=0.3, data="digits-binary"), {"model", "lr", "data"})
    assert config["lr"] == 0.3 and config["data"] == "digits-binary" and notes == []
    for key in ("objective", "sampler", "sampler_steps", "standardize", "optimizer", "momentum", "weight_decay"):
        assert config[key] == RBM_SETTINGS[key], key
    assert (config["sampler"], config["standardize"], config["optimizer"]) == ("block_gibbs", False, "sgd")
    assert TrainConfig.from_dict(config).weight_decay == pytest.approx(1e-4)


def test_rbm_replaces_real_image_data_by_the_binarised_variant():
    config, notes = recommend(values(model="rbm", data="mnist:/data/m"), {"model", "data"})
    assert config["data"] == "mnist-binary:/data/m"
    assert len(notes) == 1 and "mnist-binary:/data/m" in notes[0] and "thresholded" in notes[0]
    config, _ = recommend(values(model="rbm"), {"model"})
    assert config["data"] == "digits-binary"  # the default data are 2-D points, which an RBM cannot model


def test_langevin_on_images_settings_and_tables():
    config, _ = recommend(values(data="digits", model="conv", objective="replay",
                                 objective_kwargs={"buffer_size": 500}),
                          {"data", "model", "objective", "objective_kwargs.buffer_size", "step_size"})
    assert config["objective_kwargs"] == {"buffer_size": 500, "alpha": 0.1, "clamp": True}
    assert config["step_size"] == TrainConfig().step_size  # named explicitly: kept
    assert (config["standardize"], config["sampler"], config["noise_scale"]) == (False, "ula", 0.005)
    assert config["betas"] == [0.0, 0.999]
    # a table named as a whole (e.g. by a config file) is left alone
    config, _ = recommend(values(data="digits", model="conv", objective="replay"),
                          {"data", "model", "objective", "objective_kwargs"})
    assert config["objective_kwargs"] == {}


@pytest.mark.parametrize("model, objective, data", [
    ("mlp", "dsm", "digits"), ("conv", "dsm", "digits"), ("mlp", "sm", "8gaussians"),
    ("conv", "pcd", "digits-binary"), ("mlp", "nce", "digits-flat"), ("mlp", "nce", "data.npy"),
])
def test_no_recommendation_elsewhere(model, objective, data):
    assert recommended_settings(model, objective, data) == {}


@pytest.mark.parametrize("objective", ["cd", "pcd", "replay"])
@pytest.mark.parametrize("data", ["8gaussians", "2spirals", "digits-flat", "data.npy"])
def test_contrastive_on_vectors_gets_the_energy_penalty(objective, data):
    assert recommended_settings("mlp", objective, data)["objective_kwargs.alpha"] == 0.1


def test_small_conv_on_digits():
    assert recommended_settings("conv", "replay", "digits") == {**IMAGE_LANGEVIN_SETTINGS, "model_kwargs.base_width": 16}
    assert recommended_settings("conv", "replay", "mnist:/d") == IMAGE_LANGEVIN_SETTINGS
    assert recommended_settings("mlp", "cd", "digits") == IMAGE_LANGEVIN_SETTINGS
