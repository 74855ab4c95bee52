"""Normalization layers on the GPU: the names, arguments and conventions of ``cpu/norm.py``.

BatchNorm runs one thread per feature column: the thread sums its column over
rows 0..N-1 in order (adjacent threads read adjacent columns of a row, so the
reads coalesce), then normalizes that column. LayerNorm runs one thread per
row, whose statistics are ``row_mean_invstd`` of ``kernels/_scalar.py``, the
CPU kernel's formula (features 0..O-1 in order). Every reduction is a plain loop in one
thread, in the CPU kernels' order, with the CPU's accumulator types: no
atomics and no tree whose shape depends on the launch, so the statistics are
the same on every launch and, in float64, those of the CPU. The grids are
grid-stride loops over columns or rows.

LayerNorm's dgamma and dbeta are sums over rows: a second kernel, one thread
per column, as BatchNorm's.

The ``*_act_*`` kernels fuse an elementwise activation after the
normalization, with the shared scalar formulas (``activate``,
``activate_dz``); backward recomputes the pre-activation where GELU or SiLU
need it. The plain kernels are these with the identity.
"""
import math

from .._scalar import IDENTITY, activate, activate_dz, row_mean_invstd
from ._launch import dev, elementwise
from ._numba_cuda import cuda, device, kernel


@kernel
def _batchnorm_forward_kernel(out, mean, var, invstd, x, gamma, beta, eps, activation, alpha):
    """Thread j owns column j: its mean, biased variance, inverse std and output."""
    n_rows, n_out = x.shape
    for j in range(cuda.grid(1), n_out, cuda.gridsize(1)):
        mean[j] = 0
        s = mean[j]  # an accumulator of the array's dtype, as the CPU's mean[j] +=
        for n in range(n_rows):
            s += x[n, j]
        mean[j] = s / n_rows
        m = mean[j]
        var[j] = 0
        v = var[j]
        for n in range(n_rows):
            d = x[n, j] - m
            v += d * d
        var[j] = v / n_rows
        invstd[j] = 1.0 / math.sqrt(var[j] + eps)
        r = invstd[j]
        for n in range(n_rows):
            if gamma.size:
                out[n, j] = activate(activation, gamma[j] * ((x[n, j] - m) * r) + beta[j], alpha)
            else:
                out[n, j] = activate(activation, (x[n, j] - m) * r, alpha)


@kernel
def _batchnorm_inference_kernel(out, x, running_mean, running_var, gamma, beta, eps, activation, alpha):
    """Thread j owns column j of out."""
    n_rows, n_out = x.shape
    for j in range(cuda.grid(1), n_out, cuda.gridsize(1)):
        sd = math.sqrt(running_var[j] + eps)
        for n in range(n_rows):
            if gamma.size:
                out[n, j] = activate(activation, gamma[j] * ((x[n, j] - running_mean[j]) / sd) + beta[j], alpha)
            else:
                out[n, j] = activate(activation, (x[n, j] - running_mean[j]) / sd, alpha)


@kernel
def _batchnorm_update_running_kernel(running_mean, running_var, mean, var, momentum, unbias):
    for j in range(cuda.grid(1), mean.size, cuda.gridsize(1)):
        running_mean[j] = (1.0 - momentum) * running_mean[j] + momentum * mean[j]
        running_var[j] = (1.0 - momentum) * running_var[j] + momentum * (var[j] * unbias)


@device
def _pre_activation_grad(activation, dout, out, x, m, r, gamma, beta, n, j, alpha):
    """(g, xhat): g = dout f'(z) at element (n, j), xhat = (x - m) r, z = gamma xhat + beta."""
    xhat = (x[n, j] - m) * r
    z = gamma[j] * xhat + beta[j] if gamma.size else xhat
    return activate_dz(activation, dout[n, j], out[n, j], z, alpha), xhat


