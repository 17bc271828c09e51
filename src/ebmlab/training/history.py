"""A run's per-update records, ``RUN_DIR/metrics.jsonl``: one JSON object per line.

The loop appends one record per update (``step``, the objective's metrics, ``lr``,
``grad_norm``, ``time``); on resume the file is cut back to the checkpoint's step, so each step
appears exactly once however often a run was stopped.
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


__all__ = ["METRICS_NAME", "read_metrics", "truncate_metrics"]
