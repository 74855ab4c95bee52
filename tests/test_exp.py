"""The CPU kernels' vectorizable exp (kernels/cpu/_exp.py) and the softmax cross-entropy that uses it."""
import math

import numpy as np
import pytest
from numba import njit

from fastbp.kernels import softmax_cross_entropy_forward
from fastbp.kernels.cpu import losses
from fastbp.kernels.cpu._exp import exp_in_place, vexp

# Largest error allowed, in units in the last place of the exact result: float32's polynomial is
# within 1 (like glibc's expf), float64's rational function within 2 (Cephes: 2.2e-16 relative).
MAX_ULP = {np.float32: 1.0, np.float64: 2.0}
EXTENDED = np.finfo(np.longdouble).eps < np.finfo(np.float64).eps


@njit
def _vexp_all(out, x):
    for i in range(x.size):
        out[i] = vexp(x[i])


@pytest.mark.skipif(not EXTENDED, reason="the reference needs NumPy's extended-precision long double")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_is_within_its_ulp_bound_over_the_whole_range(dtype):
    info = np.finfo(dtype)
    lo, hi = math.log(info.tiny) - 20, math.log(info.max) + 1
    x = np.linspace(lo, hi, 2_000_001).astype(dtype)
    got = np.empty_like(x)
    _vexp_all(got, x)
    exact = np.exp(x.astype(np.longdouble))
    normal = (exact >= info.tiny) & (exact <= info.max)
    ulp = np.abs(got[normal] - exact[normal]) / np.spacing(exact[normal].astype(dtype))
    assert ulp.max() <= MAX_ULP[dtype], f"max error {ulp.max():.3f} ulp"
    # Below the normal range the result is 0, not a subnormal; above it, inf.
    assert np.all(got[exact < info.tiny] == 0)
    assert np.all(np.isinf(got[exact > info.max]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_vexp_special_values(dtype):
    x = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30], dtype)
    got = np.empty_like(x)
    _vexp_all(got, x)
    assert got.dtype == dtype
    np.testing.assert_array_equal(got[:2], [1.0, 1.0])
    np.testing.assert_allclose(got[2:4], [math.e, 1 / math.e], rtol=2 * np.finfo(dtype).eps)
    assert got[4] == np.inf and got[5] == 0.0 and np.isnan(got[6])
    np.testing.assert_array_equal(got[7:], [1.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_softmax_cross_entropy_gives_the_same_bits_into_a_strided_probs(dtype):
    # A C-contiguous probs takes one flat loop of exponentials, any other layout a loop per row.
    # The checked entry point wants C-contiguous arrays; numba code calls the kernel with any.
    rng = np.random.default_rng(3)
    logits = (3 * rng.standard_normal((13, 7))).astype(dtype)
    logits[0] = [1e4, -1e4, 0, 5, -5, 1e4, 3]  # far apart: exponentials of 0 and of -2e4
    labels = rng.integers(0, 7, 13)
    weight = np.empty(0, dtype)
    loss, probs = np.zeros(1, dtype), np.empty_like(logits)
    softmax_cross_entropy_forward(loss, probs, logits, labels, weight)
    strided_loss, wide = np.zeros(1, dtype), np.full((13, 14), 7, dtype)
    losses.softmax_cross_entropy_forward(strided_loss, wide[:, ::2], logits, labels, weight)
    assert strided_loss.tobytes() == loss.tobytes()
    assert wide[:, ::2].tobytes() == probs.tobytes()
    assert np.all(wide[:, 1::2] == 7)  # the columns in between untouched
    assert np.isfinite(loss[0]) and probs[0, 1] == 0.0 and probs[0, 0] == probs[0, 5] == 0.5


@pytest.mark.parametrize("shape", [(16, 2), (3, 5), (0, 4), (1, 1)])
def test_exponentials_in_place_of_a_contiguous_array_take_no_reshape_helper(shape):
    # The flat loop over a C-contiguous array views it in place: numba's reshape calls a C helper
    # on every call, a cost the tiny networks' steps paid for their softmax.
    @njit
    def exp_all(a):
        exp_in_place(a)

    a = np.random.default_rng(5).standard_normal(shape).astype(np.float32)
    got = a.copy()
    exp_all(got)
    np.testing.assert_allclose(got, np.exp(a), rtol=1e-6)
    assert "numba_attempt_nocopy_reshape" not in exp_all.inspect_llvm(exp_all.signatures[0])
