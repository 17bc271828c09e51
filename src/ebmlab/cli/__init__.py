"""The ``ebmlab`` command: ``ebmlab train|sample|evaluate|report``.

Each subcommand lives in its own module and is thin: parse -> config -> one library call ->
files. Input errors print one line and exit with code 2.
"""

from __future__ import annotations

import importlib

import click

from ebmlab.cli.common import OneLineGroup, UserError

_SUBCOMMANDS = ("sample", "train", "evaluate", "report", "launch")


@click.group(cls=OneLineGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="ebmlab")
def main() -> None:
    """Energy-based models: train, sample, evaluate and report."""
    from ebmlab import distributed as D

    click.get_current_context().meta["ebmlab.group_before"] = D.is_initialized()


@main.result_callback()
def _leave_process_group(*_args, **_kwargs) -> None:
    """After a command that succeeded, the torchrun ranks leave the group it joined together
    (a group the caller had joined before is left to the caller)."""
    from ebmlab import distributed as D

    if not click.get_current_context().meta.get("ebmlab.group_before", True):
        D.destroy_distributed(synchronize=True)


for _name in _SUBCOMMANDS:
    try:
        _module = importlib.import_module(f"{__name__}.{_name}")
    except ModuleNotFoundError as _err:  # a subcommand not yet present in this build
        if _err.name != f"{__name__}.{_name}":
            raise
        continue
    main.add_command(_module.command, name=_name)

__all__ = ["main", "UserError"]
