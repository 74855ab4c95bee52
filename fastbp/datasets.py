"""Data for fastbp: a bundled digits set, MNIST IDX files, synthetic generators, splitting, loaders.

Every loader and generator returns features ``X`` of shape (N, I), one row per sample, and
targets ``y``: int64 class labels (N,) for classification, or floats (N, O) for regression.
Nothing here imports scikit-learn; the digits are read from a file bundled with the package.

Every problem with an argument or a file raises an error that names the argument or the
path, what was expected, and what was found.
"""
import gzip
import math
import numbers
import os
import struct
import warnings
import zlib
from importlib import resources
from itertools import chain

import numpy as np

from ._validation import check_bool, check_int, check_nonnegative, check_seed, describe

__all__ = [
    "load_digits",
    "load_idx",
    "save_idx",
    "load_mnist",
    "make_blobs",
    "make_spirals",
    "make_regression",
    "train_test_split",
    "load_npz",
    "load_csv",
]

_GZIP_MAGIC = b"\x1f\x8b"


# ----------------------------------------------------------------------------- argument checks


def _check_dtype(dtype, floating, reason=""):
    """Return ``np.dtype(dtype)``: floating if ``floating``, else any numeric type."""
    try:
        parsed = None if dtype is None else np.dtype(dtype)  # np.dtype(None) would be float64
    except TypeError:
        parsed = None
    if parsed is None:
        raise TypeError(f"dtype must be a NumPy dtype such as np.float32; got {dtype!r}")
    dtype = parsed
    if floating and not np.issubdtype(dtype, np.floating):
        raise ValueError(f"dtype must be a floating type such as np.float32 or np.float64"
                         f"{reason}; got {dtype}")
    if not np.issubdtype(dtype, np.number):
        raise ValueError(f"dtype must be a numeric type such as np.float32; got {dtype}")
    return dtype


def _check_path(path, name):
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike); got {describe(path)}")
    return os.fspath(path)


def _rng(seed):
    return np.random.default_rng(check_seed(seed))


