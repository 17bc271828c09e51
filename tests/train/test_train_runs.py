"""Run directories: what ``train`` writes and what ``ebmlab.load`` / ``load_run`` give back."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest
import torch

import ebmlab
from ebmlab.training.checkpoint import load_checkpoint, save_checkpoint
from ebmlab.training.config import TrainConfig
from ebmlab.training.loading import StandardizedEnergy, load_run
from ebmlab.training.config import learning_rate
from train_helpers import train

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def small_config(out, **overrides) -> dict:
    settings = dict(data="8gaussians", num_samples=300, model_kwargs={"hidden": [16, 16]}, steps=20, batch_size=64,
                    checkpoint_every=10, out=str(out), plots=False, progress="off", plot_samples=200,
                    plot_sampler_steps=20)
    settings.update(overrides)
    return settings


@pytest.fixture(scope="module")
def dsm_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "dsm"
    return train(small_config(out, plots=True))


def test_run_directory_contents(dsm_run):
    run_dir = dsm_run.run_dir
    for name in ("checkpoint.pt", "metrics.jsonl", "config.toml", "density.png", "samples.png", "loss.png"):
        assert (run_dir / name).is_file(), name
    for name in ("density.png", "samples.png", "loss.png"):
        assert (run_dir / name).read_bytes()[:8] == PNG_MAGIC
    assert [r["step"] for r in dsm_run.metrics] == list(range(1, 21))
    assert all(math.isfinite(r["loss"]) and "lr" in r and "grad_norm" in r for r in dsm_run.metrics)
    assert TrainConfig.load(run_dir / "config.toml") == dsm_run.config
    assert not list(run_dir.glob(".*tmp"))  # atomic writes leave no temporary files


def test_load_folds_the_standardisation_in(dsm_run):
    """``E_raw(x) = E_std((x - μ)/s) + Σ log s`` over the original data space."""
    energy = ebmlab.load(dsm_run.run_dir)
    assert isinstance(energy, StandardizedEnergy) and not energy.training
    assert energy.event_shape == (2,) and energy.support == "real"
    standardizer = dsm_run.standardizer
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0)) * 2
    with torch.no_grad():
        expected = dsm_run.model(standardizer.transform(x)) + torch.log(standardizer.std).sum()
        torch.testing.assert_close(energy(x), expected, rtol=1e-6, atol=1e-6)


def test_standardisation_keeps_the_partition_function(dsm_run):
    """``∫ exp(-E_raw) dx = ∫ exp(-E_std) dz``: both integrals by the midpoint rule on grids
    covering the same region (mapped by the standardisation); they agree to quadrature error."""
    energy, run = ebmlab.load(dsm_run.run_dir), load_run(dsm_run.run_dir)
    mean, std = run.standardizer.mean, run.standardizer.std
    n, half = 300, 6.0
    z_axis = (torch.arange(n) + 0.5) / n * 2 * half - half
    z = torch.cartesian_prod(z_axis, z_axis)
    cell_z = (2 * half / n) ** 2
    with torch.no_grad():
        log_z_std = torch.logsumexp(-run.model(z), 0) + math.log(cell_z)
        log_z_raw = torch.logsumexp(-energy(mean + std * z), 0) + math.log(cell_z * float(std.prod()))
    assert abs(float(log_z_std - log_z_raw)) < 1e-4


def test_load_run_gives_split_and_data(dsm_run):
    run = load_run(dsm_run.run_dir)
    assert run.step == 20 and run.config == dsm_run.config
    train_index, heldout_index = run.train_index, run.heldout_index
    assert len(heldout_index) == 30 and len(train_index) == 270
    assert torch.equal(torch.sort(torch.cat([train_index, heldout_index])).values, torch.arange(300))
    assert run.heldout_data().shape == (30, 2)
    torch.testing.assert_close(run.standardizer.mean, run.train_data().mean(0), rtol=1e-5, atol=1e-5)
    assert run.metrics == dsm_run.metrics


def test_checkpoint_holds_only_tensors_and_primitives(dsm_run, tmp_path):
    """The checkpoint loads with ``weights_only=True``; a file with a pickled object is refused."""
    state = torch.load(dsm_run.run_dir / "checkpoint.pt", weights_only=True)
    assert state["format"] == "ebmlab-checkpoint" and isinstance(state["config"], dict)

    class Payload:
        def __reduce__(self):
            return (print, ("this must never run",))

    bad = tmp_path / "checkpoint.pt"
    with open(bad, "wb") as f:
        pickle.dump({"format": "ebmlab-checkpoint", "version": 1, "x": Payload()}, f)
    with pytest.raises(ValueError, match="not a readable ebmlab checkpoint"):
        load_checkpoint(bad)
    save_checkpoint(tmp_path / "other.pt", {"step": 1})
    assert load_checkpoint(tmp_path / "other.pt")["step"] == 1
    torch.save({"format": "something else"}, tmp_path / "foreign.pt")
    with pytest.raises(ValueError, match="not an ebmlab checkpoint"):
        load_checkpoint(tmp_path / "foreign.pt")
    with pytest.raises(FileNotFoundError):
        ebmlab.load(tmp_path / "empty")


def test_ema_weights_are_used_for_the_result_and_load(tmp_path):
    result = train(small_config(tmp_path / "ema", ema_decay=0.5, steps=5))
    state = load_checkpoint(tmp_path / "ema")
    assert state["ema"] is not None
    for name, value in result.model.state_dict().items():
        assert torch.equal(value, state["ema"][name])
    raw = load_run(tmp_path / "ema", ema=False).model
    assert any(not torch.equal(raw.state_dict()[k], state["ema"][k]) for k in state["ema"])


def test_nce_run_reports_learned_log_z(tmp_path):
    train(small_config(tmp_path / "nce", objective="nce", steps=5))
    energy = ebmlab.load(tmp_path / "nce")
    state = load_checkpoint(tmp_path / "nce")
    assert energy.learned_log_z == pytest.approx(float(state["objective"]["log_z"]))


def test_image_runs_write_sample_grids(tmp_path):
    """8×8 digits with an MLP over flattened images: samples.png, data.png and chains.png are grids."""
    result = train(small_config(tmp_path / "digits", data="digits", num_samples=200, steps=3, plots=True))
    assert {p.name for p in result.pictures} == {"samples.png", "data.png", "chains.png", "loss.png"}
    energy = ebmlab.load(result.run_dir)
    assert energy.event_shape == (1, 8, 8)
    assert energy(torch.zeros(4, 1, 8, 8)).shape == (4,)


def test_binary_data_is_not_standardised_and_needs_a_discrete_sampler(tmp_path):
    result = train(small_config(tmp_path / "rbm", data="digits-binary-flat", num_samples=100, model="rbm",
                                model_kwargs={"num_hidden": 8}, objective="cd", sampler="block_gibbs",
                                sampler_steps=1, steps=3))
    assert result.standardizer is None
    energy = ebmlab.load(result.run_dir)
    assert energy.support == "binary" and energy.event_shape == (64,)
    with pytest.raises(ValueError, match="sampler 'ula'"):  # named: refused; the default "auto" picks gibbs
        train(small_config(tmp_path / "bad", data="digits-binary-flat", num_samples=100, objective="cd", sampler="ula"))
    with pytest.raises(ValueError, match="needs real data"):
        train(small_config(tmp_path / "bad2", data="digits-binary-flat", num_samples=100, objective="dsm"))


def test_learning_rate_schedules():
    """Linear warm-up, then ``lr · ½(1 + cos(π (step-1-warmup)/(T-warmup)))``; constant is constant."""
    config = TrainConfig(lr=1.0, steps=10, lr_schedule="cosine", warmup_steps=2)
    rates = [learning_rate(config, s) for s in range(1, 11)]
    assert rates[:3] == [0.5, 1.0, 1.0]
    expected = [0.5 * (1 + math.cos(math.pi * (s - 3) / 8)) for s in range(3, 11)]
    assert np.allclose(rates[2:], expected) and rates[-1] > 0
    assert learning_rate(TrainConfig(lr=1.0, steps=10, lr_decay_steps=20), 11) == pytest.approx(0.5)
    assert {learning_rate(TrainConfig(lr=0.3, lr_schedule="constant"), s) for s in (1, 99, 10**6)} == {0.3}
