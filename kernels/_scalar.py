"""Scalar math written once and compiled for both CPU and GPU.

Every function here is plain Python over scalars. ``@scalar`` registers it for
numba's CPU target (inlined into the kernels that call it); the CUDA backend
registers the same functions for its own target, so the CPU and GPU kernels
share one source of truth for every formula. They are also callable from plain
Python, which the tests use.

Activation derivatives are written in terms of the forward *output* y = f(z)
wherever the output determines the derivative, so backward passes need no
second copy of the pre-activation (as in scikit-learn's
``neural_network/_base.py``):

    relu        y = max(z, 0)                  dy/dz = [y > 0]
    leaky_relu  y = z if z > 0 else a z        dy/dz = 1 if y > 0 else a     (a >= 0)
    elu         y = z if z > 0 else a(e^z - 1) dy/dz = 1 if y > 0 else y + a (a > 0)
    sigmoid     y = 1 / (1 + e^-z)             dy/dz = y (1 - y)
    tanh        y = tanh z                     dy/dz = 1 - y^2
    softplus    y = log(1 + e^z)               dy/dz = sigmoid(z) = 1 - e^-y
    gelu        y = z Phi(z)                   dy/dz = Phi(z) + z phi(z)     (needs z)
    silu        y = z s(z), s = sigmoid        dy/dz = s (1 + z (1 - s))     (needs z)
    selu        y = c z if z > 0 else c a(e^z - 1)  dy/dz = c if y > 0 else y + c a
                (PyTorch's constants: a = 1.6732632423543772, c = 1.0507009873554805)

GELU and SiLU are not invertible (they dip below zero), so their backward takes
the input (``activate_input_grad``).

The elementwise losses (every loss but softmax cross-entropy) are a term
l(z, t) per output and its derivative dl/dz, ``loss_term`` and ``loss_grad``,
dispatched on the loss code; ``param`` is Huber's delta (unused by the others):

    mse      (z - t)^2                                 2 (z - t)
    bce      log(1 + e^z) - t z  (z a logit)           sigmoid(z) - t
    poisson  e^z - t z           (z = log of the mean) e^z - t
    huber    d^2 / 2 if |d| <= delta                   d if |d| <= delta
             else delta (|d| - delta / 2), d = z - t   else delta sign(d)
    mae      |z - t|                                   sign(z - t), 0 at z = t
                                                       (a subgradient, as PyTorch's)

An optimizer's update of one parameter is a ``*_step`` function: the parameter,
its gradient and its state in, the new parameter and state out (a tuple). The
kernels on both targets loop over the elements, cast the hyperparameters to the
parameters' dtype once per call and pass them in, so a float32 update runs in
float32 arithmetic (the formulas hold no float literal that would promote it).
Flags (``use_momentum``, ``centered``) also tell the caller which state to
write back: state an update does not use is returned as it came and not stored.

Two formulas reduce a row of a 2-D array and take the array and the row
index: LayerNorm's statistics (``row_mean_invstd``) and the row maximum that
softmax subtracts (``row_max``). Both sum or scan features 0..O-1 in order, so
the result is the same on both targets.
"""
import math

import numpy as np

from ._jit import scalar

# Activation codes and their properties live in the registry; the formulas here
# dispatch on them.
from .registry import (ELEMENTWISE_CODES as ACTIVATION_CODES, ELU, GELU, IDENTITY,  # noqa: E402,F401
                       LEAKY_RELU, LOSS_BCE, LOSS_HUBER, LOSS_MAE, LOSS_POISSON, OUTPUT_DERIVABLE, RELU,
                       SELU, SIGMOID, SILU, SOFTPLUS, TANH)

_INV_SQRT2 = 0.7071067811865476
_INV_SQRT2PI = 0.3989422804014327
# SELU's constants as PyTorch writes them (Klambauer et al. 2017); float64 keeps 17 digits.
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946
_SELU_SCALE_ALPHA = SELU_SCALE * SELU_ALPHA


@scalar
def relu(z):
    return z if z > 0.0 else 0.0 * z


@scalar
def relu_grad(y):
    return 1.0 if y > 0.0 else 0.0


@scalar
def leaky_relu(z, slope):
    return z if z > 0.0 else slope * z


@scalar
def leaky_relu_grad(y, slope):
    return 1.0 if y > 0.0 else slope


@scalar
def elu(z, alpha):
    return z if z > 0.0 else alpha * math.expm1(z)


@scalar
def elu_grad(y, alpha):
    return 1.0 if y > 0.0 else y + alpha


@scalar
def sigmoid(z):
    # Two branches so that exp never overflows: exp(-|z|) <= 1.
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@scalar
def sigmoid_grad(y):
    return y * (1.0 - y)


@scalar
def tanh(z):
    return math.tanh(z)


@scalar
def tanh_grad(y):
    return 1.0 - y * y


