"""Optimizer updates on the GPU, in place on a parameter array and its state.

Same names, arguments and formulas as ``fastbp.kernels.cpu.optim``.
Parameters, gradients and state are device arrays of one shape (usually the
flat vector of all of a model's parameters). Each element is independent: one
thread per element with a grid-stride loop, no shared writes.

The hyperparameters, and the bias corrections and factors derived from them,
are computed once per call on the host in float64 and passed as the arrays'
dtype, so a float32 update runs in float32 arithmetic throughout (no float64
literal in the kernel promotes it).
"""
import math

from ..registry import (H_ALPHA, H_BETA1, H_BETA2, H_CENTERED, H_DECOUPLED, H_EPS, H_EPS_HAT, H_LR, H_LR_DECAY,
                        H_MOMENTUM, H_NESTEROV, H_WEIGHT_DECAY, OPT_ADAGRAD, OPT_RMSPROP, OPT_SGD)
from .._scalar import adam_eps_hat
from ._launch import dev, elementwise, flat
from ._numba_cuda import cuda, kernel


@kernel
def _sgd_kernel(p, gr, v, lr, momentum, nesterov, weight_decay, use_momentum):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        g = gr[i] + weight_decay * p[i]
        if use_momentum:
            vi = momentum * v[i] + g
            v[i] = vi
            g = g + momentum * vi if nesterov else vi
        p[i] -= lr * g


@kernel
def _adam_kernel(p, gr, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, c1, c2,
                 weight_decay, decay, decoupled):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        g = gr[i]
        if decoupled:
            p[i] *= decay
        else:
            g += weight_decay * p[i]
        mi = beta1 * m[i] + one_minus_beta1 * g
        vi = beta2 * v[i] + one_minus_beta2 * g * g
        m[i] = mi
        v[i] = vi
        p[i] -= lr * (mi * c1) / (math.sqrt(vi * c2) + eps)


@kernel
def _rmsprop_kernel(p, gr, v, b, ga, lr, alpha, one_minus_alpha, eps, momentum, centered, weight_decay):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        g = gr[i] + weight_decay * p[i]
        vi = alpha * v[i] + one_minus_alpha * g * g
        v[i] = vi
        if centered:
            gi = ga[i] + one_minus_alpha * (g - ga[i])
            ga[i] = gi
            avg = math.sqrt(vi - gi * gi) + eps
        else:
            avg = math.sqrt(vi) + eps
        if momentum > 0:
            bi = momentum * b[i] + g / avg
            b[i] = bi
            p[i] -= lr * bi
        else:
            p[i] -= lr * (g / avg)


@kernel
def _adagrad_kernel(p, gr, ss, clr, eps, weight_decay):
    for i in range(cuda.grid(1), p.size, cuda.gridsize(1)):
        g = gr[i] + weight_decay * p[i]
        si = ss[i] + g * g
        ss[i] = si
        p[i] -= clr * (g / (math.sqrt(si) + eps))


def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """SGD with momentum, Nesterov and L2 weight decay (PyTorch's formulation).

    g = grad + weight_decay * param; if momentum: v = momentum * v + g and
    g = g + momentum * v (nesterov) or g = v; then param -= lr * g.
    Updates param and velocity in place (velocity is untouched when momentum is 0).
    """
    p, gr, v = flat(dev(param)), flat(dev(grad)), flat(dev(velocity))
    t = p.dtype.type
    elementwise(_sgd_kernel, p.size)(p, gr, v, t(lr), t(momentum), bool(nesterov), t(weight_decay),
                                     float(momentum) != 0.0)


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """Adam / AdamW update for step number ``step`` (1 for the first update).

    L2 (decoupled=False): g = grad + weight_decay * param.
    AdamW (decoupled=True): param *= 1 - lr * weight_decay before the step.
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    param -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps).
    Updates param, m and v in place.
    """
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
    """RMSprop, PyTorch's formulation (``torch.optim.RMSprop``).

    g = grad + weight_decay * param; v = alpha v + (1 - alpha) g^2;
    centered: gbar = gbar + (1 - alpha) (g - gbar), a = sqrt(v - gbar^2) + eps;
    else a = sqrt(v) + eps. With momentum: b = momentum b + g / a, param -= lr b;
    without: param -= lr g / a. Updates param, square_avg and, when used,
    momentum_buffer (momentum > 0) and grad_avg (centered) in place.
    """
    p, gr, v = flat(dev(param)), flat(dev(grad)), flat(dev(square_avg))
    b, ga = flat(dev(momentum_buffer)), flat(dev(grad_avg))
    t = p.dtype.type
    alpha = float(alpha)
    elementwise(_rmsprop_kernel, p.size)(p, gr, v, b, ga, t(lr), t(alpha), t(1.0 - alpha), t(eps), t(momentum),
                                         bool(centered), t(weight_decay))


def adagrad_update(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    """Adagrad for step number ``step`` (1 for the first update), PyTorch's formulation.

    g = grad + weight_decay * param; clr = lr / (1 + (step - 1) lr_decay);
    state_sum += g^2; param -= clr g / (sqrt(state_sum) + eps).
    Updates param and state_sum in place.
    """
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
