"""Slow, obvious NumPy versions of every kernel in ``fastbp.kernels``.

Same names as the kernels, but each returns its results instead of writing
into output arguments, and computes in float64 whatever dtype it is given.
Written for a reader checking the math, not for speed: one formula per line,
no fusion, library functions (``np.logaddexp``, ``scipy.special``) wherever
they state the definition more directly than the kernels do.

Conventions (as the kernels): x (N, I), w (I, O), b (O,), out (N, O); losses
return the batch (weighted) mean and their backward the gradient of that mean;
``weight`` may be None or empty for unweighted.
"""
import numpy as np
from scipy import special

from fastbp.kernels import ACTIVATIONS

_CODE_NAMES = {code: name for name, code in ACTIVATIONS.items()}


def _f64(*arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# ----------------------------------------------------------------------------
# Activations: forward f(x), backward dout * f'(x) given what the kernel gets.
# ----------------------------------------------------------------------------

def identity_forward(x):
    return np.array(x, dtype=np.float64)


def identity_backward(dout):
    return np.array(dout, dtype=np.float64)


def relu_forward(x):
    (x,) = _f64(x)
    return np.maximum(x, 0.0)


def relu_backward(dout, out):
    dout, out = _f64(dout, out)
    return dout * (out > 0)


def leaky_relu_forward(x, slope):
    (x,) = _f64(x)
    return np.where(x > 0, x, slope * x)


def leaky_relu_backward(dout, out, slope):
    dout, out = _f64(dout, out)
    return dout * np.where(out > 0, 1.0, slope)


def elu_forward(x, alpha):
    (x,) = _f64(x)
    return np.where(x > 0, x, alpha * np.expm1(np.minimum(x, 0.0)))


def elu_backward(dout, out, alpha):
    # For x <= 0: d/dx alpha (e^x - 1) = alpha e^x = out + alpha.
    dout, out = _f64(dout, out)
    return dout * np.where(out > 0, 1.0, out + alpha)


def sigmoid_forward(x):
    (x,) = _f64(x)
    return special.expit(x)


def sigmoid_backward(dout, out):
    dout, out = _f64(dout, out)
    return dout * out * (1.0 - out)


def tanh_forward(x):
    (x,) = _f64(x)
    return np.tanh(x)


def tanh_backward(dout, out):
    dout, out = _f64(dout, out)
    return dout * (1.0 - out**2)


def softplus_forward(x):
    (x,) = _f64(x)
    return np.logaddexp(0.0, x)


def softplus_backward(dout, out):
    # softplus'(x) = sigmoid(x), and e^-out = 1 / (1 + e^x) = 1 - sigmoid(x).
    dout, out = _f64(dout, out)
    return dout * (1.0 - np.exp(-out))


def gelu_forward(x):
    (x,) = _f64(x)
    return x * special.ndtr(x)


def gelu_backward(dout, x):
    dout, x = _f64(dout, x)
    pdf = np.exp(-0.5 * x**2) / np.sqrt(2.0 * np.pi)
    return dout * (special.ndtr(x) + x * pdf)


def silu_forward(x):
    (x,) = _f64(x)
    return x * special.expit(x)


def silu_backward(dout, x):
    # d/dx [x sigmoid(x)] = sigmoid(x) + x sigmoid(x) (1 - sigmoid(x)).
    dout, x = _f64(dout, x)
    s = special.expit(x)
    return dout * (s + x * s * (1.0 - s))


# PyTorch's SELU constants (torch.nn.SELU).
SELU_ALPHA = 1.6732632423543772848170429916717
SELU_SCALE = 1.0507009873554804934193349852946


def selu_forward(x):
    (x,) = _f64(x)
    return SELU_SCALE * np.where(x > 0, x, SELU_ALPHA * np.expm1(np.minimum(x, 0.0)))


def selu_backward(dout, out):
    # For x <= 0, out = scale alpha (e^x - 1), so the derivative scale alpha e^x = out + scale alpha.
    dout, out = _f64(dout, out)
    return dout * np.where(out > 0, SELU_SCALE, out + SELU_SCALE * SELU_ALPHA)


def softmax_forward(x):
    (x,) = _f64(x)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_backward(dout, out):
    # Explicit Jacobian per row: J[j, k] = y_j ([j == k] - y_k); dx = J^T dout.
    dout, out = _f64(dout, out)
    dx = np.empty_like(dout)
    for n in range(out.shape[0]):
        y = out[n]
        jac = np.diag(y) - np.outer(y, y)
        dx[n] = jac.T @ dout[n]
    return dx


def log_softmax_forward(x):
    (x,) = _f64(x)
    return x - special.logsumexp(x, axis=1, keepdims=True)


def log_softmax_backward(dout, out):
    # J[j, k] = [j == k] - softmax_k, with softmax = exp(out).
    dout, out = _f64(dout, out)
    dx = np.empty_like(dout)
    for n in range(out.shape[0]):
        p = np.exp(out[n])
        jac = np.eye(p.size) - p[None, :]
        dx[n] = jac.T @ dout[n]
    return dx


def activate(activation, z, alpha=0.0):
    """f(z) for an activation code of ``fastbp.kernels.ACTIVATIONS``."""
    name = _CODE_NAMES[activation]
    if name in ("leaky_relu", "elu"):
        return globals()[f"{name}_forward"](z, alpha)
    return globals()[f"{name}_forward"](z)


def activate_backward(activation, dout, out, alpha=0.0):
    """dout * f'(z) from the output, for codes other than GELU and SiLU."""
    name = _CODE_NAMES[activation]
    if name in ("gelu", "silu"):
        raise ValueError(f"{name}'s derivative needs its input")
    if name == "identity":
        return identity_backward(dout)
    if name in ("leaky_relu", "elu"):
        return globals()[f"{name}_backward"](dout, out, alpha)
    return globals()[f"{name}_backward"](dout, out)


# ----------------------------------------------------------------------------
# Dense layers
# ----------------------------------------------------------------------------

def dense_forward(x, w, b):
    x, w, b = _f64(x, w, b)
    return x @ w + b


def dense_backward(dout, x, w):
    """(dx, dw, db) of out = x @ w + b: plain sums over the batch."""
    dout, x, w = _f64(dout, x, w)
    return dout @ w.T, x.T @ dout, dout.sum(axis=0)


def dense_act_forward(x, w, b, activation, alpha):
    return activate(activation, dense_forward(x, w, b), alpha)


def dense_act_backward(dout, out, x, w, activation, alpha):
    """(dx, dw, db, dz) of out = f(x @ w + b), in the kernel's output order."""
    dz = activate_backward(activation, dout, out, alpha)
    dx, dw, db = dense_backward(dz, x, w)
    return dx, dw, db, dz


# ----------------------------------------------------------------------------
# Losses: the (weighted) batch mean and its gradient
# ----------------------------------------------------------------------------

def _sample_weights(weight, n_rows):
    if weight is None or np.size(weight) == 0:
        return np.ones(n_rows)
    return np.asarray(weight, dtype=np.float64)


def mse_forward(pred, target, weight=None):
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    per_sample = ((pred - target) ** 2).mean(axis=1)
    return float(np.sum(s * per_sample) / np.sum(s))


def mse_backward(pred, target, weight=None):
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    n_out = pred.shape[1]
    return 2.0 * (pred - target) * s[:, None] / (n_out * np.sum(s))


def softmax_cross_entropy_forward(logits, labels, weight=None):
    """(loss, probs): mean of -log softmax(logits)[label]."""
    (logits,) = _f64(logits)
    s = _sample_weights(weight, logits.shape[0])
    rows = np.arange(logits.shape[0])
    nll = -log_softmax_forward(logits)[rows, labels]
    return float(np.sum(s * nll) / np.sum(s)), softmax_forward(logits)


def softmax_cross_entropy_backward(probs, labels, weight=None):
    (probs,) = _f64(probs)
    s = _sample_weights(weight, probs.shape[0])
    onehot = np.eye(probs.shape[1])[labels]
    return (probs - onehot) * s[:, None] / np.sum(s)


def binary_cross_entropy_forward(logits, target, weight=None):
    """Mean of -[t log sigmoid(z) + (1 - t) log(1 - sigmoid(z))], from logits."""
    logits, target = _f64(logits, target)
    s = _sample_weights(weight, logits.shape[0])
    # -log sigmoid(z) = log(1 + e^-z), -log(1 - sigmoid(z)) = log(1 + e^z).
    per_element = target * np.logaddexp(0.0, -logits) + (1.0 - target) * np.logaddexp(0.0, logits)
    return float(np.sum(s * per_element.mean(axis=1)) / np.sum(s))


def binary_cross_entropy_backward(logits, target, weight=None):
    logits, target = _f64(logits, target)
    s = _sample_weights(weight, logits.shape[0])
    n_out = logits.shape[1]
    return (special.expit(logits) - target) * s[:, None] / (n_out * np.sum(s))


def poisson_forward(eta, target, weight=None):
    """Mean of exp(eta) - y eta (the Poisson negative log-likelihood without log y!), eta = log mean."""
    eta, target = _f64(eta, target)
    s = _sample_weights(weight, eta.shape[0])
    per_element = np.exp(eta) - target * eta
    return float(np.sum(s * per_element.mean(axis=1)) / np.sum(s))


def poisson_backward(eta, target, weight=None):
    eta, target = _f64(eta, target)
    s = _sample_weights(weight, eta.shape[0])
    return (np.exp(eta) - target) * s[:, None] / (eta.shape[1] * np.sum(s))


def huber_forward(pred, target, weight=None, delta=1.0):
    """Mean of the Huber loss: d^2 / 2 for |d| <= delta, delta (|d| - delta / 2) beyond, d = pred - target."""
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    d = np.abs(pred - target)
    per_element = np.where(d <= delta, 0.5 * d**2, delta * (d - 0.5 * delta))
    return float(np.sum(s * per_element.mean(axis=1)) / np.sum(s))


def huber_backward(pred, target, weight=None, delta=1.0):
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    return np.clip(pred - target, -delta, delta) * s[:, None] / (pred.shape[1] * np.sum(s))


def mae_forward(pred, target, weight=None):
    """Mean of |pred - target|."""
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    return float(np.sum(s * np.abs(pred - target).mean(axis=1)) / np.sum(s))


def mae_backward(pred, target, weight=None):
    pred, target = _f64(pred, target)
    s = _sample_weights(weight, pred.shape[0])
    return np.sign(pred - target) * s[:, None] / (pred.shape[1] * np.sum(s))


# ----------------------------------------------------------------------------
# Dropout
# ----------------------------------------------------------------------------

def hash_uniform(seed, size):
    """splitmix64 of the counters 0..size-1 offset by ``seed``, as floats in [0, 1).

    Vectorized over uint64 arrays, whose arithmetic wraps modulo 2**64 as the
    kernel's does.
    """
    i = np.arange(size, dtype=np.uint64)
    with np.errstate(over="ignore"):
        z = np.uint64(seed) + i * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) / 2.0**53


