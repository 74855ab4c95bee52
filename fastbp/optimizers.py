"""Optimizers: their hyperparameters and state; the updates are kernels.

Each updates every parameter of the model in one kernel call over the flat
parameter vector (weights, then biases). Weight decay applies to the weights
only, as scikit-learn's ``alpha`` does.
"""

import numpy as np

from . import schedules
from ._validation import check_fraction, check_nonnegative, check_positive, check_real
from .kernels import registry


def _betas(betas):
    """Adam's (beta1, beta2): TypeError unless a pair of numbers, ValueError unless each in [0, 1)."""
    if isinstance(betas, (str, bytes)) or not isinstance(betas, (tuple, list, np.ndarray)) or len(betas) != 2:
        raise TypeError(f"betas must be a pair of numbers (beta1, beta2); got {betas!r}")
    pair = tuple(check_real(b, "betas") for b in betas)
    if not all(0 <= b < 1 for b in pair):
        raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
    return pair


class Optimizer:
    kind = -1
    n_states = 0

    def __init__(self, lr):
        self.schedule = schedules.get(lr)
        self.state = None  # list of arrays shaped like the flat parameter vector
        self.steps = 0

    @property
    def lr(self):
        return self.schedule.lr

    # Each state array's length in units of the parameter count (RMSprop keeps two
    # buffers in its second array); None: n_states arrays of one parameter count each.
    state_sizes = None

    # Which state arrays must stay >= 0: the update takes their square root.
    nonnegative_states = ()

    def state_lengths(self, size):
        """The length of each state array for ``size`` parameters, in order."""
        return [k * size for k in (self.state_sizes or (1,) * max(self.n_states, 1))]

    def state_problem(self, size, dtype):
        """None if ``state`` is what the update kernel is promised for ``size`` parameters of
        ``dtype`` (count, length, dtype, C-contiguous 1-D), else what is wrong, in words."""
        lengths = self.state_lengths(size)
        if not isinstance(self.state, (list, tuple)) or len(self.state) != len(lengths):
            count = len(self.state) if isinstance(self.state, (list, tuple)) else type(self.state).__name__
            return f"{type(self).__name__} keeps {len(lengths)} state array(s); got {count}"
        for i, (array, length) in enumerate(zip(self.state, lengths)):
            if (not isinstance(array, np.ndarray) or array.shape != (length,) or array.dtype != dtype
                    or not array.flags.c_contiguous or not array.flags.writeable):
                got = (f"shape {array.shape}, dtype {array.dtype}" if isinstance(array, np.ndarray)
                       else type(array).__name__)
                return (f"state[{i}] must be a writeable C-contiguous {np.dtype(dtype)} array of shape "
                        f"({length},); got {got}")
        return None

    def init_state(self, size, dtype):
        """Fresh state for ``size`` parameters of ``dtype``, unless the state held fits them.

        State of another size or dtype (the optimizer used on another model before) starts
        over; state whose first array fits but whose others do not is refused: the update
        kernel would run past their ends.
        """
        fresh = (self.state is None or not isinstance(self.state, (list, tuple)) or not self.state
                 or not isinstance(self.state[0], np.ndarray) or self.state[0].size != size
                 or self.state[0].dtype != dtype)
        if fresh:
            self.state = [np.full(n, self.initial_state, dtype=dtype) if i == 0 else
                          np.zeros(n, dtype=dtype) for i, n in enumerate(self.state_lengths(size))]
            self.steps = 0
            return
        problem = self.state_problem(size, dtype)
        if problem is not None:
            raise ValueError(f"the optimizer's state does not fit the model's {size} parameters: {problem}")

    initial_state = 0.0  # the first state array's starting value (Adagrad's accumulator)

    def hyper(self, lr):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    PyTorch's formulation: g = grad + weight_decay * param (weights only);
    v = momentum v + g; the step is lr * v (lr * (g + momentum v) with Nesterov).

    Parameters
    ----------
    lr : float, Schedule or callable, default 0.01
        The learning rate: a number > 0, a schedule of ``fastbp.schedules``
        (``StepDecay``, ...) or a function ``f(epoch) -> lr``.
    momentum : float, default 0.0
        Momentum factor in [0, 1).
    nesterov : bool, default False
        Nesterov momentum (needs momentum > 0).
    weight_decay : float, default 0.0
        L2 penalty on the weights, >= 0.

    Raises
    ------
    ValueError
        A hyperparameter out of its range, named in the message.
    TypeError
        A hyperparameter that is not a number, named in the message.
    """

    kind = registry.OPT_SGD
    n_states = 1

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = check_nonnegative(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")

    def hyper(self, lr):
        h = np.zeros(registry.N_HYPER)
        h[registry.H_LR] = lr
        h[registry.H_MOMENTUM] = self.momentum
        h[registry.H_NESTEROV] = self.nesterov
        h[registry.H_WEIGHT_DECAY] = self.weight_decay
        return h

    def get_config(self):
        return dict(type="SGD", momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam; with ``decoupled=True`` and weight_decay > 0 it is AdamW.

    ``eps`` is added to the bias-corrected sqrt(v_hat), as PyTorch adds it; with
    ``eps_hat=True`` to the uncorrected sqrt(v) instead, the paper's epsilon-hat,
    as Keras, TensorFlow and scikit-learn add theirs (the same eps then weighs
    up to 1 / sqrt(1 - beta2) times more in the first steps).

    Parameters
    ----------
    lr : float, Schedule or callable, default 0.001
        The learning rate: a number > 0, a schedule of ``fastbp.schedules``
        (``StepDecay``, ...) or a function ``f(epoch) -> lr``.
    betas : tuple of two floats, default (0.9, 0.999)
        Decay rates of the first and second moments, each in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    weight_decay : float, default 0.0
        Weight decay on the weights, >= 0: an L2 gradient term, or decoupled.
    decoupled : bool, default False
        Decoupled weight decay (AdamW): param = param (1 - lr weight_decay) before each step.
    eps_hat : bool, default False
        Add eps to the uncorrected sqrt(v), as Keras and scikit-learn do.

    Raises
    ------
    ValueError
        A hyperparameter out of its range, named in the message.
    TypeError
        A hyperparameter that is not a number, named in the message.
    """

    kind = registry.OPT_ADAM
    n_states = 2
    nonnegative_states = (1,)  # v

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False,
                 eps_hat=False):
        super().__init__(lr)
        self.betas = _betas(betas)
        # An infinite eps never moves a weight; NaN would make every weight NaN.
        self.eps = check_positive(eps, "eps")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        self.decoupled = bool(decoupled)
        self.eps_hat = bool(eps_hat)

    def hyper(self, lr):
        h = np.zeros(registry.N_HYPER)
        h[registry.H_LR] = lr
        h[registry.H_WEIGHT_DECAY] = self.weight_decay
        h[registry.H_BETA1], h[registry.H_BETA2] = self.betas
        h[registry.H_EPS] = self.eps
        h[registry.H_DECOUPLED] = self.decoupled
        h[registry.H_EPS_HAT] = self.eps_hat
        return h

    def get_config(self):
        return dict(type="Adam", betas=list(self.betas), eps=self.eps,
                    weight_decay=self.weight_decay, decoupled=self.decoupled, eps_hat=self.eps_hat)


