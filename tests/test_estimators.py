"""fastbp.MLPClassifier and MLPRegressor as scikit-learn estimators.

scikit-learn's own estimator checks; the workflow of a scikit-learn user
(Pipeline, GridSearchCV, cross_val_score, clone, pickle, partial_fit); and
agreement with scikit-learn's MLP: where the math maps exactly (SGD, L-BFGS,
float64, no shuffling) the weights after training equal scikit-learn's to
rounding, and with the defaults the test scores agree within a point.
"""
import io
import pickle
import subprocess
import sys
import warnings
from contextlib import redirect_stdout

import numpy as np
import pytest

pytest.importorskip("sklearn")

from sklearn import neural_network as sk_nn  # noqa: E402
from sklearn.base import clone  # noqa: E402
from sklearn.datasets import load_digits, make_friedman1, make_multilabel_classification  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.model_selection import GridSearchCV, cross_val_score, train_test_split  # noqa: E402
from sklearn.pipeline import make_pipeline  # noqa: E402
from sklearn.preprocessing import StandardScaler  # noqa: E402
from sklearn.utils.estimator_checks import estimator_checks_generator  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402  (a dependency of scikit-learn)

import fastbp  # noqa: E402
from fastbp.datasets import make_regression  # noqa: E402
from fastbp.estimators import MLPClassifier, MLPRegressor  # noqa: E402


@pytest.fixture(autouse=True)
def _one_blas_thread():
    """The data here are small and the machine has two shared cores: extra BLAS threads only contend."""
    with threadpool_limits(limits=1):
        yield


# ----- scikit-learn's estimator checks -----------------------------------------------------

# Parameters for single checks, as scikit-learn gives its own MLPs (its
# PER_ESTIMATOR_CHECK_PARAMS): the sample-weight equivalence checks compare a
# fit with integer weights to a fit on repeated rows at rtol 1e-7, which holds
# for a full-batch solver in float64, not for shuffled mini-batches in float32.
CHECK_PARAMS = {
    MLPClassifier: {
        "check_sample_weight_equivalence_on_dense_data": dict(solver="lbfgs", dtype="float64"),
        "check_sample_weight_equivalence_on_sparse_data": dict(solver="lbfgs", dtype="float64"),
    },
    MLPRegressor: {
        "check_sample_weight_equivalence_on_dense_data": dict(solver="sgd", tol=1e-2, random_state=42,
                                                              dtype="float64"),
        "check_sample_weight_equivalence_on_sparse_data": dict(solver="sgd", tol=1e-2, random_state=42,
                                                               dtype="float64"),
    },
}
# Checks expected to fail, with the reason; there are none.
EXPECTED_FAILED_CHECKS = {MLPClassifier: {}, MLPRegressor: {}}


def _check_name(check):
    func = getattr(check, "func", check)
    kwargs = getattr(check, "keywords", {})
    return func.__name__, func.__name__ + "".join(f"({k}={v})" for k, v in sorted(kwargs.items()))


def _estimator_checks():
    # max_iter=100 as scikit-learn tests its own MLPs: enough for the score
    # thresholds of check_classifiers_train and check_regressors_train.
    for estimator in (MLPClassifier(max_iter=100), MLPRegressor(max_iter=100)):
        kind = type(estimator)
        for est, check in estimator_checks_generator(
                estimator, legacy=True, mark="xfail",
                expected_failed_checks=EXPECTED_FAILED_CHECKS[kind]):
            name, label = _check_name(check)
            if name in CHECK_PARAMS[kind]:
                est = clone(est).set_params(**CHECK_PARAMS[kind][name])
            yield pytest.param(est, check, id=f"{kind.__name__}-{label}")


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@pytest.mark.parametrize("estimator, check", list(_estimator_checks()))
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# ----- packaging ---------------------------------------------------------------------------


def _python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)


