"""Tests for fastbp.datasets: bundled digits, IDX files, generators, splitting, loaders."""
import gzip
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from fastbp import datasets
from fastbp.datasets import (load_csv, load_digits, load_idx, load_mnist, load_npz, make_blobs,
                             make_regression, make_spirals, save_idx, train_test_split)

# The first digit (a zero) of the UCI test set, as published.
FIRST_DIGIT = np.array([
    0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0, 0, 3, 15, 2, 0, 11, 8, 0,
    0, 4, 12, 0, 0, 8, 8, 0, 0, 5, 8, 0, 0, 9, 8, 0, 0, 4, 11, 0, 1, 12, 7, 0,
    0, 2, 14, 5, 10, 12, 0, 0, 0, 0, 6, 13, 10, 0, 0, 0])


def quoted(path):
    """Regex matching ``path`` quoted the way the error messages quote it."""
    return re.escape(repr(str(path)))


# ----------------------------------------------------------------------------- digits


def test_digits_shape_dtype_range():
    X, y = load_digits()
    assert X.shape == (1797, 64) and X.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert X.min() == 0 and X.max() == 1
    np.testing.assert_array_equal(X * 16, np.round(X * 16))
    counts = np.bincount(y)
    assert len(counts) == 10 and counts.min() >= 174 and counts.max() <= 183
    np.testing.assert_array_equal(X[0] * 16, FIRST_DIGIT)
    assert y[0] == 0


def test_digits_unscaled_and_dtype():
    X, y = load_digits(dtype=np.uint8, scale=False)
    assert X.dtype == np.uint8 and X.max() == 16
    np.testing.assert_array_equal(X[0], FIRST_DIGIT)
    X64, _ = load_digits(dtype=np.float64)
    np.testing.assert_array_equal(X64 * 16, X)


def test_digits_match_sklearn():
    sk_datasets = pytest.importorskip("sklearn.datasets")
    X_sk, y_sk = sk_datasets.load_digits(return_X_y=True)
    X, y = load_digits(dtype=np.float64, scale=False)
    np.testing.assert_array_equal(X, X_sk)
    np.testing.assert_array_equal(y, y_sk)


def test_digits_load_without_sklearn():
    # A None entry in sys.modules makes "import sklearn" fail, as if it were not installed.
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from fastbp.datasets import load_digits\n"
            "X, y = load_digits(); assert X.shape == (1797, 64)\n")
    package_root = str(Path(datasets.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [
        package_root, os.environ.get("PYTHONPATH")])))
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("kwargs, error, message", [
    ({"dtype": np.int32}, ValueError, "dtype must be a floating type .* when scale=True; got int"),
    ({"dtype": "no such type"}, TypeError, "dtype must be a NumPy dtype"),
    ({"dtype": None}, TypeError, "dtype must be a NumPy dtype"),
    ({"scale": "yes"}, TypeError, "scale must be True or False; got str 'yes'"),
])
def test_digits_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        load_digits(**kwargs)


# ----------------------------------------------------------------------------- IDX


def write_bytes(path, data, compress=False):
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip(tmp_path, suffix, dtype):
    rng = np.random.default_rng(0)
    images = (rng.random((5, 3, 4)) * 100).astype(dtype)
    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    save_idx(tmp_path / f"images{suffix}", images)
    save_idx(tmp_path / f"labels{suffix}", labels)
    X, y = load_idx(tmp_path / f"images{suffix}", tmp_path / f"labels{suffix}")
    expected = images.reshape(5, 12).astype(np.float32)
    if dtype == np.uint8:
        expected /= 255  # only unsigned bytes are pixels to scale
    assert X.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_array_equal(X, expected)
    np.testing.assert_array_equal(y, labels)
    X_raw = load_idx(tmp_path / f"images{suffix}", dtype=dtype, scale=False)
    np.testing.assert_array_equal(X_raw, images.reshape(5, 12))


