"""Sequential as a data structure and as a function: parameters, forward pass, outputs.

The forward pass of every activation, fused into Dense or standing alone, is
checked against a plain NumPy network built from ``get_weights``; training
with each activation is checked to lower the loss; a final softmax (or
sigmoid) layer is checked to be stripped for its loss, so that it trains on
logits exactly like a network without it.
"""
import math

import numpy as np
import pytest
from scipy.special import erf, log_softmax, softmax

import fastbp
from fastbp import Activation, Dense, Dropout, Sequential
from fastbp.layers import ACTIVATIONS


# ----- a NumPy network ------------------------------------------------------------------

def np_activation(name, z, alpha):
    if name == "identity":
        return z
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "leaky_relu":
        return np.where(z > 0, z, alpha * z)
    if name == "elu":
        return np.where(z > 0, z, alpha * np.expm1(z))
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    if name == "tanh":
        return np.tanh(z)
    if name == "softplus":
        return np.logaddexp(0.0, z)
    if name == "gelu":
        return 0.5 * z * (1.0 + erf(z / math.sqrt(2.0)))
    if name == "silu":
        return z / (1.0 + np.exp(-z))
    if name == "selu":
        return 1.0507009873554805 * np.where(z > 0, z, 1.6732632423543772 * np.expm1(np.minimum(z, 0.0)))
    if name == "softmax":
        return softmax(z, axis=1)
    if name == "log_softmax":
        return log_softmax(z, axis=1)
    raise AssertionError(name)


def np_forward(model, X):
    """The network's output in inference mode (dropout is the identity), in float64."""
    weights = [w.astype(np.float64) for w in model.get_weights()]
    a = np.asarray(X, dtype=np.float64)
    k = 0
    for layer in model.layers:
        if isinstance(layer, Dense):
            a = np_activation(layer.activation, a @ weights[k] + weights[k + 1], layer.alpha)
            k += 2
        elif isinstance(layer, Activation):
            a = np_activation(layer.activation, a, layer.alpha)
    return a


@pytest.fixture(scope="module")
def blobs():
    X, y = fastbp.datasets.make_blobs(120, 4, centers=3, cluster_std=2.5, seed=1)
    return X, y


# ----- parameters -------------------------------------------------------------------------


def test_parameters_live_in_one_flat_vector_weights_first():
    model = Sequential([Dense(3, 5, activation="relu", bias_init=0.25), Dropout(0.5), Dense(5, 2)], seed=0)
    assert model.n_parameters == 3 * 5 + 5 + 5 * 2 + 2 == model.theta.size
    w0, b0, w1, b1 = model.get_weights()
    assert (w0.shape, b0.shape, w1.shape, b1.shape) == ((3, 5), (5,), (5, 2), (2,))
    np.testing.assert_array_equal(model.theta, np.concatenate([w0.ravel(), w1.ravel(), b0, b1]))
    np.testing.assert_array_equal(b0, np.full(5, 0.25, dtype=np.float32))
    np.testing.assert_array_equal(b1, np.zeros(2, dtype=np.float32))
    # get_weights returns copies; set_weights writes through to theta.
    w0[...] = 7.0
    assert not np.any(model.theta == 7.0)
    new = [np.full(a.shape, i + 1.0) for i, a in enumerate(model.get_weights())]
    model.set_weights(new)
    np.testing.assert_array_equal(model.theta, np.concatenate([np.full(15, 1.0), np.full(10, 3.0),
                                                               np.full(5, 2.0), np.full(2, 4.0)]))
    flat = np.arange(model.n_parameters, dtype=np.float32)
    model.set_flat_weights(flat)
    np.testing.assert_array_equal(model.get_flat_weights(), flat)
    np.testing.assert_array_equal(model.get_weights()[3], flat[-2:])


@pytest.mark.parametrize("activation, init, limit", [
    ("relu", "he_uniform", math.sqrt(6 / 40)),
    ("tanh", "glorot_uniform", math.sqrt(6 / (40 + 30))),
])
def test_default_initializers(activation, init, limit):
    layer = Dense(40, 30, activation=activation)
    assert layer.init == init
    w = Sequential([layer], seed=3).get_weights()[0]
    assert np.abs(w).max() <= limit
    assert np.abs(w).max() > 0.95 * limit  # uniform over the whole range
    assert abs(w.std() - limit / math.sqrt(3)) < 0.05 * limit


