"""``ebmlab report RUN [RUN ...]``: one page that shows runs and compares them.

Thin: run directories -> :func:`ebmlab.jobs.report.write_report` -> the path written. HTML (the
default) is one self-contained file; ``--format md`` (or ``--out FILE.md``) Markdown with the
pictures linked. An existing ``--out`` file that is not an ebmlab report is never overwritten.
Exit status: 0 ok; 2 bad input (not a run directory, an --out that is not a report).
"""

from __future__ import annotations

import click

from ebmlab.cli.common import OneLineErrors, user_errors


@click.command(cls=OneLineErrors, help="Write one page showing training runs: each run's settings, metric curves, "
                                        "pictures and saved evaluation (ebmlab evaluate --energy RUN --json); with "
                                        "several runs, a table comparing them with the settings that differ "
                                        "highlighted.",
               epilog="Exit status: 0 ok; 2 bad input (not a run directory, an --out file that is not a report).")
@click.argument("runs", nargs=-1, required=True, metavar="RUN_DIR [RUN_DIR ...]")
@click.option("--out", default=None, metavar="FILE",
              help="The page to write [default: report.html, or report.md with --format md]; a previous report "
                   "there is replaced, any other file refused.")
@click.option("--format", "fmt", type=click.Choice(["html", "md"]), default=None,
              help="html: one self-contained file (pictures inlined); md: Markdown, pictures linked relative to "
                   "the report [default: from --out's suffix, else html].")
@user_errors
def command(runs, out, fmt) -> None:
    from ebmlab.jobs.report import write_report

    path = write_report(runs, out, fmt)
    click.echo(f"wrote {path} ({len(runs)} run{'s' if len(runs) != 1 else ''})")
