"""Dense layer kernels: out = f(x @ w + b), forward and backward.

Shapes: x (N, I), w (I, O), b (O,), out (N, O). Gradients are *overwritten*,
never accumulated (one rule for the whole package). The batch mean lives in
the loss backward, so these are plain sums over the batch.

Products go to BLAS (``np.dot`` with an ``out`` argument, which numba lowers
to ?gemm without allocating) from a few thousand multiply-adds up: measured
side by side, single-threaded sgemm beats the loop nests below from about
(32, 32, 10) on, and it brings its own threads for large layers. Below that,
the call overhead dominates and the loop nests win; they run in n-k-j order so
the innermost loop walks contiguous rows with independent iterations.

float32 products of small and medium layers (``gemm_small.use_simd``: a SIMD width for this
CPU and at most ``SIMD_MAX_MACS`` multiply-adds, or ``SIMD_FEW_ROWS_MAX_MACS`` on a batch of at
most ``SIMD_FEW_ROWS`` rows) run in fastbp's own register-blocked SIMD
kernels instead (``gemm_small.py``), the forward with bias and ReLU fused into the tile's
stores, and the weight gradient. dx = dz @ w.T runs there too up to ``SIMD_NT_MAX_MACS``; above,
BLAS, as the SIMD kernel packs w.T first and that packing is not paid back.

Bias and activation (forward), activation derivative and bias gradient
(backward) are each one serial pass over the (N, O) output, fused. They stay
serial on purpose: they cost O(N O) against the O(N I O) of the product, and a
parallel region would wake numba's thread pool between BLAS calls, whose own
threads then compete with it for the cores.

Compile time: the helpers below that have one call site in a kernel (the bias and activation
passes, the product drivers ``_products_backward`` and ``gemm_small.matmul_*``) are inlined into
numba's IR (``inline="always"``). Compiled as functions of their own, each was optimized and
emitted on its own, then again inside every caller: a cold compile of dense_act_forward and
dense_act_backward took 1.3x as long (benchmarks/bench_compile.py, 2026-12-07). The fastmath
loop nests stay functions of their own: inlined, they would take the caller's floating-point
flags, and other rounding. ``_gemm``, with three callers, too.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.
"""
import functools

import numpy as np

from .._checks import ArgSpec
from .._jit import jit
from .._scalar import ELU, IDENTITY, LEAKY_RELU, RELU, SIGMOID, TANH, activate, activate_grad
from . import gemm_small as G
from ._dz import dz as typed_dz
from ..registry import ACTIVATION_NAMES

# Products of fewer multiply-adds (N I O) than this use the loop nests.
BLAS_MIN_FLOPS = 2048


@jit(inline="always")
def _bias_act_loop(out, b, activation, alpha):
    n_rows, n_out = out.shape
    for n in range(n_rows):
        for j in range(n_out):
            out[n, j] = activate(activation, out[n, j] + b[j], alpha)


@jit(inline="always")
def _bias_act_rows(out, b, activation, alpha):
    """out[n, :] = f(out[n, :] + b): one pass over the BLAS product.

    The code is tested once here, outside the loop, and each branch inlines the
    loop with its code as a constant: a loop with a single formula vectorizes,
    one that switches on the code per element does not (ReLU on (32, 32)
    float32: 2.45 -> 0.15 us). Activations with a transcendental function are
    scalar library calls either way and share the generic loop.
    ``dense_act_apply_for`` gives each code the loop it has here (its own for
    leaky ReLU, the generic one for the others), for the same bits: change both
    together.
    """
    if activation == IDENTITY:
        _bias_act_loop(out, b, IDENTITY, alpha)
    elif activation == RELU:
        _bias_act_loop(out, b, RELU, alpha)
    elif activation == LEAKY_RELU:
        _bias_act_loop(out, b, LEAKY_RELU, alpha)
    else:
        _bias_act_loop(out, b, activation, alpha)


@jit(fastmath=True, callers="compiled")
def _small_forward(out, x, w, b, activation, alpha):
    """Loop-nest forward for tiny layers, bias and activation fused per row."""
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    for n in range(n_rows):
        for j in range(n_out):
            out[n, j] = b[j]
        for k in range(n_in):
            xv = x[n, k]
            for j in range(n_out):
                out[n, j] += xv * w[k, j]
        for j in range(n_out):
            out[n, j] = activate(activation, out[n, j], alpha)


DENSE_ACT_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("x", "NI"), ("w", "IO"), ("b", "O"), ("activation", "act"),
     ("alpha", "float")],
    writes=("out",))


