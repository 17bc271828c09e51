"""Hooks of the training loop: :class:`Callback` and the adapter for plain functions.

Progress bars, pictures, loggers and held-out evaluation are callbacks; the loop itself prints
and draws nothing.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable

# Hooks receive the running ebmlab.training.loop.TrainLoop (annotated by name: the loop imports
# this module, not the other way round).


class Callback:
    """Hooks of :class:`TrainLoop`; override any. A plain function ``f(step, record, loop)`` passed
    as a callback is called after every update (like :meth:`on_step`).

    ``record_every`` says after which updates :meth:`on_record` and :meth:`on_step` run: ``1``
    after every update, ``k`` after every ``k``-th update and the last, ``0`` never. Left at
    ``None`` it is 1 when the class overrides either hook and 0 otherwise. The loop runs the
    updates in between without stopping (the lean RBM path does them in one call), so a larger
    interval makes a cheap callback cheaper still. A record always holds the metrics averaged
    over the updates since the last logged step (see :class:`~ebmlab.training.history.MetricWindow`).

    An exception raised in a hook (e.g. ``KeyboardInterrupt``) stops the run; the last
    checkpoint stays intact.
    """

    record_every: int | None = None

    def on_fit_start(self, loop: "TrainLoop") -> None:
        """Before the first update of this call (``loop.step`` > 0 when resuming)."""

    def on_record(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        """After every ``record_every``-th update, before the record is logged or checkpointed: add
        entries to ``record`` here (held-out metrics); they then reach ``metrics.jsonl`` (when the
        step is logged) and :meth:`on_step`."""

    def on_step(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        """After every ``record_every``-th update (after any checkpoint), with the step's record."""

    def on_fit_end(self, loop: "TrainLoop") -> None:
        """After the last update and the final checkpoint."""

    def on_notice(self, loop: "TrainLoop", message: str) -> None:
        """Once, at the start of a run, for each note on how it is trained (e.g. that an RBM takes
        the general autograd path, and why). The library prints nothing; the CLI shows these."""


def record_interval(callback: Callback) -> int:
    """The callback's ``record_every`` resolved (see :class:`Callback`): ``0`` (never), ``1`` or ``k``."""
    every = getattr(callback, "record_every", None)
    if every is None:
        kind = type(callback)
        return int(kind.on_record is not Callback.on_record or kind.on_step is not Callback.on_step)
    every = int(every)
    if every < 0:
        raise ValueError(f"{type(callback).__name__}: record_every must be >= 0, got {every}")
    return every


class _FunctionCallback(Callback):
    def __init__(self, fn: Callable[[int, dict, "TrainLoop"], None]):
        self.fn = fn

    def on_step(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        self.fn(loop.step, record, loop)


def as_callbacks(callbacks: Iterable[Callback | Callable] | Callback | Callable | None) -> list[Callback]:
    if callbacks is None:
        return []
    if isinstance(callbacks, Callback) or callable(callbacks):
        callbacks = [callbacks]
    return [c if isinstance(c, Callback) else _FunctionCallback(c) for c in callbacks]


__all__ = ["Callback", "as_callbacks", "record_interval"]
