"""What ``Sequential.fit`` does around the backend: data once, the epochs, divergence, the logs.

``prepare`` checks and converts one data set once per fit (features, the
loss's targets, sample weights) into ``X`` and ``lowering.Targets``;
``split_validation`` holds out the last fraction. ``fit_loop`` runs the
epochs: each asks the backend's ``Trainer`` to run its batches (all at once,
or in chunks when a progress bar wants updates), turns a divergence into a
``DivergenceError`` after the callbacks saw the end of training, and builds the
epoch's logs from the backend's statistics.
"""
import math
import time

import numpy as np

from . import _first_run, _interrupt, _mpi, _progress, backends
from ._validation import check_features, check_same_length, check_sample_weight, check_seed, first_nonfinite
from .callbacks import History
from .kernels import registry
from .lowering import Targets, check_norm_batches, lower, named_views


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient; the model is left as before that step.

    Parameters
    ----------
    message : str
        What diverged, where.
    epoch : int
        The epoch of the step, counted from 0.
    batch : int
        The batch of the step within its epoch, counted from 0.
    history : History
        The logs of the epochs before it.
    """

    def __init__(self, message, epoch, batch, history):
        super().__init__(message)
        self.epoch, self.batch, self.history = epoch, batch, history


def prepare(model, X, y, sample_weight, names, part=(0, 1)):
    """(X, Targets) for the model's loss, checked and converted once; ``names`` for messages.

    ``part`` (rank, ranks): the block of X's rows whose finiteness this rank checks.
    """
    x_name, y_name, w_name = names
    X = model._scaled(check_features(X, model.n_features, model.dtype, x_name, part))
    y_arr = np.asarray(y)
    if y_arr.ndim == 0:
        raise ValueError(f"{y_name} must be an array with one target per sample; got a scalar")
    check_same_length(X, y_arr, x_name, y_name)
    targets = model.loss.prepare_targets(y_arr, model.n_outputs, y_name)
    if targets.dtype == np.int64:
        labels, target = targets, np.empty((len(X), 0), dtype=model.dtype)
    else:
        labels, target = np.empty(0, dtype=np.int64), np.ascontiguousarray(targets, dtype=model.dtype)
    weight = check_sample_weight(sample_weight, len(X), model.dtype, w_name)
    return X, Targets(labels, target, weight)


def _class_indices(model, data):
    """(per-sample class index, number of classes) for class_weight; ValueError for other losses."""
    kind, n_out = model.loss.kind, model.n_outputs
    if kind == registry.LOSS_SCE:
        return data.labels, n_out
    if kind == registry.LOSS_BCE and n_out == 1:
        t = data.target[:, 0]
        if np.any((t != 0) & (t != 1)):
            raise ValueError("class_weight needs 0/1 targets for binary_cross_entropy; y holds other "
                             f"values such as {t[(t != 0) & (t != 1)][:3]}")
        return t.astype(np.int64), 2
    raise ValueError(f"class_weight needs class labels: softmax_cross_entropy, or binary_cross_entropy "
                     f"with one output; got {model.loss.name} with {n_out} output(s)")


def class_weights(class_weight, classes, n_classes):
    """The weight of each class 0..n_classes-1, scikit-learn's ``compute_class_weight`` semantics.

    'balanced': n_samples / (n_present * count_c), with n_present the classes that
    occur in ``classes`` (absent ones never weigh a sample); a dict: its weights, 1
    for the classes it leaves out, and a ValueError for a key that is not a class.
    """
    if isinstance(class_weight, str) and class_weight == "balanced":
        counts = np.bincount(classes, minlength=n_classes).astype(np.float64)
        present = counts > 0
        weights = np.ones(n_classes)
        weights[present] = classes.size / (np.count_nonzero(present) * counts[present])
        return weights
    if not isinstance(class_weight, dict):
        raise ValueError(f"class_weight must be None, 'balanced' or a dict {{class: weight}}; "
                         f"got {class_weight!r}")
    weights = np.ones(n_classes)
    for key, value in class_weight.items():
        if (isinstance(key, (bool, np.bool_)) or not isinstance(key, (int, np.integer))
                or not 0 <= key < n_classes):
            raise ValueError(f"class_weight has key {key!r}, which is not a class: the classes are "
                             f"the integers 0..{n_classes - 1}")
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if not number or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"class_weight[{key!r}] must be a finite number >= 0; got {value!r}")
        weights[int(key)] = float(value)
    return weights


def weigh_classes(model, train, class_weight):
    """(X, Targets) whose sample weights are multiplied by their class's weight (None: as given)."""
    if class_weight is None:
        return train
    X, data = train
    classes, n_classes = _class_indices(model, data)
    per_sample = class_weights(class_weight, classes, n_classes)[classes]
    if data.weight.size:
        per_sample = data.weight.astype(np.float64) * per_sample
    if not per_sample.sum() > 0:
        raise ValueError("class_weight leaves every training sample with weight 0")
    return X, Targets(data.labels, data.target, np.ascontiguousarray(per_sample, dtype=model.dtype))


