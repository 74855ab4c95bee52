"""scikit-learn estimators on fastbp: ``MLPClassifier`` and ``MLPRegressor``.

They take scikit-learn's constructor parameters with its defaults, expose its
fitted attributes and follow its fitting rules; the network is a fastbp
``Sequential`` trained by one ``fit`` call of ``max_iter`` epochs, with
scikit-learn's per-epoch logic (loss curve, ``tol``/``n_iter_no_change``
convergence, early stopping on a validation score, the 'invscaling' and
'adaptive' learning rates) in a callback and a schedule. Two parameters are
fastbp's own: ``dtype`` and ``device``.

``dtype=None`` (the default) follows scikit-learn's rule: float64 data trains
a float64 network, float32 data a float32 one, anything else becomes float64;
predictions are in the dtype of the data and the network combined, as
scikit-learn's matrix products give them. ``dtype='float32'`` is the fast path:
the network trains in float32 whatever the data (docs/estimators.md gives the gain).

How scikit-learn's math maps onto fastbp's, so that the same hyperparameters
follow the same trajectory (initialization, gradient scale, learning rates,
Adam's epsilon, the L2 penalty, the end of an epoch, the L-BFGS objective), is
in ``fastbp._sklearn_rules``.

``solver='lbfgs'`` runs scipy's L-BFGS-B on ``Sequential.objective``, on the
CPU whatever ``device``. Sparse X is accepted and densified once per call (the
kernels are dense).
"""
import copy
import numbers
import warnings

import numpy as np
import scipy.optimize
import scipy.sparse
import scipy.special

try:
    from sklearn import neural_network
    from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import accuracy_score, r2_score
    from sklearn.preprocessing import LabelBinarizer
    from sklearn.utils import assert_all_finite, check_random_state
    from sklearn.utils.class_weight import compute_class_weight
    from sklearn.utils._param_validation import Interval, Options, StrOptions
    from sklearn.utils.metaestimators import available_if
    from sklearn.utils.multiclass import type_of_target, unique_labels
    from sklearn.utils.validation import (_check_sample_weight, check_is_fitted, column_or_1d,
                                          validate_data)
except ImportError as err:  # sklearn missing, or older than 1.6 (validate_data, __sklearn_tags__)
    raise ImportError("fastbp.MLPClassifier and fastbp.MLPRegressor need scikit-learn >= 1.6: "
                      f"pip install 'fastbp[sklearn]' ({err})") from err

from . import _first_run, export
from ._sklearn_rules import (LbfgsObjective, SklearnEpochs, clipped_batch_size, initial_weights,
                             output_scales, stochastic_optimizer, validation_split, weight_decay)
from ._validation import check_dtype, check_weight_values
from .layers import Dense
from .model import DivergenceError, Sequential

__all__ = ["MLPClassifier", "MLPRegressor", "from_sklearn"]

_STOCHASTIC_SOLVERS = ("sgd", "adam")
_NO_Y = object()  # validate X alone (y=None must still reach validate_data, which names it)
# dtype=None: the data's float dtype, float64 for anything else (validate_data takes the first).
_INPUT_DTYPES = (np.float64, np.float32)
# scikit-learn's activation names -> fastbp's.
_HIDDEN = {"identity": "identity", "logistic": "sigmoid", "tanh": "tanh", "relu": "relu"}


