"""Gradient checks users can call: analytic gradients against float64 central differences.

``gradcheck(model, X, y)`` checks a whole compiled model: the gradient of one
training step of the CPU backend (``Sequential.objective``, the very forward,
loss and backward code that ``fit`` runs) against central differences
(L(theta + eps e_k) - L(theta - eps e_k)) / (2 eps) of the same full-batch loss,
entry by entry, for every weight and bias block and every norm layer's gamma and
beta. ``gradcheck_pair(forward,
backward, inputs)`` checks a forward/backward pair of your own, written with
``fastbp.kernels`` (an ``@njit`` training step, say), the same way.

An entry passes when |analytic - numeric| <= atol + rtol |numeric|, the test of
PyTorch's ``torch.autograd.gradcheck`` (the anchor) with its defaults, atol = 1e-5
and rtol = 1e-3: the absolute part lets a gradient that is 0 in truth (a bias
before BatchNorm, whose mean subtraction cancels it) pass with rounding on either
side, the relative part scales with large entries. The error of a block is its
largest |analytic - numeric| / (atol + rtol |numeric|): the share of the
tolerance its worst entry uses, so a block passes when its error is <= 1. In
float64 with eps = 1e-6 a correct backward gives about 1e-4 or less on smooth
functions; a 1% error in a gradient of size 1 gives about 10. Kinks (ReLU at 0,
MAE at a zero error, Huber at |error| = delta) within eps of an evaluated point
spoil the differences there, not the backward. Like PyTorch's, this is for small
problems: each checked entry costs two full-batch loss evaluations.
"""
import warnings
from collections import namedtuple

import numpy as np

from ._validation import check_in_range, check_nonnegative, check_seed

GradcheckResult = namedtuple("GradcheckResult", "errors per_layer max_error passed atol rtol")
GradcheckResult.__doc__ = """What a gradient check found (a named tuple).

Parameters
----------
errors : dict of str to float
    The error per checked block: 'layers[0].weight', 'layers[0].bias', 'layers[1].gamma',
    'layers[1].beta', ... for gradcheck; 'inputs[1]' or the input's name for gradcheck_pair.
    A block's error is ``max(abs(analytic - numeric) / (atol + rtol * abs(numeric)))`` over
    its entries: the share of the tolerance its worst entry uses.
per_layer : dict of str to float
    The largest error of each layer's blocks ('layers[0]'); the same as errors for
    gradcheck_pair.
max_error : float
    The largest error of all.
passed : bool
    max_error <= 1, that is, every entry within ``atol + rtol * abs(numeric)``.
atol : float
    The absolute tolerance the check used.
rtol : float
    The relative tolerance the check used.
"""


class GradcheckError(AssertionError):
    """Raised by a gradient check called with ``raise_on_failure=True`` that fails.

    It fails when an entry's ``abs(analytic - numeric)`` exceeds
    ``atol + rtol * abs(numeric)``, that is, when ``max_error`` exceeds 1.
    """


def _block_error(analytic, numeric, atol, rtol):
    """max |analytic - numeric| / (atol + rtol |numeric|): <= 1 where every entry passes."""
    diff = np.abs(analytic - numeric)
    allowed = atol + rtol * np.abs(numeric)
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.where(diff == 0, 0.0, diff / allowed)  # 0 / 0 (atol = 0, both exact): a pass
    return float(share.max(initial=0.0))


def _entries(size, max_entries, rng):
    if max_entries is None or max_entries >= size:
        return np.arange(size)
    return np.sort(rng.choice(size, max_entries, replace=False))


def _central_differences(value, flat, entries, eps):
    """(value() at flat[k] + eps - value() at flat[k] - eps) / (2 eps) for each k of entries;
    flat is perturbed in place, one entry at a time, and left as it was."""
    numeric = np.empty(len(entries))
    for j, k in enumerate(entries):
        keep = flat[k]
        flat[k] = keep + eps
        up = value()
        flat[k] = keep - eps
        numeric[j] = (up - value()) / (2 * eps)
        flat[k] = keep
    return numeric


def _check_eps(eps):
    return check_in_range(eps, "eps", 0, 1, low_open=True, high_open=True)


def _check_tolerances(atol, rtol):
    atol, rtol = check_nonnegative(atol, "atol"), check_nonnegative(rtol, "rtol")
    if atol == 0 and rtol == 0:
        raise ValueError("atol and rtol cannot both be 0: central differences are never exact")
    return atol, rtol


def _finish(errors, per_layer, atol, rtol, raise_on_failure):
    max_error = max(errors.values(), default=0.0)
    result = GradcheckResult(errors, per_layer, max_error, bool(max_error <= 1.0), atol, rtol)
    if raise_on_failure and not result.passed:
        worst = max(errors, key=errors.get)
        raise GradcheckError(f"gradient check failed: {worst} differs from the central differences by "
                             f"{errors[worst]:.3g} times the tolerance atol + rtol |numeric| (atol "
                             f"{atol:g}, rtol {rtol:g}); errors: {errors}")
    return result