def _rows(data, rows):
    return Targets(*(np.ascontiguousarray(a[rows]) if a.size else a for a in data))


def split_validation(X, data, fraction):
    """((X, data) for training, (X, data) for validation): the last ``fraction``, before shuffling."""
    n_val = int(math.floor(len(X) * fraction))
    if n_val < 1 or n_val >= len(X):
        raise ValueError(f"validation_split={fraction} of {len(X)} samples leaves "
                         f"{n_val} for validation; it must leave at least one sample on each side")
    cut = len(X) - n_val
    train, val = slice(0, cut), slice(cut, len(X))
    return ((np.ascontiguousarray(X[train]), _rows(data, train)),
            (np.ascontiguousarray(X[val]), _rows(data, val)))


def logs_from_stats(loss_code, stats):
    """Loss and metrics from the registry's S_* sums: means weighted by the sample weights, as the loss."""
    logs = {"loss": stats[registry.S_LOSS] / stats[registry.S_WEIGHT]}
    if loss_code == registry.LOSS_SCE:
        logs["accuracy"] = stats[registry.S_CORRECT] / stats[registry.S_WEIGHT]
    elif loss_code == registry.LOSS_BCE:
        logs["accuracy"] = stats[registry.S_CORRECT] / stats[registry.S_ELEMENTS]
    elif loss_code == registry.LOSS_POISSON:
        logs["mae"] = stats[registry.S_ABSOLUTE] / stats[registry.S_ELEMENTS]  # of the predicted mean exp(eta)
    else:
        logs["mse"] = stats[registry.S_SQUARED] / stats[registry.S_ELEMENTS]
        logs["mae"] = stats[registry.S_ABSOLUTE] / stats[registry.S_ELEMENTS]
    return logs


def _run_epoch(trainer, order, hyper, progress, chunks, batch_size, stats, interrupts):
    """Train one epoch in calls of ``chunks.size`` batches, an interrupt raised only between two
    (``_interrupt``); returns (status, batch where it stopped)."""
    trainer.begin_epoch(order, hyper)
    n_batches = trainer.n_batches
    batch = 0
    while batch < n_batches:
        last = min(n_batches, batch + chunks.size)
        with interrupts.deferring():
            status, stopped = chunks.timed(trainer.run, batch, last)
        interrupts.check()
        if status != registry.OK:
            return status, stopped
        if last < n_batches:
            progress.update(last, last * batch_size, trainer.running_loss())
        batch = last
    return trainer.end_epoch(stats)