def test_import_fastbp_does_not_import_sklearn():
    result = _python("import sys, fastbp; print('sklearn' in sys.modules); "
                     "fastbp.MLPRegressor; print('sklearn' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["False", "True"]


def test_missing_sklearn_says_how_to_install():
    result = _python("import sys; sys.modules['sklearn'] = None; import fastbp\n"
                     "try:\n    fastbp.MLPClassifier\nexcept ImportError as err:\n    print(err)\n"
                     "print(hasattr(fastbp, 'not_an_attribute'))")
    assert result.returncode == 0, result.stderr
    assert "pip install 'fastbp[sklearn]'" in result.stdout
    assert result.stdout.split()[-1] == "False"


def test_top_level_names():
    assert fastbp.MLPClassifier is MLPClassifier and fastbp.MLPRegressor is MLPRegressor
    with pytest.raises(AttributeError, match="no attribute 'MLPPerceptron'"):
        fastbp.MLPPerceptron


# ----- data --------------------------------------------------------------------------------

_rng = np.random.RandomState(0)
X_SMALL = _rng.normal(size=(120, 6))
TARGETS = {
    "multiclass": _rng.randint(0, 3, 120),
    "binary": _rng.randint(0, 2, 120),
    "multilabel": _rng.randint(0, 2, (120, 3)),
    "regression": X_SMALL @ _rng.normal(size=6) + 0.1 * _rng.normal(size=120),
    "multioutput": X_SMALL @ _rng.normal(size=(6, 2)) + 0.1 * _rng.normal(size=(120, 2)),
}


def _pair(kind, **params):
    """(fastbp, scikit-learn) estimators with the same parameters, fastbp in float64."""
    if kind in ("regression", "multioutput"):
        return MLPRegressor(dtype="float64", **params), sk_nn.MLPRegressor(**params)
    return MLPClassifier(dtype="float64", **params), sk_nn.MLPClassifier(**params)


def _fit_both(kind, **params):
    ours, theirs = _pair(kind, **params)
    y = TARGETS[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return ours.fit(X_SMALL, y), theirs.fit(X_SMALL, y)


def _assert_same_weights(ours, theirs, atol):
    assert len(ours.coefs_) == len(theirs.coefs_)
    for a, b in zip(ours.coefs_ + ours.intercepts_, theirs.coefs_ + theirs.intercepts_):
        np.testing.assert_allclose(a, b, rtol=0, atol=atol)


# ----- the same math as scikit-learn ------------------------------------------------------

SMALL = dict(hidden_layer_sizes=(7, 5), random_state=1, shuffle=False, alpha=0.01)


@pytest.mark.parametrize("kind", list(TARGETS))
@pytest.mark.parametrize("solver", [
    dict(solver="sgd", learning_rate_init=0.05),
    dict(solver="sgd", learning_rate_init=0.05, nesterovs_momentum=False),
    dict(solver="sgd", learning_rate_init=0.2, momentum=0.0, learning_rate="invscaling", power_t=0.3),
], ids=["nesterov", "momentum", "invscaling"])
def test_sgd_follows_sklearn_trajectory(kind, solver):
    """Initialization, loss scaling, L2 penalty, momentum and rates map exactly onto fastbp."""
    ours, theirs = _fit_both(kind, max_iter=12, batch_size=40, tol=0.0, **SMALL, **solver)
    _assert_same_weights(ours, theirs, atol=1e-12)
    assert (ours.n_iter_, ours.t_) == (theirs.n_iter_, theirs.t_) == (12, 12 * 120)
    # The L2 term of the loss is interpolated within an epoch of 3 batches.
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-3)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multioutput"])
@pytest.mark.parametrize("early_stopping", [False, True])
def test_shuffled_epochs_follow_sklearn(kind, early_stopping):
    """shuffle=True: random_state orders each epoch's samples as scikit-learn's shuffle does.

    batch_size 12 divides both 120 and the 108 left after early stopping's split
    (fastbp decays a last, smaller batch as a full one).
    """
    params = dict(SMALL, shuffle=True, early_stopping=early_stopping, n_iter_no_change=100)
    ours, theirs = _fit_both(kind, solver="sgd", learning_rate_init=0.05, max_iter=6, batch_size=12,
                             tol=0.0, **params)
    _assert_same_weights(ours, theirs, atol=1e-12)
    # Shuffling did happen: the same fit without it ends elsewhere.
    unshuffled, _ = _fit_both(kind, solver="sgd", learning_rate_init=0.05, max_iter=6, batch_size=12,
                              tol=0.0, **dict(params, shuffle=False))
    assert max(np.abs(a - b).max() for a, b in zip(ours.coefs_, unshuffled.coefs_)) > 1e-3


@pytest.mark.parametrize("activation", ["identity", "logistic", "tanh", "relu"])
@pytest.mark.parametrize("hidden_layer_sizes", [4, (), (5, 4, 3)], ids=["int", "none", "three"])
def test_architectures_follow_sklearn(activation, hidden_layer_sizes):
    params = dict(SMALL, hidden_layer_sizes=hidden_layer_sizes, activation=activation)
    ours, theirs = _fit_both("multiclass", solver="sgd", learning_rate_init=0.05, max_iter=5, batch_size=40,
                             tol=0.0, **params)
    assert ours.n_layers_ == theirs.n_layers_
    _assert_same_weights(ours, theirs, atol=1e-12)
    np.testing.assert_allclose(ours.predict_proba(X_SMALL), theirs.predict_proba(X_SMALL), rtol=1e-10)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "multioutput"])