def test_seed_fixes_the_initial_weights():
    layers = lambda: [Dense(6, 8, activation="relu"), Dense(8, 3)]  # noqa: E731
    a, b, c = Sequential(layers(), seed=5), Sequential(layers(), seed=5), Sequential(layers(), seed=6)
    np.testing.assert_array_equal(a.theta, b.theta)
    assert not np.array_equal(a.theta, c.theta)
    assert not Sequential([Dense(6, 3, init="zeros", bias_init=0.0)], seed=5).theta.any()


@pytest.mark.parametrize("dtype", ["float32", "float64", np.float64])
def test_dtype(dtype, blobs):
    X, y = blobs
    model = Sequential([Dense(4, 8, activation="relu"), Dense(8, 3)], dtype=dtype, seed=0)
    assert model.theta.dtype == np.dtype(dtype)
    model.fit(X, y, epochs=2, loss="softmax_cross_entropy", verbose=0)
    assert model.theta.dtype == np.dtype(dtype)
    assert model.decision_function(X).dtype == np.dtype(dtype)
    assert model.predict_proba(X).dtype == np.dtype(dtype)
    assert model.predict(X).dtype == np.int64


def test_summary_and_repr():
    model = Sequential([Dense(4, 8, activation="gelu"), Dropout(0.25), fastbp.Tanh(), Dense(8, 3)],
                       dtype="float64", seed=0)
    summary = model.summary()
    assert summary.splitlines()[0] == "Sequential (float64, 67 parameters, device cpu)"
    assert "Dense(in_features=4, out_features=8, activation='gelu'" in summary
    assert "Dropout(rate=0.25)" in summary and "Tanh()" in summary
    assert repr(model).startswith("Sequential([Dense(in_features=4") and repr(model).endswith("dtype='float64')")


def test_activation_aliases():
    assert Dense(2, 2).activation == "identity"
    assert Dense(2, 2, activation="linear").activation == "identity"
    assert Dense(2, 2, activation="logistic").activation == "sigmoid"
    assert fastbp.LeakyReLU().alpha == 0.01 and fastbp.ELU().alpha == 1.0
    assert Dense(2, 2, activation="leaky_relu", alpha=0.2).alpha == 0.2


def test_compile_returns_the_model_and_resolves_names():
    model = Sequential([Dense(4, 3)], seed=0)
    assert model.compile("cross_entropy", "adam") is model
    assert isinstance(model.loss, fastbp.losses.SoftmaxCrossEntropy)
    assert isinstance(model.optimizer, fastbp.Adam) and not model.optimizer.decoupled
    assert model.compile("bce", "adamw").optimizer.decoupled
    assert isinstance(model.compile("mean_squared_error", "sgd").optimizer, fastbp.SGD)


# ----- forward pass -----------------------------------------------------------------------

NAMES = sorted(ACTIVATIONS)


def network(name, standalone, dtype="float64", seed=0, n_out=3):
    alpha = {"leaky_relu": 0.2, "elu": 0.7}.get(name)
    if standalone:
        hidden = [Dense(4, 8), Activation(name, alpha=alpha)]
    else:
        hidden = [Dense(4, 8, activation=name, alpha=alpha)]
    return Sequential(hidden + [Dense(8, n_out)], dtype=dtype, seed=seed)


@pytest.mark.parametrize("standalone", [False, True], ids=["dense", "layer"])
@pytest.mark.parametrize("name", NAMES)
def test_forward_matches_numpy(name, standalone, blobs):
    X, _ = blobs
    model = network(name, standalone)
    # Non-zero biases, so that a forgotten bias would show.
    model.set_flat_weights(np.random.default_rng(2).normal(0.0, 0.8, model.n_parameters))
    out = model.decision_function(X, batch_size=50)  # 120 rows: a partial last batch
    np.testing.assert_allclose(out, np_forward(model, X), rtol=1e-12, atol=1e-12)
    model32 = network(name, standalone, dtype="float32")
    model32.set_flat_weights(model.theta)
    np.testing.assert_allclose(model32.decision_function(X), np_forward(model32, X), rtol=2e-5, atol=2e-5)


