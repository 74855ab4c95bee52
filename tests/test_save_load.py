"""Saving and loading: bit-for-bit predictions, training that continues exactly as
it would have, a file that NumPy reads without pickle, and clear errors for
files that are not fastbp models.
"""
import json
import re
import zipfile

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout, Sequential


@pytest.fixture(scope="module")
def blobs():
    return fastbp.datasets.make_blobs(90, 4, centers=3, cluster_std=2.0, seed=0)


def classifier(dtype="float32"):
    return Sequential([Dense(4, 12, activation="gelu"), Dropout(0.25), fastbp.LeakyReLU(0.05),
                       Dense(12, 8, activation="elu", alpha=0.5), Dense(8, 3)], dtype=dtype, seed=0)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_round_trip_predicts_bit_for_bit(tmp_path, blobs, dtype):
    X, y = blobs
    model = classifier(dtype)
    model.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", optimizer=fastbp.Adam(0.01),
              seed=1, verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    loaded = fastbp.load(path)
    assert loaded.dtype == np.dtype(dtype)
    assert [type(layer) for layer in loaded.layers] == [type(layer) for layer in model.layers]
    assert repr(loaded) == repr(model)
    assert loaded.get_config() == model.get_config()
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(a, b)
    assert np.array_equal(loaded.decision_function(X), model.decision_function(X))
    assert np.array_equal(loaded.predict_proba(X), model.predict_proba(X))
    assert np.array_equal(loaded.predict(X), model.predict(X))
    assert loaded.evaluate(X, y) == model.evaluate(X, y)
    assert loaded.epochs_trained == 2
    assert isinstance(loaded.loss, fastbp.losses.SoftmaxCrossEntropy)


def test_regressor_round_trip(tmp_path):
    X, y = fastbp.datasets.make_regression(60, 3, n_targets=2, seed=0)
    model = Sequential([Dense(3, 8, activation="softplus"), fastbp.Sigmoid(), Dense(8, 2)], seed=3)
    model.fit(X, y, epochs=2, loss="mse", optimizer=fastbp.SGD(0.05, momentum=0.5, nesterov=True,
                                                              weight_decay=1e-3), verbose=0)
    model.save(tmp_path / "reg.npz")
    loaded = fastbp.load(str(tmp_path / "reg.npz"))
    assert np.array_equal(loaded.predict(X), model.predict(X))
    opt = loaded.optimizer
    assert (type(opt), opt.momentum, opt.nesterov, opt.weight_decay, opt.lr) == (fastbp.SGD, 0.5, True, 1e-3, 0.05)


def test_a_model_never_compiled_saves_and_loads(tmp_path, blobs):
    X, _ = blobs
    model = Sequential([Dense(4, 3, activation="tanh")], dtype="float64", seed=9)
    model.save(tmp_path / "fresh.npz")
    loaded = fastbp.load(tmp_path / "fresh.npz")
    assert loaded.loss is None and loaded.optimizer is None
    assert np.array_equal(loaded.predict(X), model.predict(X))


def test_file_is_plain_numpy_without_pickle(tmp_path, blobs):
    X, y = blobs
    model = classifier()
    model.fit(X, y, epochs=1, loss="softmax_cross_entropy", optimizer="adam", verbose=0)
    path = tmp_path / "model.npz"
    model.save(path)
    with np.load(path, allow_pickle=False) as data:
        assert str(data["format"]) == "fastbp-model"
        assert int(data["format_version"]) == 1
        assert str(data["fastbp_version"]) == fastbp.__version__
        config = json.loads(str(data["architecture"]))
        assert config["dtype"] == "float32" and config["loss"] == "softmax_cross_entropy"
        assert [layer["type"] for layer in config["layers"]] == ["Dense", "Dropout", "LeakyReLU", "Dense", "Dense"]
        np.testing.assert_array_equal(data["theta"], model.theta)
        np.testing.assert_array_equal(data["optimizer_state_0"], model.optimizer.state[0])
        np.testing.assert_array_equal(data["optimizer_state_1"], model.optimizer.state[1])
        assert not any(data[k].dtype.hasobject for k in data.files)


