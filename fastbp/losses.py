"""Losses by name or object: what targets they take and how outputs map to predictions.

The math is in ``fastbp.kernels`` (``*_forward``/``*_backward``); a loss object
here validates targets, names its metrics and knows its output link (the
softmax or sigmoid that turns logits into probabilities).
"""
import math

import numpy as np

from .kernels import registry
from .lowering import LossSpec


class Loss:
    """Base class of the losses: name, kernel code, output link, metrics and target checks."""

    name = ""
    kind = -1
    link = None  # activation fused into the loss: 'softmax', 'sigmoid' or None
    metrics = ()
    classification = False

    def get_config(self):
        return {"name": self.name}

    def spec(self):
        """The ``LossSpec`` the compiled loops and the kernels take: code and parameter."""
        return LossSpec(self.kind, float(getattr(self, "param", 0.0)))

    def __repr__(self):
        return f"{type(self).__name__}()"

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self), tuple(sorted(self.get_config().items()))))


class SoftmaxCrossEntropy(Loss):
    """Softmax cross-entropy from logits with integer class labels in [0, O)."""

    kind = registry.LOSS_SCE
    name, link = registry.LOSS_TABLE[kind].name, registry.LOSS_TABLE[kind].link
    metrics = ("accuracy",)
    classification = True

    def prepare_targets(self, y, n_outputs, argument="y"):
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]
        if y.ndim != 1:
            # Keras's categorical_crossentropy takes one-hot rows; this loss takes their labels.
            hint = (f": for one-hot rows pass {argument}.argmax(axis=1)" if y.ndim == 2 and _one_hot(y)
                    else "")
            raise ValueError(f"{argument} must be a 1-D array of integer class labels for "
                             f"{self.name}; got shape {y.shape}{hint}")
        if y.dtype.kind == "f":
            if not np.all(np.isfinite(y)) or np.any(y != np.round(y)):
                raise ValueError(f"{argument} must hold integer class labels for {self.name}; "
                                 f"got non-integer values such as {y[y != np.round(y)][:3]}")
        elif y.dtype.kind not in "iub":
            raise ValueError(f"{argument} must hold integer class labels for {self.name}; "
                             f"got dtype {y.dtype}")
        # The range is checked on the values as given: cast first, 2**63 or 1e20 would wrap
        # to a negative int64 and be reported as such.
        if y.size and (y.min() < 0 or y.max() >= n_outputs):
            bad = y.min() if y.min() < 0 else y.max()
            raise ValueError(f"{argument} holds label {int(bad.item())}, outside [0, {n_outputs}) for a "
                             f"network with {n_outputs} outputs")
        return y.astype(np.int64)


def _one_hot(y):
    return y.dtype.kind in "iufb" and bool(np.all((y == 0) | (y == 1))) and bool(np.all(y.sum(axis=1) == 1))


class BinaryCrossEntropy(Loss):
    """Binary cross-entropy from logits with 0/1 targets of shape (N, O) (or (N,) when O = 1)."""

    kind = registry.LOSS_BCE
    name, link = registry.LOSS_TABLE[kind].name, registry.LOSS_TABLE[kind].link
    metrics = ("accuracy",)
    classification = True

    def prepare_targets(self, y, n_outputs, argument="y"):
        y = _as_2d_targets(y, n_outputs, self.name, argument)
        if np.any((y < 0) | (y > 1)):
            raise ValueError(f"{argument} must hold targets in [0, 1] for {self.name}; got values "
                             f"in [{y.min()}, {y.max()}]")
        return y


class MeanSquaredError(Loss):
    """Mean squared error over all outputs; targets (N, O) (or (N,) when O = 1)."""

    kind = registry.LOSS_MSE
    name = registry.LOSS_TABLE[kind].name
    metrics = ("mse", "mae")

    def prepare_targets(self, y, n_outputs, argument="y"):
        return _as_2d_targets(y, n_outputs, self.name, argument)


class Poisson(Loss):
    """Poisson loss with the log link: the network outputs eta, the log of the predicted mean.

    Loss exp(eta) - y eta per output, averaged over outputs and (weighted) samples:
    the Poisson negative log-likelihood without log(y!), scikit-learn's
    ``HalfPoissonLoss``. Targets (N, O) (or (N,) when O = 1), finite and >= 0.
    ``predict`` returns the mean exp(eta); the metric is ``mae`` of that mean.
    """

    kind = registry.LOSS_POISSON
    name = registry.LOSS_TABLE[kind].name
    metrics = ("mae",)

    def prepare_targets(self, y, n_outputs, argument="y"):
        y = _as_2d_targets(y, n_outputs, self.name, argument)
        if np.any(y < 0):
            raise ValueError(f"{argument} must hold targets >= 0 for {self.name} (counts or rates); "
                             f"got values down to {y.min()}")
        return y


