"""Callbacks: hooks into ``Sequential.fit``, and the History it returns.

Subclass ``Callback`` and override any of ``on_train_begin(logs)``,
``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)`` and
``on_train_end(logs)``. ``self.model`` is the model being trained; set
``self.model.stop_training = True`` to stop after the current epoch.
``check_logs(validation)`` runs first, before any epoch, to refuse a fit that
cannot work (a val_* quantity watched without validation data).
"""
import math

import numpy as np


class Callback:
    """Base class of the callbacks: hooks that ``Sequential.fit`` calls around each epoch.

    Override any of the hooks; the base class's do nothing. ``self.model`` is the
    model being trained; ``self.model.stop_training = True`` stops after the
    current epoch.
    """

    model = None

    def set_model(self, model):
        """Called by fit before training with the model it trains.

        Parameters
        ----------
        model : Sequential
            The model, kept as ``self.model``.
        """
        self.model = model

    def check_logs(self, validation):
        """Called by fit before training, to refuse a fit that cannot work.

        Parameters
        ----------
        validation : bool
            Whether the fit has validation data, and so val_* entries in its epoch logs.

        Raises
        ------
        MonitorError
            In the subclasses that watch a val_* quantity, when ``validation`` is False.
        """

    def on_train_begin(self, logs=None):
        """Called once, before the first epoch.

        Parameters
        ----------
        logs : dict, default None
            The logs so far: for an epoch's end, its loss, metrics, val_* entries, lr,
            seconds and samples_per_second.
        """

    def on_epoch_begin(self, epoch, logs=None):
        """Called at the start of each epoch.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, default None
            The logs so far: for an epoch's end, its loss, metrics, val_* entries, lr,
            seconds and samples_per_second.
        """

    def on_epoch_end(self, epoch, logs=None):
        """Called at the end of each epoch, after validation.

        Parameters
        ----------
        epoch : int
            The epoch, counted from 0.
        logs : dict, default None
            The logs so far: for an epoch's end, its loss, metrics, val_* entries, lr,
            seconds and samples_per_second.
        """

    def on_train_end(self, logs=None):
        """Called once, after the last epoch (also when a DivergenceError ends the fit).

        Parameters
        ----------
        logs : dict, default None
            The logs so far: for an epoch's end, its loss, metrics, val_* entries, lr,
            seconds and samples_per_second.
        """


class MonitorError(KeyError, ValueError):
    """A callback or schedule watches a quantity that the epoch logs lack.

    A ValueError, since it is a fit that cannot work as asked; also a KeyError, which it
    was before fit checked val_* quantities up front (as NumPy's AxisError is both a
    ValueError and an IndexError).
    """

    def __str__(self):
        return str(self.args[0])  # the message, not KeyError's repr of it


def check_monitor(monitor, validation, owner):
    """At the start of fit: a val_* quantity needs validation data, or it never appears."""
    if monitor.startswith("val_") and not validation:
        raise MonitorError(f"{owner} monitors {monitor!r}, which the epoch logs lack; this fit has no "
                           f"validation data, and val_* entries need validation_data or validation_split: "
                           f"pass one of them to fit, or monitor a training quantity such as 'loss'")


def monitored(logs, monitor, owner):
    """At the end of an epoch: the monitored value. A quantity that neither fit nor an
    earlier callback wrote into the logs is an error."""
    if monitor in logs:
        return logs[monitor]
    raise MonitorError(f"{owner} monitors {monitor!r}, which the epoch logs lack; they have "
                       f"{sorted(logs)} (val_* entries need validation_data or validation_split)")


# The direction of the quantities fit writes into the logs (and their val_* twins), and of the
# names users bring from Keras: what mode="auto" picks, and what an explicit mode must agree with.
_MAXIMIZED = ("accuracy", "acc", "auc", "f1", "precision", "recall", "samples_per_second")
_MINIMIZED = ("loss", "mse", "mae", "rmse", "error", "seconds")


