"""Layers of a ``Sequential`` model: Dense, activation layers, Dropout, BatchNorm and LayerNorm.

Layers describe the network; they hold no math. ``fastbp.lowering`` lowers
them to the op arrays both backends run, and the kernels do the work.
"""
import math

import numpy as np

from ._validation import (check_bool, check_finite, check_fraction, check_in_range, check_int, check_positive,
                          check_real)
from .kernels.registry import ACTIVATION_BY_NAME, ACTIVATIONS, OUTPUT_DERIVABLE

_ALIASES = {None: "identity", "linear": "identity", "none": "identity", "logistic": "sigmoid"}
INITIALIZERS = ("he_uniform", "he_normal", "glorot_uniform", "glorot_normal", "zeros")


def activation_name(activation, argument="activation"):
    """The canonical name of an activation, or a ValueError naming the argument."""
    name = _ALIASES.get(activation, activation)
    if not isinstance(name, str) or name not in ACTIVATIONS:
        raise ValueError(f"unknown {argument} {activation!r}; expected one of "
                         f"{sorted(ACTIVATIONS)} (or None/'linear')")
    return name


class Layer:
    """Base class: a layer knows its config and, if it has any, its parameter shapes."""

    def get_config(self):
        raise NotImplementedError

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def _check_alpha(activation, alpha):
    """The activation parameter, checked where the output-based derivative depends on it."""
    entry = ACTIVATION_BY_NAME[activation]
    alpha = float(entry.alpha or 0.0) if alpha is None else check_real(alpha, "alpha")
    if entry.alpha_rule == "nonneg" and not alpha >= 0.0:
        raise ValueError(f"alpha (the {activation} parameter) must be >= 0; got {alpha!r}")
    if entry.alpha_rule == "positive" and not alpha > 0.0:
        raise ValueError(f"alpha (the {activation} parameter) must be > 0; got {alpha!r}")
    return alpha


class Dense(Layer):
    """Fully connected layer out = f(x @ W + b), W (in_features, out_features).

    ``activation`` is fused into the dense kernels when its derivative follows
    from the output (every activation but GELU, SiLU, softmax and log-softmax,
    which run as a separate pass).

    ``Dense(out_features)``, with one size, leaves ``in_features`` to be inferred,
    as Keras's ``Dense(units)`` and PyTorch's ``LazyLinear``: from the layer before
    it when the model is made, or, for the first layer, from the data at the
    model's first ``fit``.

    Parameters
    ----------
    in_features : int or None, default None
        I, the width of the input x (N, I). Given alone (``Dense(32)``), the one number is
        ``out_features`` and ``in_features`` is inferred; None infers it too.
    out_features : int, default None
        O, the width of the output (N, O). Required, as the second size or the only one.
    activation : str or None, default None
        A name of ``fastbp.kernels.ACTIVATIONS`` ('relu', 'tanh', 'gelu', ...); None,
        'linear' or 'none' for no activation, 'logistic' for 'sigmoid'.
    init : str or None, default None
        The weight initializer: 'he_uniform', 'he_normal', 'glorot_uniform',
        'glorot_normal' or 'zeros'. None: He uniform for relu, leaky_relu, elu and gelu,
        Glorot uniform otherwise.
    alpha : float or None, default None
        The activation's parameter: the leaky slope (0.01) or ELU's alpha (1.0).
    bias_init : float, default 0.0
        The biases' starting value, a finite number.

    Raises
    ------
    ValueError
        No size given, a width below 1, an unknown activation or initializer, an alpha out
        of the activation's range, or a bias_init that is not finite.
    TypeError
        A width that is not an integer, or an alpha or bias_init that is not a number.

    Examples
    --------
    >>> import fastbp
    >>> layer = fastbp.Dense(64, 32, activation="relu")
    >>> layer.init
    'he_uniform'
    >>> fastbp.Dense(10).in_features is None  # inferred from the layer before, or the data
    True
    """

    def __init__(self, in_features=None, out_features=None, activation=None, init=None, alpha=None,
                 bias_init=0.0):
        if out_features is None:
            # Dense(32): the one size given is the output's, as Keras's Dense(units).
            in_features, out_features = None, in_features
        if out_features is None:
            raise ValueError("Dense needs out_features: Dense(out_features) or Dense(in_features, "
                             "out_features); got neither")
        self.in_features = None if in_features is None else check_int(in_features, "in_features")
        self.out_features = check_int(out_features, "out_features")
        self.activation = activation_name(activation)
        self.alpha = _check_alpha(self.activation, alpha)
        if init is None:
            init = "he_uniform" if self.activation in ("relu", "leaky_relu", "elu", "gelu") else "glorot_uniform"
        if init not in INITIALIZERS:
            raise ValueError(f"unknown init {init!r}; expected one of {INITIALIZERS}")
        self.init = init
        self.bias_init = check_finite(bias_init, "bias_init")

    @property
    def fused(self):
        return ACTIVATIONS[self.activation] in OUTPUT_DERIVABLE

    def initial_weights(self, rng, dtype):
        fan_in, fan_out = self.in_features, self.out_features
        shape = (fan_in, fan_out)
        if self.init == "zeros":
            w = np.zeros(shape)
        elif self.init == "he_uniform":
            limit = math.sqrt(6.0 / fan_in)
            w = rng.uniform(-limit, limit, shape)
        elif self.init == "he_normal":
            w = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
        elif self.init == "glorot_uniform":
            limit = math.sqrt(6.0 / (fan_in + fan_out))
            w = rng.uniform(-limit, limit, shape)
        else:
            w = rng.normal(0.0, math.sqrt(2.0 / (fan_in + fan_out)), shape)
        return w.astype(dtype), np.full(fan_out, self.bias_init, dtype=dtype)

    def get_config(self):
        return dict(in_features=self.in_features, out_features=self.out_features,
                    activation=self.activation, init=self.init, alpha=self.alpha,
                    bias_init=self.bias_init)