def test_forward_of_a_deep_mixed_network_matches_numpy(blobs):
    X, _ = blobs
    model = Sequential([Dense(4, 9, activation="elu"), Dropout(0.5), Dense(9, 7, activation="gelu"),
                        fastbp.Softplus(), Dense(7, 6, activation="sigmoid"), fastbp.LeakyReLU(0.1),
                        Dense(6, 5, activation="tanh"), fastbp.LogSoftmax(), Dense(5, 2)],
                       dtype="float64", seed=4)
    np.testing.assert_allclose(model.decision_function(X), np_forward(model, X), rtol=1e-12, atol=1e-12)


def test_dropout_is_the_identity_at_inference(blobs):
    X, _ = blobs
    with_dropout = Sequential([Dense(4, 8, activation="relu"), Dropout(0.6), Dense(8, 3)], seed=0)
    without = Sequential([Dense(4, 8, activation="relu"), Dense(8, 3)], seed=0)
    np.testing.assert_array_equal(with_dropout.theta, without.theta)
    np.testing.assert_array_equal(with_dropout.decision_function(X), without.decision_function(X))


# ----- training with every activation -------------------------------------------------------


@pytest.mark.parametrize("standalone", [False, True], ids=["dense", "layer"])
@pytest.mark.parametrize("name", NAMES)
def test_every_activation_trains(name, standalone, blobs):
    X, y = blobs
    model = network(name, standalone, dtype="float32")
    model.compile("softmax_cross_entropy", fastbp.Adam(0.01))
    before = model.evaluate(X, y)["loss"]
    history = model.fit(X, y, epochs=8, batch_size=16, seed=0, verbose=0)
    after = model.evaluate(X, y)["loss"]
    assert np.all(np.isfinite(history["loss"])) and np.all(np.isfinite(model.theta))
    assert after < 0.8 * before, (before, after)
    assert history["loss"][-1] < history["loss"][0]


# ----- outputs and metrics ------------------------------------------------------------------


def test_outputs_and_metrics_of_a_classifier(blobs):
    X, y = blobs
    model = Sequential([Dense(4, 8, activation="tanh"), Dense(8, 3)], dtype="float64", seed=0)
    model.fit(X, y, epochs=3, loss="softmax_cross_entropy", optimizer=fastbp.SGD(0.05), verbose=0)
    z = model.decision_function(X)
    p = model.predict_proba(X)
    np.testing.assert_allclose(p, softmax(z, axis=1), rtol=1e-12)
    np.testing.assert_array_equal(model.predict(X), np.argmax(z, axis=1))
    w = np.linspace(0.5, 2.0, len(y))
    nll = -np.log(p[np.arange(len(y)), y])
    metrics = model.evaluate(X, y, batch_size=50)
    assert metrics["loss"] == pytest.approx(nll.mean(), rel=1e-12)
    assert metrics["accuracy"] == np.mean(model.predict(X) == y)
    assert metrics["accuracy"] > 0.3
    weighted = model.evaluate(X, y, sample_weight=w, batch_size=50)
    assert weighted["loss"] == pytest.approx(np.sum(w * nll) / np.sum(w), rel=1e-12)


def test_outputs_and_metrics_of_binary_cross_entropy(blobs):
    X, y = blobs
    t = np.stack([y == 0, y == 1, y != 2], axis=1).astype(np.float64)
    model = Sequential([Dense(4, 8, activation="relu"), Dense(8, 3)], dtype="float64", seed=0)
    model.fit(X, t, epochs=2, loss="binary_cross_entropy", optimizer=fastbp.SGD(0.05), verbose=0)
    z = model.decision_function(X)
    p = model.predict_proba(X)
    np.testing.assert_allclose(p, 1 / (1 + np.exp(-z)), rtol=1e-12)
    labels = model.predict(X)
    assert labels.dtype == np.int64 and labels.shape == (120, 3)
    np.testing.assert_array_equal(labels, (z > 0).astype(np.int64))
    metrics = model.evaluate(X, t)
    bce = np.logaddexp(0, z) - t * z
    assert metrics["loss"] == pytest.approx(bce.mean(), rel=1e-12)
    assert metrics["accuracy"] == np.mean(labels == t)


