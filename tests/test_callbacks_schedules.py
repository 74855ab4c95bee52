"""Learning-rate schedules, callbacks and History.

Schedules are checked through ``history['lr']`` against values worked out here,
and through the weights: a schedule that logged one rate and applied another
would show. Callbacks that watch a quantity are driven by a scripted score that
an earlier callback writes into the epoch logs, so that the best epoch is known
in advance.
"""
import hashlib
import math

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Sequential
from fastbp.schedules import Constant

SCE = "softmax_cross_entropy"


@pytest.fixture(scope="module")
def data():
    X, y = fastbp.datasets.make_blobs(48, 3, centers=3, cluster_std=3.0, seed=0)
    return X, y


def model(dtype="float32", seed=0):
    return Sequential([Dense(3, 8, activation="tanh"), Dense(8, 3)], dtype=dtype, seed=seed)


def lrs(data, schedule, epochs, **kwargs):
    X, y = data
    kwargs.setdefault("verbose", 0)
    history = model().fit(X, y, epochs=epochs, batch_size=16, loss=SCE, optimizer=fastbp.SGD(schedule), **kwargs)
    return history["lr"]


# ----- schedules -----------------------------------------------------------------------------


def test_constant(data):
    assert lrs(data, 0.05, 3) == [0.05, 0.05, 0.05]
    assert lrs(data, Constant(0.02), 2) == [0.02, 0.02]


def test_step_decay(data):
    # lr * gamma ** (epoch // step_size); halving is exact in binary.
    schedule = fastbp.StepDecay(0.1, step_size=2, gamma=0.5)
    assert lrs(data, schedule, 7) == [0.1, 0.1, 0.05, 0.05, 0.025, 0.025, 0.0125]


def test_exponential_decay(data):
    assert lrs(data, fastbp.ExponentialDecay(0.2, gamma=0.9), 4) == pytest.approx([0.2, 0.18, 0.162, 0.1458],
                                                                                   rel=1e-14)


def test_cosine_decay(data):
    # min_lr + (lr - min_lr) (1 + cos(pi t / t_max)) / 2, then min_lr after t_max.
    expected = [0.1, 0.01 + 0.045 * (1 + math.sqrt(0.5)), 0.055, 0.01 + 0.045 * (1 - math.sqrt(0.5)), 0.01, 0.01]
    assert lrs(data, fastbp.CosineDecay(0.1, t_max=4, min_lr=0.01), 6) == pytest.approx(expected, rel=1e-14)


def test_callable(data):
    assert lrs(data, lambda epoch: 0.1 / (1 + epoch), 4) == [0.1, 0.05, 0.1 / 3, 0.025]


def test_reduce_on_plateau(data):
    # min_delta is huge, so no epoch after the first improves. With patience p the rate
    # drops after p + 1 epochs without improvement (PyTorch's convention: p bad epochs
    # are tolerated), then the count starts over. The rate of an epoch is decided at its
    # start, so a drop shows from the epoch after the one that triggered it.
    plateau = fastbp.ReduceLROnPlateau(0.08, monitor="loss", patience=1, factor=0.5, min_delta=1e9)
    assert lrs(data, plateau, 7) == [0.08, 0.08, 0.08, 0.04, 0.04, 0.02, 0.02]
    plateau = fastbp.ReduceLROnPlateau(0.08, monitor="loss", patience=0, factor=0.5, min_delta=1e9, min_lr=0.015)
    assert lrs(data, plateau, 5) == [0.08, 0.08, 0.04, 0.02, 0.015]


def test_reduce_on_plateau_watches_validation_loss(data):
    X, y = data
    plateau = fastbp.ReduceLROnPlateau(0.05, patience=0, factor=0.5, min_delta=1e9)  # monitor="val_loss"
    history = model().fit(X, y, epochs=3, batch_size=16, loss=SCE, optimizer=fastbp.SGD(plateau),
                          validation_split=0.25, verbose=0)
    assert history["lr"] == [0.05, 0.05, 0.025]
    with pytest.raises(KeyError, match="ReduceLROnPlateau monitors 'val_accuracy', which the epoch logs lack"):
        model().fit(X, y, epochs=2, loss=SCE, verbose=0,
                    optimizer=fastbp.SGD(fastbp.ReduceLROnPlateau(0.05, monitor="val_accuracy")))