class _BaseMLP(BaseEstimator):
    """What MLPClassifier and MLPRegressor share; scikit-learn's BaseMultilayerPerceptron."""

    _parameter_constraints = {
        "hidden_layer_sizes": ["array-like", Interval(numbers.Integral, 1, None, closed="left")],
        "activation": [StrOptions({"identity", "logistic", "tanh", "relu"})],
        "solver": [StrOptions({"lbfgs", "sgd", "adam"})],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "batch_size": [StrOptions({"auto"}), Interval(numbers.Integral, 1, None, closed="left")],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive"})],
        "learning_rate_init": [Interval(numbers.Real, 0, None, closed="neither")],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "shuffle": ["boolean"],
        "random_state": ["random_state"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        # scikit-learn allows momentum=1, which never forgets a gradient; fastbp's SGD needs < 1.
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "nesterovs_momentum": ["boolean"],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_1": [Interval(numbers.Real, 0, 1, closed="left")],
        "beta_2": [Interval(numbers.Real, 0, 1, closed="left")],
        "epsilon": [Interval(numbers.Real, 0, None, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left"), Options(numbers.Real, {np.inf})],
        "max_fun": [Interval(numbers.Integral, 1, None, closed="left")],
        # None, or checked with fastbp's own messages when the model is built.
        "dtype": "no_validation",
        "device": [StrOptions({"cpu", "cuda"})],
    }

    # ----- fitting ----------------------------------------------------------------------

    def _fit(self, X, y, sample_weight, incremental, comm=None):
        self._validate_params()
        if comm is not None and (self.solver == "lbfgs" or isinstance(self.random_state, (type(None),
                                                                                           np.random.RandomState))):
            raise ValueError(f"fit(comm=...) trains over MPI with solver='sgd' or 'adam' and an integer "
                             f"random_state (every rank must draw the same splits and shuffles); got "
                             f"solver={self.solver!r}, random_state={self.random_state!r}")
        sizes = self._hidden_layer_sizes()
        first_pass = not hasattr(self, "coefs_") or (not self.warm_start and not incremental)
        if self.dtype is not None:
            dtype = check_dtype(self.dtype)
        else:  # scikit-learn's rule; a continued network keeps the dtype it was fitted in
            dtype = _INPUT_DTYPES if first_pass else self._model.dtype

        X, Y = self._validate_input(X, y, incremental, reset=first_pass, dtype=dtype)
        dtype = X.dtype
        if sample_weight is not None:
            sample_weight = _check_sample_weight(sample_weight, X, dtype=dtype, ensure_non_negative=True,
                                                 copy=True)
        if Y.ndim == 1:
            Y = Y.reshape(-1, 1)
        sample_weight = self._weigh_classes(Y, sample_weight, incremental, dtype)
        layer_units = [X.shape[1]] + sizes + [Y.shape[1]]
        self._random_state = check_random_state(self.random_state)
        if first_pass:
            self._initialize(Y, layer_units, dtype)
        else:
            self._check_same_network(layer_units, dtype)
        self.n_outputs_ = Y.shape[1]
        self._sync_params()
        if self.solver == "lbfgs":
            self._fit_lbfgs(X, Y, sample_weight)
        else:
            self._fit_stochastic(X, Y, sample_weight, incremental, comm)
        return self

    def _hidden_layer_sizes(self):
        sizes = self.hidden_layer_sizes
        sizes = list(sizes) if hasattr(sizes, "__iter__") else [sizes]
        if any(not isinstance(s, numbers.Integral) or s <= 0 for s in sizes):
            raise ValueError("hidden_layer_sizes must be > 0, got %s." % sizes)
        return [int(s) for s in sizes]

    def _check_same_network(self, layer_units, dtype):
        """warm_start and partial_fit continue the fitted network: same layer sizes, same dtype."""
        if self._layer_units() != layer_units:
            raise ValueError(f"the fitted network has layer sizes {self._layer_units()}, this data and "
                             f"hidden_layer_sizes need {layer_units}: warm_start and partial_fit "
                             f"continue the same network")
        if self._model.dtype != dtype:
            raise ValueError(f"the fitted network is {self._model.dtype.name}; dtype={self.dtype!r} "
                             f"needs a new fit (warm_start=False)")

    def _initialize(self, Y, layer_units, dtype):
        self.n_iter_ = 0
        self.t_ = 0
        self.n_outputs_ = Y.shape[1]
        self.n_layers_ = len(layer_units)
        self.out_activation_ = self._output_activation()
        self._grad_scale, self._loss_scale = output_scales(self.out_activation_, self.n_outputs_)
        self._model = self._build_network(layer_units, dtype)
        self._bind_params()
        self._best_weights = self._model.get_flat_weights()
        self._lr = None
        if self.solver in _STOCHASTIC_SOLVERS:
            self._reset_progress()

    def _build_network(self, layer_units, dtype):
        """A compiled Sequential of Dense layers, with scikit-learn's initial weights."""
        hidden = _HIDDEN[self.activation]
        layers = [Dense(fan_in, fan_out, activation=hidden if i < len(layer_units) - 2 else None)
                  for i, (fan_in, fan_out) in enumerate(zip(layer_units, layer_units[1:]))]
        model = Sequential(layers, dtype=dtype.name, seed=0, device=self.device)
        model.set_weights(initial_weights(layer_units, self.activation, self._random_state))
        return model.compile(self._loss_name(), "sgd")

    def _reset_progress(self):
        """The stochastic solvers' record: loss curve, best loss or validation scores, stall count."""
        self.loss_curve_ = []
        self._no_improvement_count = 0
        if self.early_stopping:
            self.validation_scores_ = []
            self.best_validation_score_ = -np.inf
            self.best_loss_ = None
        else:
            self.best_loss_ = np.inf
            self.validation_scores_ = None
            self.best_validation_score_ = None

    def _fit_stochastic(self, X, Y, sample_weight, incremental, comm=None):
        if not incremental or self._lr is None:
            self._lr, optimizer = stochastic_optimizer(self, self._grad_scale)
            self._model.compile(self._loss_name(), optimizer)
        if self.early_stopping and incremental:
            raise ValueError("partial_fit does not support early_stopping=True")
        validation = None
        if self.early_stopping:
            X, Y, sample_weight, validation = self._hold_out_validation(X, Y, sample_weight)
        batch_size = clipped_batch_size(self.batch_size, X.shape[0])
        self._offset = self._loss_offset(Y, sample_weight)
        callback = self._prepare_epochs(X.shape[0], batch_size, sample_weight, validation, incremental)
        self.n_iter_ = 0
        self._run_epochs(X, Y, sample_weight, batch_size, callback, incremental, comm)
        if self.early_stopping:
            self._model.set_flat_weights(self._best_weights)

    def _hold_out_validation(self, X, Y, sample_weight):
        """(X, Y, sample_weight) to train on and (X_val, y_val, sw_val) to score, as scikit-learn splits."""
        # As scikit-learn: stratified for single-output classification only.
        stratify = Y if (self._is_classifier() and self.n_outputs_ == 1) else None
        (X, Y, sample_weight), (X_val, Y_val, sw_val) = validation_split(
            X, Y, sample_weight, self.validation_fraction, self._random_state, stratify)
        return X, Y, sample_weight, (X_val, self._validation_targets(Y_val), sw_val)

    def _prepare_epochs(self, n_samples, batch_size, sample_weight, validation, incremental):
        """Set the optimizer's weight decay and steps per epoch for this data; the end-of-epoch callback."""
        weight_total = float(n_samples if sample_weight is None else sample_weight.sum())
        n_batches = -(-n_samples // batch_size)
        decay = weight_decay(self.alpha, n_samples, batch_size, weight_total, self._grad_scale)
        self._model.optimizer.weight_decay = decay
        return SklearnEpochs(self, n_samples, n_batches, weight_total, validation, incremental)

    def _run_epochs(self, X, Y, sample_weight, batch_size, callback, incremental, comm=None):
        """One model.fit over the epochs; divergence raises scikit-learn's ValueError, Ctrl-C warns."""
        # The first fit on a machine compiles: said on stderr where the estimator is verbose, else
        # as one CompileWarning, which a pipeline can filter.
        note = _first_run.announce_always() if self.verbose else _first_run.warn_instead()
        try:
            with note:
                self._model.fit(X, self._fastbp_targets(Y), epochs=1 if incremental else self.max_iter,
                                batch_size=batch_size, shuffle=self.shuffle,
                                seed=self._random_state,
                                callbacks=[callback], verbose=0, sample_weight=sample_weight,
                                **({} if comm is None else {"comm": comm}))
        except DivergenceError as err:
            if not self._keep_best_after_divergence(err, callback):
                raise ValueError(f"Solver produced non-finite parameter weights. The input data may "
                                 f"contain large values and need to be preprocessed. ({err})") from err
        except KeyboardInterrupt:
            warnings.warn("Training interrupted by user.")

    def _keep_best_after_divergence(self, err, callback):
        """Under early stopping a divergence ends training on the best validation weights; True if so.

        scikit-learn trains on with non-finite weights, scoring NaN, until
        n_iter_no_change epochs stop it, then restores its best weights
        (scikit-learn #29504). fastbp stops at the first non-finite step: that
        epoch is recorded as scikit-learn records those, and _fit_stochastic
        restores the best weights. Without a finite best score there is nothing
        to keep, and the divergence is an error as without early stopping.
        """
        best = self.best_validation_score_ if self.early_stopping else None
        if best is None or not np.isfinite(best):
            return False
        callback.diverged()
        warnings.warn(f"{err} Early stopping keeps the weights of the best validation score, "
                      f"{best:g}.", ConvergenceWarning)
        return True

    def _fit_lbfgs(self, X, Y, sample_weight):
        model = self._model
        objective = model.objective(X, self._fastbp_targets(Y), sample_weight)
        weight_total = float(X.shape[0] if sample_weight is None else sample_weight.sum())
        # The objective's theta holds all the weights, then all the biases.
        n_weights = sum(w.size for w in self.coefs_)
        scales = (self._grad_scale, self._loss_scale)
        fun = LbfgsObjective(objective, n_weights, weight_total, scales, self.alpha,
                             self._loss_offset(Y, sample_weight))
        iteration = 0

        def report(theta):
            nonlocal iteration
            iteration += 1
            print("Iteration %d, loss = %.8f" % (iteration, fun.loss))

        result = scipy.optimize.minimize(
            fun, model.get_flat_weights().astype(np.float64), method="L-BFGS-B", jac=True,
            callback=report if self.verbose else None,
            options={"maxfun": self.max_fun, "maxiter": self.max_iter, "gtol": self.tol})
        self.n_iter_ = min(result.nit, self.max_iter)
        if result.status != 0:
            warnings.warn(f"lbfgs failed to converge after {self.n_iter_} iteration(s) (status="
                          f"{result.status}):\n{result.message}\n\nIncrease the number of iterations "
                          f"(max_iter) or the number of function evaluations (max_fun), or scale the "
                          f"data; with dtype='float32' the line search can also stop at float32 "
                          f"precision: dtype='float64' goes further.", ConvergenceWarning)
        fun(result.x)  # leaves the optimum in the model and its loss in fun.loss
        self.loss_ = fun.loss

    def _is_classifier(self):
        return isinstance(self, ClassifierMixin)

    def _weigh_classes(self, Y, sample_weight, incremental, dtype):
        """sample_weight times each sample's class weight (classifiers); regressors have none."""
        return sample_weight

    def _loss_offset(self, Y, sample_weight):
        """What scikit-learn's reported loss adds to c times fastbp's (terms of y alone): 0 here."""
        return 0.0

    # ----- the network behind the fitted attributes -------------------------------------

    def _bind_params(self):
        """coefs_ and intercepts_ as views of the model's parameters: one copy of the weights."""
        views = self._model._param_views(self._model.theta)
        self.coefs_ = [w for w, _ in views]
        self.intercepts_ = [b for _, b in views]
        self._bound = (list(self.coefs_), list(self.intercepts_))

    def _sync_params(self):
        """Load coefs_ and intercepts_ into the model if they were replaced rather than edited."""
        bound_c, bound_i = self._bound
        same = (len(self.coefs_) == len(bound_c) and len(self.intercepts_) == len(bound_i)
                and all(a is b for a, b in zip(self.coefs_, bound_c))
                and all(a is b for a, b in zip(self.intercepts_, bound_i)))
        if not same:
            self._model.set_weights([a for pair in zip(self.coefs_, self.intercepts_) for a in pair])
            self._bind_params()

    def _layer_units(self):
        return [self.coefs_[0].shape[0]] + [b.size for b in self.intercepts_]

    def __getstate__(self):
        state = dict(super().__getstate__())
        # The views are rebuilt from the model's parameters when unpickled.
        for key in ("coefs_", "intercepts_", "_bound"):
            state.pop(key, None)
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        if "_model" in state:
            # Loaded from a read-only memory map (joblib), the parameters, buffers and optimizer
            # state get writable copies, so that the estimator can train on, and so that the
            # compiled loops, whose kernels are compiled for writable arrays, take them.
            model = self._model
            if not model.theta.flags.writeable:
                model.theta = np.array(model.theta)
            if model.buffers is not None and not model.buffers.flags.writeable:
                model.buffers = np.array(model.buffers)
            if model.optimizer is not None and model.optimizer.state is not None:
                model.optimizer.state = [s if s.flags.writeable else np.array(s) for s in model.optimizer.state]
            self._bind_params()

    # ----- prediction -------------------------------------------------------------------

    def _check_X(self, X, reset, dtype, y=_NO_Y, **kwargs):
        """validate_data, then densify: fastbp's kernels take dense C-ordered arrays."""
        if y is _NO_Y:
            X = validate_data(self, X, accept_sparse=["csr", "csc"], dtype=dtype, order="C", reset=reset)
        else:
            X, y = validate_data(self, X, y, accept_sparse=["csr", "csc"], dtype=dtype, order="C",
                                 multi_output=True, reset=reset, **kwargs)
        if scipy.sparse.issparse(X):
            X = np.ascontiguousarray(X.toarray())
        elif not X.flags.writeable:
            X = X.copy()  # numba compiles read-only arrays as another type: copy, don't compile twice
        return X if y is _NO_Y else (X, y)

    def _forward(self, X):
        """(raw outputs, the dtype to return predictions in) on X, validated here.

        The network computes in its own dtype; predictions come back in the
        dtype scikit-learn's products of X and the weights give: float32 for
        float32 data on a float32 network, float64 if either is float64.
        """
        check_is_fitted(self)
        X = self._check_X(X, reset=False, dtype="numeric")
        dtype = self._model.dtype
        out_dtype = np.result_type(X.dtype, dtype)
        if X.dtype != dtype:
            X = X.astype(dtype)
            if out_dtype != dtype:  # narrowed to float32: what was beyond its range is now inf
                assert_all_finite(X, input_name="X")
        self._sync_params()
        return self._model.decision_function(X), out_dtype

    def to_onnx(self, path=None, opset=None):
        """Write the fitted network as an ONNX graph to ``path`` (needs onnx); returns the ModelProto.

        Input ``X`` (float, the estimator's dtype); outputs as skl2onnx gives
        scikit-learn's: ``label`` and ``probabilities`` for the classifier,
        ``variable`` for the regressor. See ``fastbp.export``.

        Parameters
        ----------
        path : str or path-like, default None
            Where to write the graph; None writes nothing.
        opset : int, default None
            The ONNX opset, 17 by default.

        Returns
        -------
        onnx.ModelProto
            The graph.
        """
        return export.estimator_to_onnx(self, path, opset)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _store_params(estimator, params):
    """Store the constructor's arguments unchanged, as scikit-learn requires.

    Called as ``_store_params(self, locals())``: each estimator keeps its
    explicit signature (``get_params`` reads the names from it), and this is
    the one place where they become attributes.
    """
    for name, value in params.items():
        if name != "self":
            setattr(estimator, name, value)


def _stochastic(estimator):
    if estimator.solver not in _STOCHASTIC_SOLVERS:
        raise AttributeError("partial_fit is only available for stochastic optimizers. "
                             "%s is not stochastic." % estimator.solver)
    return True


class MLPClassifier(ClassifierMixin, _BaseMLP):
    """Multi-layer perceptron classifier: scikit-learn's MLPClassifier on fastbp.

    Parameters and fitted attributes are scikit-learn's (see
    ``sklearn.neural_network.MLPClassifier``), plus ``dtype``, ``device`` and
    ``class_weight``; the output layer is a softmax for multiclass targets and
    logistic for binary and multilabel ones. With the same ``random_state``,
    'sgd' and 'adam' train to scikit-learn's parameters within rounding.

    Parameters
    ----------
    hidden_layer_sizes : tuple of int, default (100,)
        The width of each hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default 'relu'
        The hidden layers' activation.
    solver : {'lbfgs', 'sgd', 'adam'}, default 'adam'
        'sgd' and 'adam' train in fastbp's compiled loop, with scikit-learn's weights,
        shuffles and learning-rate rules; 'lbfgs' runs SciPy's L-BFGS-B on fastbp's
        full-batch loss and gradient.
    alpha : float, default 0.0001
        L2 penalty on the weights (not the biases), scaled as scikit-learn's.
    batch_size : int or 'auto', default 'auto'
        Samples per mini-batch; 'auto' is min(200, n_samples).
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default 'constant'
        The schedule of 'sgd'.
    learning_rate_init : float, default 0.001
        The initial learning rate of 'sgd' and 'adam'.
    power_t : float, default 0.5
        The exponent of 'invscaling'.
    max_iter : int, default 200
        The most epochs (iterations of 'lbfgs').
    shuffle : bool, default True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default None
        The weights' initialization, the shuffles and the early-stopping split.
    tol : float, default 1e-4
        The improvement that counts, for stopping.
    verbose : bool, default False
        Print the loss of every epoch.
    warm_start : bool, default False
        Continue from the previous fit's network.
    momentum : float, default 0.9
        Momentum of 'sgd'.
    nesterovs_momentum : bool, default True
        Nesterov's momentum for 'sgd'.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data and stop when its score stops improving.
    validation_fraction : float, default 0.1
        The held-out fraction for early stopping.
    beta_1 : float, default 0.9
        Adam's first-moment decay.
    beta_2 : float, default 0.999
        Adam's second-moment decay.
    epsilon : float, default 1e-8
        Adam's epsilon, added to the uncorrected sqrt(v) as scikit-learn does.
    n_iter_no_change : int, default 10
        Epochs without an improvement of ``tol`` before stopping.
    max_fun : int, default 15000
        The most loss evaluations of 'lbfgs'.
    dtype : {None, 'float32', 'float64'}, default None
        Precision of the parameters and of the training arithmetic. None
        follows scikit-learn: float32 data trains in float32, anything else in
        float64. 'float32' trains in float32 whatever the data: the fast path.
    device : {'cpu', 'cuda'}, default 'cpu'
        Where the network trains ('cuda' needs numba-cuda and an NVIDIA GPU).
    class_weight : dict, 'balanced' or None, default None
        Weights of the classes, as in scikit-learn's linear models: each
        sample's weight (1, or its ``sample_weight``) is multiplied by the weight
        of its class. A dict maps classes (as in ``y``) to weights, 1 for those
        it leaves out; 'balanced' gives class c the weight
        n_samples / (n_classes * count_c) over the classes in ``y`` of this fit
        (``sklearn.utils.class_weight.compute_class_weight``, counted without
        sample weights). Not for multilabel targets, nor 'balanced' with
        ``partial_fit`` (as ``SGDClassifier``). With early stopping, the
        validation score is weighted too.

    See Also
    --------
    fastbp.from_sklearn : A fastbp estimator from a fitted scikit-learn one.

    Examples
    --------
    >>> import fastbp
    >>> X, y = fastbp.datasets.load_digits()
    >>> clf = fastbp.MLPClassifier(hidden_layer_sizes=(32,), max_iter=5, random_state=0).fit(X, y)
    >>> clf.predict_proba(X[:2]).shape
    (2, 10)
    """

    _parameter_constraints = {
        **_BaseMLP._parameter_constraints,
        "class_weight": [dict, StrOptions({"balanced"}), None],
    }

    def __init__(self, hidden_layer_sizes=(100,), activation="relu", *, solver="adam", alpha=0.0001,
                 batch_size="auto", learning_rate="constant", learning_rate_init=0.001, power_t=0.5,
                 max_iter=200, shuffle=True, random_state=None, tol=1e-4, verbose=False,
                 warm_start=False, momentum=0.9, nesterovs_momentum=True, early_stopping=False,
                 validation_fraction=0.1, beta_1=0.9, beta_2=0.999, epsilon=1e-8,
                 n_iter_no_change=10, max_fun=15000, dtype=None, device="cpu", class_weight=None):
        _store_params(self, locals())

    def fit(self, X, y, sample_weight=None, comm=None):
        """Fit the network to X and class labels y (1-D, or a label indicator matrix).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Training features (dense, or a SciPy sparse matrix).
        y : array-like of shape (N,) or (N, K)
            Class labels, or a label indicator matrix for multilabel targets.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples in the loss (and the validation score).
        comm : mpi4py communicator, default None
            Train data-parallel over MPI, as ``Sequential.fit(comm=...)`` ('sgd' or 'adam',
            an integer ``random_state``).

        Returns
        -------
        self
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False, comm=comm)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None, classes=None):
        """One epoch over (X, y), continuing the network of the previous calls.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Training features (dense, or a SciPy sparse matrix).
        y : array-like of shape (N,) or (N, K)
            Class labels, or a label indicator matrix for multilabel targets.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples in the loss (and the validation score).
        classes : array-like of shape (n_classes,), default None
            Every class label; required on the first call.

        Returns
        -------
        self
            The fitted estimator.
        """
        if _partial_fit_first_call(self, classes):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y if type_of_target(y).startswith("multilabel") else classes)
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = self._check_X(X, reset, dtype, y)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        # scikit-learn's rules: a new fit defines classes_, warm_start must keep
        # them, partial_fit must stay within them.
        if not hasattr(self, "classes_") or (not self.warm_start and not incremental):
            self._label_binarizer = LabelBinarizer()
            self._label_binarizer.fit(y)
            self.classes_ = self._label_binarizer.classes_
        else:
            classes = unique_labels(y)
            if self.warm_start:
                if set(classes) != set(self.classes_):
                    raise ValueError("warm_start can only be used where `y` has the same classes as in "
                                     f"the previous call to fit. Previously got {self.classes_}, `y` has "
                                     f"{classes}")
            elif len(np.setdiff1d(classes, self.classes_, assume_unique=True)):
                raise ValueError(f"`y` has classes not in `self.classes_`. `self.classes_` has "
                                 f"{self.classes_}. 'y' has {classes}.")
        # Boolean, as scikit-learn's: the stratified early-stopping split sees (and
        # names in its errors) these; _fastbp_targets makes them numbers.
        return X, self._label_binarizer.transform(y).astype(bool)

    def _weigh_classes(self, Y, sample_weight, incremental, dtype):
        """sample_weight (or 1) times the weight of each sample's class, from ``class_weight``."""
        if self.class_weight is None:
            return sample_weight
        if self._label_binarizer.y_type_.startswith("multilabel"):
            raise ValueError("class_weight is not supported for multilabel targets (y is a label "
                             "indicator matrix); use sample_weight")
        if incremental and isinstance(self.class_weight, str):
            raise ValueError("class_weight='balanced' is not supported for partial_fit: the class "
                             "frequencies of one batch are not those of the data; pass a dict")
        index = np.argmax(Y, axis=1) if Y.shape[1] > 1 else Y[:, 0].astype(np.int64)
        classes = np.asarray(self.classes_)
        if isinstance(self.class_weight, dict):
            unknown = [k for k in self.class_weight if k not in set(classes.tolist())]
            if unknown:
                raise ValueError(f"class_weight has keys {unknown} that are not classes of y; the "
                                 f"classes are {classes.tolist()}")
            weights = compute_class_weight(self.class_weight, classes=classes, y=classes[index])
        else:
            # 'balanced' counts the classes present in this y, as scikit-learn's linear models.
            present = np.unique(index)
            weights = np.ones(len(classes))
            weights[present] = compute_class_weight("balanced", classes=classes[present],
                                                    y=classes[index])
        per_sample = np.asarray(weights, dtype=np.float64)[index]
        if sample_weight is not None:
            per_sample = sample_weight.astype(np.float64) * per_sample
        return per_sample.astype(dtype)

    def _output_activation(self):
        return "softmax" if self._label_binarizer.y_type_ == "multiclass" else "logistic"

    def _loss_name(self):
        return "softmax_cross_entropy" if self.out_activation_ == "softmax" else "binary_cross_entropy"

    def _fastbp_targets(self, Y):
        # Softmax cross-entropy takes class indices; binary cross-entropy the 0/1 matrix.
        return np.argmax(Y, axis=1) if self.out_activation_ == "softmax" else Y.astype(self._model.dtype)

    def _validation_targets(self, Y_val):
        return self._label_binarizer.inverse_transform(Y_val)

    def _proba(self, logits):
        logits = logits.astype(np.float64)
        if self.out_activation_ == "softmax":
            return scipy.special.softmax(logits, axis=1)
        return scipy.special.expit(logits)

    def _labels(self, proba):
        return self._label_binarizer.inverse_transform(proba.ravel() if self.n_outputs_ == 1 else proba)

    def _score_validated(self, X, y, sample_weight):
        proba = self._proba(self._model.decision_function(X))
        if not np.isfinite(proba).all():
            return np.nan
        return accuracy_score(y, self._labels(proba), sample_weight=sample_weight)

    def predict(self, X):
        """Class labels (or a label indicator matrix for multilabel targets).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.

        Returns
        -------
        ndarray of shape (N,) or (N, K)
            Labels from ``classes_``.
        """
        logits, _ = self._forward(X)
        return self._labels(self._proba(logits))

    def predict_proba(self, X):
        """Probabilities (n_samples, n_classes), classes ordered as in ``classes_``.

        Binary targets get two columns, P(classes_[0]) and P(classes_[1]);
        multilabel targets one probability per label. Computed in float64,
        returned in the dtype of X and the network combined, as scikit-learn's.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.

        Returns
        -------
        ndarray of shape (N, n_classes)
            The probabilities.
        """
        logits, dtype = self._forward(X)
        proba = self._proba(logits)
        if self.n_outputs_ == 1:
            proba = np.column_stack([1.0 - proba[:, 0], proba[:, 0]])
        return proba.astype(dtype, copy=False)

    def predict_log_proba(self, X):
        """log(predict_proba(X)).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.

        Returns
        -------
        ndarray of shape (N, n_classes)
            The log-probabilities.
        """
        proba = self.predict_proba(X)
        return np.log(proba, out=proba)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.classifier_tags.multi_label = True
        return tags


class MLPRegressor(RegressorMixin, _BaseMLP):
    """Multi-layer perceptron regressor: scikit-learn's MLPRegressor on fastbp.

    Parameters and fitted attributes are scikit-learn's (see
    ``sklearn.neural_network.MLPRegressor``), with one output per target
    column: an identity output layer for ``loss='squared_error'``, and for
    ``loss='poisson'`` an exponential one (``out_activation_ = 'exp'``; the
    network's output is the log of the mean, trained with fastbp's Poisson
    loss, and ``predict`` returns the mean). ``loss_`` is scikit-learn's: half
    the squared error, or the half Poisson deviance sum_o mean_n [y log(y / mu)
    - y + mu], whose y-only terms fastbp's loss leaves out and the estimator
    adds back from the training targets (exact with one batch per epoch, as
    the penalty). Predictions are float32 only for float32 X on a float32 network.

    Parameters
    ----------
    loss : {'squared_error', 'poisson'}, default 'squared_error'
        The loss: half the squared error, or the Poisson deviance with a log link.
    hidden_layer_sizes : tuple of int, default (100,)
        The width of each hidden layer.
    activation : {'identity', 'logistic', 'tanh', 'relu'}, default 'relu'
        The hidden layers' activation.
    solver : {'lbfgs', 'sgd', 'adam'}, default 'adam'
        'sgd' and 'adam' train in fastbp's compiled loop, with scikit-learn's weights,
        shuffles and learning-rate rules; 'lbfgs' runs SciPy's L-BFGS-B on fastbp's
        full-batch loss and gradient.
    alpha : float, default 0.0001
        L2 penalty on the weights (not the biases), scaled as scikit-learn's.
    batch_size : int or 'auto', default 'auto'
        Samples per mini-batch; 'auto' is min(200, n_samples).
    learning_rate : {'constant', 'invscaling', 'adaptive'}, default 'constant'
        The schedule of 'sgd'.
    learning_rate_init : float, default 0.001
        The initial learning rate of 'sgd' and 'adam'.
    power_t : float, default 0.5
        The exponent of 'invscaling'.
    max_iter : int, default 200
        The most epochs (iterations of 'lbfgs').
    shuffle : bool, default True
        Shuffle the samples every epoch.
    random_state : int, RandomState instance or None, default None
        The weights' initialization, the shuffles and the early-stopping split.
    tol : float, default 1e-4
        The improvement that counts, for stopping.
    verbose : bool, default False
        Print the loss of every epoch.
    warm_start : bool, default False
        Continue from the previous fit's network.
    momentum : float, default 0.9
        Momentum of 'sgd'.
    nesterovs_momentum : bool, default True
        Nesterov's momentum for 'sgd'.
    early_stopping : bool, default False
        Hold out ``validation_fraction`` of the data and stop when its score stops improving.
    validation_fraction : float, default 0.1
        The held-out fraction for early stopping.
    beta_1 : float, default 0.9
        Adam's first-moment decay.
    beta_2 : float, default 0.999
        Adam's second-moment decay.
    epsilon : float, default 1e-8
        Adam's epsilon, added to the uncorrected sqrt(v) as scikit-learn does.
    n_iter_no_change : int, default 10
        Epochs without an improvement of ``tol`` before stopping.
    max_fun : int, default 15000
        The most loss evaluations of 'lbfgs'.
    dtype : {None, 'float32', 'float64'}, default None
        Precision of the parameters and of the training arithmetic. None
        follows scikit-learn: float32 data trains in float32, anything else in
        float64. 'float32' trains in float32 whatever the data: the fast path.
    device : {'cpu', 'cuda'}, default 'cpu'
        Where the network trains ('cuda' needs numba-cuda and an NVIDIA GPU).

    Examples
    --------
    >>> import fastbp
    >>> X, y = fastbp.datasets.make_regression(n_samples=200, n_features=5, seed=0)
    >>> reg = fastbp.MLPRegressor(hidden_layer_sizes=(16,), max_iter=5, random_state=0).fit(X, y)
    >>> reg.predict(X[:3]).shape
    (3,)
    """

    _parameter_constraints = {
        **_BaseMLP._parameter_constraints,
        "loss": [StrOptions({"squared_error", "poisson"})],
    }

    def __init__(self, loss="squared_error", hidden_layer_sizes=(100,), activation="relu", *,
                 solver="adam", alpha=0.0001, batch_size="auto", learning_rate="constant",
                 learning_rate_init=0.001, power_t=0.5, max_iter=200, shuffle=True,
                 random_state=None, tol=1e-4, verbose=False, warm_start=False, momentum=0.9,
                 nesterovs_momentum=True, early_stopping=False, validation_fraction=0.1,
                 beta_1=0.9, beta_2=0.999, epsilon=1e-8, n_iter_no_change=10, max_fun=15000,
                 dtype=None, device="cpu"):
        _store_params(self, locals())

    def fit(self, X, y, sample_weight=None, comm=None):
        """Fit the network to X and targets y, (n_samples,) or (n_samples, n_outputs).

        Parameters
        ----------
        X : array-like of shape (N, I)
            Training features (dense, or a SciPy sparse matrix).
        y : array-like of shape (N,) or (N, K)
            Targets.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples in the loss (and the validation score).
        comm : mpi4py communicator, default None
            Train data-parallel over MPI, as ``Sequential.fit(comm=...)`` ('sgd' or 'adam',
            an integer ``random_state``).

        Returns
        -------
        self
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=False, comm=comm)

    @available_if(_stochastic)
    def partial_fit(self, X, y, sample_weight=None):
        """One epoch over (X, y), continuing the network of the previous calls.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Training features (dense, or a SciPy sparse matrix).
        y : array-like of shape (N,) or (N, K)
            Targets.
        sample_weight : array-like of shape (N,), default None
            Weights of the samples in the loss (and the validation score).

        Returns
        -------
        self
            The fitted estimator.
        """
        return self._fit(X, y, sample_weight, incremental=True)

    def _validate_input(self, X, y, incremental, reset, dtype):
        X, y = self._check_X(X, reset, dtype, y, y_numeric=True)
        if y.ndim == 2 and y.shape[1] == 1:
            y = column_or_1d(y, warn=True)
        if self.loss == "poisson" and np.any(y < 0):
            raise ValueError(f"loss='poisson' needs targets y >= 0 (counts or rates); y has values down "
                             f"to {np.min(y)}")
        return X, y.astype(X.dtype)

    def _output_activation(self):
        return "exp" if self.loss == "poisson" else "identity"

    def _loss_name(self):
        return "poisson" if self.out_activation_ == "exp" else "mse"

    def _loss_offset(self, Y, sample_weight):
        """The y-only terms of scikit-learn's half Poisson deviance, sum_o mean_n [y log y - y]."""
        if self.out_activation_ != "exp":
            return 0.0
        Y = Y.astype(np.float64)
        return float(np.sum(np.average(scipy.special.xlogy(Y, Y) - Y, weights=sample_weight, axis=0)))

    def _fastbp_targets(self, Y):
        return Y

    def _validation_targets(self, Y_val):
        return Y_val

    def _score_validated(self, X, y, sample_weight):
        pred = self._mean(self._model.decision_function(X))
        if not np.isfinite(pred).all():
            return np.nan
        return r2_score(y, pred, sample_weight=sample_weight)

    def predict(self, X):
        """Predicted targets, (n_samples,) for one output, (n_samples, n_outputs) otherwise.

        In the dtype of X and the network combined, as scikit-learn's.

        Parameters
        ----------
        X : array-like of shape (N, I)
            Features.

        Returns
        -------
        ndarray of shape (N,) or (N, n_outputs)
            The predictions (the mean, for ``loss='poisson'``).
        """
        out, dtype = self._forward(X)
        out = self._mean(out).astype(dtype, copy=False)
        return out.ravel() if out.shape[1] == 1 else out

    def _mean(self, out):
        """The predicted mean from the network's outputs: exp for the Poisson loss's log link."""
        out = out.astype(np.float64)
        return np.exp(out) if self.out_activation_ == "exp" else out

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags


# scikit-learn's fitted attributes that fastbp's estimators keep with the same meaning.
_FITTED = ("n_features_in_", "feature_names_in_", "n_iter_", "t_", "loss_", "loss_curve_", "best_loss_",
           "validation_scores_", "best_validation_score_", "_no_improvement_count")


def from_sklearn(estimator):
    """The implementation of ``fastbp.from_sklearn`` (documented there), beside the estimators
    whose fitted state it sets."""
    if isinstance(estimator, neural_network.MLPClassifier):
        cls = MLPClassifier
    elif isinstance(estimator, neural_network.MLPRegressor):
        cls = MLPRegressor
    else:
        raise TypeError(f"from_sklearn takes a fitted sklearn.neural_network.MLPClassifier or "
                        f"MLPRegressor; got {type(estimator).__name__}")
    check_is_fitted(estimator)
    dtype = np.dtype(estimator.coefs_[0].dtype)
    if dtype not in (np.float32, np.float64):
        raise ValueError(f"the estimator's weights are {dtype}; fastbp takes float32 or float64")
    names = set(cls._get_param_names()) - {"dtype", "device"}
    params = {k: copy.deepcopy(v) for k, v in estimator.get_params(deep=False).items() if k in names}
    new = cls(**params, dtype=dtype.name)
    new._validate_params()  # what fastbp refuses (momentum=1) is refused now, not at the next fit

    if cls is MLPClassifier:
        new._label_binarizer = copy.deepcopy(estimator._label_binarizer)
        new.classes_ = new._label_binarizer.classes_
    layer_units = [estimator.coefs_[0].shape[0]] + [b.size for b in estimator.intercepts_]
    # _initialize draws initial weights, which scikit-learn's replace below: any source will do.
    new._random_state = np.random.RandomState(0)
    new._initialize(np.empty((0, estimator.n_outputs_)), layer_units, dtype)
    if (new.out_activation_, new.n_layers_) != (estimator.out_activation_, estimator.n_layers_):
        raise ValueError(f"the estimator's output activation and layer count, {estimator.out_activation_!r} "
                         f"and {estimator.n_layers_}, do not match the {new.out_activation_!r} and "
                         f"{new.n_layers_} fastbp derives from its targets")
    for name in ("coefs_", "intercepts_"):
        for i, array in enumerate(getattr(estimator, name)):
            check_weight_values(np.asarray(array), f"the estimator's {name}[{i}]")
    new._model.set_weights([a for pair in zip(estimator.coefs_, estimator.intercepts_) for a in pair])
    new._best_weights = new._model.get_flat_weights()
    for name in _FITTED:
        if hasattr(estimator, name):
            setattr(new, name, copy.deepcopy(getattr(estimator, name)))
    return new


def _partial_fit_first_call(estimator, classes):
    """scikit-learn's rule: classes is required on the first call and fixed afterwards."""
    if getattr(estimator, "classes_", None) is None and classes is None:
        raise ValueError("classes must be passed on the first call to partial_fit.")
    if classes is not None:
        if getattr(estimator, "classes_", None) is not None:
            if not np.array_equal(estimator.classes_, unique_labels(classes)):
                raise ValueError("`classes=%r` is not the same as on last call to partial_fit, was: %r"
                                 % (classes, estimator.classes_))
        else:
            estimator.classes_ = unique_labels(classes)
            return True
    return False