def dropout_forward(x, rate, seed):
    """(out, mask): keep element i when hash_uniform(seed, i) >= rate, scaled by 1/(1-rate)."""
    (x,) = _f64(x)
    u = hash_uniform(seed, x.size).reshape(x.shape)
    mask = np.where(u >= rate, 1.0 / (1.0 - rate), 0.0)
    return x * mask, mask


def dropout_backward(dout, mask):
    dout, mask = _f64(dout, mask)
    return dout * mask


# ----------------------------------------------------------------------------
# Optimizers: return the new state instead of updating in place
# ----------------------------------------------------------------------------

def sgd_update(param, grad, velocity, lr, momentum, nesterov, weight_decay):
    """(param, velocity) after one step of PyTorch-style SGD."""
    param, grad, velocity = _f64(param, grad, velocity)
    g = grad + weight_decay * param
    if momentum != 0.0:
        velocity = momentum * velocity + g
        g = g + momentum * velocity if nesterov else velocity
    return param - lr * g, velocity


def adam_update(param, grad, m, v, lr, beta1, beta2, eps, step, weight_decay, decoupled):
    """(param, m, v) after Adam step number ``step`` (L2) or AdamW (decoupled)."""
    param, grad, m, v = _f64(param, grad, m, v)
    if decoupled:
        param = param * (1.0 - lr * weight_decay)
        g = grad
    else:
        g = grad + weight_decay * param
    m = beta1 * m + (1.0 - beta1) * g
    v = beta2 * v + (1.0 - beta2) * g**2
    m_hat = m / (1.0 - beta1**step)
    v_hat = v / (1.0 - beta2**step)
    return param - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


