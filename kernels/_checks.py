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
import re

import numpy as np
from numba import from_dtype, types
from numba.extending import overload

from . import registry
from ._scalar import ACTIVATION_CODES, OUTPUT_DERIVABLE

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_CODE_NAMES = {v: k for k, v in ACTIVATION_CODES.items()}


class KernelArgumentError(ValueError):
    """A kernel was called with arrays or scalars it cannot work on."""


def reject(kernel, name, expected, given):
    """Raise the one error form of the CPU and CUDA checks: the kernel, the argument, what it must be, what it is."""
    raise KernelArgumentError(f"{kernel}: argument '{name}' must be {expected}; got {given}")


def _describe(a):
    if isinstance(a, np.ndarray):
        layout = "C-contiguous" if a.flags.c_contiguous else "non-contiguous"
        return f"{layout} {a.dtype} array of shape {a.shape}"
    return f"{type(a).__name__} {a!r}"


def _check_array(kernel, name, a, output):
    if not isinstance(a, np.ndarray):
        reject(kernel, name, "a NumPy array", _describe(a))
    if not a.flags.c_contiguous:
        reject(kernel, name, "C-contiguous (use np.ascontiguousarray)", _describe(a))
    if output and not a.flags.writeable:
        reject(kernel, name, "writeable (it is an output)", "a read-only array")


DIMENSION_LETTERS = frozenset("NIO")


def _known_kind(kind):
    letters = kind[:-1] if kind.endswith("?") else kind
    return (kind in SCALAR_CHECKS or kind in ARRAY_CHECKS or _typed_array(kind) is not None
            or (letters != "" and set(letters) <= DIMENSION_LETTERS))


# Arrays of one element type and rank, spelled as numba spells them: "int64[:, :]" (the compiled
# loop's tables), "float64[:]" (hyperparameters, sums), "float[:, :, :]" (of the call's float
# dtype, as every lettered array is).
_TYPED_ARRAY = re.compile(r"^(float|float64|int64)\[:(?:, :)*\]$")


def _typed_array(kind):
    """(element type, rank) of a typed-array kind ("float" for the call's float dtype), or None."""
    match = _TYPED_ARRAY.match(kind)
    return None if match is None else (match.group(1), kind.count(":"))


class ArgSpec(tuple):
    """A kernel's arguments in order, as (name, kind) pairs, and the names of those it writes.

    Kinds: dimension letters for a float array ("NO" is (N, O)), with a
    trailing "?" where a zero-size array means "absent" (no sample weights, no
    input gradient); "L" the (1,) array that receives a loss; "*" float arrays
    of one shape, whatever it is; "labels" integer class labels (N,); arrays of
    one element type and rank in numba's spelling ("int64[:, :]", "float[:]": the
    call's float dtype); and the scalar kinds of ``SCALAR_CHECKS``. ``writes`` names the outputs: the first
    arguments, except in the optimizer updates, which read ``grad`` between
    ``param`` and their state.

    It is the tuple of pairs (what a public kernel's ``.spec`` has always been),
    with ``writes`` and ``names`` beside it. A typo in a kind or an output name
    fails at import.
    """

    def __new__(cls, args, writes, paired=()):
        self = super().__new__(cls, ((name, kind) for name, kind in args))
        self.writes = frozenset(writes)
        self.paired = tuple(paired)
        if not {name for pair in self.paired for name in pair} <= set(self.names):
            raise ValueError(f"ArgSpec {list(self)}: paired {self.paired}, not all of them arguments")
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
        paired = f", paired={self.paired}" if self.paired else ""
        return f"ArgSpec({list(self)}, writes={writes}{paired})"


def check_signature(function, spec):
    """Raise TypeError unless ``function`` takes exactly the arguments of ``spec``, in order."""
    names = tuple(inspect.signature(function).parameters)
    if names != spec.names:
        raise TypeError(f"{function.__qualname__}{names} does not take the arguments of its spec "
                        f"{spec.names}")


