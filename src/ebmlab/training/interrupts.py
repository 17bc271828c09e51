"""Stopping a run cleanly on SIGINT or SIGTERM: finish the update, checkpoint, then stop.

While the training loop runs (in the main thread), :func:`deferred_signals` replaces the
handlers of SIGINT and SIGTERM with ones that only record the signal; the loop checks the record
after each update, writes a checkpoint at the current step (atomically) and raises
:class:`TrainingInterrupted`, whose ``exit_status`` is the shell convention 128 + signal number
(130 for SIGINT, 143 for SIGTERM). A second SIGINT while the first is pending interrupts at once
(``KeyboardInterrupt``), as a person pressing Ctrl-C twice expects. The previous handlers are
restored when the loop ends.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path
from typing import Iterator


class TrainingInterrupted(KeyboardInterrupt):
    """The run stopped on a signal after checkpointing ``step`` in ``run_dir`` (if any)."""

    def __init__(self, signum: int, step: int, run_dir: Path | None):
        self.signum, self.step, self.run_dir = int(signum), int(step), run_dir
        self.signal_name = signal.Signals(self.signum).name
        where = f"; the checkpoint at step {step} is in {run_dir}" if run_dir is not None else ""
        super().__init__(f"training stopped by {self.signal_name} at step {step}{where}")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


class SignalRecord:
    """The first deferred signal received (``None`` while none)."""

    def __init__(self) -> None:
        self.signum: int | None = None

    @property
    def received(self) -> bool:
        return self.signum is not None


@contextlib.contextmanager
def deferred_signals(enabled: bool = True, signums: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM)
                     ) -> Iterator[SignalRecord]:
    """Record SIGINT/SIGTERM instead of acting on them, inside the ``with`` block (main thread only)."""
    record = SignalRecord()
    if not enabled or threading.current_thread() is not threading.main_thread():
        yield record
        return

    def handler(signum, frame):
        if record.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        record.signum = signum

    previous = {s: signal.getsignal(s) for s in signums}
    for s in signums:
        signal.signal(s, handler)
    try:
        yield record
    finally:
        for s, h in previous.items():
            signal.signal(s, h if h is not None else signal.SIG_DFL)


__all__ = ["SignalRecord", "TrainingInterrupted", "deferred_signals"]