def test_the_scheduled_rate_is_the_one_applied(data):
    # One full-batch SGD step per epoch without momentum: training with a schedule must
    # give the very weights of training epoch by epoch at the logged constant rates.
    X, y = data
    schedule = fastbp.StepDecay(0.3, step_size=2, gamma=0.25)
    scheduled = model()
    history = scheduled.fit(X, y, epochs=5, batch_size=48, shuffle=False, loss=SCE,
                            optimizer=fastbp.SGD(schedule), verbose=0)
    manual = model()
    for lr in history["lr"]:
        manual.fit(X, y, epochs=1, batch_size=48, shuffle=False, loss=SCE, optimizer=fastbp.SGD(lr), verbose=0)
    np.testing.assert_array_equal(scheduled.theta, manual.theta)
    constant = model()
    constant.fit(X, y, epochs=5, batch_size=48, shuffle=False, loss=SCE, optimizer=fastbp.SGD(0.3), verbose=0)
    assert not np.array_equal(scheduled.theta, constant.theta)


# ----- callbacks ----------------------------------------------------------------------------


class Script(fastbp.Callback):
    """Writes a scripted 'score' (or ``name``) into each epoch's logs and keeps a copy of theta
    per epoch."""

    def __init__(self, scores, name="score"):
        self.scores, self.name = scores, name
        self.thetas = []

    def on_epoch_end(self, epoch, logs=None):
        logs[self.name] = self.scores[epoch]
        self.thetas.append(self.model.get_flat_weights())


def fit_with(data, callbacks, epochs, **kwargs):
    X, y = data
    m = model()
    history = m.fit(X, y, epochs=epochs, batch_size=16, loss=SCE, optimizer=fastbp.SGD(0.1, momentum=0.9),
                    callbacks=callbacks, seed=0, verbose=0, **kwargs)
    return m, history


@pytest.mark.parametrize("patience", [1, 3])
def test_early_stopping_on_a_plateau(data, patience):
    # Nothing improves by min_delta after the first epoch: training stops after exactly
    # `patience` more epochs.
    stop = fastbp.EarlyStopping(monitor="loss", patience=patience, min_delta=1e9)
    m, history = fit_with(data, [stop], epochs=20)
    assert history.epoch == list(range(patience + 1))
    assert stop.best_epoch == 0 and stop.stopped_epoch == patience
    assert m.epochs_trained == patience + 1


def test_early_stopping_patience_counts_from_the_last_improvement(data):
    script = Script([5, 4, 4.5, 3, 3.5, 3.2, 3.1, 1, 2, 2])
    stop = fastbp.EarlyStopping(monitor="score", patience=3)
    m, history = fit_with(data, [script, stop], epochs=10)
    # Improvements at epochs 0, 1, 3; epochs 4, 5, 6 do not improve on 3: stop after 6.
    assert history.epoch == list(range(7))
    assert (stop.best_epoch, stop.stopped_epoch) == (3, 6)
    np.testing.assert_array_equal(m.theta, script.thetas[-1])  # restore_best_weights=False


def test_early_stopping_restores_the_best_weights(data):
    script = Script([5, 3, 1, 2, 4, 6, 7, 8])
    stop = fastbp.EarlyStopping(monitor="score", patience=3, restore_best_weights=True)
    m, history = fit_with(data, [script, stop], epochs=8)
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(m.theta, script.thetas[2])
    assert not np.array_equal(m.theta, script.thetas[-1])


def test_early_stopping_in_max_mode(data):
    script = Script([0.1, 0.5, 0.4, 0.45, 0.3])
    stop = fastbp.EarlyStopping(monitor="score", mode="max", patience=2, min_delta=0.01, restore_best_weights=True)
    m, history = fit_with(data, [script, stop], epochs=5)
    assert history.epoch == [0, 1, 2, 3] and stop.best_epoch == 1
    np.testing.assert_array_equal(m.theta, script.thetas[1])