def test_full_batch_convergence_and_adaptive_rate_follow_sklearn(kind):
    """One batch per epoch: loss_ is exact, so tol, n_iter_no_change and 'adaptive' act on the same epochs."""
    params = dict(solver="sgd", learning_rate_init=0.5, momentum=0.0, learning_rate="adaptive",
                  batch_size=120, tol=1e-3, n_iter_no_change=2, max_iter=300, **SMALL)
    ours, theirs = _fit_both(kind, **params)
    assert ours.n_iter_ == theirs.n_iter_ < 300
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    assert ours.best_loss_ == pytest.approx(theirs.best_loss_, rel=1e-10)
    _assert_same_weights(ours, theirs, atol=1e-10)


@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "multioutput"])
@pytest.mark.parametrize("solver", ["sgd", "adam"])
def test_sample_weight_follows_sklearn(kind, solver):
    """Weighted loss and the L2 penalty over the batch's weight (exact with one batch per epoch)."""
    weight = np.random.RandomState(1).uniform(0.2, 3.0, size=120)
    ours, theirs = _pair(kind, solver=solver, learning_rate_init=0.05, max_iter=8, batch_size=120, tol=0.0,
                         **SMALL)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (ours, theirs):
            est.fit(X_SMALL, TARGETS[kind], sample_weight=weight)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    _assert_same_weights(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("kind", ["multiclass", "binary", "multioutput"])
def test_early_stopping_follows_sklearn(kind):
    """Same validation split, same scores, same stopping epoch, best weights restored."""
    params = dict(solver="sgd", learning_rate_init=0.05, early_stopping=True, n_iter_no_change=3,
                  max_iter=200, batch_size=36, **SMALL)
    ours, theirs = _fit_both(kind, **params)
    assert ours.n_iter_ == theirs.n_iter_ < 200
    np.testing.assert_allclose(ours.validation_scores_, theirs.validation_scores_, rtol=1e-9)
    assert ours.best_validation_score_ == pytest.approx(theirs.best_validation_score_, rel=1e-9)
    assert ours.best_loss_ is None and theirs.best_loss_ is None
    _assert_same_weights(ours, theirs, atol=1e-10)


def test_divergence_under_early_stopping_keeps_best_weights():
    """A diverging fit with early stopping ends on its best validation weights (scikit-learn #29504)."""
    params = dict(hidden_layer_sizes=(20,), activation="identity", solver="sgd", learning_rate_init=0.01,
                  early_stopping=True, n_iter_no_change=50, max_iter=100, random_state=0)
    y = TARGETS["regression"] * 100
    with pytest.warns(ConvergenceWarning, match="diverged.*best validation score"):
        reg = MLPRegressor(**params).fit(X_SMALL, y)
    scores = reg.validation_scores_
    assert len(scores) == len(reg.loss_curve_) == reg.n_iter_ < 100
    assert np.isnan(scores[-1]) and np.isnan(reg.loss_curve_[-1]) and not np.isnan(scores[:-1]).any()
    best = int(np.argmax(scores[:-1]))
    assert best > 0 and reg.best_validation_score_ == scores[best] > 0.9
    # The same fit stopped right after its best epoch ends on that epoch's weights.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        at_best = MLPRegressor(**{**params, "max_iter": best + 1}).fit(X_SMALL, y)
    _assert_same_weights(reg, at_best, atol=0)
    # Without early stopping, or without a finite score to keep, divergence is scikit-learn's error.
    with pytest.raises(ValueError, match="^Solver produced non-finite parameter weights. The input data"):
        MLPRegressor(**{**params, "early_stopping": False}).fit(X_SMALL, y)


# Not "multioutput": there scikit-learn's L-BFGS objective pairs a loss averaged
# over the outputs with the gradient of their sum, and fastbp's objective is the
# sum with its own gradient (the same stationary points, another line search).
# Not "binary": on this data a line-search trial point of iteration 5 has a
# probability of 1e-66, which scikit-learn's log-loss clips to 2e-16 and
# fastbp's, computed from the logits, does not; the searches part there.
@pytest.mark.parametrize("kind", ["multiclass", "multilabel", "regression"])
def test_lbfgs_follows_sklearn(kind):
    ours, theirs = _fit_both(kind, solver="lbfgs", max_iter=12, **SMALL)
    assert ours.n_iter_ == theirs.n_iter_ == 12
    assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-9)
    _assert_same_weights(ours, theirs, atol=1e-9)
    assert not hasattr(ours, "loss_curve_") and not hasattr(ours, "partial_fit")