def check_arrays(kernel, spec, args, as_array, describe):
    """The argument walk shared by the CPU and CUDA entry points.

    Checks the count, then each argument with the checker of its kind
    (``SCALAR_CHECKS``, ``ARRAY_CHECKS``, or dimension letters).
    ``as_array(kernel, name, a, output)`` checks what the backend needs of an
    array argument (kind of array, layout, writeable) and returns it as an
    object with ``dtype``, ``shape`` and ``size``; ``describe(a)`` words an
    argument for messages. ``spec`` is an ``ArgSpec``: its ``writes`` are the
    outputs, its ``paired`` the optional arrays that are absent together.
    Returns (the arguments with each array as ``as_array`` returned it, the
    sizes of the dimension letters).
    """
    if len(args) != len(spec):
        names = ", ".join(spec.names)
        raise TypeError(f"{kernel}({names}) takes {len(spec)} arguments; got {len(args)}")
    walk = _Walk(kernel, describe)
    converted = list(args)
    for position, ((name, kind), a) in enumerate(zip(spec, args)):
        if kind in SCALAR_CHECKS:
            SCALAR_CHECKS[kind](kernel, name, a)
            continue
        d = converted[position] = as_array(kernel, name, a, name in spec.writes)
        _array_check(kind)(walk, name, kind, d, a)
    position = dict(zip(spec.names, range(len(spec))))
    for first, second in spec.paired:
        a, b = converted[position[first]], converted[position[second]]
        if (a.size == 0) != (b.size == 0):
            reject(kernel, second, f"zero-size exactly when '{first}' is (both absent, or both given)",
                  f"{describe(args[position[second]])} with '{first}' of size {a.size}")
    return converted, walk.dims


def _host_array(kernel, name, a, output):
    _check_array(kernel, name, a, output)
    return a


def check_call(kernel, spec, args):
    """Validate ``args`` of ``kernel`` against its ``ArgSpec``; raise KernelArgumentError."""
    _, dims = check_arrays(kernel, spec, args, _host_array, _describe)
    check_values(kernel, spec, args, dims)


# ----- arrays: one checker per kind, given the walk so far -----------------------------

class _Walk:
    """What the arrays already checked in one call fix for those after them."""

    def __init__(self, kernel, describe):
        self.kernel = kernel
        self.describe = describe
        self.dims = {}  # letter -> (size, name of the first argument with that letter)
        self.dtype = None  # of the first float array
        self.shape = None  # of the first "*" array

    def fail(self, name, expected, a):
        reject(self.kernel, name, expected, self.describe(a))


def _check_float(walk, name, d, a):
    """float32 or float64, and the dtype of every float array before it."""
    if d.dtype not in FLOAT_DTYPES:
        walk.fail(name, "float32 or float64", a)
    if walk.dtype is None:
        walk.dtype = d.dtype
    elif d.dtype != walk.dtype:
        walk.fail(name, f"{walk.dtype} like the arrays before it", a)


def _check_letters(walk, name, letters, d, a):
    """One non-empty axis per letter, each the size the letter had before."""
    shape = tuple(d.shape)
    if len(shape) != len(letters):
        expected = "(" + ", ".join(letters) + (",)" if len(letters) == 1 else ")")
        walk.fail(name, f"{len(letters)}-D of shape {expected}", a)
    for axis, (letter, size) in enumerate(zip(letters, shape)):
        _check_axis(walk, name, axis, letter, size, a)


def _check_axis(walk, name, axis, letter, size, a):
    if size == 0:
        what = "batch" if letter == "N" else "axis"
        walk.fail(name, f"non-empty (empty {what} on axis {axis})", a)
    first_size, first_name = walk.dims.setdefault(letter, (size, name))
    if size != first_size:
        walk.fail(name, f"of size {first_size} on axis {axis} ({letter}, as in '{first_name}')", a)


def _check_lettered(walk, name, kind, d, a):
    """A float array with the dimensions of ``kind`` ("NO" is (N, O))."""
    _check_float(walk, name, d, a)
    _check_letters(walk, name, kind, d, a)


def _check_optional(walk, name, kind, d, a):
    """Letters and "?": a zero-size array stands for "none" (unweighted, no dx)."""
    _check_float(walk, name, d, a)
    if d.size:
        _check_letters(walk, name, kind[:-1], d, a)


