"""Shared CLI plumbing: one-line errors with exit code 2 (from the library's input errors and
from click's usage errors)."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import click


class UserError(click.ClickException):
    """A problem with the user's input: printed as one line ``ebmlab: error: ...``, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"ebmlab: error: {self.format_message()}", err=True, file=file)


class OneLineErrors(click.Command):
    """A command whose usage errors (missing option, bad choice, non-integer count...) are one
    line naming ``--help``, exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as err:
            raise UserError(f"{err.format_message()} (see 'ebmlab {ctx.info_name} --help')") from err


def user_errors(func: Callable | None = None, *, terms: Callable[[str], str] | None = None) -> Callable:
    """Turn the library's input errors into :class:`UserError` (no traceback, exit 2): the
    first line of the message (a ``KeyError`` as ``missing key ...``), put in the command's
    ``terms`` (e.g. :func:`ebmlab.jobs.sampling.in_option_terms`) when given.

    Use as ``@user_errors`` or ``@user_errors(terms=...)``.
    """
    if func is None:
        return functools.partial(user_errors, terms=terms)

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        try:
            return func(*args, **kwargs)
        except click.ClickException:
            raise
        except (ValueError, TypeError, FileNotFoundError, PermissionError, IsADirectoryError,
                NotADirectoryError, ImportError, RuntimeError, KeyError) as err:
            message = str(err) if str(err) else type(err).__name__
            if isinstance(err, KeyError):
                message = f"missing key {message}"
            message = message.splitlines()[0] if message else type(err).__name__
            raise UserError(terms(message) if terms is not None else message) from err

    return wrapper


def is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only there)."""
    return sys.stderr.isatty()