@scalar
def softplus(z):
    # log(1 + e^z) = max(z, 0) + log1p(e^-|z|): no overflow for large |z|.
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@scalar
def softplus_grad(y):
    # sigmoid(z) = 1 - e^-softplus(z); expm1 keeps precision when y is tiny.
    return -math.expm1(-y)


@scalar
def gelu(z):
    return 0.5 * z * (1.0 + math.erf(z * _INV_SQRT2))


@scalar
def gelu_grad(z):
    # d/dz [z Phi(z)] = Phi(z) + z phi(z), from the input z.
    cdf = 0.5 * (1.0 + math.erf(z * _INV_SQRT2))
    return cdf + z * _INV_SQRT2PI * math.exp(-0.5 * z * z)


@scalar
def silu(z):
    return z * sigmoid(z)


@scalar
def silu_grad(z):
    # d/dz [z s(z)] = s + z s (1 - s), from the input z.
    s = sigmoid(z)
    return s * (1.0 + z * (1.0 - s))


@scalar
def selu(z):
    return SELU_SCALE * z if z > 0.0 else _SELU_SCALE_ALPHA * math.expm1(z)


@scalar
def selu_grad(y):
    # For z <= 0, y = c a (e^z - 1), so dy/dz = c a e^z = y + c a.
    return SELU_SCALE if y > 0.0 else y + _SELU_SCALE_ALPHA


@scalar(dispatch=True)
def activate(code, z, alpha):
    """f(z) for the activation ``code``; ``alpha`` is the leaky slope or ELU alpha."""
    if code == RELU:
        return relu(z)
    if code == LEAKY_RELU:
        return leaky_relu(z, alpha)
    if code == ELU:
        return elu(z, alpha)
    if code == SIGMOID:
        return sigmoid(z)
    if code == TANH:
        return tanh(z)
    if code == SOFTPLUS:
        return softplus(z)
    if code == GELU:
        return gelu(z)
    if code == SILU:
        return silu(z)
    if code == SELU:
        return selu(z)
    return z


@scalar(dispatch=True)
def activate_grad(code, y, alpha):
    """f'(z) from the output y = f(z); valid for codes in OUTPUT_DERIVABLE."""
    if code == RELU:
        return relu_grad(y)
    if code == LEAKY_RELU:
        return leaky_relu_grad(y, alpha)
    if code == ELU:
        return elu_grad(y, alpha)
    if code == SIGMOID:
        return sigmoid_grad(y)
    if code == TANH:
        return tanh_grad(y)
    if code == SOFTPLUS:
        return softplus_grad(y)
    if code == SELU:
        return selu_grad(y)
    return 1.0


@scalar(dispatch=True)
def activate_input_grad(code, z):
    """f'(z) from the input z, for the codes in INPUT_DERIVED (GELU, SiLU)."""
    if code == SILU:
        return silu_grad(z)
    return gelu_grad(z)


@scalar(dispatch=True)
def activate_dz(code, dout, y, z, alpha):
    """dout * f'(z) for any elementwise code: from the output y, or from the input z (GELU, SiLU).

    For the kernels that fuse an activation after a normalization, where both
    are at hand (the pre-activation z is recomputed from the saved statistics).
    """
    if code == GELU or code == SILU:
        return dout * activate_input_grad(code, z)
    return dout * activate_grad(code, y, alpha)


@scalar
def log1p_exp(z):
    """log(1 + e^z), stable for any z (the softplus, used by the BCE loss)."""
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))


@scalar(dispatch=True)
def loss_term(code, z, t, param):
    """The elementwise loss l(z, t) of the loss ``code`` (any but softmax cross-entropy)."""
    if code == LOSS_BCE:
        return log1p_exp(z) - t * z
    if code == LOSS_POISSON:
        return math.exp(z) - t * z
    d = z - t
    if code == LOSS_HUBER:
        a = abs(d)
        return 0.5 * d * d if a <= param else param * (a - 0.5 * param)
    if code == LOSS_MAE:
        return abs(d)
    return d * d


@scalar(dispatch=True)
def loss_grad(code, z, t, param):
    """dl/dz of ``loss_term``; MAE's is sign(z - t), 0 where z == t."""
    if code == LOSS_BCE:
        return sigmoid(z) - t
    if code == LOSS_POISSON:
        return math.exp(z) - t
    d = z - t
    if code == LOSS_HUBER:
        if d > param:
            return param
        return -param if d < -param else d
    if code == LOSS_MAE:
        if d > 0.0:
            return 1.0
        # 0 d: 0 at d == 0, and NaN stays NaN (a plain 0 would hide a divergence).
        return -1.0 if d < 0.0 else 0.0 * d
    return 2.0 * d


