"""fastbp: hand-derived backpropagation compiled just in time with numba.

Build a ``Sequential`` of ``Dense`` (and activation, ``Dropout``, ``BatchNorm``,
``LayerNorm``) layers, ``fit`` it with ``SGD``, ``Adam``, ``RMSprop`` or ``Adagrad``, then
``predict``, ``evaluate``, ``save`` and ``fastbp.load``. The kernels are in ``fastbp.kernels``; scikit-learn style
estimators are ``fastbp.MLPClassifier`` and ``fastbp.MLPRegressor``, and
``fastbp.from_sklearn`` makes one of a fitted scikit-learn MLP.
Importing fastbp compiles nothing.
"""
from ._version import __version__  # noqa: F401
from . import callbacks, datasets, layers, losses, optimizers, schedules  # noqa: E402
from .callbacks import (Callback, EarlyStopping, History, LearningRateLogger, ModelCheckpoint,  # noqa: E402
                        MonitorError)
from ._gradcheck import GradcheckError, GradcheckResult, gradcheck, gradcheck_pair  # noqa: E402
from .interop import from_sklearn  # noqa: E402 (imports scikit-learn when called, not here)
from .layers import (ELU, GELU, SELU, Activation, BatchNorm, Dense, Dropout, LayerNorm, LeakyReLU,  # noqa: E402
                     LogSoftmax, ReLU, Sigmoid, SiLU, Softmax, Softplus, Tanh)
from .model import DivergenceError, Sequential, load  # noqa: E402
from .optimizers import SGD, Adagrad, Adam, RMSprop  # noqa: E402
from .schedules import CosineDecay, ExponentialDecay, ReduceLROnPlateau, StepDecay  # noqa: E402
from ._threads import get_num_threads, set_num_threads  # noqa: E402
from ._mpi import DataMismatchError, abort_on_error  # noqa: E402 (imports mpi4py when called, not here)
from ._first_run import CompileWarning  # noqa: E402

# The public names, each documented in the API reference (docs/api/fastbp.rst; tests/test_docs.py
# checks that none is missing there). The submodules (fastbp.datasets, fastbp.losses, ...) are public too.
__all__ = [
    "Sequential", "load", "DivergenceError",
    "Dense", "Activation", "ReLU", "LeakyReLU", "ELU", "Sigmoid", "Tanh", "Softplus", "GELU", "SiLU",
    "SELU", "Softmax", "LogSoftmax", "Dropout", "BatchNorm", "LayerNorm",
    "SGD", "Adam", "RMSprop", "Adagrad",
    "StepDecay", "ExponentialDecay", "CosineDecay", "ReduceLROnPlateau",
    "Callback", "EarlyStopping", "ModelCheckpoint", "LearningRateLogger", "History", "MonitorError",
    "MLPClassifier", "MLPRegressor", "from_sklearn",
    "gradcheck", "gradcheck_pair", "GradcheckResult", "GradcheckError",
    "set_num_threads", "get_num_threads",
    "abort_on_error", "DataMismatchError",
    "CompileWarning",
]


def __getattr__(name):
    # The scikit-learn estimators load on first use, so that importing fastbp never
    # imports scikit-learn (an optional extra).
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