class RMSprop(Optimizer):
    """RMSprop, PyTorch's ``torch.optim.RMSprop`` formulation and defaults.

    v = alpha v + (1 - alpha) g^2 per parameter; the step is g / (sqrt(v) + eps),
    with ``centered=True`` g / (sqrt(v - gbar^2) + eps) where gbar is the running
    mean of g; with momentum the step goes through a buffer b = momentum b + step.
    State: the square average, then the momentum buffer and the gradient average
    (one array of twice the parameter count), saved and loaded with the model.

    Parameters
    ----------
    lr : float, Schedule or callable, default 0.01
        The learning rate: a number > 0, a schedule of ``fastbp.schedules``
        (``StepDecay``, ...) or a function ``f(epoch) -> lr``.
    alpha : float, default 0.99
        Decay rate of the squared-gradient average, in [0, 1).
    eps : float, default 1e-8
        Added to the denominator, > 0.
    momentum : float, default 0.0
        Momentum factor, >= 0.
    centered : bool, default False
        Normalize by the estimated variance of the gradient.
    weight_decay : float, default 0.0
        L2 penalty on the weights, >= 0.

    Raises
    ------
    ValueError
        A hyperparameter out of its range, named in the message.
    TypeError
        A hyperparameter that is not a number, named in the message.
    """

    kind = registry.OPT_RMSPROP
    n_states = 2
    state_sizes = (1, 2)
    nonnegative_states = (0,)  # the square average

    def __init__(self, lr=0.01, alpha=0.99, eps=1e-8, momentum=0.0, centered=False, weight_decay=0.0):
        super().__init__(lr)
        self.alpha = check_fraction(alpha, "alpha", 0, 1)
        self.eps = check_positive(eps, "eps")
        self.momentum = check_nonnegative(momentum, "momentum")
        self.centered = bool(centered)
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")

    def hyper(self, lr):
        h = np.zeros(registry.N_HYPER)
        h[registry.H_LR] = lr
        h[registry.H_ALPHA] = self.alpha
        h[registry.H_EPS] = self.eps
        h[registry.H_MOMENTUM] = self.momentum
        h[registry.H_CENTERED] = self.centered
        h[registry.H_WEIGHT_DECAY] = self.weight_decay
        return h

    def get_config(self):
        return dict(type="RMSprop", alpha=self.alpha, eps=self.eps, momentum=self.momentum,
                    centered=self.centered, weight_decay=self.weight_decay)


