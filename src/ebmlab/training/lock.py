"""One writer per run directory: an exclusive OS file lock on ``RUN_DIR/.lock``.

The lock is ``fcntl.flock`` on an open file, so the kernel releases it when the holding process
exits for any reason — a ``kill -9`` never leaves a stale lock. The holder writes its pid into
the file; a second process that cannot take the lock reads it and names it in the error.

Also here: the check that a directory may become a run directory (new, empty, or already a run),
so that a user's own files are never overwritten.
"""

from __future__ import annotations

import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None

LOCK_NAME = ".lock"


class RunLockedError(ValueError):
    """Another process holds the run directory's lock."""


def check_run_directory(path: str | os.PathLike, what: str = "out") -> Path:
    """``path`` as a directory that can hold a run: refuses a regular file (or other non-directory)
    and a non-empty directory that is not an ebmlab run, naming it. A run directory is one with a
    ``checkpoint.pt`` or ebmlab's ``.lock`` (a run stopped before its first checkpoint); one whose
    lock another process holds is refused with that process's pid."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ValueError(f"{what} {str(path)!r} is an existing file, not a directory; choose a new directory")
    if not path.is_dir():
        return path
    if (path / LOCK_NAME).exists():
        RunLock(path).acquire().release()  # raises RunLockedError while another process holds it
        return path
    if not (path / "checkpoint.pt").exists():
        others = sorted(p.name for p in path.iterdir()
                        if not (p.name.startswith(".checkpoint.pt.") and p.name.endswith(".tmp")))
        if others:
            shown = ", ".join(others[:3]) + (" ..." if len(others) > 3 else "")
            raise ValueError(f"{what} {str(path)!r} holds files that are not an ebmlab run ({shown}); choose a new or "
                             f"empty directory, nothing was written")
    return path


class RunLock:
    """``with RunLock(run_dir):`` — hold the run directory's exclusive lock (creating the directory)."""

    def __init__(self, run_dir: str | os.PathLike):
        self.run_dir = Path(run_dir)
        self._fd: int | None = None

    def acquire(self) -> "RunLock":
        if self._fd is not None:
            return self
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.run_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                try:
                    holder = os.read(fd, 64).decode("ascii", "replace").strip() or "unknown"
                finally:
                    os.close(fd)
                raise RunLockedError(f"{str(self.run_dir)!r} is in use by another ebmlab process (pid {holder}); "
                                     f"wait for it to finish or choose another directory") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing releases the flock
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "check_run_directory"]
