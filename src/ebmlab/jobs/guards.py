"""What every job checks before it runs, and how it names a failure while it runs.

* Paths: :func:`check_path_names` (no name longer than the file system allows, no empty
  path), :func:`ebmlab.jobs.sampling.check_output_file` (an output replaces only a file ebmlab wrote: never a FIFO,
  a device or a user's file), :func:`output_errors` (a full disk or a file-size limit met while
  writing, named by option; the atomic writers leave the old file as it was).
* Sizes: :func:`check_sizes` refuses, before anything is allocated, a sampling job whose draws
  would not fit in memory or on disk, and says how much they would need.
* A user's energy raising mid-run: :func:`energy_errors` with a :class:`StepCounter` raises
  :class:`~ebmlab.energy.errors.EnergyRaisedError` naming the energy and the step.
"""

from __future__ import annotations

import contextlib
import errno
import math
import os
import shutil
import zipfile
from pathlib import Path
from typing import Callable, Iterator

import torch
from torch import nn

from ebmlab.energy.errors import EnergyRaisedError, energy_name, raised_by, raised_in
from ebmlab.samplers import Kernel


def _short(text: str, width: int = 60) -> str:
    return text if len(text) <= width else f"{text[:width // 2 - 2]}...{text[-(width // 2 - 2):]}"


