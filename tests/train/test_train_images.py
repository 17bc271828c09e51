"""``ebmlab train`` on binary data and images: RBMs (digits, an IDX MNIST folder), conv + replay.

Plumbing tests with a few updates each: the options reach the model and the optimiser, the
recommended settings fill what the user leaves unset, the loaded energy of an RBM run is the
RBM itself, and image runs write their sample, data and chain pictures.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest
from click.testing import CliRunner

from ebmlab.training.checkpoint import load_checkpoint
from ebmlab.cli import main
from ebmlab.cli.common import UserError
from ebmlab.cli.train import build_config
from ebmlab.training.config import TrainConfig
from ebmlab.energy.rbm import BernoulliRBM
from ebmlab.training.loading import load

IMAGE_PICTURES = {"samples.png", "data.png", "chains.png", "loss.png"}


def run(*args):
    return CliRunner().invoke(main, ["train", "--no-progress", *map(str, args)])


def write_idx(path, array: np.ndarray) -> None:
    """An unsigned-byte IDX file: magic 0x0000 08 ndim, big-endian uint32 dims, the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def mnist_dir(tmp_path):
    """64 grey 28×28 images (a bright square on a dark ground, varied), MNIST's IDX layout."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 60, size=(64, 28, 28))
    for i, image in enumerate(images):
        top, left = 4 + i % 10, 4 + (i // 10) % 10
        image[top:top + 10, left:left + 8] = rng.integers(150, 256, size=(10, 8))
    folder = tmp_path / "mnist"
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", images)
    write_idx(folder / "train-labels-idx1-ubyte", np.arange(64) % 10)
    return folder


def test_rbm_options_map_to_the_model_and_recommended_settings():
    config = build_config(None, None, {"model": "rbm", "hidden": "64", "objective": "pcd", "data": "digits-binary"}, ())
    assert config.model_kwargs == {"num_hidden": 64}
    assert (config.sampler, config.sampler_steps, config.standardize) == ("block_gibbs", 1, False)
    assert (config.optimizer, config.momentum, config.weight_decay) == ("sgd", 0.5, 1e-4)
    explicit = build_config(None, None, {"model": "rbm", "hidden": "64", "sampler": "gibbs", "optimizer": "adam",
                                         "momentum": 0.9, "weight_decay": 0.0}, ("model_kwargs.num_hidden=32", "lr=0.01"))
    assert (explicit.sampler, explicit.optimizer, explicit.momentum, explicit.weight_decay) == ("gibbs", "adam", 0.9, 0.0)
    assert explicit.model_kwargs == {"num_hidden": 32} and explicit.lr == 0.01  # --set wins over --hidden
    assert build_config(None, None, {"model": "conv", "hidden": "16"}, ()).model_kwargs == {"base_width": 16}
    with pytest.raises(UserError, match="--hidden for model 'rbm' is one integer"):
        build_config(None, None, {"model": "rbm", "hidden": "64,64"}, ())


def test_config_file_settings_are_not_replaced(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('model = "rbm"\noptimizer = "adam"\nlr = 0.001\n')
    config = build_config(str(path), None, {"hidden": "8"}, ())
    assert (config.optimizer, config.lr, config.sampler, config.model_kwargs) == ("adam", 0.001, "block_gibbs",
                                                                                  {"num_hidden": 8})
    saved = TrainConfig(model="rbm", data="digits-binary", objective="pcd", sampler="block_gibbs", standardize=False)
    saved.save(tmp_path / "full.toml")  # a run's own config.toml names every setting: repeated as is
    assert build_config(str(tmp_path / "full.toml"), None, {}, ()) == saved


def test_rbm_on_digits_binary_cli(tmp_path):
    out = tmp_path / "rbm"
    result = run("--model", "rbm", "--hidden", 64, "--objective", "pcd", "--data", "digits-binary",
                 "--sampler", "block_gibbs", "--steps", 5, "--plot-sampler-steps", 20, "--out", out)
    assert result.exit_code == 0, result.output
    assert "trained pcd on digits-binary for 5 steps" in result.output
    assert IMAGE_PICTURES <= {p.name for p in out.iterdir()}
    energy = load(out)
    assert isinstance(energy, BernoulliRBM) and energy.num_hidden == 64 and energy.event_shape == (1, 8, 8)
    assert load_checkpoint(out)["standardizer"] is None


def test_rbm_on_an_idx_mnist_folder(tmp_path, mnist_dir):
    out = tmp_path / "mnist-rbm"
    result = run("--model", "rbm", "--hidden", 500, "--objective", "pcd", "--data", f"mnist:{mnist_dir}",
                 "--steps", 3, "--plot-sampler-steps", 5, "--out", out)
    assert result.exit_code == 0, result.output
    assert "training on mnist-binary:" in result.output  # the note (stderr is mixed in by CliRunner)
    config = TrainConfig.load(out / "config.toml")
    assert config.data == f"mnist-binary:{mnist_dir}" and config.model_kwargs == {"num_hidden": 500}
    energy = load(out)
    assert isinstance(energy, BernoulliRBM) and energy.num_visible == 784 and energy.event_shape == (1, 28, 28)
    assert IMAGE_PICTURES <= {p.name for p in out.iterdir()}


def test_sgd_momentum_and_weight_decay_reach_the_optimiser(tmp_path):
    out = tmp_path / "sgd"
    result = run("--model", "rbm", "--hidden", 8, "--steps", 2, "--optimizer", "sgd", "--momentum", 0.7,
                 "--weight-decay", 0.003, "--lr", 0.02, "--no-plots", "--out", out)
    assert result.exit_code == 0, result.output
    group = load_checkpoint(out)["optimizer"]["param_groups"][0]
    assert (group["momentum"], group["weight_decay"]) == (0.7, 0.003)
    assert "momentum_buffer" in next(iter(load_checkpoint(out)["optimizer"]["state"].values()))


def test_conv_replay_on_digits_writes_pictures(tmp_path):
    out = tmp_path / "conv"
    result = run("--data", "digits", "--model", "conv", "--objective", "replay", "--hidden", 4, "--steps", 3,
                 "--set", "sampler_steps=2", "--plot-sampler-steps", 3, "--set", "num_samples=100",
                 "--set", "objective_kwargs.buffer_size=100", "--out", out)
    assert result.exit_code == 0, result.output
    assert IMAGE_PICTURES <= {p.name for p in out.iterdir()}
    config = TrainConfig.load(out / "config.toml")
    assert (config.standardize, config.sampler, config.step_size, config.noise_scale) == (False, "ula", 1.0, 0.005)
    assert config.objective_kwargs == {"buffer_size": 100, "alpha": 0.1, "clamp": True}
    assert load_checkpoint(out)["objective"]["buffer"].shape == (100, 1, 8, 8)


@pytest.mark.parametrize("args, message", [
    (["--model", "rbm", "--set", "data=8gaussians"], "model 'rbm' has binary units but 8gaussians is real data"),
    (["--model", "rbm", "--hidden", "4,4"], "--hidden for model 'rbm' is one integer"),
    (["--optimizer", "rmsprop"], "Invalid value for '--optimizer'"),
    (["--momentum", "1.5"], "momentum must be in [0, 1)"),
    (["--weight-decay", "-1"], "weight_decay must be >= 0"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = run("--steps", 1, "--no-plots", "--out", tmp_path / "x", *args)
    text = result.output.strip()
    assert result.exit_code == 2, (args, result.output)
    assert text.startswith("ebmlab: error:") and message in text and len(text.splitlines()) == 1


def test_noise_conditional_image_runs_draw_chains_with_annealed_langevin(tmp_path):
    """A score model has no energy for the run's MCMC kernel: its chains picture comes from the
    objective's annealed Langevin (``Objective.model_chains``)."""
    out = tmp_path / "ncsn"
    result = run("--data", "digits", "--model", "ncsn_conv", "--objective", "ncsn", "--steps", 2, "--set",
                 "num_samples=100", "--set", "objective_kwargs.sample_steps_per_level=2", "--out", out)
    assert result.exit_code == 0, result.output
    assert IMAGE_PICTURES <= {p.name for p in out.iterdir()}