def test_outputs_and_metrics_of_a_regressor():
    X, y = fastbp.datasets.make_regression(90, 5, n_targets=2, seed=0, dtype=np.float64)
    model = Sequential([Dense(5, 8, activation="tanh"), Dense(8, 2)], dtype="float64", seed=0)
    model.fit(X, y, epochs=2, loss="mse", optimizer=fastbp.SGD(0.01), verbose=0)
    pred = model.predict(X)
    np.testing.assert_array_equal(pred, model.decision_function(X))
    metrics = model.evaluate(X, y, batch_size=40)
    assert metrics["loss"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-12)
    assert metrics["mse"] == pytest.approx(np.mean((pred - y) ** 2), rel=1e-12)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(pred - y)), rel=1e-12)
    # A one-output regressor takes and returns column vectors, and 1-D targets.
    single = Sequential([Dense(5, 1)], seed=0)
    single.fit(X, y[:, 0], epochs=1, loss="mse", verbose=0)
    assert single.predict(X).shape == (90, 1)


# ----- the loss's link is stripped from the training graph ------------------------------------


@pytest.mark.parametrize("final", ["dense", "layer"])
def test_a_final_softmax_is_trained_on_logits(final, blobs):
    X, y = blobs
    Xtr, Xte, ytr, yte = fastbp.datasets.train_test_split(X, y, test_size=40, seed=0, stratify=y)

    def build(with_softmax):
        last = Dense(8, 3, activation="softmax" if with_softmax and final == "dense" else None)
        extra = [fastbp.Softmax()] if with_softmax and final == "layer" else []
        return Sequential([Dense(4, 8, activation="relu"), last] + extra, seed=0)

    plain, linked = build(False), build(True)
    np.testing.assert_array_equal(plain.theta, linked.theta)
    kwargs = dict(epochs=6, batch_size=16, loss="softmax_cross_entropy", seed=1, verbose=0)
    h_plain = plain.fit(Xtr, ytr, optimizer=fastbp.SGD(0.05, momentum=0.9), **kwargs)
    h_linked = linked.fit(Xtr, ytr, optimizer=fastbp.SGD(0.05, momentum=0.9), **kwargs)
    # Softmax twice (the layer's, then the loss's) would train differently and more slowly.
    np.testing.assert_array_equal(linked.theta, plain.theta)
    assert h_linked["loss"] == h_plain["loss"]
    p = linked.predict_proba(Xte)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, rtol=1e-6)
    assert np.all(p >= 0)
    # decision_function gives logits, not probabilities.
    assert not np.allclose(linked.decision_function(Xte).sum(axis=1), 1.0)
    acc = linked.evaluate(Xte, yte)["accuracy"]
    assert acc == plain.evaluate(Xte, yte)["accuracy"]
    assert acc > 0.8
    np.testing.assert_array_equal(linked.predict(Xte), np.argmax(p, axis=1))


def test_a_final_sigmoid_is_trained_on_logits_for_bce(blobs):
    X, y = blobs
    t = np.stack([y == 0, y == 2], axis=1).astype(np.float32)
    plain = Sequential([Dense(4, 8, activation="relu"), Dense(8, 2)], seed=0)
    linked = Sequential([Dense(4, 8, activation="relu"), Dense(8, 2, activation="sigmoid")], seed=0)
    kwargs = dict(epochs=4, batch_size=16, loss="binary_cross_entropy", seed=1, verbose=0)
    plain.fit(X, t, optimizer=fastbp.SGD(0.1, momentum=0.5), **kwargs)
    linked.fit(X, t, optimizer=fastbp.SGD(0.1, momentum=0.5), **kwargs)
    np.testing.assert_array_equal(linked.theta, plain.theta)
    np.testing.assert_array_equal(linked.predict_proba(X), plain.predict_proba(X))


def test_a_final_softmax_is_kept_for_mse(blobs):
    # MSE has no link: the softmax layer stays part of the network.
    X, y = blobs
    model = Sequential([Dense(4, 3, activation="softmax")], dtype="float64", seed=0).compile("mse")
    np.testing.assert_allclose(model.predict(X).sum(axis=1), 1.0, rtol=1e-12)


