"""Argument checking for the CUDA entry points: ``kernels/_checks.py`` adapted to device arrays.

The specs are the CPU ones (``fastbp.kernels._SPECS``), so both backends accept
and reject the same calls with the same messages. Scalars and values go
through the CPU checks unchanged. Arrays must be on the device (a numba device
array or any object with ``__cuda_array_interface__``) and C-contiguous; the
shape rules (dimension letters that agree across arguments, the (1,) loss,
optional weights, same-shape ``*`` arrays) are those of ``check_call``.

Shapes, dtypes and layout are host-side metadata, so those checks cost a few
microseconds and never touch the device. Label ranges and sample weights are
values: checking them copies ``labels`` or ``weight`` (N elements) to the host,
which waits for the device. Hot loops call ``f.unchecked`` after validating
once; the loss kernels stay memory-safe with bad labels even then.
"""
import functools
import inspect

import numpy as np

from .._checks import FLOAT_DTYPES, _check_scalar, _check_values, _fail
from ._numba_cuda import as_device_array, exported_readonly

_SCALAR_KINDS = frozenset({"float", "rate", "positive", "nonneg", "bool", "seed", "step", "act",
                           "act_fused"})


def _describe(a):
    if isinstance(a, np.ndarray):
        return f"a host NumPy {a.dtype} array of shape {a.shape}"
    d = as_device_array(a)
    if d is not None:
        layout = "C-contiguous" if d.is_c_contiguous() else "non-contiguous"
        return f"{layout} {d.dtype} device array of shape {tuple(d.shape)}"
    return f"{type(a).__name__} {a!r}"


def _device_array(kernel, name, a, output):
    d = as_device_array(a)
    if d is None:
        hint = " (copy it once with numba.cuda.to_device)" if isinstance(a, np.ndarray) else ""
        _fail(kernel, name, "a CUDA device array (a numba device array or any object with "
              "__cuda_array_interface__, such as a CuPy array or a PyTorch CUDA tensor)" + hint,
              _describe(a))
    if not d.is_c_contiguous():
        _fail(kernel, name, "C-contiguous (make a contiguous copy)", _describe(a))
    if output and exported_readonly(a):
        _fail(kernel, name, "writeable (it is an output)", "a read-only device array")
    return d


def check_device_call(kernel, spec, n_outputs, args):
    """Validate ``args`` of CUDA ``kernel`` against its CPU ``spec``; raise KernelArgumentError.

    Mirrors ``kernels._checks.check_call`` with device arrays in place of NumPy
    arrays. Returns the arguments with every array as a numba device array, so
    that a ``__cuda_array_interface__`` object is converted once per call.
    """
    if len(args) != len(spec):
        names = ", ".join(name for name, _ in spec)
        raise TypeError(f"{kernel}({names}) takes {len(spec)} arguments; got {len(args)}")
    dims = {}
    dtype = None
    same_shape = None
    host_values = {}
    converted = list(args)
    for position, ((name, kind), a) in enumerate(zip(spec, args)):
        if kind in _SCALAR_KINDS:
            _check_scalar(kernel, name, kind, a)
            continue
        d = converted[position] = _device_array(kernel, name, a, position < n_outputs)
        shape = tuple(d.shape)
        if kind == "labels":
            if d.dtype.kind not in "iu":
                _fail(kernel, name, "an integer array of class labels", _describe(a))
            letters = "N"
        else:
            if d.dtype not in FLOAT_DTYPES:
                _fail(kernel, name, "float32 or float64", _describe(a))
            if dtype is None:
                dtype = d.dtype
            elif d.dtype != dtype:
                _fail(kernel, name, f"{dtype} like the arrays before it", _describe(a))
            optional = kind.endswith("?")
            letters = kind.rstrip("?")
            if optional and d.size == 0:
                continue
        if letters == "L":
            if shape != (1,):
                _fail(kernel, name, "a one-element array of shape (1,) to receive the mean loss",
                      _describe(a))
            continue
        if letters == "*":
            if same_shape is None:
                if d.size == 0:
                    _fail(kernel, name, "non-empty", _describe(a))
                same_shape = shape
            elif shape != same_shape:
                _fail(kernel, name, f"of shape {same_shape} like the first array", _describe(a))
            continue
        if len(shape) != len(letters):
            expected = "(" + ", ".join(letters) + (",)" if len(letters) == 1 else ")")
            _fail(kernel, name, f"{len(letters)}-D of shape {expected}", _describe(a))
        for axis, (letter, size) in enumerate(zip(letters, shape)):
            if size == 0:
                what = "batch" if letter == "N" else "axis"
                _fail(kernel, name, f"non-empty (empty {what} on axis {axis})", _describe(a))
            if letter in dims and dims[letter][0] != size:
                other, other_name = dims[letter]
                _fail(kernel, name, f"of size {other} on axis {axis} ({letter}, as in '{other_name}')",
                      _describe(a))
            dims.setdefault(letter, (size, name))
        if kind == "labels" or name == "weight":
            host_values[position] = d.copy_to_host()
    if host_values:
        # Only labels and weight are read by the value checks; the rest stay on the device.
        _check_values(kernel, spec, [host_values.get(i, a) for i, a in enumerate(args)], dims)
    return converted


def public(launcher, spec, n_outputs):
    """Wrap an unchecked launcher as a checked entry point (``.unchecked`` is the launcher)."""
    name = launcher.__name__

    def wrapper(*args):
        launcher(*check_device_call(name, spec, n_outputs, args))

    functools.update_wrapper(wrapper, launcher)
    wrapper.__signature__ = inspect.signature(launcher)
    wrapper.unchecked = launcher
    wrapper.spec = tuple(spec)
    return wrapper