@jit
def dense_act_forward(out, x, w, b, activation, alpha):
    """Fused dense + activation forward: out = f(x @ w + b).

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten. ``activation`` is an
    activation code from ``fastbp.kernels.ACTIVATIONS`` and ``alpha`` its
    parameter (leaky slope, ELU alpha; ignored otherwise). Bias and activation
    are applied in the same pass over out.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, I)
        The forward input.
    w : ndarray of shape (I, O)
        Weights.
    b : ndarray of shape (O,)
        Bias.
    activation : int
        Activation code, a value of ``fastbp.kernels.ACTIVATIONS``.
    alpha : float
        The activation's parameter (leaky slope, ELU alpha); ignored by the others.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    if (activation == RELU or activation == IDENTITY) and G.use_simd(x, n_rows, n_rows * n_in * n_out):
        G.matmul_bias(out, x, w, b, activation == RELU)
    elif n_rows * n_in * n_out < BLAS_MIN_FLOPS:
        _small_forward(out, x, w, b, activation, alpha)
    else:
        np.dot(x, w, out)
        _bias_act_rows(out, b, activation, alpha)


DENSE_FORWARD_SPEC = ArgSpec([("out", "NO"), ("x", "NI"), ("w", "IO"), ("b", "O")], writes=("out",))


@jit
def dense_forward(out, x, w, b):
    """Dense forward: out = x @ w + b.

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, I)
        The forward input.
    w : ndarray of shape (I, O)
        Weights.
    b : ndarray of shape (O,)
        Bias.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    # np.int64(IDENTITY), not a bare 0: numba types a literal 0 as Literal[int](0)
    # and would compile (and cache) a second copy of dense_act_forward and its
    # helpers specialized to that constant.
    dense_act_forward(out, x, w, b, np.int64(IDENTITY), 0.0)