def _check_labels(walk, name, kind, d, a):
    """Integer class labels, one per sample: (N,)."""
    if d.dtype.kind not in "iu":
        walk.fail(name, "an integer array of class labels", a)
    _check_letters(walk, name, "N", d, a)


def _check_loss(walk, name, kind, d, a):
    """"L": the (1,) array that receives the mean loss."""
    _check_float(walk, name, d, a)
    if tuple(d.shape) != (1,):
        walk.fail(name, "a one-element array of shape (1,) to receive the mean loss", a)


def _check_same_shape(walk, name, kind, d, a):
    """"*": any shape, the same for every "*" array of the call; the first is non-empty."""
    _check_float(walk, name, d, a)
    if walk.shape is None and d.size == 0:
        walk.fail(name, "non-empty", a)
    if walk.shape is None:
        walk.shape = tuple(d.shape)
    elif tuple(d.shape) != walk.shape:
        walk.fail(name, f"of shape {walk.shape} like the first array", a)


def _check_typed(walk, name, kind, d, a):
    """"int64[:, :]", "float[:]", ...: the element type and the rank."""
    element, rank = _typed_array(kind)
    if element == "float":
        _check_float(walk, name, d, a)
    elif d.dtype != np.dtype(element):
        walk.fail(name, f"an array of {element}", a)
    if len(d.shape) != rank:
        walk.fail(name, f"{rank}-D", a)


# Array kinds by name; any other array kind is typed ("int64[:]") or dimension letters, "?" if
# optional.
ARRAY_CHECKS = {"labels": _check_labels, "L": _check_loss, "*": _check_same_shape}


def _array_check(kind):
    if kind in ARRAY_CHECKS:
        return ARRAY_CHECKS[kind]
    if _typed_array(kind) is not None:
        return _check_typed
    return _check_optional if kind.endswith("?") else _check_lettered


# ----- scalars --------------------------------------------------------------------------

def _real(kernel, name, a):
    """A finite real number (not a bool), as a float."""
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Real):
        reject(kernel, name, "a real number", _describe(a))
    a = float(a)
    if not np.isfinite(a):
        reject(kernel, name, "finite", a)
    return a


def _integer(kernel, name, a):
    """An integer (not a bool), as a Python int."""
    if isinstance(a, (bool, np.bool_)) or not isinstance(a, numbers.Integral):
        reject(kernel, name, "an integer", _describe(a))
    return operator.index(a)


def _check_bool(kernel, name, a):
    if not isinstance(a, (bool, np.bool_)):
        reject(kernel, name, "a bool", _describe(a))


def _check_real(kernel, name, a):
    _real(kernel, name, a)


def _check_rate(kernel, name, a):
    a = _real(kernel, name, a)
    if not 0.0 <= a < 1.0:
        reject(kernel, name, "in [0, 1)", a)


def _check_positive(kernel, name, a):
    a = _real(kernel, name, a)
    if not a > 0.0:
        reject(kernel, name, "> 0", a)


def _check_nonneg(kernel, name, a):
    a = _real(kernel, name, a)
    if not a >= 0.0:
        reject(kernel, name, ">= 0", a)


def _check_momentum(kernel, name, a):
    a = _real(kernel, name, a)
    if not 0.0 <= a <= 1.0:
        reject(kernel, name, "in [0, 1]", a)


def _check_count(kernel, name, a):
    a = _integer(kernel, name, a)
    if a < 2:
        reject(kernel, name, ">= 2 (an unbiased variance needs two rows)", a)


def _check_seed(kernel, name, a):
    a = _integer(kernel, name, a)
    if not 0 <= a < 2**63:
        reject(kernel, name, "in [0, 2**63)", a)


def _check_step(kernel, name, a):
    a = _integer(kernel, name, a)
    if a < 1:
        reject(kernel, name, ">= 1 (the first update is step 1)", a)


def _check_act(kernel, name, a):
    a = _integer(kernel, name, a)
    if a not in _CODE_NAMES:
        reject(kernel, name, f"an activation code from ACTIVATIONS {ACTIVATION_CODES}", a)
    return a


