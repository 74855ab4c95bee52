"""Activation kernels on the GPU, each a ``*_forward(out, x, ...)`` / ``*_backward(dx, dout, ...)`` pair.

Same names, arguments and conventions as ``fastbp.kernels.cpu.activations``:
elementwise activations take C-contiguous device arrays of any shape
(typically (N, O)); out and dx are overwritten and may alias their input.
Backward passes take the forward output y where it determines the derivative;
GELU's and SiLU's backward take the forward input x. The formulas are the shared scalar
functions of ``kernels/_scalar.py``.

Elementwise kernels run one thread per element with a grid-stride loop; each
element has exactly one owner, which reads its inputs before writing its
output, so in-place calls are safe.

Softmax and log-softmax are row-wise over the last axis of (N, O): one block
per row (grid-stride over rows), whose threads (one warp up to ROW_THREADS)
stride along the row and combine the row maximum and the row sum with
shared-memory trees. The maximum is subtracted first, so no exponent
overflows. Every thread writes only the entries it read, after the row's
reductions, so out may alias x and dx may alias dout.
"""
import math

from .._scalar import activate, activate_grad, activate_input_grad
from ..registry import (ELU, GELU, IDENTITY, INPUT_DERIVED, LEAKY_RELU, LOG_SOFTMAX, RELU, SELU, SIGMOID,
                        SILU, SOFTMAX, SOFTPLUS, TANH)
from ._launch import MAX_BLOCKS, dev, elementwise, fixed, flat, pow2_threads
from ._numba_cuda import cuda, kernel
from ._reduce import block_reduce

# Most threads per row of the softmax kernels (a power of two, for the
# reduction tree); narrower rows get fewer, down to one warp.
ROW_THREADS = 128


@kernel
def _map_forward_kernel(out, x, code, alpha):
    """out[i] = f(x[i]) over flat arrays."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = activate(code, x[i], alpha)


@kernel
def _map_backward_kernel(dx, dout, y, code, alpha):
    """dx[i] = dout[i] * f'(z_i), with f'(z) computed from the output y."""
    for i in range(cuda.grid(1), y.size, cuda.gridsize(1)):
        dx[i] = dout[i] * activate_grad(code, y[i], alpha)


@kernel
def _input_backward_kernel(dx, dout, x, code):
    """dx[i] = dout[i] * f'(x_i), from the forward input (GELU, SiLU)."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        dx[i] = dout[i] * activate_input_grad(code, x[i])


def _map_forward(out, x, code, alpha):
    out, x = flat(dev(out)), flat(dev(x))
    elementwise(_map_forward_kernel, x.size)(out, x, code, float(alpha))


def _map_backward(dx, dout, y, code, alpha):
    dx, dout, y = flat(dev(dx)), flat(dev(dout)), flat(dev(y))
    elementwise(_map_backward_kernel, y.size)(dx, dout, y, code, float(alpha))


def identity_forward(out, x):
    """out = x."""
    _map_forward(out, x, IDENTITY, 0.0)


def identity_backward(dx, dout):
    """dx = dout."""
    _map_backward(dx, dout, dout, IDENTITY, 0.0)


def relu_forward(out, x):
    """out = max(x, 0)."""
    _map_forward(out, x, RELU, 0.0)


def relu_backward(dx, dout, out):
    """dx = dout * [out > 0], from the forward output."""
    _map_backward(dx, dout, out, RELU, 0.0)


def leaky_relu_forward(out, x, slope):
    """out = x if x > 0 else slope * x (slope >= 0)."""
    _map_forward(out, x, LEAKY_RELU, slope)


def leaky_relu_backward(dx, dout, out, slope):
    """dx = dout * (1 if out > 0 else slope), from the forward output."""
    _map_backward(dx, dout, out, LEAKY_RELU, slope)


def elu_forward(out, x, alpha):
    """out = x if x > 0 else alpha * (exp(x) - 1) (alpha > 0)."""
    _map_forward(out, x, ELU, alpha)


def elu_backward(dx, dout, out, alpha):
    """dx = dout * (1 if out > 0 else out + alpha): alpha e^x = out + alpha for x <= 0."""
    _map_backward(dx, dout, out, ELU, alpha)


def sigmoid_forward(out, x):
    """out = 1 / (1 + exp(-x)), without overflow for any x."""
    _map_forward(out, x, SIGMOID, 0.0)


def sigmoid_backward(dx, dout, out):
    """dx = dout * out * (1 - out)."""
    _map_backward(dx, dout, out, SIGMOID, 0.0)


def tanh_forward(out, x):
    """out = tanh(x)."""
    _map_forward(out, x, TANH, 0.0)


def tanh_backward(dx, dout, out):
    """dx = dout * (1 - out^2)."""
    _map_backward(dx, dout, out, TANH, 0.0)


def softplus_forward(out, x):
    """out = log(1 + exp(x)) = max(x, 0) + log1p(exp(-|x|))."""
    _map_forward(out, x, SOFTPLUS, 0.0)


def softplus_backward(dx, dout, out):
    """dx = dout * sigmoid(x), with sigmoid(x) = 1 - exp(-out) from the output."""
    _map_backward(dx, dout, out, SOFTPLUS, 0.0)


def gelu_forward(out, x):
    """out = x * Phi(x), the exact (erf) GELU."""
    _map_forward(out, x, GELU, 0.0)


def gelu_backward(dx, dout, x):
    """dx = dout * (Phi(x) + x phi(x)), from the forward *input* x."""
    activation_input_backward(dx, dout, x, GELU)


def silu_forward(out, x):
    """out = x * sigmoid(x) (SiLU, also called swish)."""
    _map_forward(out, x, SILU, 0.0)


def silu_backward(dx, dout, x):
    """dx = dout * s (1 + x (1 - s)), s = sigmoid(x), from the forward *input* x."""
    activation_input_backward(dx, dout, x, SILU)


def selu_forward(out, x):
    """out = scale * (x if x > 0 else alpha (exp(x) - 1)), PyTorch's fixed alpha and scale."""
    _map_forward(out, x, SELU, 0.0)


def selu_backward(dx, dout, out):
    """dx = dout * (scale if out > 0 else out + scale alpha), from the output."""
    _map_backward(dx, dout, out, SELU, 0.0)


def activation_input_backward(dx, dout, x, code):
    """dx = dout * f'(x) from the forward *input*, for GELU and SiLU."""
    dx, dout, x = flat(dev(dx)), flat(dev(dout)), flat(dev(x))
    elementwise(_input_backward_kernel, x.size)(dx, dout, x, code)


@kernel
def _softmax_forward_kernel(out, x, log):
    """Row-wise softmax (or log-softmax when ``log``): block b owns rows b, b + gridDim, ..."""
    buf = cuda.shared.array(ROW_THREADS, x.dtype)
    t = cuda.threadIdx.x
    n_rows, n_cols = x.shape
    for n in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):  # uniform within the block
        m = x[n, 0]
        for j in range(t, n_cols, cuda.blockDim.x):
            m = max(m, x[n, j])
        m = block_reduce(buf, m, True)
        s = x.dtype.type(0)
        for j in range(t, n_cols, cuda.blockDim.x):
            e = math.exp(x[n, j] - m)
            s += e
            if not log:
                out[n, j] = e
        s = block_reduce(buf, s, False)
        if log:
            lse = m + math.log(s)
            for j in range(t, n_cols, cuda.blockDim.x):
                out[n, j] = x[n, j] - lse
        else:
            # The same thread wrote out[n, j] above, so it rescales its own entries.
            inv = x.dtype.type(1) / s
            for j in range(t, n_cols, cuda.blockDim.x):
                out[n, j] *= inv


@kernel
def _softmax_backward_kernel(dx, dout, out, log):
    """dx = y (dout - <dout, y>) (softmax) or dout - e^y sum(dout) (log-softmax), row-wise."""
    buf = cuda.shared.array(ROW_THREADS, out.dtype)
    t = cuda.threadIdx.x
    n_rows, n_cols = out.shape
    for n in range(cuda.blockIdx.x, n_rows, cuda.gridDim.x):
        s = out.dtype.type(0)
        for j in range(t, n_cols, cuda.blockDim.x):
            s += dout[n, j] if log else dout[n, j] * out[n, j]
        s = block_reduce(buf, s, False)
        # Each (n, j) is read and then written by the same thread: dx may alias dout.
        for j in range(t, n_cols, cuda.blockDim.x):
            if log:
                dx[n, j] = dout[n, j] - math.exp(out[n, j]) * s
            else:
                dx[n, j] = out[n, j] * (dout[n, j] - s)


def _rows(kernel_, shape):
    # A row of 10 classes gets one warp, not 128 threads that mostly idle.
    return fixed(kernel_, max(1, min(shape[0], MAX_BLOCKS)), pow2_threads(shape[1], ROW_THREADS))


def softmax_forward(out, x):
    """Row-wise softmax: out[n, j] = exp(x[n, j] - m_n) / sum_k exp(x[n, k] - m_n).

    x (N, O) -> out (N, O), overwritten; m_n is the row maximum.
    """
    out, x = dev(out), dev(x)
    _rows(_softmax_forward_kernel, x.shape)(out, x, False)


def softmax_backward(dx, dout, out):
    """Backward of row-wise softmax from its output y: dx = y * (dout - sum_j dout y).

    The Jacobian is dy_j/dx_k = y_j ([j == k] - y_k), so
    dx_k = sum_j dout_j y_j ([j == k] - y_k) = y_k (dout_k - <dout, y>).
    """
    dx, dout, out = dev(dx), dev(dout), dev(out)
    _rows(_softmax_backward_kernel, out.shape)(dx, dout, out, False)


def log_softmax_forward(out, x):
    """Row-wise log-softmax: out[n, j] = x[n, j] - m_n - log sum_k exp(x[n, k] - m_n)."""
    out, x = dev(out), dev(x)
    _rows(_softmax_forward_kernel, x.shape)(out, x, True)


def log_softmax_backward(dx, dout, out):
    """Backward of row-wise log-softmax from its output y: dx = dout - exp(y) sum_j dout_j.

    dy_j/dx_k = [j == k] - softmax_k and softmax = exp(y).
    """
    dx, dout, out = dev(dx), dev(dout), dev(out)
    _rows(_softmax_backward_kernel, out.shape)(dx, dout, out, True)


def activation_code_forward(out, x, code, alpha):
    """out = f(x) for any activation code of ``kernels.registry``, as on the CPU."""
    if code == GELU:
        gelu_forward(out, x)
    elif code == SOFTMAX:
        softmax_forward(out, x)
    elif code == LOG_SOFTMAX:
        log_softmax_forward(out, x)
    else:
        _map_forward(out, x, code, alpha)


def activation_code_backward(dx, dout, out, x, code, alpha):
    """dx from dout for any activation code, given the forward output and input."""
    if code in INPUT_DERIVED:
        activation_input_backward(dx, dout, x, code)
    elif code == SOFTMAX:
        softmax_backward(dx, dout, out)
    elif code == LOG_SOFTMAX:
        log_softmax_backward(dx, dout, out)
    else:
        _map_backward(dx, dout, out, code, alpha)