@jit(inline="always")
def _act_grad_and_bias_loop(dz, db, dout, y, activation, alpha):
    n_rows, n_out = dz.shape
    for j in range(n_out):
        db[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            g = dout[n, j] * activate_grad(activation, y[n, j], alpha)
            dz[n, j] = g
            db[j] += g


@jit(inline="always")
def _typed_grad_and_bias_loop(dz, db, dout, y, activation, alpha):
    """``_act_grad_and_bias_loop`` for the identity and ReLU, in dout's dtype (``_dz.py``): the
    shared formula's float64 1.0 and 0.0 widened every float32 element to float64 and back, the
    loop's largest cost. The same bits (``_dz.py``); the other codes keep the widening loop, whose
    db sums the unrounded float64 products."""
    n_rows, n_out = dz.shape
    for j in range(n_out):
        db[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            g = typed_dz(activation, dout[n, j], y[n, j], y[n, j], alpha)
            dz[n, j] = g
            db[j] += g


@jit(inline="always")
def _act_grad_and_bias(dz, db, dout, y, activation, alpha):
    """dz = dout * f'(z) from the output y, and db = dz.sum(0), in one pass; dz may be dout.

    Rows are accumulated into db in order, so the sum is deterministic. As in
    ``_bias_act_rows``, one branch per code with the code a constant in its
    loop, so that the loop vectorizes; only softplus's derivative needs a
    library call. ``dense_act_grad_for`` gives each code the loop it has here
    (``_OWN_LOOP``: the codes of a branch of their own, besides identity and
    ReLU), for the same bits: change both together.
    """
    if activation == IDENTITY:
        _typed_grad_and_bias_loop(dz, db, dout, y, IDENTITY, alpha)
    elif activation == RELU:
        _typed_grad_and_bias_loop(dz, db, dout, y, RELU, alpha)
    elif activation == LEAKY_RELU:
        _act_grad_and_bias_loop(dz, db, dout, y, LEAKY_RELU, alpha)
    elif activation == ELU:
        _act_grad_and_bias_loop(dz, db, dout, y, ELU, alpha)
    elif activation == SIGMOID:
        _act_grad_and_bias_loop(dz, db, dout, y, SIGMOID, alpha)
    elif activation == TANH:
        _act_grad_and_bias_loop(dz, db, dout, y, TANH, alpha)
    else:
        _act_grad_and_bias_loop(dz, db, dout, y, activation, alpha)


@jit(fastmath=True, callers="compiled")
def _small_input_grad(dx, dz, w):
    """dx = dz @ w.T as loop nests: each (n, i) is a dot of two contiguous rows.

    The dot product is a reduction, which vectorizes only with reassociation:
    this is where the safe fastmath set pays off.
    """
    n_rows, n_out = dz.shape
    n_in = w.shape[0]
    for n in range(n_rows):
        for i in range(n_in):
            acc = 0.0
            for j in range(n_out):
                acc += dz[n, j] * w[i, j]
            dx[n, i] = acc


@jit(fastmath=True, callers="compiled")
def _small_weight_grad(dw, x, dz):
    """dw = x.T @ dz as loop nests: a rank-1 update of dw per sample, rows contiguous."""
    n_rows, n_in = x.shape
    n_out = dz.shape[1]
    for i in range(n_in):
        for j in range(n_out):
            dw[i, j] = 0.0
    for n in range(n_rows):
        for i in range(n_in):
            xv = x[n, i]
            for j in range(n_out):
                dw[i, j] += xv * dz[n, j]


@jit(inline="always")
def _products_backward(dx, dw, dz, x, w):
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    if G.use_simd(x, n_rows, n_rows * n_in * n_out):
        G.matmul_tn(dw, x, dz)
        if dx.size:
            if n_rows * n_in * n_out <= G.SIMD_NT_MAX_MACS:
                G.matmul_nt(dx, dz, w)
            else:
                np.dot(dz, w.T, dx)
    elif n_rows * n_in * n_out < BLAS_MIN_FLOPS:
        _small_weight_grad(dw, x, dz)
        if dx.size:
            _small_input_grad(dx, dz, w)
    else:
        np.dot(x.T, dz, dw)
        if dx.size:
            np.dot(dz, w.T, dx)


DENSE_BACKWARD_SPEC = ArgSpec(
    [("dx", "NI?"), ("dw", "IO"), ("db", "O"), ("dout", "NO"), ("x", "NI"), ("w", "IO")],
    writes=("dx", "dw", "db"))


@jit
def dense_backward(dx, dw, db, dout, x, w):
    """Backward of out = x @ w + b.

    dout (N, O), x (N, I), w (I, O) -> dx (N, I) = dout @ w.T,
    dw (I, O) = x.T @ dout, db (O,) = dout.sum(0). All three are overwritten.
    Pass a zero-size dx (e.g. ``np.empty((0, 0))``) to skip the input gradient,
    as the first layer of a network does.

    Parameters
    ----------
    dx : ndarray of shape (N, I) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dw : ndarray of shape (I, O)
        Gradient of the loss with respect to ``w``. Overwritten.
    db : ndarray of shape (O,)
        Gradient of the loss with respect to ``b``. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    x : ndarray of shape (N, I)
        The forward input.
    w : ndarray of shape (I, O)
        Weights.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    n_rows, n_out = dout.shape
    for j in range(n_out):
        db[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            db[j] += dout[n, j]
    _products_backward(dx, dw, dout, x, w)


DENSE_ACT_BACKWARD_SPEC = ArgSpec(
    [("dx", "NI?"), ("dw", "IO"), ("db", "O"), ("dz", "NO"), ("dout", "NO"), ("out", "NO"),
     ("x", "NI"), ("w", "IO"), ("activation", "act_fused"), ("alpha", "float")],
    writes=("dx", "dw", "db", "dz"))


@jit
def dense_act_backward(dx, dw, db, dz, dout, out, x, w, activation, alpha):
    """Backward of out = f(z), z = x @ w + b, for activations derivable from out.

    dout (N, O), out (N, O), x (N, I), w (I, O) -> dz (N, O) = dout * f'(z)
    with f'(z) computed from out; dx (N, I) = dz @ w.T, dw (I, O) = x.T @ dz,
    db (O,) = dz.sum(0). All outputs are overwritten; dz may be the same array
    as dout (the gradient is then transformed in place). A zero-size dx skips
    the input gradient. Not valid for GELU, whose derivative needs z.

    Parameters
    ----------
    dx : ndarray of shape (N, I) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dw : ndarray of shape (I, O)
        Gradient of the loss with respect to ``w``. Overwritten.
    db : ndarray of shape (O,)
        Gradient of the loss with respect to ``b``. Overwritten.
    dz : ndarray of shape (N, O)
        Gradient with respect to the pre-activation z = x @ w + b; may be ``dout`` itself. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray of shape (N, O)
        The forward output.
    x : ndarray of shape (N, I)
        The forward input.
    w : ndarray of shape (I, O)
        Weights.
    activation : int
        Activation code, a value of ``fastbp.kernels.ACTIVATIONS``.
    alpha : float
        The activation's parameter (leaky slope, ELU alpha); ignored by the others.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    _act_grad_and_bias(dz, db, dout, out, activation, alpha)
    _products_backward(dx, dw, dz, x, w)


# ----- what the compiled training loop calls (its kernel table, by address) ----------------------
#
# The loop calls the dense layer as two units: ``dense_table_forward`` and ``dense_table_backward``,
# which hold the products and the ReLU and identity passes (every network has them), and, for a
# layer of another activation, one kernel per code beside them (``dense_act_apply_for`` after the
# forward, ``dense_act_grad_for`` before the backward). dense_act_forward and
# dense_act_backward hold every code's pass, typed and compiled with the products: a cold start,
# whose networks use ReLU, compiled the other five passes of the backward (1.6 s of its 4.5 s,
# one core) and the forward's (0.35 s of 2.7 s) for nothing. The split is bit for bit the fused
# kernels': the same products, the bias added in the layer's dtype first, then the activation of
# that value, and db summed from the unrounded dz (tests/test_dense.py).

# The codes the table's dense kernels apply themselves; a layer of any other code has its per-code
# kernels called beside them.
TABLE_FUSED = (IDENTITY, RELU)


@jit(callers="compiled")
def dense_table_forward(out, x, w, b, activation, alpha):
    """``dense_act_forward`` for ReLU and the identity; for any other code, out = x @ w + b, to
    which the loop then applies the activation (``dense_act_apply_for``)."""
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    relu = activation == RELU
    if G.use_simd(x, n_rows, n_rows * n_in * n_out) and (relu or activation == IDENTITY):
        G.matmul_bias(out, x, w, b, relu)
    elif n_rows * n_in * n_out < BLAS_MIN_FLOPS:
        _small_forward(out, x, w, b, RELU if relu else IDENTITY, alpha)
    else:
        np.dot(x, w, out)
        if relu:
            _bias_act_loop(out, b, RELU, alpha)
        else:
            _bias_act_loop(out, b, IDENTITY, alpha)


@jit(callers="compiled")
def dense_table_backward(dx, dw, db, dz, dout, out, x, w, activation, alpha):
    """``dense_act_backward`` for ReLU and the identity; for any other code, the loop has put
    dz = dout * f'(z) and db into ``dz`` and ``db`` already (``dense_act_grad_for``), and this
    computes dx and dw from them."""
    if activation == IDENTITY:
        _typed_grad_and_bias_loop(dz, db, dout, out, IDENTITY, alpha)
    elif activation == RELU:
        _typed_grad_and_bias_loop(dz, db, dout, out, RELU, alpha)
    _products_backward(dx, dw, dz, x, w)


DENSE_ACT_GRAD_SPEC = ArgSpec(
    [("dz", "NO"), ("db", "O"), ("dout", "NO"), ("out", "NO"), ("code", "act_fused"), ("alpha", "float")],
    writes=("dz", "db"))


# The codes whose pass dense_act_backward (and the forward's BLAS path, LEAKY_RELU) runs as a
# loop of its own, the code a constant; it runs the others (softplus, SELU) in the loop over every
# code. The per-code kernels do the same, and so get the same bits: LLVM vectorizes a loop of one
# formula, and a vectorized exp or log1p rounds differently from the scalar call (float32
# softplus, measured).
_OWN_LOOP = (LEAKY_RELU, ELU, SIGMOID, TANH)


@functools.lru_cache(maxsize=None)
def dense_act_grad_for(code):
    """dz = dout * f'(z) from the output, and db = dz.sum(0), for the activation ``code``:
    ``dense_act_backward``'s pass for that code. One kernel per code and process, called by the
    training loop before ``dense_table_backward``."""
    if code in _OWN_LOOP:
        def grad(dz, db, dout, out, _code, alpha):
            _act_grad_and_bias_loop(dz, db, dout, out, code, alpha)
    else:
        def grad(dz, db, dout, out, _code, alpha):
            _act_grad_and_bias_loop(dz, db, dout, out, _code, alpha)
    grad.__qualname__ = grad.__name__ = f"dense_act_grad_{ACTIVATION_NAMES[code]}"
    return jit(grad, callers="compiled")


@jit(inline="always")
def _act_loop(out, activation, alpha):
    n_rows, n_out = out.shape
    for n in range(n_rows):
        for j in range(n_out):
            out[n, j] = activate(activation, out[n, j], alpha)


DENSE_ACT_APPLY_SPEC = ArgSpec([("out", "NO"), ("code", "act_fused"), ("alpha", "float")], writes=("out",))


@functools.lru_cache(maxsize=None)
def dense_act_apply_for(code):
    """out = f(out) in place for the activation ``code``, after ``dense_table_forward`` left
    out = x @ w + b: ``dense_act_forward``'s activation of that value. One kernel per code and
    process."""
    if code == LEAKY_RELU:
        def apply(out, _code, alpha):
            _act_loop(out, LEAKY_RELU, alpha)
    else:
        def apply(out, _code, alpha):
            _act_loop(out, _code, alpha)
    apply.__qualname__ = apply.__name__ = f"dense_act_apply_{ACTIVATION_NAMES[code]}"
    return jit(apply, callers="compiled")