def gradcheck(model, X, y, loss=None, eps=1e-6, sample_weight=None, atol=1e-5, rtol=1e-3, max_entries=None,
              seed=0, raise_on_failure=False):
    """Check the analytic gradient of ``model``'s compiled training step against central differences.

    Every weight and bias block and every norm layer's gamma and beta is checked, entry by
    entry. The model is not modified: the check runs on a float64 copy of its layers and
    parameters. A float32 model is copied to float64 too, with a ``UserWarning`` saying so
    (float32 central differences would measure rounding, not the backward). The loss is the
    full-batch mean over the data. Dropout is evaluated with a fixed mask (that of the first
    training step of seed 0), the same for the gradient and every difference, so the check
    covers the masked network's backward too.

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
    atol : float, default 1e-5
        Absolute tolerance: an entry passes when
        ``abs(analytic - numeric) <= atol + rtol * abs(numeric)``
        (``torch.autograd.gradcheck``'s test and defaults). A finite number >= 0.
    rtol : float, default 1e-3
        Relative tolerance, as above. atol and rtol cannot both be 0.
    max_entries : int, default None
        Check at most this many entries per block, drawn with ``seed``; None checks all.
    seed : int, default 0
        Draws the entries when ``max_entries`` is set.
    raise_on_failure : bool, default False
        Raise ``GradcheckError`` when the check fails, instead of returning.

    Returns
    -------
    GradcheckResult
        Errors per block ('layers[i].weight', 'layers[i].bias', and 'layers[i].gamma',
        'layers[i].beta' for norm layers, i the index in ``model.layers``), each
        ``max(abs(analytic - numeric) / (atol + rtol * abs(numeric)))``; the largest per layer
        ('layers[i]'); max_error; passed = max_error <= 1; and atol, rtol.

    Raises
    ------
    GradcheckError
        With ``raise_on_failure=True``, when the check fails.
    ValueError
        No loss, a bad eps, atol or rtol negative or not finite (or both 0), or a loss that
        is not finite at the model's parameters.
    TypeError
        ``model`` is not a ``fastbp.Sequential``, or atol or rtol is not a number.
    """
    from .lowering import named_views
    from .model import Sequential

    if not isinstance(model, Sequential):
        raise TypeError(f"model must be a fastbp.Sequential; got {type(model).__name__}")
    eps = _check_eps(eps)
    atol, rtol = _check_tolerances(atol, rtol)
    copy = _float64_copy(model, loss)
    f = copy.objective(X, y, sample_weight)
    theta = copy.get_flat_weights()
    loss0, grad = f(theta)
    if not np.isfinite(loss0):
        raise ValueError("gradcheck: the loss is not finite at the model's parameters")
    # The blocks of theta by name, as index arrays; the running statistics are no parameters.
    blocks = named_views(np.arange(theta.size), np.arange(copy.buffers.size), copy.layers, copy._shapes)
    rng = np.random.default_rng(check_seed(seed))
    errors, per_layer = {}, {}
    for block, idx in blocks:
        if block.endswith((".running_mean", ".running_var")):
            continue
        idx = idx.ravel()
        chosen = idx[_entries(idx.size, max_entries, rng)]
        t = theta.copy()
        numeric = _central_differences(lambda: f(t)[0], t, chosen, eps)
        errors[block] = _block_error(grad[chosen], numeric, atol, rtol)
        layer = block.rsplit(".", 1)[0]
        per_layer[layer] = max(per_layer.get(layer, 0.0), errors[block])
    return _finish(errors, per_layer, atol, rtol, raise_on_failure)


def _float64_copy(model, loss):
    """A float64 Sequential of model's layers and parameters, compiled with loss (default the
    model's); a UserWarning, at gradcheck's caller, where the model is not float64."""
    from .layers import layer_from_config
    from .model import Sequential

    if loss is None:
        if model.loss is None:
            raise ValueError("gradcheck needs a loss: pass loss=... or compile the model first")
        loss = model.loss
    if model.dtype != np.float64:
        warnings.warn(f"gradcheck: the {model.dtype} model is checked in a float64 copy (float32 central "
                      f"differences measure rounding, not the gradient); the model itself is unchanged",
                      UserWarning, stacklevel=3)
    layers = [layer_from_config(type(layer).__name__, layer.get_config()) for layer in model.layers]
    copy = Sequential(layers, dtype="float64", seed=0)
    copy.set_flat_weights(model.theta.astype(np.float64))
    copy.compile(loss)
    return copy


def gradcheck_pair(forward, backward, inputs, wrt=None, eps=1e-6, atol=1e-5, rtol=1e-3, seed=0,
                   raise_on_failure=False):
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
    atol : float, default 1e-5
        Absolute tolerance: an entry passes when
        ``abs(analytic - numeric) <= atol + rtol * abs(numeric)``, as in ``gradcheck``.
    rtol : float, default 1e-3
        Relative tolerance, as above. atol and rtol cannot both be 0.
    seed : int, default 0
        Draws dout.
    raise_on_failure : bool, default False
        Raise ``GradcheckError`` when the check fails, instead of returning.

    Returns
    -------
    GradcheckResult
        One error per checked input (named 'inputs[i]' or by its dict key); see
        ``gradcheck`` for the error measure and atol, rtol.

    Raises
    ------
    GradcheckError
        With ``raise_on_failure=True``, when the check fails.
    ValueError
        No float64 input to check, a checked input that is not a C-contiguous float64
        array, gradients of the wrong number or shape, or a bad eps, atol or rtol.
    TypeError
        atol or rtol is not a number.

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
    atol, rtol = _check_tolerances(atol, rtol)
    names, args, wrt = _inputs_to_check(inputs, wrt)
    out = np.asarray(forward(*args), dtype=np.float64)
    rng = np.random.default_rng(check_seed(seed))
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
        numeric = _central_differences(value, flat, range(flat.size), eps)
        errors[names[i]] = _block_error(g.reshape(-1), numeric, atol, rtol)
    return _finish(errors, dict(errors), atol, rtol, raise_on_failure)


def _inputs_to_check(inputs, wrt):
    """(names, args, indices to check) of gradcheck_pair's inputs; ValueError where there is
    none, or one checked is not a C-contiguous float64 array."""
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
    return names, args, wrt
