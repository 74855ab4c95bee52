"""Optimizer updates, in place on a parameter array and its state.

Parameters, gradients and state are arrays of one shape (usually the flat
vector holding every parameter of a model, so one call updates a whole
network). Each element is independent, so the loops run in parallel with no
shared writes.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.

Each update has a ``*_serial`` twin that runs the same loop on the calling thread
alone, for compiled loops that call BLAS between kernels (see ``_jit.py``); the
parallel kernel calls it below the size where the thread pool pays off.
"""
import math

from numba import prange

from .._checks import ArgSpec
from .._jit import PARALLEL_MIN_ELEMENTS, jit
from ..registry import (H_BETA1, H_BETA2, H_DECOUPLED, H_EPS, H_LR, H_MOMENTUM, H_NESTEROV,
                        H_WEIGHT_DECAY, OPT_SGD)


SGD_UPDATE_SPEC = ArgSpec(
    [("param", "*"), ("grad", "*"), ("velocity", "*"), ("lr", "nonneg"), ("momentum", "nonneg"),
     ("nesterov", "bool"), ("weight_decay", "nonneg")],
    writes=("param", "velocity"))


@jit(parallel=True)
def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """SGD with momentum, Nesterov and L2 weight decay (PyTorch's formulation).

    g = grad + weight_decay * param; if momentum: v = momentum * v + g and
    g = g + momentum * v (nesterov) or g = v; then param -= lr * g.
    Updates param and velocity in place (velocity is untouched when momentum is 0).
    """
    if param.size < PARALLEL_MIN_ELEMENTS:
        sgd_update_serial(param, grad, velocity, lr, momentum, nesterov, weight_decay)
    else:
        _sgd_loop(param, grad, velocity, lr, momentum, nesterov, weight_decay)


@jit
def sgd_update_serial(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """``sgd_update`` on the calling thread alone; the same result bit for bit."""
    _sgd_loop(param, grad, velocity, lr, momentum, nesterov, weight_decay)


@jit(inline="always")
def _sgd_loop(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    p = param.ravel()
    gr = grad.ravel()
    v = velocity.ravel()
    for i in prange(p.size):
        _sgd_one(p, gr, v, i, lr, momentum, nesterov, weight_decay)


@jit(inline="always")
def _sgd_one(p, gr, v, i, lr, momentum, nesterov, weight_decay):
    g = gr[i] + weight_decay * p[i]
    if momentum != 0.0:
        vi = momentum * v[i] + g
        v[i] = vi
        g = g + momentum * vi if nesterov else vi
    p[i] -= lr * g


ADAM_UPDATE_SPEC = ArgSpec(
    [("param", "*"), ("grad", "*"), ("m", "*"), ("v", "*"), ("lr", "nonneg"), ("beta1", "rate"),
     ("beta2", "rate"), ("eps", "positive"), ("step", "step"), ("weight_decay", "nonneg"),
     ("decoupled", "bool")],
    writes=("param", "m", "v"))


@jit(parallel=True)
def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """Adam / AdamW update for step number ``step`` (1 for the first update).

    L2 (decoupled=False): g = grad + weight_decay * param.
    AdamW (decoupled=True): param *= 1 - lr * weight_decay before the step.
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    param -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps).
    Updates param, m and v in place.
    """
    if param.size < PARALLEL_MIN_ELEMENTS:
        adam_update_serial(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled)
    else:
        _adam_loop(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled)


@jit
def adam_update_serial(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """``adam_update`` on the calling thread alone; the same result bit for bit."""
    _adam_loop(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled)


@jit(inline="always")
def _adam_loop(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    p = param.ravel()
    gr = grad.ravel()
    mm = m.ravel()
    vv = v.ravel()
    c1 = 1.0 / (1.0 - beta1**step)
    c2 = 1.0 / (1.0 - beta2**step)
    for i in prange(p.size):
        _adam_one(p, gr, mm, vv, i, lr, beta1, beta2, eps, c1, c2, weight_decay, decoupled)


@jit(inline="always")
def _adam_one(p, gr, mm, vv, i, lr, beta1, beta2, eps, c1, c2, weight_decay, decoupled):
    g = gr[i]
    if decoupled:
        p[i] *= 1.0 - lr * weight_decay
    else:
        g += weight_decay * p[i]
    mi = beta1 * mm[i] + (1.0 - beta1) * g
    vi = beta2 * vv[i] + (1.0 - beta2) * g * g
    mm[i] = mi
    vv[i] = vi
    p[i] -= lr * (mi * c1) / (math.sqrt(vi * c2) + eps)


# ----- dispatch by optimizer code (what the compiled training loop calls) ------------------


@jit
def optimizer_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """One update of the flat parameter vector by the optimizer ``code`` of ``kernels.registry``.

    ``hyper`` holds its hyperparameters in the registry's H_* layout; weight decay
    applies to the first n_weights entries (the weights), not to the biases after them.
    ``step`` is the 1-based count of updates (Adam's bias correction).
    """
    lr = hyper[H_LR]
    wd = hyper[H_WEIGHT_DECAY]
    w, b = slice(0, n_weights), slice(n_weights, theta.size)
    if code == OPT_SGD:
        nesterov = hyper[H_NESTEROV] != 0.0
        momentum = hyper[H_MOMENTUM]
        sgd_update_serial(theta[w], grad[w], state1[w], lr, momentum, nesterov, wd)
        sgd_update_serial(theta[b], grad[b], state1[b], lr, momentum, nesterov, 0.0)
    else:
        b1, b2, eps = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS]
        decoupled = hyper[H_DECOUPLED] != 0.0
        adam_update_serial(theta[w], grad[w], state1[w], state2[w], lr, b1, b2, eps, step, wd, decoupled)
        adam_update_serial(theta[b], grad[b], state1[b], state2[b], lr, b1, b2, eps, step, 0.0, decoupled)
