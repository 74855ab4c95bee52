"""The compiled loop's views without reference counting (fastbp/backends/_views.py)."""
import platform
import sys
from collections import namedtuple

import numba
import numpy as np
import pytest

from fastbp.backends._views import borrowed, matrix, prefetch

Pair = namedtuple("Pair", "a b n")


@numba.njit
def _matrix_of(buf, start, n_rows, n_cols):
    view = matrix(buf, start, n_rows, n_cols)
    view[n_rows - 1, n_cols - 1] = -1.0  # writes go to buf
    return view.copy()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("start, n_rows, n_cols", [(0, 3, 4), (5, 1, 7), (2, 4, 1), (9, 2, 3)])
def test_matrix_is_the_reshaped_slice(dtype, start, n_rows, n_cols):
    buf = np.arange(20, dtype=dtype)
    expected = buf[start:start + n_rows * n_cols].reshape(n_rows, n_cols).copy()
    expected[-1, -1] = -1.0
    got = _matrix_of(buf, start, n_rows, n_cols)
    np.testing.assert_array_equal(got, expected)
    assert buf[start + n_rows * n_cols - 1] == -1.0


@numba.njit
def _through_borrowed(pair, x):
    p, y = borrowed((pair, x))
    p.a[0] += 1.0
    p.b[1] += 2
    y[2] = 7.0
    return p.a.sum() + p.b.sum() + y.sum() + p.n


def test_borrowed_arrays_are_the_same_memory_and_hold_no_reference():
    pair = Pair(np.zeros(3), np.zeros(4, dtype=np.int64), 5)
    x = np.zeros((2, 3), dtype=np.float32).ravel()
    counts = [sys.getrefcount(a) for a in (pair.a, pair.b, x)]
    assert _through_borrowed(pair, x) == 1.0 + 2 + 7.0 + 5
    assert pair.a[0] == 1.0 and pair.b[1] == 2 and x[2] == 7.0
    assert [sys.getrefcount(a) for a in (pair.a, pair.b, x)] == counts


@numba.njit
def _matrix_of_borrowed(buf):
    return matrix(borrowed(buf), 2, 2, 2).sum()


def test_matrix_of_a_borrowed_buffer():
    assert _matrix_of_borrowed(np.arange(8.0)) == 2 + 3 + 4 + 5


@numba.njit
def _prefetch_rows_of(X, labels, rows):
    for k in rows:
        prefetch(X, k, 0, 3)
        prefetch(X, k, X.shape[1] * X.itemsize - 1, 2)
        prefetch(labels, k, 0, 1)
        prefetch(labels, k, 0, 0)
    return X[rows[0], 0]


def test_prefetch_reads_nothing_and_never_faults():
    X = np.arange(12.0, dtype=np.float32).reshape(4, 3)
    labels = np.arange(4)
    # Rows far past the arrays (unmapped memory): a prefetch is only a hint, and does not fault.
    assert _prefetch_rows_of(X, labels, np.array([2, 1 << 40, -(1 << 40), 3])) == 6.0
    np.testing.assert_array_equal(X, np.arange(12.0, dtype=np.float32).reshape(4, 3))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 prefetch instructions")
def test_prefetch_emits_the_hint_of_each_locality():
    X, labels = np.zeros((2, 3), dtype=np.float32), np.zeros(2, dtype=np.int64)
    _prefetch_rows_of(X, labels, np.array([0]))
    asm = _prefetch_rows_of.inspect_asm(_prefetch_rows_of.signatures[0])
    for mnemonic in ("prefetcht0", "prefetcht1", "prefetcht2", "prefetchnta"):
        assert mnemonic in asm


def test_prefetch_wants_a_literal_locality():
    @numba.njit
    def hint(X, level):
        prefetch(X, 0, 0, level)

    with pytest.raises(numba.core.errors.TypingError):
        hint(np.zeros((2, 2)), 3)

    @numba.njit
    def out_of_range(X):
        prefetch(X, 0, 0, 4)

    with pytest.raises(numba.core.errors.TypingError):
        out_of_range(np.zeros((2, 2)))


@pytest.mark.skipif(platform.machine().lower() not in ("x86_64", "amd64"), reason="x86 prefetch instructions")
def test_the_loop_prefetches_a_batch_too_large_for_l1_into_l2():
    # The next batch's rows go to every level (prefetcht0) up to PREFETCH_BYTES, and into L2 only
    # (prefetcht1) up to PREFETCH_L2_BYTES: 128 rows of 64 float32 features (32 KiB) are the latter.
    from fastbp.backends import _cpu_loop
    from fastbp.lowering import Targets

    assert _cpu_loop.PREFETCH_BYTES < 128 * 64 * 4 <= _cpu_loop.PREFETCH_L2_BYTES

    @numba.njit
    def prefetch_batch(X, data, order, nb):
        _cpu_loop._prefetch_batch(X, data, order, 0, nb)

    X = np.zeros((600, 64), dtype=np.float32)
    data = Targets(np.zeros(600, dtype=np.int64), np.zeros((600, 0), dtype=np.float32), np.zeros(0, np.float32))
    prefetch_batch(X, data, np.arange(600), 128)
    asm = prefetch_batch.inspect_asm(prefetch_batch.signatures[0])
    assert "prefetcht0" in asm and "prefetcht1" in asm
