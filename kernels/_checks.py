"""Argument checking for the Python-facing kernel entry points.

Each public kernel is described by an ``ArgSpec`` written just above it in its
module (``DENSE_FORWARD_SPEC`` above ``cpu/dense.py``'s ``dense_forward``): its
arguments in order, each with a kind, and the names of those it writes. The
CPU and CUDA entry points of a kernel are made from that one object. Array
kinds are strings of dimension letters (N batch, I inputs, O outputs) that must
agree across arguments. The checks run once per call from Python; inside
``@njit`` code the public names compile straight to the unchecked kernels (see
``public``).
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


SCALAR_KINDS = frozenset({"float", "rate", "positive", "nonneg", "bool", "seed", "step", "act",
                          "act_fused"})
# Array kinds other than dimension letters: class labels, the (1,) loss, same-shape arrays.
NAMED_ARRAY_KINDS = frozenset({"labels", "L", "*"})
DIMENSION_LETTERS = frozenset("NIO")


def _known_kind(kind):
    letters = kind[:-1] if kind.endswith("?") else kind
    return (kind in SCALAR_KINDS or kind in NAMED_ARRAY_KINDS
            or (letters != "" and set(letters) <= DIMENSION_LETTERS))


class ArgSpec(tuple):
    """A kernel's arguments in order, as (name, kind) pairs, and the names of those it writes.

    Kinds: dimension letters for a float array ("NO" is (N, O)), with a
    trailing "?" where a zero-size array means "absent" (no sample weights, no
    input gradient); "L" the (1,) array that receives a loss; "*" float arrays
    of one shape, whatever it is; "labels" integer class labels (N,); and the
    scalar kinds of ``SCALAR_KINDS``. ``writes`` names the outputs: the first
    arguments, except in the optimizer updates, which read ``grad`` between
    ``param`` and their state.

    It is the tuple of pairs (what a public kernel's ``.spec`` has always been),
    with ``writes`` and ``names`` beside it. A typo in a kind or an output name
    fails at import.
    """

    def __new__(cls, args, writes):
        self = super().__new__(cls, ((name, kind) for name, kind in args))
        self.writes = frozenset(writes)
        unknown = [kind for _, kind in self if not _known_kind(kind)]
        if unknown:
            raise ValueError(f"ArgSpec {list(self)}: unknown argument kinds {unknown}")
        if not self.writes <= set(self.names):
            raise ValueError(f"ArgSpec {list(self)}: writes {sorted(self.writes)}, "
                             "not all of them arguments")
        return self

    @property
    def names(self):
        return tuple(name for name, _ in self)

    def __repr__(self):
        writes = tuple(name for name in self.names if name in self.writes)
        return f"ArgSpec({list(self)}, writes={writes})"


def check_signature(function, spec):
    """Raise TypeError unless ``function`` takes exactly the arguments of ``spec``, in order."""
    names = tuple(inspect.signature(function).parameters)
    if names != spec.names:
        raise TypeError(f"{function.__qualname__}{names} does not take the arguments of its spec "
                        f"{spec.names}")


def check_arrays(kernel, spec, args, as_array, describe):
    """The argument walk shared by the CPU and CUDA entry points.

    Checks the count, every scalar, and every array's dtype and shape against
    ``spec``: dimension letters that agree across arguments, the (1,) loss,
    optional (empty) weights, same-shape ``*`` arrays. ``as_array(kernel, name,
    a, output)`` checks what the backend needs of an array argument (kind of
    array, layout, writeable) and returns it as an object with ``dtype``,
    ``shape`` and ``size``; ``describe(a)`` words an argument for messages.
    Returns (the arguments with each array as ``as_array`` returned it, the sizes
    of the dimension letters). ``spec`` is an ``ArgSpec``: its ``writes`` are the
    outputs.
    """
    if len(args) != len(spec):
        names = ", ".join(name for name, _ in spec)
        raise TypeError(f"{kernel}({names}) takes {len(spec)} arguments; got {len(args)}")
    dims = {}
    dtype = None
    same_shape = None
    converted = list(args)
    for position, ((name, kind), a) in enumerate(zip(spec, args)):
        if kind in SCALAR_KINDS:
            _check_scalar(kernel, name, kind, a)
            continue
        d = converted[position] = as_array(kernel, name, a, name in spec.writes)
        shape = tuple(d.shape)
        if kind == "labels":
            if d.dtype.kind not in "iu":
                _fail(kernel, name, "an integer array of class labels", describe(a))
            letters = "N"
        else:
            if d.dtype not in FLOAT_DTYPES:
                _fail(kernel, name, "float32 or float64", describe(a))
            if dtype is None:
                dtype = d.dtype
            elif d.dtype != dtype:
                _fail(kernel, name, f"{dtype} like the arrays before it", describe(a))
            optional = kind.endswith("?")
            letters = kind.rstrip("?")
            if optional and d.size == 0:
                continue
        if letters == "L":
            if shape != (1,):
                _fail(kernel, name, "a one-element array of shape (1,) to receive the mean loss",
                      describe(a))
            continue
        if letters == "*":
            if same_shape is None:
                if d.size == 0:
                    _fail(kernel, name, "non-empty", describe(a))
                same_shape = shape
            elif shape != same_shape:
                _fail(kernel, name, f"of shape {same_shape} like the first array", describe(a))
            continue
        if len(shape) != len(letters):
            expected = "(" + ", ".join(letters) + (",)" if len(letters) == 1 else ")")
            _fail(kernel, name, f"{len(letters)}-D of shape {expected}", describe(a))
        for axis, (letter, size) in enumerate(zip(letters, shape)):
            if size == 0:
                what = "batch" if letter == "N" else "axis"
                _fail(kernel, name, f"non-empty (empty {what} on axis {axis})", describe(a))
            if letter in dims and dims[letter][0] != size:
                other, other_name = dims[letter]
                _fail(kernel, name, f"of size {other} on axis {axis} ({letter}, as in '{other_name}')",
                      describe(a))
            dims.setdefault(letter, (size, name))
    return converted, dims


def _host_array(kernel, name, a, output):
    _check_array(kernel, name, a, output)
    return a


def check_call(kernel, spec, args):
    """Validate ``args`` of ``kernel`` against its ``ArgSpec``; raise KernelArgumentError."""
    _, dims = check_arrays(kernel, spec, args, _host_array, _describe)
    check_values(kernel, spec, args, dims)


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


def check_values(kernel, spec, args, dims):
    """Label ranges and sample weights: the checks that read values, on host arrays."""
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


def public(kernel, spec):
    """Wrap an unchecked numba kernel as a checked Python entry point.

    ``spec`` is the kernel's ``ArgSpec``, the one defined beside it. The wrapper
    validates its arguments when called from Python. Inside a ``@njit``
    function, numba resolves the wrapper through ``overload`` to the unchecked
    kernel itself, so user-compiled code pays nothing.
    """
    name = kernel.py_func.__name__
    check_signature(kernel.py_func, spec)

    def wrapper(*args):
        check_call(name, spec, args)
        kernel(*args)

    functools.update_wrapper(wrapper, kernel.py_func)
    wrapper.__signature__ = inspect.signature(kernel.py_func)
    wrapper.__wrapped__ = kernel
    wrapper.unchecked = kernel
    wrapper.spec = spec

    @overload(wrapper, strict=False)
    def _compiled(*args):
        def impl(*args):
            kernel(*args)

        return impl

    return wrapper