def _direction(monitor):
    """'max' or 'min' for a quantity whose direction is known from its name, else None.

    As Keras decides in mode="auto": accuracy-like names are maximized, losses and errors
    minimized; a name that says neither is unknown.
    """
    name = monitor[4:] if monitor.startswith("val_") else monitor
    if name in _MAXIMIZED or name.endswith(("_accuracy", "_acc", "_auc")):
        return "max"
    if name in _MINIMIZED or name.endswith(("_loss", "_error", "_mse", "_mae")):
        return "min"
    return None


def resolve_mode(mode, monitor, owner):
    """The 'min' or 'max' a callback watching ``monitor`` uses.

    "auto" takes the monitored quantity's known direction, and 'min' for a name whose
    direction is unknown (Keras's fallback); an explicit mode that contradicts a known
    direction is refused, since it would keep the worst epoch.
    """
    if not isinstance(monitor, str):
        raise TypeError(f"{owner}: monitor must be the name of a logged quantity (str); got "
                        f"{type(monitor).__name__}")
    if not isinstance(mode, str) or mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max'; got {mode!r}")
    known = _direction(monitor)
    if mode == "auto":
        return known or "min"
    if known is not None and mode != known:
        better = "higher" if known == "max" else "lower"
        raise ValueError(f"{owner}: mode={mode!r} contradicts {monitor!r}, which is better when "
                         f"{better}: mode={mode!r} would keep its worst epoch. Use mode={known!r} or "
                         f"mode='auto'")
    return mode