def test_idx_bytes_are_big_endian_mnist_layout(tmp_path):
    save_idx(tmp_path / "a", np.arange(24, dtype=np.uint8).reshape(2, 3, 4))
    data = (tmp_path / "a").read_bytes()
    assert data[:16] == bytes.fromhex("00000803 00000002 00000003 00000004")
    assert data[16:] == bytes(range(24))
    save_idx(tmp_path / "b", np.array([1.5, -2.0], dtype=np.float32))
    assert (tmp_path / "b").read_bytes() == bytes.fromhex("00000d01 00000002 3fc00000 c0000000")


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    images = np.arange(12, dtype=np.uint8).reshape(3, 2, 2)
    save_idx(tmp_path / "x.gz", images)
    (tmp_path / "x.gz").rename(tmp_path / "gzipped-without-suffix")
    save_idx(tmp_path / "plain", images)
    (tmp_path / "plain").rename(tmp_path / "plain.gz")
    for name in ["gzipped-without-suffix", "plain.gz"]:
        X = load_idx(tmp_path / name, scale=False, dtype=np.uint8)
        np.testing.assert_array_equal(X, images.reshape(3, 4))


def test_idx_save_gzip_is_deterministic(tmp_path):
    a = np.arange(10, dtype=np.int16)
    save_idx(tmp_path / "a.gz", a)
    first = (tmp_path / "a.gz").read_bytes()
    save_idx(tmp_path / "a.gz", a)
    assert (tmp_path / "a.gz").read_bytes() == first


def idx_header(magic, *dims):
    return struct.pack(f">I{len(dims)}I", magic, *dims)


@pytest.mark.parametrize("compress", [False, True])
def test_idx_bad_magic(tmp_path, compress):
    path = write_bytes(tmp_path / "f", idx_header(0x12340803, 1, 2, 2) + bytes(4), compress)
    with pytest.raises(ValueError, match=f"bad magic number 0x12340803 in {quoted(path)}: "
                                         r"expected 0x00000803 \(IDX images of unsigned bytes\)"):
        load_idx(path)


def test_idx_unknown_type_code(tmp_path):
    path = write_bytes(tmp_path / "f", idx_header(0x00000701, 2) + bytes(2))
    with pytest.raises(ValueError, match="bad magic number 0x00000701 .* type code"):
        load_idx(path)


def test_idx_labels_given_as_images_and_back(tmp_path):
    save_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    save_idx(tmp_path / "images", np.zeros((4, 2, 2), np.uint8))
    with pytest.raises(ValueError, match=r"bad magic number 0x00000801 .*: expected 0x00000803 "
                                         r"\(IDX images of unsigned bytes\); found a rank-1"):
        load_idx(tmp_path / "labels")
    with pytest.raises(ValueError, match=r"bad magic number 0x00000803 .*: expected 0x00000801 "
                                         r"\(IDX labels of unsigned bytes\); found a rank-3"):
        load_idx(tmp_path / "images", tmp_path / "images")


def test_idx_float_labels_rejected(tmp_path):
    save_idx(tmp_path / "images", np.zeros((2, 2, 2), np.uint8))
    save_idx(tmp_path / "labels", np.zeros(2, np.float32))
    with pytest.raises(ValueError, match="0x00000D01 .* labels need an integer type"):
        load_idx(tmp_path / "images", tmp_path / "labels")


@pytest.mark.parametrize("compress, note", [(False, ""), (True, " after gunzip")])
def test_idx_truncated_data(tmp_path, compress, note):
    path = write_bytes(tmp_path / "f", idx_header(0x00000803, 10, 28, 28) + bytes(100), compress)
    with pytest.raises(ValueError, match=f"{quoted(path)} is truncated: header says 10x28x28 "
                                         f"unsigned bytes = 7840 bytes of data, file has 100"
                                         f"{note}$"):
        load_idx(path)


def test_idx_truncated_header_and_short_file(tmp_path):
    path = write_bytes(tmp_path / "f", idx_header(0x00000803, 10))
    with pytest.raises(ValueError, match=r"is truncated: a rank-3 IDX header is 16 bytes, "
                                         r"file has 8"):
        load_idx(path)
    path = write_bytes(tmp_path / "g", b"\0\0")
    with pytest.raises(ValueError, match="too short for an IDX file.* file has 2 bytes"):
        load_idx(path)


def test_idx_trailing_data(tmp_path):
    save_idx(tmp_path / "images", np.zeros((3, 1, 1), np.uint8))
    labels = write_bytes(tmp_path / "labels", idx_header(0x00000C01, 3) + bytes(13))
    with pytest.raises(ValueError, match=f"{quoted(labels)} has trailing data: header says 3 "
                                         f"32-bit integers = 12 bytes of data, file has 13"):
        load_idx(tmp_path / "images", labels)


