"""Loggers of a training run: callbacks of the training loop that write its metrics every N updates.

A :class:`MetricLogger` is a :class:`~ebmlab.training.loop.Callback`. Every ``every`` updates
(and at the last one) it takes the update's record — ``step``, the objective's metrics, ``lr``,
``grad_norm``, ``time`` (seconds since the run began) — and writes its numeric values:

* :class:`CSVLogger`: one row per logged update in a CSV file (``RUN_DIR/metrics.csv`` by
  default), a ``step`` column first, then one column per metric in the order they first appear;
* :class:`TensorBoardLogger`: one scalar per metric in TensorBoard event files
  (``RUN_DIR/tensorboard/`` by default) through :class:`torch.utils.tensorboard.SummaryWriter`;
  needs the optional ``tensorboard`` package (``pip install 'ebmlab[tensorboard]'``).

``every=None`` logs at the loop's interval (``loop.log_every``, that of ``metrics.jsonl``),
else every :func:`default_log_every` updates: at most a few thousand rows per run. Only the main process of a torchrun group writes. On resume
(``loop.step > 0`` when the run starts) rows after the resumed step are dropped, so each step
appears once however often the run was stopped (TensorBoard: ``purge_step``).
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path
from typing import Any

from ebmlab.atomic import atomic_write
from ebmlab.training.loop import Callback, TrainLoop

#: A run logs about this many rows at most by default (see :func:`default_log_every`).
MAX_ROWS = 2000
#: ``--log`` choices of ``ebmlab train``.
LOGGERS = ("csv", "tensorboard", "none")
CSV_NAME = "metrics.csv"
TENSORBOARD_DIR = "tensorboard"


def default_log_every(steps: int, max_rows: int = MAX_ROWS) -> int:
    """The logging interval for a run of ``steps`` updates: ``max(1, steps // max_rows)``, so a
    run writes fewer than ``2 · max_rows`` rows (plus the last update's)."""
    return max(1, int(steps) // int(max_rows))


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The numeric values of a metrics record, ``step`` excepted (booleans and text are skipped)."""
    return {k: float(v) for k, v in record.items()
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}


class MetricLogger(Callback):
    """Writes the record of every ``every``-th update and of the last; subclasses implement
    :meth:`open`, :meth:`write` and :meth:`close`. ``every=None``: :func:`default_log_every`."""

    def __init__(self, every: int | None = None):
        if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
            raise ValueError(f"{type(self).__name__}: every must be an integer >= 1 (or None for the default), "
                             f"got {every!r}")
        self.every = every
        self.interval = every or 1  # the interval in use, set when the run starts
        self.active = False

    def on_fit_start(self, loop: TrainLoop) -> None:
        # the loop's own interval (that of metrics.jsonl) when it has one, else the same rule
        self.interval = self.every or int(getattr(loop, "log_every", None) or default_log_every(loop.settings.steps))
        self.active = loop.sharding.is_main
        # the loop stops for this logger only at the steps it writes (and the last)
        self.record_every = self.interval if self.active else 0
        if self.active:
            self.open(loop)

    def on_step(self, loop: TrainLoop, record: dict[str, Any]) -> None:
        if self.active and (loop.step % self.interval == 0 or loop.step == loop.settings.steps):
            self.write(int(record.get("step", loop.step)), scalars(record))

    def on_fit_end(self, loop: TrainLoop) -> None:
        if self.active:
            self.close()
            self.active = False

    def open(self, loop: TrainLoop) -> None:
        """Prepare to write (``loop.step`` is the step the run starts from)."""

    def write(self, step: int, values: dict[str, float]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        """Flush and release what :meth:`open` took."""


def _run_path(loop: TrainLoop, path: str | os.PathLike | None, default: str, what: str) -> Path:
    if path is not None:
        return Path(path)
    if loop.run_dir is None:
        raise ValueError(f"{what}: give a path, or train into a run directory")
    return loop.run_dir / default


class CSVLogger(MetricLogger):
    """Metrics as CSV rows: ``step`` then one column per metric (``RUN_DIR/metrics.csv`` when
    ``path`` is ``None``). A metric that first appears later widens the header (the file is
    rewritten once); a row lacking a metric leaves its cell empty."""

    def __init__(self, path: str | os.PathLike | None = None, every: int | None = None):
        super().__init__(every)
        self.path = None if path is None else Path(path)
        self.columns: list[str] = []
        self._file = None
        self._writer: csv.DictWriter | None = None

    def open(self, loop: TrainLoop) -> None:
        self.path = _run_path(loop, self.path, CSV_NAME, "CSVLogger")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        rows: list[dict[str, str]] = []
        if loop.step > 0 and self.path.is_file():  # resume: keep the rows up to the resumed step
            with self.path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                self.columns = [c for c in (reader.fieldnames or []) if c != "step"]
                rows = [r for r in reader if r.get("step", "").isdigit() and int(r["step"]) <= loop.step]
        self._rewrite(rows)

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        """Write the header and ``rows`` atomically, then keep the file open for appending."""
        if self._file is not None:
            self._file.close()
        header = ["step", *self.columns]

        def write(f) -> None:
            import io

            text = io.StringIO()
            writer = csv.DictWriter(text, header, restval="", extrasaction="ignore", lineterminator="\n")
            writer.writeheader()
            writer.writerows(rows)
            f.write(text.getvalue().encode("utf-8"))

        atomic_write(self.path, write)
        self._file = self.path.open("a", newline="", encoding="utf-8")
        self._writer = csv.DictWriter(self._file, header, restval="", lineterminator="\n")

    def write(self, step: int, values: dict[str, float]) -> None:
        new = [k for k in values if k not in self.columns]
        if new:  # widen the header: read back what is written, rewrite with the new columns
            self._file.close()
            self._file = None
            with self.path.open(newline="", encoding="utf-8") as f:
                rows = list(csv.DictReader(f))
            self.columns += new
            self._rewrite(rows)
        self._writer.writerow({"step": step, **{k: repr(v) if math.isfinite(v) else str(v) for k, v in values.items()}})
        self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        self._file, self._writer = None, None


class TensorBoardLogger(MetricLogger):
    """Metrics as TensorBoard scalars, one tag per metric (``RUN_DIR/tensorboard/`` when
    ``log_dir`` is ``None``); view with ``tensorboard --logdir RUN_DIR``. Raises ``ImportError``
    with the install command when the ``tensorboard`` package is missing."""

    def __init__(self, log_dir: str | os.PathLike | None = None, every: int | None = None):
        super().__init__(every)
        require_tensorboard()
        self.log_dir = None if log_dir is None else Path(log_dir)
        self._writer = None

    def open(self, loop: TrainLoop) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = _run_path(loop, self.log_dir, TENSORBOARD_DIR, "TensorBoardLogger")
        # on resume, events after the resumed step (written before a stop) are purged
        self._writer = SummaryWriter(str(self.log_dir), purge_step=loop.step + 1 if loop.step > 0 else None)

    def write(self, step: int, values: dict[str, float]) -> None:
        for name, value in values.items():
            self._writer.add_scalar(name, value, global_step=step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = None


def require_tensorboard() -> None:
    """Raise ``ImportError`` naming the install command when ``tensorboard`` is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise ImportError("TensorBoard logging needs the tensorboard package: pip install 'ebmlab[tensorboard]' "
                          "(or pip install tensorboard), or use --log csv") from None


def make_logger(kind: str, run_dir: str | os.PathLike | None = None, every: int | None = None) -> MetricLogger | None:
    """The logger of ``--log KIND`` (``csv``, ``tensorboard`` or ``none`` -> ``None``), writing
    into ``run_dir`` (default: the loop's run directory)."""
    if kind not in LOGGERS:
        raise ValueError(f"log must be one of {', '.join(LOGGERS)}, got {kind!r}")
    if kind == "none":
        return None
    base = None if run_dir is None else Path(run_dir)
    if kind == "csv":
        return CSVLogger(None if base is None else base / CSV_NAME, every)
    return TensorBoardLogger(None if base is None else base / TENSORBOARD_DIR, every)


__all__ = ["CSVLogger", "LOGGERS", "MAX_ROWS", "MetricLogger", "TensorBoardLogger", "default_log_every", "make_logger",
           "require_tensorboard", "scalars"]
