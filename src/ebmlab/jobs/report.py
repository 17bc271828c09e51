"""``ebmlab report``: one page that shows training runs and compares them.

:func:`load_run_summary` reads what a run directory holds — ``config.toml`` (by section),
``metrics.jsonl``, its pictures (every ``*.png``), and ``evaluation.json`` when present (the
JSON of ``ebmlab evaluate --energy RUN --json``, which saves it there) — and
:func:`write_report` renders one page for one or more runs (:mod:`ebmlab.jobs.report_html`):

* ``html``: one self-contained file, every picture inlined as a ``data:`` URI and the style in
  the page, so it opens anywhere without network access;
* ``md``: Markdown, the run's pictures linked by paths relative to the report, the metric curves
  written beside it into ``REPORT_files/``.

Per run: its settings (a table per section), the curves of its metrics (smoothed, the raw values
faint behind), its pictures and its evaluation. With several runs, first a table comparing them
(steps, final loss, wall time, evaluation figures, and the settings that differ, which are also
highlighted in each run's tables) and their loss curves on one plot.

A page carries :data:`MARKER`; an existing ``--out`` file without it is never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

from ebmlab.atomic import atomic_write
from ebmlab.jobs import report_html
from ebmlab.jobs.report_runs import EVALUATION_NAME, MARKER, load_runs

FORMATS = ("html", "md")


def report_format(out: str | os.PathLike | None, fmt: str | None) -> str:
    """``fmt``, or the format of ``out``'s suffix (``.md`` -> md), else html."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"report: format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    return "md" if out is not None and Path(out).suffix.lower() in (".md", ".markdown") else "html"


def check_overwrite(out: Path) -> None:
    """Refuse (``ValueError``) to replace an existing file that is not a report (no :data:`MARKER`)."""
    if out.is_dir():
        raise ValueError(f"report: --out {out} is a directory; name a file such as {out / 'report.html'}")
    if out.exists():
        with out.open("rb") as f:
            head = f.read(4096).decode("utf-8", errors="replace")
        if MARKER not in head:
            raise ValueError(f"report: --out {out} exists and is not an ebmlab report; it is left as it is: "
                             "choose another path or remove it")


def write_report(run_dirs: Sequence[str | os.PathLike], out: str | os.PathLike | None = None,
                 fmt: str | None = None) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default ``report.html`` / ``report.md``) in
    ``fmt`` (default: from the suffix, else html); returns the path. A previous report at
    ``out`` is replaced; any other file is left alone (``ValueError``)."""
    fmt = report_format(out, fmt)
    out = Path(out) if out is not None else Path(f"report.{fmt}")
    check_overwrite(out)
    if not out.parent.is_dir():
        raise ValueError(f"report: the folder of --out {out} does not exist")
    runs = load_runs(run_dirs)
    text = report_html.render_html(runs) if fmt == "html" else report_html.render_markdown(runs, out)
    return atomic_write(out, lambda f: f.write(text.encode("utf-8")))


__all__ = ["EVALUATION_NAME", "FORMATS", "MARKER", "check_overwrite", "load_runs", "report_format", "write_report"]