def rmsprop_update(param, grad, square_avg, momentum_buffer, grad_avg, lr, alpha, eps, momentum, centered,
                   weight_decay):
    """(param, square_avg, momentum_buffer, grad_avg) after one step of torch.optim.RMSprop."""
    param, grad, square_avg, momentum_buffer, grad_avg = _f64(param, grad, square_avg, momentum_buffer, grad_avg)
    g = grad + weight_decay * param
    square_avg = alpha * square_avg + (1.0 - alpha) * g**2
    if centered:
        grad_avg = alpha * grad_avg + (1.0 - alpha) * g
        avg = np.sqrt(square_avg - grad_avg**2) + eps
    else:
        avg = np.sqrt(square_avg) + eps
    if momentum > 0:
        momentum_buffer = momentum * momentum_buffer + g / avg
        param = param - lr * momentum_buffer
    else:
        param = param - lr * g / avg
    return param, square_avg, momentum_buffer, grad_avg


def adagrad_update(param, grad, state_sum, lr, lr_decay, eps, step, weight_decay):
    """(param, state_sum) after step number ``step`` of torch.optim.Adagrad."""
    param, grad, state_sum = _f64(param, grad, state_sum)
    g = grad + weight_decay * param
    state_sum = state_sum + g**2
    return param - lr / (1.0 + (step - 1) * lr_decay) * g / (np.sqrt(state_sum) + eps), state_sum