def test_idx_count_mismatch(tmp_path):
    save_idx(tmp_path / "images", np.zeros((5, 2, 2), np.uint8))
    save_idx(tmp_path / "labels", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=f"{quoted(tmp_path / 'images')} holds 5 images but "
                                         f"{quoted(tmp_path / 'labels')} holds 4 labels"):
        load_idx(tmp_path / "images", tmp_path / "labels")


def test_idx_corrupt_gzip(tmp_path):
    path = write_bytes(tmp_path / "f.gz", b"\x1f\x8b" + b"not really gzip")
    with pytest.raises(ValueError, match=f"{quoted(path)} starts with the gzip magic bytes"):
        load_idx(path)


def test_idx_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope"))):
        load_idx(tmp_path / "nope")
    save_idx(tmp_path / "images", np.zeros((1, 1, 1), np.uint8))
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "labels"))):
        load_idx(tmp_path / "images", tmp_path / "labels")


def test_idx_bad_arguments(tmp_path):
    with pytest.raises(TypeError, match="images must be a path"):
        load_idx(42)
    with pytest.raises(TypeError, match="labels must be a path"):
        load_idx("images", labels=3)
    with pytest.raises(ValueError, match="dtype must be a floating type"):
        load_idx("images", dtype=np.uint8)
    with pytest.raises(TypeError, match=r"array must be of type uint8, .*; got int64"):
        save_idx(tmp_path / "x", np.arange(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"array must have 1 to 255 dimensions .* got shape \(\)"):
        save_idx(tmp_path / "x", np.uint8(3))
    with pytest.raises(TypeError, match="path must be a path"):
        save_idx(None, np.zeros(3, np.uint8))


# ----------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("kind, images, labels", [
    ("train", "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    ("train", "train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    ("train", "train-images.idx3-ubyte", "train-labels.idx1-ubyte"),
    ("train", "train-images.idx3-ubyte.gz", "train-labels-idx1-ubyte"),
    ("test", "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
    ("test", "t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte"),
])
def test_mnist_file_spellings(tmp_path, kind, images, labels):
    pixels = np.arange(2 * 28 * 28).reshape(2, 28, 28).astype(np.uint8)
    save_idx(tmp_path / images, pixels)
    save_idx(tmp_path / labels, np.array([7, 2], np.uint8))
    # The other split's files must not be picked up.
    other = "t10k" if kind == "train" else "train"
    save_idx(tmp_path / f"{other}-labels-idx1-ubyte", np.array([1, 2, 3], np.uint8))
    X, y = load_mnist(tmp_path, kind=kind)
    assert X.shape == (2, 784) and X.dtype == np.float32
    np.testing.assert_allclose(X, pixels.reshape(2, 784) / 255, rtol=1e-6)
    np.testing.assert_array_equal(y, [7, 2])


def test_mnist_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no MNIST train images in .*: looked for "
                                                r"train-images-idx3-ubyte, "
                                                r"train-images-idx3-ubyte\.gz, "
                                                r"train-images\.idx3-ubyte, "
                                                r"train-images\.idx3-ubyte\.gz"):
        load_mnist(tmp_path)
    save_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((1, 2, 2), np.uint8))
    with pytest.raises(FileNotFoundError, match="no MNIST test labels .* t10k-labels-idx1-ubyte"):
        load_mnist(tmp_path, kind="test")
    with pytest.raises(FileNotFoundError, match="MNIST directory .*missing.* does not exist"):
        load_mnist(tmp_path / "missing")


def test_mnist_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind must be 'train' or 'test'; got 'valid'"):
        load_mnist(tmp_path, kind="valid")
    with pytest.raises(TypeError, match="directory must be a path"):
        load_mnist(None)


# ----------------------------------------------------------------------------- generators


GENERATORS = [
    (make_blobs, {"n_samples": 50, "n_features": 3}, (50, 3), (50,)),
    (make_spirals, {"n_samples": 50, "n_classes": 4}, (50, 2), (50,)),
    (make_regression, {"n_samples": 50, "n_features": 4, "n_targets": 2}, (50, 4), (50, 2)),
    (make_regression, {"n_samples": 50, "nonlinear": False}, (50, 10), (50, 1)),
]
GENERATOR_IDS = ["blobs", "spirals", "regression", "linear-regression"]


