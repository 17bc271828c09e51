"""``ebmlab train --model jem --data digits``: the data set's labels reach the JEM objective, and the
run reports held-out accuracy, calibration and class-conditional samples (Grathwohl et al. 2019)."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.training.config import TrainConfig


def test_jem_on_digits_from_the_command_line(tmp_path):
    out = tmp_path / "jem"
    result = CliRunner().invoke(main, ["train", "--model", "jem", "--data", "digits", "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "held-out accuracy" in result.output
    figures = json.loads((out / "classification.json").read_text())
    assert figures["accuracy"] >= 0.95 and 0.0 <= figures["ece"] < 0.1, figures  # the target; measured 0.989
    assert (out / "class_samples.png").is_file()
    config = TrainConfig.load(out / "config.toml")
    assert (config.objective, config.model, config.standardize) == ("jem", "jem", False)


def test_jem_needs_labelled_data(tmp_path):
    result = CliRunner().invoke(main, ["train", "--model", "jem", "--data", "8gaussians", "--steps", "2",
                                       "--out", str(tmp_path / "x")])
    assert result.exit_code == 2 and "has no labels" in result.output
