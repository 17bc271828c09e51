"""``ebmlab train``'s messages on resume and on its run directory: each names what the user can
type (``--steps``, ``--set KEY=VALUE``, ``--sampler``), and a command the help shows runs."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.training.checkpoint import load_checkpoint
from ebmlab.training.config import TrainConfig
from ebmlab.training.schedules import learning_rate_at

SMALL = ["--objective", "dsm", "--steps", "15", "--hidden", "8,8", "--batch-size", "64", "--no-plots",
         "--no-progress", "--set", "num_samples=300"]


def run(*args):
    return CliRunner().invoke(main, ["train", *map(str, args)])


def digest(run_dir: Path) -> dict[str, str]:
    """Every file of a run directory by its content hash: what "unchanged" means."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir()) if p.is_file()}


def error_line(result) -> str:
    lines = result.output.strip().splitlines()
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("ebmlab: error: "), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def finished(tmp_path) -> Path:
    """A finished 15-step dsm run with the default cosine schedule (lr_decay_steps = 0)."""
    out = tmp_path / "r"
    result = run(*SMALL, "--out", out)
    assert result.exit_code == 0, result.output
    return out


def test_extending_a_finished_cosine_run_names_the_command_line_settings(finished):
    before = digest(finished)
    line = error_line(run("--resume", finished, "--steps", 25))
    assert "ended its cosine learning-rate schedule at step 15" in line
    assert "--set lr_decay_steps=25" in line and "--set lr_schedule=constant" in line
    assert "lr_schedule='constant'" not in line  # the Python spelling is not what a shell user types
    assert "restart mid-run" not in line
    assert digest(finished) == before


def test_the_resume_command_of_the_help_runs_and_stretches_the_schedule(finished):
    """``--resume RUN --steps N --set lr_decay_steps=N`` (train --help; the README's torchrun line):
    steps 16..25 follow the cosine over 25 steps."""
    help_text = " ".join(CliRunner().invoke(main, ["train", "--help"]).output.split())
    assert "--steps 6000 --set lr_decay_steps=6000" in help_text
    result = run("--resume", finished, "--steps", 25, "--set", "lr_decay_steps=25", "--no-plots")
    assert result.exit_code == 0, result.output
    assert "trained dsm" in result.output and load_checkpoint(finished)["step"] == 25
    config = TrainConfig.load(finished / "config.toml")
    assert (config.steps, config.lr_decay_steps) == (25, 25)
    rows = [json.loads(line) for line in (finished / "metrics.jsonl").read_text().splitlines()]
    rates = {row["step"]: row["lr"] for row in rows}
    assert rates[16] == pytest.approx(learning_rate_at(16, config.lr, "cosine", 0, 25), rel=1e-12)
    assert rates[25] == pytest.approx(learning_rate_at(25, config.lr, "cosine", 0, 25), rel=1e-12)


@pytest.mark.parametrize("extra", [[], ["--steps", "15"], ["--set", "lr_schedule=constant", "--set", "ema_decay=0.5"]])
def test_resuming_a_complete_run_says_so_and_changes_nothing(finished, extra):
    before = digest(finished)
    result = run("--resume", finished, *extra)
    assert result.exit_code == 0, result.output
    assert "already complete (15 of 15 steps)" in result.output and "nothing was trained" in result.output
    assert "trained dsm" not in result.output  # no claim of training
    assert f"--resume {finished} --steps N --set lr_decay_steps=N" in result.output
    assert digest(finished) == before  # config.toml, metrics.jsonl and checkpoint.pt as they were
    if "--set" in extra:
        assert "not applied" in result.output and "lr_schedule, ema_decay" in result.output
    else:
        assert "not applied" not in result.output


def test_fewer_steps_than_done_says_steps_is_the_total(finished):
    before = digest(finished)
    line = error_line(run("--resume", finished, "--steps", 5))
    assert "has done 15 steps, more than the 5 asked for" in line and "the run's total" in line
    assert "--steps 20 --set lr_decay_steps=20" in line  # 5 more, with the schedule's new length
    assert "restart mid-run" not in line and "ended its cosine" not in line
    assert digest(finished) == before


@pytest.mark.parametrize("objective", ["cd", "pcd"])
def test_binary_data_trains_with_gibbs_by_default(tmp_path, objective):
    out = tmp_path / objective
    result = run("--data", "digits-binary-flat", "--objective", objective, "--steps", 2, "--batch-size", 32,
                 "--no-plots", "--no-progress", "--set", "num_samples=100", "--out", out)
    assert result.exit_code == 0, result.output
    assert TrainConfig.load(out / "config.toml").sampler == "gibbs"  # recorded: --config repeats the run


def test_a_named_real_sampler_on_binary_data_names_the_option_that_works(tmp_path):
    line = error_line(run("--data", "digits-binary-flat", "--objective", "cd", "--sampler", "ula", "--steps", 2,
                          "--no-plots", "--set", "num_samples=100", "--out", tmp_path / "x"))
    assert "sampler 'ula' works on real states" in line and "--sampler gibbs" in line


def test_an_out_on_a_virtual_file_system_is_not_a_disk_space_problem():
    line = error_line(run(*SMALL, "--out", "/proc/ebmlab-run"))
    assert "--out '/proc/ebmlab-run'" in line and "virtual file system" in line
    assert "free" not in line and "lower --steps" not in line


def test_an_out_without_write_permission_says_so(tmp_path, monkeypatch):
    import tempfile

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", refuse)
    line = error_line(run(*SMALL, "--out", tmp_path / "locked" / "run"))
    assert "permission denied" in line and "cannot be written" in line
    assert not (tmp_path / "locked").exists()


def test_no_plots_still_reports_the_classifier(tmp_path):
    out = tmp_path / "jem"
    result = run("--model", "jem", "--data", "digits", "--steps", 5, "--no-plots", "--no-progress", "--out", out)
    assert result.exit_code == 0, result.output
    figures = json.loads((out / "classification.json").read_text())
    assert set(figures) == {"accuracy", "ece", "nll"} and 0.0 <= figures["accuracy"] <= 1.0
    assert "held-out accuracy" in result.output and "class_samples.png" not in result.output
    assert not (out / "class_samples.png").exists()  # the one picture of the report is skipped


def test_too_few_points_left_for_training_names_the_setting(tmp_path):
    """2 points with the default held-out fraction leave 1 to train on: one line naming
    --set heldout_fraction=0, which then trains."""
    from click.testing import CliRunner

    from ebmlab.cli import main

    data = tmp_path / "two.csv"
    data.write_text("1,2\n3,4\n")
    args = ["train", "--data", str(data), "--steps", "2", "--no-plots", "--no-progress"]
    refused = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")])
    assert refused.exit_code == 2 and "leave 1 for training" in refused.output
    assert "--set heldout_fraction=0" in refused.output
    done = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b"), "--set", "heldout_fraction=0"])
    assert done.exit_code == 0, done.output
