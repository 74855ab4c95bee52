"""Gradient checks users can call: analytic gradients against float64 central differences.

``gradcheck(model, X, y)`` checks a whole compiled model: the gradient of one
training step of the CPU backend (``Sequential.objective``, the very forward,
loss and backward code that ``fit`` runs) against central differences
(L(theta + eps e_k) - L(theta - eps e_k)) / (2 eps) of the same full-batch loss,
entry by entry, for every weight and bias block. ``gradcheck_pair(forward,
backward, inputs)`` checks a forward/backward pair of your own, written with
``fastbp.kernels`` (an ``@njit`` training step, say), the same way.

The error of a block is max_k |analytic_k - numeric_k| / max(max_k |analytic_k|,
max_k |numeric_k|): relative to the block's largest gradient entry, so that
entries near zero do not blow it up, and 0 for a block whose gradient is 0 on
both sides. In float64 with eps = 1e-6 a correct backward gives about 1e-8 or
less on smooth functions; a wrong one gives O(1). Kinks (ReLU at 0, MAE at a
zero error, Huber at |error| = delta) within eps of an evaluated point spoil the
differences there, not the backward. Like PyTorch's ``torch.autograd.gradcheck``
(the anchor), this is for small problems: each checked entry costs two
full-batch loss evaluations.
"""
import warnings
from collections import namedtuple

import numpy as np

GradcheckResult = namedtuple("GradcheckResult", "errors per_layer max_error passed tol")
GradcheckResult.__doc__ = """What a gradient check found (a named tuple).

Parameters
----------
errors : dict of str to float
    The relative error per checked block: 'layers[0].weight', 'layers[0].bias', ... for
    gradcheck; 'inputs[1]' or the input's name for gradcheck_pair.
per_layer : dict of str to float
    The largest error of each layer's blocks ('layers[0]'); the same as errors for
    gradcheck_pair.
max_error : float
    The largest error of all.
passed : bool
    max_error <= tol.
tol : float
    The tolerance the check used.
"""


class GradcheckError(AssertionError):
    """Raised by a gradient check called with ``raise_on_failure=True`` whose error exceeds tol."""


def _block_error(analytic, numeric):
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)


def _entries(size, max_entries, rng):
    if max_entries is None or max_entries >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, max_entries, replace=False))


def _check_eps(eps):
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
        raise ValueError(f"eps must be a number in (0, 1); got {eps!r}")
    return float(eps)


def _finish(errors, per_layer, tol, raise_on_failure):
    max_error = max(errors.values(), default=0.0)
    result = GradcheckResult(errors, per_layer, max_error, bool(max_error <= tol), tol)
    if raise_on_failure and not result.passed:
        worst = max(errors, key=errors.get)
        raise GradcheckError(f"gradient check failed: {worst} has relative error {errors[worst]:.3g} "
                             f"> tol {tol:g}; errors: {errors}")
    return result


