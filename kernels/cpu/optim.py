"""Optimizer updates, in place on a parameter array and its state.

Parameters, gradients and state are arrays of one shape (usually the flat
vector holding every parameter of a model, so one call updates a whole
network). Each element is independent, so the loops run in parallel with no
shared writes. The update of one element is the optimizer's ``*_step`` formula
of ``kernels/_scalar.py``, which the CUDA kernels call too.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.

Every update computes in the parameters' dtype: its hyperparameters (and the
constants made of them, such as Adam's bias corrections, formed in float64)
are cast to it before the loop, as the CUDA kernels and PyTorch do. A float32
update in float64 arithmetic would convert every element both ways and run in
half-width vectors: SGD with momentum on the small network's 2,410 parameters
takes 0.4 us, against 1.3 us that way (docs/performance-log.md, 2026-11-30, 73215a1).

Each update has a ``*_serial`` twin that runs the same loop on the calling thread
alone, for compiled loops that call BLAS between kernels (see ``_jit.py``); the
parallel kernel calls it below the size where the thread pool pays off.
"""
from numba import prange
from numba.extending import overload
from numba.np.numpy_support import as_dtype

from .._checks import ArgSpec
from .._jit import PARALLEL_MIN_ELEMENTS, jit
from .._scalar import adagrad_step, adam_eps_hat, adam_step, rmsprop_step, sgd_step
from ..registry import (H_ALPHA, H_BETA1, H_BETA2, H_CENTERED, H_DECOUPLED, H_EPS, H_EPS_HAT, H_LR, H_LR_DECAY,
                        H_MOMENTUM, H_NESTEROV, H_WEIGHT_DECAY, OPT_ADAGRAD, OPT_ADAM, OPT_RMSPROP, OPT_SGD)
from ._flat import flat


def _like(a, x):
    """The number x in the dtype of array a's elements."""
    return a.dtype.type(x)


@overload(_like, inline="always")
def _like_typed(a, x):
    cast = as_dtype(a.dtype).type
    return lambda a, x: cast(x)


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

    Parameters
    ----------
    param : ndarray
        Parameters, updated in place.
    grad : ndarray, the shape of ``param``
        Gradient of the loss with respect to ``param``.
    velocity : ndarray, the shape of ``param``
        Momentum buffer, updated in place; zeros before the first step.
    lr : float >= 0
        Learning rate.
    momentum : float >= 0
        Momentum factor.
    nesterov : bool
        Use Nesterov momentum.
    weight_decay : float >= 0
        L2 penalty (added to the gradient, or decoupled for AdamW).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
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
    p = flat(param)
    gr = flat(grad)
    v = flat(velocity)
    rate, mu, decay = _like(p, lr), _like(p, momentum), _like(p, weight_decay)
    use_momentum = mu != 0.0
    for i in prange(p.size):
        p[i], vi = sgd_step(p[i], gr[i], v[i], rate, mu, nesterov, decay, use_momentum)
        if use_momentum:
            v[i] = vi


ADAM_UPDATE_SPEC = ArgSpec(
    [("param", "*"), ("grad", "*"), ("m", "*"), ("v", "*"), ("lr", "nonneg"), ("beta1", "rate"),
     ("beta2", "rate"), ("eps", "positive"), ("step", "step"), ("weight_decay", "nonneg"),
     ("decoupled", "bool")],
    writes=("param", "m", "v"))


