"""Weights in from scikit-learn."""
import copy
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastbp


def _quiet_fit(estimator, X, y):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning: a few epochs are enough here
        return estimator.fit(X, y)


# ----- from scikit-learn ----------------------------------------------------------------------


def _sklearn_problem(target, dtype=np.float64):
    """(sklearn estimator class, X, y) for one kind of target."""
    from sklearn import neural_network as sk_nn

    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 6)).astype(dtype)
    noise = 0.5 * rng.standard_normal((90, 3))
    if target == "binary":
        return sk_nn.MLPClassifier, X, np.where(X[:, 0] + noise[:, 0] > 0, "yes", "no")
    if target == "multiclass":
        return sk_nn.MLPClassifier, X, np.array([2, 5, 9])[np.argmax(X[:, :3] + noise, axis=1)]
    if target == "multilabel":
        return sk_nn.MLPClassifier, X, (X[:, :3] + noise > 0).astype(int)
    if target == "regression":
        return sk_nn.MLPRegressor, X, X[:, 0] ** 2 - X[:, 1]
    return sk_nn.MLPRegressor, X, np.column_stack([X[:, 0] ** 2 - X[:, 1], X[:, 2] * X[:, 3]])


TARGETS = ["binary", "multiclass", "multilabel", "regression", "regression multi-output"]


@pytest.mark.parametrize("solver", ["adam", "sgd", "lbfgs"])
@pytest.mark.parametrize("target", TARGETS)
def test_from_sklearn_predicts_what_sklearn_predicts(target, solver):
    pytest.importorskip("sklearn")
    cls, X, y = _sklearn_problem(target)
    sk = _quiet_fit(cls(hidden_layer_sizes=(7, 5), activation="tanh", solver=solver, alpha=1e-3,
                        max_iter=15, random_state=0), X, y)
    fb = fastbp.from_sklearn(sk)
    assert type(fb).__name__ == cls.__name__ and fb.dtype == "float64"
    shared = {k: v for k, v in sk.get_params().items() if k in fb.get_params()}
    assert set(shared) == set(sk.get_params())  # every parameter of scikit-learn's is fastbp's too
    for name, value in shared.items():
        assert fb.get_params()[name] == value, name
    for name in ("n_layers_", "n_outputs_", "out_activation_", "n_iter_", "n_features_in_", "loss_"):
        assert getattr(fb, name) == getattr(sk, name), name
    if solver != "lbfgs":
        assert fb.loss_curve_ == sk.loss_curve_ and fb.best_loss_ == sk.best_loss_
    for a, b in zip(fb.coefs_ + fb.intercepts_, sk.coefs_ + sk.intercepts_):
        np.testing.assert_array_equal(a, b)
    X_new = np.random.default_rng(1).standard_normal((40, 6))
    if cls.__name__ == "MLPClassifier":
        np.testing.assert_array_equal(fb.classes_, sk.classes_)
        np.testing.assert_array_equal(fb.predict(X_new), sk.predict(X_new))
        np.testing.assert_allclose(fb.predict_proba(X_new), sk.predict_proba(X_new), rtol=1e-12, atol=1e-14)
    else:
        np.testing.assert_allclose(fb.predict(X_new), sk.predict(X_new), rtol=1e-12, atol=1e-12)
    assert fb.score(X, y) == pytest.approx(sk.score(X, y), rel=1e-12)


@pytest.mark.parametrize("target", TARGETS)
def test_partial_fit_continues_from_the_sklearn_weights(target):
    pytest.importorskip("sklearn")
    cls, X, y = _sklearn_problem(target)
    # Full-batch SGD without momentum: one partial_fit is one deterministic step, the same in
    # scikit-learn (whose optimizer state carries over) and in fastbp (which starts a fresh one).
    sk = _quiet_fit(cls(hidden_layer_sizes=(8,), solver="sgd", momentum=0.0, batch_size=len(X),
                        learning_rate_init=0.05, max_iter=10, random_state=0), X, y)
    fb = fastbp.from_sklearn(sk)
    before = [w.copy() for w in fb.coefs_]
    sk_next = copy.deepcopy(sk).partial_fit(X, y)
    fb.partial_fit(X, y)
    assert not np.allclose(fb.coefs_[0], before[0], rtol=0, atol=1e-6)  # it trained
    for a, b in zip(fb.coefs_ + fb.intercepts_, sk_next.coefs_ + sk_next.intercepts_):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
    assert fb.n_iter_ == 1 and fb.loss_curve_[:-1] == sk.loss_curve_
    np.testing.assert_array_equal(sk.coefs_[0], before[0])  # the scikit-learn estimator is untouched


def test_from_sklearn_keeps_float32_and_feature_names():
    pytest.importorskip("sklearn")
    pd = pytest.importorskip("pandas")
    cls, X, y = _sklearn_problem("multiclass", dtype=np.float32)
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(6)])
    sk = _quiet_fit(cls(hidden_layer_sizes=(6,), max_iter=10, random_state=0), frame, y)
    assert sk.coefs_[0].dtype == np.float32
    fb = fastbp.from_sklearn(sk)
    assert fb.dtype == "float32" and list(fb.feature_names_in_) == list(frame.columns)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        np.testing.assert_allclose(fb.predict_proba(frame), sk.predict_proba(frame), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(fb.predict(frame), sk.predict(frame))


def test_from_sklearn_refuses_what_it_cannot_take():
    sklearn = pytest.importorskip("sklearn")
    from sklearn import neural_network as sk_nn
    from sklearn.linear_model import LogisticRegression

    with pytest.raises(sklearn.exceptions.NotFittedError):
        fastbp.from_sklearn(sk_nn.MLPClassifier())
    with pytest.raises(TypeError, match="got LogisticRegression"):
        fastbp.from_sklearn(LogisticRegression())
    _, X, y = _sklearn_problem("regression")
    poisson = _quiet_fit(sk_nn.MLPRegressor(loss="poisson", max_iter=2), X, np.abs(y))
    with pytest.raises(ValueError, match="no Poisson loss"):
        fastbp.from_sklearn(poisson)
    momentum_one = _quiet_fit(sk_nn.MLPRegressor(solver="sgd", momentum=1.0, max_iter=1), X, y)
    with pytest.raises(ValueError, match="momentum"):
        fastbp.from_sklearn(momentum_one)


def test_import_fastbp_and_from_sklearn_do_not_import_sklearn():
    code = "import sys, fastbp; fastbp.from_sklearn; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr
