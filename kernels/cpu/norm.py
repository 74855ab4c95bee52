"""Normalization layers: batch normalization over the rows of a batch, layer normalization over a row.

Both normalize, then scale and shift: out = gamma * xhat + beta with
xhat = (x - mean) * invstd and invstd = 1 / sqrt(var + eps), var the biased
variance (divided by the count, as PyTorch normalizes). BatchNorm takes mean
and var per feature over the N rows of the batch (its training mode) or uses
running statistics (``batchnorm_inference``); LayerNorm takes them per row over
the O features. The forward kernels save the mean and inverse standard
deviation in arrays passed by the caller, and the backward kernels read them
back: no allocation. docs/derivations.md derives the backward passes.

``gamma`` and ``beta`` may be zero-size arrays: no affine transform (gamma 1,
beta 0). ``dgamma`` and ``dbeta`` are always written (with affine=False the
caller passes scratch arrays): the backward needs those two sums anyway.

The ``*_act_*`` kernels fuse an elementwise activation after the
normalization, as ``dense_act_forward`` fuses it after the product: forward
out = f(gamma * xhat + beta) in the same pass, and backward takes the
gradient of f's output and applies f' on the fly, from the output y = out or
(GELU, SiLU) from the pre-activation, which it recomputes from x, the saved
statistics, gamma and beta. The plain kernels are these with the identity.
As in ``dense.py``, the code is tested once outside the element loops, and
the identity and ReLU each get their own copy of the loop with the code a
constant, so that the loop vectorizes. Every copy costs compile time (each
holds the activation dispatchers, inlined), so the other codes share one.

Every kernel runs on the calling thread. The reductions run in one fixed
order, row 0 to N-1 for a feature and feature 0 to O-1 for a row, the order of
the CUDA kernels' loops (one thread per feature column for BatchNorm, per row
for LayerNorm), so the statistics do not depend on a thread count. A row's
LayerNorm statistics are ``row_mean_invstd`` of ``kernels/_scalar.py``, which
the CUDA kernel calls too. These passes are memory-bound and cheap beside the
dense products, which is why they have no parallel twin (``_jit.py`` on why the
training loop calls only serial kernels).

Each public kernel has its argument spec (``*_SPEC``) just above it.
"""
import math

import numpy as np

from .._checks import ArgSpec
from .._jit import jit
from .._scalar import IDENTITY, RELU, activate, row_mean_invstd
from ._dz import dz as _dz


BATCHNORM_ACT_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "O"), ("var", "O"), ("invstd", "O"), ("x", "NO"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive"), ("activation", "act"), ("alpha", "float")],
    paired=[("gamma", "beta")], writes=("out", "mean", "var", "invstd"))


