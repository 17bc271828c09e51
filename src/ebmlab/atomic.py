"""Atomic file writes: write to a temporary file in the target's directory, then ``os.replace``.

A reader never sees a half-written file, and a failure (or an interrupt) while writing leaves
the target as it was and no temporary file behind. ``os.replace`` is atomic within one file
system, which the temporary file shares with the target by living in the same directory.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a binary file that becomes ``path`` only if it returns normally.

    The file is created with mode ``0o666`` less the process umask (like ``open(path, "wb")``),
    flushed and fsynced before the rename.
    """
    path = Path(path)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


__all__ = ["atomic_write"]