def continue_training(tmp_path, blobs, optimizer, dtype="float32"):
    """Train A for 2 epochs, save, load into B; train both 2 more epochs with the same seed."""
    X, y = blobs
    a = classifier(dtype)
    a.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", optimizer=optimizer, seed=1, verbose=0)
    path = tmp_path / "a.npz"
    a.save(path)
    b = fastbp.load(path)
    assert b.optimizer.steps == a.optimizer.steps == 2 * 6
    history_a = a.fit(X, y, epochs=2, batch_size=16, seed=5, verbose=0)
    history_b = b.fit(X, y, epochs=2, batch_size=16, seed=5, verbose=0)
    for key in ("loss", "accuracy", "lr"):
        assert history_b[key] == history_a[key]
    assert history_b.epoch == history_a.epoch == [2, 3]
    return a, b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_adam_training_continues_exactly(tmp_path, blobs, dtype):
    a, b = continue_training(tmp_path, blobs, fastbp.Adam(0.01, weight_decay=1e-3), dtype)
    assert np.array_equal(a.theta, b.theta)
    assert a.optimizer.steps == b.optimizer.steps == 4 * 6
    for sa, sb in zip(a.optimizer.state, b.optimizer.state):
        assert np.array_equal(sa, sb)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("optimizer", [
    lambda: fastbp.RMSprop(fastbp.StepDecay(0.01, step_size=3, gamma=0.5), momentum=0.5, centered=True,
                           weight_decay=1e-3),
    lambda: fastbp.Adagrad(0.05, lr_decay=0.01, weight_decay=1e-3, initial_accumulator_value=0.1),
], ids=["rmsprop", "adagrad"])
def test_rmsprop_and_adagrad_training_continues_exactly(tmp_path, blobs, dtype, optimizer):
    # Square average, momentum buffer, gradient average (RMSprop), the sum of squares and
    # the step count behind Adagrad's lr decay: all saved and loaded bit for bit.
    a, b = continue_training(tmp_path, blobs, optimizer(), dtype)
    assert np.array_equal(a.theta, b.theta)
    assert a.optimizer.steps == b.optimizer.steps == 4 * 6
    assert len(a.optimizer.state) == len(b.optimizer.state) == (2 if isinstance(a.optimizer, fastbp.RMSprop) else 1)
    for sa, sb in zip(a.optimizer.state, b.optimizer.state):
        assert sa.dtype == sb.dtype and np.array_equal(sa, sb)
        assert np.any(sa != 0)  # every buffer is in use (momentum, centered, accumulator)
    assert b.optimizer.get_config() == a.optimizer.get_config()


def test_sgd_momentum_and_schedule_continue_exactly(tmp_path, blobs):
    a, b = continue_training(tmp_path, blobs, fastbp.SGD(fastbp.StepDecay(0.1, step_size=3, gamma=0.5),
                                                         momentum=0.9))
    assert np.array_equal(a.theta, b.theta)
    assert b.history["lr"] == [0.1, 0.05]  # epochs 2 and 3 straddle the step


def test_plateau_schedule_state_is_saved(tmp_path, blobs):
    schedule = fastbp.ReduceLROnPlateau(0.1, monitor="loss", patience=0, factor=0.5, min_delta=1e9)
    a, b = continue_training(tmp_path, blobs, fastbp.SGD(schedule))
    assert np.array_equal(a.theta, b.theta)
    # min_delta is huge, so every epoch after the first is a plateau and halves the rate
    # for the next: 0.1, 0.1 for A's epochs, then 0.05, 0.025 carried over into B.
    assert b.history["lr"] == [0.05, 0.025]