def _check_act_fused(kernel, name, a):
    a = _check_act(kernel, name, a)
    if a not in OUTPUT_DERIVABLE:
        reject(kernel, name, "an activation whose derivative follows from its output "
              "(GELU needs its input: use dense_backward and gelu_backward; so does SiLU)", _CODE_NAMES[a])


def _check_index(kernel, name, a):
    a = _integer(kernel, name, a)
    if a < 0:
        reject(kernel, name, ">= 0", a)


def _check_code_among(codes, what):
    """A checker of an integer code that must be one of ``codes`` (``what`` names them)."""
    def check(kernel, name, a):
        a = _integer(kernel, name, a)
        if a not in codes:
            reject(kernel, name, f"{what} {codes}", a)
    return check


SCALAR_CHECKS = {
    "bool": _check_bool,
    "value": _check_real,  # a float of the arrays' dtype in compiled code (``numba_signature``)
    "index": _check_index,
    "loss": _check_code_among(tuple(loss.code for loss in registry.LOSS_TABLE), "a loss code of registry.LOSS_TABLE"),
    "optimizer": _check_code_among((registry.OPT_SGD, registry.OPT_ADAM, registry.OPT_RMSPROP, registry.OPT_ADAGRAD),
                                   "an optimizer code of the registry (OPT_*)"),
    "float": _check_real,
    "rate": _check_rate,
    "positive": _check_positive,
    "nonneg": _check_nonneg,
    "seed": _check_seed,
    "momentum": _check_momentum,
    "count": _check_count,
    "step": _check_step,
    "act": _check_act,
    "act_fused": _check_act_fused,
}


# ----- values: what only the array contents tell ---------------------------------------

def check_values(kernel, spec, args, dims):
    """Label ranges and sample weights: the checks that read values, on host arrays."""
    for (name, kind), a in zip(spec, args):
        if kind == "labels" and a.size:
            _check_label_values(kernel, name, a, dims["O"][0])
        if name == "weight" and a.size:
            _check_weight_values(kernel, name, a)


def _check_label_values(kernel, name, labels, n_classes):
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= n_classes:
        bad = lo if lo < 0 else hi
        reject(kernel, name, f"class labels in [0, {n_classes})", f"label {bad}")


def _check_weight_values(kernel, name, weight):
    # All zero is allowed: the loss kernels give such a batch loss 0 and gradient 0.
    if not np.all(np.isfinite(weight)) or weight.min() < 0:
        reject(kernel, name, "finite and non-negative sample weights",
              "a negative or non-finite weight")


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


# The numba type of each scalar kind in a compiled caller's signature; "value" is a float of the
# arrays' dtype.
_SCALAR_TYPES = {"bool": types.boolean, "value": None, "float": types.float64, "rate": types.float64,
                 "positive": types.float64, "nonneg": types.float64, "momentum": types.float64,
                 "count": types.int64, "seed": types.int64, "step": types.int64, "act": types.int64,
                 "act_fused": types.int64, "index": types.int64, "loss": types.int64, "optimizer": types.int64}
assert _SCALAR_TYPES.keys() == SCALAR_CHECKS.keys()


def numba_signature(spec, dtype, star_rank=2):
    """The signature with which compiled code calls a kernel of ``spec`` on arrays of ``dtype``:
    C-contiguous arrays of ``dtype`` for the lettered, "L", "*" and "float[...]" kinds ("*" of
    rank ``star_rank``), int64 labels, the typed arrays' own element types, and each scalar
    kind's type (``_SCALAR_TYPES``). The compiled loop's kernel tables hold their kernels for
    these (``fastbp/backends/_kernel_tables.py``)."""
    floats = from_dtype(np.dtype(dtype))

    def one(kind):
        if kind in _SCALAR_TYPES:
            return floats if _SCALAR_TYPES[kind] is None else _SCALAR_TYPES[kind]
        if kind == "labels":
            return types.Array(types.int64, 1, "C")
        typed = _typed_array(kind)
        if typed is not None:
            element, rank = typed
            return types.Array(floats if element == "float" else getattr(types, element), rank, "C")
        rank = star_rank if kind == "*" else 1 if kind == "L" else len(kind.rstrip("?"))
        return types.Array(floats, rank, "C")

    return types.void(*(one(kind) for _, kind in spec))