@scalar
def hash_uniform(seed, i):
    """A uniform draw in [0, 1) from (seed, i): splitmix64 of a counter.

    Counter-based, so every element's draw is independent of thread order and
    the CPU and GPU produce the same dropout mask for the same seed.
    """
    z = np.uint64(seed) + np.uint64(i) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return np.float64(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


@scalar
def adam_eps_hat(eps, beta2, step):
    """Adam's eps that adds ``eps`` to the uncorrected sqrt(v) at update ``step`` (1-based).

    Kingma and Ba's efficient form (Keras, TensorFlow, scikit-learn) steps by
    lr sqrt(1 - beta2^t) / (1 - beta1^t) * m / (sqrt(v) + eps), which is
    ``adam_update``'s step, eps added to the corrected sqrt(v_hat), with
    eps / sqrt(1 - beta2^t) in eps's place.
    """
    return eps / math.sqrt(1.0 - beta2**step)


# ----- optimizer steps: one parameter each ----------------------------------------------------


@scalar
def sgd_step(p, g, v, lr, momentum, nesterov, weight_decay, use_momentum):
    """SGD (PyTorch's): (p, v) after one step; v comes back as it came without momentum.

    g += weight_decay p; with momentum, v = momentum v + g and g = g + momentum v
    (Nesterov) or g = v; then p -= lr g.
    """
    g = g + weight_decay * p
    if use_momentum:
        v = momentum * v + g
        g = g + momentum * v if nesterov else v
    return p - lr * g, v


@scalar
def adam_step(p, g, m, v, lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, c1, c2, weight_decay, decay,
              decoupled):
    """Adam / AdamW: (p, m, v) after one step.

    L2: g += weight_decay p; decoupled (AdamW): p *= decay = 1 - lr weight_decay first.
    m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2,
    p -= lr (m c1) / (sqrt(v c2) + eps), with the bias corrections
    c1 = 1 / (1 - beta1^t) and c2 = 1 / (1 - beta2^t) of step t.
    """
    if decoupled:
        p = p * decay
    else:
        g = g + weight_decay * p
    m = beta1 * m + one_minus_beta1 * g
    v = beta2 * v + one_minus_beta2 * g * g
    return p - lr * (m * c1) / (math.sqrt(v * c2) + eps), m, v


@scalar
def rmsprop_step(p, g, v, b, gbar, lr, alpha, one_minus_alpha, eps, momentum, centered, use_momentum,
                 weight_decay):
    """RMSprop (PyTorch's): (p, v, b, gbar) after one step; b and gbar come back as they came
    when unused (no momentum, not centered).

    g += weight_decay p; v = alpha v + (1 - alpha) g^2; centered: gbar += (1 - alpha) (g - gbar)
    and a = sqrt(v - gbar^2) + eps, else a = sqrt(v) + eps; with momentum b = momentum b + g / a
    and p -= lr b, else p -= lr g / a.
    """
    g = g + weight_decay * p
    v = alpha * v + one_minus_alpha * g * g
    if centered:
        # torch's lerp(gbar, g, 1 - alpha) with weight 1 - alpha < 0.5: gbar + w (g - gbar).
        gbar = gbar + one_minus_alpha * (g - gbar)
        avg = math.sqrt(v - gbar * gbar) + eps
    else:
        avg = math.sqrt(v) + eps
    if use_momentum:
        b = momentum * b + g / avg
        return p - lr * b, v, b, gbar
    return p - lr * (g / avg), v, b, gbar


@scalar
def adagrad_step(p, g, s, clr, eps, weight_decay):
    """Adagrad (PyTorch's): (p, s) after one step at the step's rate clr = lr / (1 + (t - 1) lr_decay).

    g += weight_decay p; s += g^2; p -= clr g / (sqrt(s) + eps).
    """
    g = g + weight_decay * p
    s = s + g * g
    return p - clr * (g / (math.sqrt(s) + eps)), s


# ----- row formulas: a row of a 2-D array --------------------------------------------------


@scalar
def row_mean_invstd(x, n, eps):
    """LayerNorm's statistics of row n of x (N, O): its mean and 1 / sqrt(var + eps), var the
    biased variance (divided by O). Two passes (the mean, then the squared deviations), each
    summing features 0..O-1 in order in float64, whatever x's dtype."""
    n_out = x.shape[1]
    s = 0.0
    for j in range(n_out):
        s += x[n, j]
    m = s / n_out
    v = 0.0
    for j in range(n_out):
        d = x[n, j] - m
        v += d * d
    return m, 1.0 / math.sqrt(v / n_out + eps)


@scalar
def row_max(a, n):
    """The largest entry of row n of a (N, O), which softmax subtracts before exponentiating.

    A scan of features 0..O-1 by ``>``: a NaN is kept only as the first entry (it loses every
    comparison elsewhere), and softmax's sum carries it to the loss either way."""
    m = a[n, 0]
    for j in range(1, a.shape[1]):
        if a[n, j] > m:
            m = a[n, j]
    return m


@scalar
def softmax_nll(m, z_label, s):
    """A row's softmax cross-entropy -log softmax(z)_y = (max - z_y) + log(sum_j e^(z_j - max)),
    from its maximum m, its label's logit and s the sum: the shift first, exact where the label
    holds the maximum, so that a row fitted well loses no digits of log(s) to m."""
    return (m - z_label) + math.log(s)
