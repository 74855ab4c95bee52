"""Sequential: build, fit, evaluate, predict, save and load a dense network.

The model keeps every parameter in one flat vector ``theta`` (all weights,
then all biases, then the norm layers' gamma and beta), laid out by
``fastbp.lowering``, so the optimizer updates the whole network in one kernel
call and saving is one array; BatchNorm's running statistics, which are no
parameters, sit in a second vector, ``buffers``. The model holds
the layers, the parameters, the loss and the optimizer; ``fit`` checks its
arguments and hands over to ``fastbp._fit`` (data once, then the epochs), which
runs them on a backend of ``fastbp.backends``.
"""
import contextlib
import copy
import dataclasses

import numpy as np

from . import _fit, _mpi, _progress, backends, export, interop, losses, optimizers
from ._fit import DivergenceError  # noqa: F401 (fastbp.DivergenceError)
from ._persist import check_save_path, load_model, save_model
from ._validation import (check_dtype, check_features, check_fraction, check_int, check_weight_values,
                          reject_sparse)
from .callbacks import Callback
from .kernels import registry
from .layers import NORM_LAYERS, BatchNorm, Dense, Layer
from .lowering import lower, norm_layout, norm_views, param_views



def _infer_widths(layers):
    """The layers, with each Dense layer of unknown in_features after a known width given it.

    Such a layer is copied first, so that a layer object shared with another model keeps
    inferring its own width. Only a first Dense layer with nothing of known width before it
    is left unknown: the data's width at the first fit decides it.
    """
    out, width = [], None
    for layer in layers:
        if isinstance(layer, Dense):
            if layer.in_features is None and width is not None:
                layer = copy.copy(layer)
                layer.in_features = width
            width = layer.out_features
        elif isinstance(layer, NORM_LAYERS) and width is None:
            width = layer.num_features
        out.append(layer)
    return out


def _check_widths(layers, n_features):
    """Each Dense layer takes the width before it; each norm layer normalizes exactly that width."""
    width, prev = n_features, None
    for i, layer in enumerate(layers):
        if isinstance(layer, Dense):
            if prev is not None and layer.in_features != width:
                raise ValueError(f"layer {i} (Dense) expects {layer.in_features} "
                                 f"inputs but the Dense layer before it gives {width}")
            width, prev = layer.out_features, layer
        elif isinstance(layer, NORM_LAYERS) and layer.num_features != width:
            source = "the Dense layer before it gives" if prev is not None else "the model's input has"
            raise ValueError(f"layer {i} ({type(layer).__name__}) normalizes num_features="
                             f"{layer.num_features} features but {source} {width}")


@dataclasses.dataclass(frozen=True)
class _FitArguments:
    """fit's arguments that need no data, checked before fit changes the model or reads X."""

    epochs: int
    batch_size: int
    validation_split: float
    verbose: int
    callbacks: tuple

    @classmethod
    def checked(cls, epochs, batch_size, validation_split, verbose, callbacks):
        """The checked values; TypeError or ValueError naming the first argument fit cannot use."""
        epochs = check_int(epochs, "epochs", minimum=1)
        batch_size = check_int(batch_size, "batch_size", minimum=1)
        validation_split = check_fraction(validation_split, "validation_split")
        verbose = _progress.mode(verbose)
        callbacks = tuple(callbacks)
        for cb in callbacks:
            if not isinstance(cb, Callback):
                raise TypeError(f"callbacks must be fastbp.callbacks.Callback instances; got {type(cb).__name__}")
        return cls(epochs, batch_size, validation_split, verbose, callbacks)


