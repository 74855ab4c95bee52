"""Optimizers: their hyperparameters and state; the updates are kernels.

Both update every parameter of the model in one kernel call over the flat
parameter vector (weights, then biases). Weight decay applies to the weights
only, as scikit-learn's ``alpha`` does.
"""
import math

import numpy as np

from .kernels import registry as R
from . import schedules


def _nonneg(value, name):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number >= 0; got {value!r}")
    return float(value)


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

    def init_state(self, size, dtype):
        if self.state is None or self.state[0].size != size or self.state[0].dtype != dtype:
            self.state = [np.zeros(size, dtype=dtype) for _ in range(max(self.n_states, 1))]
            self.steps = 0

    def hyper(self, lr):
        raise NotImplementedError

    def get_config(self):
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    kind = R.OPT_SGD
    n_states = 1

    def __init__(self, lr=0.01, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(lr)
        self.momentum = _nonneg(momentum, "momentum")
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.nesterov = bool(nesterov)
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov=True needs momentum > 0")
        self.weight_decay = _nonneg(weight_decay, "weight_decay")

    def hyper(self, lr):
        h = np.zeros(R.N_HYPER)
        h[R.H_LR] = lr
        h[R.H_MOMENTUM] = self.momentum
        h[R.H_NESTEROV] = self.nesterov
        h[R.H_WEIGHT_DECAY] = self.weight_decay
        return h

    def get_config(self):
        return dict(type="SGD", momentum=self.momentum, nesterov=self.nesterov,
                    weight_decay=self.weight_decay)


class Adam(Optimizer):
    """Adam; with ``decoupled=True`` and weight_decay > 0 it is AdamW."""

    kind = R.OPT_ADAM
    n_states = 2

    def __init__(self, lr=0.001, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, decoupled=False):
        super().__init__(lr)
        if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
            raise ValueError(f"betas must be two numbers in [0, 1); got {betas!r}")
        self.betas = (float(betas[0]), float(betas[1]))
        if not eps > 0:
            raise ValueError(f"eps must be > 0; got {eps!r}")
        self.eps = float(eps)
        self.weight_decay = _nonneg(weight_decay, "weight_decay")
        self.decoupled = bool(decoupled)

    def hyper(self, lr):
        h = np.zeros(R.N_HYPER)
        h[R.H_LR] = lr
        h[R.H_WEIGHT_DECAY] = self.weight_decay
        h[R.H_BETA1], h[R.H_BETA2] = self.betas
        h[R.H_EPS] = self.eps
        h[R.H_DECOUPLED] = self.decoupled
        return h

    def get_config(self):
        return dict(type="Adam", betas=list(self.betas), eps=self.eps,
                    weight_decay=self.weight_decay, decoupled=self.decoupled)


def get(optimizer):
    if isinstance(optimizer, Optimizer):
        return optimizer
    if isinstance(optimizer, str):
        name = optimizer.lower()
        if name == "sgd":
            return SGD()
        if name in ("adam", "adamw"):
            return Adam(decoupled=name == "adamw")
    raise ValueError(f"unknown optimizer {optimizer!r}; expected fastbp.SGD(...), fastbp.Adam(...), "
                     f"'sgd', 'adam' or 'adamw'")


def from_config(config, schedule_config):
    config = dict(config)
    kind = config.pop("type")
    schedule = schedules.from_config(schedule_config)
    if kind == "SGD":
        return SGD(lr=schedule, **config)
    if kind == "Adam":
        config["betas"] = tuple(config["betas"])
        return Adam(lr=schedule, **config)
    raise ValueError(f"unknown optimizer type {kind!r} in the saved model")
