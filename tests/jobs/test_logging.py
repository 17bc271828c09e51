"""Loggers of a training run: CSV and TensorBoard files hold the logged metrics at the requested interval.

Tiny runs of :func:`ebmlab.fit` (a few dozen updates of a small MLP on 2-D data) with a logger
as callback; the files are read back (TensorBoard's own event reader when it is installed) and
compared with the run's per-update records, which a recording callback keeps in full.
"""

from __future__ import annotations

import csv
import json

import pytest
import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.jobs.logging import CSVLogger, TensorBoardLogger, default_log_every, make_logger
from ebmlab.training.fit import fit
from ebmlab.training.loop import Callback

STEPS, EVERY = 23, 5
LOGGED = [5, 10, 15, 20, 23]  # every 5th update and the last


class Recorder(Callback):
    """Keeps every update's record (the loop may keep fewer)."""

    def __init__(self):
        self.records = {}

    def on_step(self, loop, record):
        self.records[loop.step] = dict(record)


def tiny_fit(logger, steps: int = STEPS, run_dir=None):
    recorder = Recorder()
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    fit(model, "dsm", x, steps=steps, batch_size=32, seed=0, run_dir=run_dir, callbacks=[logger, recorder])
    return recorder.records


def read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_default_interval_keeps_a_few_thousand_rows():
    assert default_log_every(10) == 1 and default_log_every(3999) == 1 and default_log_every(100_000) == 50
    assert all(steps // default_log_every(steps) <= 4000 for steps in (1, 1999, 2000, 4001, 10**6))
    with pytest.raises(ValueError, match="every must be an integer >= 1"):
        CSVLogger("x.csv", every=0)
    with pytest.raises(ValueError, match="log must be one of csv, tensorboard, none"):
        make_logger("wandb")
    assert make_logger("none") is None


def test_csv_logger_rows_at_the_interval(tmp_path):
    path = tmp_path / "log.csv"
    records = tiny_fit(CSVLogger(path, every=EVERY))
    rows = read_csv(path)
    assert [int(r["step"]) for r in rows] == LOGGED
    assert list(rows[0])[:2] == ["step", "loss"] and {"lr", "grad_norm", "time"} <= set(rows[0])
    for row in rows:
        record = records[int(row["step"])]
        for key in ("loss", "lr", "grad_norm"):
            assert float(row[key]) == pytest.approx(record[key], rel=1e-12)


def test_csv_logger_widens_its_header_and_resumes(tmp_path):
    """A metric that appears later gets a column (earlier rows blank); a resumed run drops rows
    after the resumed step before appending."""
    from types import SimpleNamespace

    path = tmp_path / "log.csv"
    loop = SimpleNamespace(step=0, settings=SimpleNamespace(steps=4), sharding=SimpleNamespace(is_main=True),
                           run_dir=tmp_path)
    logger = CSVLogger(path, every=1)
    logger.on_fit_start(loop)
    for step, record in ((1, {"loss": 1.0}), (2, {"loss": 0.5, "heldout_loss": 0.7}), (3, {"loss": 0.25})):
        loop.step = step
        logger.on_step(loop, {"step": step, **record, "phase": "train"})
    logger.on_fit_end(loop)
    rows = read_csv(path)
    assert list(rows[0]) == ["step", "loss", "heldout_loss"]
    assert [(r["step"], r["loss"], r["heldout_loss"]) for r in rows] == [("1", "1.0", ""), ("2", "0.5", "0.7"),
                                                                        ("3", "0.25", "")]
    loop.step = 2  # resumed from the checkpoint of step 2: row 3 goes
    logger.on_fit_start(loop)
    loop.step = 3
    logger.on_step(loop, {"step": 3, "loss": 0.3})
    logger.on_fit_end(loop)
    assert [(r["step"], r["loss"]) for r in read_csv(path)] == [("1", "1.0"), ("2", "0.5"), ("3", "0.3")]


def test_tensorboard_logger_scalars_at_the_interval(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    records = tiny_fit(TensorBoardLogger(tmp_path / "tb", every=EVERY))
    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss", "lr", "grad_norm", "time"} <= tags
    for tag in ("loss", "grad_norm"):
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == LOGGED
        assert [s.value for s in scalars] == pytest.approx([records[s][tag] for s in LOGGED], rel=1e-6)


def test_train_cli_log_options(tmp_path):
    """``ebmlab train --log csv --log-every N`` writes RUN_DIR/metrics.csv at that interval."""
    out = tmp_path / "run"
    result = CliRunner().invoke(main, ["train", "--steps", 12, "--batch-size", 64, "--hidden", "16", "--out", out,
                                       "--no-plots", "--no-progress", "--log", "csv", "--log-every", 4])
    assert result.exit_code == 0, result.output
    assert [int(r["step"]) for r in read_csv(out / "metrics.csv")] == [4, 8, 12]
    lines = (out / "metrics.jsonl").read_text().splitlines()  # one interval for both
    assert [json.loads(line)["step"] for line in lines] == [4, 8, 12]
    result = CliRunner().invoke(main, ["train", "--out", tmp_path / "x", "--log", "wandb"])
    assert result.exit_code == 2 and "--log" in result.output
