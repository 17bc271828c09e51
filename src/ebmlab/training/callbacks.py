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

    An exception raised in a hook (e.g. ``KeyboardInterrupt``) stops the run; the last
    checkpoint stays intact.
    """

    def on_fit_start(self, loop: "TrainLoop") -> None:
        """Before the first update of this call (``loop.step`` > 0 when resuming)."""

    def on_record(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        """After every update, before the record is logged or checkpointed: add entries to
        ``record`` here (held-out metrics); they then reach ``metrics.jsonl`` and :meth:`on_step`."""

    def on_step(self, loop: "TrainLoop", record: dict[str, Any]) -> None:
        """After every update (after any checkpoint), with the update's metrics record."""

    def on_fit_end(self, loop: "TrainLoop") -> None:
        """After the last update and the final checkpoint."""


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


__all__ = ["Callback", "as_callbacks"]
