"""``ebmlab train``: run directories, exact repetition from config.toml, resume, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from ebmlab.training.checkpoint import load_checkpoint
from ebmlab.cli import main
from ebmlab.cli.train import build_config
from ebmlab.training.config import TrainConfig

SMALL = ["--steps", "15", "--hidden", "8,8", "--batch-size", "64", "--no-plots", "--set", "num_samples=300"]


def run(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def weights(run_dir):
    return load_checkpoint(run_dir)["model"]


def test_train_writes_run_and_config_repeats_it_exactly(tmp_path, monkeypatch):
    result = run(*SMALL, "--out", tmp_path / "a", "--objective", "replay", "--sampler-steps", "3")
    assert result.exit_code == 0, result.output
    assert "trained replay on 8gaussians for 15 steps" in result.output and str(tmp_path / "a") in result.output
    for name in ("checkpoint.pt", "metrics.jsonl", "config.toml"):
        assert (tmp_path / "a" / name).is_file()
    config = TrainConfig.load(tmp_path / "a" / "config.toml")
    assert (config.objective, config.sampler_steps, config.model_kwargs) == ("replay", 3, {"hidden": [8, 8]})

    again = run("--config", tmp_path / "a" / "config.toml", "--out", tmp_path / "b")
    assert again.exit_code == 0, again.output
    first, second = weights(tmp_path / "a"), weights(tmp_path / "b")
    assert all(torch.equal(first[k], second[k]) for k in first)

    same_dir = run("--config", tmp_path / "a" / "config.toml", "--out", tmp_path / "a")
    assert same_dir.exit_code == 2 and "already holds a run" in same_dir.output
    monkeypatch.chdir(tmp_path)  # the config names no directory: a fresh one under runs/
    fresh = run("--config", tmp_path / "a" / "config.toml")
    assert fresh.exit_code == 0, fresh.output
    (new_dir,) = (tmp_path / "runs").iterdir()
    third = weights(new_dir)
    assert all(torch.equal(first[k], third[k]) for k in first)
    assert (new_dir / "config.toml").read_text() == (tmp_path / "a" / "config.toml").read_text()


def test_resume_continues_to_more_steps(tmp_path):
    assert run(*SMALL, "--out", tmp_path / "r").exit_code == 0
    refused = run("--resume", tmp_path / "r", "--steps", "25")  # the cosine schedule spans the first 15 steps
    assert refused.exit_code == 2 and "ended its cosine learning-rate schedule" in refused.output
    assert "--set lr_decay_steps=25" in refused.output
    result = run("--resume", tmp_path / "r", "--steps", "25", "--set", "lr_decay_steps=25")
    assert result.exit_code == 0, result.output
    assert load_checkpoint(tmp_path / "r")["step"] == 25
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 25
    assert TrainConfig.load(tmp_path / "r" / "config.toml").steps == 25


def test_defaults_match_the_config_defaults():
    # the 2-D toy sets' recommended objective and its settings (ebmlab.training.presets) fill the unset ones
    assert build_config(None, None, {}, ()) == TrainConfig(objective="nce", objective_kwargs={"noise_ratio": 4.0},
                                                            model_kwargs={"hidden": [256, 256, 256]})
    config = build_config(None, None, {"objective": "cd", "hidden": "4,5", "lr": None}, ("ema_decay=0.9",))
    assert (config.objective, config.model_kwargs, config.ema_decay, config.lr) == ("cd", {"hidden": [4, 5]}, 0.9, 0.002)


@pytest.mark.parametrize("args, message", [
    (["--data", "nosuch"], "unknown data set 'nosuch'"),
    (["--objective", "nosuch"], "unknown objective 'nosuch'"),
    (["--model", "nosuch"], "unknown model 'nosuch'"),
    (["--sampler", "nosuch", "--objective", "cd"], "unknown sampler 'nosuch'"),
    (["--steps", "many"], "'many' is not a valid integer"),
    (["--lr", "-1"], "lr must be > 0"),
    (["--hidden", "8,x"], "--hidden expects"),
    (["--set", "colour=red"], "unknown setting 'colour'"),
    (["--set", "objective_kwargs.nosuch=1"], "objective 'nce': unknown option(s) 'nosuch'; it accepts noise_ratio"),
    (["--data", "missing.npy"], "missing.npy"),
    (["--device", "cuda:7"] if not torch.cuda.is_available() else ["--device", "tpu"], "device"),
    (["--objective", "sm", "--data", "digits-binary"], "needs real data"),
    (["--objective", "cd", "--step-size", "1e30", "--set", "checkpoint_every=1"], "diverged at step 1"),
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, message):
    result = run(*SMALL, "--out", tmp_path / "x", *args)
    text = result.output.strip()
    assert result.exit_code == 2, (args, result.output, result.exception)
    assert text.startswith("ebmlab: error:") and message in text and len(text.splitlines()) == 1
    assert not (tmp_path / "x" / "checkpoint.pt").exists()


def test_resume_errors(tmp_path):
    result = run("--resume", tmp_path / "nothing")
    assert result.exit_code == 2 and "not a run directory" in result.output
    result = run("--resume", tmp_path, "--config", tmp_path / "c.toml")
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_console_script_reports_one_line(tmp_path):
    exe = Path(sys.executable).with_name("ebmlab")
    done = subprocess.run([exe, "train", "--data", "nosuch", "--out", tmp_path / "x"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().startswith("ebmlab: error: unknown data set") and "Traceback" not in done.stderr


def test_a_resumed_run_keeps_the_learning_rate_of_every_step(tmp_path):
    """Stopped at step 7 of 15 and resumed: the learning rate (cosine, warm-up) of every step equals
    the uninterrupted run's, and so do the weights."""
    schedule = [*SMALL, "--set", "warmup_steps=3", "--set", "checkpoint_every=100"]
    assert run(*schedule, "--out", tmp_path / "full").exit_code == 0
    assert run(*schedule, "--steps", "7", "--set", "lr_decay_steps=15", "--out", tmp_path / "cut").exit_code == 0
    assert run("--resume", tmp_path / "cut", "--steps", "15").exit_code == 0
    import json

    def rates(d):
        return [json.loads(line)["lr"] for line in (d / "metrics.jsonl").read_text().splitlines()]

    full, cut = rates(tmp_path / "full"), rates(tmp_path / "cut")
    assert len(full) == 15 and cut == full
