"""The pages of :mod:`ebmlab.jobs.report`: self-contained HTML, or Markdown with linked pictures.

HTML: the style is in the page and every picture a ``data:image/png;base64`` URI, so the file
needs nothing else (no network, no neighbouring files). Markdown: the run's pictures are linked
by paths relative to the report; the curves drawn for the report go into ``REPORT_files/``
beside it (a folder the report owns: marked by a ``.ebmlab-report`` file, and refused when it
exists without one). Both start with :data:`~ebmlab.jobs.report_runs.MARKER`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
from pathlib import Path
from typing import Any, Sequence

from ebmlab.atomic import atomic_write
from ebmlab.jobs.report_runs import (
    MARKER, RunSummary, comparison_curves_png, comparison_table, differing_keys, format_value, metric_curves_png,
    settings_table,
)

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2em auto; max-width: 1200px;
       padding: 0 1em; color: #222; line-height: 1.4; }
h1 { margin-bottom: 0.2em; } h2 { border-bottom: 2px solid #ddd; padding-bottom: 0.2em; margin-top: 2em; }
h3 { margin-bottom: 0.4em; } .meta { color: #666; font-size: 0.9em; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.differs { background: #fff1a8; font-weight: 600; }
.sections { display: flex; flex-wrap: wrap; align-items: flex-start; gap: 0 1.5em; }
.sections table caption { text-align: left; font-weight: 600; padding-bottom: 0.2em; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.85em; }
.legend { font-size: 0.85em; color: #555; }
"""


def _e(value: Any) -> str:
    return html.escape(format_value(value) if not isinstance(value, str) else value)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any, cls: str = "") -> str:
    numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
    classes = " ".join(c for c in (cls, "num" if numeric else "") if c)
    return f"<td{f' class={chr(34)}{classes}{chr(34)}' if classes else ''}>{_e(value)}</td>"


