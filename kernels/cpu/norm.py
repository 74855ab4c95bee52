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

Every kernel runs on the calling thread. The reductions run in one fixed
order, row 0 to N-1 for a feature and feature 0 to O-1 for a row, the order of
the CUDA kernels' loops (one thread per feature column for BatchNorm, per row
for LayerNorm), so the statistics do not depend on a thread count. These
passes are memory-bound and cheap beside the dense products, which is why
they have no parallel twin (``_jit.py`` on why the training loop calls only
serial kernels).

Each public kernel has its argument spec (``*_SPEC``) just above it.
"""
import math

from .._checks import ArgSpec
from .._jit import jit


BATCHNORM_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "O"), ("var", "O"), ("invstd", "O"), ("x", "NO"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive")],
    writes=("out", "mean", "var", "invstd"))


@jit
def batchnorm_forward(out, mean, var, invstd, x, gamma, beta, eps):
    """Batch normalization in training mode, with the batch's own statistics.

    x (N, O) -> out (N, O) = gamma * (x - mean) * invstd + beta, and the
    statistics per feature: mean (O,), var (O,) the biased variance
    sum_n (x - mean)^2 / N, invstd (O,) = 1 / sqrt(var + eps); all overwritten.
    Two passes (mean, then squared deviations), each summing rows 0..N-1 in
    order. gamma, beta (O,) or zero-size (no affine).
    """
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
    _scale_shift_columns(out, x, mean, invstd, gamma, beta)


@jit(inline="always")
def _scale_shift_columns(out, x, mean, invstd, gamma, beta):
    """out[n, j] = gamma[j] * (x[n, j] - mean[j]) * invstd[j] + beta[j] (no affine: gamma 1, beta 0)."""
    n_rows, n_out = x.shape
    if gamma.size:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = gamma[j] * ((x[n, j] - mean[j]) * invstd[j]) + beta[j]
    else:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = (x[n, j] - mean[j]) * invstd[j]


BATCHNORM_INFERENCE_SPEC = ArgSpec(
    [("out", "NO"), ("x", "NO"), ("running_mean", "O"), ("running_var", "O"), ("gamma", "O?"),
     ("beta", "O?"), ("eps", "positive")],
    writes=("out",))


@jit
def batchnorm_inference(out, x, running_mean, running_var, gamma, beta, eps):
    """Batch normalization in inference mode, with running statistics.

    out (N, O) = gamma * (x - running_mean) / sqrt(running_var + eps) + beta,
    overwritten; any N, 1 included.
    """
    n_rows, n_out = x.shape
    if gamma.size:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = (gamma[j] * ((x[n, j] - running_mean[j]) / math.sqrt(running_var[j] + eps))
                             + beta[j])
    else:
        for n in range(n_rows):
            for j in range(n_out):
                out[n, j] = (x[n, j] - running_mean[j]) / math.sqrt(running_var[j] + eps)


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
    """
    unbias = n / (n - 1.0)
    for j in range(mean.size):
        running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1.0 - momentum) * running_var[j] + momentum * (var[j] * unbias)


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
    """
    n_rows, n_out = dout.shape
    for j in range(n_out):
        dgamma[j] = 0.0
        dbeta[j] = 0.0
    for n in range(n_rows):
        for j in range(n_out):
            g = dout[n, j]
            dbeta[j] += g
            dgamma[j] += g * ((x[n, j] - mean[j]) * invstd[j])
    if dx.size == 0:
        return
    affine = gamma.size > 0
    for n in range(n_rows):
        for j in range(n_out):
            scale = gamma[j] * invstd[j] if affine else invstd[j]
            xhat = (x[n, j] - mean[j]) * invstd[j]
            dx[n, j] = scale * (dout[n, j] - dbeta[j] / n_rows - xhat * (dgamma[j] / n_rows))


LAYERNORM_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("mean", "N"), ("invstd", "N"), ("x", "NO"), ("gamma", "O?"), ("beta", "O?"),
     ("eps", "positive")],
    writes=("out", "mean", "invstd"))


@jit
def layernorm_forward(out, mean, invstd, x, gamma, beta, eps):
    """Layer normalization of each row over its O features.

    x (N, O) -> out (N, O) = gamma * (x - mean_n) * invstd_n + beta, and per row
    mean (N,), invstd (N,) = 1 / sqrt(var_n + eps) with var_n the biased
    variance; all overwritten. Any N, 1 included.
    """
    n_rows, n_out = x.shape
    affine = gamma.size > 0
    for n in range(n_rows):
        s = 0.0
        for j in range(n_out):
            s += x[n, j]
        m = s / n_out
        v = 0.0
        for j in range(n_out):
            d = x[n, j] - m
            v += d * d
        r = 1.0 / math.sqrt(v / n_out + eps)
        mean[n] = m
        invstd[n] = r
        # From the stored (rounded) values, exactly as backward will read them.
        m, r = mean[n], invstd[n]
        for j in range(n_out):
            xhat = (x[n, j] - m) * r
            out[n, j] = gamma[j] * xhat + beta[j] if affine else xhat


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
    """
    n_rows, n_out = dout.shape
    affine = gamma.size > 0
    for j in range(n_out):
        dgamma[j] = 0.0
        dbeta[j] = 0.0
    for n in range(n_rows):
        m, r = mean[n], invstd[n]
        for j in range(n_out):
            d = dout[n, j]
            dbeta[j] += d
            dgamma[j] += d * ((x[n, j] - m) * r)
    if dx.size == 0:
        return
    for n in range(n_rows):
        m, r = mean[n], invstd[n]
        s1 = 0.0
        s2 = 0.0
        for j in range(n_out):
            g = dout[n, j] * gamma[j] if affine else dout[n, j]
            s1 += g
            s2 += g * ((x[n, j] - m) * r)
        s1 /= n_out
        s2 /= n_out
        for j in range(n_out):
            g = dout[n, j] * gamma[j] if affine else dout[n, j]
            dx[n, j] = r * (g - s1 - ((x[n, j] - m) * r) * s2)