def fit_save_load_fit(tmp_path, blobs, dtype, drop=()):
    """A trains 2 + 2 epochs in two fits; B is A's save after the first fit, loaded, then
    fitted 2 epochs. No seed is passed to fit: both draw from the model's own generator
    (shuffling, and the seed of the dropout masks). ``drop`` lists arrays to strip from
    the file before loading it."""
    X, y = blobs
    a = classifier(dtype)
    a.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", optimizer=fastbp.Adam(0.01), verbose=0)
    path = tmp_path / "a.npz"
    a.save(path)
    if drop:
        path = rewrite(path, tmp_path, "old.npz", **{key: None for key in drop})
    b = fastbp.load(path)
    history_a = a.fit(X, y, epochs=2, batch_size=16, verbose=0)
    history_b = b.fit(X, y, epochs=2, batch_size=16, verbose=0)
    return a, b, history_a, history_b


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_the_models_random_state_is_saved(tmp_path, blobs, dtype):
    a, b, history_a, history_b = fit_save_load_fit(tmp_path, blobs, dtype)
    assert np.array_equal(a.theta, b.theta)
    assert history_b["loss"] == history_a["loss"] and history_b.epoch == [2, 3]
    assert a._rng.bit_generator.state == b._rng.bit_generator.state


def test_a_file_without_the_random_state_loads_with_a_fresh_generator(tmp_path, blobs):
    # Files written before the random state was saved still load; their generator is the
    # one a model built from the saved seed has, so training goes on along other shuffles
    # and dropout masks (which shows that the test above can fail).
    a, b, _, _ = fit_save_load_fit(tmp_path, blobs, "float64", drop=["rng_state"])
    assert not np.array_equal(a.theta, b.theta)
    old = fastbp.load(rewrite(tmp_path / "a.npz", tmp_path, "old2.npz", rng_state=None))
    assert old._rng.bit_generator.state == classifier("float64")._rng.bit_generator.state


def test_the_random_state_is_json(tmp_path):
    model = classifier()
    model._rng.random(3)  # somewhere other than where the constructor left it
    model.save(tmp_path / "m.npz")
    with np.load(tmp_path / "m.npz", allow_pickle=False) as data:
        assert json.loads(str(data["rng_state"])) == model._rng.bit_generator.state
    assert fastbp.load(tmp_path / "m.npz")._rng.random(4).tolist() == model._rng.random(4).tolist()


def test_loading_without_the_state_would_differ(tmp_path, blobs):
    # The exact-continuation tests above must be able to fail: dropping the Adam state
    # (a fresh optimizer with the same settings) changes the result.
    X, y = blobs
    a, b = classifier(), classifier()
    for m in (a, b):
        m.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", optimizer=fastbp.Adam(0.01), seed=1,
              verbose=0)
    b.optimizer = fastbp.Adam(0.01)
    a.fit(X, y, epochs=1, batch_size=16, seed=5, verbose=0)
    b.fit(X, y, epochs=1, batch_size=16, seed=5, verbose=0)
    assert not np.array_equal(a.theta, b.theta)


# ----- files that are not fastbp models ---------------------------------------------------


@pytest.fixture
def saved(tmp_path, blobs):
    X, y = blobs
    model = classifier()
    model.fit(X, y, epochs=1, loss="softmax_cross_entropy", optimizer="adam", verbose=0)
    path = tmp_path / "good.npz"
    model.save(path)
    return path


def named(path):
    """A pattern for the path inside the message (which shows it with repr)."""
    return re.escape(str(path))


def rewrite(saved, tmp_path, name, **changes):
    with np.load(saved) as data:
        arrays = {k: data[k] for k in data.files}
    arrays.update(changes)
    for key in [k for k, v in changes.items() if v is None]:
        del arrays[key]
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(2000))
    with pytest.raises(ValueError, match=f"{named(path)}.* is not a fastbp model file"):
        fastbp.load(path)


def test_text_file(tmp_path):
    path = tmp_path / "notes.npz"
    path.write_text("x,y\n1,2\n")
    with pytest.raises(ValueError, match=f"{named(path)}.* is not a fastbp model file"):
        fastbp.load(path)


def test_npz_without_the_marker(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, X=np.zeros((3, 4)), y=np.arange(3))
    with pytest.raises(ValueError, match=rf"{named(path)}.* is not a fastbp model file "
                                         r"\(no 'fastbp-model' marker; "
                                         r"keys: \['X', 'y'\]\)"):
        fastbp.load(path)


