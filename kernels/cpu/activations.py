"""Activation kernels, each a ``*_forward(out, x, ...)`` / ``*_backward(dx, dout, ...)`` pair.

Elementwise activations accept C-contiguous arrays of any shape (typically
(N, O)); out and dx are overwritten and may alias their input. Backward
passes take the forward output y where it determines the derivative (see
``fastbp.kernels._scalar``); GELU's and SiLU's backward take the forward input x.

The named elementwise kernels are thin entry points into two parallel kernels,
``activation_forward`` and ``activation_backward``, which take the activation
code: one compiled parallel loop per dtype instead of one per activation,
which keeps the cold compile short. (The code is passed as ``np.int64`` so
that numba does not compile a copy specialized to each literal.)

Softmax and log-softmax are row-wise over the last axis of an (N, O) array and
subtract the row maximum first, so no exponent can overflow.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.

Each parallel kernel has a ``*_serial`` twin that runs the same loop on the
calling thread alone, for compiled loops that call BLAS between kernels (see
``_jit.py``); the parallel kernel calls it below the size where the thread pool
pays off. The loop itself is written once, in an inlined helper whose prange
is parallel only where a parallel kernel inlines it.
"""
import functools
import math

import numpy as np
from numba import prange

from .._checks import ArgSpec
from .._jit import PARALLEL_MIN_ELEMENTS, jit
from .._scalar import activate, activate_grad, activate_input_grad
from ..registry import (ACTIVATION_NAMES, ELU, GELU, IDENTITY, INPUT_DERIVED, LEAKY_RELU, LOG_SOFTMAX, RELU, SELU,
                        SIGMOID, SILU, SOFTMAX, SOFTPLUS, TANH)
from ._exp import vexp
from ._flat import flat


@jit(inline="always")
def _map_forward(out, x, code, alpha):
    o = flat(out)
    v = flat(x)
    for i in prange(v.size):
        o[i] = activate(code, v[i], alpha)


@jit(inline="always")
def _map_backward(dx, dout, y, code, alpha):
    d = flat(dx)
    g = flat(dout)
    v = flat(y)
    for i in prange(v.size):
        d[i] = g[i] * activate_grad(code, v[i], alpha)


@jit(parallel=True)
def activation_forward(out, x, code, alpha):
    """out = f(x) for the elementwise activation ``code`` (any but GELU's backward needs).

    One compiled kernel for every code: a training loop that dispatches on the
    code at run time compiles this once instead of one kernel per activation.
    """
    if x.size < PARALLEL_MIN_ELEMENTS:
        activation_forward_serial(out, x, code, alpha)
    else:
        _map_forward(out, x, code, alpha)


@jit
def activation_forward_serial(out, x, code, alpha):
    """``activation_forward`` on the calling thread alone."""
    _map_forward(out, x, code, alpha)


@jit(parallel=True)
def activation_backward(dx, dout, out, code, alpha):
    """dx = dout * f'(x) from the forward output, for the codes in OUTPUT_DERIVABLE."""
    if out.size < PARALLEL_MIN_ELEMENTS:
        activation_backward_serial(dx, dout, out, code, alpha)
    else:
        _map_backward(dx, dout, out, code, alpha)


@jit
def activation_backward_serial(dx, dout, out, code, alpha):
    """``activation_backward`` on the calling thread alone."""
    _map_backward(dx, dout, out, code, alpha)


IDENTITY_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def identity_forward(out, x):
    """out = x.

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(IDENTITY), 0.0)


IDENTITY_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*")], writes=("dx",))


@jit
def identity_backward(dx, dout):
    """dx = dout.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, dout, np.int64(IDENTITY), 0.0)


RELU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def relu_forward(out, x):
    """out = max(x, 0).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(RELU), 0.0)


RELU_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("out", "*")], writes=("dx",))


@jit
def relu_backward(dx, dout, out):
    """dx = dout * [out > 0], from the forward output.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(RELU), 0.0)


LEAKY_RELU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*"), ("slope", "nonneg")], writes=("out",))


@jit
def leaky_relu_forward(out, x, slope):
    """out = x if x > 0 else slope * x (slope >= 0).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.
    slope : float >= 0
        Slope for x <= 0.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(LEAKY_RELU), slope)


LEAKY_RELU_BACKWARD_SPEC = ArgSpec(
    [("dx", "*"), ("dout", "*"), ("out", "*"), ("slope", "nonneg")], writes=("dx",))


@jit
def leaky_relu_backward(dx, dout, out, slope):
    """dx = dout * (1 if out > 0 else slope), from the forward output.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.
    slope : float >= 0
        Slope for x <= 0.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(LEAKY_RELU), slope)


