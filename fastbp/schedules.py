"""Learning-rate schedules: the rate for each epoch, from the optimizer's base rate.

Any of these, or any callable ``f(epoch) -> lr`` (epoch counted from 0), can be
given as an optimizer's ``lr``. ``ReduceLROnPlateau`` also watches the epoch
logs through ``on_epoch_end``.
"""
import math

from .callbacks import _check_monitor, _monitored


class Schedule:
    """Base class: ``lr_at(epoch)`` gives the rate for an epoch."""

    def __init__(self, lr):
        self.lr = float(lr)
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0; got {lr!r}")

    def lr_at(self, epoch):
        raise NotImplementedError

    def check_logs(self, validation):
        """Called by fit before training, as ``Callback.check_logs``."""

    def on_epoch_end(self, epoch, logs):
        pass

    def get_config(self):
        return dict(vars(self), type=type(self).__name__)


class Constant(Schedule):
    def lr_at(self, epoch):
        return self.lr


class StepDecay(Schedule):
    """The rate lr * gamma ** (epoch // step_size): multiplied by gamma every step_size epochs.

    Parameters
    ----------
    lr : float
        The base learning rate, > 0.
    step_size : int
        Epochs between two decays, >= 1.
    gamma : float, default 0.1
        The factor of each decay.

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    """

    def __init__(self, lr, step_size, gamma=0.1):
        super().__init__(lr)
        if int(step_size) < 1:
            raise ValueError(f"step_size must be a positive integer; got {step_size!r}")
        self.step_size = int(step_size)
        self.gamma = float(gamma)

    def lr_at(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """The rate lr * gamma ** epoch.

    Parameters
    ----------
    lr : float
        The base learning rate, > 0.
    gamma : float
        The factor per epoch, in (0, 1].

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    """

    def __init__(self, lr, gamma):
        super().__init__(lr)
        if not 0 < gamma <= 1:
            raise ValueError(f"gamma must be in (0, 1]; got {gamma!r}")
        self.gamma = float(gamma)

    def lr_at(self, epoch):
        return self.lr * self.gamma**epoch


class CosineDecay(Schedule):
    """Cosine annealing from lr to min_lr over t_max epochs, then min_lr.

    Parameters
    ----------
    lr : float
        The base learning rate, > 0.
    t_max : int
        Epochs of the annealing, >= 1.
    min_lr : float, default 0.0
        The rate at and after epoch t_max.

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    """

    def __init__(self, lr, t_max, min_lr=0.0):
        super().__init__(lr)
        if int(t_max) < 1:
            raise ValueError(f"t_max must be a positive integer; got {t_max!r}")
        self.t_max = int(t_max)
        self.min_lr = float(min_lr)

    def lr_at(self, epoch):
        t = min(epoch, self.t_max)
        return self.min_lr + 0.5 * (self.lr - self.min_lr) * (1 + math.cos(math.pi * t / self.t_max))


class ReduceLROnPlateau(Schedule):
    """Multiply the rate by ``factor`` when ``monitor`` stops improving.

    PyTorch's convention: ``patience`` epochs without an improvement of more than
    ``min_delta`` are tolerated, the next one multiplies the rate (floored at
    ``min_lr``) from the following epoch on, and the count starts over.
    (``EarlyStopping`` follows Keras instead: it stops after ``patience`` such epochs.)

    Parameters
    ----------
    lr : float
        The base learning rate, > 0.
    monitor : str, default 'val_loss'
        The quantity of the epoch logs to watch; a ``val_*`` one needs validation data.
    factor : float, default 0.1
        The factor of each reduction, in (0, 1).
    patience : int, default 10
        Epochs without improvement tolerated before a reduction.
    min_delta : float, default 1e-4
        The change that counts as an improvement.
    min_lr : float, default 0.0
        The floor of the rate.
    mode : {'min', 'max'}, default 'min'
        Whether lower or higher values of ``monitor`` are better.

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    """

    def __init__(self, lr, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4,
                 min_lr=0.0, mode="min"):
        super().__init__(lr)
        if not 0 < factor < 1:
            raise ValueError(f"factor must be in (0, 1); got {factor!r}")
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        self.monitor, self.factor, self.patience = monitor, float(factor), int(patience)
        self.min_delta, self.min_lr, self.mode = float(min_delta), float(min_lr), mode
        self.current = self.lr
        self.best = None
        self.wait = 0

    def lr_at(self, epoch):
        return self.current

    def check_logs(self, validation):
        # A val_* quantity without validation data fails the fit at once, before any epoch.
        _check_monitor(self.monitor, validation, "ReduceLROnPlateau")

    def on_epoch_end(self, epoch, logs):
        value = _monitored(logs, self.monitor, "ReduceLROnPlateau")
        sign = 1.0 if self.mode == "min" else -1.0
        if self.best is None or sign * (self.best - value) > self.min_delta:
            self.best, self.wait = value, 0
        else:
            self.wait += 1
            if self.wait > self.patience:
                self.current = max(self.current * self.factor, self.min_lr)
                self.wait = 0


class FunctionSchedule(Schedule):
    """Wraps a user callable ``f(epoch) -> lr``."""

    def __init__(self, function):
        self.function = function
        self.lr = float(function(0))

    def lr_at(self, epoch):
        lr = float(self.function(epoch))
        if not (lr >= 0 and math.isfinite(lr)):
            raise ValueError(f"the learning-rate function returned {lr!r} for epoch {epoch}; "
                             f"expected a finite number >= 0")
        return lr

    def get_config(self):
        return {"type": "FunctionSchedule", "lr": self.lr}


SCHEDULE_TYPES = {c.__name__: c for c in (Constant, StepDecay, ExponentialDecay, CosineDecay,
                                          ReduceLROnPlateau)}


def get(lr):
    """A Schedule from a number, a Schedule or a callable of the epoch."""
    if isinstance(lr, Schedule):
        return lr
    if callable(lr):
        return FunctionSchedule(lr)
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
        raise ValueError(f"lr must be a finite number > 0, a fastbp.schedules.Schedule or a "
                         f"callable of the epoch; got {lr!r}")
    return Constant(lr)


def from_config(config):
    config = dict(config)
    kind = config.pop("type")
    if kind == "FunctionSchedule":
        # A user function cannot be saved; the reloaded model continues at its base rate.
        return Constant(config["lr"])
    state = {k: config.pop(k) for k in ("current", "best", "wait") if k in config}
    schedule = SCHEDULE_TYPES[kind](**config)
    vars(schedule).update(state)
    return schedule