@jit
def batchnorm_act_forward(out, mean, var, invstd, x, gamma, beta, eps, activation, alpha):
    """Batch normalization in training mode, with the batch's own statistics, then an activation.

    x (N, O) -> out (N, O) = f(gamma * (x - mean) * invstd + beta), and the
    statistics per feature: mean (O,), var (O,) the biased variance
    sum_n (x - mean)^2 / N, invstd (O,) = 1 / sqrt(var + eps); all overwritten.
    Two passes (mean, then squared deviations), each summing rows 0..N-1 in
    order, and the output pass. gamma, beta (O,) or zero-size (no affine).
    ``activation`` is an elementwise code of ``fastbp.kernels.ACTIVATIONS``,
    ``alpha`` its parameter.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    mean : ndarray of shape (O,)
        The mean of each column (batch norm) or row (layer norm). Overwritten.
    var : ndarray of shape (O,)
        The batch's biased variance of each column. Overwritten.
    invstd : ndarray of shape (O,)
        1 / sqrt(var + eps). Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.
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
    _batch_statistics(mean, var, invstd, x, eps)
    _columns_act(out, x, mean, invstd, gamma, beta, activation, alpha)


@jit(inline="always")
def _batch_statistics(mean, var, invstd, x, eps):
    """Each column's mean, biased variance and 1 / sqrt(var + eps) (``batchnorm_act_forward``)."""
    n_rows, n_out = x.shape
    for j in range(n_out):
        mean[j] = 0.0
        var[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            mean[j] += x[n, j]
    for j in range(n_out):
        mean[j] /= n_rows
    for n in range(n_rows):
        for j in range(n_out):
            d = x[n, j] - mean[j]
            var[j] += d * d
    for j in range(n_out):
        var[j] /= n_rows
        invstd[j] = 1.0 / math.sqrt(var[j] + eps)


@jit(inline="always")
def batchnorm_act_forward_body(out, mean, var, invstd, x, gamma, beta, eps, activation, alpha):
    """``batchnorm_act_forward``'s work inlined into a compiled caller, for one activation code.

    The ``*_body`` functions of this module are the act kernels' loops, inlined into the numba IR
    of a caller that passes a constant ``activation`` (the training loop's norm ops,
    ``fastbp/backends/_norm_ops.py``): one loop, that code's, compiled instead of the kernel's
    copies for every code. The same arithmetic in the same order as the kernel, so the same bits.
    """
    _batch_statistics(mean, var, invstd, x, eps)
    _columns_act_loop(out, x, mean, invstd, gamma, beta, activation, alpha)


@jit(inline="always")
def _columns_act_loop(out, x, mean, invstd, gamma, beta, activation, alpha):
    """out[n, j] = f(gamma[j] * (x[n, j] - mean[j]) * invstd[j] + beta[j]) (no affine: gamma 1, beta 0)."""
    n_rows, n_out = x.shape
    if gamma.size:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = activate(activation, gamma[j] * ((x[n, j] - mean[j]) * invstd[j]) + beta[j], alpha)
    else:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = activate(activation, (x[n, j] - mean[j]) * invstd[j], alpha)


@jit
def _columns_act(out, x, mean, invstd, gamma, beta, activation, alpha):
    """``_columns_act_loop`` with the common codes as constants (module docstring)."""
    if activation == IDENTITY:
        _columns_act_loop(out, x, mean, invstd, gamma, beta, IDENTITY, alpha)
    elif activation == RELU:
        _columns_act_loop(out, x, mean, invstd, gamma, beta, RELU, alpha)
    else:
        _columns_act_loop(out, x, mean, invstd, gamma, beta, activation, alpha)


BATCHNORM_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "O"), ("var", "O"), ("invstd", "O"), ("x", "NO"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive")],
    paired=[("gamma", "beta")], writes=("out", "mean", "var", "invstd"))


@jit
def batchnorm_forward(out, mean, var, invstd, x, gamma, beta, eps):
    """Batch normalization in training mode: ``batchnorm_act_forward`` with the identity.

    x (N, O) -> out (N, O) = gamma * (x - mean) * invstd + beta, and mean,
    var (biased), invstd (O,) per feature; all overwritten.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    mean : ndarray of shape (O,)
        The mean of each column (batch norm) or row (layer norm). Overwritten.
    var : ndarray of shape (O,)
        The batch's biased variance of each column. Overwritten.
    invstd : ndarray of shape (O,)
        1 / sqrt(var + eps). Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    # np.int64, not a bare literal: see dense_forward.
    batchnorm_act_forward(out, mean, var, invstd, x, gamma, beta, eps, np.int64(IDENTITY), 0.0)


@jit(inline="always")
def _inference_loop(out, x, running_mean, running_var, gamma, beta, eps, activation, alpha):
    n_rows, n_out = x.shape
    if gamma.size:
        for n in range(n_rows):
            for j in range(n_out):
                z = gamma[j] * ((x[n, j] - running_mean[j]) / math.sqrt(running_var[j] + eps)) + beta[j]
                out[n, j] = activate(activation, z, alpha)
    else:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = activate(activation, (x[n, j] - running_mean[j]) / math.sqrt(running_var[j] + eps),
                                     alpha)


BATCHNORM_ACT_INFERENCE_SPEC = ArgSpec(
    [("out", "NO"), ("x", "NO"), ("running_mean", "O"), ("running_var", "O"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive"), ("activation", "act"), ("alpha", "float")],
    paired=[("gamma", "beta")], writes=("out",))


@jit
def batchnorm_act_inference(out, x, running_mean, running_var, gamma, beta, eps, activation, alpha):
    """Batch normalization in inference mode, with running statistics, then an activation.

    out (N, O) = f(gamma * (x - running_mean) / sqrt(running_var + eps) + beta),
    overwritten; any N, 1 included.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    running_mean : ndarray of shape (O,)
        Running mean of each feature.
    running_var : ndarray of shape (O,)
        Running (unbiased) variance of each feature.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.
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
    if activation == IDENTITY:
        _inference_loop(out, x, running_mean, running_var, gamma, beta, eps, IDENTITY, alpha)
    elif activation == RELU:
        _inference_loop(out, x, running_mean, running_var, gamma, beta, eps, RELU, alpha)
    else:
        _inference_loop(out, x, running_mean, running_var, gamma, beta, eps, activation, alpha)