class Sequential:
    """A stack of layers trained with mini-batch gradient descent.

    The parameters live in one flat vector, ``theta`` (every weight matrix, then every
    bias, then the norm layers' gamma and beta); BatchNorm's running statistics in
    ``buffers``.

    Parameters
    ----------
    layers : list of Layer
        The layers in order: ``Dense``, activation layers, ``Dropout``, ``BatchNorm``,
        ``LayerNorm``; at least one Dense, each layer's width matching the one before it.
        A Dense layer given only its out_features (``Dense(32)``) takes its in_features
        from the width before it; a first one takes it from the data at the first ``fit``,
        and until then the model is not built (``built`` is False, ``theta`` None).
    dtype : {'float32', 'float64'}, default 'float32'
        The precision of the parameters and of the training arithmetic.
    seed : int, numpy Generator or None, default None
        Seeds the initial weights and, unless ``fit`` is given its own, the shuffles and
        the dropout masks.
    device : {'cpu', 'cuda'}, default 'cpu'
        'cuda' keeps parameters and data on an NVIDIA GPU (needs numba-cuda).

    Raises
    ------
    ValueError
        No layers, no Dense layer, or widths that do not match.
    TypeError
        A layer that is not a fastbp layer.

    See Also
    --------
    fastbp.load : Load a saved model.
    fastbp.MLPClassifier : The scikit-learn estimator built on it.

    Examples
    --------
    >>> import fastbp
    >>> X, y = fastbp.datasets.load_digits()
    >>> model = fastbp.Sequential([fastbp.Dense(64, 32, activation="relu"), fastbp.Dense(32, 10)], seed=0)
    >>> history = model.fit(X, y, epochs=2, loss="softmax_cross_entropy", verbose=0)
    >>> model.predict(X[:3]).shape
    (3,)
    """

    def __init__(self, layers, dtype="float32", seed=None, device="cpu"):
        layers = list(layers)
        if not layers:
            raise ValueError("layers must hold at least one layer")
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"layers[{i}] must be a fastbp layer (Dense, Activation, Dropout, ...); "
                                f"got {type(layer).__name__}")
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ValueError("layers must include at least one Dense layer")
        layers = _infer_widths(layers)
        dense = [layer for layer in layers if isinstance(layer, Dense)]
        _check_widths(layers, dense[0].in_features)
        self.layers = layers
        self.dtype = check_dtype(dtype)
        self.seed = seed
        self.n_features = dense[0].in_features
        self.n_outputs = dense[-1].out_features
        self.loss = None
        self.optimizer = None
        self.stop_training = False
        self.history = None
        self.epochs_trained = 0
        self._rng = np.random.default_rng(seed)
        # (mean, scale) that the model standardizes its inputs with (set_input_scaling), and the
        # labels that its class indices stand for (the command line's classes): None by default.
        self.input_scaling = None
        self.classes = None
        # Where the command line found the target in the training data (a dict), for its
        # evaluate and predict on files of the same layout.
        self.data_format = None
        if self.n_features is None:
            # Dense(out_features) first: the parameters are made at the first fit, from X's width.
            self.theta = self.buffers = None
        else:
            self._init_parameters(dense)
        self.device = "cpu"
        if device != "cpu":
            self.to(device)

    # ----- parameters -------------------------------------------------------------------

    @property
    def built(self):
        """Whether the parameters exist: False until the first fit of a model whose first
        Dense layer infers its in_features."""
        return self.theta is not None

    def _require_built(self, what):
        if self.theta is None:
            raise RuntimeError(f"{what} needs a built model: the first Dense layer's in_features is "
                               f"inferred from the data at the first fit; call fit first, or give it "
                               f"as Dense(in_features, out_features)")

    def _build_from(self, X, argument="X"):
        """Give the first Dense layer X's width and make the parameters (the first fit of a
        model whose width is inferred)."""
        if self.theta is not None:
            return
        reject_sparse(X, argument)
        shape = np.shape(X)
        if len(shape) != 2:
            raise ValueError(f"{argument} must be 2-D of shape (n_samples, n_features), which gives the "
                             f"first Dense layer its in_features; got shape {shape}")
        first = next(i for i, layer in enumerate(self.layers) if isinstance(layer, Dense))
        self.layers[first] = copy.copy(self.layers[first])
        self.layers[first].in_features = _check_width(shape[1], argument)
        self.layers = _infer_widths(self.layers)
        _check_widths(self.layers, shape[1])
        self.n_features = shape[1]
        self._init_parameters([layer for layer in self.layers if isinstance(layer, Dense)])

    def _init_parameters(self, dense):
        shapes = [(layer.in_features, layer.out_features) for layer in dense]
        n_weights = sum(i * o for i, o in shapes)
        layout = norm_layout(self.layers, shapes)
        self.theta = np.zeros(layout.n_parameters, dtype=self.dtype)
        # BatchNorm's running statistics: not trained, but part of the model (saved, loaded).
        self.buffers = np.zeros(layout.n_buffers, dtype=self.dtype)
        self.batches_tracked = 0
        self._n_weights = n_weights
        self._shapes = shapes
        for (w, b), (w0, b0) in zip(self._param_views(self.theta), (l.initial_weights(self._rng, self.dtype)
                                                                     for l in dense)):
            w[...] = w0
            b[...] = b0
        for views in self._norm_views(self.theta):
            if views is not None:
                gamma, _, _, running_var = views
                if gamma is not None:
                    gamma[...] = 1.0
                if running_var is not None:
                    running_var[...] = 1.0

    def _norm_views(self, flat):
        """Per layer, (gamma, beta, running_mean, running_var) views of a norm layer (None where it
        has no such part; gamma and beta of ``flat``, laid out like theta), None for other layers."""
        return norm_views(flat, self.buffers, self.layers, self._shapes)

    def _weight_list(self, flat):
        """Views of the trained arrays in layer order: W, b per Dense layer, gamma, beta per affine norm."""
        out = []
        dense = iter(self._param_views(flat))
        for layer, views in zip(self.layers, self._norm_views(flat)):
            if isinstance(layer, Dense):
                out.extend(next(dense))
            elif views is not None and views[0] is not None:
                out.extend(views[:2])
        return out

    def _param_views(self, flat):
        """(weight, bias) views of a flat vector laid out like theta, one pair per Dense layer."""
        return param_views(flat, self._shapes)

    @property
    def n_parameters(self):
        self._require_built("n_parameters")
        return self.theta.size

    def get_weights(self):
        """Copies of the trained arrays in layer order.

        Returns
        -------
        list of ndarray
            [W0, b0, W1, b1, ...] (W as (in_features, out_features)), with gamma, beta
            where an affine norm layer sits.

        Raises
        ------
        RuntimeError
            For a model not built yet.
        """
        self._require_built("get_weights")
        return [a.copy() for a in self._weight_list(self.theta)]

    def set_weights(self, weights):
        """Set the trained arrays from a list laid out as ``get_weights`` returns it.

        Every array is checked before any is written, so a refused list leaves the model as
        it was.

        Parameters
        ----------
        weights : list of array-like
            One array per weight, bias, gamma and beta, of their shapes; real and finite.

        Raises
        ------
        ValueError
            The wrong number of arrays, an array of the wrong shape, or values that are not
            real, finite numbers.
        RuntimeError
            For a model not built yet.
        """
        self._require_built("set_weights")
        views = self._weight_list(self.theta)
        if len(weights) != len(views):
            raise ValueError(f"weights must hold {len(views)} arrays (W and b per Dense layer, gamma and "
                             f"beta per affine norm layer); got {len(weights)}")
        for i, (view, new) in enumerate(zip(views, weights)):
            new = np.asarray(new)
            if new.shape != view.shape:
                raise ValueError(f"weights[{i}] must have shape {view.shape}; got {new.shape}")
            check_weight_values(new, f"weights[{i}]")
        for view, new in zip(views, weights):
            view[...] = new

    def state_dict(self, expanded=False):
        """Copies of the parameters (and BatchNorm's buffers) with PyTorch's names and layouts.

        {"<i>.weight": (out_features, in_features), "<i>.bias": (out_features,)}, i the
        layer's index in ``layers``, as ``nn.Sequential(nn.Linear, ...).state_dict()``
        names them (``fastbp.interop`` tells how the indices line up); norm layers
        add nn.BatchNorm1d's and nn.LayerNorm's keys.

        Parameters
        ----------
        expanded : bool, default False
            Key by the modules of ``to_torch``'s nn.Sequential instead, where each fused
            activation is a module of its own: ``[Dense(64, 256, activation="relu"),
            Dropout(0.2), Dense(256, 10)]`` gives "0.*" and "3.*", the keys of
            ``nn.Sequential(nn.Linear, nn.ReLU, nn.Dropout, nn.Linear)``.

        Returns
        -------
        dict of str to ndarray
            The arrays by PyTorch's names.

        Raises
        ------
        RuntimeError
            For a model not built yet.
        ValueError
            With ``expanded`` for a model with ``input_scaling``, which no key holds
            (``to_torch`` folds it into the first Linear).
        """
        self._require_built("state_dict")
        return interop.expanded_state_dict(self) if expanded else interop.state_dict(self)

    def to_torch(self):
        """The model as a ``torch.nn.Sequential`` (imports torch only now) whose output is
        ``decision_function``'s, to the dtype's rounding.

        Each fused activation becomes its own module after its ``nn.Linear``; Dropout,
        BatchNorm (with its running statistics) and LayerNorm map to ``nn.Dropout``,
        ``nn.BatchNorm1d`` and ``nn.LayerNorm``; a final softmax or sigmoid that the loss
        applies itself is left out, so the module returns logits. An input
        standardization (``set_input_scaling``) is folded into the first Linear layer.
        The module is in eval mode, its parameters copies in the model's dtype.

        Returns
        -------
        torch.nn.Sequential

        Raises
        ------
        ImportError
            When PyTorch is not installed.
        RuntimeError
            For a model not built yet.
        """
        self._require_built("to_torch")
        return interop.to_torch(self)

    def load_state_dict(self, state_dict):
        """Load parameters named and laid out as ``state_dict`` gives them, cast to the model's dtype.

        Parameters
        ----------
        state_dict : dict of str to array-like
            NumPy arrays, PyTorch tensors, anything ``numpy.asarray`` takes.

        Raises
        ------
        ValueError
            A missing or unexpected key, an array of the wrong shape, or values that are not
            finite real numbers (or a negative running variance); nothing is loaded then.
        RuntimeError
            For a model not built yet.
        """
        self._require_built("load_state_dict")
        interop.load_state_dict(self, state_dict)

    def get_flat_weights(self):
        self._require_built("get_flat_weights")
        return self.theta.copy()

    def set_flat_weights(self, flat):
        self._require_built("set_flat_weights")
        self.theta[...] = flat

    def set_input_scaling(self, mean, scale):
        """Standardize every input: the network sees (X - mean) / scale.

        Applied by ``fit``, ``evaluate``, ``predict``, ``decision_function``,
        ``objective``, ``to_onnx`` and ``to_torch``, and saved with the model, so that
        the model takes raw features. ``fastbp train`` sets it from the training
        features of a .npz or .csv unless given ``--no-scale``.

        Parameters
        ----------
        mean : array_like of shape (I,) or None
            Subtracted from each feature; None (with ``scale`` None) removes the scaling.
        scale : array_like of shape (I,) or None
            Each centred feature is divided by it; finite and > 0.

        Returns
        -------
        self : Sequential

        Raises
        ------
        RuntimeError
            For a model not built yet.
        ValueError
            For a shape other than (I,), or a value that is not finite (or a scale <= 0).
        """
        if mean is None and scale is None:
            self.input_scaling = None
            return self
        self._require_built("set_input_scaling")
        checked = []
        for name, value in (("mean", mean), ("scale", scale)):
            try:
                arr = np.array(value, dtype=np.float64)
            except (TypeError, ValueError) as err:
                raise ValueError(f"{name} must be numbers of shape ({self.n_features},); got {value!r}") from err
            if arr.shape != (self.n_features,):
                raise ValueError(f"{name} must have shape ({self.n_features},), one value per feature; "
                                 f"got shape {arr.shape}")
            if not np.all(np.isfinite(arr)) or (name == "scale" and np.any(arr <= 0)):
                raise ValueError(f"{name} must be finite{' and > 0' if name == 'scale' else ''}; got "
                                 f"values in [{arr.min()}, {arr.max()}]")
            checked.append(arr)
        self.input_scaling = tuple(checked)
        return self

    def _scaled(self, X):
        """X, checked already, as the network sees it: standardized when the model is."""
        if self.input_scaling is None:
            return X
        mean, scale = self.input_scaling
        return np.ascontiguousarray((X - mean) / scale, dtype=self.dtype)

    def _restore_preprocessing(self, config):
        """input_scaling, classes and data_format from a saved record (absent in older files)."""
        scaling = config.get("input_scaling")
        if scaling is not None:
            self.set_input_scaling(scaling["mean"], scaling["scale"])
        classes = config.get("classes")
        self.classes = None if classes is None else np.asarray(classes)
        self.data_format = config.get("data_format")

    # ----- configuration ----------------------------------------------------------------

    def compile(self, loss, optimizer="sgd"):
        """Set the loss and optimizer (Keras style); ``fit`` can also take them directly.

        Parameters
        ----------
        loss : str or Loss
            A loss name ('softmax_cross_entropy', 'mse', ...) or a ``fastbp.losses`` object.
        optimizer : str or Optimizer, default 'sgd'
            An optimizer name or object (``SGD``, ``Adam``, ...).

        Returns
        -------
        Sequential
            The model itself.

        Raises
        ------
        ValueError
            An unknown loss or optimizer, or softmax cross-entropy on one output.
        """
        self.loss = losses.get(loss)
        self.optimizer = optimizers.get(optimizer)
        if self.loss.kind == registry.LOSS_SCE and self.n_outputs < 2:
            raise ValueError("softmax_cross_entropy needs a final layer with at least 2 outputs; "
                             "use binary_cross_entropy for a single output")
        return self

    def to(self, device):
        """Train and predict on ``device`` from now on.

        Parameters
        ----------
        device : {'cpu', 'cuda'}
            The device; 'cuda' needs numba-cuda and a GPU.

        Returns
        -------
        Sequential
            The model itself.

        Raises
        ------
        ValueError
            An unknown device.
        """
        if device == "cpu":
            self.device = "cpu"
            return self
        if device == "cuda":
            backends.get("cuda").require_gpu()
            self.device = "cuda"
            return self
        raise ValueError(f"device must be 'cpu' or 'cuda'; got {device!r}")

    def lowered(self):
        """The network lowered for the backends (``fastbp.lowering``), for the current loss.

        Returns
        -------
        fastbp.lowering.Lowered
            The op arrays and the parameter table.

        Raises
        ------
        RuntimeError
            For a model not built yet.
        """
        self._require_built("lowered")
        return lower(self.layers, self.loss.link if self.loss is not None else None, self.n_features)

    def summary(self):
        """A text summary: dtype, parameter count, device and the layers.

        Returns
        -------
        str
            One line for the model (a model not built yet says so instead of counting its
            parameters), one per layer.
        """
        size = (f"{self.n_parameters:,} parameters" if self.built
                else "not built: the first Dense layer's in_features comes from the data at the first fit")
        lines = [f"Sequential ({self.dtype.name}, {size}, device {self.device})"]
        for i, layer in enumerate(self.layers):
            lines.append(f"  {i}: {layer!r}")
        return "\n".join(lines)

    def __repr__(self):
        return f"Sequential({self.layers!r}, dtype={self.dtype.name!r})"

    # ----- training ---------------------------------------------------------------------

    def fit(self, X, y, epochs=1, batch_size=32, loss=None, optimizer=None, validation_data=None,
            validation_split=0.0, shuffle=True, seed=None, callbacks=(), verbose="auto",
            sample_weight=None, class_weight=None, comm=None):
        """Train with mini-batch gradient descent; returns a ``History``.

        The loss and optimizer come from the arguments or from ``compile``;
        ``validation_data`` is ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``,
        or ``validation_split`` holds out the last fraction of X (before
        shuffling). Every epoch's logs hold loss and metrics, their val_*
        counterparts, lr, seconds and samples_per_second; the first epoch's
        also compile_seconds when fit had to compile its loop (before that
        epoch, so that its speed leaves the compile out; the History keeps it
        as ``history.compile_seconds``).

        ``verbose``: "auto" (and 1) draws a progress bar where it is watched live,
        on a terminal or in a Jupyter notebook, and prints one line per epoch
        elsewhere (a log, a pipe); 2 is one line per epoch, 0 nothing. The note
        that the loop is being compiled shows whenever progress does.

        ``class_weight`` (None, 'balanced' or a dict {class: weight}) multiplies
        each training sample's ``sample_weight`` by the weight of its class, as
        scikit-learn's linear models do; the classes are the labels 0..O-1 of
        softmax cross-entropy, or 0/1 for binary cross-entropy with one output.
        'balanced' gives class c the weight n_samples / (n_classes * count_c),
        counted on the training samples (after ``validation_split``); validation
        data keeps its own weights. A class missing from the dict weighs 1.

        ``seed`` (None: the model's own generator) is an int, or a NumPy
        ``Generator`` or ``RandomState`` used as it is: each epoch its
        ``shuffle`` permutes the order of the samples, so a ``RandomState``
        shuffles as scikit-learn's MLPs do with theirs; the dropout masks' seed
        is drawn from it first, and only when the network has dropout.

        ``comm`` (an mpi4py communicator, e.g. ``MPI.COMM_WORLD``; needs
        ``fastbp[mpi]``) trains data-parallel: run the same script on every rank
        (``mpiexec -n 4 python train.py``) with the same data and seed.
        ``batch_size`` is the global batch; each rank computes the gradient of its
        share of every batch, one allreduce sums them, and every rank applies the
        same update, so the result equals one process's (to rounding, float64:
        1e-9). Logs and callbacks see global values on every rank; only rank 0
        prints and writes files. The ranks first compare what they were given
        (one allgather): other data shapes, another model or another
        ``batch_size`` on any rank raises ``DataMismatchError`` on every rank.
        An exception on one rank aborts the job (``comm.Abort(1)``); a
        divergence raises ``DivergenceError`` on all. Wrap the whole script in
        ``fastbp.abort_on_error(comm)`` so that an exception before ``fit``
        (loading the data) ends the job too.
        X may be a memory map (``np.load(path, mmap_mode='r')``, in the model's
        dtype, else it is converted in memory): each rank then reads the rows of
        its shares and checks one block of rows for NaN (``validation_split``
        copies X; pass ``validation_data`` instead). CPU models only. Dropout
        draws each row's mask from its place in the global batch, so it does
        not depend on the number of ranks. BatchNorm is refused (each rank would
        normalize its share alone); LayerNorm works.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Training features (standardized first where the model has an input scaling).
            The first fit of a model whose first Dense layer was given only its
            out_features takes that layer's in_features from X's width and makes the
            parameters.
        y : array-like of shape (N,) or (N, O)
            Integer class labels for the classification losses, targets otherwise.
        epochs : int, default 1
            Passes over the data.
        batch_size : int, default 32
            Samples per step (the global batch over MPI).
        loss : str or Loss, default None
            The loss; default the one ``compile`` set.
        optimizer : str or Optimizer, default None
            The optimizer; default the one ``compile`` set, else SGD.
        validation_data : tuple, default None
            ``(X_val, y_val)`` or ``(X_val, y_val, w_val)``.
        validation_split : float, default 0.0
            The last fraction of X held out for validation.
        shuffle : bool, default True
            Permute the samples every epoch.
        seed : int, numpy Generator, RandomState or None, default None
            The shuffles' and dropout masks' generator; None: the model's own.
        callbacks : sequence of Callback, default ()
            Called around each epoch.
        verbose : {'auto', 0, 1, 2}, default 'auto'
            Progress output: 'auto' (and 1) draws a bar on a terminal or in a Jupyter
            notebook and prints one line per epoch elsewhere (a log, a pipe); 2 is one line
            per epoch, 0 nothing.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples in the loss and metrics.
        class_weight : None, 'balanced' or dict, default None
            Weights of the classes, multiplying ``sample_weight``.
        comm : mpi4py communicator, default None
            Train data-parallel over MPI.

        Returns
        -------
        History
            The per-epoch logs.

        Raises
        ------
        DivergenceError
            A step's loss or gradient was not finite; the model is left as before it.
        ValueError
            Data or arguments the fit cannot use, named in the message.
        TypeError
            An argument of the wrong type (batch_size or epochs not an integer, a seed that is
            not an int or a generator, ...), named in the message.
        MonitorError
            A callback or schedule watches a val_* quantity without validation data.
        DataMismatchError
            With ``comm``: the ranks were given different data shapes, models or batch sizes.
        """
        if loss is not None or optimizer is not None or self.loss is None:
            self.compile(loss if loss is not None else (self.loss or _missing("loss")),
                         optimizer if optimizer is not None else (self.optimizer or "sgd"))
        if comm is not None:
            self._check_distributable(comm)
        checked = _FitArguments.checked(epochs, batch_size, validation_split, verbose, callbacks)
        self._build_from(X)
        # Over MPI, from here on an error on one rank (its data, a callback) aborts every rank:
        # the others would wait in a collective for good.
        guard = (contextlib.nullcontext() if comm is None
                 else _mpi.abort_on_error(comm, agreed=(_fit.DivergenceError, _mpi.DataMismatchError)))
        with guard:
            part = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
            train, val = self._fit_data(X, y, sample_weight, validation_data, checked.validation_split,
                                        class_weight, part)
            if comm is not None:
                self._agree_on_fit(comm, train, val, checked.batch_size)
            # A schedule or callback that watches val_* needs validation data: say so before any epoch.
            for watcher in [self.optimizer.schedule, *checked.callbacks]:
                watcher.check_logs(val is not None)
            rng = self._rng if seed is None else _fit.shuffling_rng(seed)
            return self._run_epochs(train, val, checked, shuffle, rng, comm)

    def _check_distributable(self, comm):
        """ValueError where data-parallel training over ``comm`` cannot train this model."""
        _mpi.check_comm(comm)
        if self.device != "cpu":
            raise ValueError(f"comm= (data-parallel training over MPI) runs CPU models; this model "
                             f"is on {self.device!r}: call model.to('cpu') first")
        batchnorms = [i for i, layer in enumerate(self.layers) if isinstance(layer, BatchNorm)]
        if batchnorms:
            raise ValueError(f"comm= (data-parallel training over MPI) does not train BatchNorm layers "
                             f"(layers {batchnorms}): each rank would normalize its share of a batch "
                             f"with that share's statistics, not the global batch's. LayerNorm works.")

    def _fit_data(self, X, y, sample_weight, validation_data, validation_split, class_weight, part):
        """fit's (train, val), each (X, Targets) checked and converted once (val None without
        validation), the training samples weighed by class_weight."""
        train = self._prepare(X, y, sample_weight, "X", "y", "sample_weight", part)
        val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (X_val, y_val) or (X_val, y_val, sample_weight_val)")
            val = self._prepare(*validation_data, *([None] if len(validation_data) == 2 else []),
                                "validation_data[0]", "validation_data[1]", "validation_data[2]", part)
        elif validation_split > 0:
            train, val = _fit.split_validation(*train, validation_split)
        return _fit.weigh_classes(self, train, class_weight), val

    def _agree_on_fit(self, comm, train, val, batch_size):
        """DataMismatchError on every rank unless all were given the same shapes, model and batch size."""
        # Before any collective that assumes them equal: the ranks' shares and buffers.
        def targets(data):
            return data.labels.shape if data.labels.size else data.target.shape

        described = {"X": train[0].shape, "y": targets(train[1]), "sample_weight": train[1].weight.shape,
                     "parameters": self.theta.size, "batch_size": batch_size}
        if val is not None:
            described.update({"validation X": val[0].shape, "validation y": targets(val[1])})
        _mpi.agree_on_data(comm, described)

    def _run_epochs(self, train, val, checked, shuffle, rng, comm):
        """fit's epochs (``_fit.fit_loop``); over ``comm``, rank 0 alone prints and writes files."""
        callbacks = list(checked.callbacks)
        if comm is None:
            return _fit.fit_loop(self, train, val, checked.epochs, checked.batch_size, shuffle, rng, callbacks,
                                 checked.verbose)
        with _mpi.rank_zero_output(comm) as writes_files:
            # A callback's save (ModelCheckpoint) writes on rank 0 only: every rank holds the
            # same weights, and the ranks may share one folder.
            self._saves = writes_files
            try:
                return _fit.fit_loop(self, train, val, checked.epochs, checked.batch_size, shuffle, rng, callbacks,
                                     checked.verbose if comm.Get_rank() == 0 else 0, comm)
            finally:
                self._saves = True

    def _prepare(self, X, y, sample_weight, x_name, y_name, w_name, part=(0, 1)):
        return _fit.prepare(self, X, y, sample_weight, (x_name, y_name, w_name), part)

    def objective(self, X, y, sample_weight=None):
        """The full-batch training loss as a function of the flat parameter vector.

        Returns ``f(theta) -> (loss, grad)`` for full-batch optimizers such as
        ``scipy.optimize.minimize(f, model.get_flat_weights(), jac=True)``. ``f``
        loads ``theta`` (laid out like ``self.theta``: all weights, then all
        biases) into the model and returns the mean loss over (X, y), as ``fit``
        defines it and without weight decay, and its gradient as a new float64
        vector of the same layout; (inf, zeros) where the loss or gradient is
        not finite. The data is checked and the buffers allocated once, here.
        Runs on the CPU. Dropout layers apply the same masks on every call, so
        that f is a function of theta alone. BatchNorm layers normalize with the
        batch's statistics, as in training; ``f`` leaves the model's running
        statistics as they are.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.
        y : array-like of shape (N,) or (N, O)
            Labels or targets, as for ``fit``.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples.

        Returns
        -------
        callable
            ``f(theta) -> (loss, grad)``.

        Raises
        ------
        RuntimeError
            The model has no loss yet, or is not built yet.
        """
        if self.loss is None:
            raise RuntimeError("objective needs a loss: call compile(loss=...) first")
        self._require_built("objective")
        X, data = self._prepare(X, y, sample_weight, "X", "y", "sample_weight")
        return backends.get("cpu").objective(self, self.lowered(), X, data)

    # ----- inference --------------------------------------------------------------------

    def evaluate(self, X, y, sample_weight=None, batch_size=1024):
        """Loss and metrics on (X, y) in inference mode.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.
        y : array-like of shape (N,) or (N, O)
            Labels or targets, as for ``fit``.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples.
        batch_size : int, default 1024
            Rows per inference batch.

        Returns
        -------
        dict of str to float
            The loss and the loss's metrics ('accuracy', 'mse', 'mae').

        Raises
        ------
        RuntimeError
            The model has no loss yet, or is not built yet.
        """
        if self.loss is None:
            raise RuntimeError("evaluate needs a loss: call compile(loss=...) or fit first")
        self._require_built("evaluate")
        batch_size = check_int(batch_size, "batch_size")
        X, data = self._prepare(X, y, sample_weight, "X", "y", "sample_weight")
        stats = backends.get(self.device).evaluate(self, self.lowered(), X, data, min(batch_size, len(X)))
        return _fit.logs_from_stats(self.loss.kind, stats)

    def decision_function(self, X, batch_size=1024):
        """The network's raw outputs (logits for classification losses).

        The inputs are standardized first where the model has an input scaling
        (``set_input_scaling``).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features; converted once to a C-contiguous array of the model's dtype.
        batch_size : int, default 1024
            Rows per inference batch.

        Returns
        -------
        ndarray of shape (N, O)
            The outputs, in the model's dtype.

        Raises
        ------
        RuntimeError
            For a model not built yet.
        """
        self._require_built("predict")
        X = self._scaled(check_features(X, self.n_features, self.dtype))
        batch_size = min(check_int(batch_size, "batch_size"), len(X))
        return backends.get(self.device).outputs(self, self.lowered(), X, batch_size)

    def predict_proba(self, X, batch_size=1024):
        """Class probabilities: softmax of the logits (softmax cross-entropy) or sigmoid (BCE).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features; converted once to a C-contiguous array of the model's dtype.
        batch_size : int, default 1024
            Rows per inference batch.

        Returns
        -------
        ndarray of shape (N, O)
            The probabilities.

        Raises
        ------
        RuntimeError
            The loss is not a classification loss.
        """
        if self.loss is None or self.loss.link is None:
            raise RuntimeError("predict_proba needs a classification loss (softmax_cross_entropy or "
                               "binary_cross_entropy): call compile or fit first")
        z = self.decision_function(X, batch_size)
        from .kernels import cpu

        p = np.empty_like(z)
        (cpu.softmax_forward if self.loss.link == "softmax" else cpu.sigmoid_forward)(p, z)
        return p

    def predict(self, X, batch_size=1024):
        """Class labels for classification losses, the mean exp(outputs) for the Poisson loss
        (whose outputs are the log of the mean), the network's outputs otherwise.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features; converted once to a C-contiguous array of the model's dtype.
        batch_size : int, default 1024
            Rows per inference batch.

        Returns
        -------
        ndarray of shape (N,) or (N, O)
            The predictions.
        """
        if self.loss is not None and self.loss.kind == registry.LOSS_SCE:
            return np.argmax(self.decision_function(X, batch_size), axis=1)
        if self.loss is not None and self.loss.kind == registry.LOSS_BCE:
            return (self.decision_function(X, batch_size) > 0).astype(np.int64)
        if self.loss is not None and self.loss.kind == registry.LOSS_POISSON:
            return np.exp(self.decision_function(X, batch_size))
        return self.decision_function(X, batch_size)

    # ----- persistence ------------------------------------------------------------------

    def get_config(self):
        """The model's architecture, loss, optimizer and counters as a JSON-able dict.

        Returns
        -------
        dict
            What ``save`` writes as the model's JSON record.
        """
        opt = self.optimizer
        return {
            "layers": [{"type": type(layer).__name__, "config": layer.get_config()} for layer in self.layers],
            "dtype": self.dtype.name,
            "seed": self.seed if isinstance(self.seed, (int, type(None))) else None,
            "loss": self.loss.name if self.loss is not None else None,
            "loss_config": self.loss.get_config() if self.loss is not None else None,
            "optimizer": opt.get_config() if opt is not None else None,
            "schedule": opt.schedule.get_config() if opt is not None else None,
            "optimizer_steps": opt.steps if opt is not None else 0,
            "epochs_trained": self.epochs_trained,
            "batches_tracked": self.batches_tracked,
            "input_scaling": (None if self.input_scaling is None else
                              {"mean": self.input_scaling[0].tolist(), "scale": self.input_scaling[1].tolist()}),
            "classes": None if self.classes is None else np.asarray(self.classes).tolist(),
            "data_format": self.data_format,
        }

    def save(self, path):
        """Write the model to one .npz file: architecture as JSON, parameters, optimizer state.

        Inside a data-parallel fit (``comm=``), only rank 0 writes.

        Parameters
        ----------
        path : str or path-like
            The file; exactly this name (".npz" is not added).

        Raises
        ------
        ValueError
            For a path whose extension names another framework's format (".h5", ".keras",
            ".pt", ".onnx", ...): the file would be an .npz all the same.
        TypeError
            For a path that is not a str, bytes or path-like object.
        RuntimeError
            For a model not built yet (its first Dense layer's in_features comes from the
            first fit).
        OSError
            The file could not be written; the previous file at ``path`` is intact.
        """
        check_save_path(path)
        self._require_built("save")
        if getattr(self, "_saves", True):  # False on the ranks but 0 of a data-parallel fit
            save_model(self, path)

    def to_onnx(self, path=None, dtype=None, opset=None):
        """Write the network as an ONNX graph to ``path`` (needs onnx); returns the ModelProto.

        Input ``X``; outputs ``output`` (what decision_function returns) and, for a
        classification loss, ``probabilities`` (predict_proba). ``dtype`` defaults to
        the model's. See ``fastbp.export``.

        Parameters
        ----------
        path : str or path-like, default None
            Where to write the graph; None writes nothing.
        dtype : {None, 'float32', 'float64'}, default None
            The graph's float type; default the model's.
        opset : int, default None
            The ONNX opset, 17 by default.

        Returns
        -------
        onnx.ModelProto
            The graph.
        """
        self._require_built("to_onnx")
        return export.sequential_to_onnx(self, path, dtype, opset)


def _check_width(width, argument):
    if width < 1:
        raise ValueError(f"{argument} has no features (shape (n, 0)): the first Dense layer needs at least one")
    return int(width)


def _missing(what):
    raise ValueError(f"fit needs a {what}: pass {what}=... or call compile first")


def load(path):
    """Load a model written by ``Sequential.save``; it predicts bit for bit as saved.

    Parameters
    ----------
    path : str or path-like
        The file ``Sequential.save`` wrote.

    Returns
    -------
    Sequential
        The model, with its loss, optimizer state and random state.

    Raises
    ------
    ValueError
        A file that is not such a model, or a damaged one, named in the message.
    """
    return load_model(path, Sequential)