class Activation(Layer):
    """A standalone activation layer, applied elementwise (or row-wise: softmax, log-softmax).

    Parameters
    ----------
    activation : str
        A name of ``fastbp.kernels.ACTIVATIONS``: 'identity', 'relu', 'leaky_relu', 'elu',
        'sigmoid', 'tanh', 'softplus', 'gelu', 'silu', 'selu', 'softmax' or 'log_softmax'.
    alpha : float or None, default None
        The activation's parameter where it has one: the leaky slope (0.01), ELU's alpha (1.0).

    Raises
    ------
    ValueError
        An unknown activation, or an alpha out of its range.
    TypeError
        An alpha that is not a number.
    """

    def __init__(self, activation, alpha=None):
        self.activation = activation_name(activation)
        self.alpha = _check_alpha(self.activation, alpha)

    def get_config(self):
        return dict(activation=self.activation, alpha=self.alpha)


def _activation_class(name):
    def __init__(self, alpha=None):
        Activation.__init__(self, name, alpha)

    def get_config(self):
        return {"alpha": self.alpha} if ACTIVATION_BY_NAME[name].alpha is not None else {}

    cls_name = "".join(part.capitalize() for part in name.split("_"))
    cls_name = {"Relu": "ReLU", "LeakyRelu": "LeakyReLU", "Elu": "ELU", "Gelu": "GELU",
                "Silu": "SiLU", "Selu": "SELU", "LogSoftmax": "LogSoftmax"}.get(cls_name, cls_name)
    has_alpha = ACTIVATION_BY_NAME[name].alpha is not None
    doc = (f"The {name} activation as a layer: ``Activation('{name}')``.\n\n"
           "    Parameters\n    ----------\n    alpha : float or None, default None\n"
           + (f"        The activation's parameter (default {ACTIVATION_BY_NAME[name].alpha}).\n"
              if has_alpha else "        Unused: this activation has no parameter.\n"))
    return type(cls_name, (Activation,), {"__init__": __init__, "get_config": get_config,
                                          "__doc__": doc, "__module__": __name__})


ReLU = _activation_class("relu")
LeakyReLU = _activation_class("leaky_relu")
ELU = _activation_class("elu")
Sigmoid = _activation_class("sigmoid")
Tanh = _activation_class("tanh")
Softplus = _activation_class("softplus")
GELU = _activation_class("gelu")
Softmax = _activation_class("softmax")
LogSoftmax = _activation_class("log_softmax")
SiLU = _activation_class("silu")
SELU = _activation_class("selu")