def _diverged(model, status, stopped, epoch, n_batches, lr, history, callbacks):
    """End training after a non-finite step: callbacks see the end, then DivergenceError."""
    what = "loss" if status == registry.NONFINITE_LOSS else "gradient"
    # Training ends here too: History and the callbacks (EarlyStopping's restore, a
    # user's clean-up) see it before the error propagates.
    before = model.theta.copy()
    _end_training(history, callbacks)
    # equal_nan: weights that are NaN already are no callback's doing.
    if not np.array_equal(before, model.theta, equal_nan=True):
        weights = ("the weights from before that step were then replaced by a callback's "
                   "(EarlyStopping(restore_best_weights=True) restores its best epoch's)")
    else:
        weights = "the model keeps its weights from before that step"
    bad = first_nonfinite(named_views(before, model.buffers, model.layers, model._shapes))
    if bad is not None:
        # A step that would make the loss or gradient non-finite never happens, so an update
        # with finite inputs made these weights non-finite: it overflowed.
        cause = (f"the parameters were not finite before that step ({bad}): an earlier update "
                 f"overflowed; {weights}. Try a smaller learning rate.")
    else:
        cause = f"{weights}. Try a smaller learning rate."
    message = (f"training diverged: non-finite {what} at epoch {epoch + 1}, batch "
               f"{stopped + 1} of {n_batches} (lr {lr:g}); {cause}")
    return DivergenceError(message, epoch, stopped, history)


def check_parameters(model):
    """ValueError for read-only parameters or buffers (fit writes them), or naming the first
    non-finite parameter or running statistic: training from it could only diverge, and
    prediction from it gives NaN."""
    for name in ("theta", "buffers"):
        array = getattr(model, name)
        if not array.flags.writeable:
            raise ValueError(f"fit updates the model's {name} in place, and it is read-only (a memory map or "
                             f"a frozen array); give the model a writable copy first: "
                             f"model.{name} = np.array(model.{name})")
    bad = first_nonfinite(named_views(model.theta, model.buffers, model.layers, model._shapes))
    if bad is not None:
        raise ValueError(f"fit needs finite parameters; the model's {bad} (set by set_weights, "
                         f"set_flat_weights or an initializer such as bias_init)")


def shuffling_rng(seed):
    """fit's ``seed`` as the generator whose ``shuffle`` orders each epoch: an int seeds a new one."""
    seed = check_seed(seed, random_state=True)
    if isinstance(seed, (np.random.Generator, np.random.RandomState)):
        return seed
    return np.random.default_rng(seed)


def _mask_seed(rng, lowered):
    """The dropout masks' seed, drawn from rng only when the network has dropout (0 otherwise).

    Drawing nothing else keeps a RandomState's stream for the epochs' shuffles
    alone, in scikit-learn's order (fastbp.estimators relies on it).
    """
    if not lowered.has_dropout:
        return 0
    if isinstance(rng, np.random.RandomState):
        return int(rng.randint(0, 2**31 - 1))
    return int(rng.integers(0, 2**40))


def _trainer(backend, model, lowered, train, batch_size, rng, comm):
    """The backend's Trainer; over ``comm``, rank 0's parameters and shuffling stream first go to every rank."""
    X, data = train
    if comm is None:
        return backend.Trainer(model, lowered, X, data, batch_size, _mask_seed(rng, lowered))
    # Equal already when the model and fit have seeds; a model made without one differs per rank.
    comm.Bcast(model.theta, root=0)
    if isinstance(rng, np.random.RandomState):
        rng.set_state(comm.bcast(rng.get_state(), root=0))
    else:
        rng.bit_generator.state = comm.bcast(rng.bit_generator.state, root=0)
    return backend.DistributedTrainer(model, lowered, X, data, batch_size, _mask_seed(rng, lowered), comm)


def _set_up(model, train, batch_size, rng, comm):
    """(lowered network, backend, its Trainer) for fit, after the checks that need the lowered network;
    the optimizer's state is made for the model's parameters."""
    lowered = lower(model.layers, model.loss.link, model.n_features)
    check_norm_batches(lowered, len(train[0]), batch_size, "fit")
    check_parameters(model)
    model.optimizer.init_state(model.theta.size, model.dtype)
    backend = backends.get(model.device)
    return lowered, backend, _trainer(backend, model, lowered, train, batch_size, rng, comm)