def test_npy_file(tmp_path):
    path = tmp_path / "theta.npy"
    np.save(path, np.zeros(5))
    with pytest.raises(ValueError, match=f"{named(path)}.* is not a fastbp model file"):
        fastbp.load(path)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
def test_truncated_file(saved, tmp_path, keep):
    raw = saved.read_bytes()
    path = tmp_path / "cut.npz"
    path.write_bytes(raw[:int(len(raw) * keep)])
    with pytest.raises(ValueError, match=named(path)):
        fastbp.load(path)


def test_damaged_member(saved, tmp_path):
    # Flip a byte inside the stored theta: the archive opens, but the member fails its CRC.
    with zipfile.ZipFile(saved) as archive:
        info = archive.getinfo("theta.npy")
    raw = bytearray(saved.read_bytes())
    raw[info.header_offset + 30 + len(info.filename) + 200] ^= 0xFF
    path = tmp_path / "flipped.npz"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match=rf"{named(path)}.* is a damaged .npz archive"):
        fastbp.load(path)


def test_theta_of_wrong_size(saved, tmp_path):
    with np.load(saved) as data:
        theta = data["theta"]
    path = rewrite(saved, tmp_path, "short.npz", theta=theta[:-1])
    shape = re.escape(f"({theta.size - 1},)")
    with pytest.raises(ValueError, match=rf"{named(path)}.* is corrupt: its parameters have shape {shape}"):
        fastbp.load(path)
    path = rewrite(saved, tmp_path, "wide.npz", theta=theta.astype(np.float64))
    with pytest.raises(ValueError, match=rf"{named(path)}.* is corrupt: .* dtype float64; the architecture needs"):
        fastbp.load(path)


def test_missing_theta(saved, tmp_path):
    path = rewrite(saved, tmp_path, "no_theta.npz", theta=None)
    with pytest.raises(ValueError, match=rf"{named(path)}.* is corrupt: it lacks the arrays \['theta'\]"):
        fastbp.load(path)


def test_corrupt_architecture(saved, tmp_path):
    path = rewrite(saved, tmp_path, "arch.npz", architecture=np.array("{not json"))
    with pytest.raises(ValueError, match=rf"{named(path)}.* has a corrupt architecture record"):
        fastbp.load(path)
    with np.load(saved) as data:
        config = json.loads(str(data["architecture"]))
    config["layers"][0]["type"] = "Conv2D"
    path = rewrite(saved, tmp_path, "conv.npz", architecture=np.array(json.dumps(config)))
    with pytest.raises(ValueError, match=rf"{named(path)}.* corrupt architecture record: .*unknown layer type"):
        fastbp.load(path)


def test_corrupt_random_state(saved, tmp_path):
    for name, record in [("rng1.npz", "{not json"), ("rng2.npz", json.dumps({"bit_generator": "MT19937"}))]:
        path = rewrite(saved, tmp_path, name, rng_state=np.array(record))
        with pytest.raises(ValueError, match=rf"{named(path)}.* has a corrupt random-state record"):
            fastbp.load(path)


def test_newer_format_version(saved, tmp_path):
    path = rewrite(saved, tmp_path, "future.npz", format_version=np.array(2))
    with pytest.raises(ValueError, match=rf"{named(path)}.* has model format version 2; this fastbp reads up to"):
        fastbp.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        fastbp.load(tmp_path / "absent.npz")


def test_the_huber_delta_is_saved(tmp_path):
    X = np.random.default_rng(0).standard_normal((12, 3))
    model = Sequential([Dense(3, 4, activation="selu"), Dense(4, 2, activation="silu")], dtype="float64", seed=0)
    model.fit(X, X[:, :2] * 3, epochs=1, batch_size=4, loss=fastbp.losses.Huber(delta=0.3), verbose=0)
    model.save(tmp_path / "h.npz")
    loaded = fastbp.load(tmp_path / "h.npz")
    assert loaded.loss == fastbp.losses.Huber(delta=0.3) != fastbp.losses.Huber()
    assert loaded.evaluate(X, X[:, :2] * 3) == model.evaluate(X, X[:, :2] * 3)
    np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
