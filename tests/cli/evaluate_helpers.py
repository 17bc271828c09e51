"""Shared helpers of the ``ebmlab evaluate`` CLI tests."""

from __future__ import annotations

import json

from click.testing import CliRunner

from ebmlab.cli import main


def run(*args):
    """Invoke ``ebmlab evaluate ARGS`` in-process."""
    return CliRunner().invoke(main, ["evaluate", *map(str, args)])


def run_json(*args) -> dict:
    """``ebmlab evaluate ARGS --json``: exit 0 and exactly one JSON object on stdout."""
    result = run(*args, "--json")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    assert len(lines) == 1, result.stdout  # exactly one JSON object
    return json.loads(lines[0])
