"""Tests for user data files (.npy, .npz, .csv) and load_dataset's file and name handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ebmlab.data import Dataset, available_datasets, load_array, load_dataset


@pytest.fixture
def data():
    return np.random.default_rng(0).normal(size=(7, 3))


# --------------------------------------------------------------------------------------------
# round trips
# --------------------------------------------------------------------------------------------


def test_npy_round_trip(tmp_path, data):
    path = tmp_path / "data.npy"
    np.save(path, data)
    ds = load_dataset(str(path))
    assert isinstance(ds, Dataset)
    assert ds.x.dtype == torch.get_default_dtype() and ds.event_shape == (3,) and ds.support == "real"
    assert torch.allclose(ds.x, torch.as_tensor(data, dtype=ds.x.dtype))
    assert ds.name == str(path) and ds.sampler is None and ds.true_log_density is None


def test_npy_image_shaped_and_integer(tmp_path):
    images = np.arange(5 * 1 * 2 * 3).reshape(5, 1, 2, 3).astype(np.uint8)
    np.save(tmp_path / "imgs.npy", images)
    ds = load_dataset(str(tmp_path / "imgs.npy"))
    assert ds.x.shape == (5, 1, 2, 3) and ds.event_shape == (1, 2, 3)
    assert torch.equal(ds.x, torch.as_tensor(images, dtype=ds.x.dtype))


def test_binary_file_data_is_detected(tmp_path):
    np.save(tmp_path / "bits.npy", np.array([[0, 1, 1], [1, 0, 0]], dtype=bool))
    assert load_dataset(str(tmp_path / "bits.npy")).support == "binary"


@pytest.mark.parametrize("key", ["x", "data", "whatever"])
def test_npz_keys(tmp_path, data, key):
    arrays = {key: data}
    if key != "whatever":
        arrays["labels"] = np.arange(7)  # ignored: 'x' / 'data' is preferred
    np.savez(tmp_path / "d.npz", **arrays)
    assert np.array_equal(load_array(tmp_path / "d.npz"), data)


def test_csv_with_header_and_without(tmp_path, data):
    np.savetxt(tmp_path / "plain.csv", data, delimiter=",")
    np.savetxt(tmp_path / "header.csv", data, delimiter=",", header="a,b,c", comments="")
    np.savetxt(tmp_path / "spaces.csv", data)  # whitespace-separated
    for name in ("plain.csv", "header.csv", "spaces.csv"):
        assert np.allclose(load_array(tmp_path / name), data, rtol=1e-15), name


def test_csv_single_column_comments_and_blank_lines(tmp_path):
    (tmp_path / "col.csv").write_text("value\n# a comment\n1.5\n\n-2\n3e-1\n")
    assert load_array(tmp_path / "col.csv").tolist() == [[1.5], [-2.0], [0.3]]


def test_relative_path_uses_root(tmp_path, data):
    np.save(tmp_path / "rel.npy", data)
    assert load_dataset("rel.npy", root=tmp_path).x.shape == (7, 3)


def test_num_samples_takes_a_seeded_subset_without_replacement(tmp_path):
    rows = np.arange(50.0)[:, None] * np.ones((1, 2))
    np.save(tmp_path / "rows.npy", rows)
    spec = str(tmp_path / "rows.npy")
    a = load_dataset(spec, num_samples=20, generator=torch.Generator().manual_seed(1))
    b = load_dataset(spec, num_samples=20, generator=torch.Generator().manual_seed(1))
    c = load_dataset(spec, num_samples=20, generator=torch.Generator().manual_seed(2))
    assert torch.equal(a.x, b.x) and not torch.equal(a.x, c.x)
    assert a.x[:, 0].unique().numel() == 20
    with pytest.raises(ValueError, match="rows.npy: num_samples=51 exceeds the 50"):
        load_dataset(spec, num_samples=51)
    with pytest.raises(ValueError, match="num_samples must be a positive integer"):
        load_dataset(spec, num_samples=0)


def test_check_event_shape_names_the_file(tmp_path, data):
    np.save(tmp_path / "three.npy", data)
    ds = load_dataset(str(tmp_path / "three.npy"))
    ds.check_event_shape((3,))
    with pytest.raises(ValueError, match=r"three\.npy: .*\(3,\) but \(2,\).*3 values per row instead of 2"):
        ds.check_event_shape((2,))


# --------------------------------------------------------------------------------------------
# bad input: each error names the file and the problem
# --------------------------------------------------------------------------------------------


def test_csv_nan_row_reports_line(tmp_path):
    (tmp_path / "data.csv").write_text("a,b\n1,2\n3,4\n5,nan\n7,8\n")
    with pytest.raises(ValueError, match=r"data\.csv: line 4 \(data row 2\) contains NaN"):
        load_array(tmp_path / "data.csv")


def test_npy_nan_and_inf_rows(tmp_path, data):
    bad = data.copy()
    bad[4, 1] = np.nan
    bad[5, 0] = np.inf
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"nan\.npy: row 4 contains NaN; 2 rows in all"):
        load_array(tmp_path / "nan.npy")
    np.save(tmp_path / "inf.npy", data * np.array([1, 1, -np.inf]))
    with pytest.raises(ValueError, match=r"inf\.npy: row 0 contains an infinite value \(-inf\)"):
        load_array(tmp_path / "inf.npy")


@pytest.mark.parametrize(
    "shape, message",
    [((5,), r"got shape \(5,\); save one-dimensional data as an \(N, 1\) column"),
     ((), r"got shape \(\)"),
     ((0, 3), r"contains no data rows"),
     ((4, 0), r"data rows are empty")],
)
def test_wrong_dimensions(tmp_path, shape, message):
    np.save(tmp_path / "arr.npy", np.zeros(shape))
    with pytest.raises(ValueError, match=r"arr\.npy: .*" + message):
        load_array(tmp_path / "arr.npy")


@pytest.mark.parametrize("suffix", [".csv", ".npy", ".npz"])
def test_empty_file(tmp_path, suffix):
    (tmp_path / f"empty{suffix}").write_bytes(b"")
    with pytest.raises(ValueError, match=rf"empty\{suffix}: the file is empty"):
        load_dataset(str(tmp_path / f"empty{suffix}"))


def test_csv_header_only_and_comments_only(tmp_path):
    (tmp_path / "head.csv").write_text("a,b\n")
    with pytest.raises(ValueError, match=r"head\.csv: has a header line but no data rows"):
        load_array(tmp_path / "head.csv")
    (tmp_path / "blank.csv").write_text("\n# nothing\n\n")
    with pytest.raises(ValueError, match=r"blank\.csv: the file is empty"):
        load_array(tmp_path / "blank.csv")


def test_csv_ragged_and_non_numeric(tmp_path):
    (tmp_path / "ragged.csv").write_text("1,2\n3,4\n5\n")
    with pytest.raises(ValueError, match=r"ragged\.csv: line 3 has 1 values, expected 2"):
        load_array(tmp_path / "ragged.csv")
    (tmp_path / "words.csv").write_text("x,y\n1,2\n3,abc\n")
    with pytest.raises(ValueError, match=r"words\.csv: line 3, column 2 is not a number: 'abc'"):
        load_array(tmp_path / "words.csv")
    (tmp_path / "hole.csv").write_text("1,2\n3,\n")
    with pytest.raises(ValueError, match=r"hole\.csv: line 2, column 2 is empty"):
        load_array(tmp_path / "hole.csv")
    (tmp_path / "binary.csv").write_bytes(b"\xff\xfe\x00\x01")
    with pytest.raises(ValueError, match=r"binary\.csv: not a text file"):
        load_array(tmp_path / "binary.csv")


def test_npz_ambiguous_and_empty(tmp_path, data):
    np.savez(tmp_path / "two.npz", train=data, test=data)
    with pytest.raises(ValueError, match=r"two\.npz: cannot tell.*'x' or 'data'.*found keys 'train', 'test'"):
        load_array(tmp_path / "two.npz")
    np.savez(tmp_path / "none.npz")
    with pytest.raises(ValueError, match=r"none\.npz: the \.npz archive holds no arrays"):
        load_array(tmp_path / "none.npz")


def test_corrupt_and_non_numeric_files(tmp_path):
    (tmp_path / "junk.npy").write_bytes(b"this is not numpy")
    with pytest.raises(ValueError, match=r"junk\.npy: not"):
        load_array(tmp_path / "junk.npy")
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(ValueError, match=r"junk\.npz: not a valid \.npz file"):
        load_array(tmp_path / "junk.npz")
    np.save(tmp_path / "objects.npy", np.array([[1, "a"]], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"objects\.npy: not a numeric \.npy array"):
        load_array(tmp_path / "objects.npy")
    np.save(tmp_path / "text.npy", np.array([["a", "b"]]))
    with pytest.raises(ValueError, match=r"text\.npy: expected numbers, got an array of dtype <U1"):
        load_array(tmp_path / "text.npy")
    np.save(tmp_path / "truncated.npy", np.zeros((100, 3)))
    raw = (tmp_path / "truncated.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"truncated\.npy: not a valid \.npy file"):
        load_array(tmp_path / "truncated.npy")


def test_unknown_format_and_missing_file(tmp_path):
    (tmp_path / "data.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match=r"data\.txt: unknown data format '\.txt'; expected one of \.npy, \.npz, \.csv"):
        load_dataset(str(tmp_path / "data.txt"))
    with pytest.raises(FileNotFoundError, match=r"missing\.csv: no such file"):
        load_dataset(str(tmp_path / "missing.csv"))


def test_unknown_name_lists_available(tmp_path):
    with pytest.raises(ValueError, match=r"unknown data set 'nonesuch'; choose one of 8gaussians.*digits.*mnist:DIR"):
        load_dataset("nonesuch")
    with pytest.raises(ValueError, match="is a directory; use images:"):
        load_dataset(str(tmp_path))
    assert "checkerboard" in available_datasets() and "images:DIR" in available_datasets()
    with pytest.raises(ValueError, match="non-empty string"):
        load_dataset("  ")


def test_npy_saved_under_npz_suffix(tmp_path, data):
    with open(tmp_path / "single.npz", "wb") as fh:
        np.save(fh, data)
    with pytest.raises(ValueError, match=r"single\.npz: not a \.npz archive .*rename it to \.npy"):
        load_array(tmp_path / "single.npz")


def test_dataset_checks_its_fields():
    with pytest.raises(ValueError, match="support must be one of real, binary"):
        Dataset(x=torch.zeros(3, 2), name="d", event_shape=(2,), support="categorical")
    with pytest.raises(ValueError, match=r"x has shape \(3, 2\), not \(N, \*\(4,\)\)"):
        Dataset(x=torch.zeros(3, 2), name="d", event_shape=(4,))


@pytest.mark.parametrize("text, message", [
    ("1,,3\n4,5,6\n7,8,9\n", r"line 1, column 2 is empty"),
    ("1,2,NA\n4,5,6\n7,8,9\n", r"line 1, column 3 is not a number: 'NA'"),
    ("1;2\n3;4\n", r"line 1, column 1 is not a number: '1;2' \(values are separated by commas or whitespace, not semicolons\)"),
])
def test_a_bad_first_row_is_reported_not_dropped_as_a_header(tmp_path, text, message):
    """A first line with numbers in it is data: its bad value is reported with its line (it used
    to be taken for a header and dropped without a word)."""
    (tmp_path / "d.csv").write_text(text)
    with pytest.raises(ValueError, match=r"d\.csv: " + message):
        load_array(tmp_path / "d.csv")


@pytest.mark.parametrize("header", ["x,y,z", ",a,b", ",0,1"], ids=["names", "pandas-index", "pandas-int-columns"])
def test_headers_of_names_and_of_pandas_are_dropped(tmp_path, header):
    (tmp_path / "h.csv").write_text(header + "\n0,1.5,2\n1,3.5,4\n")
    x = load_array(tmp_path / "h.csv")
    assert x.shape == (2, 3) and float(x[1, 1]) == 3.5


def test_npz_key_names_the_array(tmp_path):
    """FILE.npz:KEY takes that array; an unknown key lists the keys; the ambiguous archive's error
    says how to choose."""
    a, b = np.random.default_rng(1).normal(size=(5, 2)), np.random.default_rng(2).normal(size=(4, 3))
    np.savez(tmp_path / "two.npz", a=a, b=b)
    np.testing.assert_array_equal(load_array(f"{tmp_path / 'two.npz'}:b"), b)
    assert load_dataset(f"{tmp_path / 'two.npz'}:a").x.shape == (5, 2)
    with pytest.raises(ValueError, match=r"has no array 'c'; found keys 'a', 'b'"):
        load_array(f"{tmp_path / 'two.npz'}:c")
    with pytest.raises(ValueError, match=r"cannot tell which array.*name one as .*two\.npz:KEY"):
        load_array(tmp_path / "two.npz")