BATCHNORM_INFERENCE_SPEC = ArgSpec(
    [("out", "NO"), ("x", "NO"), ("running_mean", "O"), ("running_var", "O"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive")],
    paired=[("gamma", "beta")], writes=("out",))


@jit
def batchnorm_inference(out, x, running_mean, running_var, gamma, beta, eps):
    """Batch normalization in inference mode: ``batchnorm_act_inference`` with the identity.

    out (N, O) = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,
    overwritten; any N, 1 included.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    running_mean : ndarray of shape (O,)
        Running mean of each feature.
    running_var : ndarray of shape (O,)
        Running (unbiased) variance of each feature.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    batchnorm_act_inference(out, x, running_mean, running_var, gamma, beta, eps, np.int64(IDENTITY), 0.0)


BATCHNORM_UPDATE_RUNNING_SPEC = ArgSpec(
    [("running_mean", "O"), ("running_var", "O"), ("mean", "O"), ("var", "O"), ("momentum", "momentum"),
     ("n", "count")],
    writes=("running_mean", "running_var"))


@jit
def batchnorm_update_running(running_mean, running_var, mean, var, momentum, n):
    """PyTorch's running statistics after a training batch of n >= 2 rows.

    running_mean = (1 - momentum) running_mean + momentum mean and
    running_var = (1 - momentum) running_var + momentum var n / (n - 1): the
    unbiased variance, where the normalization used the biased one. mean and
    var (O,) are what ``batchnorm_forward`` saved; both running arrays updated
    in place.

    Parameters
    ----------
    running_mean : ndarray of shape (O,)
        Running mean of each feature. Overwritten.
    running_var : ndarray of shape (O,)
        Running (unbiased) variance of each feature. Overwritten.
    mean : ndarray of shape (O,)
        The batch mean of each column, from ``batchnorm_forward``.
    var : ndarray of shape (O,)
        The batch's biased variance, from ``batchnorm_forward``.
    momentum : float in [0, 1]
        Weight of the batch's statistics (PyTorch's momentum, 0.1 by default).
    n : int >= 2
        Rows in the batch whose statistics ``mean`` and ``var`` are.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    unbias = n / (n - 1.0)
    for j in range(mean.size):
        running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1.0 - momentum) * running_var[j] + momentum * (var[j] * unbias)


@jit(inline="always")
def _batchnorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation,
                                 alpha):
    n_rows, n_out = dout.shape
    affine = gamma.size > 0
    keep = dx.size > 0
    for j in range(n_out):
        dgamma[j] = 0.0
        dbeta[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            xhat = (x[n, j] - mean[j]) * invstd[j]
            z = gamma[j] * xhat + beta[j] if affine else xhat
            g = _dz(activation, dout[n, j], out[n, j], z, alpha)
            dbeta[j] += g
            dgamma[j] += g * xhat
            if keep:
                dx[n, j] = g
    if not keep:
        return
    for n in range(n_rows):
        for j in range(n_out):
            scale = gamma[j] * invstd[j] if affine else invstd[j]
            xhat = (x[n, j] - mean[j]) * invstd[j]
            dx[n, j] = scale * (dx[n, j] - dbeta[j] / n_rows - xhat * (dgamma[j] / n_rows))


BATCHNORM_ACT_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO?"), ("dgamma", "O"), ("dbeta", "O"), ("dout", "NO"), ("out", "NO"), ("x", "NO"),
     ("mean", "O"), ("invstd", "O"), ("gamma", "O?"), ("beta", "O?"), ("activation", "act"),
     ("alpha", "float")],
    paired=[("gamma", "beta")], writes=("dx", "dgamma", "dbeta"))