class Huber(Loss):
    """Huber loss, PyTorch's ``HuberLoss(delta=...)`` (reduction 'mean').

    With d = out - y, d^2 / 2 where abs(d) <= delta and delta (abs(d) - delta / 2) beyond, averaged
    over outputs and (weighted) samples. Quadratic near the target, linear in the tails:
    robust to outliers. Targets (N, O) (or (N,) when O = 1). Metrics ``mse`` and ``mae``.

    Parameters
    ----------
    delta : float, default 1.0
        Where the loss turns from quadratic to linear, > 0.

    Raises
    ------
    ValueError
        A delta that is not a finite number > 0.
    """

    kind = registry.LOSS_HUBER
    name = registry.LOSS_TABLE[kind].name
    metrics = ("mse", "mae")

    def __init__(self, delta=registry.LOSS_TABLE[registry.LOSS_HUBER].param):
        if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not (
                delta > 0 and math.isfinite(delta)):
            raise ValueError(f"delta must be a finite number > 0; got {delta!r}")
        self.delta = float(delta)

    @property
    def param(self):
        return self.delta

    def get_config(self):
        return {"name": self.name, "delta": self.delta}

    def __repr__(self):
        return f"Huber(delta={self.delta!r})"

    def prepare_targets(self, y, n_outputs, argument="y"):
        return _as_2d_targets(y, n_outputs, self.name, argument)


class MeanAbsoluteError(Loss):
    """Mean absolute error abs(out - y) over all outputs (PyTorch's ``L1Loss``, Keras's ``mae``).

    Its gradient is sign(out - y) / (O sum_n s_n) per sample, 0 where out == y
    exactly (a subgradient, as PyTorch's). Targets (N, O) (or (N,) when O = 1).
    """

    kind = registry.LOSS_MAE
    name = registry.LOSS_TABLE[kind].name
    metrics = ("mse", "mae")

    def prepare_targets(self, y, n_outputs, argument="y"):
        return _as_2d_targets(y, n_outputs, self.name, argument)


def _as_2d_targets(y, n_outputs, loss_name, argument):
    y = np.asarray(y)
    if y.dtype.kind not in "iufb":
        raise ValueError(f"{argument} must be numeric for {loss_name}; got dtype {y.dtype}")
    if y.ndim == 1 and n_outputs == 1:
        y = y[:, None]
    if y.ndim != 2 or y.shape[1] != n_outputs:
        raise ValueError(f"{argument} must have shape (n_samples, {n_outputs}) for {loss_name} on a "
                         f"network with {n_outputs} outputs; got shape {y.shape}")
    y = y.astype(np.float64)
    if not np.all(np.isfinite(y)):
        raise ValueError(f"{argument} contains NaN or inf")
    return y


# Every spelling users bring, from Keras, PyTorch and scikit-learn, normalized by _key:
# lower case without "_", "-" or spaces, so "CrossEntropyLoss", "cross-entropy" and
# "cross_entropy" are one name.
_ALIASES = (
    (SoftmaxCrossEntropy, ("softmax_cross_entropy", "cross_entropy", "crossentropy", "ce",
                           "categorical_crossentropy", "sparse_categorical_crossentropy",
                           "CrossEntropyLoss", "log_loss")),
    (BinaryCrossEntropy, ("binary_cross_entropy", "binary_crossentropy", "bce", "bce_with_logits",
                          "binary_cross_entropy_with_logits", "BCEWithLogitsLoss")),
    (MeanSquaredError, ("mse", "mean_squared_error", "squared_error", "squared_loss", "l2", "MSELoss")),
    (Poisson, ("poisson", "PoissonNLLLoss")),
    (Huber, ("huber", "huber_loss", "HuberLoss")),
    (MeanAbsoluteError, ("mae", "mean_absolute_error", "absolute_error", "l1", "L1Loss")),
)


def _key(name):
    return name.lower().replace("_", "").replace("-", "").replace(" ", "")


_BY_NAME = {_key(alias): cls for cls, aliases in _ALIASES for alias in aliases}


def get(loss):
    """A Loss from a name or a Loss instance.

    Parameters
    ----------
    loss : str or Loss
        A ``Loss``, or a name in any of the spellings of ``_ALIASES`` (Keras's
        "categorical_crossentropy", PyTorch's "CrossEntropyLoss", "bce", "l1", "l2", ...),
        case, "_", "-" and spaces aside.

    Returns
    -------
    Loss

    Raises
    ------
    ValueError
        For a name that is none of these, listing the names.
    """
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, str) and _key(loss) in _BY_NAME:
        return _BY_NAME[_key(loss)]()
    names = ", ".join(f"{cls.name!r} (or {', '.join(repr(a) for a in aliases if a != cls.name)})"
                      for cls, aliases in _ALIASES)
    raise ValueError(f"unknown loss {loss!r}; expected a fastbp.losses.Loss or one of {names}")


def from_config(config):
    """The Loss of a ``get_config()`` record (a saved model's); a bare name is accepted too."""
    if isinstance(config, str):
        return get(config)
    config = dict(config)
    loss = get(config.pop("name"))
    return type(loss)(**config) if config else loss
