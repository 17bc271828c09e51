"""``ebmlab launch``: start an ebmlab command on several processes through torchrun, quietly.

``ebmlab launch --nproc-per-node 2 train --data 8gaussians --out runs/ddp`` is
``torchrun --nproc-per-node 2 --no-python ebmlab train ...`` (every torchrun option before the
subcommand is passed on: ``--nnodes``, ``--node-rank``, ``--master-addr``, ``--master-port``,
``--standalone``...). The difference is what a person sees when a rank fails: ebmlab's ranks
print their one-line error once (rank 0), and the launcher adds no traceback of its own, exiting
with the failing rank's status (2 for bad input). torchrun itself stays the launcher.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import click

from ebmlab.cli.common import UserError


def _split(args: list[str]) -> tuple[list[str], list[str]]:
    """``(torchrun options, the ebmlab subcommand and its options)``: the subcommand is the first
    argument that is not an option or an option's value."""
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    takes_value = {opt for action in parser._actions if action.nargs != 0 for opt in action.option_strings}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("-"):
            return args[:i], args[i:]
        i += 1 if ("=" in arg or arg not in takes_value) else 2
    return args, []


@click.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True,
                                 "help_option_names": ["-h", "--help"]},
               help="Run an ebmlab command on several processes with torchrun: ebmlab launch [TORCHRUN OPTIONS] "
                    "COMMAND [OPTIONS], e.g. ebmlab launch --nproc-per-node 2 train --data 8gaussians.")
@click.pass_context
def command(ctx: click.Context) -> None:
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    launcher, rest = _split(list(ctx.args))
    if not rest:
        raise UserError("launch: name the ebmlab command to run, e.g. 'ebmlab launch --nproc-per-node 2 train ...'")
    if rest[0] not in ("train", "sample", "evaluate"):
        raise UserError(f"launch: {rest[0]!r} is not a command that runs on several processes; use train, sample "
                        f"or evaluate")
    exe = str(Path(sys.argv[0]).resolve()) if Path(sys.argv[0]).name == "ebmlab" else "ebmlab"
    try:
        args = parse_args([*launcher, "--no-python", exe, *rest])
    except SystemExit:
        raise UserError(f"launch: bad torchrun options {' '.join(launcher)!r} (see 'torchrun --help')") from None
    for name in ("torch.distributed.elastic", "torch.distributed.run", "torch.distributed.launcher"):
        logging.getLogger(name).setLevel(logging.CRITICAL)  # the ranks say what went wrong
    try:
        run(args)
    except ChildFailedError as err:
        codes = [failure.exitcode for failure in err.failures.values()]
        raise SystemExit(next((c for c in codes if c and c > 0), 1)) from None


__all__ = ["command"]
