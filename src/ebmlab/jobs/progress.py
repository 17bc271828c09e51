"""Progress bars for long runs: tqdm driven by the callbacks that the library's loops take.

The library never prints: :func:`ebmlab.samplers.sample` and :func:`ebmlab.training.fit` call
``callback(...)`` after every step, and these helpers turn that into a bar on the terminal.
"""

from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator


@contextlib.contextmanager
def progress_bar(total: int | None, desc: str, enabled: bool = True, initial: int = 0,
                 leave: bool = False, unit: str = "step") -> Iterator[Callable[..., None] | None]:
    """A callback ``(*args) -> None`` that advances a tqdm bar by one per call, or ``None`` when
    ``enabled`` is false or there is nothing to do; the bar is closed on exit. ``total=None``: a
    count without an end (an adaptive schedule's temperatures)."""
    if not enabled or (total is not None and total <= initial):
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave, dynamic_ncols=True)

    def advance(*_: Any) -> None:
        bar.update(1)

    try:
        yield advance
    finally:
        bar.close()


__all__ = ["progress_bar"]