def test_threads_predicting_with_one_model_share_no_buffers():
    # The model keeps its inference buffers between calls, one set per thread: the
    # compiled kernels release the GIL, so threads sharing a set would mix their rows.
    from concurrent.futures import ThreadPoolExecutor

    model = Sequential([Dense(16, 64, activation="relu"), Dense(64, 5)], seed=0)
    inputs = [np.random.default_rng(i).standard_normal((4096, 16)).astype(np.float32) for i in range(8)]
    expected = [model.decision_function(X, batch_size=64) for X in inputs]
    with ThreadPoolExecutor(4) as pool:
        for _ in range(3):
            got = list(pool.map(lambda X: model.decision_function(X, batch_size=64), inputs))
            for e, g in zip(expected, got):
                np.testing.assert_array_equal(g, e)


# ----- metrics weighted by sample_weight, as the loss is -------------------------------------------

# Three samples with weights 1, 2, 5 on a one-input network whose weights are set by hand.
_X3 = np.array([[-1.0], [1.0], [2.0]])
_W3 = np.array([1.0, 2.0, 5.0])


def _by_hand(device, n_out, W, loss):
    from backends import BACKENDS

    if device not in BACKENDS:
        pytest.skip(f"{device} is not available")
    model = Sequential([Dense(1, n_out)], dtype="float64", seed=0, device=device)
    model.set_weights([np.array([W], dtype=np.float64), np.zeros(n_out)])
    return model.compile(loss, fastbp.SGD(0.1))


@pytest.mark.parametrize("device", ["cpu", "cuda"])
def test_weighted_metrics_by_hand(device):
    # Softmax: logits (-1, 1), (1, -1), (2, -2) -> argmax 1, 0, 0; labels 1, 1, 0: right, wrong, right.
    sce = _by_hand(device, 2, [1.0, -1.0], "softmax_cross_entropy")
    labels = np.array([1, 1, 0])
    # BCE on logits -1, 1, 2 with targets 0, 1, 0: right, right, wrong.
    bce = _by_hand(device, 1, [1.0], "binary_cross_entropy")
    bits = np.array([0.0, 1.0, 0.0])
    # MSE on outputs -1, 1, 2 with targets 0, 1, 0: errors -1, 0, 2.
    mse = _by_hand(device, 1, [1.0], "mse")
    cases = [(sce, labels, {"accuracy": (1 + 5) / 8}, {"accuracy": 2 / 3}),
             (bce, bits, {"accuracy": 3 / 8}, {"accuracy": 2 / 3}),
             (mse, bits, {"mse": (1 + 5 * 4) / 8, "mae": (1 + 5 * 2) / 8}, {"mse": 5 / 3, "mae": 1.0})]
    for model, y, weighted, plain in cases:
        theta = model.theta.copy()
        for key, value in weighted.items():
            assert model.evaluate(_X3, y, sample_weight=_W3)[key] == pytest.approx(value, rel=1e-12)
        for key, value in plain.items():
            assert model.evaluate(_X3, y)[key] == pytest.approx(value, rel=1e-12)
        # One full batch: the epoch's metrics are those of the outputs before its update.
        logs = model.fit(_X3, y, epochs=1, batch_size=3, shuffle=False, sample_weight=_W3, verbose=0).history
        for key, value in weighted.items():
            assert logs[key][0] == pytest.approx(value, rel=1e-12)
        model.set_flat_weights(theta)
        logs = model.fit(_X3, y, epochs=1, batch_size=3, shuffle=False, verbose=0).history
        for key, value in plain.items():
            assert logs[key][0] == pytest.approx(value, rel=1e-12)


# ----- conveniences: inferred widths, loss names, file names, sparse input -------------------


def test_dense_infers_in_features_from_the_data_at_the_first_fit():
    X, y = fastbp.datasets.make_blobs(60, 5, centers=3, seed=0)
    lazy = Sequential([Dense(8, activation="relu"), Dense(3)], seed=0)
    assert not lazy.built and lazy.layers[1].in_features == 8
    assert "not built" in lazy.summary()
    lazy.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    assert lazy.built and lazy.n_features == 5 and lazy.layers[0].in_features == 5
    # The same weights, drawn from the same seed, and the same training as the explicit model's.
    explicit = Sequential([Dense(5, 8, activation="relu"), Dense(8, 3)], seed=0)
    explicit.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    np.testing.assert_array_equal(lazy.theta, explicit.theta)


