"""Argument checking for the CUDA entry points: ``kernels/_checks.py`` adapted to device arrays.

The specs are the CPU ones (the ``ArgSpec`` above each CPU kernel, such as
``cpu/dense.py``'s ``DENSE_FORWARD_SPEC``), so both backends accept and reject
the same calls with the same messages. Scalars and values go
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
import importlib
import inspect
import re

import numpy as np

from .._checks import check_arrays, check_signature, check_values, reject
from ._numba_cuda import as_device_array, exported_readonly


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
        reject(kernel, name, "a CUDA device array (a numba device array or any object with "
              "__cuda_array_interface__, such as a CuPy array or a PyTorch CUDA tensor)" + hint,
              _describe(a))
    if not d.is_c_contiguous():
        reject(kernel, name, "C-contiguous (make a contiguous copy)", _describe(a))
    if output and exported_readonly(a):
        reject(kernel, name, "writeable (it is an output)", "a read-only device array")
    return d


def check_device_call(kernel, spec, args):
    """Validate ``args`` of CUDA ``kernel`` against its CPU ``spec``; raise KernelArgumentError.

    The walk of ``kernels._checks.check_arrays`` with device arrays in place of
    NumPy arrays. Returns the arguments with every array as a numba device array,
    so that a ``__cuda_array_interface__`` object is converted once per call.
    """
    converted, dims = check_arrays(kernel, spec, args, _device_array, _describe)
    # Only labels and (non-empty) weights are read by the value checks: they come to the
    # host; the rest stay on the device.
    host = {i: converted[i].copy_to_host() for i, (name, kind) in enumerate(spec)
            if (kind == "labels" or name == "weight") and converted[i].size}
    if host:
        check_values(kernel, spec, [host.get(i, a) for i, a in enumerate(args)], dims)
    return converted


_DEVICE_NOTE = ("On the GPU: every array argument is a CUDA device array (a numba device array or any\n"
                "    object with ``__cuda_array_interface__``), C-contiguous, with the shape and dtype\n"
                "    given below; scalars are Python numbers. The call returns without waiting for the\n"
                "    device.\n\n    ")


def device_doc(cpu_doc):
    """The CPU kernel's docstring, worded for device arrays: the arguments and rules are the same.

    The note goes after the summary line; array types read "device array"; the closing
    sentence on ``@njit`` code becomes one on ``.unchecked``.
    """
    summary, _, rest = cpu_doc.partition("\n\n    ")
    rest = re.sub(r"^(    \w+ : )ndarray", r"\1device array", rest, flags=re.M)
    rest = rest.replace("Inside ``@njit`` code nothing is checked.", "``.unchecked`` skips the checks.")
    return f"{summary}\n\n    {_DEVICE_NOTE}{rest}"


def public(launcher, spec):
    """Wrap an unchecked launcher as a checked entry point (``.unchecked`` is the launcher).

    ``spec`` is the ``ArgSpec`` of the CPU kernel of the same name: the launcher
    must take the same arguments in the same order. The entry point's docstring is the
    CPU kernel's (``device_doc``), so both are documented in one place.
    """
    name = launcher.__name__
    check_signature(launcher, spec)

    def wrapper(*args):
        launcher(*check_device_call(name, spec, args))

    functools.update_wrapper(wrapper, launcher)
    cpu_module = importlib.import_module(launcher.__module__.replace(".cuda.", ".cpu."))
    wrapper.__doc__ = device_doc(getattr(cpu_module, name).py_func.__doc__)
    wrapper.__signature__ = inspect.signature(launcher)
    wrapper.unchecked = launcher
    wrapper.spec = spec
    return wrapper
