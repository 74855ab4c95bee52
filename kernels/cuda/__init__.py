"""fastbp.kernels.cuda: the GPU half of the kernels, written with numba-cuda.

The same public names, argument order and conventions as ``fastbp.kernels``
(outputs first, gradients overwritten, the batch mean only in the loss
backward, a zero-size dx skips the input gradient, dz may alias dout), taking
device arrays: numba device arrays or any object with
``__cuda_array_interface__`` (CuPy arrays, PyTorch CUDA tensors), used in
place without copying. Loss forwards write the mean into a device array of
shape (1,) and return without waiting for the device.

Each name is a launcher: a Python function that looks up the launch
configuration cached for the shapes and launches the ``@cuda.jit`` kernels on
the default stream; kernels compile for a dtype on first launch (and are
cached on disk). The names here check their arguments once per call, with the
CPU specs and messages (shape, dtype, contiguity, on the device), and raise
``KernelArgumentError`` naming the argument; checking class labels and sample
weights copies those to the host, which waits for the device. ``f.unchecked``
(also ``fastbp.kernels.cuda.dense.dense_forward`` and so on) skips the checks
for a training loop that validated once.

Importing this needs numba-cuda (``pip install fastbp[cuda]``), not a GPU:
with ``NUMBA_ENABLE_CUDASIM=1`` the kernels run in numba's CUDA simulator.
``fastbp.kernels`` never imports this package.
"""
from . import _numba_cuda  # noqa: F401  (first: raises ImportError without numba-cuda)
from . import activations, dense, dropout, losses, optim
from .. import _SPECS
from .._checks import KernelArgumentError
from .._scalar import ACTIVATION_CODES as ACTIVATIONS
from ._checks import public
from ._numba_cuda import SIMULATOR, as_device_array

_MODULES = (dense, activations, losses, dropout, optim)


def _launcher(name):
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"fastbp.kernels.cuda has no launcher for {name}")


for _name, (_spec, _n_out) in _SPECS.items():
    globals()[_name] = public(_launcher(_name), _spec, _n_out)

__all__ = ["ACTIVATIONS", "KernelArgumentError", "SIMULATOR", "as_device_array", *_SPECS]
del _name, _spec, _n_out