ELU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*"), ("alpha", "positive")], writes=("out",))


@jit
def elu_forward(out, x, alpha):
    """out = x if x > 0 else alpha * (exp(x) - 1) (alpha > 0).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.
    alpha : float > 0
        The activation's parameter (leaky slope, ELU alpha); ignored by the others.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(ELU), alpha)


ELU_BACKWARD_SPEC = ArgSpec(
    [("dx", "*"), ("dout", "*"), ("out", "*"), ("alpha", "positive")], writes=("dx",))


@jit
def elu_backward(dx, dout, out, alpha):
    """dx = dout * (1 if out > 0 else out + alpha): alpha e^x = out + alpha for x <= 0.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.
    alpha : float > 0
        The activation's parameter (leaky slope, ELU alpha); ignored by the others.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(ELU), alpha)


SIGMOID_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def sigmoid_forward(out, x):
    """out = 1 / (1 + exp(-x)), without overflow for any x.

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(SIGMOID), 0.0)


SIGMOID_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("out", "*")], writes=("dx",))


@jit
def sigmoid_backward(dx, dout, out):
    """dx = dout * out * (1 - out).

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(SIGMOID), 0.0)


TANH_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def tanh_forward(out, x):
    """out = tanh(x).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(TANH), 0.0)


TANH_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("out", "*")], writes=("dx",))


@jit
def tanh_backward(dx, dout, out):
    """dx = dout * (1 - out^2).

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(TANH), 0.0)


SOFTPLUS_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def softplus_forward(out, x):
    """out = log(1 + exp(x)) = max(x, 0) + log1p(exp(-abs(x))).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(SOFTPLUS), 0.0)


SOFTPLUS_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("out", "*")], writes=("dx",))


@jit
def softplus_backward(dx, dout, out):
    """dx = dout * sigmoid(x), with sigmoid(x) = 1 - exp(-out) from the output.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(SOFTPLUS), 0.0)


GELU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def gelu_forward(out, x):
    """out = x * Phi(x), the exact (erf) GELU.

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(GELU), 0.0)


GELU_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("x", "*")], writes=("dx",))


@jit
def gelu_backward(dx, dout, x):
    """dx = dout * (Phi(x) + x phi(x)), from the forward *input* x.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    x : ndarray, the shape of ``dx``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_input_backward(dx, dout, x, np.int64(GELU))


SILU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def silu_forward(out, x):
    """out = x * sigmoid(x) (SiLU, also called swish).

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(SILU), 0.0)


SILU_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("x", "*")], writes=("dx",))


@jit
def silu_backward(dx, dout, x):
    """dx = dout * s (1 + x (1 - s)), s = sigmoid(x), from the forward *input* x.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    x : ndarray, the shape of ``dx``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_input_backward(dx, dout, x, np.int64(SILU))


SELU_FORWARD_SPEC = ArgSpec([("out", "*"), ("x", "*")], writes=("out",))


@jit
def selu_forward(out, x):
    """out = scale * (x if x > 0 else alpha (exp(x) - 1)), PyTorch's fixed alpha and scale.

    Parameters
    ----------
    out : ndarray
        The forward output. Overwritten.
    x : ndarray, the shape of ``out``
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_forward(out, x, np.int64(SELU), 0.0)


SELU_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("out", "*")], writes=("dx",))


@jit
def selu_backward(dx, dout, out):
    """dx = dout * (scale if out > 0 else out + scale alpha), from the output.

    Parameters
    ----------
    dx : ndarray
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray, the shape of ``dx``
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    activation_backward(dx, dout, out, np.int64(SELU), 0.0)


@jit(parallel=True)
def activation_input_backward(dx, dout, x, code):
    """dx = dout * f'(x) from the forward *input*, for the codes in INPUT_DERIVED (GELU, SiLU)."""
    if x.size < PARALLEL_MIN_ELEMENTS:
        activation_input_backward_serial(dx, dout, x, code)
    else:
        _input_backward_loop(dx, dout, x, code)


@jit
def activation_input_backward_serial(dx, dout, x, code):
    """``activation_input_backward`` on the calling thread alone."""
    _input_backward_loop(dx, dout, x, code)


@jit(inline="always")
def _input_backward_loop(dx, dout, x, code):
    d = flat(dx)
    g = flat(dout)
    v = flat(x)
    for i in prange(v.size):
        d[i] = g[i] * activate_input_grad(code, v[i])