def gradcheck(model, X, y, loss=None, eps=1e-6, sample_weight=None, tol=1e-5, max_entries=None, seed=0,
              raise_on_failure=False):
    """Check the analytic gradient of ``model``'s compiled training step against central differences.

    model: a ``fastbp.Sequential``. It is not modified: the check runs on a
    float64 copy of its layers and parameters. A float32 model is copied to
    float64 too, with a ``UserWarning`` saying so (float32 central differences
    would measure rounding, not the backward). loss: a loss name or object;
    default the model's compiled loss. X, y, sample_weight: the data, as for
    ``fit``; the loss is their full-batch mean. Dropout is evaluated with a
    fixed mask (that of the first training step of seed 0), the same for the
    gradient and every difference, so the check covers the masked network's
    backward too. max_entries: check at most this many entries per block,
    drawn with ``seed`` (default: every entry).

    Parameters
    ----------
    model : Sequential
        The model; left unchanged.
    X : array-like of shape (N, I)
        Features, as for ``fit``.
    y : array-like of shape (N,) or (N, O)
        Labels or targets, as for ``fit``.
    loss : str or Loss, default None
        The loss; default the model's compiled loss.
    eps : float, default 1e-6
        The central differences' step, in (0, 1).
    sample_weight : array-like of shape (N,), default None
        Weights of the samples in the loss.
    tol : float, default 1e-5
        The largest error that passes.
    max_entries : int, default None
        Check at most this many entries per block, drawn with ``seed``; None checks all.
    seed : int, default 0
        Draws the entries when ``max_entries`` is set.
    raise_on_failure : bool, default False
        Raise ``GradcheckError`` when the check fails, instead of returning.

    Returns
    -------
    GradcheckResult
        Errors per block ('layers[i].weight', 'layers[i].bias', i the index in
        ``model.layers``), the largest per layer ('layers[i]'), max_error, and
        passed = max_error <= tol.

    Raises
    ------
    GradcheckError
        With ``raise_on_failure=True``, when the check fails.
    ValueError
        No loss, a bad eps, or a loss that is not finite at the model's parameters.
    TypeError
        ``model`` is not a ``fastbp.Sequential``.
    """
    from .layers import Dense, layer_from_config
    from .lowering import param_views
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastbp.Sequential; got {type(model).__name__}")
    eps = _check_eps(eps)
    if loss is None:
        if model.loss is None:
            raise ValueError("gradcheck needs a loss: pass loss=... or compile the model first")
        loss = model.loss
    if model.dtype != np.float64:
        warnings.warn(f"gradcheck: the {model.dtype} model is checked in a float64 copy (float32 central "
                      f"differences measure rounding, not the gradient); the model itself is unchanged",
                      UserWarning, stacklevel=2)
    layers = [layer_from_config(type(layer).__name__, layer.get_config()) for layer in model.layers]
    copy = Sequential(layers, dtype="float64", seed=0)
    copy.set_flat_weights(model.theta.astype(np.float64))
    copy.compile(loss)
    f = copy.objective(X, y, sample_weight)
    theta = copy.get_flat_weights()
    loss0, grad = f(theta)
    if not np.isfinite(loss0):
        raise ValueError("gradcheck: the loss is not finite at the model's parameters")
    shapes = copy.lowered().shapes
    index = np.arange(theta.size)
    rng = np.random.default_rng(seed)
    errors, per_layer = {}, {}
    dense_at = [i for i, layer in enumerate(model.layers) if isinstance(layer, Dense)]
    for layer_index, (w_idx, b_idx) in zip(dense_at, param_views(index, shapes)):
        name = f"layers[{layer_index}]"
        for part, idx in (("weight", w_idx.ravel()), ("bias", b_idx)):
            chosen = idx[_entries(idx.size, max_entries, rng)]
            numeric = np.empty(chosen.size)
            for j, k in enumerate(chosen):
                t = theta.copy()
                t[k] += eps
                up = f(t)[0]
                t[k] = theta[k] - eps
                numeric[j] = (up - f(t)[0]) / (2 * eps)
            errors[f"{name}.{part}"] = _block_error(grad[chosen], numeric)
        per_layer[name] = max(errors[f"{name}.weight"], errors[f"{name}.bias"])
    return _finish(errors, per_layer, tol, raise_on_failure)