def test_early_stopping_on_validation_loss(data):
    stop = fastbp.EarlyStopping(patience=2, restore_best_weights=True)  # monitor="val_loss"
    m, history = fit_with(data, [stop], epochs=40, validation_split=0.25)
    best = int(np.argmin(history["val_loss"]))
    assert stop.best_epoch == best
    assert len(history.epoch) < 40 or best >= 37
    X, y = data
    assert m.evaluate(X[36:], y[36:])["loss"] == pytest.approx(history["val_loss"][best], rel=1e-12)


def test_early_stopping_keeps_the_best_accuracy_by_default(data):
    # Accuracy is better when higher: the default mode follows the quantity, so the
    # restored epoch is the most accurate one, not the least.
    script = Script([0.5, 0.7, 0.9, 0.6, 0.8, 0.85], name="val_accuracy")
    stop = fastbp.EarlyStopping(monitor="val_accuracy", patience=3, restore_best_weights=True)
    m, history = fit_with(data, [script, stop], epochs=6, validation_split=0.25)
    assert stop.mode == "max" and stop.best_epoch == 2
    assert history.epoch == [0, 1, 2, 3, 4, 5]
    np.testing.assert_array_equal(m.theta, script.thetas[2])


def test_model_checkpoint_saves_when_accuracy_rises(data, tmp_path):
    path = tmp_path / "best.npz"
    script = Script([0.5, 0.7, 0.6, 0.9, 0.8], name="accuracy")
    checkpoint = fastbp.ModelCheckpoint(path, monitor="accuracy")
    fit_with(data, [script, checkpoint], epochs=5)
    assert checkpoint.saved_epochs == [0, 1, 3]
    np.testing.assert_array_equal(fastbp.load(path).theta, script.thetas[3])


@pytest.mark.parametrize("monitor, expected", [("val_loss", "min"), ("mae", "min"), ("val_mse", "min"),
                                               ("accuracy", "max"), ("val_accuracy", "max"),
                                               ("score", "min")])
def test_auto_mode_follows_the_quantity(monitor, expected):
    assert fastbp.EarlyStopping(monitor=monitor).mode == expected
    assert fastbp.ModelCheckpoint("m.npz", monitor=monitor).mode == expected


@pytest.mark.parametrize("owner", [fastbp.EarlyStopping, lambda **kw: fastbp.ModelCheckpoint("m.npz", **kw)])
def test_a_mode_that_contradicts_the_quantity_is_refused(owner):
    with pytest.raises(ValueError, match=r"mode='min' contradicts 'val_accuracy', which is better when "
                                         r"higher.*mode='max'"):
        owner(monitor="val_accuracy", mode="min")
    with pytest.raises(ValueError, match=r"mode='max' contradicts 'loss', which is better when lower"):
        owner(monitor="loss", mode="max")
    with pytest.raises(ValueError, match=r"mode must be 'auto', 'min' or 'max'; got 'maximum'"):
        owner(monitor="loss", mode="maximum")
    assert owner(monitor="score", mode="max").mode == "max"  # a quantity of unknown direction


def test_callbacks_that_watch_a_missing_quantity(data):
    with pytest.raises(KeyError, match="EarlyStopping monitors 'val_loss', which the epoch logs lack; .* need "
                                       "validation_data or validation_split"):
        fit_with(data, [fastbp.EarlyStopping()], epochs=2)