@kernel
def _batchnorm_backward_kernel(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Thread j owns column j: its two sums over the rows, then its column of dx."""
    n_rows, n_out = dout.shape
    for j in range(cuda.grid(1), n_out, cuda.gridsize(1)):
        m, r = mean[j], invstd[j]
        dgamma[j] = 0
        dbeta[j] = 0
        sg = dgamma[j]
        sb = dbeta[j]
        for n in range(n_rows):
            g, xhat = _pre_activation_grad(activation, dout, out, x, m, r, gamma, beta, n, j, alpha)
            sb += g
            sg += g * xhat
        dgamma[j] = sg
        dbeta[j] = sb
        if dx.size:
            scale = gamma[j] * r if gamma.size else r
            for n in range(n_rows):
                g, xhat = _pre_activation_grad(activation, dout, out, x, m, r, gamma, beta, n, j, alpha)
                dx[n, j] = scale * (g - dbeta[j] / n_rows - xhat * (dgamma[j] / n_rows))


@kernel
def _layernorm_forward_kernel(out, mean, invstd, x, gamma, beta, eps, activation, alpha):
    """Thread n owns row n: its mean, inverse std and output."""
    n_rows, n_out = x.shape
    for n in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
        mean[n], invstd[n] = row_mean_invstd(x, n, eps)
        m, r = mean[n], invstd[n]
        for j in range(n_out):
            xhat = (x[n, j] - m) * r
            if gamma.size:
                out[n, j] = activate(activation, gamma[j] * xhat + beta[j], alpha)
            else:
                out[n, j] = activate(activation, xhat, alpha)


@kernel
def _layernorm_param_grad_kernel(dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Thread j owns column j: dbeta = sum_n g, dgamma = sum_n g xhat, rows in order (g = dout f'(z))."""
    n_rows, n_out = dout.shape
    for j in range(cuda.grid(1), n_out, cuda.gridsize(1)):
        dgamma[j] = 0
        dbeta[j] = 0
        sg = dgamma[j]
        sb = dbeta[j]
        for n in range(n_rows):
            d, xhat = _pre_activation_grad(activation, dout, out, x, mean[n], invstd[n], gamma, beta, n, j, alpha)
            sb += d
            sg += d * xhat
        dgamma[j] = sg
        dbeta[j] = sb


@kernel
def _layernorm_input_grad_kernel(dx, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Thread n owns row n of dx: invstd (g - mean(g) - xhat mean(g xhat)), g = dout f'(z) gamma."""
    n_rows, n_out = dout.shape
    for n in range(cuda.grid(1), n_rows, cuda.gridsize(1)):
        m, r = mean[n], invstd[n]
        s1 = 0.0
        s2 = 0.0
        for j in range(n_out):
            d, xhat = _pre_activation_grad(activation, dout, out, x, m, r, gamma, beta, n, j, alpha)
            g = d * gamma[j] if gamma.size else d
            s1 += g
            s2 += g * xhat
        s1 /= n_out
        s2 /= n_out
        for j in range(n_out):
            d, xhat = _pre_activation_grad(activation, dout, out, x, m, r, gamma, beta, n, j, alpha)
            g = d * gamma[j] if gamma.size else d
            dx[n, j] = r * (g - s1 - xhat * s2)


def batchnorm_act_forward(out, mean, var, invstd, x, gamma, beta, eps, activation, alpha):
    """Batch normalization in training mode, then an activation (``fastbp.kernels.batchnorm_act_forward``)."""
    x = dev(x)
    elementwise(_batchnorm_forward_kernel, x.shape[1])(dev(out), dev(mean), dev(var), dev(invstd), x,
                                                       dev(gamma), dev(beta), float(eps), int(activation),
                                                       float(alpha))


def batchnorm_forward(out, mean, var, invstd, x, gamma, beta, eps):
    """Batch normalization in training mode (``fastbp.kernels.batchnorm_forward``), on the device."""
    batchnorm_act_forward(out, mean, var, invstd, x, gamma, beta, eps, IDENTITY, 0.0)


def batchnorm_act_inference(out, x, running_mean, running_var, gamma, beta, eps, activation, alpha):
    """Batch normalization with running statistics, then an activation (``fastbp.kernels``' name)."""
    x = dev(x)
    elementwise(_batchnorm_inference_kernel, x.shape[1])(dev(out), x, dev(running_mean), dev(running_var),
                                                         dev(gamma), dev(beta), float(eps), int(activation),
                                                         float(alpha))


def batchnorm_inference(out, x, running_mean, running_var, gamma, beta, eps):
    """Batch normalization with running statistics (``fastbp.kernels.batchnorm_inference``)."""
    batchnorm_act_inference(out, x, running_mean, running_var, gamma, beta, eps, IDENTITY, 0.0)


def batchnorm_update_running(running_mean, running_var, mean, var, momentum, n):
    """PyTorch's running statistics after a batch of n >= 2 rows (``fastbp.kernels``' name)."""
    mean = dev(mean)
    elementwise(_batchnorm_update_running_kernel, mean.size)(dev(running_mean), dev(running_var), mean,
                                                             dev(var), float(momentum), n / (n - 1.0))


def batchnorm_act_backward(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Backward of ``batchnorm_act_forward``; a zero-size dx skips the input gradient."""
    dout = dev(dout)
    elementwise(_batchnorm_backward_kernel, dout.shape[1])(dev(dx), dev(dgamma), dev(dbeta), dout, dev(out),
                                                           dev(x), dev(mean), dev(invstd), dev(gamma),
                                                           dev(beta), int(activation), float(alpha))


def batchnorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma):
    """Backward of ``batchnorm_forward``; a zero-size dx skips the input gradient."""
    # With the identity, neither out nor beta is read: dout and gamma stand in.
    batchnorm_act_backward(dx, dgamma, dbeta, dout, dout, x, mean, invstd, gamma, gamma, IDENTITY, 0.0)


def layernorm_act_forward(out, mean, invstd, x, gamma, beta, eps, activation, alpha):
    """Layer normalization of each row, then an activation (``fastbp.kernels.layernorm_act_forward``)."""
    x = dev(x)
    elementwise(_layernorm_forward_kernel, x.shape[0])(dev(out), dev(mean), dev(invstd), x, dev(gamma),
                                                       dev(beta), float(eps), int(activation), float(alpha))


def layernorm_forward(out, mean, invstd, x, gamma, beta, eps):
    """Layer normalization of each row (``fastbp.kernels.layernorm_forward``), on the device."""
    layernorm_act_forward(out, mean, invstd, x, gamma, beta, eps, IDENTITY, 0.0)


def layernorm_act_backward(dx, dgamma, dbeta, dout, out, x, mean, invstd, gamma, beta, activation, alpha):
    """Backward of ``layernorm_act_forward``; a zero-size dx skips the input gradient."""
    dout, out, x, mean, invstd = dev(dout), dev(out), dev(x), dev(mean), dev(invstd)
    gamma, beta, activation, alpha = dev(gamma), dev(beta), int(activation), float(alpha)
    elementwise(_layernorm_param_grad_kernel, dout.shape[1])(dev(dgamma), dev(dbeta), dout, out, x, mean, invstd,
                                                             gamma, beta, activation, alpha)
    dx = dev(dx)
    if dx.size:
        elementwise(_layernorm_input_grad_kernel, dout.shape[0])(dx, dout, out, x, mean, invstd, gamma, beta,
                                                                 activation, alpha)


def layernorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma):
    """Backward of ``layernorm_forward``; a zero-size dx skips the input gradient."""
    layernorm_act_backward(dx, dgamma, dbeta, dout, dout, x, mean, invstd, gamma, gamma, IDENTITY, 0.0)