class _Improvement:
    """Tracks the best value of a monitored quantity."""

    def __init__(self, mode, min_delta):
        if mode not in ("min", "max"):
            raise ValueError(f"mode must be 'min' or 'max'; got {mode!r}")
        self.sign = 1.0 if mode == "min" else -1.0
        self.min_delta = float(min_delta)
        self.best = math.inf

    def improved(self, value):
        if self.sign * value < self.best - self.min_delta:
            self.best = self.sign * value
            return True
        return False


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved by ``min_delta`` for ``patience`` epochs.

    With ``restore_best_weights`` the model ends with the weights of its best epoch
    (and BatchNorm's running statistics of that epoch, which its weights were used with).
    Keras's convention: it stops after ``patience`` epochs without an improvement.

    Parameters
    ----------
    monitor : str, default "val_loss"
        The quantity of the epoch logs to watch ("loss", "accuracy", "val_accuracy", ...).
    patience : int, default 5
        Epochs without improvement after which training stops.
    min_delta : float, default 0.0
        The least change that counts as an improvement.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better. "auto" maximizes accuracy-like quantities and
        minimizes losses and errors, as Keras does ('min' for names it cannot tell).
    restore_best_weights : bool, default False
        End with the weights of the best epoch rather than the last.

    Raises
    ------
    ValueError
        For a mode other than these three, or one that contradicts the monitored quantity's
        known direction (``mode="min"`` for "val_accuracy").
    TypeError
        ``monitor`` is not a str.
    """

    def __init__(self, monitor="val_loss", patience=5, min_delta=0.0, mode="auto",
                 restore_best_weights=False):
        self.mode = resolve_mode(mode, monitor, "EarlyStopping")
        self.monitor, self.patience = monitor, int(patience)
        self.min_delta = float(min_delta)
        self.restore_best_weights = restore_best_weights

    def check_logs(self, validation):
        check_monitor(self.monitor, validation, "EarlyStopping")

    def on_train_begin(self, logs=None):
        self.tracker = _Improvement(self.mode, self.min_delta)
        self.wait = 0
        self.best_weights = None
        self.best_epoch = None
        self.stopped_epoch = None

    def on_epoch_end(self, epoch, logs=None):
        value = monitored(logs, self.monitor, "EarlyStopping")
        if self.tracker.improved(value):
            self.wait = 0
            self.best_epoch = epoch
            if self.restore_best_weights:
                self.best_weights = self.model.get_flat_weights()
                self.best_buffers = self.model.buffers.copy()
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_flat_weights(self.best_weights)
            self.model.buffers[...] = self.best_buffers


class ModelCheckpoint(Callback):
    """Save the model to ``path`` after each epoch, or only when ``monitor`` improves.

    Parameters
    ----------
    path : str or path-like
        Where the model is saved (``Sequential.save``), overwritten at each save.
    monitor : str, default "val_loss"
        The quantity of the epoch logs that decides which epoch is best.
    save_best_only : bool, default True
        Save only at epochs that improve ``monitor``; False saves after every epoch.
    mode : {"auto", "min", "max"}, default "auto"
        Whether lower or higher is better; "auto" as in ``EarlyStopping``.

    Raises
    ------
    ValueError
        For a mode other than these three, or one that contradicts the monitored quantity's
        known direction.
    TypeError
        ``monitor`` is not a str.
    """

    def __init__(self, path, monitor="val_loss", save_best_only=True, mode="auto"):
        self.mode = resolve_mode(mode, monitor, "ModelCheckpoint")
        self.path, self.monitor, self.save_best_only = path, monitor, save_best_only

    def check_logs(self, validation):
        if self.save_best_only:
            check_monitor(self.monitor, validation, "ModelCheckpoint")

    def on_train_begin(self, logs=None):
        self.tracker = _Improvement(self.mode, 0.0)
        self.saved_epochs = []

    def on_epoch_end(self, epoch, logs=None):
        if self.save_best_only and not self.tracker.improved(monitored(logs, self.monitor, "ModelCheckpoint")):
            return
        self.model.save(self.path)
        self.saved_epochs.append(epoch)


class LearningRateLogger(Callback):
    """Record (and optionally print) the learning rate of every epoch in ``self.rates``.

    Parameters
    ----------
    print_rates : bool, default False
        Also print each epoch's rate.
    """

    def __init__(self, print_rates=False):
        self.print_rates = print_rates
        self.rates = []

    def on_epoch_end(self, epoch, logs=None):
        self.rates.append(logs["lr"])
        if self.print_rates:
            print(f"epoch {epoch + 1}: lr = {logs['lr']:.6g}")


class History(Callback):
    """Per-epoch logs of a fit: ``history.history['loss']`` etc., ``epochs``, ``plot()``.

    ``compile_seconds`` is the time the fit spent compiling its loop before the first
    epoch (None when it was compiled or cached already): it comes in the first epoch's
    logs only, so it is kept apart from the per-epoch series.

    Attributes
    ----------
    history : dict of str to list
        Each quantity of the epoch logs, one value per epoch.
    epoch : list of int
        The epochs, counted from 0.
    compile_seconds : float or None
        The time fit spent compiling before the first epoch.
    """

    def on_train_begin(self, logs=None):
        self.epoch = []
        self.history = {}
        self.compile_seconds = None

    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for key, value in logs.items():
            if key == "compile_seconds":
                self.compile_seconds = value
            else:
                self.history.setdefault(key, []).append(value)

    def __getitem__(self, key):
        return self.history[key]

    def __repr__(self):
        last = {k: v[-1] for k, v in self.history.items()} if self.epoch else {}
        return f"History(epochs={len(self.epoch)}, last={last})"

    def plot(self, path=None, keys=None):
        """Draw learning curves (matplotlib, an optional extra); save to ``path`` if given.

        Parameters
        ----------
        path : str or path-like, default None
            Save the figure there (and close it); None keeps it open.
        keys : list of str, default None
            The quantities to draw, one panel each, with their val_* counterparts; default
            every training quantity but lr, seconds and samples_per_second.

        Returns
        -------
        matplotlib.figure.Figure
            The figure.

        Raises
        ------
        ImportError
            matplotlib is not installed.
        """
        try:
            import matplotlib

            if path is not None:
                matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError as err:
            raise ImportError("History.plot needs matplotlib: pip install 'fastbp[plot]'") from err
        keys = keys or [k for k in self.history if not k.startswith("val_")
                        and k not in ("lr", "seconds", "samples_per_second")]
        fig, axes = plt.subplots(1, len(keys), figsize=(4.5 * len(keys), 3.5), squeeze=False)
        epochs = np.asarray(self.epoch) + 1
        for ax, key in zip(axes[0], keys):
            ax.plot(epochs, self.history[key], label=key)
            if "val_" + key in self.history:
                ax.plot(epochs, self.history["val_" + key], label="val_" + key)
            ax.set_xlabel("epoch")
            ax.set_title(key)
            ax.legend()
        fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=100)
            plt.close(fig)
        return fig
