"""The CLI's training callbacks: they stop the loop only where they need a record, and the run's
notes reach the user once.

* :class:`ProgressBar` asks for a record every 10 updates (and the last) and still ends at the
  run's total; a bar that moved by one per record would end short (the negative control).
* :class:`MetricLogger` asks for records only at the steps it writes.
* :class:`Notices` writes each ``on_notice`` note as one ``ebmlab: note:`` line: an RBM whose
  objective has an energy penalty cannot take the lean path, and ``ebmlab train`` says so once.
"""

from __future__ import annotations

import torch
from click.testing import CliRunner

from ebmlab.cli import main
from ebmlab.jobs.logging import CSVLogger
from ebmlab.jobs.training import ProgressBar
from ebmlab.training.callbacks import Callback
from ebmlab.training.fit import fit

STEPS = 23


class Counter(Callback):
    """Counts the records one callback with its own interval receives."""

    def __init__(self, every):
        self.record_every, self.steps = every, []

    def on_step(self, loop, record):
        self.steps.append(loop.step)


class QuietBar:
    """Stands in for tqdm: keeps the position and the last postfix."""

    def __init__(self):
        self.n, self.postfix, self.closed = 0, None, False

    def update(self, k):
        self.n += k

    def set_postfix(self, values, refresh=False):
        self.postfix = values

    def close(self):
        self.closed = True


class RecordingBar(ProgressBar):
    def on_fit_start(self, loop):
        self.bar = QuietBar()
        self.seen = []

    def on_step(self, loop, record):
        self.seen.append(loop.step)
        super().on_step(loop, record)

    def on_fit_end(self, loop):
        self.final, self.bar = self.bar, None


def tiny_fit(callbacks, steps=STEPS):
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    model = torch.nn.Sequential(torch.nn.Linear(2, 8), torch.nn.SiLU(), torch.nn.Linear(8, 1), torch.nn.Flatten(0))
    fit(model, "dsm", x, steps=steps, batch_size=32, seed=0, callbacks=callbacks)


def test_progress_bar_asks_every_tenth_update_and_ends_at_the_total():
    bar = RecordingBar()
    tiny_fit([bar])
    assert bar.seen == [10, 20, 23]
    assert bar.final.n == STEPS and "loss" in bar.final.postfix
    # negative control: one step per record, as a bar that assumed a record per update would move
    assert len(bar.seen) != STEPS


def test_metric_logger_asks_only_for_the_steps_it_writes(tmp_path):
    logger, every_update = CSVLogger(tmp_path / "log.csv", every=5), Counter(1)
    tiny_fit([logger, every_update])
    assert logger.record_every == 5
    assert every_update.steps == list(range(1, STEPS + 1))  # other callbacks keep their own interval
    rows = (tmp_path / "log.csv").read_text().splitlines()
    assert [int(r.split(",")[0]) for r in rows[1:]] == [5, 10, 15, 20, 23]


def test_train_cli_says_once_why_an_rbm_takes_the_general_path(tmp_path):
    args = ["train", "--model", "rbm", "--model-kwargs", '{ num_hidden = 4 }', "--steps", "3", "--set",
            "objective_kwargs.alpha=0.1", "--out", str(tmp_path / "rbm"), "--no-plots", "--no-progress"]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    notes = [line for line in done.stderr.splitlines() if line.startswith("ebmlab: note:")]
    assert len(notes) == 1 and "general autograd path" in notes[0], done.stderr
    lean = CliRunner().invoke(main, args[:7] + ["--out", str(tmp_path / "lean"), "--no-plots", "--no-progress"])
    assert lean.exit_code == 0, lean.output
    assert "ebmlab: note:" not in lean.stderr  # the lean path needs no note
