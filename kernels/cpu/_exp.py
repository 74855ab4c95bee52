"""exp that LLVM can vectorize: for the CPU kernels' loops over many exponentials.

``math.exp`` in a numba loop is a call to the C library's ``exp``/``expf`` per element: LLVM
has no vector library to map it to here, so the loop stays scalar. On the small network's
softmax cross-entropy forward (32 x 10 logits) those calls were a third of the kernel's time.
``vexp`` computes the same function inline, so the loop around it vectorizes:

    x = k ln 2 + r, k = floor(x log2(e) + 1/2), |r| <= ln(2) / 2 (Cody and Waite:
    ln 2 in two parts, the first exact in few bits, so k ln 2 loses nothing),
    e^r by Cephes's approximations (a polynomial for float32, a rational function
    for float64), times 2^k built from its exponent bits.

Accuracy: within 1 ulp (float32) and 2 ulp (float64) of the exact result over the whole range
of normal results (measured 0.99 and 1.65; tests/test_exp.py checks a dense grid against NumPy's
long double). Results below the smallest normal number (x below
about -87.3 for float32, -708.4 for float64) are 0 instead of a subnormal; results above the
largest float are inf; NaN gives NaN. The formulas are Cephes's (Stephen L. Moshier, ``expf.c``
and ``exp.c``), the coefficients as published there.

The float type of the argument selects the formula (``overload``), so a float32 kernel stays in
float32 arithmetic. Compiled with IEEE semantics whatever the caller's flags.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ._flat import flat

_F32_LOG2E = np.float32(1.44269504088896341)
_F32_LN2_HI = np.float32(0.693359375)
_F32_LN2_LO = np.float32(-2.12194440e-4)
_F32_P = tuple(np.float32(c) for c in (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2,
                                       1.6666665459e-1, 5.0000001201e-1))
_F32_MIN = np.float32(-87.33654)   # log of the smallest normal float32 (2^-126), rounded up
_F32_MAX = np.float32(88.72283)    # log of the largest float32, rounded down
_F32_HALF, _F32_ONE, _F32_ZERO, _F32_INF = np.float32(0.5), np.float32(1.0), np.float32(0.0), np.float32(np.inf)

_F64_LOG2E = 1.4426950408889634073599
_F64_LN2_HI = 6.93145751953125e-1
_F64_LN2_LO = 1.42860682030941723212e-6
_F64_P = (1.26177193074810590878e-4, 3.02994407707441961300e-2, 9.99999999999999999910e-1)
_F64_Q = (3.00198505138664455042e-6, 2.52448340349684104192e-3, 2.27265548208155028766e-1,
          2.00000000000000000009e0)
_F64_MIN = -708.3964185322641  # log of 2^-1022
_F64_MAX = 709.782712893384


def _pow2(float_type, bits, bias, mantissa):
    """An intrinsic: 2^k as ``float_type`` for an integer k in its normal exponent range, made
    from the exponent bits (``bits`` wide, exponent ``bias``, ``mantissa`` bits below it)."""
    int_type = types.int32 if bits == 32 else types.int64
    llvm_float = ir.FloatType() if bits == 32 else ir.DoubleType()

    @intrinsic
    def pow2(typingctx, k):
        if not isinstance(k, types.Integer):
            return None

        def codegen(context, builder, sig, args):
            word = ir.IntType(bits)
            exponent = builder.add(context.cast(builder, args[0], sig.args[0], int_type), ir.Constant(word, bias))
            return builder.bitcast(builder.shl(exponent, ir.Constant(word, mantissa)), llvm_float)

        return float_type(k), codegen

    return pow2


_pow2_f32 = _pow2(types.float32, 32, 127, 23)
_pow2_f64 = _pow2(types.float64, 64, 1023, 52)


def _exp_f32(x):
    # Clamped first, so k stays a valid exponent; the ends are fixed up below.
    xc = min(max(x, _F32_MIN), _F32_MAX)
    k = np.floor(xc * _F32_LOG2E + _F32_HALF)
    r = (xc - k * _F32_LN2_HI) - k * _F32_LN2_LO
    p0, p1, p2, p3, p4, p5 = _F32_P
    y = (((((p0 * r + p1) * r + p2) * r + p3) * r + p4) * r + p5) * (r * r) + r + _F32_ONE
    # k = 128 only at the top clamp, where y * 2^127 * 2 would be needed: scale in two steps.
    half = np.int32(k) >> 1
    result = y * _pow2_f32(half) * _pow2_f32(np.int32(k) - half)
    if x < _F32_MIN:
        result = _F32_ZERO
    if x > _F32_MAX:
        result = _F32_INF
    if x != x:
        result = x + x  # NaN; not x itself, which LLVM turns into a masked store when in place
    return result


def _exp_f64(x):
    xc = min(max(x, _F64_MIN), _F64_MAX)
    k = np.floor(xc * _F64_LOG2E + 0.5)
    r = (xc - k * _F64_LN2_HI) - k * _F64_LN2_LO
    p0, p1, p2 = _F64_P
    q0, q1, q2, q3 = _F64_Q
    rr = r * r
    px = r * ((p0 * rr + p1) * rr + p2)
    y = 1.0 + 2.0 * (px / ((((q0 * rr + q1) * rr + q2) * rr + q3) - px))
    half = np.int64(k) >> 1
    result = y * _pow2_f64(half) * _pow2_f64(np.int64(k) - half)
    if x < _F64_MIN:
        result = 0.0
    if x > _F64_MAX:
        result = math.inf
    if x != x:
        result = x + x
    return result


def vexp(x):
    """e^x for a float32 or float64 scalar, inline and vectorizable (in Python: ``math.exp``)."""
    return math.exp(x)


@overload(vexp, jit_options={"fastmath": False, "error_model": "numpy"})
def _vexp(x):
    if x == types.float32:
        return _exp_f32
    if x == types.float64:
        return _exp_f64
    return None


def exp_in_place(a):
    """a = e^a, elementwise, for a 2-D float array: one flat loop when ``a`` is typed C-contiguous,
    which vectorizes whole; a loop per row otherwise (numba has no flat view of other layouts)."""
    a[...] = np.exp(a)


def _exp_flat(a):
    elements = flat(a)
    for e in range(elements.size):
        elements[e] = vexp(elements[e])


def _exp_rows(a):
    n_rows, n_cols = a.shape
    for n in range(n_rows):
        for j in range(n_cols):
            a[n, j] = vexp(a[n, j])


@overload(exp_in_place, jit_options={"fastmath": False, "error_model": "numpy"})
def _exp_in_place(a):
    if not isinstance(a, types.Array) or a.ndim != 2 or not isinstance(a.dtype, types.Float):
        return None
    return _exp_flat if a.layout == "C" else _exp_rows
