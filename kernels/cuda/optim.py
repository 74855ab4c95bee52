"""Optimizer updates on the GPU: ``fastbp.kernels.cpu.optim``'s names and arguments, for device arrays.

Parameters, gradients and state are device arrays of one shape (usually the
flat vector of all of a model's parameters). Each element is independent: one
thread per element with a grid-stride loop, no shared writes. Each element's
update is the optimizer's ``*_step`` formula of ``kernels/_scalar.py``, the one
the CPU kernels call; the formulas are written out there and in the CPU
kernels' docstrings.

The hyperparameters, and the bias corrections and factors derived from them,
are computed once per call on the host in float64 and passed as the arrays'
dtype, so a float32 update runs in float32 arithmetic throughout (no float64
literal in the kernel promotes it).
"""
from ..registry import (H_ALPHA, H_BETA1, H_BETA2, H_CENTERED, H_DECOUPLED, H_EPS, H_EPS_HAT, H_LR, H_LR_DECAY,
                        H_MOMENTUM, H_NESTEROV, H_WEIGHT_DECAY, OPT_ADAGRAD, OPT_RMSPROP, OPT_SGD)
from .._scalar import adagrad_step, adam_eps_hat, adam_step, rmsprop_step, sgd_step
from ._launch import dev, elementwise, flat
from ._numba_cuda import cuda, kernel


@kernel
def _sgd_kernel(p, gr, v, lr, momentum, nesterov, weight_decay, use_momentum):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], vi = sgd_step(p[i], gr[i], v[i], lr, momentum, nesterov, weight_decay, use_momentum)
        if use_momentum:
            v[i] = vi


@kernel
def _adam_kernel(p, gr, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, c1, c2,
                 weight_decay, decay, decoupled):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], m[i], v[i] = adam_step(p[i], gr[i], m[i], v[i], lr, beta1, one_minus_beta1, beta2, one_minus_beta2,
                                     eps, c1, c2, weight_decay, decay, decoupled)


@kernel
def _rmsprop_kernel(p, gr, v, b, ga, lr, alpha, one_minus_alpha, eps, momentum, centered, use_momentum,
                    weight_decay):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], v[i], bi, gi = rmsprop_step(p[i], gr[i], v[i], b[i], ga[i], lr, alpha, one_minus_alpha, eps,
                                          momentum, centered, use_momentum, weight_decay)
        if use_momentum:
            b[i] = bi
        if centered:
            ga[i] = gi


@kernel
def _adagrad_kernel(p, gr, ss, clr, eps, weight_decay):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        p[i], ss[i] = adagrad_step(p[i], gr[i], ss[i], clr, eps, weight_decay)


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """``fastbp.kernels.sgd_update`` on device arrays; the velocity is untouched when momentum is 0."""
    p, gr, v = flat(dev(param)), flat(dev(grad)), flat(dev(velocity))
    t = p.dtype.type
    elementwise(_sgd_kernel, p.size)(p, gr, v, t(lr), t(momentum), bool(nesterov), t(weight_decay),
                                     float(momentum) != 0.0)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """``fastbp.kernels.adam_update`` (Adam, or AdamW when ``decoupled``) on device arrays, for
    step number ``step`` (1 for the first update)."""
    p, gr, mm, vv = flat(dev(param)), flat(dev(grad)), flat(dev(m)), flat(dev(v))
    t = p.dtype.type
    lr, beta1, beta2, weight_decay = float(lr), float(beta1), float(beta2), float(weight_decay)
    c1 = 1.0 / (1.0 - beta1**step)
    c2 = 1.0 / (1.0 - beta2**step)
    elementwise(_adam_kernel, p.size)(
        p, gr, mm, vv, t(lr), t(beta1), t(1.0 - beta1), t(beta2), t(1.0 - beta2), t(eps), t(c1), t(c2),
        t(weight_decay), t(1.0 - lr * weight_decay), bool(decoupled))


def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                   weight_decay):
    """``fastbp.kernels.rmsprop_update`` on device arrays; momentum_buffer is used only when
    momentum > 0, grad_avg only when ``centered``."""
    p, gr, v = flat(dev(param)), flat(dev(grad)), flat(dev(square_avg))
    b, ga = flat(dev(momentum_buffer)), flat(dev(grad_avg))
    t = p.dtype.type
    alpha, mu = float(alpha), t(momentum)
    elementwise(_rmsprop_kernel, p.size)(p, gr, v, b, ga, t(lr), t(alpha), t(1.0 - alpha), t(eps), mu,
                                         bool(centered), bool(mu > 0), t(weight_decay))


def adagrad_update(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    """``fastbp.kernels.adagrad_update`` on device arrays, for step number ``step`` (1 for the
    first update): the rate lr / (1 + (step - 1) lr_decay) is computed here, on the host."""
    p, gr, ss = flat(dev(param)), flat(dev(grad)), flat(dev(state_sum))
    t = p.dtype.type
    clr = float(lr) / (1.0 + (step - 1) * float(lr_decay))
    elementwise(_adagrad_kernel, p.size)(p, gr, ss, t(clr), t(eps), t(weight_decay))


def optimizer_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """One update of the flat parameter vector by the optimizer ``code``, as on the CPU.

    ``hyper`` is a host array in the registry's H_* layout; weight decay applies to
    the first n_weights entries (the weights), not to the biases after them.
    State as on the CPU: RMSprop's momentum buffer and gradient average are the
    two halves of state2.
    """
    lr, wd = hyper[H_LR], hyper[H_WEIGHT_DECAY]
    for part, decay in ((slice(0, n_weights), wd), (slice(n_weights, theta.size), 0.0)):
        if part.stop == part.start:
            continue
        if code == OPT_RMSPROP:
            size = theta.size
            rmsprop_update(theta[part], grad[part], state1[part], state2[:size][part], state2[size:][part], lr,
                           hyper[H_ALPHA], hyper[H_EPS], hyper[H_MOMENTUM], bool(hyper[H_CENTERED]), decay)
        elif code == OPT_ADAGRAD:
            adagrad_update(theta[part], grad[part], state1[part], lr, hyper[H_LR_DECAY], hyper[H_EPS], step, decay)
        elif code == OPT_SGD:
            sgd_update(theta[part], grad[part], state1[part], lr, hyper[H_MOMENTUM],
                       bool(hyper[H_NESTEROV]), decay)
        else:
            eps = adam_eps_hat(hyper[H_EPS], hyper[H_BETA2], step) if hyper[H_EPS_HAT] else hyper[H_EPS]
            adam_update(theta[part], grad[part], state1[part], state2[part], lr, hyper[H_BETA1],
                        hyper[H_BETA2], eps, step, decay, bool(hyper[H_DECOUPLED]))
