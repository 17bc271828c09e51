"""A run's logged records, ``RUN_DIR/metrics.jsonl``: one JSON object per line, and their window.

The loop appends one record every ``log_every`` updates and at the last (``step``, the
objective's metrics, ``lr``, ``grad_norm``, ``time``); on resume the file is cut back to the
checkpoint's step, so each step appears exactly once however often a run was stopped.

The logging window of a record at step ``t`` is the updates since the previous logged step
``t₀`` (or the run's start), ``(t₀, t]``. Each metric of the record, ``grad_norm`` included, is
its mean over the window,

    m̄(t) = (1 / |window|) Σ_{u ∈ (t₀, t]} m(u),

summed in update order in double precision (:class:`MetricWindow`); ``lr`` and ``time`` are
those of update ``t``. With ``log_every = 1`` a record holds the update's own values. The
window's partial sums are part of the checkpoint, so a resumed run logs the same records.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-step records of ``RUN_DIR/metrics.jsonl`` (an empty list when absent)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line:
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break  # a line cut short by an interruption ends the readable history
    return records


def truncate_metrics(path: Path, step: int) -> None:
    """Keep the records of ``path`` up to ``step`` (the checkpoint's), dropping any later ones."""
    if not path.exists():
        return
    kept = [json.dumps(r) for r in read_metrics(path.parent) if int(r.get("step", 0)) <= step]
    text = "".join(line + "\n" for line in kept)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


_PLAIN_KEYS: set[str] = set()  # keys that JSON writes as they are (no escapes)


def record_line(record: dict[str, Any]) -> str:
    """``json.dumps(record)``, written directly when every value is a finite float or an int.

    Same text as :func:`json.dumps` (floats by ``repr``); about three times faster for the
    loop's records, which are all numbers. Anything else goes to :func:`json.dumps`.
    """
    parts = []
    for k, v in record.items():
        if k not in _PLAIN_KEYS:
            if not isinstance(k, str) or json.dumps(k) != f'"{k}"':
                return json.dumps(record)
            _PLAIN_KEYS.add(k)
        kind = type(v)
        if kind is float and v - v == 0.0:  # finite (NaN and ±inf give NaN)
            parts.append(f'"{k}": {v!r}')
        elif kind is int:
            parts.append(f'"{k}": {v}')
        else:
            return json.dumps(record)
    return "{" + ", ".join(parts) + "}"


class MetricWindow:
    """Running sums of per-update metrics since the last logged step (see the module docstring).

    ``add({name: value})`` once per update; ``mean()`` the window's averages (a metric missing
    from some updates is averaged over those that report it); ``reset()`` after logging.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def add(self, values: dict[str, float]) -> None:
        sums, counts = self.sums, self.counts
        for k, v in values.items():
            if k in sums:
                sums[k] += v
                counts[k] += 1
            else:
                sums[k], counts[k] = 0.0 + v, 1

    def add_columns(self, columns: dict) -> None:
        """``add`` of each row of equal-length float64 numpy columns, in one call per metric: the
        running sum continues with numpy's sequential ``add.accumulate``, so it ends on the same
        double as row-by-row ``add``."""
        import numpy as np

        sums, counts = self.sums, self.counts
        for k, col in columns.items():
            if len(col):
                start = sums.get(k, 0.0)
                sums[k] = float(np.add.accumulate(np.concatenate(([start], col)))[-1])
                counts[k] = counts.get(k, 0) + len(col)

    def mean(self) -> dict[str, float]:
        return {k: s / self.counts[k] for k, s in self.sums.items()}

    def reset(self) -> None:
        self.sums, self.counts = {}, {}

    def state_dict(self) -> dict[str, Any]:
        return {"sums": dict(self.sums), "counts": dict(self.counts)}

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        state = state or {}
        self.sums = {k: float(v) for k, v in state.get("sums", {}).items()}
        self.counts = {k: int(v) for k, v in state.get("counts", {}).items()}


__all__ = ["METRICS_NAME", "MetricWindow", "read_metrics", "record_line", "truncate_metrics"]