def _figure(src: str, caption: str, alt: str) -> str:
    return (f'<figure><img src="{src}" alt="{html.escape(alt)}">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>")


def _stamp() -> str:
    return _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")


def render_html(runs: Sequence[RunSummary]) -> str:
    """One self-contained HTML page for ``runs`` (see :mod:`ebmlab.jobs.report`)."""
    differ = set(differing_keys(runs))
    title = f"ebmlab report: {runs[0].name}" if len(runs) == 1 else f"ebmlab report: {len(runs)} runs"
    parts = [MARKER, "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>",
             f"<h1>{html.escape(title)}</h1>",
             f'<p class="meta">Written {html.escape(_stamp())} by <code>ebmlab report</code> from '
             + ", ".join(f'<a href="#run-{i}"><code>{html.escape(str(r.path))}</code></a>' for i, r in enumerate(runs))
             + ".</p>"]
    if len(runs) > 1:
        columns, rows = comparison_table(runs)
        parts.append('<h2 id="comparison">Comparison</h2>')
        parts.append('<p class="legend">Final loss: the mean over the last tenth of the logged updates.</p>')
        parts.append('<table class="comparison"><thead><tr>' + "".join(f"<th>{html.escape(c)}</th>" for c in columns)
                     + "</tr></thead><tbody>")
        for i, row in enumerate(rows):
            parts.append(f'<tr><td><a href="#run-{i}">{html.escape(row[0])}</a></td>'
                         + "".join(_cell(v) for v in row[1:]) + "</tr>")
        parts.append("</tbody></table>")
        columns, rows = settings_table(runs)
        if rows:
            parts.append('<h3>Settings that differ</h3><p class="legend">Also highlighted in each run\'s settings.</p>'
                         '<table class="settings-differ"><thead><tr>'
                         + "".join(f"<th>{html.escape(c)}</th>" for c in columns) + "</tr></thead><tbody>")
            parts += ["<tr><th>" + html.escape(row[0]) + "</th>" + "".join(_cell(v, "differs") for v in row[1:])
                      + "</tr>" for row in rows]
            parts.append("</tbody></table>")
        else:
            parts.append('<p class="legend">The runs have the same settings.</p>')
        png = comparison_curves_png(runs)
        if png is not None:
            parts.append(_figure(_data_uri(png), "the runs' curves on shared axes", "comparison curves"))
    for i, run in enumerate(runs):
        parts.append(f'<h2 id="run-{i}">{html.escape(run.name)}</h2>')
        facts = [f"<code>{html.escape(str(run.path))}</code>", f"{format_value(run.steps)} steps"]
        if run.wall_time is not None:
            facts.append(f"{run.wall_time:.1f} s")
        if run.final_loss is not None:
            facts.append(f"final loss {run.final_loss:.4g}")
        parts.append(f'<p class="meta">{" · ".join(facts)}</p>')
        if run.config:
            parts.append('<h3>Settings</h3><div class="sections">')
            for section, table in run.config.items():
                rows_html = "".join(
                    f'<tr{" class=" + chr(34) + "differs" + chr(34) if f"{section}.{k}" in differ else ""}>'
                    f"<th>{html.escape(k)}</th>{_cell(v)}</tr>" for k, v in table.items())
                parts.append(f"<table><caption>[{html.escape(section)}]</caption>"
                             f"{rows_html or '<tr><td>(empty)</td></tr>'}</table>")
            parts.append("</div>")
        if run.evaluation:
            parts.append('<h3>Evaluation</h3><p class="legend">From <code>evaluation.json</code> '
                         "(<code>ebmlab evaluate --energy RUN --json</code>).</p><table>")
            parts += [f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in run.evaluation.items()]
            parts.append("</table>")
        if run.classification:
            parts.append('<h3>Classification</h3><p class="legend">Held-out figures from <code>classification.json'
                         "</code> (ECE over 15 bins).</p><table>")
            parts += [f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in run.classification.items()]
            parts.append("</table>")
        png = metric_curves_png(run)
        if png is not None:
            parts.append("<h3>Metrics</h3>")
            parts.append(_figure(_data_uri(png), f"from {run.path / 'metrics.jsonl'}", f"{run.name} metrics"))
        if run.pictures:
            parts.append("<h3>Pictures</h3>")
            for picture in run.pictures:
                parts.append(_figure(_data_uri(picture.read_bytes()), picture.name, f"{run.name} {picture.name}"))
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _md(value: Any) -> str:
    return format_value(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|",
            *["| " + " | ".join(row) + " |" for row in rows], ""]


ASSETS_MARKER = ".ebmlab-report"


def _assets_dir(out: Path) -> Path:
    """``REPORT_files/`` beside ``out``: created, or reused when an earlier report made it."""
    folder = out.with_name(out.stem + "_files")
    if folder.exists() and not (folder / ASSETS_MARKER).is_file():
        raise ValueError(f"report: {folder} exists and was not written by ebmlab report; it is left as it is: "
                         "choose another --out or remove it")
    folder.mkdir(exist_ok=True)
    (folder / ASSETS_MARKER).write_text("pictures of an ebmlab report\n", encoding="utf-8")
    return folder


def render_markdown(runs: Sequence[RunSummary], out: Path) -> str:
    """Markdown for ``runs``, to be written at ``out``: pictures linked relative to ``out``; the
    report's own curves written into ``out``'s ``_files`` folder (see the module's note)."""
    differ = differing_keys(runs)
    folder = _assets_dir(out)
    base = out.parent.resolve()

    def link(path: Path) -> str:
        return Path(os.path.relpath(path.resolve(), base)).as_posix()

    def asset(name: str, png: bytes) -> str:
        path = folder / name
        atomic_write(path, lambda f: f.write(png))
        return link(path)

    title = f"ebmlab report: {runs[0].name}" if len(runs) == 1 else f"ebmlab report: {len(runs)} runs"
    lines = [MARKER, f"# {title}", "", f"Written {_stamp()} by `ebmlab report`.", ""]
    if len(runs) > 1:
        columns, rows = comparison_table(runs)
        lines += ["## Comparison", "", "Final loss: the mean over the last tenth of the logged updates.", ""]
        lines += _md_table(columns, [[_md(v) for v in row] for row in rows])
        columns, rows = settings_table(runs)
        if rows:
            lines += ["### Settings that differ", "", "Also in **bold** in each run's settings.", ""]
            lines += _md_table(columns, [[f"`{row[0]}`", *[_md(v) for v in row[1:]]] for row in rows])
        else:
            lines += ["The runs have the same settings.", ""]
        png = comparison_curves_png(runs)
        if png is not None:
            lines += [f"![the runs compared]({asset('comparison.png', png)})", ""]
    for i, run in enumerate(runs):
        lines += [f"## {run.name}", "", f"`{run.path}` · {format_value(run.steps)} steps"
                  + (f" · {run.wall_time:.1f} s" if run.wall_time is not None else "")
                  + (f" · final loss {run.final_loss:.4g}" if run.final_loss is not None else ""), ""]
        if run.config:
            lines += ["### Settings", ""]
            for section, table in run.config.items():
                rows = [[f"**{k}**" if f"{section}.{k}" in differ else k, _md(v)] for k, v in table.items()]
                lines += [f"`[{section}]`", ""] + _md_table(["key", "value"], rows or [["(empty)", ""]])
        if run.evaluation:
            lines += ["### Evaluation", ""] + _md_table(["figure", "value"],
                                                       [[str(k), _md(v)] for k, v in run.evaluation.items()])
        if run.classification:
            lines += ["### Classification", ""] + _md_table(["figure", "value"],
                                                           [[str(k), _md(v)] for k, v in run.classification.items()])
        png = metric_curves_png(run)
        if png is not None:
            lines += ["### Metrics", "", f"![{run.name} metrics]({asset(f'run{i}-metrics.png', png)})", ""]
        if run.pictures:
            lines += ["### Pictures", ""]
            lines += [f"![{run.name} {p.name}]({link(p)})\n\n*{p.name}*\n" for p in run.pictures]
    return "\n".join(lines) + "\n"


__all__ = ["ASSETS_MARKER", "STYLE", "render_html", "render_markdown"]
