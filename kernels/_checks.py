"""Argument checking for the Python-facing kernel entry points.

Each public kernel is described by a spec: its arguments in order, each with a
kind. Array kinds are strings of dimension letters (N batch, I inputs,
O outputs) that must agree across arguments. The checks run once per call from
Python; inside ``@njit`` code the public names compile straight to the
unchecked kernels (see ``_public``).
"""
import functools
import inspect
import numbers
import operator

import numpy as np
from numba.extending import overload

from ._scalar import ACTIVATION_CODES, OUTPUT_DERIVABLE

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CODE_NAMES = {v: k for k, v in ACTIVATION_CODES.items()}


class KernelArgumentError(ValueError):
    """A kernel was called with arrays or scalars it cannot work on."""


def _fail(kernel, name, expected, given):
    raise KernelArgumentError(f"{kernel}: argument '{name}' must be {expected}; got {given}")


def _describe(a):
    if isinstance(a, np.ndarray):
        layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
        return f"{layout} {a.dtype} array of shape {a.shape}"
    return f"{type(a).__name__} {a!r}"


def _check_array(kernel, name, a, output):
    if not isinstance(a, np.ndarray):
        _fail(kernel, name, "a NumPy array", _describe(a))
    if not a.flags.c_contiguous:
        _fail(kernel, name, "C-contiguous (use np.ascontiguousarray)", _describe(a))
    if output and not a.flags.writeable:
        _fail(kernel, name, "writeable (it is an output)", "a read-only array")


def check_call(kernel, spec, n_outputs, args):
    """Validate ``args`` of ``kernel`` against ``spec``; raise KernelArgumentError."""
    if len(args) != len(spec):
        names = ", ".join(name for name, _ in spec)
        raise TypeError(f"{kernel}({names}) takes {len(spec)} arguments; got {len(args)}")
    dims = {}
    dtype = None
    same_shape = None
    for position, ((name, kind), a) in enumerate(zip(spec, args)):
        output = position < n_outputs
        if kind in ("float", "rate", "positive", "nonneg", "bool", "seed", "step", "act", "act_fused"):
            _check_scalar(kernel, name, kind, a)
            continue
        _check_array(kernel, name, a, output)
        if kind == "labels":
            if a.dtype.kind not in "iu":
                _fail(kernel, name, "an integer array of class labels", _describe(a))
            letters = "N"
        else:
            if a.dtype not in FLOAT_DTYPES:
                _fail(kernel, name, "float32 or float64", _describe(a))
            if dtype is None:
                dtype = a.dtype
            elif a.dtype != dtype:
                _fail(kernel, name, f"{dtype} like the arrays before it", _describe(a))
            optional = kind.endswith("?")
            letters = kind.rstrip("?")
            if optional and a.size == 0:
                continue
        if letters == "L":
            if a.shape != (1,):
                _fail(kernel, name, "a one-element array of shape (1,) to receive the mean loss",
                      _describe(a))
            continue
        if letters == "*":
            if same_shape is None:
                if a.size == 0:
                    _fail(kernel, name, "non-empty", _describe(a))
                same_shape = a.shape
            elif a.shape != same_shape:
                _fail(kernel, name, f"of shape {same_shape} like the first array", _describe(a))
            continue
        if a.ndim != len(letters):
            expected = "(" + ", ".join(letters) + (",)" if len(letters) == 1 else ")")
            _fail(kernel, name, f"{len(letters)}-D of shape {expected}", _describe(a))
        for axis, (letter, size) in enumerate(zip(letters, a.shape)):
            if size == 0:
                what = "batch" if letter == "N" else "axis"
                _fail(kernel, name, f"non-empty (empty {what} on axis {axis})", _describe(a))
            if letter in dims and dims[letter][0] != size:
                other, other_name = dims[letter]
                _fail(kernel, name, f"of size {other} on axis {axis} ({letter}, as in '{other_name}')",
                      _describe(a))
            dims.setdefault(letter, (size, name))
    _check_values(kernel, spec, args, dims)


def _check_scalar(kernel, name, kind, a):
    if kind == "bool":
        if not isinstance(a, (bool, np.bool_)):
            _fail(kernel, name, "a bool", _describe(a))
        return
    if kind in ("seed", "step", "act", "act_fused"):
        if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
            _fail(kernel, name, "an integer", _describe(a))
        a = operator.index(a)
        if kind == "seed" and not 0 <= a < 2**63:
            _fail(kernel, name, "in [0, 2**63)", a)
        if kind == "step" and a < 1:
            _fail(kernel, name, ">= 1 (the first update is step 1)", a)
        if kind in ("act", "act_fused") and a not in _CODE_NAMES:
            _fail(kernel, name, f"an activation code from ACTIVATIONS {ACTIVATION_CODES}", a)
        if kind == "act_fused" and a not in OUTPUT_DERIVABLE:
            _fail(kernel, name, "an activation whose derivative follows from its output "
                  "(GELU needs its input: use dense_backward and gelu_backward)", _CODE_NAMES[a])
        return
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Real):
        _fail(kernel, name, "a real number", _describe(a))
    a = float(a)
    if not np.isfinite(a):
        _fail(kernel, name, "finite", a)
    if kind == "rate" and not 0.0 <= a < 1.0:
        _fail(kernel, name, "in [0, 1)", a)
    if kind == "positive" and not a > 0.0:
        _fail(kernel, name, "> 0", a)
    if kind == "nonneg" and not a >= 0.0:
        _fail(kernel, name, ">= 0", a)


def _check_values(kernel, spec, args, dims):
    for (name, kind), a in zip(spec, args):
        if kind == "labels" and a.size:
            n_classes = dims["O"][0]
            lo, hi = int(a.min()), int(a.max())
            if lo < 0 or hi >= n_classes:
                bad = lo if lo < 0 else hi
                _fail(kernel, name, f"class labels in [0, {n_classes})", f"label {bad}")
        if name == "weight" and a.size:
            if not np.all(np.isfinite(a)) or a.min() < 0:
                _fail(kernel, name, "finite and non-negative sample weights", "a negative or non-finite weight")
            if not a.sum() > 0:
                _fail(kernel, name, "sample weights with a positive sum", "weights summing to 0")


def public(kernel, spec, n_outputs):
    """Wrap an unchecked numba kernel as a checked Python entry point.

    The wrapper validates its arguments when called from Python. Inside a
    ``@njit`` function, numba resolves the wrapper through ``overload`` to the
    unchecked kernel itself, so user-compiled code pays nothing.
    """
    name = kernel.py_func.__name__

    def wrapper(*args):
        check_call(name, spec, n_outputs, args)
        kernel(*args)

    functools.update_wrapper(wrapper, kernel.py_func)
    wrapper.__signature__ = inspect.signature(kernel.py_func)
    wrapper.__wrapped__ = kernel
    wrapper.unchecked = kernel
    wrapper.spec = tuple(spec)

    @overload(wrapper, strict=False)
    def _compiled(*args):
        def impl(*args):
            kernel(*args)

        return impl

    return wrapper
