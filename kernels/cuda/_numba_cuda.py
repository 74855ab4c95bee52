"""The one place that imports numba-cuda: decorator policy, scalar math, device arrays.

Everything else in ``fastbp.kernels.cuda`` takes ``cuda``, ``kernel``,
``device``, ``configure`` and ``as_device_array`` from here, so moving the GPU
backend to another Numba CUDA target means editing this module alone.

Importing it compiles nothing. It registers every scalar function of
``kernels/_scalar.py`` (``_jit.SCALAR_FUNCTIONS``: relu, sigmoid, activate,
activate_grad, gelu_grad, log1p_exp, hash_uniform, ...) for the CUDA target,
so the GPU kernels call the very same formulas as the CPU kernels.
"""
import importlib.util
import warnings

import numpy as np

# numba 0.6x still ships a deprecated built-in ``numba.cuda`` that imports
# without numba-cuda and behaves differently: insist on the real package.
if importlib.util.find_spec("numba_cuda") is None:
    raise ImportError(
        "fastbp.kernels.cuda needs the numba-cuda package (NVIDIA's CUDA target for Numba); "
        "install it with: pip install fastbp[cuda]"
    )
try:
    from numba import cuda
    from numba.cuda.core import config as _config
    from numba.cuda.core.errors import NumbaPerformanceWarning
    from numba.cuda.extending import register_jitable
except ImportError as exc:  # numba-cuda present but broken, e.g. no CUDA Python bindings
    raise ImportError(
        f"fastbp.kernels.cuda could not import numba-cuda ({exc}); "
        "reinstall it with: pip install fastbp[cuda]"
    ) from exc

from .. import _cache
from .._jit import SCALAR_FUNCTIONS

# True under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where every GPU
# thread runs as Python: what the tests use on machines without a GPU.
SIMULATOR = bool(_config.ENABLE_CUDASIM)

# Decorator policy, as _jit.py is for the CPU. Kernels are cached on disk like
# the CPU ones, in the same per-user folder (kernels/_cache.py; FASTBP_NO_CACHE=1
# turns both off). fastmath is off, so NaN and
# inf propagate and divergence stays visible. Device functions are inlined at
# the NVVM level, so that the small per-thread arrays they fill (the GEMM
# accumulators) become registers. The simulator's jit takes none of these.
_KERNEL_OPTIONS = {} if SIMULATOR else dict(fastmath=False)
_DEVICE_OPTIONS = {} if SIMULATOR else dict(forceinline=True, fastmath=False)


def kernel(func):
    """Compile a ``@cuda.jit`` kernel with the project's policy."""
    compiled = cuda.jit(**_KERNEL_OPTIONS)(func)
    return compiled if SIMULATOR else _cache.enable_cuda(compiled)


def device(func):
    """Compile a CUDA device function, inlined into the kernels that call it."""
    return cuda.jit(device=True, **_DEVICE_OPTIONS)(func)


# The same Python functions that _jit.scalar registered for the CPU target,
# registered again for the CUDA target: one source for every formula.
for _func in SCALAR_FUNCTIONS:
    register_jitable(_func)
del _func


def configure(launch_kernel, grid, block):
    """``launch_kernel[grid, block]``, without numba's low-occupancy warning.

    Small layers give small grids by design (a 5 x 7 output is one block) and
    the loss forwards run a single block on purpose, so the warning would fire
    for most launches. Callers cache the result per shape.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NumbaPerformanceWarning)
        return launch_kernel[grid, block]


class _HostInterface:
    """Presents a simulated device buffer (which is host memory) to NumPy."""

    def __init__(self, interface):
        self.__array_interface__ = {
            "shape": tuple(interface["shape"]),
            "typestr": interface["typestr"],
            "data": tuple(interface["data"]),
            "strides": interface.get("strides"),
            "version": 3,
        }


def as_device_array(obj):
    """A numba device array viewing ``obj``'s memory, or None when ``obj`` is not on the device.

    Numba device arrays are returned as they are. Any other object with
    ``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors) is viewed
    without copying through ``cuda.as_cuda_array``, which follows the
    interface's stream protocol: when the exporter names a stream, numba
    synchronizes it first (NUMBA_CUDA_ARRAY_INTERFACE_SYNC=0 skips that when all
    work runs on one stream). In a hot loop convert once and pass the numba
    arrays. Host arrays (NumPy) give None.
    """
    if getattr(obj, "__cuda_ndarray__", False):
        return obj
    interface = getattr(obj, "__cuda_array_interface__", None)
    if interface is None:
        return None
    if SIMULATOR:
        # Under the simulator the interface's pointer is a host address: view
        # it in place, as cuda.as_cuda_array does on a GPU.
        from numba.cuda.simulator.cudadrv.devicearray import FakeCUDAArray

        return FakeCUDAArray(np.asarray(_HostInterface(interface)))
    return cuda.as_cuda_array(obj)


def exported_readonly(obj):
    """Whether ``obj`` exports a ``__cuda_array_interface__`` that marks its buffer read-only."""
    if getattr(obj, "__cuda_ndarray__", False):
        return False
    interface = getattr(obj, "__cuda_array_interface__", None)
    data = interface.get("data") if interface else None
    return bool(data and data[1])