@jit
def batchnorm_act_backward(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Backward of ``batchnorm_act_forward`` (training mode), through f and the batch mean and variance.

    dout is the gradient of the activation's output ``out``; g = dout f'(z) with
    z = gamma xhat + beta the pre-activation, xhat = (x - mean) * invstd. Then
    dbeta (O,) = sum_n g, dgamma (O,) = sum_n g * xhat, and
    dx (N, O) = gamma invstd (g - dbeta / N - xhat dgamma / N);
    all overwritten. A zero-size dx skips the input gradient; mean and invstd
    are the forward's. With a zero-size gamma and beta (no affine) gamma is 1,
    beta 0, and dgamma, dbeta are still the sums above. g is computed once per
    element and kept in dx between the two passes (GELU's derivative costs an
    erf and an exp).

    Parameters
    ----------
    dx : ndarray of shape (N, O) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dgamma : ndarray of shape (O,)
        Gradient of the loss with respect to ``gamma``; zero-size when ``gamma`` is. Overwritten.
    dbeta : ndarray of shape (O,)
        Gradient of the loss with respect to ``beta``; zero-size when ``beta`` is. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray of shape (N, O)
        The forward output.
    x : ndarray of shape (N, O)
        The forward input.
    mean : ndarray of shape (O,)
        The mean of each column (batch norm) or row (layer norm).
    invstd : ndarray of shape (O,)
        1 / sqrt(var + eps).
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
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
    if activation == IDENTITY:
        _batchnorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, IDENTITY, alpha)
    elif activation == RELU:
        _batchnorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, RELU, alpha)
    else:
        _batchnorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation,
                                     alpha)


BATCHNORM_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO?"), ("dgamma", "O"), ("dbeta", "O"), ("dout", "NO"), ("x", "NO"), ("mean", "O"),
     ("invstd", "O"), ("gamma", "O?")],
    writes=("dx", "dgamma", "dbeta"))


@jit
def batchnorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma):
    """Backward of ``batchnorm_forward`` (training mode), through the batch mean and variance.

    dbeta (O,) = sum_n dout, dgamma (O,) = sum_n dout * xhat with
    xhat = (x - mean) * invstd, and
    dx (N, O) = gamma invstd (dout - dbeta / N - xhat dgamma / N);
    all overwritten. A zero-size dx skips the input gradient; mean and invstd
    are the forward's. With a zero-size gamma (no affine) gamma is 1 and
    dgamma, dbeta are still the sums above.

    Parameters
    ----------
    dx : ndarray of shape (N, O) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dgamma : ndarray of shape (O,)
        Gradient of the loss with respect to ``gamma``; zero-size when ``gamma`` is. Overwritten.
    dbeta : ndarray of shape (O,)
        Gradient of the loss with respect to ``beta``; zero-size when ``beta`` is. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    x : ndarray of shape (N, O)
        The forward input.
    mean : ndarray of shape (O,)
        The mean of each column (batch norm) or row (layer norm).
    invstd : ndarray of shape (O,)
        1 / sqrt(var + eps).
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    # With the identity, neither out nor beta is read: dout and gamma stand in.
    batchnorm_act_backward(dx, dgamma, dbeta, dout, dout, x, mean, invstd, gamma, gamma, np.int64(IDENTITY), 0.0)


@jit(inline="always")
def _layernorm_act_forward_loop(out, mean, invstd, x, gamma, beta, eps, activation, alpha):
    n_rows, n_out = x.shape
    affine = gamma.size > 0
    for n in range(n_rows):
        mean[n], invstd[n] = row_mean_invstd(x, n, eps)
        # From the stored (rounded) values, exactly as backward will read them.
        m, r = mean[n], invstd[n]
        for j in range(n_out):
            xhat = (x[n, j] - m) * r
            out[n, j] = activate(activation, gamma[j] * xhat + beta[j] if affine else xhat, alpha)


LAYERNORM_ACT_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "N"), ("invstd", "N"), ("x", "NO"), ("gamma", "O?"), ("beta", "O?"),
     ("eps", "positive"), ("activation", "act"), ("alpha", "float")],
    paired=[("gamma", "beta")], writes=("out", "mean", "invstd"))


@jit
def layernorm_act_forward(out, mean, invstd, x, gamma, beta, eps, activation, alpha):
    """Layer normalization of each row over its O features, then an activation.

    x (N, O) -> out (N, O) = f(gamma * (x - mean_n) * invstd_n + beta), and per
    row mean (N,), invstd (N,) = 1 / sqrt(var_n + eps) with var_n the biased
    variance; all overwritten. Any N, 1 included.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    mean : ndarray of shape (N,)
        The mean of each column (batch norm) or row (layer norm). Overwritten.
    invstd : ndarray of shape (N,)
        1 / sqrt(var + eps). Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.
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
    if activation == IDENTITY:
        _layernorm_act_forward_loop(out, mean, invstd, x, gamma, beta, eps, IDENTITY, alpha)
    elif activation == RELU:
        _layernorm_act_forward_loop(out, mean, invstd, x, gamma, beta, eps, RELU, alpha)
    else:
        _layernorm_act_forward_loop(out, mean, invstd, x, gamma, beta, eps, activation, alpha)


