"""Weights in from scikit-learn, and in and out with PyTorch's names and layouts."""
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
    momentum_one = _quiet_fit(sk_nn.MLPRegressor(solver="sgd", momentum=1.0, max_iter=1), X, y)
    with pytest.raises(ValueError, match="momentum"):
        fastbp.from_sklearn(momentum_one)


def test_from_sklearn_takes_a_poisson_regressor():
    pytest.importorskip("sklearn")
    from sklearn import neural_network as sk_nn

    _, X, y = _sklearn_problem("regression")
    poisson = _quiet_fit(sk_nn.MLPRegressor(loss="poisson", max_iter=5, random_state=0), X, np.abs(y) / 10)
    ours = fastbp.from_sklearn(poisson)
    assert ours.loss == "poisson" and ours.out_activation_ == "exp"
    np.testing.assert_allclose(ours.predict(X), poisson.predict(X), rtol=1e-12)


def test_import_fastbp_and_from_sklearn_do_not_import_sklearn():
    code = "import sys, fastbp; fastbp.from_sklearn; print('sklearn' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.stdout.strip() == "False", result.stderr


# ----- PyTorch's names and layouts ------------------------------------------------------------


def _model(dtype="float64"):
    # Layer indices: 0 Dense, 1 ReLU, 2 Dropout, 3 Dense with tanh fused, 4 Dense.
    return fastbp.Sequential([fastbp.Dense(4, 8), fastbp.ReLU(), fastbp.Dropout(0.1),
                              fastbp.Dense(8, 5, activation="tanh"), fastbp.Dense(5, 3)], dtype=dtype, seed=0)


def test_state_dict_names_and_layouts():
    model = _model()
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias", "4.weight", "4.bias"]
    assert [a.shape for a in state.values()] == [(8, 4), (8,), (5, 8), (5,), (3, 5), (3,)]
    weights = model.get_weights()
    for (key, value), w in zip(state.items(), weights):
        assert value.dtype == np.float64
        np.testing.assert_array_equal(value, w.T if key.endswith("weight") else w)
    # out = x W^T + b, as nn.Linear computes it, layer by layer.
    x = np.random.default_rng(0).standard_normal((6, 4))
    h = np.maximum(x @ state["0.weight"].T + state["0.bias"], 0.0)
    h = np.tanh(h @ state["3.weight"].T + state["3.bias"])
    np.testing.assert_allclose(h @ state["4.weight"].T + state["4.bias"], model.decision_function(x),
                               rtol=1e-12, atol=1e-14)
    state["0.weight"][...] = 0.0  # a copy: the model keeps its weights
    assert np.abs(model.get_weights()[0]).sum() > 0


class _Tensorish:
    """Not an ndarray, only convertible to one, as a CPU torch.Tensor is."""

    def __init__(self, array):
        self._array = array

    def __array__(self, dtype=None, copy=None):
        return self._array if dtype is None else self._array.astype(dtype)


def test_load_state_dict_roundtrip_cast_and_array_likes():
    source = _model("float64")
    target = _model("float32")
    target.set_flat_weights(np.zeros_like(target.theta))
    target.load_state_dict({k: _Tensorish(v) for k, v in source.state_dict().items()})
    assert target.theta.dtype == np.float32
    np.testing.assert_array_equal(target.theta, source.theta.astype(np.float32))


def test_load_state_dict_names_what_does_not_fit():
    model = _model()
    before = model.get_flat_weights()
    state = model.state_dict()
    bad = dict(state)
    del bad["3.bias"]
    bad["1.weight"] = np.zeros((8, 8))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['3.bias'\]; unexpected key\(s\) \['1.weight'\]"):
        model.load_state_dict(bad)
    bad = dict(state)
    bad["0.bias"] = np.ones(8)  # fits, but nothing loads while a later key does not
    bad["4.weight"] = np.zeros((5, 3))  # (in, out): fastbp's layout, not PyTorch's
    with pytest.raises(ValueError, match=r"state_dict\['4.weight'\] must have shape \(3, 5\); got \(5, 3\)"):
        model.load_state_dict(bad)
    np.testing.assert_array_equal(model.get_flat_weights(), before)
    with pytest.raises(TypeError, match="mapping"):
        model.load_state_dict(list(state.values()))