def gradcheck_pair(forward, backward, inputs, wrt=None, eps=1e-6, tol=1e-5, seed=0, raise_on_failure=False):
    """Check a forward/backward pair of your own (written with ``fastbp.kernels``) by central differences.

    dout is drawn from a normal distribution with ``seed`` (1.0 for a scalar
    output), so that every output entry counts with its own weight.

    Parameters
    ----------
    forward : callable
        ``forward(*inputs)`` returns the output: an array, or a scalar such as a loss. It
        must not modify its inputs.
    backward : callable
        ``backward(dout, *inputs)`` returns the gradients of sum(dout * output) with
        respect to the inputs named by ``wrt``, one array each, in that order.
    inputs : tuple or dict
        The arguments (arrays and scalars), or a dict of them by name (passed
        positionally, in the dict's order).
    wrt : sequence of int or str, default None
        The indices (or names, for a dict) of the inputs to check; default every float64
        array among them. Checked inputs must be C-contiguous float64 arrays.
    eps : float, default 1e-6
        The central differences' step, in (0, 1).
    tol : float, default 1e-5
        The largest error that passes.
    seed : int, default 0
        Draws dout.
    raise_on_failure : bool, default False
        Raise ``GradcheckError`` when the check fails, instead of returning.

    Returns
    -------
    GradcheckResult
        One error per checked input (named 'inputs[i]' or by its dict key); see
        ``gradcheck`` for the error measure.

    Raises
    ------
    GradcheckError
        With ``raise_on_failure=True``, when the check fails.
    ValueError
        No float64 input to check, a checked input that is not a C-contiguous float64
        array, or gradients of the wrong number or shape.

    Examples
    --------
    >>> import numpy as np
    >>> import fastbp
    >>> result = fastbp.gradcheck_pair(lambda x: np.tanh(x), lambda dout, x: dout * (1 - np.tanh(x) ** 2),
    ...                                (np.linspace(-1.0, 1.0, 5),))
    >>> result.passed
    True
    """
    eps = _check_eps(eps)
    names = list(inputs) if isinstance(inputs, dict) else [f"inputs[{i}]" for i in range(len(inputs))]
    args = list(inputs.values()) if isinstance(inputs, dict) else list(inputs)
    if wrt is None:
        wrt = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype == np.float64]
    else:
        wrt = [names.index(w) if isinstance(w, str) else int(w) for w in wrt]
    if not wrt:
        raise ValueError("gradcheck_pair found no float64 array among the inputs to check; pass wrt=...")
    for i in wrt:
        a = args[i]
        if not isinstance(a, np.ndarray) or a.dtype != np.float64 or not a.flags.c_contiguous:
            got = (f"{a.dtype}{'' if a.flags.c_contiguous else ', not C-contiguous'}" if isinstance(a, np.ndarray)
                   else type(a).__name__)
            raise ValueError(f"gradcheck_pair checks C-contiguous float64 arrays only: {names[i]} is {got}; "
                             f"pass np.ascontiguousarray(..., dtype=np.float64)")
    out = np.asarray(forward(*args), dtype=np.float64)
    rng = np.random.default_rng(seed)
    dout = np.ones(()) if out.size == 1 and out.ndim == 0 else rng.standard_normal(out.shape)

    def value():
        return float(np.sum(dout * np.asarray(forward(*args), dtype=np.float64)))

    dout_arg = dout.reshape(out.shape) if out.ndim else float(dout)
    grads = backward(dout_arg, *args)
    if isinstance(grads, np.ndarray):
        grads = (grads,)
    grads = list(grads)
    if len(grads) != len(wrt):
        raise ValueError(f"backward returned {len(grads)} gradient(s); expected {len(wrt)}, one per checked "
                         f"input ({[names[i] for i in wrt]})")
    errors = {}
    for i, g in zip(wrt, grads):
        a = args[i]
        g = np.asarray(g, dtype=np.float64)
        if g.shape != a.shape:
            raise ValueError(f"backward's gradient for {names[i]} has shape {g.shape}; expected {a.shape}")
        flat = a.reshape(-1)  # a view: perturbing it perturbs the input in place
        numeric = np.empty(flat.size)
        for k in range(flat.size):
            keep = flat[k]
            flat[k] = keep + eps
            up = value()
            flat[k] = keep - eps
            numeric[k] = (up - value()) / (2 * eps)
            flat[k] = keep
        errors[names[i]] = _block_error(g.reshape(-1), numeric)
    return _finish(errors, dict(errors), tol, raise_on_failure)