@jit(inline="always")
def _softmax_row(out, x, n, log):
    """Row n of softmax (or log-softmax) of x into out; out may be x itself.

    Softmax takes its exponentials (``vexp``, inline) in a loop of their own, which vectorizes,
    and sums them after it, in order. Log-softmax sums them as it goes, with libm's exp: it
    must not write out before its last loop, which still reads x where out is x, and the
    inline ``vexp`` in that summing loop, which does not vectorize, took twice libm's time
    (docs/performance-log.md, 2026-11-30, d67e485).
    """
    n_out = x.shape[1]
    m = x[n, 0]
    for j in range(1, n_out):
        if x[n, j] > m:
            m = x[n, j]
    s = 0.0
    if log:
        for j in range(n_out):
            s += math.exp(x[n, j] - m)
        lse = m + math.log(s)
        for j in range(n_out):
            out[n, j] = x[n, j] - lse
    else:
        for j in range(n_out):
            out[n, j] = vexp(x[n, j] - m)
        for j in range(n_out):
            s += out[n, j]
        inv = 1.0 / s
        for j in range(n_out):
            out[n, j] *= inv


@jit(inline="always")
def _softmax_backward_row(dx, dout, out, n, log):
    n_out = out.shape[1]
    s = 0.0
    for j in range(n_out):
        s += dout[n, j] if log else dout[n, j] * out[n, j]
    for j in range(n_out):
        if log:
            dx[n, j] = dout[n, j] - vexp(out[n, j]) * s
        else:
            dx[n, j] = out[n, j] * (dout[n, j] - s)


@jit(inline="always")
def _softmax_rows(out, x, log):
    for n in prange(x.shape[0]):
        _softmax_row(out, x, n, log)


@jit(inline="always")
def _softmax_backward_rows(dx, dout, out, log):
    for n in prange(out.shape[0]):
        _softmax_backward_row(dx, dout, out, n, log)


SOFTMAX_FORWARD_SPEC = ArgSpec([("out", "NO"), ("x", "NO")], writes=("out",))


@jit(parallel=True)
def softmax_forward(out, x):
    """Row-wise softmax: out[n, j] = exp(x[n, j] - m_n) / sum_k exp(x[n, k] - m_n).

    x (N, O) -> out (N, O), overwritten; m_n is the row maximum.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, O)
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if x.size < PARALLEL_MIN_ELEMENTS:
        softmax_forward_serial(out, x)
    else:
        _softmax_rows(out, x, False)


@jit
def softmax_forward_serial(out, x):
    """``softmax_forward`` on the calling thread alone."""
    _softmax_rows(out, x, False)


SOFTMAX_BACKWARD_SPEC = ArgSpec([("dx", "NO"), ("dout", "NO"), ("out", "NO")], writes=("dx",))


@jit(parallel=True)
def softmax_backward(dx, dout, out):
    """Backward of row-wise softmax from its output y: dx = y * (dout - sum_j dout y).

    The Jacobian is dy_j/dx_k = y_j ([j == k] - y_k), so
    dx_k = sum_j dout_j y_j ([j == k] - y_k) = y_k (dout_k - <dout, y>).

    Parameters
    ----------
    dx : ndarray of shape (N, O)
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray of shape (N, O)
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if out.size < PARALLEL_MIN_ELEMENTS:
        softmax_backward_serial(dx, dout, out)
    else:
        _softmax_backward_rows(dx, dout, out, False)


@jit
def softmax_backward_serial(dx, dout, out):
    """``softmax_backward`` on the calling thread alone."""
    _softmax_backward_rows(dx, dout, out, False)


LOG_SOFTMAX_FORWARD_SPEC = ArgSpec([("out", "NO"), ("x", "NO")], writes=("out",))


@jit(parallel=True)
def log_softmax_forward(out, x):
    """Row-wise log-softmax: out[n, j] = x[n, j] - m_n - log sum_k exp(x[n, k] - m_n).

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, O)
        The forward input.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if x.size < PARALLEL_MIN_ELEMENTS:
        log_softmax_forward_serial(out, x)
    else:
        _softmax_rows(out, x, True)


@jit
def log_softmax_forward_serial(out, x):
    """``log_softmax_forward`` on the calling thread alone."""
    _softmax_rows(out, x, True)


LOG_SOFTMAX_BACKWARD_SPEC = ArgSpec([("dx", "NO"), ("dout", "NO"), ("out", "NO")], writes=("dx",))


@jit(parallel=True)
def log_softmax_backward(dx, dout, out):
    """Backward of row-wise log-softmax from its output y: dx = dout - exp(y) sum_j dout_j.

    dy_j/dx_k = [j == k] - softmax_k and softmax = exp(y).

    Parameters
    ----------
    dx : ndarray of shape (N, O)
        Gradient of the loss with respect to ``x``. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray of shape (N, O)
        The forward output.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if out.size < PARALLEL_MIN_ELEMENTS:
        log_softmax_backward_serial(dx, dout, out)
    else:
        _softmax_backward_rows(dx, dout, out, True)


