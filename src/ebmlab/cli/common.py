"""Shared CLI plumbing: one-line errors with exit code 2 (from the library's input errors and
from click's usage errors)."""

from __future__ import annotations

import functools
import os
import re
import sys
import warnings
from typing import Any, Callable

import click

from ebmlab.energy.errors import EnergyRaisedError
from ebmlab.jobs.sampling import OS_REASONS, format_bytes
from ebmlab.jobs.threads import LEAN_THRESHOLD

#: torch's note when ``weights_only`` unpickles a file of another pickle protocol (an old-style
#: checkpoint): the loader's own one-line error follows, so the note is noise.
TORCH_PICKLE_NOTE = r"Detected pickle protocol"
#: ``--threads`` above this is refused (torch takes a C int; more threads than this only thrash).
MAX_THREADS = 1024
_INT64 = 2**63
#: ``--threads`` of every command; ``{size}`` names what counts as the problem size.
LEAN_THREADS_HELP = ("CPU threads for torch (0 = torch's default) [default: one thread when {size} x the energy's "
                     "multiply-adds per example is below " + f"{LEAN_THRESHOLD:.0e}".replace("+", "") + ", which is faster on small problems, else torch's default].")
#: ``--support`` of sample and evaluate.
SUPPORT_HELP = ("For a module that declares no support: binary ({0, 1}) or categorical:K ({0..K-1}); "
                "then gibbs and the discrete samplers apply. A module may declare it itself: support = \"binary\", "
                "or support = \"categorical\" with num_states = K.")


def one_line(text: str) -> str:
    """``text`` with its line breaks (and the indentation after them) replaced by single spaces."""
    return re.sub(r"\s*\n\s*", " ", str(text)).strip()


def _rank() -> int:
    """This process's rank under torchrun (from the group, else from ``RANK``); 0 otherwise."""
    from ebmlab import distributed as D

    if D.is_initialized():
        return D.rank()
    try:
        return int(os.environ.get("RANK") or 0) if int(os.environ.get("WORLD_SIZE") or 1) > 1 else 0
    except ValueError:
        return 0


class UserError(click.ClickException):
    """A problem with the user's input: printed as one line ``ebmlab: error: ...``, exit code 2.

    Under torchrun every rank exits 2 but only rank 0 prints the line."""

    exit_code = 2

    def show(self, file=None) -> None:
        if _rank() == 0:
            click.echo(f"ebmlab: error: {one_line(self.format_message())}", err=True, file=file)


def _check_integers(ctx: click.Context) -> None:
    """Integer options must fit in 64 bits (torch and numpy take nothing larger)."""
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if isinstance(value, int) and not isinstance(value, bool) and not -_INT64 <= value < _INT64:
            raise UserError(f"{option_name(param)} {value} is too large: integers must fit in 64 bits "
                            f"(see 'ebmlab {ctx.info_name} --help')")


def option_name(param: click.Parameter) -> str:
    """The long name of an option (``--out``), or the parameter's name."""
    names = [o for o in getattr(param, "opts", []) if o.startswith("--")]
    return max(names, key=len) if names else str(param.name)


class OneLineErrors(click.Command):
    """A command whose usage errors (missing option, bad choice, non-integer count, an integer
    beyond 64 bits...) are one line naming ``--help``, exit code 2."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            rest = super().parse_args(ctx, args)
        except click.UsageError as err:
            raise UserError(f"{one_line(err.format_message())} (see 'ebmlab {ctx.info_name} --help')") from err
        _check_integers(ctx)
        return rest


class OneLineGroup(click.Group):
    """The top-level ``ebmlab`` group: an unknown command or option is one line, exit code 2."""

    def _refuse(self, ctx: click.Context, err: click.UsageError) -> UserError:
        choices = ", ".join(self.list_commands(ctx))
        return UserError(f"{one_line(err.format_message()).rstrip('.')}; the commands are {choices} (see 'ebmlab --help')")

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.exceptions.NoArgsIsHelpError:
            raise
        except click.UsageError as err:
            raise self._refuse(ctx, err) from err

    def resolve_command(self, ctx: click.Context, args: list[str]):
        try:
            return super().resolve_command(ctx, args)
        except click.UsageError as err:
            raise self._refuse(ctx, err) from err


def set_threads(threads: int, option: str = "--threads") -> None:
    """``torch.set_num_threads(threads)`` for ``threads`` in ``1..MAX_THREADS``; 0 keeps torch's default."""
    if threads < 0:
        raise UserError(f"{option} must be >= 0 (0 = torch's default), got {threads}")
    if threads > MAX_THREADS:
        raise UserError(f"{option} must be at most {MAX_THREADS}, got {threads}")
    if threads:
        import torch

        torch.set_num_threads(threads)


def _short(path: str, width: int = 60) -> str:
    return path if len(path) <= width else f"{path[:width // 2 - 2]}...{path[-(width // 2 - 2):]}"


def _option_of(path: str, values: dict[str, Any]) -> str | None:
    """The option whose value is ``path`` or a path containing it (or contained in it)."""
    try:
        params = {p.name: p for p in click.get_current_context().command.params}
    except RuntimeError:
        return None
    for name, value in values.items():
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(item, str) and item and name in params and (path.startswith(item) or item.startswith(path)
                                                                        or path in item):
                return option_name(params[name])
    return None


def describe_os_error(err: OSError, values: dict[str, Any] | None = None) -> str:
    """One line for an ``OSError``: the option and the (shortened) path it names, and the reason."""
    if err.errno is None or (err.strerror is None and err.filename is None):
        return str(err) or type(err).__name__  # the library's own message
    reason = OS_REASONS.get(err.errno, err.strerror or type(err).__name__)
    if err.filename is None:
        return f"could not write or read a file: {reason}"
    path = os.fsdecode(err.filename)
    option = _option_of(path, values or {})
    return f"{option + ' ' if option else ''}{_short(path)!r}: {reason}"


_ALLOCATION = re.compile(r"tried to allocate (\d+) bytes")


def describe_allocation_failure(message: str) -> str | None:
    """``not enough memory: ... would need 8.0 TB`` for torch's allocator failure, else ``None``."""
    found = _ALLOCATION.search(message)
    if found is None:
        return None
    return f"not enough memory: one array of this job would need {format_bytes(int(found[1]))}; lower the sizes"


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
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=TORCH_PICKLE_NOTE, category=UserWarning)
                return func(*args, **kwargs)
        except click.ClickException:
            raise
        except OSError as err:  # FileNotFoundError, PermissionError... and what the OS says about paths
            message = describe_os_error(err, kwargs)
        except (ValueError, TypeError, ImportError, RuntimeError, KeyError, OverflowError, MemoryError,
                EnergyRaisedError) as err:
            message = str(err) if str(err) else type(err).__name__
            if isinstance(err, KeyError):
                message = f"missing key {message}"
            if isinstance(err, MemoryError):
                message = f"not enough memory ({message}); lower the sizes"
            message = describe_allocation_failure(message) or message
            message = message.splitlines()[0] if message else type(err).__name__
        raise UserError(terms(message) if terms is not None else message)

    return wrapper


def is_terminal() -> bool:
    """Whether stderr is a terminal (progress bars are drawn only there)."""
    return sys.stderr.isatty()