def test_an_unbuilt_model_says_that_fit_comes_first(tmp_path):
    lazy = Sequential([Dense(4), Dense(2)], seed=0)
    lazy.compile("mse")
    X = np.zeros((3, 6))
    for call in (lambda: lazy.predict(X), lambda: lazy.evaluate(X, np.zeros((3, 2))),
                 lambda: lazy.save(tmp_path / "m.npz"), lambda: lazy.get_weights(), lambda: lazy.state_dict()):
        with pytest.raises(RuntimeError, match=r"needs a built model: the first Dense layer's in_features "
                                               r"is inferred from the data at the first fit"):
            call()
    assert not (tmp_path / "m.npz").exists()
    with pytest.raises(ValueError, match=r"X must be 2-D of shape \(n_samples, n_features\).* got shape \(3,\)"):
        lazy.fit(np.zeros(3), np.zeros((3, 2)), verbose=0)


def test_a_lazy_layer_object_shared_by_two_models_keeps_inferring():
    hidden = Dense(4)
    a = Sequential([Dense(3, 6), hidden], seed=0)
    b = Sequential([Dense(3, 9), hidden], seed=0)
    assert (a.layers[1].in_features, b.layers[1].in_features, hidden.in_features) == (6, 9, None)


@pytest.mark.parametrize("name, canonical", [
    ("categorical_crossentropy", "softmax_cross_entropy"), ("sparse_categorical_crossentropy", "softmax_cross_entropy"),
    ("cross_entropy", "softmax_cross_entropy"), ("CrossEntropyLoss", "softmax_cross_entropy"),
    ("bce", "binary_cross_entropy"), ("binary_crossentropy", "binary_cross_entropy"),
    ("BCEWithLogitsLoss", "binary_cross_entropy"), ("mean_squared_error", "mse"), ("l2", "mse"),
    ("MSELoss", "mse"), ("mean_absolute_error", "mae"), ("l1", "mae"), ("L1Loss", "mae"),
    ("huber_loss", "huber"), ("PoissonNLLLoss", "poisson")])
def test_loss_names_in_the_spellings_users_bring(name, canonical):
    assert fastbp.losses.get(name).name == canonical


def test_one_hot_rows_are_refused_with_the_labels_to_pass():
    X, y = fastbp.datasets.make_blobs(40, 4, centers=3, seed=1)
    with pytest.raises(ValueError, match=r"y must be a 1-D array of integer class labels .* shape \(40, 3\): "
                                         r"for one-hot rows pass y\.argmax\(axis=1\)"):
        Sequential([Dense(4, 3)], seed=0).fit(X, np.eye(3)[y], loss="categorical_crossentropy", verbose=0)


@pytest.mark.parametrize("name", ["model.h5", "model.keras", "model.pt", "model.onnx", "model.PKL"])
def test_save_refuses_the_extension_of_another_format(tmp_path, name):
    model = Sequential([Dense(3, 2)], seed=0)
    with pytest.raises(ValueError, match=rf"path .*{name}' has the extension '\.{name.split('.')[1].lower()}' "
                                         rf"of .*save writes fastbp's \.npz format: name it '.*model\.npz'"):
        model.save(tmp_path / name)
    assert list(tmp_path.iterdir()) == []
    model.save(tmp_path / "model.npz")
    model.save(tmp_path / "model")  # no extension: the exact name, as before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "model.npz"]


def test_sparse_features_are_refused_with_the_conversion_to_use():
    import scipy.sparse

    X = scipy.sparse.random(10, 4, density=0.5, format="csr", random_state=0)
    model = Sequential([Dense(4, 2)], seed=0)
    with pytest.raises(TypeError, match=r"X is a SciPy sparse csr_matrix of shape \(10, 4\); Sequential takes "
                                        r"dense arrays: pass X\.toarray\(\)"):
        model.fit(X, np.zeros(10, dtype=np.int64), loss="softmax_cross_entropy", verbose=0)
    with pytest.raises(TypeError, match=r"X\.toarray\(\)"):
        model.predict(X)
    with pytest.raises(TypeError, match=r"X\.toarray\(\)"):
        Sequential([Dense(2)], seed=0).fit(X, np.zeros(10, dtype=np.int64), loss="cross_entropy", verbose=0)
    np.testing.assert_array_equal(model.predict(X.toarray()), model.predict(np.asarray(X.todense())))