def _class_counts(n_samples, n_classes):
    """Split ``n_samples`` as evenly as possible, the first classes taking the remainder."""
    counts = np.full(n_classes, n_samples // n_classes)
    counts[: n_samples % n_classes] += 1
    return counts


# ----------------------------------------------------------------------------- bundled digits


def load_digits(dtype=np.float32, scale=True):
    """Load the UCI 8x8 handwritten digits bundled with fastbp.

    1,797 images of the digits 0..9 (174 to 183 of each), each 8x8 pixels holding counts
    0..16, flattened row by row. Source and licence: ``fastbp/data/README.md``.

    Parameters
    ----------
    dtype : numpy dtype, default np.float32
        Type of ``X``; must be floating when ``scale`` is True.
    scale : bool, default True
        Divide the pixels by 16 so that they lie in [0, 1].

    Returns
    -------
    X : ndarray of shape (1797, 64)
    y : int64 ndarray of shape (1797,)
    """
    scale = check_bool(scale, "scale")
    dtype = _check_dtype(dtype, floating=scale, reason=" when scale=True")
    resource = resources.files(__package__) / "data" / "digits.npz"
    with resource.open("rb") as f, np.load(f, allow_pickle=False) as archive:
        X = archive["X"].astype(dtype)
        y = archive["y"].astype(np.int64)
    if scale:
        X /= 16
    return X, y


# ----------------------------------------------------------------------------- IDX (MNIST)

# IDX element type code -> (big-endian element dtype, name used in messages)
_IDX_TYPES = {
    0x08: (np.dtype(">u1"), "unsigned bytes"),
    0x09: (np.dtype(">i1"), "signed bytes"),
    0x0B: (np.dtype(">i2"), "16-bit integers"),
    0x0C: (np.dtype(">i4"), "32-bit integers"),
    0x0D: (np.dtype(">f4"), "32-bit floats"),
    0x0E: (np.dtype(">f8"), "64-bit floats"),
}
_IDX_CODES = {dtype.newbyteorder("="): code for code, (dtype, _) in _IDX_TYPES.items()}
_IDX_UBYTE = 0x08
_IDX_EXPECTED = {
    "images": (0x00000803, "IDX images of unsigned bytes"),
    "labels": (0x00000801, "IDX labels of unsigned bytes"),
}


def _read_bytes(path):
    """Return the bytes of ``path``, gunzipped if they start with the gzip magic bytes."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:2] != _GZIP_MAGIC:
        return data, False
    try:
        return gzip.decompress(data), True
    except (OSError, EOFError, zlib.error) as exc:
        raise ValueError(f"{path!r} starts with the gzip magic bytes 1f 8b "
                         f"but does not decompress: {exc}") from exc


def _read_idx(path, role):
    """Read the IDX file ``path`` as ``role`` ("images" or "labels").

    Returns the array in the file's own big-endian type and the IDX type code.
    """
    data, gzipped = _read_bytes(path)
    expected, expected_what = _IDX_EXPECTED[role]
    if len(data) < 4:
        raise ValueError(f"{path!r} is too short for an IDX file: expected a 4-byte magic "
                         f"number 0x{expected:08X} ({expected_what}), file has {len(data)} bytes")
    magic = int.from_bytes(data[:4], "big")
    code, rank = data[2], data[3]

    def bad_magic(found):
        return ValueError(f"bad magic number 0x{magic:08X} in {path!r}: expected "
                          f"0x{expected:08X} ({expected_what}); {found}")

    if data[:2] != b"\0\0" or code not in _IDX_TYPES:
        raise bad_magic("an IDX header is two zero bytes, a type code "
                        "(0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E), then the rank")
    element, type_name = _IDX_TYPES[code]
    if role == "images" and rank < 2:
        raise bad_magic(f"found a rank-{rank} array of {type_name}, images need rank 2 or more")
    if role == "labels" and rank != 1:
        raise bad_magic(f"found a rank-{rank} array of {type_name}, labels need rank 1")
    if role == "labels" and element.kind == "f":
        raise bad_magic(f"found {type_name}, labels need an integer type")

    header = 4 + 4 * rank
    if len(data) < header:
        raise ValueError(f"{path!r} is truncated: a rank-{rank} IDX header is {header} bytes, "
                         f"file has {len(data)}")
    shape = struct.unpack(f">{rank}I", data[4:header])
    n_bytes = math.prod(shape) * element.itemsize
    found = len(data) - header
    if found != n_bytes:
        problem = "is truncated" if found < n_bytes else "has trailing data"
        raise ValueError(
            f"{path!r} {problem}: header says {'x'.join(map(str, shape))} {type_name} = "
            f"{n_bytes} bytes of data, file has {found}{' after gunzip' if gzipped else ''}")
    return np.frombuffer(data, element, offset=header).reshape(shape), code


def _load_idx(images, labels, dtype, scale):
    raw, code = _read_idx(images, "images")
    X = raw.reshape(raw.shape[0], math.prod(raw.shape[1:])).astype(dtype)
    if scale and code == _IDX_UBYTE:
        X /= 255
    if labels is None:
        return X
    y = _read_idx(labels, "labels")[0].astype(np.int64)
    if len(y) != len(X):
        raise ValueError(f"{images!r} holds {len(X)} images but {labels!r} holds {len(y)} "
                         f"labels: expected the same count")
    return X, y


def load_idx(images, labels=None, dtype=np.float32, scale=True):
    """Read images, and optionally labels, from IDX files (the MNIST format).

    A file may be gzipped or not: gzip is recognised by its magic bytes 1f 8b, not by the
    name. Headers are checked (images: rank 2 or more, usually 0x00000803, unsigned bytes of
    rank 3; labels: integers of rank 1, usually 0x00000801) and the amount of data must match
    the dimensions in the header exactly.

    Parameters
    ----------
    images : str or os.PathLike
        IDX file of N images, flattened to rows of rows*cols pixels.
    labels : str or os.PathLike, optional
        IDX file of N integer labels.
    dtype : numpy dtype, default np.float32
        Type of ``X``; must be floating when ``scale`` is True.
    scale : bool, default True
        Divide unsigned-byte pixels by 255 so that they lie in [0, 1]. Images stored as
        other types are converted to ``dtype`` unscaled.

    Returns
    -------
    X : ndarray of shape (N, I)
        Returned alone when ``labels`` is None.
    y : int64 ndarray of shape (N,)

    Raises
    ------
    FileNotFoundError
        A file does not exist.
    ValueError
        A file is not a valid IDX file of the expected kind, or the counts differ.
    """
    images = _check_path(images, "images")
    if labels is not None:
        labels = _check_path(labels, "labels")
    scale = check_bool(scale, "scale")
    dtype = _check_dtype(dtype, floating=scale, reason=" when scale=True")
    return _load_idx(images, labels, dtype, scale)


def save_idx(path, array):
    """Write ``array`` to ``path`` as an IDX file, gzipped when the name ends in ".gz".

    Parameters
    ----------
    path : str or os.PathLike
    array : array_like
        At least one dimension, of type uint8, int8, int16, int32, float32 or float64.
        Images for :func:`load_idx` have shape (N, rows, cols) and labels shape (N,).
    """
    name = _check_path(path, "path")
    array = np.asarray(array)
    code = _IDX_CODES.get(array.dtype.newbyteorder("="))
    if code is None:
        raise TypeError(f"array must be of type uint8, int8, int16, int32, float32 or float64 "
                        f"to be stored as IDX; got {array.dtype} (convert it first, e.g. "
                        f"array.astype(np.int32))")
    if not 1 <= array.ndim <= 255:
        raise ValueError(f"array must have 1 to 255 dimensions to be stored as IDX; "
                         f"got shape {array.shape}")
    if max(array.shape) >= 2**32:
        raise ValueError(f"array dimensions must be below 2**32 to be stored as IDX; "
                         f"got shape {array.shape}")
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    payload = array.astype(_IDX_TYPES[code][0], copy=False).tobytes()
    if name.lower().endswith(".gz"):
        # mtime=0 so that saving the same array again writes the same bytes.
        f = gzip.GzipFile(name, "wb", mtime=0)
    else:
        f = open(name, "wb")
    with f:
        f.write(header)
        f.write(payload)


def _find_mnist_file(directory, kind, stem, suffix, what):
    names = [f"{stem}-{suffix}", f"{stem}-{suffix}.gz", f"{stem}.{suffix}", f"{stem}.{suffix}.gz"]
    for name in names:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    raise FileNotFoundError(f"no MNIST {kind} {what} in {directory!r}: "
                            f"looked for {', '.join(names)}")


def load_mnist(directory, kind="train", dtype=np.float32, scale=True):
    """Load MNIST (or a set in its format, such as Fashion-MNIST) from a directory of IDX files.

    Looks for ``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte`` (``t10k-...`` for
    ``kind="test"``), each with or without ``.gz``, also under the dotted spelling
    ``train-images.idx3-ubyte``.

    Parameters
    ----------
    directory : str or os.PathLike
    kind : {"train", "test"}, default "train"
    dtype : numpy dtype, default np.float32
    scale : bool, default True
        Divide the pixels by 255 so that they lie in [0, 1].

    Returns
    -------
    X : ndarray of shape (N, 784)
    y : int64 ndarray of shape (N,)

    Raises
    ------
    FileNotFoundError
        The directory or one of the files is missing; the message lists the names tried.
    ValueError
        A file is not valid; see :func:`load_idx`.
    """
    directory = _check_path(directory, "directory")
    if kind not in ("train", "test"):
        raise ValueError(f"kind must be 'train' or 'test'; got {kind!r}")
    scale = check_bool(scale, "scale")
    dtype = _check_dtype(dtype, floating=scale, reason=" when scale=True")
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"MNIST directory {directory!r} does not exist "
                                f"or is not a directory")
    prefix = "train" if kind == "train" else "t10k"
    images = _find_mnist_file(directory, kind, f"{prefix}-images", "idx3-ubyte", "images")
    labels = _find_mnist_file(directory, kind, f"{prefix}-labels", "idx1-ubyte", "labels")
    return _load_idx(images, labels, dtype, scale)


# ----------------------------------------------------------------------------- generators


def make_blobs(n_samples=1000, n_features=2, centers=3, cluster_std=1.0, seed=None,
               dtype=np.float32):
    """Isotropic Gaussian clusters, one class per cluster.

    Parameters
    ----------
    n_samples : int, default 1000
        Split as evenly as possible between the clusters.
    n_features : int, default 2
    centers : int or array_like of shape (K, n_features), default 3
        The number of clusters, whose centers are then drawn uniformly from the box
        [-10, 10]^n_features, or the centers themselves.
    cluster_std : float or array_like of shape (K,), default 1.0
        Standard deviation of every cluster, or of each.
    seed : None, int or numpy.random.Generator
    dtype : numpy floating dtype, default np.float32

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : int64 ndarray of shape (n_samples,)
        The cluster of each sample, 0..K-1, in random order.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_features = check_int(n_features, "n_features", 1)
    dtype = _check_dtype(dtype, floating=True)
    rng = _rng(seed)
    if isinstance(centers, (numbers.Integral, np.bool_)):
        n_centers = check_int(centers, "centers", 1)
        center_points = rng.uniform(-10.0, 10.0, size=(n_centers, n_features))
    else:
        try:
            center_points = np.asarray(centers, dtype=np.float64)
        except (TypeError, ValueError):
            raise TypeError(f"centers must be an int or an array of shape (K, n_features); "
                            f"got {describe(centers)}") from None
        if center_points.ndim != 2 or center_points.shape[1] != n_features \
                or len(center_points) == 0:
            raise ValueError(f"centers must be an int or an array of shape "
                             f"(K, n_features={n_features}); got shape {center_points.shape}")
        if not np.isfinite(center_points).all():
            raise ValueError("centers must be finite; got NaN or infinity")
        n_centers = len(center_points)
    try:
        std = np.broadcast_to(np.asarray(cluster_std, dtype=np.float64), (n_centers,))
    except (TypeError, ValueError):
        raise ValueError(f"cluster_std must be a number or {n_centers} numbers, one per "
                         f"center; got {cluster_std!r}") from None
    if not (np.isfinite(std) & (std >= 0)).all():
        raise ValueError(f"cluster_std must be finite and >= 0; got {cluster_std!r}")

    y = rng.permutation(np.repeat(np.arange(n_centers, dtype=np.int64),
                                  _class_counts(n_samples, n_centers)))
    X = center_points[y] + std[y, None] * rng.standard_normal((n_samples, n_features))
    return X.astype(dtype), y


def make_spirals(n_samples=1000, n_classes=3, noise=0.2, seed=None, dtype=np.float32):
    """Interleaved 2-D spiral arms, one class per arm (the classic CS231n toy problem).

    Arm k starts at the origin at angle 2*pi*k/K and winds one full turn out to radius 1,
    its samples evenly spaced in radius. No straight line separates the arms; a small
    MLP does.

    Parameters
    ----------
    n_samples : int, default 1000
        Split as evenly as possible between the arms.
    n_classes : int, default 3
        The number of arms, K.
    noise : float, default 0.2
        Standard deviation of the Gaussian noise added to each sample's angle, in radians.
    seed : None, int or numpy.random.Generator
    dtype : numpy floating dtype, default np.float32

    Returns
    -------
    X : ndarray of shape (n_samples, 2)
    y : int64 ndarray of shape (n_samples,)
        The arm of each sample, in random order.
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_classes = check_int(n_classes, "n_classes", 1)
    noise = check_nonnegative(noise, "noise")
    dtype = _check_dtype(dtype, floating=True)
    rng = _rng(seed)
    counts = _class_counts(n_samples, n_classes)
    y = np.repeat(np.arange(n_classes, dtype=np.int64), counts)
    # Radii start one step out from 0 so that no two arms share the point at the origin.
    radius = np.concatenate([np.linspace(0.0, 1.0, count + 1)[1:] for count in counts])
    angle = 2 * np.pi * (y / n_classes + radius) + noise * rng.standard_normal(n_samples)
    X = np.column_stack([radius * np.sin(angle), radius * np.cos(angle)])
    order = rng.permutation(n_samples)
    return X[order].astype(dtype), y[order]


def _unit_columns(rng, n_rows, n_columns):
    a = rng.standard_normal((n_rows, n_columns))
    return a / np.linalg.norm(a, axis=0)


def make_regression(n_samples=1000, n_features=10, n_targets=1, noise=0.1, nonlinear=True,
                    seed=None, dtype=np.float32):
    """Regression targets of standard normal features, linear or smoothly nonlinear.

    With ``nonlinear=True`` each target is ``sin(2 u) + 0.5 v w``, where u, v and w are
    projections of the sample on random unit directions (different for each target). The
    product has no linear part and the sine little, so linear regression explains only
    about a tenth of the variance, while an MLP can learn nearly all of it. With
    ``nonlinear=False`` each target is ``X @ c`` for random coefficients c with
    ``|c|`` about 1. Either way the noise-free targets have a variance of order 1.

    Parameters
    ----------
    n_samples : int, default 1000
    n_features : int, default 10
    n_targets : int, default 1
    noise : float, default 0.1
        Standard deviation of the Gaussian noise added to the targets.
    nonlinear : bool, default True
    seed : None, int or numpy.random.Generator
    dtype : numpy floating dtype, default np.float32

    Returns
    -------
    X : ndarray of shape (n_samples, n_features)
    y : ndarray of shape (n_samples, n_targets), of type ``dtype``
    """
    n_samples = check_int(n_samples, "n_samples", 1)
    n_features = check_int(n_features, "n_features", 1)
    n_targets = check_int(n_targets, "n_targets", 1)
    noise = check_nonnegative(noise, "noise")
    nonlinear = check_bool(nonlinear, "nonlinear")
    dtype = _check_dtype(dtype, floating=True)
    rng = _rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    if nonlinear:
        u, v, w = (X @ _unit_columns(rng, n_features, n_targets) for _ in range(3))
        target = np.sin(2 * u) + 0.5 * v * w
    else:
        target = X @ (rng.standard_normal((n_features, n_targets)) / np.sqrt(n_features))
    y = target + noise * rng.standard_normal((n_samples, n_targets))
    return X.astype(dtype), y.astype(dtype)


# ----------------------------------------------------------------------------- splitting


def _test_count(test_size, n):
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, numbers.Real):
        raise TypeError(f"test_size must be a fraction in (0, 1) or an int count; "
                        f"got {describe(test_size)}")
    if isinstance(test_size, numbers.Integral):
        if not 1 <= test_size <= n - 1:
            raise ValueError(f"test_size as a count must be between 1 and {n - 1} so that both "
                             f"parts of the {n} samples are non-empty; got {test_size}")
        return int(test_size)
    if not 0 < test_size < 1:
        raise ValueError(f"test_size as a fraction must be in (0, 1); got {test_size}")
    # The tolerance keeps 0.7 * 10 = 7.000000000000001 from rounding up to 8.
    n_test = math.ceil(test_size * n - 1e-9)
    if n_test >= n:
        raise ValueError(f"test_size={test_size} leaves no training samples out of {n}")
    return n_test


def _stratified_indices(labels, n_test, rng):
    """Split indices so that each class has its share of the test set, within one sample."""
    n = len(labels)
    classes = np.unique(labels, return_inverse=True)[1].reshape(n)
    counts = np.bincount(classes)
    # Largest-remainder apportionment: each class gets floor(count * n_test / n) test samples,
    # and the places left over go to the largest remainders (ties broken at random), so the
    # per-class counts add up to n_test exactly.
    per_class, remainder = np.divmod(counts * n_test, n)
    left_over = n_test - per_class.sum()
    order = np.lexsort((rng.random(len(counts)), -remainder))
    per_class[order[:left_over]] += 1

    # Shuffle, group by class keeping the shuffled order, take the first per_class of each.
    shuffled = rng.permutation(n)
    grouped = shuffled[np.argsort(classes[shuffled], kind="stable")]
    starts = np.cumsum(counts) - counts
    rank = np.arange(n) - np.repeat(starts, counts)
    in_test = rank < np.repeat(per_class, counts)
    return rng.permutation(grouped[~in_test]), rng.permutation(grouped[in_test])


def train_test_split(*arrays, test_size=0.25, seed=None, shuffle=True, stratify=None):
    """Split arrays into random train and test parts, row by row.

    Parameters
    ----------
    *arrays : array_like
        Arrays with the same length N (their first dimension).
    test_size : float in (0, 1) or int, default 0.25
        The fraction of the samples to test on, rounded up, or their number.
    seed : None, int or numpy.random.Generator
    shuffle : bool, default True
        Shuffle before splitting; with False the last samples are the test part.
    stratify : array_like of shape (N,), optional
        Class labels whose proportions the two parts keep (each class's test count is
        within one of its exact share). Needs ``shuffle=True``.

    Returns
    -------
    list of ndarray
        ``[a_train, a_test, b_train, b_test, ...]``, in the order of ``arrays``.
    """
    if not arrays:
        raise ValueError("arrays: train_test_split needs at least one array; got none")
    arrays = [np.asarray(a) for a in arrays]
    for i, a in enumerate(arrays):
        if a.ndim == 0:
            raise ValueError(f"arrays[{i}] must have at least one dimension; got a scalar {a!r}")
    lengths = [len(a) for a in arrays]
    if len(set(lengths)) > 1:
        raise ValueError(f"arrays must all have the same number of samples; got lengths {lengths}")
    n = lengths[0]
    if n == 0:
        raise ValueError("arrays must not be empty; got 0 samples")
    n_test = _test_count(test_size, n)
    shuffle = check_bool(shuffle, "shuffle")
    rng = _rng(seed)
    if stratify is not None:
        if not shuffle:
            raise ValueError("stratify needs shuffle=True; got shuffle=False")
        labels = np.asarray(stratify)
        if labels.shape != (n,):
            raise ValueError(f"stratify must be an array of shape ({n},), one label per sample; "
                             f"got shape {labels.shape}")
        train, test = _stratified_indices(labels, n_test, rng)
    elif shuffle:
        order = rng.permutation(n)
        train, test = order[n_test:], order[:n_test]
    else:
        train, test = np.arange(n - n_test), np.arange(n - n_test, n)
    return [part for a in arrays for part in (a[train], a[test])]


# ----------------------------------------------------------------------------- file loaders


def _is_numeric(dtype):
    return np.issubdtype(dtype, np.number) or dtype == np.bool_


def _npz_array(archive, key, path):
    try:
        a = archive[key]
    except ValueError as exc:  # object arrays need pickle, which is refused
        raise ValueError(f"array {key!r} in {path!r} holds Python objects, which cannot be "
                         f"loaded without pickle: expected a numeric array") from exc
    if not _is_numeric(a.dtype):
        raise ValueError(f"array {key!r} in {path!r} must be numeric; got dtype {a.dtype}")
    return a


def _stored_member_map(name, key):
    """A read-only memory map of array ``key`` in an .npz, or None where it is compressed or not plain.

    np.load ignores mmap_mode for archives; an uncompressed (np.savez) member is a .npy file
    stored as is, so its data sits at a fixed offset in the archive and maps like one.
    """
    import zipfile

    with zipfile.ZipFile(name) as archive:
        info = archive.getinfo(key + ".npy")
    if info.compress_type != zipfile.ZIP_STORED:
        return None
    with open(name, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the local file header: its name and extra field lengths end it
        n_name, n_extra = struct.unpack("<HH", local[26:30])
        f.seek(info.header_offset + 30 + n_name + n_extra)
        version = np.lib.format.read_magic(f)
        read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                       else np.lib.format.read_array_header_2_0)
        shape, fortran, dtype = read_header(f)
        offset = f.tell()
    if fortran or dtype.hasobject or not _is_numeric(dtype) or math.prod(shape) == 0:
        return None
    return np.memmap(name, dtype=dtype, mode="r", shape=shape, offset=offset)


def load_npz(path, mmap=False):
    """Load features ``X`` and targets ``y`` from a NumPy ``.npz`` archive.

    Saved, for instance, with ``np.savez(path, X=X, y=y)``. Other arrays in the archive are
    ignored, and nothing is unpickled.

    Parameters
    ----------
    path : str or os.PathLike
    mmap : bool
        Memory-map ``X`` (read-only) instead of reading it, when the archive stores it
        uncompressed (``np.savez``, not ``np.savez_compressed``, which is read as usual): rows
        are then read when used, as each rank of a data-parallel fit reads only its shares.

    Returns
    -------
    X : ndarray of shape (N, I)
        As stored; an array of more than two dimensions is flattened to one row per sample.
    y : ndarray of shape (N,) or (N, O)
        As stored.
    """
    name = _check_path(path, "path")
    try:
        archive = np.load(name, allow_pickle=False)
    except (ValueError, EOFError, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise
        raise ValueError(f"{name!r} is not a NumPy .npz archive: {exc}") from exc
    if isinstance(archive, np.ndarray):
        raise ValueError(f"{name!r} is a .npy file holding one array: expected a .npz archive "
                         f"with arrays 'X' and 'y', as written by np.savez(path, X=X, y=y)")
    with archive:
        for key in ("X", "y"):
            if key not in archive.files:
                found = ", ".join(map(repr, archive.files)) or "no arrays"
                raise ValueError(f"{name!r} has no array {key!r}: expected arrays 'X' and 'y'; "
                                 f"found {found}")
        mapped = _stored_member_map(name, "X") if mmap else None
        X = mapped if mapped is not None else _npz_array(archive, "X", name)
        y = _npz_array(archive, "y", name)
    if X.ndim < 2:
        raise ValueError(f"array 'X' in {name!r} must have shape (N, I), one row per sample; "
                         f"got shape {X.shape}")
    if y.ndim not in (1, 2):
        raise ValueError(f"array 'y' in {name!r} must have shape (N,) or (N, O); "
                         f"got shape {y.shape}")
    if len(X) != len(y):
        raise ValueError(f"arrays in {name!r} must have the same number of samples; "
                         f"got 'X' with {len(X)} rows and 'y' with {len(y)}")
    return X.reshape(len(X), math.prod(X.shape[1:])), y


def open_text(path):
    """Open ``path`` for reading text, through gzip if it starts with the gzip magic bytes."""
    with open(path, "rb") as f:
        gzipped = f.read(2) == _GZIP_MAGIC
    # utf-8-sig drops the byte-order mark that spreadsheet programs put at the start.
    if gzipped:
        return gzip.open(path, "rt", encoding="utf-8-sig")
    return open(path, encoding="utf-8-sig")


def is_number(field):
    """Whether a text field reads as a number (the CSV readers here and in the command line)."""
    try:
        float(field)
    except ValueError:
        return False
    return True


def _csv_problem(path, delimiter, header_line):
    """Find the first line of ``path`` that numpy could not read, and describe it."""
    n_fields = None
    with open_text(path) as f:
        for line_number, line in enumerate(f, 1):
            if line_number <= header_line or line.isspace():
                continue
            fields = line.rstrip("\r\n").split(delimiter)
            if n_fields is None:
                n_fields, first_line = len(fields), line_number
            elif len(fields) != n_fields:
                return (f"line {line_number} of {path!r} has {len(fields)} fields: expected "
                        f"{n_fields}, as on line {first_line}")
            for column, field in enumerate(fields, 1):
                if not is_number(field):
                    return (f"line {line_number} of {path!r}, column {column}: expected a "
                            f"number; found {field.strip()!r}")
    return None


def load_csv(path, label_column=-1, delimiter=",", skip_header="auto"):
    """Load a numeric CSV file and split off its label column.

    Blank lines are skipped. A gzipped file is recognised by its magic bytes.

    Parameters
    ----------
    path : str or os.PathLike
    label_column : int or None, default -1
        Index of the column holding the targets; negative counts from the end. None keeps
        every column as a feature and returns ``X`` alone.
    delimiter : str or None, default ","
        The one-character field separator; None splits on runs of whitespace.
    skip_header : "auto" or bool, default "auto"
        Whether the first non-blank line is a header; "auto" takes it for one when any of
        its fields is not a number.

    Returns
    -------
    X : float64 ndarray of shape (N, I)
        Returned alone when ``label_column`` is None.
    y : ndarray of shape (N,)
        int64 when every label is a whole number, float64 otherwise.
    """
    name = _check_path(path, "path")
    auto = _check_csv_arguments(label_column, delimiter, skip_header)
    data, header_line = _read_csv_numbers(name, delimiter, skip_header, auto)
    if data.size == 0:
        raise ValueError(f"{name!r} has no data rows after its header on line {header_line}")
    if label_column is None:
        return data
    return _split_label_column(data, label_column, name)


def _check_csv_arguments(label_column, delimiter, skip_header):
    """load_csv's argument checks; returns whether skip_header is "auto"."""
    if label_column is not None and (isinstance(label_column, (bool, np.bool_))
                                     or not isinstance(label_column, numbers.Integral)):
        raise TypeError(f"label_column must be an int or None; got {describe(label_column)}")
    if delimiter is not None and (not isinstance(delimiter, str) or len(delimiter) != 1
                                  or delimiter in "\r\n"):
        raise ValueError(f"delimiter must be one character other than a line break, or None "
                         f"for whitespace; got {delimiter!r}")
    auto = isinstance(skip_header, str) and skip_header == "auto"
    if not (auto or isinstance(skip_header, (bool, np.bool_))):
        raise ValueError(f"skip_header must be 'auto', True or False; got {skip_header!r}")
    return auto


def _read_csv_numbers(name, delimiter, skip_header, auto):
    """(the CSV's non-blank rows after any header as a 2-D float64 array, the header's line
    number or 0); ValueError naming the first line that is not numbers."""
    with open_text(name) as f:
        numbered = enumerate(f, 1)
        first_number, first = next(((i, line) for i, line in numbered if not line.isspace()),
                                   (0, None))
        if first is None:
            raise ValueError(f"{name!r} has no data rows: the file is empty or blank")
        if auto:
            skip_header = not all(map(is_number, first.split(delimiter)))
        header_line = first_number if skip_header else 0
        rest = (line for _, line in numbered if not line.isspace())
        # numpy's C parser is a few times faster than Python's float(), but it does not say
        # which line it choked on: on failure the file is read again to find that line.
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                data = np.loadtxt(rest if skip_header else chain([first], rest),
                                  dtype=np.float64, delimiter=delimiter, comments=None, ndmin=2)
        except ValueError as exc:
            problem = _csv_problem(name, delimiter, header_line)
            raise ValueError(problem or f"{name!r} cannot be read as numbers: {exc}") from exc
    return data, header_line


def _split_label_column(data, label_column, name):
    """(X, y): the CSV's data without and with only its label column; y int64 where every
    label is a whole number."""
    n_columns = data.shape[1]
    if n_columns < 2:
        raise ValueError(f"{name!r} has a single column: expected feature columns besides "
                         f"label_column={label_column}")
    if not -n_columns <= label_column < n_columns:
        raise ValueError(f"label_column must be between {-n_columns} and {n_columns - 1} for "
                         f"the {n_columns} columns of {name!r}; got {label_column}")
    y = data[:, label_column].copy()
    X = np.delete(data, label_column, axis=1)
    if np.isfinite(y).all() and (y == np.trunc(y)).all():
        y = y.astype(np.int64)
    return X, y
