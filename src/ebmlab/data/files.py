"""User data from files: ``.npy``, ``.npz`` and ``.csv``, validated once at the boundary.

Every loader returns a float ``numpy`` array of shape ``(N, *event)`` with ``N ≥ 1`` rows,
one data point per row, all values finite. Anything else raises a one-line ``ValueError``
that starts with the file name and says what is wrong and where, e.g.
``data.csv: line 19 (data row 17) contains NaN``.

* ``.npy`` — one array; loaded with ``allow_pickle=False``.
* ``.npz`` — the array under key ``x``, else ``data``, else the only array in the archive;
  ``FILE.npz:KEY`` names the array.
* ``.csv`` — numbers separated by commas (or by whitespace when the first data line has no
  comma), one row per line; one header line is allowed; blank lines and lines starting
  with ``#`` are skipped.

A one-dimensional array is refused (it is ambiguous: N scalars or one N-vector?); save it as
an ``(N, 1)`` column instead.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np

SUPPORTED_SUFFIXES = (".npy", ".npz", ".csv")
NPZ_KEYS = ("x", "data")


def is_data_file(spec: str | os.PathLike) -> bool:
    """True when ``spec`` names a file with a supported suffix (whether or not it exists), or
    an array of one as ``FILE.npz:KEY``."""
    return _npz_key(spec)[0].suffix.lower() in SUPPORTED_SUFFIXES


def _npz_key(path: str | os.PathLike) -> tuple[Path, str | None]:
    """``("FILE.npz", "KEY")`` for ``FILE.npz:KEY`` (when no file has that whole name), else ``(path, None)``."""
    text = os.fspath(path)
    head, sep, key = text.rpartition(":")
    if sep and key and head.lower().endswith(".npz") and not os.path.exists(text) and "/" not in key:
        return Path(head), key
    return Path(text), None


def load_array(path: str | os.PathLike) -> np.ndarray:
    """Load and validate a data file; returns a float64 array ``(N, *event)``. ``FILE.npz:KEY``
    takes the archive's array ``KEY``."""
    path, key = _npz_key(path)
    name = str(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ValueError(
            f"{name}: unknown data format {path.suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if not path.exists():
        raise FileNotFoundError(f"{name}: no such file")
    if path.is_dir():
        raise ValueError(f"{name}: is a directory, expected a {suffix} file")
    if not path.is_file():  # a FIFO or a device: reading it could block or never end
        raise ValueError(f"{name}: is not a regular file (a FIFO, socket or device), expected a {suffix} file")
    if path.stat().st_size == 0:
        raise ValueError(f"{name}: the file is empty")
    if suffix == ".csv":
        array, line_numbers = _read_csv(path, name)
    else:
        array = _read_npy(path, name) if suffix == ".npy" else _read_npz(path, name, key)
        line_numbers = None
    return validate_array(array, name, line_numbers)


def validate_array(array: np.ndarray, name: str, line_numbers: list[int] | None = None) -> np.ndarray:
    """Check ``array`` is a non-empty, finite, numeric ``(N, *event)`` array; return it as float64.

    ``name`` starts every error message; ``line_numbers[i]`` (if given) is the file line of
    row ``i``, reported alongside the row index.
    """
    array = np.asarray(array)
    if array.dtype == object or array.dtype.names is not None or not (
        np.issubdtype(array.dtype, np.number) or array.dtype == bool
    ):
        raise ValueError(f"{name}: expected numbers, got an array of dtype {array.dtype}")
    if np.issubdtype(array.dtype, np.complexfloating):
        raise ValueError(f"{name}: expected real numbers, got complex dtype {array.dtype}")
    if array.ndim < 2:
        raise ValueError(
            f"{name}: expected an array of shape (N, d) or (N, *event) with one data point per row, "
            f"got shape {array.shape}; save one-dimensional data as an (N, 1) column"
        )
    if array.shape[0] == 0:
        raise ValueError(f"{name}: contains no data rows (shape {array.shape})")
    if array.size == 0:
        raise ValueError(f"{name}: data rows are empty (shape {array.shape})")
    array = array.astype(np.float64, copy=False)
    rows = array.reshape(array.shape[0], -1)
    bad = ~np.isfinite(rows)
    if bad.any():
        row = int(np.argmax(bad.any(axis=1)))
        value = rows[row][bad[row]][0]
        what = "NaN" if np.isnan(value) else f"an infinite value ({value})"
        where = f"row {row}" if line_numbers is None else f"line {line_numbers[row]} (data row {row})"
        count = int(bad.any(axis=1).sum())
        more = f"; {count} rows in all have non-finite values" if count > 1 else ""
        raise ValueError(f"{name}: {where} contains {what}{more}")
    huge = np.abs(rows) > MAX_MAGNITUDE
    if huge.any():
        row = int(np.argmax(huge.any(axis=1)))
        where = f"row {row}" if line_numbers is None else f"line {line_numbers[row]} (data row {row})"
        raise ValueError(f"{name}: {where} holds {rows[row][huge[row]][0]:.3g}; values beyond ±{MAX_MAGNITUDE:.0e} "
                         f"overflow float32 arithmetic (squares, variances): rescale the data")
    return array


NPY_MAGIC = b"\x93NUMPY"
#: Beyond this magnitude float32 arithmetic on the data (squares, variances) overflows to inf.
MAX_MAGNITUDE = 1e18


def _not_npy(head: bytes) -> str:
    """What a file that lacks the .npy magic looks like, for the message."""
    if head[:2] == b"PK":
        return "it is a zip archive: rename it to .npz"
    if head[:1] == b"\x80":
        return "it holds pickled Python objects, which are never loaded"
    try:
        head.decode("utf-8")
        return "it looks like text: rename a comma-separated file to .csv"
    except UnicodeDecodeError:
        return "it does not start with the .npy magic bytes"


def _read_npy(path: Path, name: str) -> np.ndarray:
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(NPY_MAGIC))
            if head != NPY_MAGIC:
                raise ValueError(f"{name}: not a .npy array file ({_not_npy(head + fh.read(58))})")
            fh.seek(0)
            return np.load(fh, allow_pickle=False)
    except ValueError as err:
        if str(err).startswith(f"{name}: "):
            raise
        if "allow_pickle" in str(err):
            raise ValueError(f"{name}: not a numeric .npy array (it holds pickled Python objects)") from None
        raise ValueError(f"{name}: not a valid .npy file ({err})") from None
    except (OSError, EOFError) as err:
        raise ValueError(f"{name}: not a valid .npy file ({err})") from None


def read_npy(path: str | os.PathLike, name: str | None = None) -> np.ndarray:
    """The array of a ``.npy`` file (never unpickled); ``ValueError`` starting with ``name``
    (default: the path) that says what the file is when it is not one."""
    return _read_npy(Path(path), str(path) if name is None else name)


def _read_npz(path: Path, name: str, key: str | None = None) -> np.ndarray:
    # The file is opened here (not by np.load) so that it is closed even when np.load fails.
    with open(path, "rb") as fh:
        head = fh.read(64)
        fh.seek(0)
        if head[:2] != b"PK" and not head.startswith(NPY_MAGIC):
            raise ValueError(f"{name}: not a .npz archive ({_not_npy(head).replace(': rename it to .npz', '')})")
        try:
            archive = np.load(fh, allow_pickle=False)
        except ValueError as err:
            if "allow_pickle" in str(err):
                raise ValueError(f"{name}: not a valid .npz file (it holds pickled Python objects)") from None
            raise ValueError(f"{name}: not a valid .npz file ({err})") from None
        except (zipfile.BadZipFile, OSError, EOFError) as err:
            raise ValueError(f"{name}: not a valid .npz file ({err})") from None
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError(f"{name}: not a .npz archive (it holds a single .npy array; rename it to .npy)")
        with archive:
            return _pick_npz_array(archive, name, key)


def _pick_npz_array(archive: np.lib.npyio.NpzFile, name: str, key: str | None = None) -> np.ndarray:
    """The array ``key`` when given, else under ``x``, else ``data``, else the only one; an error
    listing the keys otherwise."""
    keys = list(archive.files)
    if not keys:
        raise ValueError(f"{name}: the .npz archive holds no arrays")
    found = ", ".join(repr(k) for k in keys)
    if key is not None and key not in keys:
        raise ValueError(f"{name}: the .npz archive has no array {key!r}; found keys {found}")
    key = key or next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if key is None:
        raise ValueError(
            f"{name}: cannot tell which array holds the data; expected key 'x' or 'data' "
            f"or a single array, found keys {found}; name one as {name}:KEY"
        )
    try:
        return archive[key]
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise ValueError(f"{name}: array {key!r} is not numeric (it holds pickled Python objects)") from None
        raise ValueError(f"{name}: array {key!r} is corrupt ({err})") from None
    except (zipfile.BadZipFile, OSError, EOFError) as err:
        raise ValueError(f"{name}: array {key!r} is corrupt ({err})") from None


def _parse_floats(line: str, delimiter: str | None) -> list[float] | None:
    try:
        return [float(v) for v in line.split(delimiter)]
    except ValueError:
        return None


def _is_header(line: str, delimiter: str | None) -> bool:
    """A header holds names and no number, or starts with the empty name of pandas' index column
    (``,a,b``, ``,0,1``); another line with a number (``1,,3``, ``1,2,NA``) is a data row with a
    bad value, reported as such, not a header to drop."""
    if ";" in line and _parse_floats(line.replace(";", ","), ",") is not None:
        return False  # numbers separated by semicolons: data, refused with a line number below
    fields = [f.strip() for f in line.split(delimiter)]
    if len(fields) > 1 and not fields[0] and all(fields[1:]):  # pandas' index header, even ",0,1"
        return True
    return any(fields) and not any(_parse_floats(f, None) is not None for f in fields if f)


def _read_csv(path: Path, name: str) -> tuple[np.ndarray, list[int]]:
    """Parse a numeric CSV; returns the array ``(N, d)`` and the file line of each row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise ValueError(f"{name}: not a text file (it is not valid UTF-8)") from None
    lines = [(i + 1, line.strip()) for i, line in enumerate(text.splitlines())]
    lines = [(num, line) for num, line in lines if line and not line.startswith("#")]
    if not lines:
        raise ValueError(f"{name}: the file is empty (no data lines)")
    delimiter = "," if "," in lines[0][1] else None
    if _is_header(lines[0][1], delimiter):  # a header line: names only
        lines = lines[1:]
        if not lines:
            raise ValueError(f"{name}: has a header line but no data rows")
    line_numbers = [num for num, _ in lines]
    try:
        array = np.loadtxt([line for _, line in lines], delimiter=delimiter, dtype=np.float64, ndmin=2, comments=None)
    except ValueError:
        _raise_csv_problem(name, lines, delimiter)
        raise  # pragma: no cover - _raise_csv_problem always raises
    return array, line_numbers


def _raise_csv_problem(name: str, lines: list[tuple[int, str]], delimiter: str | None) -> None:
    """Find the first malformed line and raise a ``ValueError`` that points at it."""
    width = len(lines[0][1].split(delimiter))
    for num, line in lines:
        fields = line.split(delimiter)
        if len(fields) != width:
            raise ValueError(f"{name}: line {num} has {len(fields)} values, expected {width} like the first data row")
        for col, field in enumerate(fields, start=1):
            try:
                float(field)
            except ValueError:
                what = "is empty" if not field.strip() else f"is not a number: {field.strip()!r}"
                if ";" in field:
                    what += " (values are separated by commas or whitespace, not semicolons)"
                raise ValueError(f"{name}: line {num}, column {col} {what}") from None
    raise ValueError(f"{name}: could not be parsed as numeric CSV")