@pytest.mark.parametrize("make, kwargs, x_shape, y_shape", GENERATORS, ids=GENERATOR_IDS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_generator_shapes_and_dtypes(make, kwargs, x_shape, y_shape, dtype):
    X, y = make(**kwargs, seed=0, dtype=dtype)
    assert X.shape == x_shape and X.dtype == dtype
    assert y.shape == y_shape
    assert y.dtype == (dtype if make is make_regression else np.int64)
    assert np.isfinite(X).all() and np.isfinite(y).all()


@pytest.mark.parametrize("make, kwargs, x_shape, y_shape", GENERATORS, ids=GENERATOR_IDS)
def test_generator_seeding(make, kwargs, x_shape, y_shape):
    X1, y1 = make(**kwargs, seed=7)
    X2, y2 = make(**kwargs, seed=7)
    X3, _ = make(**kwargs, seed=8)
    np.testing.assert_array_equal(X1, X2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(X1, X3)
    X4, y4 = make(**kwargs, seed=np.random.default_rng(7))
    np.testing.assert_array_equal(X1, X4)


@pytest.mark.parametrize("seed", range(5))
def test_blobs_separable(seed):
    X, y = make_blobs(n_samples=600, centers=3, cluster_std=0.5, seed=seed)
    centroids = np.array([X[y == k].mean(axis=0) for k in range(3)])
    nearest = np.argmin(((X[:, None, :] - centroids) ** 2).sum(axis=-1), axis=1)
    assert (nearest == y).mean() > 0.9


def test_blobs_given_centers_and_std():
    centers = [[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]]
    X, y = make_blobs(n_samples=3001, centers=centers, cluster_std=[0.5, 1.0, 2.0], seed=0,
                      dtype=np.float64)
    np.testing.assert_array_equal(np.bincount(y), [1001, 1000, 1000])
    for k, (center, std) in enumerate(zip(centers, [0.5, 1.0, 2.0])):
        np.testing.assert_allclose(X[y == k].mean(axis=0), center, atol=0.2)
        np.testing.assert_allclose(X[y == k].std(axis=0), std, rtol=0.1)
    assert not np.array_equal(y[:10], np.sort(y[:10]))  # shuffled, not grouped by class


def test_spirals_geometry_and_nonlinearity():
    X, y = make_spirals(n_samples=600, n_classes=3, noise=0.2, seed=0, dtype=np.float64)
    np.testing.assert_array_equal(np.bincount(y), [200, 200, 200])
    radius = np.hypot(X[:, 0], X[:, 1])
    assert radius.max() == pytest.approx(1.0) and radius.min() > 0
    train, test = np.arange(400), np.arange(400, 600)
    # 1-nearest neighbour follows the arms ...
    distances = ((X[test, None, :] - X[train]) ** 2).sum(axis=-1)
    assert (y[train][distances.argmin(axis=1)] == y[test]).mean() > 0.9
    # ... a least-squares linear classifier cannot.
    A = np.column_stack([X, np.ones(len(X))])
    W = np.linalg.lstsq(A[train], np.eye(3)[y[train]], rcond=None)[0]
    assert ((A[test] @ W).argmax(axis=1) == y[test]).mean() < 0.6


def linear_r2(X, y):
    A = np.column_stack([X, np.ones(len(X))])
    residual = y - A @ np.linalg.lstsq(A, y, rcond=None)[0]
    return 1 - residual.var() / y.var()


def test_regression_linearity():
    X, y = make_regression(n_samples=2000, noise=0.1, nonlinear=True, seed=0, dtype=np.float64)
    assert linear_r2(X, y) < 0.3
    X, y = make_regression(n_samples=2000, noise=0.1, nonlinear=False, seed=0, dtype=np.float64)
    assert linear_r2(X, y) > 0.9
    X, y = make_regression(n_samples=200, noise=0.0, nonlinear=False, seed=0, dtype=np.float64)
    assert linear_r2(X, y) == pytest.approx(1.0, abs=1e-12)


def test_regression_noise_is_additive_with_given_std():
    X0, y0 = make_regression(n_samples=4000, noise=0.0, seed=3, dtype=np.float64)
    X1, y1 = make_regression(n_samples=4000, noise=0.5, seed=3, dtype=np.float64)
    np.testing.assert_array_equal(X0, X1)
    assert (y1 - y0).std() == pytest.approx(0.5, rel=0.05)


@pytest.mark.parametrize("make, kwargs, error, message", [
    (make_blobs, {"n_samples": 0}, ValueError, "n_samples must be an integer >= 1; got 0"),
    (make_blobs, {"n_samples": 2.5}, TypeError, "n_samples must be an integer; got float 2.5"),
    (make_blobs, {"n_features": True}, TypeError, "n_features must be an integer; got bool True"),
    (make_blobs, {"centers": 0}, ValueError, "centers must be an integer >= 1"),
    (make_blobs, {"centers": [[0, 0, 0]]}, ValueError,
     r"centers must be .* \(K, n_features=2\); got shape \(1, 3\)"),
    (make_blobs, {"centers": "abc"}, TypeError, "centers must be an int or an array"),
    (make_blobs, {"cluster_std": -1.0}, ValueError, "cluster_std must be finite and >= 0"),
    (make_blobs, {"cluster_std": [1.0, 2.0]}, ValueError, "cluster_std must be a number or 3"),
    (make_blobs, {"dtype": np.int64}, ValueError, "dtype must be a floating type"),
    (make_blobs, {"seed": "x"}, TypeError, "seed must be None, an int >= 0 or a numpy"),
    (make_blobs, {"seed": -1}, ValueError, "seed must be >= 0; got -1"),
    (make_spirals, {"n_classes": 0}, ValueError, "n_classes must be an integer >= 1; got 0"),
    (make_spirals, {"noise": -0.1}, ValueError, "noise must be a finite number >= 0; got -0.1"),
    (make_spirals, {"noise": "big"}, TypeError, "noise must be a number; got str 'big'"),
    (make_regression, {"n_targets": 0}, ValueError, "n_targets must be an integer >= 1; got 0"),
    (make_regression, {"noise": float("nan")}, ValueError, "noise must be a finite number"),
    (make_regression, {"nonlinear": 1}, TypeError, "nonlinear must be True or False; got int 1"),
])
def test_generator_bad_arguments(make, kwargs, error, message):
    with pytest.raises(error, match=message):
        make(**kwargs)


# ----------------------------------------------------------------------------- splitting


def test_split_sizes_and_alignment():
    X = np.arange(20).reshape(10, 2)
    y = np.arange(10)
    X_train, X_test, y_train, y_test = train_test_split(X, y, seed=0)
    assert (len(X_train), len(X_test)) == (7, 3)  # ceil(0.25 * 10) = 3 test samples
    np.testing.assert_array_equal(X_train[:, 0], 2 * y_train)
    np.testing.assert_array_equal(X_test[:, 0], 2 * y_test)
    np.testing.assert_array_equal(np.sort(np.concatenate([y_train, y_test])), y)
    assert [len(part) for part in train_test_split(y, test_size=4)] == [6, 4]
    assert [len(part) for part in train_test_split(y, test_size=0.7)] == [3, 7]


def test_split_seeding_and_no_shuffle():
    y = np.arange(100)
    a = train_test_split(y, seed=1)
    np.testing.assert_array_equal(a[1], train_test_split(y, seed=1)[1])
    assert not np.array_equal(a[1], train_test_split(y, seed=2)[1])
    assert not np.array_equal(np.sort(a[0]), a[0])
    y_train, y_test, s_train, s_test = train_test_split(y, [str(i) for i in y], test_size=0.2,
                                                        shuffle=False)
    np.testing.assert_array_equal(y_train, np.arange(80))
    np.testing.assert_array_equal(y_test, np.arange(80, 100))
    np.testing.assert_array_equal(s_test, [str(i) for i in range(80, 100)])


def test_split_stratified_proportions():
    y = np.repeat([0, 1, 2], [60, 30, 10])
    y_train, y_test = train_test_split(y, test_size=0.2, stratify=y, seed=0)
    np.testing.assert_array_equal(np.bincount(y_test), [12, 6, 2])
    np.testing.assert_array_equal(np.bincount(y_train), [48, 24, 8])
    # Uneven shares: each class within one sample of its exact share, total exact.
    labels = np.array(["a"] * 37 + ["b"] * 41 + ["c"] * 22)
    for seed in range(5):
        _, test = train_test_split(labels, test_size=0.33, stratify=labels, seed=seed)
        assert len(test) == 33
        for name, count in zip("abc", (37, 41, 22)):
            assert abs((test == name).sum() - count * 0.33) < 1


@pytest.mark.parametrize("args, kwargs, error, message", [
    ((), {}, ValueError, "at least one array"),
    ((np.zeros(3), np.zeros(4)), {}, ValueError, r"same number of samples; got lengths \[3, 4\]"),
    ((np.zeros(0),), {}, ValueError, "arrays must not be empty"),
    ((np.float64(1.0),), {}, ValueError, r"arrays\[0\] must have at least one dimension"),
    ((np.zeros(10),), {"test_size": 0.0}, ValueError, r"as a fraction must be in \(0, 1\)"),
    ((np.zeros(10),), {"test_size": 1.0}, ValueError, r"test_size as a fraction must be in"),
    ((np.zeros(10),), {"test_size": 10}, ValueError, "as a count must be between 1 and 9 .*got 10"),
    ((np.zeros(10),), {"test_size": 0}, ValueError, "as a count must be between 1 and 9 .*got 0"),
    ((np.zeros(10),), {"test_size": "half"}, TypeError, "test_size must be a fraction"),
    ((np.zeros(10),), {"test_size": True}, TypeError, "test_size must be a fraction"),
    ((np.zeros(1),), {}, ValueError, "leaves no training samples out of 1"),
    ((np.zeros(10),), {"stratify": np.zeros(9)}, ValueError, r"stratify must be .*shape \(10,\)"),
    ((np.zeros(10),), {"stratify": np.zeros(10), "shuffle": False}, ValueError,
     "stratify needs shuffle=True"),
    ((np.zeros(10),), {"shuffle": "no"}, TypeError, "shuffle must be True or False"),
])
def test_split_bad_arguments(args, kwargs, error, message):
    with pytest.raises(error, match=message):
        train_test_split(*args, **kwargs)


# ----------------------------------------------------------------------------- npz and csv


def test_npz_round_trip(tmp_path):
    X = np.arange(24, dtype=np.float32).reshape(6, 2, 2)
    y = np.arange(6)
    np.savez(tmp_path / "d.npz", X=X, y=y, extra=np.zeros(1))
    X2, y2 = load_npz(tmp_path / "d.npz")
    np.testing.assert_array_equal(X2, X.reshape(6, 4))  # images flattened to rows
    assert X2.dtype == np.float32
    np.testing.assert_array_equal(y2, y)


def test_npz_errors(tmp_path):
    np.savez(tmp_path / "a.npz", X=np.zeros((3, 2)), labels=np.zeros(3))
    with pytest.raises(ValueError, match=r"has no array 'y': expected arrays 'X' and 'y'; "
                                         r"found 'X', 'labels'"):
        load_npz(tmp_path / "a.npz")
    np.savez(tmp_path / "b.npz", X=np.zeros((3, 2)), y=np.array([1, "a", None], dtype=object))
    with pytest.raises(ValueError, match="array 'y' in .* holds Python objects"):
        load_npz(tmp_path / "b.npz")
    np.savez(tmp_path / "c.npz", X=np.zeros((3, 2)), y=np.zeros(4))
    with pytest.raises(ValueError, match="'X' with 3 rows and 'y' with 4"):
        load_npz(tmp_path / "c.npz")
    np.savez(tmp_path / "d.npz", X=np.zeros(3), y=np.zeros(3))
    with pytest.raises(ValueError, match=r"array 'X' in .* must have shape \(N, I\)"):
        load_npz(tmp_path / "d.npz")
    np.savez(tmp_path / "e.npz", X=np.array([["a"]]), y=np.zeros(1))
    with pytest.raises(ValueError, match="array 'X' in .* must be numeric; got dtype <U1"):
        load_npz(tmp_path / "e.npz")
    np.save(tmp_path / "f.npy", np.zeros(3))
    with pytest.raises(ValueError, match=r"is a \.npy file holding one array"):
        load_npz(tmp_path / "f.npy")
    (tmp_path / "g.txt").write_text("hello")
    with pytest.raises(ValueError, match=f"{quoted(tmp_path / 'g.txt')} is not a NumPy .npz"):
        load_npz(tmp_path / "g.txt")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        load_npz(tmp_path / "missing.npz")


def test_csv_round_trip_with_header(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n0.5,1,2\n\n1.5,-2,0\n")
    X, y = load_csv(path)
    np.testing.assert_array_equal(X, [[0.5, 1], [1.5, -2]])
    np.testing.assert_array_equal(y, [2, 0])
    assert X.dtype == np.float64 and y.dtype == np.int64


def test_csv_options(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("1;0.5;7\n0;0.25;8\n")
    X, y = load_csv(path, label_column=0, delimiter=";")
    np.testing.assert_array_equal(X, [[0.5, 7], [0.25, 8]])
    np.testing.assert_array_equal(y, [1, 0])
    X, y = load_csv(path, delimiter=";", skip_header=True)  # the first line taken as a header
    np.testing.assert_array_equal(X, [[0, 0.25]])
    np.testing.assert_array_equal(y, [8])
    np.testing.assert_array_equal(load_csv(path, label_column=None, delimiter=";"),
                                  [[1, 0.5, 7], [0, 0.25, 8]])
    path.write_text("1  2 0.5\n3 4 1.5\n")
    X, y = load_csv(path, delimiter=None)
    assert y.dtype == np.float64
    np.testing.assert_array_equal(y, [0.5, 1.5])
    path.write_bytes(gzip.compress("x,y\n1,2\n".encode()))
    np.testing.assert_array_equal(load_csv(path)[1], [2])
    path.write_text("\ufeffx,label\n1,2\n")  # byte-order mark from a spreadsheet program
    np.testing.assert_array_equal(load_csv(path)[0], [[1]])


def test_csv_errors_name_the_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("a,b,label\n1,2,3\n\n4,oops,6\n")
    with pytest.raises(ValueError, match=f"line 4 of {quoted(path)}, column 2: expected a "
                                         f"number; found 'oops'"):
        load_csv(path)
    path.write_text("1,2,3\n4,5\n")
    with pytest.raises(ValueError, match="line 2 of .* has 2 fields: expected 3, as on line 1"):
        load_csv(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="line 1 of .*, column 1: expected a number; found 'a'"):
        load_csv(path, skip_header=False)
    path.write_text("a,b\n\n")
    with pytest.raises(ValueError, match="no data rows after its header on line 1"):
        load_csv(path)
    path.write_text("")
    with pytest.raises(ValueError, match="no data rows: the file is empty or blank"):
        load_csv(path)
    path.write_text("1\n2\n")
    with pytest.raises(ValueError, match="has a single column"):
        load_csv(path)
    path.write_text("1,2\n")
    with pytest.raises(ValueError, match="label_column must be between -2 and 1 .*; got 2"):
        load_csv(path, label_column=2)
    with pytest.raises(FileNotFoundError, match="missing.csv"):
        load_csv(tmp_path / "missing.csv")


@pytest.mark.parametrize("kwargs, error, message", [
    ({"label_column": "label"}, TypeError, "label_column must be an int or None; got str 'label'"),
    ({"delimiter": ", "}, ValueError, "delimiter must be one character"),
    ({"delimiter": "\n"}, ValueError, "delimiter must be one character other than a line break"),
    ({"skip_header": "yes"}, ValueError, "skip_header must be 'auto', True or False; got 'yes'"),
])
def test_csv_bad_arguments(tmp_path, kwargs, error, message):
    with pytest.raises(error, match=message):
        load_csv(tmp_path / "d.csv", **kwargs)


def test_load_npz_maps_an_uncompressed_x(tmp_path):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((7, 2, 3)).astype(np.float32), rng.integers(0, 3, 7)
    np.savez(tmp_path / "plain.npz", y=y, X=X)
    np.savez_compressed(tmp_path / "packed.npz", X=X, y=y)
    X1, y1 = load_npz(tmp_path / "plain.npz", mmap=True)
    assert isinstance(X1, np.memmap) and not X1.flags.writeable
    np.testing.assert_array_equal(X1, X.reshape(7, 6))
    np.testing.assert_array_equal(y1, y)
    X2, _ = load_npz(tmp_path / "packed.npz", mmap=True)  # compressed: read as usual
    assert not isinstance(X2, np.memmap)
    np.testing.assert_array_equal(X2, X.reshape(7, 6))