@pytest.mark.parametrize("kind", list(TARGETS))
def test_adam_follows_sklearn(kind):
    """scikit-learn's epsilon sits on the uncorrected sqrt(v): Adam(eps_hat=True), at every step."""
    ours, theirs = _fit_both(kind, solver="adam", learning_rate_init=0.01, max_iter=10, batch_size=40,
                             tol=0.0, **dict(SMALL, shuffle=True))
    # The L2 term of the loss is interpolated within an epoch of 3 batches.
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-3)
    _assert_same_weights(ours, theirs, atol=1e-12)


@pytest.mark.parametrize("kind", list(TARGETS))
def test_full_batch_adam_follows_sklearn(kind):
    ours, theirs = _fit_both(kind, solver="adam", learning_rate_init=0.01, max_iter=10, batch_size=120,
                             tol=0.0, **SMALL)
    np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-10)
    _assert_same_weights(ours, theirs, atol=1e-12)


def test_warm_start_and_partial_fit_follow_sklearn():
    # Batches that divide the data: fastbp decays a last, smaller batch as a full one.
    params = dict(solver="sgd", learning_rate_init=0.05, max_iter=4, batch_size=30, tol=0.0, **SMALL)
    ours, theirs = _pair("multiclass", warm_start=True, **params)
    y = TARGETS["multiclass"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for est in (ours, theirs):
            est.fit(X_SMALL, y).fit(X_SMALL, y)  # the second fit restarts the optimizer
    _assert_same_weights(ours, theirs, atol=1e-12)
    assert len(ours.loss_curve_) == 8 and ours.n_iter_ == 4 and ours.t_ == 8 * 120

    ours, theirs = _pair("multiclass", **params)
    for est in (ours, theirs):
        est.partial_fit(X_SMALL[:60], y[:60], classes=[0, 1, 2])
        est.partial_fit(X_SMALL[60:], y[60:])  # continues the optimizer (momentum)
    _assert_same_weights(ours, theirs, atol=1e-12)
    assert (ours.n_iter_, ours.t_, len(ours.loss_curve_)) == (1, 120, 2)


@pytest.mark.parametrize("loss, y", [("softmax_cross_entropy", TARGETS["multiclass"]),
                                     ("binary_cross_entropy", TARGETS["multilabel"]),
                                     ("mse", TARGETS["multioutput"])])
def test_objective_gradient_central_differences(loss, y):
    """Sequential.objective, the entry point of solver='lbfgs': its gradient is the loss's."""
    n_out = 3 if loss != "mse" else 2
    model = fastbp.Sequential([fastbp.Dense(6, 5, activation="tanh"), fastbp.Dense(5, n_out)],
                              dtype="float64", seed=0)
    model.compile(loss)
    f = model.objective(X_SMALL, y)
    theta = model.get_flat_weights()
    loss_value, grad = f(theta)
    assert loss_value == pytest.approx(model.evaluate(X_SMALL, y)["loss"], rel=1e-12)
    eps = 1e-6
    numeric = np.empty_like(grad)
    for i in range(theta.size):
        step = np.zeros_like(theta)
        step[i] = eps
        numeric[i] = (f(theta + step)[0] - f(theta - step)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, numeric, rtol=1e-6, atol=1e-9)


# ----- fitted attributes -------------------------------------------------------------------


def _public_attributes(est):
    return {k for k in vars(est) if k.endswith("_") and not k.startswith("_")}


@pytest.mark.parametrize("kind, out_activation", [("binary", "logistic"), ("multiclass", "softmax"),
                                                  ("multilabel", "logistic"), ("regression", "identity"),
                                                  ("multioutput", "identity")])
@pytest.mark.parametrize("params", [dict(solver="adam"), dict(solver="sgd", early_stopping=True),
                                    dict(solver="lbfgs")], ids=["adam", "early_stopping", "lbfgs"])
def test_fitted_attributes_match_sklearn(kind, out_activation, params):
    ours, theirs = _fit_both(kind, hidden_layer_sizes=(6, 4), max_iter=3, random_state=0, **params)
    assert _public_attributes(ours) == _public_attributes(theirs)
    assert ours.out_activation_ == theirs.out_activation_ == out_activation
    assert (ours.n_layers_, ours.n_outputs_, ours.n_features_in_) == \
           (theirs.n_layers_, theirs.n_outputs_, theirs.n_features_in_)
    assert [c.shape for c in ours.coefs_] == [c.shape for c in theirs.coefs_]
    assert [b.shape for b in ours.intercepts_] == [b.shape for b in theirs.intercepts_]
    if hasattr(theirs, "classes_"):
        np.testing.assert_array_equal(ours.classes_, theirs.classes_)
        assert ours.predict_proba(X_SMALL).shape == theirs.predict_proba(X_SMALL).shape
    assert ours.predict(X_SMALL).shape == theirs.predict(X_SMALL).shape
    if params["solver"] != "lbfgs":
        assert len(ours.loss_curve_) == ours.n_iter_ == theirs.n_iter_ and ours.t_ == theirs.t_
        for name in ("best_loss_", "validation_scores_", "best_validation_score_"):
            assert (getattr(ours, name) is None) == (getattr(theirs, name) is None)


def test_dtype():
    """dtype=None is scikit-learn's rule: float32 data trains in float32, anything else in float64.

    Predictions come in the dtype of X and the network combined, as scikit-learn's
    products give them; dtype='float32' trains in float32 whatever the data.
    """
    y = TARGETS["multiclass"]
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2)
    for X, expected in [(X_SMALL, np.float64), (X_SMALL.astype(np.float32), np.float32),
                        (np.round(10 * X_SMALL).astype(np.int64), np.float64)]:
        fitted = clone(clf).fit(X, y)
        assert fitted.coefs_[0].dtype == expected and fitted.intercepts_[0].dtype == expected
        assert fitted.predict_proba(X).dtype == expected
    clf.fit(X_SMALL, y)
    proba = clf.predict_proba(X_SMALL)
    assert proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(clf.predict_log_proba(X_SMALL), np.log(proba))
    clf32 = clone(clf).set_params(dtype="float32").fit(X_SMALL, y)
    assert clf32.coefs_[0].dtype == np.float32 and clf32.predict_proba(X_SMALL).dtype == np.float64
    assert clf32.predict_proba(X_SMALL.astype(np.float32)).dtype == np.float32
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2).fit(X_SMALL, TARGETS["regression"])
    assert reg.coefs_[0].dtype == np.float64 and reg.predict(X_SMALL).dtype == np.float64
    reg32 = clone(reg).set_params(dtype="float32").fit(X_SMALL, TARGETS["regression"])
    assert reg32.coefs_[0].dtype == np.float32 and reg32.predict(X_SMALL).dtype == np.float64
    assert reg32.predict(X_SMALL.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="Input X contains infinity or a value too large for dtype..float32"):
        reg32.predict(np.full((2, 6), 1e300))
    # A continued network keeps the dtype it was fitted in, whatever the new data's.
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, warm_start=True)
    reg.fit(X_SMALL.astype(np.float32), TARGETS["regression"])
    reg.fit(X_SMALL, TARGETS["regression"]).partial_fit(X_SMALL, TARGETS["regression"])
    assert reg.coefs_[0].dtype == np.float32 and reg.predict(X_SMALL).dtype == np.float64
    with pytest.raises(ValueError, match="the fitted network is float32; dtype='float64'"):
        reg.set_params(dtype="float64").fit(X_SMALL, TARGETS["regression"])
    with pytest.raises(ValueError, match="dtype must be 'float32' or 'float64'"):
        clone(clf).set_params(dtype="float16").fit(X_SMALL, y)