LAYERNORM_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "N"), ("invstd", "N"), ("x", "NO"), ("gamma", "O?"), ("beta", "O?"),
     ("eps", "positive")],
    paired=[("gamma", "beta")], writes=("out", "mean", "invstd"))


@jit
def layernorm_forward(out, mean, invstd, x, gamma, beta, eps):
    """Layer normalization of each row: ``layernorm_act_forward`` with the identity.

    x (N, O) -> out (N, O) = gamma * (x - mean_n) * invstd_n + beta, and per row
    mean (N,), invstd (N,); all overwritten. Any N, 1 included.

    Parameters
    ----------
    out : ndarray of shape (N, O)
        The forward output. Overwritten.
    mean : ndarray of shape (N,)
        The mean of each column (batch norm) or row (layer norm). Overwritten.
    invstd : ndarray of shape (N,)
        1 / sqrt(var + eps). Overwritten.
    x : ndarray of shape (N, O)
        The forward input.
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
    eps : float > 0
        Added to the variance before its square root.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    layernorm_act_forward(out, mean, invstd, x, gamma, beta, eps, np.int64(IDENTITY), 0.0)


@jit(inline="always")
def _layernorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation,
                                 alpha):
    n_rows, n_out = dout.shape
    affine = gamma.size > 0
    keep = dx.size > 0
    for j in range(n_out):
        dgamma[j] = 0.0
        dbeta[j] = 0.0
    # The parameter sums first, rows 0..N-1 in order: a loop that vectorizes.
    for n in range(n_rows):
        m, r = mean[n], invstd[n]
        for j in range(n_out):
            xhat = (x[n, j] - m) * r
            d = _dz(activation, dout[n, j], out[n, j], gamma[j] * xhat + beta[j] if affine else xhat, alpha)
            dbeta[j] += d
            dgamma[j] += d * xhat
    if not keep:
        return
    # Then row by row: the two row sums (a reduction, which does not vectorize without
    # fastmath) with d kept in the row of dx, and dx from them.
    for n in range(n_rows):
        m, r = mean[n], invstd[n]
        s1 = 0.0
        s2 = 0.0
        for j in range(n_out):
            xhat = (x[n, j] - m) * r
            d = _dz(activation, dout[n, j], out[n, j], gamma[j] * xhat + beta[j] if affine else xhat, alpha)
            dx[n, j] = d
            g = d * gamma[j] if affine else d
            s1 += g
            s2 += g * xhat
        s1 /= n_out
        s2 /= n_out
        for j in range(n_out):
            g = dx[n, j] * gamma[j] if affine else dx[n, j]
            dx[n, j] = r * (g - s1 - ((x[n, j] - m) * r) * s2)


LAYERNORM_ACT_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO?"), ("dgamma", "O"), ("dbeta", "O"), ("dout", "NO"), ("out", "NO"), ("x", "NO"),
     ("mean", "N"), ("invstd", "N"), ("gamma", "O?"), ("beta", "O?"), ("activation", "act"),
     ("alpha", "float")],
    paired=[("gamma", "beta")], writes=("dx", "dgamma", "dbeta"))


@jit
def layernorm_act_backward(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Backward of ``layernorm_act_forward``, through f and each row's mean and variance.

    dout is the gradient of the activation's output ``out``; d = dout f'(z) with
    z = gamma xhat + beta. dbeta (O,) = sum_n d, dgamma (O,) = sum_n d * xhat,
    and per row, with g = d * gamma,
    dx (N, O) = invstd_n (g - mean_j(g) - xhat mean_j(g xhat));
    all overwritten. A zero-size dx skips the input gradient.

    Parameters
    ----------
    dx : ndarray of shape (N, O) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dgamma : ndarray of shape (O,)
        Gradient of the loss with respect to ``gamma``; zero-size when ``gamma`` is. Overwritten.
    dbeta : ndarray of shape (O,)
        Gradient of the loss with respect to ``beta``; zero-size when ``beta`` is. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    out : ndarray of shape (N, O)
        The forward output.
    x : ndarray of shape (N, O)
        The forward input.
    mean : ndarray of shape (N,)
        The mean of each column (batch norm) or row (layer norm).
    invstd : ndarray of shape (N,)
        1 / sqrt(var + eps).
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).
    beta : ndarray of shape (O,) or of size 0
        Shift; zero-size exactly when ``gamma`` is.
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
    if activation == IDENTITY:
        _layernorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, IDENTITY, alpha)
    elif activation == RELU:
        _layernorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, RELU, alpha)
    else:
        _layernorm_act_backward_loop(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation,
                                     alpha)


LAYERNORM_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO?"), ("dgamma", "O"), ("dbeta", "O"), ("dout", "NO"), ("x", "NO"), ("mean", "N"),
     ("invstd", "N"), ("gamma", "O?")],
    writes=("dx", "dgamma", "dbeta"))


@jit
def layernorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma):
    """Backward of ``layernorm_forward``, through each row's mean and variance.

    dbeta (O,) = sum_n dout, dgamma (O,) = sum_n dout * xhat, and per row, with
    g = dout * gamma, dx (N, O) = invstd_n (g - mean_j(g) - xhat mean_j(g xhat));
    all overwritten. A zero-size dx skips the input gradient.

    Parameters
    ----------
    dx : ndarray of shape (N, O) or of size 0
        Gradient of the loss with respect to ``x``. Overwritten.
    dgamma : ndarray of shape (O,)
        Gradient of the loss with respect to ``gamma``; zero-size when ``gamma`` is. Overwritten.
    dbeta : ndarray of shape (O,)
        Gradient of the loss with respect to ``beta``; zero-size when ``beta`` is. Overwritten.
    dout : ndarray of shape (N, O)
        Gradient of the loss with respect to ``out`` (from the layer above).
    x : ndarray of shape (N, O)
        The forward input.
    mean : ndarray of shape (N,)
        The mean of each column (batch norm) or row (layer norm).
    invstd : ndarray of shape (N,)
        1 / sqrt(var + eps).
    gamma : ndarray of shape (O,) or of size 0
        Scale; a zero-size array for no affine transform (then ``beta`` is zero-size too).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    # With the identity, neither out nor beta is read: dout and gamma stand in.
    layernorm_act_backward(dx, dgamma, dbeta, dout, dout, x, mean, invstd, gamma, gamma, np.int64(IDENTITY), 0.0)


# The other act kernels' bodies, for compiled callers with a constant activation code (as
# ``batchnorm_act_forward_body``).
batchnorm_act_inference_body = _inference_loop
batchnorm_act_backward_body = _batchnorm_act_backward_loop
layernorm_act_forward_body = _layernorm_act_forward_loop
layernorm_act_backward_body = _layernorm_act_backward_loop
