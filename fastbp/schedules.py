"""Learning-rate schedules: the rate for each epoch, from the optimizer's base rate.

Any of these, or any callable ``f(epoch) -> lr`` (epoch counted from 0), can be
given as an optimizer's ``lr``. ``ReduceLROnPlateau`` also watches the epoch
logs through ``on_epoch_end``. Every parameter is checked when the schedule is
made, and ``fit`` checks each epoch's rate (``checked_lr_at``): a negative rate
would climb the loss, a NaN one would make every weight NaN.
"""
import math
import numbers

from ._validation import check_in_range, check_int, check_positive, describe
from .callbacks import check_monitor, monitored


class Schedule:
    """Base class: ``lr_at(epoch)`` gives the rate for an epoch."""

    def __init__(self, lr):
        self.lr = check_positive(lr, "lr")

    def lr_at(self, epoch):
        raise NotImplementedError

    def checked_lr_at(self, epoch):
        """``lr_at(epoch)``, or a ValueError naming the schedule and the epoch unless it is a
        finite number >= 0 (what fit uses: a subclass's or a reloaded schedule's rate too)."""
        lr = self.lr_at(epoch)
        if (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr)
                or lr < 0):
            raise ValueError(f"the learning-rate schedule {type(self).__name__} gave {lr!r} for epoch "
                             f"{epoch}; expected a finite number >= 0")
        return float(lr)

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
        The base learning rate, finite and > 0.
    step_size : int
        Epochs between two decays, >= 1.
    gamma : float, default 0.1
        The factor of each decay, in (0, 1].

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    TypeError
        A gamma that is not a real number.
    """

    def __init__(self, lr, step_size, gamma=0.1):
        super().__init__(lr)
        self.step_size = check_int(step_size, "step_size")
        # A negative gamma alternates the rate's sign, a NaN one makes it NaN.
        self.gamma = check_in_range(gamma, "gamma", 0.0, 1.0, low_open=True)

    def lr_at(self, epoch):
        return self.lr * self.gamma ** (epoch // self.step_size)


class ExponentialDecay(Schedule):
    """The rate lr * gamma ** epoch.

    Parameters
    ----------
    lr : float
        The base learning rate, finite and > 0.
    gamma : float
        The factor per epoch, in (0, 1].

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    TypeError
        A gamma that is not a real number.
    """

    def __init__(self, lr, gamma):
        super().__init__(lr)
        self.gamma = check_in_range(gamma, "gamma", 0.0, 1.0, low_open=True)

    def lr_at(self, epoch):
        return self.lr * self.gamma**epoch


class CosineDecay(Schedule):
    """Cosine annealing from lr to min_lr over t_max epochs, then min_lr.

    Parameters
    ----------
    lr : float
        The base learning rate, finite and > 0.
    t_max : int
        Epochs of the annealing, >= 1.
    min_lr : float, default 0.0
        The rate at and after epoch t_max, in [0, lr].

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    TypeError
        A min_lr that is not a real number.
    """

    def __init__(self, lr, t_max, min_lr=0.0):
        super().__init__(lr)
        self.t_max = check_int(t_max, "t_max")
        # Below 0 the rate turns negative (gradient ascent) near the end of the cycle.
        self.min_lr = check_in_range(min_lr, "min_lr", 0.0, self.lr)

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
        The base learning rate, finite and > 0.
    monitor : str, default 'val_loss'
        The quantity of the epoch logs to watch; a ``val_*`` one needs validation data.
    factor : float, default 0.1
        The factor of each reduction, in (0, 1).
    patience : int, default 10
        Epochs without improvement tolerated before a reduction, >= 0.
    min_delta : float, default 1e-4
        The change that counts as an improvement, finite and >= 0.
    min_lr : float, default 0.0
        The floor of the rate, in [0, lr].
    mode : {'min', 'max'}, default 'min'
        Whether lower or higher values of ``monitor`` are better.

    Raises
    ------
    ValueError
        An argument out of its range, named in the message.
    TypeError
        A factor, min_delta or min_lr that is not a real number, or a monitor that is not
        a str.
    """

    def __init__(self, lr, monitor="val_loss", factor=0.1, patience=10, min_delta=1e-4,
                 min_lr=0.0, mode="min"):
        super().__init__(lr)
        factor = check_in_range(factor, "factor", 0.0, 1.0, low_open=True, high_open=True)
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        if not isinstance(monitor, str):
            raise TypeError(f"monitor must be the name of a log entry (a str); got {monitor!r}")
        self.monitor, self.factor = monitor, factor
        self.patience = check_int(patience, "patience", minimum=0)
        self.min_delta = check_in_range(min_delta, "min_delta", 0.0, math.inf)
        self.min_lr = check_in_range(min_lr, "min_lr", 0.0, self.lr)
        self.mode = mode
        self.current = self.lr
        self.best = None
        self.wait = 0

    def lr_at(self, epoch):
        return self.current

    def check_logs(self, validation):
        # A val_* quantity without validation data fails the fit at once, before any epoch.
        check_monitor(self.monitor, validation, "ReduceLROnPlateau")

    def on_epoch_end(self, epoch, logs):
        value = monitored(logs, self.monitor, "ReduceLROnPlateau")
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
        self.lr = self.lr_at(0)

    def lr_at(self, epoch):
        lr = self.function(epoch)
        if (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr)
                or lr < 0):
            raise ValueError(f"the learning-rate function returned {lr!r} for epoch {epoch}; "
                             f"expected a finite number >= 0")
        return float(lr)

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
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a finite number > 0, a fastbp.schedules.Schedule or a "
                        f"callable of the epoch; got {describe(lr)}")
    return Constant(lr)  # checks the value


def from_config(config):
    config = dict(config)
    kind = config.pop("type")
    if kind == "FunctionSchedule":
        # A user function cannot be saved; the reloaded model continues at its base rate.
        return Constant(config["lr"])
    state = {k: config.pop(k) for k in ("current", "best", "wait") if k in config}
    if kind not in SCHEDULE_TYPES:
        raise ValueError(f"unknown schedule type {kind!r}")
    schedule = SCHEDULE_TYPES[kind](**config)
    # ReduceLROnPlateau's progress, checked as its constructor checks its arguments.
    if "current" in state:
        state["current"] = check_in_range(state["current"], "current", schedule.min_lr, schedule.lr)
    if state.get("best") is not None:
        state["best"] = check_in_range(state["best"], "best", -math.inf, math.inf, True, True)
    if "wait" in state:
        state["wait"] = check_int(state["wait"], "wait", minimum=0)
    vars(schedule).update(state)
    return schedule