@jit(parallel=True)
def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """Adam / AdamW update for step number ``step`` (1 for the first update).

    L2 (decoupled=False): g = grad + weight_decay * param.
    AdamW (decoupled=True): param = param (1 - lr weight_decay) before the step.
    m = beta1 m + (1 - beta1) g;  v = beta2 v + (1 - beta2) g^2;
    param -= lr * (m / (1 - beta1^step)) / (sqrt(v / (1 - beta2^step)) + eps).
    Updates param, m and v in place.

    Parameters
    ----------
    param : ndarray
        Parameters, updated in place.
    grad : ndarray, the shape of ``param``
        Gradient of the loss with respect to ``param``.
    m : ndarray, the shape of ``param``
        First moment estimate, updated in place; zeros before the first step.
    v : ndarray, the shape of ``param``
        Second moment estimate, updated in place; zeros before the first step.
    lr : float >= 0
        Learning rate.
    beta1 : float in [0, 1)
        Decay rate of the first moment.
    beta2 : float in [0, 1)
        Decay rate of the second moment.
    eps : float > 0
        Added to the denominator for stability.
    step : int >= 1
        Number of this update, 1 for the first.
    weight_decay : float >= 0
        L2 penalty (added to the gradient, or decoupled for AdamW).
    decoupled : bool
        Decoupled weight decay (AdamW) instead of an L2 gradient term.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
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
    p = flat(param)
    gr = flat(grad)
    mm = flat(m)
    vv = flat(v)
    c1 = _like(p, 1.0 / (1.0 - beta1**step))
    c2 = _like(p, 1.0 / (1.0 - beta2**step))
    b1, rest1, b2, rest2 = _like(p, beta1), _like(p, 1.0 - beta1), _like(p, beta2), _like(p, 1.0 - beta2)
    rate, e, wd, decay = _like(p, lr), _like(p, eps), _like(p, weight_decay), _like(p, 1.0 - lr * weight_decay)
    for i in prange(p.size):
        p[i], mm[i], vv[i] = adam_step(p[i], gr[i], mm[i], vv[i], rate, b1, rest1, b2, rest2, e, c1, c2, wd, decay,
                                       decoupled)


RMSPROP_UPDATE_SPEC = ArgSpec(
    [("param", "*"), ("grad", "*"), ("square_avg", "*"), ("momentum_buffer", "*"), ("grad_avg", "*"),
     ("lr", "nonneg"), ("alpha", "rate"), ("eps", "positive"), ("momentum", "nonneg"),
     ("centered", "bool"), ("weight_decay", "nonneg")],
    writes=("param", "square_avg", "momentum_buffer", "grad_avg"))


@jit(parallel=True)
def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                   weight_decay):
    """RMSprop, PyTorch's formulation (``torch.optim.RMSprop``).

    g = grad + weight_decay * param; v = alpha v + (1 - alpha) g^2;
    centered: gbar = gbar + (1 - alpha) (g - gbar), a = sqrt(v - gbar^2) + eps;
    else a = sqrt(v) + eps. With momentum: b = momentum b + g / a, param -= lr b;
    without: param -= lr g / a. Updates param, square_avg and, when used,
    momentum_buffer (momentum > 0) and grad_avg (centered) in place.

    Parameters
    ----------
    param : ndarray
        Parameters, updated in place.
    grad : ndarray, the shape of ``param``
        Gradient of the loss with respect to ``param``.
    square_avg : ndarray, the shape of ``param``
        Running average of the squared gradient, updated in place.
    momentum_buffer : ndarray, the shape of ``param``
        Momentum buffer, updated in place (unused when momentum is 0).
    grad_avg : ndarray, the shape of ``param``
        Running average of the gradient, updated in place (used when centered).
    lr : float >= 0
        Learning rate.
    alpha : float in [0, 1)
        The activation's parameter (leaky slope, ELU alpha); ignored by the others.
    eps : float > 0
        Added to the denominator for stability.
    momentum : float >= 0
        Momentum factor.
    centered : bool
        Normalize by the estimated variance of the gradient instead of its second moment.
    weight_decay : float >= 0
        L2 penalty (added to the gradient, or decoupled for AdamW).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if param.size < PARALLEL_MIN_ELEMENTS:
        rmsprop_update_serial(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum,
                              centered, weight_decay)
    else:
        _rmsprop_loop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                      weight_decay)


@jit
def rmsprop_update_serial(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum,
                          centered, weight_decay):
    """``rmsprop_update`` on the calling thread alone; the same result bit for bit."""
    _rmsprop_loop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                  weight_decay)


