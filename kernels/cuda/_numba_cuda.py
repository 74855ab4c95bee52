"""The one place that imports a Numba CUDA target: decorator policy, scalar math, device arrays.

Everything else in ``fastbp.kernels.cuda`` takes ``cuda``, ``kernel``,
``device``, ``configure`` and ``as_device_array`` from here, so moving the GPU
backend to another Numba CUDA target means editing this module alone. It
prefers numba-cuda-mlir, NVIDIA's successor to numba-cuda (in maintenance
since mid-2026), when that is installed and usable on a GPU, and uses
numba-cuda otherwise and always under the simulator (``choose_target``). The
kernels keep to the subset of CUDA Python that both compile: ``cuda.grid``,
``cuda.shared.array``, ``cuda.syncthreads``, device functions and scalar math.

Importing it compiles nothing. It registers every scalar function of
``kernels/_scalar.py`` (``_jit.SCALAR_FUNCTIONS``: relu, sigmoid, activate,
activate_grad, gelu_grad, log1p_exp, hash_uniform, ...) for the CUDA target,
so the GPU kernels call the very same formulas as the CPU kernels.
"""
import importlib
import importlib.util
import os
import sys
import threading
import warnings

import numpy as np

_TARGETS = ("numba-cuda-mlir", "numba-cuda")


def _import_mlir():
    """numba-cuda-mlir's (cuda, config, performance warning, register_jitable), or an ImportError.

    NVIDIA's successor to numba-cuda compiles the same kernels through MLIR; it has
    no simulator, and its extension API differs, so every name fastbp needs is
    looked up here and a missing one counts as "not usable".
    """
    from numba_cuda_mlir import cuda as mlir_cuda

    extending = importlib.import_module("numba_cuda_mlir.cuda.extending")
    errors = importlib.import_module("numba_cuda_mlir.cuda.core.errors")
    config = importlib.import_module("numba_cuda_mlir.cuda.core.config")
    if not mlir_cuda.is_available():
        raise ImportError("numba-cuda-mlir is installed but finds no usable GPU")
    return mlir_cuda, config, errors.NumbaPerformanceWarning, extending.register_jitable


def _import_numba_cuda():
    # numba 0.6x still ships a deprecated built-in ``numba.cuda`` that imports
    # without numba-cuda and behaves differently: insist on the real package.
    if importlib.util.find_spec("numba_cuda") is None:
        raise ImportError(
            "fastbp.kernels.cuda needs the numba-cuda package (NVIDIA's CUDA target for Numba); "
            "install it with: pip install fastbp[cuda]"
        )
    try:
        from numba import cuda as numba_cuda
        from numba.cuda.core import config
        from numba.cuda.core.errors import NumbaPerformanceWarning as performance_warning
        from numba.cuda.extending import register_jitable as jitable
    except ImportError as exc:  # numba-cuda present but broken, e.g. no CUDA Python bindings
        raise ImportError(
            f"fastbp.kernels.cuda could not import numba-cuda ({exc}); "
            "reinstall it with: pip install fastbp[cuda]"
        ) from exc
    return numba_cuda, config, performance_warning, jitable


def choose_target(environ=os.environ, find_spec=importlib.util.find_spec):
    """Which Numba CUDA target to import: 'numba-cuda-mlir' or 'numba-cuda'.

    FASTBP_CUDA_TARGET names one explicitly. Otherwise numba-cuda-mlir when it is
    installed, except under the simulator (NUMBA_ENABLE_CUDASIM=1), which only
    numba-cuda has; numba-cuda stays the fallback when numba-cuda-mlir cannot be
    used (see ``TARGET_NOTE``).
    """
    asked = environ.get("FASTBP_CUDA_TARGET", "")
    if asked:
        if asked not in _TARGETS:
            raise ImportError(f"FASTBP_CUDA_TARGET must be one of {_TARGETS}; got {asked!r}")
        return asked
    if environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1":
        return "numba-cuda"
    return "numba-cuda-mlir" if find_spec("numba_cuda_mlir") is not None else "numba-cuda"


# The target in use, and why when it is not the one preferred.
TARGET = choose_target()
TARGET_NOTE = ""
if TARGET == "numba-cuda-mlir":
    try:
        cuda, _config, NumbaPerformanceWarning, register_jitable = _import_mlir()
    except Exception as exc:  # noqa: BLE001 - any failure means: use numba-cuda
        if os.environ.get("FASTBP_CUDA_TARGET") == "numba-cuda-mlir":
            raise ImportError(f"FASTBP_CUDA_TARGET=numba-cuda-mlir, but it cannot be used: {exc}") from exc
        TARGET, TARGET_NOTE = "numba-cuda", f"numba-cuda-mlir not usable ({exc}); using numba-cuda"
if TARGET == "numba-cuda":
    cuda, _config, NumbaPerformanceWarning, register_jitable = _import_numba_cuda()

from .. import _cache
from .._jit import SCALAR_FUNCTIONS

# True under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where every GPU
# thread runs as Python: what the tests use on machines without a GPU.
SIMULATOR = bool(_config.ENABLE_CUDASIM)


def _serialize_simulated_shared_arrays():
    """Make the simulator's ``cuda.shared.array`` give every thread of a block the same array.

    The simulator runs a block's threads as Python threads and hands out shared
    arrays from a dict keyed by the calling line: look up, and on a miss
    allocate and store. Nothing guards that, so when the interpreter switches
    threads between the look-up and the store, two threads allocate their own
    "shared" array. A block reduction then reads uninitialized memory: in CI a
    weighted loss summed its weights to a denormal and the step diverged. This
    replaces the method with the same look-up under a lock. The simulator only;
    a GPU's shared memory has no such step.
    """
    from numba.cuda.simulator import kernelapi

    shared = kernelapi.FakeCUDAShared
    if getattr(shared.array, "fastbp_serialized", False):
        return
    unguarded = shared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:
            return unguarded(self, shape, dtype, alignment)  # an error, or the one dynamic buffer
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)  # the simulator's key: file and line
        if isinstance(dtype, kernelapi.types.Type):
            dtype = kernelapi.numpy_support.as_dtype(dtype)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                found = self._allocations[key] = np.empty(shape, dtype)
        return found

    array.fastbp_serialized = True
    shared.array = array


if SIMULATOR:
    _serialize_simulated_shared_arrays()

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
    # fastbp's cache locator plugs into numba-cuda's cache classes; under numba-cuda-mlir
    # kernels compile once per process rather than cache beside the installed sources.
    return _cache.enable_cuda(compiled) if TARGET == "numba-cuda" and not SIMULATOR else compiled


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

    Parameters
    ----------
    obj : object
        A numba device array, an object with ``__cuda_array_interface__``, or anything else.

    Returns
    -------
    DeviceNDArray or None
        The device array viewing ``obj``'s memory, or None when ``obj`` is not on the device.
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