def test_coefs_are_the_network():
    """Editing coefs_ in place, or replacing it, changes the predictions, as in scikit-learn."""
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, random_state=0).fit(X_SMALL, TARGETS["regression"])
    before = reg.predict(X_SMALL)
    reg.intercepts_[-1] += 1.0
    np.testing.assert_allclose(reg.predict(X_SMALL), before + 1.0, rtol=1e-5)
    reg.coefs_ = [np.zeros_like(c) for c in reg.coefs_]
    np.testing.assert_allclose(reg.predict(X_SMALL), reg.intercepts_[-1][0], rtol=1e-6)


# ----- scikit-learn workflow ---------------------------------------------------------------


def test_pipeline_grid_search_cross_val_clone_pickle():
    X, y = load_digits(return_X_y=True)
    X, y = X[:400], y[:400]
    pipe = make_pipeline(StandardScaler(), MLPClassifier(hidden_layer_sizes=(16,), learning_rate_init=0.01,
                                                         max_iter=50, random_state=0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search = GridSearchCV(pipe, {"mlpclassifier__alpha": [1e-4, 1e-1]}, cv=2).fit(X, y)
        scores = cross_val_score(search.best_estimator_, X, y, cv=3)
    assert search.best_score_ > 0.85 and scores.mean() > 0.85
    fitted = search.best_estimator_
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(restored.predict_proba(X), fitted.predict_proba(X))
    # A restored estimator keeps training from where it was.
    mlp = restored[-1]
    mlp.partial_fit(restored[0].transform(X), y)
    assert mlp.t_ == fitted[-1].t_ + len(X)
    assert not np.array_equal(mlp.coefs_[0], fitted[-1].coefs_[0])
    cloned = clone(fitted)
    assert not hasattr(cloned[-1], "coefs_") and cloned.get_params()["mlpclassifier__alpha"] == \
        fitted.get_params()["mlpclassifier__alpha"]


def test_partial_fit_classes():
    y = TARGETS["multiclass"]
    clf = MLPClassifier(hidden_layer_sizes=(5,), random_state=0)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        clf.partial_fit(X_SMALL, y)
    clf.partial_fit(X_SMALL[:10], np.zeros(10, dtype=int), classes=[0, 1, 2])
    assert clf.predict_proba(X_SMALL).shape == (120, 3)
    np.testing.assert_array_equal(clf.classes_, [0, 1, 2])
    clf.partial_fit(X_SMALL, y)
    with pytest.raises(ValueError, match="classes not in"):
        clf.partial_fit(X_SMALL, y + 1)
    with pytest.raises(ValueError, match="early_stopping"):
        clone(clf).set_params(early_stopping=True).partial_fit(X_SMALL, y, classes=[0, 1, 2])
    assert not hasattr(MLPClassifier(solver="lbfgs"), "partial_fit")
    assert not hasattr(MLPRegressor(solver="lbfgs"), "partial_fit")


def test_multilabel_and_multioutput():
    X, Y = make_multilabel_classification(n_samples=300, n_features=10, n_classes=4, random_state=0)
    clf = MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X[:200], Y[:200])
    assert clf.predict(X[200:]).shape == (100, 4) and set(np.unique(clf.predict(X))) <= {0, 1}
    assert clf.predict_proba(X[200:]).shape == (100, 4) and clf.out_activation_ == "logistic"
    ref = sk_nn.MLPClassifier(hidden_layer_sizes=(32,), max_iter=300, random_state=0).fit(X[:200], Y[:200])
    assert abs(clf.score(X[200:], Y[200:]) - ref.score(X[200:], Y[200:])) <= 0.05

    X, y = make_friedman1(n_samples=300, random_state=0)
    Y = np.column_stack([y, -2 * y + X[:, 0]])
    reg = MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0,
                       learning_rate_init=0.01).fit(X[:200], Y[:200])
    assert reg.predict(X[200:]).shape == (100, 2) and reg.n_outputs_ == 2
    ref = sk_nn.MLPRegressor(hidden_layer_sizes=(32,), max_iter=300, random_state=0,
                             learning_rate_init=0.01).fit(X[:200], Y[:200])
    assert abs(reg.score(X[200:], Y[200:]) - ref.score(X[200:], Y[200:])) <= 0.05
    assert reg.score(X[200:], Y[200:]) > 0.6