class Adagrad(Optimizer):
    """Adagrad, PyTorch's ``torch.optim.Adagrad`` formulation and defaults.

    s += g^2 per parameter (s starts at ``initial_accumulator_value``); the step
    is lr / (1 + (t - 1) lr_decay) * g / (sqrt(s) + eps) at update t (1-based,
    the optimizer's step count, saved with the model). State: s.

    Parameters
    ----------
    lr : float, Schedule or callable, default 0.01
        The learning rate: a number > 0, a schedule of ``fastbp.schedules``
        (``StepDecay``, ...) or a function ``f(epoch) -> lr``.
    lr_decay : float, default 0.0
        Learning-rate decay per update, >= 0.
    eps : float, default 1e-10
        Added to the denominator, > 0.
    weight_decay : float, default 0.0
        L2 penalty on the weights, >= 0.
    initial_accumulator_value : float, default 0.0
        The starting value of s, >= 0.

    Raises
    ------
    ValueError
        A hyperparameter out of its range, named in the message.
    TypeError
        A hyperparameter that is not a number, named in the message.
    """

    kind = registry.OPT_ADAGRAD
    n_states = 1
    nonnegative_states = (0,)  # the sum of squares

    def __init__(self, lr=0.01, lr_decay=0.0, eps=1e-10, weight_decay=0.0, initial_accumulator_value=0.0):
        super().__init__(lr)
        self.lr_decay = check_nonnegative(lr_decay, "lr_decay")
        self.eps = check_positive(eps, "eps")
        self.weight_decay = check_nonnegative(weight_decay, "weight_decay")
        self.initial_accumulator_value = check_nonnegative(initial_accumulator_value, "initial_accumulator_value")

    @property
    def initial_state(self):
        return self.initial_accumulator_value

    def hyper(self, lr):
        h = np.zeros(registry.N_HYPER)
        h[registry.H_LR] = lr
        h[registry.H_LR_DECAY] = self.lr_decay
        h[registry.H_EPS] = self.eps
        h[registry.H_WEIGHT_DECAY] = self.weight_decay
        return h

    def get_config(self):
        return dict(type="Adagrad", lr_decay=self.lr_decay, eps=self.eps, weight_decay=self.weight_decay,
                    initial_accumulator_value=self.initial_accumulator_value)


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "sgd":
            return SGD()
        if name in ("adam", "adamw"):
            return Adam(decoupled=name == "adamw")
        if name == "rmsprop":
            return RMSprop()
        if name == "adagrad":
            return Adagrad()
    raise ValueError(f"unknown optimizer {optimizer!r}; expected fastbp.SGD(...), fastbp.Adam(...), "
                     f"fastbp.RMSprop(...), fastbp.Adagrad(...), 'sgd', 'adam', 'adamw', 'rmsprop' or 'adagrad'")


def from_config(config, schedule_config):
    config = dict(config)
    kind = config.pop("type")
    schedule = schedules.from_config(schedule_config)
    if kind == "SGD":
        return SGD(lr=schedule, **config)
    if kind == "Adam":
        config["betas"] = tuple(config["betas"])
        return Adam(lr=schedule, **config)
    if kind == "RMSprop":
        return RMSprop(lr=schedule, **config)
    if kind == "Adagrad":
        return Adagrad(lr=schedule, **config)
    raise ValueError(f"unknown optimizer type {kind!r} in the saved model")