@jit
def log_softmax_backward_serial(dx, dout, out):
    """``log_softmax_backward`` on the calling thread alone."""
    _softmax_backward_rows(dx, dout, out, True)


# ----- dispatch by activation code (what the compiled loops call) ------------------------------

# Also the arguments of the per-code kernels (``activation_forward_for``), which ignore ``code``;
# the softmax codes are codes here too.
ACTIVATION_CODE_FORWARD_SPEC = ArgSpec([("out", "NO"), ("x", "NO"), ("code", "act"), ("alpha", "float")],
                                       writes=("out",))


@jit
def activation_code_forward(out, x, code, alpha):
    """out = f(x) for any activation code of ``kernels.registry`` (row-wise ones included).

    On the calling thread alone, like everything the compiled loops call (``_jit.py``).
    """
    if code == SOFTMAX:
        softmax_forward_serial(out, x)
    elif code == LOG_SOFTMAX:
        log_softmax_forward_serial(out, x)
    else:
        activation_forward_serial(out, x, code, alpha)


ACTIVATION_CODE_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO"), ("dout", "NO"), ("out", "NO"), ("x", "NO"), ("code", "act"), ("alpha", "float")], writes=("dx",))


@jit
def activation_code_backward(dx, dout, out, x, code, alpha):
    """dx from dout for any activation code, given the forward output and input; serial."""
    if code in INPUT_DERIVED:
        activation_input_backward_serial(dx, dout, x, code)
    elif code == SOFTMAX:
        softmax_backward_serial(dx, dout, out)
    elif code == LOG_SOFTMAX:
        log_softmax_backward_serial(dx, dout, out)
    else:
        activation_backward_serial(dx, dout, out, code, alpha)


# ----- one activation code per kernel (what the compiled training loop calls) ---------------------
#
# activation_code_forward and activation_code_backward hold every code's loop, and compile in
# 1.6 and 1.5 s; a kernel with its code fixed holds one loop and compiles in 0.2-0.8 s. The
# training loop calls these through a table of addresses indexed by the code
# (``fastbp/backends/_kernel_tables.py``), so that a network compiles the codes it has and no other.
# Each is the serial twin's loop with the code a constant of the closure (numba freezes a free
# variable into the code it compiles, and its cache keys the entry on the variable's value): the
# same formula as the generic kernel's, element by element, and the same bits.


@functools.lru_cache(maxsize=None)
def activation_forward_for(code):
    """``activation_code_forward`` compiled for the activation ``code`` alone.

    Same arguments and results as ``activation_code_forward``, whose ``code`` argument the kernel
    ignores: it computes the activation it was made for. One kernel per code and process.
    """
    if code == SOFTMAX:
        def forward(out, x, _code, alpha):
            _softmax_rows(out, x, False)
    elif code == LOG_SOFTMAX:
        def forward(out, x, _code, alpha):
            _softmax_rows(out, x, True)
    else:
        def forward(out, x, _code, alpha):
            _map_forward(out, x, code, alpha)
    forward.__qualname__ = forward.__name__ = f"activation_forward_{ACTIVATION_NAMES[code]}"
    return jit(forward)


@functools.lru_cache(maxsize=None)
def activation_backward_for(code):
    """``activation_code_backward`` compiled for the activation ``code`` alone (as
    ``activation_forward_for``)."""
    if code in INPUT_DERIVED:
        def backward(dx, dout, out, x, _code, alpha):
            _input_backward_loop(dx, dout, x, code)
    elif code == SOFTMAX:
        def backward(dx, dout, out, x, _code, alpha):
            _softmax_backward_rows(dx, dout, out, False)
    elif code == LOG_SOFTMAX:
        def backward(dx, dout, out, x, _code, alpha):
            _softmax_backward_rows(dx, dout, out, True)
    else:
        def backward(dx, dout, out, x, _code, alpha):
            _map_backward(dx, dout, out, code, alpha)
    backward.__qualname__ = backward.__name__ = f"activation_backward_{ACTIVATION_NAMES[code]}"
    return jit(backward)
