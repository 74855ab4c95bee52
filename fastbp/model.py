"""Sequential: build, fit, evaluate, predict, save and load a dense network.

The model keeps every parameter in one flat vector ``theta`` (all weights,
then all biases) and hands the compiled loop of ``fastbp._loop`` views into
it, so the optimizer updates the whole network in one kernel call and saving
is one array. ``fit`` converts and checks the data once, allocates every
buffer once, and then runs whole epochs (or, with a progress bar, runs of
batches) in compiled code.
"""
import json
import math
import time

import numpy as np

from . import _first_run, _loop, _progress, losses, optimizers
from ._validation import (check_features, check_fraction, check_int, check_same_length,
                          check_sample_weight)
from .callbacks import Callback, History
from .layers import ACTIVATIONS, Activation, Dense, Dropout, Layer, layer_from_config

FORMAT = "fastbp-model"
FORMAT_VERSION = 1
_DTYPES = {"float32": np.float32, "float64": np.float64}


class DivergenceError(RuntimeError):
    """Training produced a non-finite loss or gradient; the model is left as before that step."""

    def __init__(self, message, epoch, batch, history):
        super().__init__(message)
        self.epoch, self.batch, self.history = epoch, batch, history


def _dtype(dtype):
    name = np.dtype(dtype).name if not isinstance(dtype, str) else dtype
    if name not in _DTYPES:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    return np.dtype(_DTYPES[name])




class _Ops:
    """A network lowered to the op arrays of the compiled loop."""

    def __init__(self, layers, link=None):
        kinds, codes, alphas, rates, params_of, widths = [], [], [], [], [], []
        width = None
        n_dense = 0
        for layer in layers:
            if isinstance(layer, Dense):
                width = layer.out_features
                fused = layer.fused
                kinds.append(_loop.OP_DENSE)
                codes.append(ACTIVATIONS[layer.activation] if fused else 0)
                alphas.append(layer.alpha)
                rates.append(0.0)
                params_of.append(n_dense)
                widths.append(width)
                n_dense += 1
                if not fused:
                    self._append_act(kinds, codes, alphas, rates, params_of, widths,
                                     ACTIVATIONS[layer.activation], layer.alpha, width)
            elif isinstance(layer, Activation):
                self._append_act(kinds, codes, alphas, rates, params_of, widths,
                                 ACTIVATIONS[layer.activation], layer.alpha, width)
            elif layer.rate == 0.0:
                continue  # Dropout(0) is the identity: no op, no copy
            else:
                kinds.append(_loop.OP_DROPOUT)
                codes.append(0)
                alphas.append(0.0)
                rates.append(layer.rate)
                params_of.append(-1)
                widths.append(width)
        # The loss applies its own link (softmax, sigmoid) to logits, fused and stable:
        # a final layer that applies the same link is dropped from the training graph.
        self.stripped_link = False
        if link is not None and kinds:
            code = ACTIVATIONS[link]
            if kinds[-1] == _loop.OP_ACTIVATION and codes[-1] == code:
                for seq in (kinds, codes, alphas, rates, params_of, widths):
                    seq.pop()
                self.stripped_link = True
            elif kinds[-1] == _loop.OP_DENSE and codes[-1] == code:
                codes[-1] = 0
                self.stripped_link = True
        self.kinds = np.array(kinds, dtype=np.int64)
        self.codes = np.array(codes, dtype=np.int64)
        self.alphas = np.array(alphas, dtype=np.float64)
        self.rates = np.array(rates, dtype=np.float64)
        self.params_of = np.array(params_of, dtype=np.int64)
        self.widths = widths

    @staticmethod
    def _append_act(kinds, codes, alphas, rates, params_of, widths, code, alpha, width):
        kinds.append(_loop.OP_ACTIVATION)
        codes.append(code)
        alphas.append(alpha)
        rates.append(0.0)
        params_of.append(-1)
        widths.append(width)

    def args(self, n_features):
        """The op arrays of the compiled loop, ``layout`` (running sum of the widths) last."""
        layout = np.cumsum([0, n_features] + self.widths, dtype=np.int64)
        return self.kinds, self.codes, self.alphas, self.rates, self.params_of, layout

    def buffers(self, batch_size, n_features, dtype, with_grads, with_masks):
        """Flat activation, gradient and mask buffers with room for batch_size rows of each
        activation (see ``fastbp._loop``); the ones not asked for are empty."""
        size = batch_size * (n_features + sum(self.widths))
        acts = np.zeros(size, dtype=dtype)
        dacts = np.zeros(size if with_grads else 0, dtype=dtype)
        use_masks = with_masks and bool(np.any(self.kinds == _loop.OP_DROPOUT))
        masks = np.zeros(size if use_masks else 0, dtype=dtype)
        return acts, dacts, masks