def check_path_names(path: str | os.PathLike, option: str) -> Path:
    """Refuse an empty path, or one with a name longer than its file system allows (``ENAMETOOLONG``)."""
    text = os.fspath(path)
    if not str(text).strip():
        raise ValueError(f"{option}: empty path; give a file name")
    path = Path(path)
    probe = next((p for p in [path.parent, *path.parent.parents] if p.is_dir()), Path("."))
    try:
        limit = os.pathconf(probe, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = 255
    for part in path.parts:
        size = len(os.fsencode(part))
        if size > limit:
            raise ValueError(f"{option} {_short(str(path))!r}: the name {_short(part, 30)!r} is {size} bytes long; "
                             f"the file system allows at most {limit} per name")
    if len(os.fsencode(str(path.absolute()))) >= 4096:
        raise ValueError(f"{option} {_short(str(path))!r}: the path is longer than the 4096 bytes the system allows")
    return path


def is_own_netcdf(path: str | os.PathLike) -> bool:
    """Whether the netCDF file ``path`` was written by ``ebmlab sample``: its ``posterior`` group
    carries the ``ebmlab_metadata`` attribute (an ArviZ file written elsewhere does not)."""
    with open(path, "rb") as f:
        if not f.read(8).startswith((b"\x89HDF", b"CDF")):
            return False
    try:
        import xarray

        with xarray.open_dataset(path, group="posterior") as posterior:
            return "ebmlab_metadata" in posterior.attrs
    except Exception:  # no xarray, no such group, not readable: not a file of ours
        return False


def is_sample_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` holds an output of ``ebmlab sample`` (an ``.npz`` with ``metadata``; for
    ``.nc``, :func:`is_own_netcdf`), or is empty: the only regular files ``--out`` may replace."""
    path = Path(path)
    if path.stat().st_size == 0:
        return True
    if path.suffix == ".nc":
        return is_own_netcdf(path)
    try:
        with zipfile.ZipFile(path) as archive:
            return "metadata.npy" in archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False


#: Working copies of the chains' states a kernel holds at once (state, gradient, proposal, momentum...).
STATE_COPIES = 8


def format_bytes(n: float) -> str:
    """``1.5 GB`` (powers of 1000)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB", "PB"):
        if n < 1000 or unit == "PB":
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.3g} {unit}"
        n /= 1000
    return f"{n:.3g} PB"  # pragma: no cover


def memory_available(device: torch.device) -> int:
    """Bytes of memory on ``device``: the GPU's total, or the machine's physical memory."""
    if device.type == "cuda":
        return int(torch.cuda.get_device_properties(device).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - not POSIX
        return 2**62


def check_sizes(num_chains: int, num_steps: int, thin: int, event_shape: tuple[int, ...], device: torch.device,
                out: str | os.PathLike) -> None:
    """Refuse, before anything is allocated, a job whose kept draws and chain states would not fit
    in the memory of its device, or whose output would not fit on the disk of ``--out``; the
    message says how much each would need. ``kept = num_steps // thin`` draws of ``C`` chains of
    ``D = prod(event_shape)`` values: ``kept·C·(D+1)`` values kept (draws and energies) and
    ``STATE_COPIES·C·D`` in the working states, at the default dtype's size."""
    itemsize = torch.finfo(torch.get_default_dtype()).bits // 8
    values = math.prod(event_shape)
    kept = num_steps // thin
    draws = kept * num_chains * (values + 1) * itemsize
    need = draws + STATE_COPIES * num_chains * values * itemsize
    have = memory_available(device)
    if need > have:
        raise ValueError(f"--chains {num_chains} x --steps {num_steps} (--thin {thin}) of {values} values "
                         f"each would need {format_bytes(need)} of memory, more than the {format_bytes(have)} of "
                         f"{device}; lower --chains or --steps, or raise --thin")
    parent = Path(out).parent if str(Path(out).parent) else Path(".")
    free = shutil.disk_usage(parent).free
    if draws > free:
        raise ValueError(f"--out {str(out)!r}: the kept draws would need {format_bytes(draws)} on disk, more than "
                         f"the {format_bytes(free)} free there; lower --chains or --steps, or raise --thin")


#: What the OS means, in words, for the errors a write to a good path can still meet.
OS_REASONS = {
    errno.ENAMETOOLONG: "a name in the path is longer than the file system allows (255 bytes per name)",
    errno.ENOSPC: "no space left on the device",
    errno.EFBIG: "the file would exceed the file-size limit (ulimit -f)",
    errno.EDQUOT: "the disk quota is exceeded",
    errno.EROFS: "the file system is read-only",
}


#: The errors of a write to a path that was checked beforehand.
WRITE_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS)


@contextlib.contextmanager
def output_errors(option: str, path: str | os.PathLike) -> Iterator[None]:
    """An ``OSError`` while writing ``path`` (a full disk, a file-size limit) as one ``OSError``
    message naming ``option`` and the path; the atomic writers leave the old file as it was."""
    try:
        yield
    except OSError as err:
        if err.errno not in WRITE_ERRNOS:  # a missing or unreadable input is its own error
            raise
        reason = OS_REASONS[err.errno]
        raise OSError(f"{option} {_short(os.fspath(path))!r}: could not write it: {reason}; nothing was "
                      f"replaced") from err


class StepCounter:
    """The last transition a run reported (through its callback): where an energy failed."""

    def __init__(self) -> None:
        self.step = 0

    def track(self, callback: Callable | None) -> Callable:
        """``callback`` (or nothing) behind a counter of the steps."""
        def counted(step, *rest) -> None:
            self.step = int(step)
            if callback is not None:
                callback(step, *rest)

        return counted


@contextlib.contextmanager
def energy_errors(energy: nn.Module, kernel: Kernel, steps: StepCounter) -> Iterator[None]:
    """An exception raised inside the user's energy during a run, as
    :class:`~ebmlab.energy.errors.EnergyRaisedError` naming the energy's class and the step (0:
    while the kernel evaluated the start); the library's own errors pass unchanged."""
    try:
        yield
    except Exception as err:
        if not raised_by(err, energy):
            raise
        step = 0 if raised_in(err, kernel, "init") else steps.step + 1
        raise EnergyRaisedError(energy_name(energy), err, step) from err


__all__ = ["OS_REASONS", "STATE_COPIES", "WRITE_ERRNOS", "StepCounter", "check_path_names",
           "check_sizes", "energy_errors", "format_bytes", "is_own_netcdf", "is_sample_file", "memory_available", "output_errors"]
