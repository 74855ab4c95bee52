"""``kernels/cpu/_flat.flat``: the elementwise kernels' flat view of their arrays, without numba's reshape helper."""
import numba
import numpy as np
import pytest
from numba import njit, prange

from fastbp.kernels.cpu import activations, dropout, optim
from fastbp.kernels.cpu._flat import flat


@njit
def _fill_flat(a, value):
    elements = flat(a)
    for e in range(elements.size):
        elements[e] = value + e
    return elements


def test_flat_of_a_contiguous_array_is_a_view_in_place():
    a = np.zeros((3, 4), dtype=np.float32)
    elements = _fill_flat(a, 1.0)
    np.testing.assert_array_equal(a, np.arange(1.0, 13.0).reshape(3, 4))
    assert elements.base is not None and np.shares_memory(elements, a)
    assert "numba_attempt_nocopy_reshape" not in _fill_flat.inspect_llvm(_fill_flat.signatures[-1])
    assert _fill_flat(np.zeros((0, 5)), 1.0).shape == (0,)


def test_a_write_through_the_view_of_a_read_only_array_does_not_compile():
    # As through ravel: numba's type of the view is read-only too, so an unchecked kernel called
    # from compiled code cannot write into a read-only buffer (bytes, a read-only memory map).
    a = np.frombuffer(bytes(16), dtype=np.float32).reshape(2, 2)
    with pytest.raises(numba.core.errors.TypingError):
        _fill_flat(a, 1.0)
    assert bytes(a.data) == bytes(16)
    with pytest.raises(numba.core.errors.TypingError):
        optim.sgd_update_serial(np.frombuffer(bytes(16), dtype=np.float32), np.ones(4, np.float32),
                                np.zeros(4, np.float32), 0.1, 0.9, False, 0.0)


def test_flat_of_any_other_layout_is_ravels_copy():
    a = np.zeros((3, 8), dtype=np.float64)[:, ::2]
    elements = _fill_flat(a, 1.0)
    np.testing.assert_array_equal(elements, np.arange(1.0, 13.0))
    assert not a.any()  # a copy, as ravel makes of it: the array itself untouched


def test_a_parallel_loop_that_writes_only_to_the_view_writes_the_array():
    # numba's parallel passes remove a prange loop whose writes reach no live array: they must
    # know that the view aliases its argument, as they know it of ravel.
    @njit(parallel=True)
    def fill(a):
        elements = flat(a)
        for e in prange(elements.size):
            elements[e] = e

    a = np.zeros((300, 300), dtype=np.float32)
    fill(a)
    np.testing.assert_array_equal(a.ravel(), np.arange(a.size, dtype=np.float32))


ROWS = np.ones((4, 6), dtype=np.float32)
FLAT = np.ones(24, dtype=np.float32)


@pytest.mark.parametrize("kernel, args", [
    (optim.sgd_update_serial, (FLAT, FLAT, FLAT, 0.1, 0.9, False, 0.0)),
    (optim.adam_update_serial, (FLAT, FLAT, FLAT, FLAT, 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)),
    (optim.rmsprop_update_serial, (FLAT, FLAT, FLAT, FLAT, FLAT, 0.1, 0.99, 1e-8, 0.0, False, 0.0)),
    (optim.adagrad_update_serial, (FLAT, FLAT, FLAT, 0.1, 0.0, 1e-10, 1, 0.0)),
    (activations.activation_forward_serial, (ROWS, ROWS, 1, 0.0)),
    (activations.activation_backward_serial, (ROWS, ROWS, ROWS, 1, 0.0)),
    (dropout.dropout_backward_serial, (ROWS, ROWS, ROWS)),
], ids=lambda v: getattr(v, "__name__", None))
def test_elementwise_kernels_take_no_reshape_helper_for_contiguous_arrays(kernel, args):
    # Each took a flat view of every array per call through numba's C helper: an optimizer update
    # three to five of them a step.
    # Compiled afresh here, not loaded from the kernel cache: numba cannot show the code of a
    # function it loaded.
    options = {k: v for k, v in kernel.targetoptions.items() if k not in ("cache", "nopython")}
    fresh = numba.njit(**options)(kernel.py_func)
    fresh(*(a.copy() if isinstance(a, np.ndarray) else a for a in args))
    assert "numba_attempt_nocopy_reshape" not in fresh.inspect_llvm(fresh.signatures[0])