class Dropout(Layer):
    """Inverted dropout: zeroes each input with probability ``rate`` while training.

    Kept inputs are scaled by 1 / (1 - rate), so inference (``evaluate``, ``predict``,
    validation) passes the input through unchanged. The masks come from a counter-based
    hash of the fit's seed: the same on the CPU and the GPU, and whatever the thread count.

    Parameters
    ----------
    rate : float
        The probability of dropping an input, in [0, 1).

    Raises
    ------
    ValueError
        A rate outside [0, 1).
    TypeError
        A rate that is not a number.
    """

    def __init__(self, rate):
        self.rate = check_fraction(rate, "Dropout rate", 0, 1)

    def get_config(self):
        return dict(rate=self.rate)


class BatchNorm(Layer):
    """Batch normalization over the batch, PyTorch's ``BatchNorm1d`` on (N, num_features).

    In training the layer normalizes each feature with the batch's mean and
    biased variance, out = gamma (x - mean) / sqrt(var + eps) + beta, and
    updates running statistics, running = (1 - momentum) running + momentum
    batch statistic, with the unbiased variance; evaluate, predict and
    validation use the running statistics (mean 0, variance 1 at first).
    gamma (init 1) and beta (init 0) are trained parameters when ``affine``.

    A training batch needs at least two rows (one row has no variance), so
    ``fit`` refuses a batch_size that leaves a last batch of one sample, as
    PyTorch does when it meets that batch. Put it between a Dense layer without
    activation and the activation: ``Dense(i, o), BatchNorm(o), ReLU()``; the
    activation is then fused into the norm's kernels.

    Parameters
    ----------
    num_features : int
        O, the width of the layer's input (N, O).
    momentum : float, default 0.1
        The weight of each batch's statistics in the running statistics, in [0, 1].
    eps : float, default 1e-5
        Added to the variance before its square root.
    affine : bool, default True
        Learn a scale gamma and a shift beta per feature.

    Raises
    ------
    ValueError
        An argument out of its range.
    TypeError
        An argument of the wrong type (num_features not an integer, affine not a bool, ...).
    """

    def __init__(self, num_features, momentum=0.1, eps=1e-5, affine=True):
        self.num_features = check_int(num_features, "num_features")
        self.momentum = check_in_range(momentum, "momentum", 0, 1)
        self.eps = check_positive(eps, "eps")
        self.affine = check_bool(affine, "affine")

    def get_config(self):
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps,
                    affine=self.affine)


class LayerNorm(Layer):
    """Layer normalization of each sample over its num_features features, PyTorch's ``LayerNorm``.

    out = gamma (x - mean) / sqrt(var + eps) + beta with the row's mean and
    biased variance, the same in training and inference; gamma (init 1) and
    beta (init 0) are trained parameters when ``affine``. Any batch size.

    Parameters
    ----------
    num_features : int
        O, the width of the layer's input (N, O).
    eps : float, default 1e-5
        Added to the variance before its square root.
    affine : bool, default True
        Learn a scale gamma and a shift beta per feature.

    Raises
    ------
    ValueError
        An argument out of its range.
    TypeError
        An argument of the wrong type (num_features not an integer, affine not a bool, ...).
    """

    def __init__(self, num_features, eps=1e-5, affine=True):
        self.num_features = check_int(num_features, "num_features")
        self.eps = check_positive(eps, "eps")
        self.affine = check_bool(affine, "affine")

    def get_config(self):
        return dict(num_features=self.num_features, eps=self.eps, affine=self.affine)


NORM_LAYERS = (BatchNorm, LayerNorm)

LAYER_TYPES = {cls.__name__: cls for cls in
               (Dense, Activation, Dropout, ReLU, LeakyReLU, ELU, Sigmoid, Tanh, Softplus, GELU,
                Softmax, LogSoftmax, SiLU, SELU, BatchNorm, LayerNorm)}


def layer_from_config(kind, config):
    if kind not in LAYER_TYPES:
        raise ValueError(f"unknown layer type {kind!r} in the saved architecture")
    return LAYER_TYPES[kind].from_config(config)
