"""Tests for image data: sklearn digits, IDX parsing and MNIST-style folders, PNG folders.

IDX files are written here byte by byte from the format's definition (not with the code
under test), gzipped and raw.
"""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from ebmlab.data import load_dataset, load_digits, load_image_folder, load_mnist, read_idx

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode ``array`` as IDX: 0, 0, type code, ndim, big-endian uint32 dims, big-endian data."""
    dtype = array.dtype if array.dtype.itemsize == 1 else array.dtype.newbyteorder(">")
    header = struct.pack(">BBBB", 0, 0, IDX_CODES[dtype], array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(dtype).tobytes()


def write_idx(path, array: np.ndarray, gz: bool = False) -> None:
    raw = idx_bytes(array)
    path.write_bytes(gzip.compress(raw) if gz else raw)


def make_mnist_dir(root, n_train=6, n_test=4, size=(5, 4), gz_train=True, gz_test=False, seed=0):
    """A tiny MNIST-layout folder: train files gzipped, test files raw (by default)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for prefix, n, gz in (("train", n_train, gz_train), ("t10k", n_test, gz_test)):
        images = rng.integers(0, 256, size=(n, *size), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n, dtype=np.uint8)
        suffix = ".gz" if gz else ""
        write_idx(root / f"{prefix}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(root / f"{prefix}-labels-idx1-ubyte{suffix}", labels, gz)
        arrays[prefix] = (images, labels)
    return arrays


# --------------------------------------------------------------------------------------------
# digits
# --------------------------------------------------------------------------------------------


def test_digits_variants():
    x, labels = load_digits()
    assert x.shape == (1797, 1, 8, 8) and labels.shape == (1797,)
    assert x.min() == 0.0 and x.max() == 1.0 and set(np.unique(labels)) == set(range(10))
    assert np.allclose(x * 16, np.round(x * 16))  # grey levels 0..16
    xb, _ = load_digits(binary=True)
    assert set(np.unique(xb)) == {0.0, 1.0} and np.array_equal(xb, (x >= 0.5).astype(float))
    flat, _ = load_digits(flat=True)
    assert flat.shape == (1797, 64) and np.array_equal(flat, x.reshape(1797, 64))


@pytest.mark.parametrize("spec, shape, support", [
    ("digits", (1, 8, 8), "real"), ("digits-binary", (1, 8, 8), "binary"),
    ("digits-flat", (64,), "real"), ("digits-binary-flat", (64,), "binary"),
])
def test_digits_via_load_dataset(spec, shape, support):
    ds = load_dataset(spec)
    assert ds.x.shape == (1797, *shape) and ds.event_shape == shape and ds.support == support
    assert ds.labels is not None and ds.labels.shape == (1797,) and ds.sampler is None
    sub = load_dataset(spec, num_samples=10, generator=torch.Generator().manual_seed(0))
    assert sub.x.shape == (10, *shape) and sub.labels.shape == (10,)


# --------------------------------------------------------------------------------------------
# IDX parsing
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_read_idx_round_trip(tmp_path, gz, dtype):
    array = (np.arange(2 * 3 * 4) - 7).reshape(2, 3, 4)
    array = (array if dtype != np.uint8 else array + 7).astype(dtype)
    write_idx(tmp_path / "a.idx", array, gz)
    out = read_idx(tmp_path / "a.idx")
    assert out.shape == (2, 3, 4) and out.dtype == np.dtype(dtype) and np.array_equal(out, array)


def test_read_idx_errors(tmp_path):
    good = idx_bytes(np.arange(12, dtype=np.uint8).reshape(3, 4))
    cases = {
        "magic.idx": (b"\x12\x34" + good[2:], r"not an IDX file \(magic number 0x1234"),
        "type.idx": (good[:2] + b"\x07" + good[3:], r"not an IDX file"),
        "short.idx": (b"\x00\x00", r"too short to be an IDX file"),
        "header.idx": (good[:6], r"corrupt IDX header"),
        "truncated.idx": (good[:-1], r"corrupt IDX file, truncated: shape \(3, 4\) needs 12 data bytes, found 11"),
        "trailing.idx": (good + b"\x00", r"corrupt IDX file, has trailing bytes"),
        "badgz.idx.gz": (gzip.compress(good)[:-6], r"corrupt gzip data"),
    }
    for name, (raw, message) in cases.items():
        (tmp_path / name).write_bytes(raw)
        with pytest.raises(ValueError, match=name.replace(".", r"\.") + ": " + message):
            read_idx(tmp_path / name)


# --------------------------------------------------------------------------------------------
# MNIST-style folders
# --------------------------------------------------------------------------------------------


def test_load_mnist_gz_and_raw(tmp_path):
    arrays = make_mnist_dir(tmp_path)
    x, labels = load_mnist(tmp_path)  # train: gzipped files
    assert x.shape == (6, 1, 5, 4) and labels.dtype == np.int64
    assert np.allclose(x[:, 0], arrays["train"][0] / 255.0) and np.array_equal(labels, arrays["train"][1])
    xt, lt = load_mnist(tmp_path, split="test")  # raw files
    assert np.allclose(xt[:, 0], arrays["t10k"][0] / 255.0) and np.array_equal(lt, arrays["t10k"][1])
    xa, la = load_mnist(tmp_path, split="all")
    assert xa.shape == (10, 1, 5, 4) and np.array_equal(la, np.concatenate([labels, lt]))
    xb, _ = load_mnist(tmp_path, binary=True)
    assert np.array_equal(xb[:, 0], (arrays["train"][0] >= 128).astype(float))


@pytest.mark.parametrize("scheme, variant, binary", [
    ("mnist", "mnist", False), ("mnist-binary", "mnist", True),
    ("fashion-mnist", "fashion-mnist", False), ("fashion-mnist-binary", "fashion-mnist", True),
])
def test_mnist_specs(tmp_path, scheme, variant, binary):
    (tmp_path / "raw").mkdir()
    make_mnist_dir(tmp_path / "raw")  # torchvision-style subfolder
    ds = load_dataset(f"{scheme}:{tmp_path}")
    assert ds.x.shape == (6, 1, 5, 4) and ds.event_shape == (1, 5, 4) and ds.labels.shape == (6,)
    assert ds.support == ("binary" if binary else "real")
    if binary:
        assert set(ds.x.unique().tolist()) <= {0.0, 1.0}
    assert load_dataset(f"{scheme}:{tmp_path.name}", root=tmp_path.parent, split="test").x.shape == (4, 1, 5, 4)
    assert load_dataset(scheme, root=tmp_path).x.shape == (6, 1, 5, 4)


def test_mnist_dotted_file_names(tmp_path):
    images = np.zeros((3, 2, 2), dtype=np.uint8)
    write_idx(tmp_path / "train-images.idx3-ubyte", images)
    write_idx(tmp_path / "train-labels.idx1-ubyte", np.zeros(3, dtype=np.uint8))
    assert load_mnist(tmp_path)[0].shape == (3, 1, 2, 2)


def test_mnist_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"mnist: no train-images-idx3-ubyte or train-images-idx3-ubyte\.gz found"):
        load_mnist(tmp_path)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_dataset(f"mnist:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="give a directory"):
        load_dataset("fashion-mnist:")
    make_mnist_dir(tmp_path)
    with pytest.raises(ValueError, match="split must be one of train, test, all"):
        load_mnist(tmp_path, split="valid")
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(3, dtype=np.uint8))  # 4 images
    with pytest.raises(ValueError, match=r"t10k-labels-idx1-ubyte: expected 4 labels .* got shape \(3,\)"):
        load_mnist(tmp_path, split="test")
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((4, 2, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected unsigned-byte images"):
        load_mnist(tmp_path, split="test")


# --------------------------------------------------------------------------------------------
# PNG folders
# --------------------------------------------------------------------------------------------


def test_png_folder_grey(tmp_path):
    rng = np.random.default_rng(1)
    arrays = [rng.integers(0, 256, size=(5, 3), dtype=np.uint8) for _ in range(3)]
    for name, a in zip(("b.png", "a.png", "c.PNG"), arrays):
        Image.fromarray(a, "L").save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("ignored")
    x, names = load_image_folder(tmp_path)
    assert names == ["a.png", "b.png", "c.PNG"] and x.shape == (3, 1, 5, 3)
    expected = np.stack([arrays[1], arrays[0], arrays[2]])[:, None] / 255.0
    assert np.allclose(x, expected, atol=1e-6)
    ds = load_dataset(f"images:{tmp_path}")
    assert ds.x.shape == (3, 1, 5, 3) and ds.support == "real" and ds.event_shape == (1, 5, 3)


def test_png_folder_rgb_and_opaque_alpha(tmp_path):
    rgb = np.random.default_rng(2).integers(0, 256, size=(4, 6, 3), dtype=np.uint8)
    Image.fromarray(rgb, "RGB").save(tmp_path / "0.png")
    rgba = np.concatenate([rgb, np.full((4, 6, 1), 255, np.uint8)], -1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "1.png")  # opaque alpha: dropped
    x, _ = load_image_folder(tmp_path)
    assert x.shape == (2, 3, 4, 6)
    assert np.allclose(x[0], np.transpose(rgb, (2, 0, 1)) / 255.0, atol=1e-6) and np.allclose(x[0], x[1])


def test_png_folder_errors(tmp_path):
    Image.fromarray(np.zeros((4, 4), np.uint8), "L").save(tmp_path / "a.png")
    Image.fromarray(np.zeros((4, 5), np.uint8), "L").save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"images: b\.png has shape \(C, H, W\) = \(1, 4, 5\) but a\.png has \(1, 4, 4\)"):
        load_image_folder(tmp_path)
    (tmp_path / "b.png").unlink()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8), "RGB").save(tmp_path / "b.png")
    with pytest.raises(ValueError, match=r"b\.png has shape \(C, H, W\) = \(3, 4, 4\)"):
        load_image_folder(tmp_path)
    (tmp_path / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(ValueError, match=r"b\.png: cannot be read as a PNG image"):
        load_image_folder(tmp_path)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match=r"images: no \.png files in .*empty$"):
        load_dataset(f"images:{empty}")
    (empty / "x.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"found only \.jpg files; convert them to PNG"):
        load_image_folder(empty)
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        load_image_folder(tmp_path / "missing")


def test_grey_png_with_alpha_stays_grey(tmp_path):
    """matplotlib expands grey + alpha (PNG colour type 4) to RGBA; the loader keeps one grey
    channel (opaque alpha dropped) or grey + alpha, so such a file mixes with plain grey ones."""
    grey = np.arange(16, dtype=np.uint8).reshape(4, 4) * 16
    Image.fromarray(grey, "L").save(tmp_path / "0.png")
    Image.fromarray(np.stack([grey, np.full_like(grey, 255)], -1), "LA").save(tmp_path / "1.png")
    x, _ = load_image_folder(tmp_path)
    assert x.shape == (2, 1, 4, 4)
    np.testing.assert_allclose(x[1, 0], grey / 255.0)
    alpha = tmp_path / "alpha"
    alpha.mkdir()
    Image.fromarray(np.stack([grey, grey[::-1]], -1), "LA").save(alpha / "0.png")
    y, _ = load_image_folder(alpha)
    assert y.shape == (1, 2, 4, 4)
    np.testing.assert_allclose(y[0, 1], grey[::-1] / 255.0)


def test_mnist_files_with_no_images_are_refused(tmp_path):
    make_mnist_dir(tmp_path, n_train=0)
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte.gz: the IDX file holds no images"):
        load_mnist(tmp_path)
    assert load_mnist(tmp_path, split="test")[0].shape == (4, 1, 5, 4)  # the other split is fine