# ----------------------------------------------------------------------------
# Normalization: forward from the definition, backward from the derivation's final formula.
# ----------------------------------------------------------------------------

def _affine(xhat, gamma, beta):
    if gamma is None or np.size(gamma) == 0:
        return xhat
    gamma, beta = _f64(gamma, beta)
    return gamma * xhat + beta


def batchnorm_forward(x, gamma, beta, eps):
    """(out, mean, biased var, invstd) of batch normalization with the batch's statistics."""
    (x,) = _f64(x)
    mean = x.mean(axis=0)
    var = x.var(axis=0)
    invstd = 1.0 / np.sqrt(var + eps)
    return _affine((x - mean) * invstd, gamma, beta), mean, var, invstd


def batchnorm_inference(x, running_mean, running_var, gamma, beta, eps):
    x, running_mean, running_var = _f64(x, running_mean, running_var)
    return _affine((x - running_mean) / np.sqrt(running_var + eps), gamma, beta)


def batchnorm_update_running(running_mean, running_var, x, momentum):
    """The running statistics after a training batch x: momentum mean, unbiased variance."""
    running_mean, running_var, x = _f64(running_mean, running_var, x)
    return ((1 - momentum) * running_mean + momentum * x.mean(axis=0),
            (1 - momentum) * running_var + momentum * x.var(axis=0, ddof=1))


def batchnorm_backward(dout, x, gamma, eps):
    """(dx, dgamma, dbeta): dx = gamma invstd (dout - mean_n dout - xhat mean_n(dout xhat))."""
    dout, x = _f64(dout, x)
    mean, var = x.mean(axis=0), x.var(axis=0)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    g = np.ones(x.shape[1]) if gamma is None or np.size(gamma) == 0 else _f64(gamma)[0]
    dx = g * invstd * (dout - dout.mean(axis=0) - xhat * (dout * xhat).mean(axis=0))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)


def layernorm_forward(x, gamma, beta, eps):
    """(out, mean, invstd) of layer normalization over each row."""
    (x,) = _f64(x)
    mean = x.mean(axis=1)
    invstd = 1.0 / np.sqrt(x.var(axis=1) + eps)
    return _affine((x - mean[:, None]) * invstd[:, None], gamma, beta), mean, invstd


def layernorm_backward(dout, x, gamma, eps):
    """(dx, dgamma, dbeta): per row dx = invstd (g - mean_j g - xhat mean_j(g xhat)), g = dout gamma."""
    dout, x = _f64(dout, x)
    mean = x.mean(axis=1, keepdims=True)
    invstd = 1.0 / np.sqrt(x.var(axis=1, keepdims=True) + eps)
    xhat = (x - mean) * invstd
    g = dout if gamma is None or np.size(gamma) == 0 else dout * _f64(gamma)[0]
    dx = invstd * (g - g.mean(axis=1, keepdims=True) - xhat * (g * xhat).mean(axis=1, keepdims=True))
    return dx, (dout * xhat).sum(axis=0), dout.sum(axis=0)