@jit(inline="always")
def _rmsprop_loop(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                  weight_decay):
    p, gr, v = flat(param), flat(grad), flat(square_avg)
    b, ga = flat(momentum_buffer), flat(grad_avg)
    rate, a, rest, e = _like(p, lr), _like(p, alpha), _like(p, 1.0 - alpha), _like(p, eps)
    mu, decay = _like(p, momentum), _like(p, weight_decay)
    use_momentum = momentum > 0.0
    for i in prange(p.size):
        p[i], v[i], bi, gi = rmsprop_step(p[i], gr[i], v[i], b[i], ga[i], rate, a, rest, e, mu, centered,
                                          use_momentum, decay)
        if use_momentum:
            b[i] = bi
        if centered:
            ga[i] = gi


ADAGRAD_UPDATE_SPEC = ArgSpec(
    [("param", "*"), ("grad", "*"), ("state_sum", "*"), ("lr", "nonneg"), ("lr_decay", "nonneg"),
     ("eps", "positive"), ("step", "step"), ("weight_decay", "nonneg")],
    writes=("param", "state_sum"))


@jit(parallel=True)
def adagrad_update(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    """Adagrad for step number ``step`` (1 for the first update), PyTorch's formulation.

    g = grad + weight_decay * param; clr = lr / (1 + (step - 1) lr_decay);
    state_sum += g^2; param -= clr g / (sqrt(state_sum) + eps).
    Updates param and state_sum in place.

    Parameters
    ----------
    param : ndarray
        Parameters, updated in place.
    grad : ndarray, the shape of ``param``
        Gradient of the loss with respect to ``param``.
    state_sum : ndarray, the shape of ``param``
        Sum of squared gradients, updated in place.
    lr : float >= 0
        Learning rate.
    lr_decay : float >= 0
        Learning-rate decay: the step's rate is lr / (1 + (step - 1) lr_decay).
    eps : float > 0
        Added to the denominator for stability.
    step : int >= 1
        Number of this update, 1 for the first.
    weight_decay : float >= 0
        L2 penalty (added to the gradient, or decoupled for AdamW).

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if param.size < PARALLEL_MIN_ELEMENTS:
        adagrad_update_serial(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay)
    else:
        _adagrad_loop(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay)


@jit
def adagrad_update_serial(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    """``adagrad_update`` on the calling thread alone; the same result bit for bit."""
    _adagrad_loop(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay)


@jit(inline="always")
def _adagrad_loop(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    p, gr, ss = flat(param), flat(grad), flat(state_sum)
    clr = _like(p, lr / (1.0 + (step - 1) * lr_decay))
    e, decay = _like(p, eps), _like(p, weight_decay)
    for i in prange(p.size):
        p[i], ss[i] = adagrad_step(p[i], gr[i], ss[i], clr, e, decay)


# ----- one update per optimizer code (what the compiled training loop calls) ---------------
#
# The four share one signature, the loop's: (theta, grad, state1, state2, n_weights, code, hyper,
# step). ``hyper`` holds the hyperparameters in the registry's H_* layout; weight decay applies to
# the first n_weights entries (the weights), not to the biases after them. ``step`` is the 1-based
# count of updates (Adam's bias correction, Adagrad's lr decay). The loop's kernel table holds the
# model's own (``CODE_UPDATES``), so a cold start compiles one optimizer, not four (``code`` is
# then the table's; ``optimizer_code_update`` dispatches on it). Each calls the ``*_serial`` twin
# twice: with the loops inlined here instead, Adam ran 2x and RMSprop 40x slower on 536k
# parameters (float32, 226 -> 451 us and 199 -> 9,375 us, measured against the twins).
OPTIMIZER_CODE_UPDATE_SPEC = ArgSpec(
    [("theta", "float[:]"), ("grad", "float[:]"), ("state1", "float[:]"), ("state2", "float[:]"),
     ("n_weights", "index"), ("code", "optimizer"), ("hyper", "float64[:]"), ("step", "step")],
    writes=("theta", "state1", "state2"))


@jit
def sgd_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """SGD: velocity in state1 (state2 unused)."""
    lr, wd, momentum = hyper[H_LR], hyper[H_WEIGHT_DECAY], hyper[H_MOMENTUM]
    nesterov = hyper[H_NESTEROV] != 0.0
    w, b = slice(0, n_weights), slice(n_weights, theta.size)
    sgd_update_serial(theta[w], grad[w], state1[w], lr, momentum, nesterov, wd)
    sgd_update_serial(theta[b], grad[b], state1[b], lr, momentum, nesterov, 0.0)


@jit
def adam_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """Adam and AdamW: m in state1, v in state2."""
    lr, wd = hyper[H_LR], hyper[H_WEIGHT_DECAY]
    b1, b2, eps = hyper[H_BETA1], hyper[H_BETA2], hyper[H_EPS]
    if hyper[H_EPS_HAT] != 0.0:
        eps = adam_eps_hat(eps, b2, step)
    decoupled = hyper[H_DECOUPLED] != 0.0
    w, b = slice(0, n_weights), slice(n_weights, theta.size)
    adam_update_serial(theta[w], grad[w], state1[w], state2[w], lr, b1, b2, eps, step, wd, decoupled)
    adam_update_serial(theta[b], grad[b], state1[b], state2[b], lr, b1, b2, eps, step, 0.0, decoupled)


@jit
def rmsprop_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """RMSprop: square average in state1; momentum buffer and gradient average in the two halves of
    state2 (twice theta's size)."""
    lr, wd = hyper[H_LR], hyper[H_WEIGHT_DECAY]
    buf, gavg = state2[:theta.size], state2[theta.size:]
    alpha, eps, momentum = hyper[H_ALPHA], hyper[H_EPS], hyper[H_MOMENTUM]
    centered = hyper[H_CENTERED] != 0.0
    w, b = slice(0, n_weights), slice(n_weights, theta.size)
    rmsprop_update_serial(theta[w], grad[w], state1[w], buf[w], gavg[w], lr, alpha, eps, momentum, centered, wd)
    rmsprop_update_serial(theta[b], grad[b], state1[b], buf[b], gavg[b], lr, alpha, eps, momentum, centered, 0.0)


@jit
def adagrad_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """Adagrad: sum of squares in state1 (state2 unused)."""
    lr, wd, decay, eps = hyper[H_LR], hyper[H_WEIGHT_DECAY], hyper[H_LR_DECAY], hyper[H_EPS]
    w, b = slice(0, n_weights), slice(n_weights, theta.size)
    adagrad_update_serial(theta[w], grad[w], state1[w], lr, decay, eps, step, wd)
    adagrad_update_serial(theta[b], grad[b], state1[b], lr, decay, eps, step, 0.0)


CODE_UPDATES = {OPT_SGD: sgd_code_update, OPT_ADAM: adam_code_update, OPT_RMSPROP: rmsprop_code_update,
                OPT_ADAGRAD: adagrad_code_update}


@jit
def optimizer_code_update(theta, grad, state1, state2, n_weights, code, hyper, step):
    """One update of the flat parameter vector by the optimizer ``code`` of ``kernels.registry``
    (the ``*_code_update`` above say where each keeps its state)."""
    if code == OPT_RMSPROP:
        rmsprop_code_update(theta, grad, state1, state2, n_weights, code, hyper, step)
    elif code == OPT_ADAGRAD:
        adagrad_code_update(theta, grad, state1, state2, n_weights, code, hyper, step)
    elif code == OPT_SGD:
        sgd_code_update(theta, grad, state1, state2, n_weights, code, hyper, step)
    else:
        adam_code_update(theta, grad, state1, state2, n_weights, code, hyper, step)