def test_sparse_input_and_feature_names():
    from scipy import sparse

    y = TARGETS["binary"]
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        dense = clone(clf).fit(X_SMALL, y).predict_proba(X_SMALL)
        np.testing.assert_array_equal(clone(clf).fit(sparse.csr_matrix(X_SMALL), y).predict_proba(X_SMALL), dense)
    pd = pytest.importorskip("pandas")
    frame = pd.DataFrame(X_SMALL, columns=[f"f{i}" for i in range(6)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(frame, y)
    np.testing.assert_array_equal(clf.feature_names_in_, frame.columns)
    with pytest.warns(UserWarning, match="feature names"):
        clf.predict(X_SMALL)


# ----- messages and warnings ---------------------------------------------------------------


@pytest.mark.parametrize("params", [dict(solver="adam"), dict(solver="sgd"), dict(solver="lbfgs")],
                         ids=["adam", "sgd", "lbfgs"])
def test_convergence_warning(params):
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=2, random_state=0, **params)
    with pytest.warns(ConvergenceWarning):
        clf.fit(X_SMALL, TARGETS["multiclass"])
    assert clf.n_iter_ == 2


def test_no_convergence_warning_when_converged():
    clf = MLPClassifier(hidden_layer_sizes=(5,), max_iter=100, tol=10.0, n_iter_no_change=1, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        clf.fit(X_SMALL, TARGETS["multiclass"])
    assert clf.n_iter_ == 3  # epochs 2 and 3 fail to improve by tol: 2 > n_iter_no_change


def test_verbose_prints_sklearn_lines():
    out = io.StringIO()
    with redirect_stdout(out), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        MLPRegressor(hidden_layer_sizes=(5,), max_iter=2, verbose=True).fit(X_SMALL, TARGETS["regression"])
    assert out.getvalue().startswith("Iteration 1, loss = ")


def test_errors():
    y = TARGETS["regression"]
    with pytest.raises(ValueError, match="poisson"):
        MLPRegressor(loss="poisson").fit(X_SMALL, y)
    with pytest.raises(ValueError, match="hidden_layer_sizes must be > 0"):
        MLPRegressor(hidden_layer_sizes=(5, 0)).fit(X_SMALL, y)
    with pytest.raises(ValueError, match="momentum"):
        MLPRegressor(solver="sgd", momentum=1.0).fit(X_SMALL, y)
    with pytest.raises(ValueError, match="non-finite"):
        MLPRegressor(solver="sgd", learning_rate_init=1e6, max_iter=50).fit(X_SMALL, y * 1e6)
    reg = MLPRegressor(hidden_layer_sizes=(5,), max_iter=1, warm_start=True).fit(X_SMALL, y)
    with pytest.raises(ValueError, match="layer sizes"):
        reg.set_params(hidden_layer_sizes=(6,)).fit(X_SMALL, y)


# ----- quality next to scikit-learn --------------------------------------------------------


def test_digits_accuracy_matches_sklearn():
    """Default hyperparameters, the same split and seeds: accuracy within 1 point."""
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.3, random_state=0, stratify=y)
    ours, theirs = [], []
    for seed in (0, 1):
        params = dict(random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.append(MLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test))
            theirs.append(sk_nn.MLPClassifier(**params).fit(X_train, y_train).score(X_test, y_test))
    print(f"digits test accuracy: fastbp {np.mean(ours):.4f} {ours}, scikit-learn {np.mean(theirs):.4f} {theirs}")
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.01
    assert np.mean(ours) > 0.95


def test_regression_r2_matches_sklearn():
    """Default hyperparameters, the same split and seeds: R^2 within 0.02."""
    X, y = make_regression(n_samples=1500, n_features=10, seed=0, dtype=np.float64)
    X_train, X_test, y_train, y_test = train_test_split(X, y[:, 0], test_size=0.3, random_state=0)
    ours, theirs = [], []
    for seed in (0, 1):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            ours.append(MLPRegressor(random_state=seed).fit(X_train, y_train).score(X_test, y_test))
            theirs.append(sk_nn.MLPRegressor(random_state=seed).fit(X_train, y_train).score(X_test, y_test))
    print(f"make_regression test R^2: fastbp {np.mean(ours):.4f} {ours}, "
          f"scikit-learn {np.mean(theirs):.4f} {theirs}")
    assert abs(np.mean(ours) - np.mean(theirs)) <= 0.02
    assert np.mean(ours) > 0.9


# ----- class_weight ---------------------------------------------------------------------------------


@pytest.mark.parametrize("solver", ["sgd", "lbfgs"])
@pytest.mark.parametrize("labels", [np.array(["a", "b", "b", "c", "c", "c"]), np.array([-1, 1, 1])])
def test_class_weight_equals_the_matching_sample_weight(labels, solver):
    from sklearn.utils.class_weight import compute_sample_weight

    rng = np.random.default_rng(0)
    y = labels[rng.integers(0, len(labels), 40)]  # unbalanced by the repeats in ``labels``
    X = rng.standard_normal((40, 5))
    params = dict(hidden_layer_sizes=(7,), solver=solver, max_iter=5, random_state=0, dtype="float64")
    cw = {labels[0]: 3.0, labels[-1]: 0.5}
    for class_weight in (cw, "balanced"):
        clf = MLPClassifier(class_weight=class_weight, **params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            clf.fit(X, y)
            ref = MLPClassifier(**params).fit(X, y, sample_weight=compute_sample_weight(class_weight, y))
            plain = MLPClassifier(**params).fit(X, y)
        for a, b in zip(clf.coefs_ + clf.intercepts_, ref.coefs_ + ref.intercepts_):
            np.testing.assert_array_equal(a, b)
        assert clf.loss_ == ref.loss_
        assert not np.array_equal(clf.coefs_[0], plain.coefs_[0])


def test_class_weight_errors():
    y = np.array([0, 1, 2, 1] * 10)
    X = np.random.default_rng(0).standard_normal((40, 3))
    with pytest.raises(ValueError, match=r"class_weight has keys \[5\] that are not classes of y"):
        MLPClassifier(class_weight={5: 2.0}, max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="class_weight"):
        MLPClassifier(class_weight="auto", max_iter=2).fit(X, y)
    with pytest.raises(ValueError, match="class_weight='balanced' is not supported for partial_fit"):
        MLPClassifier(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])
    Y = np.eye(3)[y]
    Y[:, 0] = 1
    with pytest.raises(ValueError, match="class_weight is not supported for multilabel"):
        MLPClassifier(class_weight={0: 2.0}, max_iter=2).fit(X, Y)


# ----- loss='poisson' ------------------------------------------------------------------------------

_COUNTS = np.random.RandomState(5).poisson(np.exp(0.3 * X_SMALL[:, :2] @ [1.0, -0.5] + 0.2)[:, None]
                                           * np.array([1.0, 2.0]), size=(120, 2)).astype(np.float64)


@pytest.mark.parametrize("n_out", [1, 2])
@pytest.mark.parametrize("solver", [dict(solver="sgd", learning_rate_init=0.05, batch_size=120),
                                    dict(solver="sgd", learning_rate_init=0.05, batch_size=40),
                                    dict(solver="lbfgs")], ids=["full-batch", "three-batches", "lbfgs"])
def test_poisson_follows_sklearn(n_out, solver):
    """The exp output, loss_ (the half Poisson deviance, y log y included) and predict = exp(output)."""
    y = _COUNTS[:, 0] if n_out == 1 else _COUNTS
    params = dict(loss="poisson", max_iter=8, tol=0.0, **SMALL, **solver)
    ours, theirs = MLPRegressor(dtype="float64", **params), sk_nn.MLPRegressor(**params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        ours.fit(X_SMALL, y)
        theirs.fit(X_SMALL, y)
    assert ours.out_activation_ == theirs.out_activation_ == "exp"
    _assert_same_weights(ours, theirs, atol=1e-10)
    np.testing.assert_allclose(ours.predict(X_SMALL), theirs.predict(X_SMALL), rtol=1e-10)
    if solver.get("batch_size") == 40:
        # The L2 term of the loss is interpolated within an epoch of 3 batches (the y-only terms are exact).
        np.testing.assert_allclose(ours.loss_curve_, theirs.loss_curve_, rtol=1e-3)
    else:
        assert ours.loss_ == pytest.approx(theirs.loss_, rel=1e-10)
    assert ours.score(X_SMALL, y) == pytest.approx(theirs.score(X_SMALL, y), rel=1e-8)


def test_poisson_needs_nonnegative_targets():
    with pytest.raises(ValueError, match=r"loss='poisson' needs targets y >= 0"):
        MLPRegressor(loss="poisson").fit(X_SMALL, TARGETS["regression"])