def test_against_pytorch():
    torch = pytest.importorskip("torch")
    nn = torch.nn
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).double()
    model = fastbp.Sequential([fastbp.Dense(4, 8), fastbp.ReLU(), fastbp.Dense(8, 3)], dtype="float64", seed=1)
    x = np.random.default_rng(0).standard_normal((10, 4))

    model.load_state_dict(net.state_dict())  # torch tensors in, without fastbp importing torch
    with torch.no_grad():
        want = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(model.decision_function(x), want, rtol=1e-12, atol=1e-14)

    other = fastbp.Sequential([fastbp.Dense(4, 8), fastbp.ReLU(), fastbp.Dense(8, 3)], dtype="float64", seed=2)
    net.load_state_dict({k: torch.from_numpy(v) for k, v in other.state_dict().items()})
    with torch.no_grad():
        got = net(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(got, other.decision_function(x), rtol=1e-12, atol=1e-14)


# ----- to_torch: the equivalent nn.Sequential ---------------------------------------------------


def test_to_torch_expands_fused_activations():
    torch = pytest.importorskip("torch")
    X, y = fastbp.datasets.load_digits()
    model = fastbp.Sequential([fastbp.Dense(64, 256, activation="relu"), fastbp.Dropout(0.2),
                               fastbp.Dense(256, 10)], seed=0)
    model.fit(X[:300], y[:300], epochs=2, loss="softmax_cross_entropy", verbose=0)
    module = model.to_torch()
    assert [type(m).__name__ for m in module] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert not module.training
    with torch.no_grad():
        logits = module(torch.as_tensor(X[:50])).numpy()
    np.testing.assert_allclose(logits, model.decision_function(X[:50]), rtol=1e-5, atol=1e-5)
    # The expanded state dict loads, strictly, into the module a PyTorch user would write.
    state = model.state_dict(expanded=True)
    assert list(state) == ["0.weight", "0.bias", "3.weight", "3.bias"]
    own = torch.nn.Sequential(torch.nn.Linear(64, 256), torch.nn.ReLU(), torch.nn.Dropout(0.2),
                              torch.nn.Linear(256, 10)).eval()
    own.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    with torch.no_grad():
        np.testing.assert_array_equal(own(torch.as_tensor(X[:50])).numpy(), logits)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_to_torch_carries_norm_layers_and_their_running_statistics(dtype):
    torch = pytest.importorskip("torch")
    X, y = fastbp.datasets.make_blobs(64, 6, centers=3, seed=3)
    layers = [fastbp.Dense(6, 8), fastbp.BatchNorm(8), fastbp.ReLU(), fastbp.Dense(8, 8, activation="tanh"),
              fastbp.LayerNorm(8), fastbp.Dense(8, 8, activation="leaky_relu", alpha=0.2),
              fastbp.Dense(8, 3), fastbp.Softmax()]
    model = fastbp.Sequential(layers, seed=0, dtype=dtype)
    model.fit(X, y, epochs=3, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    module = model.to_torch()
    # The final Softmax is the loss's own: left out, as decision_function leaves it out.
    assert [type(m).__name__ for m in module] == ["Linear", "BatchNorm1d", "ReLU", "Linear", "Tanh",
                                                  "LayerNorm", "Linear", "LeakyReLU", "Linear"]
    assert module[7].negative_slope == 0.2
    bn = module[1]
    np.testing.assert_array_equal(bn.running_mean.numpy(), model.state_dict()["1.running_mean"])
    assert float(bn.running_var.numpy().min()) != 1.0 and int(bn.num_batches_tracked) == model.batches_tracked
    with torch.no_grad():
        logits = module(torch.as_tensor(X.astype(dtype))).numpy()
    tol = 1e-5 if dtype == "float32" else 1e-12
    np.testing.assert_allclose(logits, model.decision_function(X), rtol=tol, atol=tol)


def test_to_torch_folds_the_input_standardization():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3)) * [100.0, 0.01, 1.0] + [5000.0, 0.0, -3.0]
    model = fastbp.Sequential([fastbp.Dense(3, 5, activation="elu"), fastbp.Dense(5, 2)], seed=0, dtype="float64")
    model.compile("mse")
    model.set_input_scaling(X.mean(0), X.std(0))
    with torch.no_grad():
        out = model.to_torch()(torch.as_tensor(X)).numpy()
    np.testing.assert_allclose(out, model.decision_function(X), rtol=1e-10, atol=1e-10)
    with pytest.raises(ValueError, match=r"standardizes its inputs .* use model\.to_torch\(\)"):
        model.state_dict(expanded=True)


def test_to_torch_of_an_unbuilt_model():
    with pytest.raises(RuntimeError, match="to_torch needs a built model"):
        fastbp.Sequential([fastbp.Dense(4), fastbp.Dense(2)]).to_torch()
