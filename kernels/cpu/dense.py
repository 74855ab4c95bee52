"""Dense layer kernels: out = f(x @ w + b), forward and backward.

Shapes: x (N, I), w (I, O), b (O,), out (N, O). Gradients are *overwritten*,
never accumulated (one rule for the whole package). The batch mean lives in
the loss backward, so these are plain sums over the batch.

Products go to BLAS (``np.dot`` with an ``out`` argument, which numba lowers to
?gemm without allocating) once a layer is big enough to amortize the call;
below that, hand-written loop nests win because the call overhead dominates.
The loop nests run in n-k-j order so the innermost loop walks a contiguous row
with independent iterations, which LLVM vectorizes without reassociation.
"""
import numpy as np
from numba import prange

from .._jit import PARALLEL_MIN_ELEMENTS, jit
from .._scalar import activate, activate_grad

# Products of fewer multiply-adds than this use the loop nests below.
BLAS_MIN_FLOPS = 1 << 16


@jit(parallel=True)
def _bias_act_rows(out, b, activation, alpha):
    """out[n, :] = f(out[n, :] + b), rows in parallel (each thread owns rows)."""
    n_rows, n_out = out.shape
    if n_rows * n_out < PARALLEL_MIN_ELEMENTS:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = activate(activation, out[n, j] + b[j], alpha)
    else:
        for n in prange(n_rows):
            for j in range(n_out):
                out[n, j] = activate(activation, out[n, j] + b[j], alpha)


@jit(parallel=True)
def _small_forward(out, x, w, b, activation, alpha):
    """Loop-nest forward for small layers, bias and activation fused per row."""
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    if n_rows * n_in * n_out < PARALLEL_MIN_ELEMENTS * 8:
        for n in range(n_rows):
            _forward_row(out, x, w, b, activation, alpha, n, n_in, n_out)
    else:
        for n in prange(n_rows):
            _forward_row(out, x, w, b, activation, alpha, n, n_in, n_out)


@jit(inline="always")
def _forward_row(out, x, w, b, activation, alpha, n, n_in, n_out):
    for j in range(n_out):
        out[n, j] = b[j]
    for k in range(n_in):
        xv = x[n, k]
        for j in range(n_out):
            out[n, j] += xv * w[k, j]
    for j in range(n_out):
        out[n, j] = activate(activation, out[n, j], alpha)


@jit
def dense_act_forward(out, x, w, b, activation, alpha):
    """Fused dense + activation forward: out = f(x @ w + b).

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten. ``activation`` is an
    activation code from ``fastbp.kernels.ACTIVATIONS`` and ``alpha`` its
    parameter (leaky slope, ELU alpha; ignored otherwise). Bias and activation
    are applied in the same pass over out.
    """
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    if n_rows * n_in * n_out < BLAS_MIN_FLOPS:
        _small_forward(out, x, w, b, activation, alpha)
    else:
        np.dot(x, w, out)
        _bias_act_rows(out, b, activation, alpha)


@jit
def dense_forward(out, x, w, b):
    """Dense forward: out = x @ w + b.

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten.
    """
    dense_act_forward(out, x, w, b, 0, 0.0)


@jit(parallel=True)
def _act_grad_rows(dz, dout, y, activation, alpha):
    """dz = dout * f'(z), with f'(z) computed from the output y; dz may be dout."""
    n_rows, n_out = dz.shape
    if n_rows * n_out < PARALLEL_MIN_ELEMENTS:
        for n in range(n_rows):
            for j in range(n_out):
                dz[n, j] = dout[n, j] * activate_grad(activation, y[n, j], alpha)
    else:
        for n in prange(n_rows):
            for j in range(n_out):
                dz[n, j] = dout[n, j] * activate_grad(activation, y[n, j], alpha)


@jit
def _bias_grad(db, dz):
    """db = dz.sum(0): rows accumulated in order, so the sum is deterministic."""
    n_rows, n_out = dz.shape
    for j in range(n_out):
        db[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            db[j] += dz[n, j]


@jit(parallel=True, fastmath=True)
def _small_input_grad(dx, dz, w):
    """dx = dz @ w.T as loop nests: each (n, i) is a dot of two contiguous rows.

    The dot product is a reduction, which vectorizes only with reassociation:
    this is the one place where the safe fastmath set pays off.
    """
    n_rows, n_out = dz.shape
    n_in = w.shape[0]
    if n_rows * n_in * n_out < PARALLEL_MIN_ELEMENTS * 8:
        for n in range(n_rows):
            for i in range(n_in):
                acc = 0.0
                for j in range(n_out):
                    acc += dz[n, j] * w[i, j]
                dx[n, i] = acc
    else:
        for n in prange(n_rows):
            for i in range(n_in):
                acc = 0.0
                for j in range(n_out):
                    acc += dz[n, j] * w[i, j]
                dx[n, i] = acc


@jit(parallel=True)
def _small_weight_grad(dw, x, dz):
    """dw = x.T @ dz as loop nests; in parallel each thread owns rows of dw."""
    n_rows, n_in = x.shape
    n_out = dz.shape[1]
    if n_rows * n_in * n_out < PARALLEL_MIN_ELEMENTS * 8:
        for i in range(n_in):
            _weight_grad_row(dw, x, dz, i, n_rows, n_out)
    else:
        for i in prange(n_in):
            _weight_grad_row(dw, x, dz, i, n_rows, n_out)


@jit(inline="always")
def _weight_grad_row(dw, x, dz, i, n_rows, n_out):
    for j in range(n_out):
        dw[i, j] = 0.0
    for n in range(n_rows):
        xv = x[n, i]
        for j in range(n_out):
            dw[i, j] += xv * dz[n, j]


@jit
def _products_backward(dx, dw, dz, x, w):
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    if n_rows * n_in * n_out < BLAS_MIN_FLOPS:
        _small_weight_grad(dw, x, dz)
        if dx.size:
            _small_input_grad(dx, dz, w)
    else:
        np.dot(x.T, dz, dw)
        if dx.size:
            np.dot(dz, w.T, dx)


@jit
def dense_backward(dx, dw, db, dout, x, w):
    """Backward of out = x @ w + b.

    dout (N, O), x (N, I), w (I, O) -> dx (N, I) = dout @ w.T,
    dw (I, O) = x.T @ dout, db (O,) = dout.sum(0). All three are overwritten.
    Pass a zero-size dx (e.g. ``np.empty((0, 0))``) to skip the input gradient,
    as the first layer of a network does.
    """
    _bias_grad(db, dout)
    _products_backward(dx, dw, dout, x, w)


@jit
def dense_act_backward(dx, dw, db, dz, dout, out, x, w, activation, alpha):
    """Backward of out = f(z), z = x @ w + b, for activations derivable from out.

    dout (N, O), out (N, O), x (N, I), w (I, O) -> dz (N, O) = dout * f'(z)
    with f'(z) computed from out; dx (N, I) = dz @ w.T, dw (I, O) = x.T @ dz,
    db (O,) = dz.sum(0). All outputs are overwritten; dz may be the same array
    as dout (the gradient is then transformed in place). A zero-size dx skips
    the input gradient. Not valid for GELU, whose derivative needs z.
    """
    _act_grad_rows(dz, dout, out, activation, alpha)
    _bias_grad(db, dz)
    _products_backward(dx, dw, dz, x, w)
