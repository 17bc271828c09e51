"""Shared CLI plumbing: one-line errors with exit code 2, device and generator set-up."""

from __future__ import annotations

import functools
import sys
from typing import Callable

import click
import torch


class UserError(click.ClickException):
    """A problem with the user's input: printed as one line ``ebmlab: error: ...``, exit code 2."""

    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"ebmlab: error: {self.format_message()}", err=True, file=file)


def user_errors(func: Callable) -> Callable:
    """Turn the library's input errors into :class:`UserError` (no traceback, exit 2)."""

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
            raise UserError(message.splitlines()[0] if message else type(err).__name__) from err

    return wrapper


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a clear error when CUDA is absent."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was requested but no CUDA device is available; use --device cpu")
    return device


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``."""
    return torch.Generator(device=device).manual_seed(int(seed))


def is_terminal() -> bool:
    return sys.stderr.isatty()
