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


def from_sklearn(estimator):
    """fastbp's MLPClassifier or MLPRegressor with a fitted scikit-learn estimator's weights and state.

    Every constructor parameter of scikit-learn's estimator that fastbp's has
    is copied; ``dtype`` follows the weights' (float64, or float32 for a
    network scikit-learn fitted on float32 data); ``device`` is 'cpu'. The
    weights, ``classes_`` and the fitted attributes (``n_iter_``,
    ``loss_curve_``, ``best_loss_``, ...) are copies, so the two estimators
    train on independently. The optimizer's state (Adam's moments, SGD's
    velocity) is not carried over: the first ``partial_fit`` starts a fresh
    optimizer from these weights, as scikit-learn's own ``fit`` would.

    Parameters
    ----------
    estimator : sklearn.neural_network.MLPClassifier or MLPRegressor
        A fitted scikit-learn estimator.

    Returns
    -------
    fastbp.MLPClassifier or fastbp.MLPRegressor
        The fastbp estimator, fitted, predicting as ``estimator`` does.

    Raises
    ------
    ImportError
        scikit-learn is not installed.
    TypeError
        ``estimator`` is not a scikit-learn MLP.
    ValueError
        Weights of another dtype than float32 or float64, an output activation or layer
        count that its targets do not give, or ``coefs_`` or ``intercepts_`` that are not
        finite.
    """
    # Here and not imported from fastbp.estimators, which imports scikit-learn as it loads:
    # importing fastbp, or naming fastbp.from_sklearn, must not.
    try:
        from .estimators import from_sklearn as convert
    except ImportError as err:
        raise ImportError(f"fastbp.from_sklearn needs scikit-learn: pip install 'fastbp[sklearn]' "
                          f"({err})") from err
    return convert(estimator)


def __getattr__(name):
    # The scikit-learn estimators load on first use, so that importing fastbp never
    # imports scikit-learn (an optional extra).
    if name in ("MLPClassifier", "MLPRegressor"):
        from . import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'fastbp' has no attribute {name!r}")