class Events(fastbp.Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append("train_begin")

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(f"end {epoch}")


@pytest.mark.parametrize("owner", ["ReduceLROnPlateau", "EarlyStopping", "ModelCheckpoint"])
def test_a_val_monitor_without_validation_data_fails_before_the_first_epoch(data, tmp_path, owner):
    # Each watches val_loss by default. The fit must fail at once, naming the quantity: not fall
    # back to the training loss without a word, nor fail after the first epoch.
    X, y = data
    optimizer, callbacks = fastbp.SGD(0.1), []
    if owner == "ReduceLROnPlateau":
        optimizer = fastbp.SGD(fastbp.ReduceLROnPlateau(0.1, patience=0))
    elif owner == "EarlyStopping":
        callbacks = [fastbp.EarlyStopping(patience=1)]
    else:
        callbacks = [fastbp.ModelCheckpoint(tmp_path / "best.npz")]
    events = Events()
    m = model()
    theta = m.get_flat_weights()
    with pytest.raises(ValueError, match=rf"^{owner} monitors 'val_loss', which the epoch logs lack; this fit has "
                                         r"no validation data, and val_\* entries need validation_data or "
                                         r"validation_split: pass one of them to fit") as info:
        m.fit(X, y, epochs=3, batch_size=16, loss=SCE, optimizer=optimizer, callbacks=callbacks + [events], verbose=0)
    assert isinstance(info.value, KeyError)  # what it raised before, after an epoch
    assert events.events == [] and m.epochs_trained == 0 and m.optimizer.steps == 0
    np.testing.assert_array_equal(m.theta, theta)
    assert list(tmp_path.iterdir()) == []
    # With validation data the same fit runs.
    history = m.fit(X, y, epochs=3, batch_size=16, callbacks=callbacks + [events], validation_split=0.25, verbose=0)
    assert events.events[:2] == ["train_begin", "end 0"] and "val_loss" in history.history


def test_only_val_monitors_are_checked_before_training(data, tmp_path):
    # A quantity that a callback writes can only be looked for at the end of an epoch:
    # without validation data, ModelCheckpoint(save_best_only=False) ignores its monitor,
    # and a val_* entry that a callback adds is fine once there is validation data.
    X, y = data
    checkpoint = fastbp.ModelCheckpoint(tmp_path / "every.npz", save_best_only=False)  # monitor="val_loss"
    fit_with(data, [checkpoint], epochs=2)
    assert checkpoint.saved_epochs == [0, 1]

    class ValScore(Script):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = self.scores[epoch]

    stop = fastbp.EarlyStopping(monitor="val_score", patience=1)
    _, history = fit_with(data, [ValScore([3, 2, 2.5, 1]), stop], epochs=4, validation_split=0.25)
    assert history.epoch == [0, 1, 2] and stop.best_epoch == 1
    plateau = fastbp.ReduceLROnPlateau(0.05, monitor="score")
    with pytest.raises(KeyError, match=r"ReduceLROnPlateau monitors 'score', which the epoch logs lack; they have "
                                       r"\['accuracy', 'loss', 'lr', 'samples_per_second', 'seconds'\]"):
        model().fit(X, y, epochs=2, loss=SCE, optimizer=fastbp.SGD(plateau), verbose=0)


class FileDigests(fastbp.Callback):
    """Records a digest of the checkpoint file after each epoch (runs after ModelCheckpoint)."""

    def __init__(self, path):
        self.path, self.digests = path, []

    def on_epoch_end(self, epoch, logs=None):
        self.digests.append(hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path.exists() else None)


def test_model_checkpoint_writes_at_improving_epochs_only(data, tmp_path):
    path = tmp_path / "best.npz"
    script = Script([5, 3, 4, 1, 2, 1.5])
    checkpoint = fastbp.ModelCheckpoint(path, monitor="score")
    digests = FileDigests(path)
    m, _ = fit_with(data, [script, checkpoint, digests], epochs=6)
    assert checkpoint.saved_epochs == [0, 1, 3]
    changed = [e for e in range(6) if digests.digests[e] != (digests.digests[e - 1] if e else None)]
    assert changed == [0, 1, 3]
    best = fastbp.load(path)
    np.testing.assert_array_equal(best.theta, script.thetas[3])
    assert best.epochs_trained == 4
    X, _ = data
    assert not np.array_equal(best.predict_proba(X), m.predict_proba(X))
    m.set_flat_weights(script.thetas[3])
    assert np.array_equal(best.predict_proba(X), m.predict_proba(X))


def test_model_checkpoint_every_epoch(data, tmp_path):
    path = tmp_path / "last.npz"
    checkpoint = fastbp.ModelCheckpoint(str(path), save_best_only=False)
    m, _ = fit_with(data, [checkpoint], epochs=3)
    assert checkpoint.saved_epochs == [0, 1, 2]
    np.testing.assert_array_equal(fastbp.load(path).theta, m.theta)


def test_model_checkpoint_on_validation_loss(data, tmp_path):
    path = tmp_path / "val.npz"
    checkpoint = fastbp.ModelCheckpoint(path)  # monitor="val_loss", save_best_only=True
    spy = Script([0] * 8)
    m, history = fit_with(data, [checkpoint, spy], epochs=8, validation_split=0.25)
    best = int(np.argmin(history["val_loss"]))
    assert checkpoint.saved_epochs[-1] == best
    expected = [e for e in range(8) if history["val_loss"][e] < min(history["val_loss"][:e], default=math.inf)]
    assert checkpoint.saved_epochs == expected
    np.testing.assert_array_equal(fastbp.load(path).theta, spy.thetas[best])


def test_learning_rate_logger(data, capsys):
    logger = fastbp.LearningRateLogger(print_rates=True)
    X, y = data
    history = model().fit(X, y, epochs=3, loss=SCE, optimizer=fastbp.SGD(fastbp.StepDecay(0.2, 1, 0.5)),
                          callbacks=[logger], verbose=0)
    assert logger.rates == history["lr"] == [0.2, 0.1, 0.05]
    assert capsys.readouterr().out == "epoch 1: lr = 0.2\nepoch 2: lr = 0.1\nepoch 3: lr = 0.05\n"


def test_a_user_callback_sees_every_event_and_can_stop(data):
    class Recorder(fastbp.Callback):
        def __init__(self):
            self.events = []

        def on_train_begin(self, logs=None):
            self.events.append("train_begin")

        def on_epoch_begin(self, epoch, logs=None):
            self.events.append(f"begin {epoch}")

        def on_epoch_end(self, epoch, logs=None):
            self.events.append(f"end {epoch} {sorted(logs)}")
            if epoch == 2:
                self.model.stop_training = True

        def on_train_end(self, logs=None):
            self.events.append("train_end")

    recorder = Recorder()
    m, history = fit_with(data, [recorder], epochs=10)
    keys = "['accuracy', 'loss', 'lr', 'samples_per_second', 'seconds']"
    assert recorder.events == ["train_begin", "begin 0", f"end 0 {keys}", "begin 1", f"end 1 {keys}",
                               "begin 2", f"end 2 {keys}", "train_end"]
    assert recorder.model is m
    assert history.epoch == [0, 1, 2] and m.epochs_trained == 3
    # stop_training is reset by the next fit.
    X, y = data
    assert m.fit(X, y, epochs=2, verbose=0).epoch == [3, 4]


def test_train_end_runs_after_divergence_before_the_error(data):
    # A learning rate this large sends this MSE fit to inf after a few whole epochs.
    X, y = fastbp.datasets.make_regression(64, 5, noise=0.1, nonlinear=False, seed=3)
    events = []

    class Recorder(fastbp.Callback):
        def on_epoch_end(self, epoch, logs=None):
            events.append(f"end {epoch}")

        def on_train_end(self, logs=None):
            events.append("train_end")
            self.history_then = list(self.model.history.epoch)

    recorder = Recorder()
    m = Sequential([Dense(5, 16, activation="tanh"), Dense(16, 1)], dtype="float64", seed=0)
    with pytest.raises(fastbp.DivergenceError) as info:
        m.fit(X, y, epochs=5, batch_size=8, loss="mse", optimizer=fastbp.SGD(lr=2e4), shuffle=False,
              callbacks=[recorder], verbose=0)
    err = info.value
    assert err.epoch >= 1
    assert events == [f"end {e}" for e in range(err.epoch)] + ["train_end"]
    # At train end the model's History holds the epochs completed, the same the error carries.
    assert recorder.history_then == err.history.epoch == list(range(err.epoch))
    assert m.history is err.history


def test_divergence_message_says_when_early_stopping_restored_its_best_weights():
    X, y = fastbp.datasets.make_regression(64, 5, noise=0.1, nonlinear=False, seed=3)
    kept = []

    class KeepBest(fastbp.EarlyStopping):
        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            kept.append(self.model.get_flat_weights())

    m = Sequential([Dense(5, 16, activation="tanh"), Dense(16, 1)], dtype="float64", seed=0)
    stop = KeepBest(monitor="loss", patience=100, restore_best_weights=True)
    with pytest.raises(fastbp.DivergenceError, match="replaced by a callback's") as info:
        m.fit(X, y, epochs=5, batch_size=8, loss="mse", optimizer=fastbp.SGD(lr=2e4), shuffle=False,
              callbacks=[stop], verbose=0)
    assert "keeps its weights" not in str(info.value)
    assert any(np.array_equal(m.get_flat_weights(), w) for w in kept)


# ----- History ------------------------------------------------------------------------------


def test_history_of_a_classifier_with_validation_data(data):
    X, y = data
    m = model()
    history = m.fit(X[:36], y[:36], epochs=3, batch_size=8, loss=SCE, optimizer=fastbp.SGD(0.1),
                    validation_data=(X[36:], y[36:]), verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds",
                                    "samples_per_second"}
    assert all(len(v) == 3 for v in history.history.values())
    final = m.evaluate(X[36:], y[36:])
    assert history["val_loss"][-1] == final["loss"] and history["val_accuracy"][-1] == final["accuracy"]
    assert history["lr"] == [0.1] * 3
    for seconds, rate in zip(history["seconds"], history["samples_per_second"]):
        assert seconds > 0 and rate == pytest.approx(36 / seconds)
    assert all(0 <= a <= 1 for a in history["accuracy"])
    assert m.history is history
    assert repr(history).startswith("History(epochs=3, last={")


def test_history_keeps_the_compile_time_apart_from_the_per_epoch_series():
    # fit puts compile_seconds in the first epoch's logs only, when it had to compile.
    history = fastbp.callbacks.History()
    history.on_train_begin({})
    assert history.compile_seconds is None
    history.on_epoch_end(0, {"loss": 1.0, "samples_per_second": 10.0, "compile_seconds": 25.0})
    history.on_epoch_end(1, {"loss": 0.5, "samples_per_second": 12.0})
    assert history.compile_seconds == 25.0
    assert history.history == {"loss": [1.0, 0.5], "samples_per_second": [10.0, 12.0]}


def test_history_of_a_regressor_with_validation_split():
    X, y = fastbp.datasets.make_regression(40, 3, n_targets=2, seed=1)
    m = Sequential([Dense(3, 6, activation="tanh"), Dense(6, 2)], seed=0)
    w = np.linspace(1, 2, 40)
    history = m.fit(X, y, epochs=2, batch_size=40, shuffle=False, loss="mse", optimizer=fastbp.SGD(0.01),
                    validation_split=0.25, sample_weight=w, verbose=0)
    assert set(history.history) == {"loss", "mse", "mae", "val_loss", "val_mse", "val_mae", "lr", "seconds",
                                    "samples_per_second"}
    # The last quarter is held out (before any shuffling) and the rest trained on.
    assert m.optimizer.steps == 2
    final = m.evaluate(X[30:], y[30:], sample_weight=w[30:])
    for key in ("loss", "mse", "mae"):
        assert history["val_" + key][-1] == pytest.approx(final[key], rel=1e-6)


def test_the_epoch_loss_is_that_of_the_weights_before_each_step(data):
    # One full-batch step per epoch: the logged loss is the loss before that step.
    X, y = data
    m = model("float64")
    m.compile(SCE, fastbp.SGD(0.2))
    before = [m.evaluate(X, y)["loss"]]
    history = m.fit(X, y, epochs=1, batch_size=48, shuffle=False, verbose=0)
    before.append(m.evaluate(X, y)["loss"])
    history2 = m.fit(X, y, epochs=1, batch_size=48, shuffle=False, verbose=0)
    assert history["loss"][0] == pytest.approx(before[0], rel=1e-12)
    assert history2["loss"][0] == pytest.approx(before[1], rel=1e-12)
    assert before[1] < before[0]


def test_history_plot(data, tmp_path):
    pytest.importorskip("matplotlib")
    _, history = fit_with(data, [], epochs=3, validation_split=0.25)
    path = tmp_path / "curves.png"
    fig = history.plot(path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [ax.get_title() for ax in fig.axes] == ["loss", "accuracy"]
    assert [line.get_label() for line in fig.axes[0].lines] == ["loss", "val_loss"]
    np.testing.assert_array_equal(fig.axes[0].lines[1].get_ydata(), history["val_loss"])