class Sequential:
    """A stack of layers trained with mini-batch gradient descent.

    >>> model = Sequential([Dense(64, 32, activation="relu"), Dense(32, 10)], seed=0)
    >>> history = model.fit(X, y, epochs=10, batch_size=32, loss="softmax_cross_entropy",
    ...                     optimizer=SGD(lr=0.1, momentum=0.9))
    >>> labels = model.predict(X_test)

    Parameters are float32 by default (``dtype='float64'`` for double precision),
    initialized from ``seed``. ``device='cuda'`` keeps parameters and data on an
    NVIDIA GPU (needs numba-cuda).
    """

    def __init__(self, layers, dtype="float32", seed=None, device="cpu"):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastbp layer (Dense, Activation, Dropout, ...); "
                                f"got {type(layer).__name__}")
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        if not dense:
            raise ValueError("layers must include at least one Dense layer")
        for prev, layer in zip(dense, dense[1:]):
            if layer.in_features != prev.out_features:
                raise ValueError(f"layer {layers.index(layer)} (Dense) expects {layer.in_features} "
                                 f"inputs but the Dense layer before it gives {prev.out_features}")
        self.layers = layers
        self.dtype = _dtype(dtype)
        self.seed = seed
        self.n_features = dense[0].in_features
        self.n_outputs = dense[-1].out_features
        self.loss = None
        self.optimizer = None
        self.stop_training = False
        self.history = None
        self.epochs_trained = 0
        self._rng = np.random.default_rng(seed)
        self._init_parameters(dense)
        self.device = "cpu"
        if device != "cpu":
            self.to(device)

    # ----- parameters -------------------------------------------------------------------

    def _init_parameters(self, dense):
        shapes = [(layer.in_features, layer.out_features) for layer in dense]
        n_weights = sum(i * o for i, o in shapes)
        n_biases = sum(o for _, o in shapes)
        self.theta = np.zeros(n_weights + n_biases, dtype=self.dtype)
        self._n_weights = n_weights
        self._shapes = shapes
        for (w, b), (w0, b0) in zip(self._param_views(self.theta), (l.initial_weights(self._rng, self.dtype)
                                                                     for l in dense)):
            w[...] = w0
            b[...] = b0

    def _param_table(self):
        """One row (weight offset, bias offset, fan-in, fan-out) per Dense layer, into theta."""
        rows = []
        w_at, b_at = 0, self._n_weights
        for i, o in self._shapes:
            rows.append((w_at, b_at, i, o))
            w_at += i * o
            b_at += o
        return np.array(rows, dtype=np.int64).reshape(len(rows), 4)

    def _param_views(self, flat):
        """(weight, bias) views of a flat vector laid out like theta, one pair per Dense layer."""
        views = []
        w_at, b_at = 0, self._n_weights
        for i, o in self._shapes:
            views.append((flat[w_at:w_at + i * o].reshape(i, o), flat[b_at:b_at + o]))
            w_at += i * o
            b_at += o
        return views

    @property
    def n_parameters(self):
        return self.theta.size

    def get_weights(self):
        """Copies of [W0, b0, W1, b1, ...] (W as (in_features, out_features))."""
        return [a.copy() for pair in self._param_views(self.theta) for a in pair]

    def set_weights(self, weights):
        views = [a for pair in self._param_views(self.theta) for a in pair]
        if len(weights) != len(views):
            raise ValueError(f"weights must hold {len(views)} arrays (W and b per Dense layer); "
                             f"got {len(weights)}")
        for i, (view, new) in enumerate(zip(views, weights)):
            new = np.asarray(new)
            if new.shape != view.shape:
                raise ValueError(f"weights[{i}] must have shape {view.shape}; got {new.shape}")
            view[...] = new

    def get_flat_weights(self):
        return self.theta.copy()

    def set_flat_weights(self, flat):
        self.theta[...] = flat

    # ----- configuration ----------------------------------------------------------------

    def compile(self, loss, optimizer="sgd"):
        """Set the loss and optimizer (Keras style); ``fit`` can also take them directly."""
        self.loss = losses.get(loss)
        self.optimizer = optimizers.get(optimizer)
        if self.loss.kind == _loop.LOSS_SCE and self.n_outputs < 2:
            raise ValueError("softmax_cross_entropy needs a final layer with at least 2 outputs; "
                             "use binary_cross_entropy for a single output")
        return self

    def to(self, device):
        if device == "cpu":
            self.device = "cpu"
            return self
        if device == "cuda":
            from ._cuda import require_gpu

            require_gpu()
            self.device = "cuda"
            return self
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")

    def _ops(self):
        return _Ops(self.layers, self.loss.link if self.loss is not None else None)

    def summary(self):
        lines = [f"Sequential ({self.dtype.name}, {self.n_parameters:,} parameters, device {self.device})"]
        for i, layer in enumerate(self.layers):
            lines.append(f"  {i}: {layer!r}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Sequential({self.layers!r}, dtype={self.dtype.name!r})"

    # ----- training ---------------------------------------------------------------------

    def fit(self, X, y, epochs=1, batch_size=32, loss=None, optimizer=None, validation_data=None,
            validation_split=0.0, shuffle=True, seed=None, callbacks=(), verbose="auto",
            sample_weight=None):
        """Train with mini-batch gradient descent; returns a ``History``.

        The loss and optimizer come from the arguments or from ``compile``;
        ``validation_data`` is ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``,
        or ``validation_split`` holds out the last fraction of X (before
        shuffling). Every epoch's logs hold loss and metrics, their val_*
        counterparts, lr, seconds and samples_per_second; the first epoch's
        also compile_seconds when fit had to compile its loop (before that
        epoch, so that its speed leaves the compile out; the History keeps it
        as ``history.compile_seconds``).
        """
        if loss is not None or optimizer is not None or self.loss is None:
            self.compile(loss if loss is not None else (self.loss or _missing("loss")),
                         optimizer if optimizer is not None else (self.optimizer or "sgd"))
        epochs = check_int(epochs, "epochs", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        validation_split = check_fraction(validation_split, "validation_split")
        verbose = _progress.mode(verbose)
        callbacks = list(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastbp.callbacks.Callback instances; got {type(cb).__name__}")

        X, y_int, y_float, sw = self._prepare(X, y, sample_weight, "X", "y", "sample_weight")
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, sample_weight_val)")
            val = self._prepare(*validation_data, *([None] if len(validation_data) == 2 else []),
                                "validation_data[0]", "validation_data[1]", "validation_data[2]")
        elif validation_split > 0:
            n_val = int(math.floor(len(X) * validation_split))
            if n_val < 1 or n_val >= len(X):
                raise ValueError(f"validation_split={validation_split} of {len(X)} samples leaves "
                                 f"{n_val} for validation; it must leave at least one sample on each side")
            cut = len(X) - n_val
            val = (X[cut:], y_int[cut:], y_float[cut:], sw[cut:] if sw.size else sw)
            X, y_int, y_float, sw = X[:cut], y_int[:cut], y_float[:cut], sw[:cut] if sw.size else sw
            val = tuple(np.ascontiguousarray(a) for a in val)
            X, y_int, y_float = (np.ascontiguousarray(a) for a in (X, y_int, y_float))
            sw = np.ascontiguousarray(sw)

        rng = np.random.default_rng(seed) if seed is not None else self._rng
        return self._fit_loop((X, y_int, y_float, sw), val, epochs, batch_size, shuffle, rng,
                              callbacks, verbose)

    def _prepare(self, X, y, sample_weight, x_name, y_name, w_name):
        X = check_features(X, self.n_features, self.dtype, x_name)
        y_arr = np.asarray(y)
        if y_arr.ndim == 0:
            raise ValueError(f"{y_name} must be an array with one target per sample; got a scalar")
        check_same_length(X, y_arr, x_name, y_name)
        targets = self.loss.prepare_targets(y_arr, self.n_outputs, y_name)
        if targets.dtype == np.int64:
            y_int, y_float = targets, np.empty((len(X), 0), dtype=self.dtype)
        else:
            y_int, y_float = np.empty(0, dtype=np.int64), np.ascontiguousarray(targets, dtype=self.dtype)
        sw = check_sample_weight(sample_weight, len(X), self.dtype, w_name)
        return X, y_int, y_float, sw

    def _fit_loop(self, data, val, epochs, batch_size, shuffle, rng, callbacks, verbose):
        ops = self._ops()
        n = len(data[0])
        batch_size = min(batch_size, n)
        opt = self.optimizer
        opt.init_state(self.theta.size, self.dtype)
        seed = int(rng.integers(0, 2**40))
        if self.device == "cuda":
            from ._cuda import GPUTrainer

            trainer = GPUTrainer(self, ops, data, batch_size, seed)
        else:
            trainer = _CPUTrainer(self, ops, data, batch_size, seed)
        n_batches = trainer.n_batches
        order = np.arange(n, dtype=np.int64)
        stats = np.zeros(_loop.N_STATS)
        # Compile or load the loop before the first timed epoch, saying so first if it compiles.
        compile_seconds = _first_run.compile_loop(trainer, order, opt.hyper(0.0), verbose)

        history = History()
        self.history = history
        self.stop_training = False
        for cb in [history] + callbacks:
            cb.set_model(self)
            cb.on_train_begin({})
        first_epoch = self.epochs_trained
        for epoch in range(first_epoch, first_epoch + epochs):
            lr = opt.schedule.lr_at(epoch)
            for cb in callbacks:
                cb.on_epoch_begin(epoch, {})
            if shuffle:
                rng.shuffle(order)
            progress = _progress.EpochProgress(verbose, epoch - first_epoch, epochs, n_batches)
            chunk = n_batches if verbose != 1 else max(1, n_batches // 40)
            start = time.perf_counter()
            trainer.begin_epoch(order, opt.hyper(lr))
            status, stopped = _loop.OK, 0
            batch = 0
            while batch < n_batches and status == _loop.OK:
                last = min(n_batches, batch + chunk)
                status, stopped = trainer.run(batch, last)
                if status == _loop.OK and last < n_batches:
                    progress.update(last, last * batch_size, trainer.running_loss(last))
                batch = last
            if status == _loop.OK:
                status, stopped = trainer.end_epoch(stats)
            if status != _loop.OK:
                what = "loss" if status == _loop.NONFINITE_LOSS else "gradient"
                message = (f"training diverged: non-finite {what} at epoch {epoch + 1}, batch "
                           f"{stopped + 1} of {n_batches} (lr {lr:g}); the model keeps its weights "
                           f"from before that step. Try a smaller learning rate.")
                raise DivergenceError(message, epoch, stopped, history)
            seconds = time.perf_counter() - start
            logs = self._logs(stats)
            if val is not None:
                logs.update({"val_" + k: v for k, v in self._evaluate_arrays(*val, ops=ops).items()})
            logs["lr"] = lr
            logs["seconds"] = seconds
            logs["samples_per_second"] = n / seconds if seconds > 0 else math.inf
            if compile_seconds is not None and epoch == first_epoch:
                logs["compile_seconds"] = compile_seconds
            self.epochs_trained = epoch + 1
            progress.close(logs)
            opt.schedule.on_epoch_end(epoch, logs)
            for cb in [history] + callbacks:
                cb.on_epoch_end(epoch, logs)
            if self.stop_training:
                break
        for cb in [history] + callbacks:
            cb.on_train_end({})
        return history

    def objective(self, X, y, sample_weight=None):
        """The full-batch training loss as a function of the flat parameter vector.

        Returns ``f(theta) -> (loss, grad)`` for full-batch optimizers such as
        ``scipy.optimize.minimize(f, model.get_flat_weights(), jac=True)``. ``f``
        loads ``theta`` (laid out like ``self.theta``: all weights, then all
        biases) into the model and returns the mean loss over (X, y), as ``fit``
        defines it and without weight decay, and its gradient as a new float64
        vector of the same layout; (inf, zeros) where the loss or gradient is
        not finite. The data is checked and the buffers allocated once, here.
        Runs on the CPU.
        """
        if self.loss is None:
            raise RuntimeError("objective needs a loss: call compile(loss=...) first")
        X, y_int, y_float, sw = self._prepare(X, y, sample_weight, "X", "y", "sample_weight")
        n = len(X)
        ops = self._ops()
        acts, dacts, masks = ops.buffers(n, self.n_features, self.dtype, True, True)
        scratch = np.empty(n * max(ops.widths), dtype=self.dtype)
        grad = np.zeros_like(self.theta)
        args = ops.args(self.n_features) + (self._param_table(),)
        probs = np.zeros((n, self.n_outputs) if self.loss.kind == _loop.LOSS_SCE else (0, 0), dtype=self.dtype)
        yb_int = np.zeros(n if y_int.size else 0, dtype=np.int64)
        yb_float = np.zeros((n, y_float.shape[1]), dtype=self.dtype)
        swb = np.zeros(n if sw.size else 0, dtype=self.dtype)
        loss_buf = np.zeros(1, dtype=self.dtype)
        velocity = np.zeros_like(self.theta)
        order = np.arange(n, dtype=np.int64)
        # One step of the compiled training loop with a zero learning rate: the
        # same forward and backward code as fit, no second compiled entry point,
        # and an SGD update that leaves theta exactly as it was.
        hyper = optimizers.SGD().hyper(0.0)
        counters = np.zeros(1, dtype=np.int64)
        stats = np.zeros(_loop.N_STATS)

        def f(theta):
            self.theta[...] = theta
            status, _ = _loop.train_batches(
                X, y_int, y_float, sw, order, n, 0, 1, *args, acts, dacts, scratch, masks, probs,
                yb_int, yb_float, swb, loss_buf, self.theta, grad, velocity, velocity,
                self._n_weights, _loop.OPT_SGD, hyper, counters, self.loss.kind, 0, stats)
            if status != _loop.OK:
                return math.inf, np.zeros(grad.size)
            return float(loss_buf[0]), grad.astype(np.float64)

        return f

    def _logs(self, stats):
        logs = {"loss": stats[_loop.S_LOSS] / stats[_loop.S_WEIGHT]}
        if self.loss.kind == _loop.LOSS_SCE:
            logs["accuracy"] = stats[_loop.S_CORRECT] / stats[_loop.S_COUNT]
        elif self.loss.kind == _loop.LOSS_BCE:
            logs["accuracy"] = stats[_loop.S_CORRECT] / stats[_loop.S_ELEMENTS]
        else:
            logs["mse"] = stats[_loop.S_SQUARED] / stats[_loop.S_ELEMENTS]
            logs["mae"] = stats[_loop.S_ABSOLUTE] / stats[_loop.S_ELEMENTS]
        return logs

    # ----- inference --------------------------------------------------------------------

    def _evaluate_arrays(self, X, y_int, y_float, sw, ops=None, batch_size=1024):
        ops = ops or self._ops()
        batch_size = min(batch_size, len(X))
        if self.device == "cuda":
            # Outputs from the device, loss and metrics from the same compiled code as the CPU.
            from ._cuda import predict

            out = predict(self, ops, X, batch_size)
            probs = np.zeros(out.shape if self.loss.kind == _loop.LOSS_SCE else (0, 0), dtype=self.dtype)
            loss = np.zeros(1, dtype=self.dtype)
            stats = np.zeros(_loop.N_STATS)
            _loop.loss_forward(loss, probs, out, y_int, y_float, sw, self.loss.kind)
            _loop.accumulate_stats(stats, loss[0], out, y_int, y_float, sw, self.loss.kind)
            return self._logs(stats)
        acts, _, masks = ops.buffers(batch_size, self.n_features, self.dtype, False, False)
        probs = np.zeros((batch_size, self.n_outputs) if self.loss.kind == _loop.LOSS_SCE else (0, 0),
                         dtype=self.dtype)
        stats = np.zeros(_loop.N_STATS)
        _loop.evaluate_batches(X, y_int, y_float, sw, batch_size, *ops.args(self.n_features),
                               self._param_table(), self.theta, acts, masks, probs, np.zeros(1, dtype=self.dtype), self.loss.kind, stats)
        return self._logs(stats)

    def evaluate(self, X, y, sample_weight=None, batch_size=1024):
        """Loss and metrics on (X, y) in inference mode, as a dict."""
        if self.loss is None:
            raise RuntimeError("evaluate needs a loss: call compile(loss=...) or fit first")
        batch_size = check_int(batch_size, "batch_size")
        return self._evaluate_arrays(*self._prepare(X, y, sample_weight, "X", "y", "sample_weight"),
                                     batch_size=batch_size)

    def decision_function(self, X, batch_size=1024):
        """The network's raw outputs (logits for classification losses), (n_samples, O)."""
        X = check_features(X, self.n_features, self.dtype)
        batch_size = min(check_int(batch_size, "batch_size"), len(X))
        ops = self._ops()
        if self.device == "cuda":
            from ._cuda import predict

            return predict(self, ops, X, batch_size)
        acts, _, masks = ops.buffers(batch_size, self.n_features, self.dtype, False, False)
        out = np.empty((len(X), self.n_outputs), dtype=self.dtype)
        _loop.predict_batches(out, X, batch_size, *ops.args(self.n_features), self._param_table(),
                              self.theta, acts, masks)
        return out

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities: softmax of the logits (softmax cross-entropy) or sigmoid (BCE)."""
        if self.loss is None or self.loss.link is None:
            raise RuntimeError("predict_proba needs a classification loss (softmax_cross_entropy or "
                               "binary_cross_entropy): call compile or fit first")
        z = self.decision_function(X, batch_size)
        from .kernels import cpu

        p = np.empty_like(z)
        (cpu.softmax_forward if self.loss.link == "softmax" else cpu.sigmoid_forward)(p, z)
        return p

    def predict(self, X, batch_size=1024):
        """Class labels for classification losses, the network's outputs otherwise."""
        if self.loss is not None and self.loss.kind == _loop.LOSS_SCE:
            return np.argmax(self.decision_function(X, batch_size), axis=1)
        if self.loss is not None and self.loss.kind == _loop.LOSS_BCE:
            return (self.decision_function(X, batch_size) > 0).astype(np.int64)
        return self.decision_function(X, batch_size)

    # ----- persistence ------------------------------------------------------------------

    def get_config(self):
        opt = self.optimizer
        return {
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
            "dtype": self.dtype.name,
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "loss": self.loss.name if self.loss is not None else None,
            "optimizer": opt.get_config() if opt is not None else None,
            "schedule": opt.schedule.get_config() if opt is not None else None,
            "optimizer_steps": opt.steps if opt is not None else 0,
            "epochs_trained": self.epochs_trained,
        }

    def save(self, path):
        """Write the model to one .npz file: architecture as JSON, parameters, optimizer state."""
        from . import __version__

        arrays = {
            "format": np.array(FORMAT),
            "format_version": np.array(FORMAT_VERSION),
            "fastbp_version": np.array(__version__),
            "architecture": np.array(json.dumps(self.get_config())),
            "theta": self.theta,
        }
        if self.optimizer is not None and self.optimizer.state is not None:
            for i, s in enumerate(self.optimizer.state):
                arrays[f"optimizer_state_{i}"] = s
        with open(path, "wb") as fh:
            np.savez(fh, **arrays)


class _CPUTrainer:
    """The CPU backend of fit: buffers for one batch size around ``_loop.train_batches``."""

    def __init__(self, model, ops, data, batch_size, seed):
        self.model, self.ops, self.batch_size, self.seed = model, ops, batch_size, seed
        self.X, self.y_int, self.y_float, self.sw = data
        self.n_batches = -(-len(self.X) // batch_size)
        dtype = model.dtype
        self.acts, self.dacts, self.masks = ops.buffers(batch_size, model.n_features, dtype, True, True)
        self.scratch = np.empty(batch_size * max(ops.widths), dtype=dtype)
        self.grad = np.zeros_like(model.theta)
        self.args = ops.args(model.n_features) + (model._param_table(),)
        sce = model.loss.kind == _loop.LOSS_SCE
        self.probs = np.zeros((batch_size, model.n_outputs) if sce else (0, 0), dtype=dtype)
        self.yb_int = np.zeros(batch_size if self.y_int.size else 0, dtype=np.int64)
        self.yb_float = np.zeros((batch_size, self.y_float.shape[1]), dtype=dtype)
        self.swb = np.zeros(batch_size if self.sw.size else 0, dtype=dtype)
        self.loss_buf = np.zeros(1, dtype=dtype)
        opt = model.optimizer
        self.state1 = opt.state[0]
        self.state2 = opt.state[1] if len(opt.state) > 1 else opt.state[0]
        self.counters = np.zeros(1, dtype=np.int64)
        self.stats = np.zeros(_loop.N_STATS)

    def begin_epoch(self, order, hyper):
        self.order, self.hyper = order, hyper
        self.stats[:] = 0.0

    def run(self, first, last):
        model, opt = self.model, self.model.optimizer
        self.counters[0] = opt.steps
        status, stopped = _loop.train_batches(
            self.X, self.y_int, self.y_float, self.sw, self.order, self.batch_size, first, last,
            *self.args, self.acts, self.dacts, self.scratch, self.masks, self.probs, self.yb_int, self.yb_float, self.swb, self.loss_buf,
            model.theta, self.grad, self.state1, self.state2, model._n_weights, opt.kind, self.hyper,
            self.counters, model.loss.kind, self.seed, self.stats)
        opt.steps = int(self.counters[0])
        return status, stopped

    def running_loss(self, done):
        return self.stats[_loop.S_LOSS] / max(self.stats[_loop.S_WEIGHT], 1e-300)

    def end_epoch(self, stats):
        stats[:] = self.stats
        return _loop.OK, self.n_batches


def _missing(what):
    raise ValueError(f"fit needs a {what}: pass {what}=... or call compile first")


def load(path):
    """Load a model written by ``Sequential.save``; it predicts bit for bit as saved.

    A file that is not such a model, or a damaged one, raises a ValueError that names it.
    """
    try:
        data = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except Exception as err:
        raise ValueError(f"{path!r} is not a fastbp model file (not a readable .npz archive: {err})") from err
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path!r} is not a fastbp model file (a single .npy array, not a .npz archive)")
    with data:
        try:
            # Read every member now: a damaged one (bad CRC, cut short) fails here, with the path.
            arrays = {key: data[key] for key in data.files}
        except Exception as err:
            raise ValueError(f"{path!r} is a damaged .npz archive: {err}") from err
    if "format" not in arrays or str(arrays["format"]) != FORMAT:
        raise ValueError(f"{path!r} is not a fastbp model file (no '{FORMAT}' marker; keys: {sorted(arrays)})")
    missing = [key for key in ("format_version", "architecture", "theta") if key not in arrays]
    if missing:
        raise ValueError(f"{path!r} is corrupt: it lacks the arrays {missing}")
    version = int(arrays["format_version"])
    if version > FORMAT_VERSION:
        raise ValueError(f"{path!r} has model format version {version}; this fastbp reads up to "
                         f"{FORMAT_VERSION}: upgrade fastbp")
    try:
        config = json.loads(str(arrays["architecture"]))
        layers = [layer_from_config(entry["type"], entry["config"]) for entry in config["layers"]]
        model = Sequential(layers, dtype=config["dtype"], seed=config.get("seed"))
        loss = losses.get(config["loss"]) if config.get("loss") else None
        optimizer = (optimizers.from_config(config["optimizer"], config["schedule"])
                     if config.get("optimizer") else None)
    except (KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path!r} has a corrupt architecture record: {err!r}") from err
    theta = arrays["theta"]
    if theta.shape != model.theta.shape or theta.dtype != model.theta.dtype:
        raise ValueError(f"{path!r} is corrupt: its parameters have shape {theta.shape} and dtype "
                         f"{theta.dtype}; the architecture needs {model.theta.shape} {model.theta.dtype}")
    model.theta[...] = theta
    model.epochs_trained = config.get("epochs_trained", 0)
    model.loss = loss
    if optimizer is not None:
        model.optimizer = optimizer
        states = [arrays[k] for k in sorted(arrays) if k.startswith("optimizer_state_")]
        if states:
            optimizer.state = states
            optimizer.steps = int(config.get("optimizer_steps", 0))
    return model