def _compile_first(trainer, order, opt, verbose, interrupts, comm):
    """Compile or load the loop before the first timed epoch, saying so first if it compiles;
    returns the compile's seconds (None when nothing compiled) and the epochs' chunks of batches."""
    compile_seconds = _first_run.compile_loop(trainer, order, opt.hyper(0.0), verbose)
    interrupts.check()  # one that a compile callback swallowed
    n_batches = trainer.n_batches
    chunks = _interrupt.BatchChunks(n_batches if verbose != 1 else max(1, n_batches // 40))
    if comm is not None:
        compile_seconds = _mpi.agreed_seconds(comm, compile_seconds)
    return compile_seconds, chunks


def _begin_training(model, callbacks):
    """A new History on the model; it and the callbacks are told that training begins."""
    history = model.history = History()
    model.stop_training = False
    for cb in [history] + callbacks:
        cb.set_model(model)
        cb.on_train_begin({})
    return history


def _end_training(history, callbacks):
    """The History and the callbacks are told that training ends."""
    for cb in [history] + callbacks:
        cb.on_train_end({})


def _seconds_since(start, comm):
    """Seconds since ``start`` (``time.perf_counter``); over ``comm``, the slowest rank's."""
    seconds = time.perf_counter() - start
    return seconds if comm is None else _mpi.agreed_seconds(comm, seconds)


def _validation_logs(model, lowered, backend, val, comm):
    """The val_* logs of the model on val = (X, Targets); over ``comm``, each rank evaluates a block of rows."""
    val_stats = (backend.evaluate(model, lowered, *val, min(1024, len(val[0]))) if comm is None
                 else _mpi.evaluate(backend, model, lowered, *val, comm))
    return {"val_" + k: v for k, v in logs_from_stats(model.loss.kind, val_stats).items()}


def fit_loop(model, train, val, epochs, batch_size, shuffle, rng, callbacks, verbose, comm=None):
    """Run ``epochs`` epochs of ``model`` on train = (X, Targets); returns the History.

    With an MPI ``comm`` (``fastbp._mpi``), data-parallel: every rank runs this with the
    same arguments, trains on its share of each global batch, and gets the same logs.
    """
    n = len(train[0])
    batch_size = min(batch_size, n)
    lowered, backend, trainer = _set_up(model, train, batch_size, rng, comm)
    opt = model.optimizer
    order = np.arange(n, dtype=np.int64)
    stats = np.zeros(registry.N_STATS)
    n_batches = trainer.n_batches
    with _interrupt.Interrupts() as interrupts:
        compile_seconds, chunks = _compile_first(trainer, order, opt, verbose, interrupts, comm)
        history = _begin_training(model, callbacks)
        first_epoch = model.epochs_trained
        for epoch in range(first_epoch, first_epoch + epochs):
            lr = opt.schedule.checked_lr_at(epoch)
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            if shuffle:
                rng.shuffle(order)
            progress = _progress.EpochProgress(verbose, epoch - first_epoch, epochs, n_batches)
            start = time.perf_counter()
            status, stopped = _run_epoch(trainer, order, opt.hyper(lr), progress, chunks, batch_size, stats,
                                         interrupts)
            if status != registry.OK:
                raise _diverged(model, status, stopped, epoch, n_batches, lr, history, callbacks)
            seconds = _seconds_since(start, comm)
            logs = logs_from_stats(model.loss.kind, stats)
            if val is not None:
                logs.update(_validation_logs(model, lowered, backend, val, comm))
            logs.update(lr=lr, seconds=seconds, samples_per_second=n / seconds if seconds > 0 else math.inf)
            if compile_seconds is not None and epoch == first_epoch:
                logs["compile_seconds"] = compile_seconds
            model.epochs_trained = epoch + 1
            progress.close(logs)
            opt.schedule.on_epoch_end(epoch, logs)
            for cb in [history] + callbacks:
                cb.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
        _end_training(history, callbacks)
        return history
