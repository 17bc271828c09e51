"""Image data: scikit-learn's 8×8 digits, MNIST / Fashion-MNIST IDX files, folders of PNGs.

Every loader returns float arrays of shape ``(N, C, H, W)`` with values in ``[0, 1]``
(``C = 1`` for the grey-scale sets). Binarised variants threshold at ½: ``x ≥ 0.5 -> 1``.

* Digits: the 1,797 8×8 images bundled with scikit-learn (``load_digits``; no download),
  grey levels ``0..16`` scaled by 1/16 (Alpaydin & Kaynak 1998, UCI optical digits).
* MNIST (LeCun et al. 1998) and Fashion-MNIST (Xiao et al. 2017) from the four IDX files
  (``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``, ``t10k-...``), gzipped or
  not, in a directory the user gives (also looked for in ``raw/``, ``MNIST/raw/`` and
  ``FashionMNIST/raw/`` below it, torchvision's layout). Grey levels ``0..255`` scaled by 1/255.
* A folder of PNG files, read in name order; all images must have the same size and
  number of channels.

The IDX format: two zero bytes, a type code (0x08 unsigned byte, 0x09 signed byte,
0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of dimensions, then each
dimension as a big-endian uint32, then the values, big-endian, in C order.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
MNIST_VARIANTS = ("mnist", "fashion-mnist")
SPLITS = ("train", "test", "all")
_SPLIT_PREFIX = {"train": "train", "test": "t10k"}
_SUBDIRS = ("", "raw", "MNIST/raw", "FashionMNIST/raw")


def is_image_like(event_shape) -> bool:
    """Whether events of this shape are pictures: ``(H, W)``, or ``(C, H, W)`` with ``C`` 1
    (grey) or 3 (colour). The one rule behind image grids and image-data defaults."""
    shape = tuple(int(s) for s in event_shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[0] in (1, 3))


def binarize(x: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """``1.0`` where ``x ≥ threshold``, else ``0.0`` (same shape, float)."""
    return (x >= threshold).astype(np.float64)


# ---------------------------------------------------------------------------------------------
# scikit-learn digits
# ---------------------------------------------------------------------------------------------


def load_digits(binary: bool = False, flat: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """The 8×8 digits bundled with scikit-learn: images ``(1797, 1, 8, 8)`` in ``[0, 1]``
    (``(1797, 64)`` when ``flat``) and labels ``(1797,)`` in ``0..9``."""
    from sklearn.datasets import load_digits as _sklearn_digits

    bunch = _sklearn_digits()
    x = np.asarray(bunch.images, dtype=np.float64)[:, None] / 16.0
    if binary:
        x = binarize(x)
    if flat:
        x = x.reshape(x.shape[0], -1)
    return x, np.asarray(bunch.target, dtype=np.int64)


# ---------------------------------------------------------------------------------------------
# IDX (MNIST) files
# ---------------------------------------------------------------------------------------------


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Parse an IDX file (gzipped or not, told apart by the gzip magic bytes ``1f 8b``).

    Returns the array in native byte order. Raises ``ValueError`` naming the file for a bad
    magic number, an unknown type code, a corrupt gzip stream or a wrong data length.
    """
    path = Path(path)
    name = str(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as err:
            raise ValueError(f"{name}: corrupt gzip data ({err})") from None
    if len(raw) < 4:
        raise ValueError(f"{name}: too short to be an IDX file ({len(raw)} bytes)")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES:
        raise ValueError(
            f"{name}: not an IDX file (magic number 0x{raw[:4].hex()}; expected 0x0000 followed by a "
            f"type code in {{{', '.join(f'0x{c:02x}' for c in IDX_TYPES)}}} and the number of dimensions)"
        )
    ndim = raw[3]
    header = 4 + 4 * ndim
    if ndim == 0 or len(raw) < header:
        raise ValueError(f"{name}: corrupt IDX header ({ndim} dimensions, {len(raw)} bytes in all)")
    dims = tuple(int(d) for d in np.frombuffer(raw, dtype=">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_TYPES[raw[2]])
    expected = int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    found = len(raw) - header
    if found != expected:
        problem = "truncated" if found < expected else "has trailing bytes"
        raise ValueError(f"{name}: corrupt IDX file, {problem}: shape {dims} needs {expected} data bytes, found {found}")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def _find_idx(directory: Path, stem: str, variant: str) -> Path:
    """The file ``stem`` under ``directory`` or its usual subfolders, also gzipped (``.gz``) or
    renamed ``train-images.idx3-ubyte`` (a common variant)."""
    dotted = stem.replace("-idx", ".idx")
    candidates = [directory / sub / (base + gz) for sub in _SUBDIRS for base in (stem, dotted) for gz in ("", ".gz")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(directory / sub) for sub in _SUBDIRS)
    raise FileNotFoundError(f"{variant}: no {stem} or {stem}.gz found (looked in {looked})")


def load_mnist(
    directory: str | os.PathLike, split: str = "train", variant: str = "mnist", binary: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """MNIST or Fashion-MNIST from IDX files: images ``(N, 1, H, W)`` in ``[0, 1]``, labels ``(N,)``.

    ``split`` is ``"train"`` (60,000 images), ``"test"`` (10,000) or ``"all"`` (train then test).
    """
    if variant not in MNIST_VARIANTS:
        raise ValueError(f"load_mnist: variant must be one of {', '.join(MNIST_VARIANTS)}, got {variant!r}")
    if split not in SPLITS:
        raise ValueError(f"{variant}: split must be one of {', '.join(SPLITS)}, got {split!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{variant}: {directory} is not a directory")
    if split == "all":
        parts = [load_mnist(directory, s, variant, binary) for s in ("train", "test")]
        if parts[0][0].shape[1:] != parts[1][0].shape[1:]:
            raise ValueError(f"{variant}: train and test images differ in size in {directory}")
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
    prefix = _SPLIT_PREFIX[split]
    images_path = _find_idx(directory, f"{prefix}-images-idx3-ubyte", variant)
    labels_path = _find_idx(directory, f"{prefix}-labels-idx1-ubyte", variant)
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected unsigned-byte images (N, H, W), got {images.dtype} {images.shape}")
    if images.shape[0] == 0:
        raise ValueError(f"{images_path}: the IDX file holds no images (its header says 0)")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{labels_path}: expected {images.shape[0]} labels (one per image in {images_path.name}), "
            f"got shape {labels.shape}"
        )
    x = images[:, None].astype(np.float64) / 255.0
    return (binarize(x) if binary else x), labels.astype(np.int64)


# ---------------------------------------------------------------------------------------------
# folders of PNG images
# ---------------------------------------------------------------------------------------------


#: The PNG colour type of grey-scale images with an alpha channel (PNG specification, IHDR).
GREY_ALPHA = 4


def _png_colour_type(path: Path) -> int | None:
    """The colour type byte of a PNG's IHDR chunk (0 grey, 2 RGB, 3 palette, 4 grey + alpha,
    6 RGBA), or ``None`` when the header is not a PNG's."""
    with open(path, "rb") as f:
        head = f.read(26)
    if len(head) < 26 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return head[25]


def _read_png(path: Path) -> np.ndarray:
    """One PNG as ``(C, H, W)`` floats in ``[0, 1]``; a fully opaque alpha channel is dropped."""
    import matplotlib.image

    try:
        img = np.asarray(matplotlib.image.imread(path))
    except Exception as err:  # Pillow raises several unrelated types for broken files
        raise ValueError(f"{path}: cannot be read as a PNG image ({type(err).__name__}: {err})") from None
    if np.issubdtype(img.dtype, np.integer):
        img = img / float(np.iinfo(img.dtype).max)
    img = img.astype(np.float64)
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3 or img.shape[2] not in (1, 2, 3, 4):
        raise ValueError(f"{path}: unsupported image layout {img.shape}")
    if img.shape[2] == 4 and _png_colour_type(path) == GREY_ALPHA:  # matplotlib expands grey + alpha to RGBA
        img = img[:, :, [0, 3]]
    if img.shape[2] in (2, 4) and np.all(img[:, :, -1] == 1.0):
        img = img[:, :, :-1]
    return np.transpose(img, (2, 0, 1))


def load_image_folder(directory: str | os.PathLike) -> tuple[np.ndarray, list[str]]:
    """All ``*.png`` files in ``directory`` (sorted by name): ``(N, C, H, W)`` in ``[0, 1]`` and the names."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"images: {directory} is not a directory")
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() == ".png")
    if not files:
        others = sorted({p.suffix.lower() for p in directory.iterdir() if p.is_file() and p.suffix})
        hint = f" (found only {', '.join(others)} files; convert them to PNG)" if others else ""
        raise ValueError(f"images: no .png files in {directory}{hint}")
    images = []
    for path in files:
        img = _read_png(path)
        if images and img.shape != images[0].shape:
            raise ValueError(
                f"images: {path.name} has shape (C, H, W) = {img.shape} but {files[0].name} has "
                f"{images[0].shape}; all images in {directory} must have the same size and channels"
            )
        images.append(img)
    return np.stack(images), [p.name for p in files]
