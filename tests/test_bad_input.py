"""Bad input is refused at the public boundary with a message that names the argument.

Every check below uses ``match=`` on the argument's name and, where the message
promises it, on the expected and the given value. The last tests cover training
that diverges: ``DivergenceError`` names the epoch and batch, and the model keeps
its weights from before the failing step.
"""
import re

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout, Sequential


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((24, 4)).astype(np.float32)
    y = rng.integers(0, 3, 24)
    return X, y


def classifier(dtype="float32"):
    return Sequential([Dense(4, 6, activation="relu"), Dense(6, 3)], dtype=dtype, seed=0)


def fit(model, X, y, **kwargs):
    kwargs.setdefault("loss", "softmax_cross_entropy")
    kwargs.setdefault("verbose", 0)
    return model.fit(X, y, **kwargs)


# ----- X ------------------------------------------------------------------------------


def test_x_with_three_dimensions(data):
    X, y = data
    with pytest.raises(ValueError, match=r"X must be 2-D of shape \(n_samples, 4\); got shape \(24, 2, 2\)"):
        fit(classifier(), X.reshape(24, 2, 2), y)


def test_x_one_dimensional_for_a_multi_feature_model(data):
    X, y = data
    with pytest.raises(ValueError, match=r"X must be 2-D .* got shape \(96,\)"):
        fit(classifier(), X.ravel(), np.zeros(96, dtype=int))


def test_wrong_feature_count(data):
    X, y = data
    with pytest.raises(ValueError, match=r"X must have 4 features .* got shape \(24, 3\)"):
        fit(classifier(), X[:, :3], y)


def test_wrong_feature_count_at_predict_and_evaluate(data):
    X, y = data
    model = classifier()
    fit(model, X, y)
    with pytest.raises(ValueError, match=r"X must have 4 features .* got shape \(24, 5\)"):
        model.predict(np.hstack([X, X[:, :1]]))
    with pytest.raises(ValueError, match=r"X must have 4 features"):
        model.evaluate(X[:, :2], y)


def test_mismatched_lengths(data):
    X, y = data
    with pytest.raises(ValueError, match="X and y must have the same number of samples; got 24 and 23"):
        fit(classifier(), X, y[:-1])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_x(data, bad):
    X, y = data
    X = X.copy()
    X[5, 2] = bad
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(first at row 5, column 2\)"):
        fit(classifier(), X, y)


@pytest.mark.parametrize("flat", [0, 65535, 65536, 3000 * 30 - 1])
def test_non_finite_x_found_in_every_block_of_a_large_array(flat):
    # The check reads X in blocks of 65,536 elements: the first and last of each are seen.
    from fastbp._validation import check_features

    X = np.zeros((3000, 30), np.float32)
    X.flat[flat] = np.nan
    row, column = divmod(flat, 30)
    with pytest.raises(ValueError, match=rf"X contains NaN or inf \(first at row {row}, column {column}\)"):
        check_features(X, 30, np.float32)
    X.flat[flat] = 0.0
    assert check_features(X, 30, np.float32) is not None


def test_non_finite_validation_features_name_validation_data(data):
    X, y = data
    Xv = X.copy()
    Xv[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"validation_data\[0\] contains NaN or inf"):
        fit(classifier(), X, y, validation_data=(Xv, y))


def test_empty_x():
    with pytest.raises(ValueError, match=r"X is empty: it has 0 samples \(shape \(0, 4\)\)"):
        fit(classifier(), np.zeros((0, 4)), np.zeros(0, dtype=int))


def test_non_numeric_x(data):
    _, y = data
    with pytest.raises(ValueError, match="X must be numeric; got dtype <U"):
        fit(classifier(), np.full((24, 4), "a"), y)


def test_ragged_x():
    with pytest.raises(ValueError, match="X must be a 2-D numeric array; could not convert"):
        fit(classifier(), [[1, 2, 3, 4], [1, 2]], [0, 1])


def test_array_likes_and_integer_features_are_accepted(data):
    X, y = data
    model = classifier()
    history = fit(model, np.round(X * 4).astype(np.int32).tolist(), y.tolist(), epochs=2)
    assert np.isfinite(history["loss"]).all()
    assert model.predict(X.astype(np.float64)).shape == (24,)


# ----- y ------------------------------------------------------------------------------


@pytest.mark.parametrize("bad, shown", [(3, "3"), (-1, "-1")])
def test_labels_out_of_range(data, bad, shown):
    X, y = data
    y = y.copy()
    y[7] = bad
    with pytest.raises(ValueError, match=rf"y holds label {shown}, outside \[0, 3\) for a network with 3 outputs"):
        fit(classifier(), X, y)


@pytest.mark.parametrize("bad, shown", [(np.uint64(2**63), "9223372036854775808"),
                                        (1e20, "100000000000000000000"), (-1e20, "-100000000000000000000")])
def test_huge_labels_are_shown_as_given(data, bad, shown):
    # Cast to int64 first, these wrapped and were reported as -9223372036854775808.
    X, y = data
    y = y.astype(type(bad))
    y[7] = bad
    with pytest.raises(ValueError, match=rf"y holds label {shown}, outside \[0, 3\) for a network with 3 outputs"):
        fit(classifier(), X, y)


def test_non_integer_labels_for_softmax_cross_entropy(data):
    X, y = data
    y = y.astype(np.float64)
    y[3] = 0.5
    with pytest.raises(ValueError, match="y must hold integer class labels for softmax_cross_entropy; "
                                         r"got non-integer values such as \[0.5\]"):
        fit(classifier(), X, y)


def test_string_labels(data):
    X, _ = data
    with pytest.raises(ValueError, match="y must hold integer class labels .* got dtype <U"):
        fit(classifier(), X, np.array(["cat"] * 24))


def test_one_hot_labels_for_softmax_cross_entropy(data):
    X, y = data
    with pytest.raises(ValueError, match=r"y must be a 1-D array of integer class labels .* shape \(24, 3\)"):
        fit(classifier(), X, np.eye(3)[y])


def test_float_labels_that_are_whole_numbers_are_accepted(data):
    X, y = data
    history = fit(classifier(), X, y.astype(np.float32), epochs=1)
    assert np.isfinite(history["loss"][0])


@pytest.mark.parametrize("bad", [1.5, -0.25])
def test_bce_targets_outside_unit_interval(data, bad):
    X, _ = data
    t = np.zeros((24, 3))
    t[2, 1] = bad
    with pytest.raises(ValueError, match=r"y must hold targets in \[0, 1\] for binary_cross_entropy"):
        fit(classifier(), X, t, loss="binary_cross_entropy")


def test_bce_targets_of_wrong_width(data):
    X, _ = data
    with pytest.raises(ValueError, match=r"y must have shape \(n_samples, 3\) for binary_cross_entropy .* "
                                         r"got shape \(24, 2\)"):
        fit(classifier(), X, np.zeros((24, 2)), loss="binary_cross_entropy")


def test_non_finite_regression_targets(data):
    X, _ = data
    t = np.zeros((24, 3))
    t[4, 0] = np.nan
    with pytest.raises(ValueError, match="y contains NaN or inf"):
        fit(classifier(), X, t, loss="mse")


def test_scalar_y(data):
    X, _ = data
    with pytest.raises(ValueError, match="y must be an array with one target per sample; got a scalar"):
        fit(classifier(), X, 1)


def test_softmax_cross_entropy_needs_two_outputs(data):
    X, _ = data
    model = Sequential([Dense(4, 1)], seed=0)
    with pytest.raises(ValueError, match="softmax_cross_entropy needs a final layer with at least 2 outputs"):
        fit(model, X, np.zeros(24, dtype=int))


# ----- fit arguments ------------------------------------------------------------------


@pytest.mark.parametrize("value", [0, -3])
def test_batch_size(data, value):
    X, y = data
    with pytest.raises(ValueError, match=rf"batch_size must be an integer >= 1; got {re.escape(repr(value))}"):
        fit(classifier(), X, y, batch_size=value)


@pytest.mark.parametrize("value, shown", [(2.5, "float 2.5"), (True, "bool True"), ("8", "str '8'")])
def test_batch_size_of_another_type(data, value, shown):
    X, y = data
    with pytest.raises(TypeError, match=f"batch_size must be an integer; got {shown}"):
        fit(classifier(), X, y, batch_size=value)


@pytest.mark.parametrize("value", [0, -1])
def test_epochs(data, value):
    X, y = data
    with pytest.raises(ValueError, match=rf"epochs must be an integer >= 1; got {re.escape(repr(value))}"):
        fit(classifier(), X, y, epochs=value)
    with pytest.raises(TypeError, match="epochs must be an integer; got float 1.0"):
        fit(classifier(), X, y, epochs=1.0)


def test_batch_size_of_evaluate_and_predict(data):
    X, y = data
    model = classifier()
    fit(model, X, y)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got 0"):
        model.evaluate(X, y, batch_size=0)
    with pytest.raises(ValueError, match="batch_size must be an integer >= 1; got -2"):
        model.predict(X, batch_size=-2)


def test_unknown_loss(data):
    X, y = data
    with pytest.raises(ValueError, match=r"unknown loss 'hinge'; expected .*'mse'"):
        fit(classifier(), X, y, loss="hinge")


def test_missing_loss(data):
    X, y = data
    with pytest.raises(ValueError, match="fit needs a loss: pass loss=... or call compile first"):
        classifier().fit(X, y, verbose=0)


@pytest.mark.parametrize("name", ["lbfgs", 3])
def test_unknown_optimizer(data, name):
    X, y = data
    with pytest.raises(ValueError, match=rf"unknown optimizer {re.escape(repr(name))}; expected fastbp.SGD"):
        fit(classifier(), X, y, optimizer=name)


def test_bad_verbose(data):
    X, y = data
    with pytest.raises(ValueError, match="verbose must be 'auto', 0, 1 or 2; got 3"):
        fit(classifier(), X, y, verbose=3)


def test_bad_callback(data):
    X, y = data
    with pytest.raises(TypeError, match="callbacks must be fastbp.callbacks.Callback instances; got function"):
        fit(classifier(), X, y, callbacks=[lambda epoch: None])


@pytest.mark.parametrize("split", [1.0, -0.1, 1.5])
def test_validation_split_out_of_range(data, split):
    X, y = data
    shown = re.escape(repr(split))
    with pytest.raises(ValueError, match=rf"validation_split must be a number in \[0.0, 1.0\); got {shown}"):
        fit(classifier(), X, y, validation_split=split)
    with pytest.raises(TypeError, match="validation_split must be a number; got str '0.2'"):
        fit(classifier(), X, y, validation_split="0.2")


def test_validation_split_that_leaves_no_validation_sample(data):
    X, y = data
    with pytest.raises(ValueError, match=r"validation_split=0.01 of 24 samples leaves 0 for validation"):
        fit(classifier(), X, y, validation_split=0.01)


def test_validation_data_of_wrong_form(data):
    X, y = data
    with pytest.raises(ValueError, match=r"validation_data must be \(X_val, y_val\)"):
        fit(classifier(), X, y, validation_data=(X,))
    with pytest.raises(ValueError, match=r"validation_data\[0\] must have 4 features"):
        fit(classifier(), X, y, validation_data=(X[:, :2], y))
    with pytest.raises(ValueError, match=r"validation_data\[0\] and validation_data\[1\] must have the same"):
        fit(classifier(), X, y, validation_data=(X, y[:5]))
    with pytest.raises(ValueError, match=r"validation_data\[2\] must have shape \(24,\)"):
        fit(classifier(), X, y, validation_data=(X, y, np.ones(3)))


# ----- sample_weight ------------------------------------------------------------------


@pytest.mark.parametrize("weights, message", [
    (np.ones(23), r"sample_weight must have shape \(24,\), one weight per sample; got shape \(23,\)"),
    (np.ones((24, 1)), r"sample_weight must have shape \(24,\), one weight per sample; got shape \(24, 1\)"),
    (np.r_[-1.0, np.ones(23)], "sample_weight must be finite and non-negative"),
    (np.r_[np.nan, np.ones(23)], "sample_weight must be finite and non-negative"),
    (np.zeros(24), "sample_weight must have a positive sum; got all zeros"),
])
def test_bad_sample_weight(data, weights, message):
    X, y = data
    with pytest.raises(ValueError, match=message):
        fit(classifier(), X, y, sample_weight=weights)


# Zero weights are valid input (check_sample_weight only needs a positive sum over the
# whole set), so a batch whose weights are all zero must not pass for a divergence (0/0):
# it has loss 0 and gradient 0.
def test_a_batch_of_zero_weights_is_not_a_divergence(data):
    X, y = data
    w = np.ones(24)
    w[:4] = 0.0
    model = classifier()
    history = fit(model, X, y, sample_weight=w, batch_size=4, shuffle=False)
    assert np.isfinite(history["loss"][0])


# ----- models, layers, optimizers, schedules --------------------------------------------


@pytest.mark.parametrize("dtype", ["int32", "float16", np.complex64, "double precision"])
def test_bad_dtype(dtype):
    with pytest.raises((ValueError, TypeError), match="dtype"):
        Sequential([Dense(4, 3)], dtype=dtype)
    if dtype in ("int32", "float16"):
        with pytest.raises(ValueError, match=rf"dtype must be 'float32' or 'float64'; got '{dtype}'"):
            Sequential([Dense(4, 3)], dtype=dtype)


def test_dense_sizes_that_do_not_chain():
    with pytest.raises(ValueError, match=r"layer 2 \(Dense\) expects 5 inputs but the Dense layer before it "
                                         r"gives 6"):
        Sequential([Dense(4, 6, activation="relu"), Dropout(0.1), Dense(5, 3)])


def test_empty_and_foreign_layer_lists():
    with pytest.raises(ValueError, match="layers must hold at least one layer"):
        Sequential([])
    with pytest.raises(TypeError, match=r"layers\[1\] must be a fastbp layer .* got str"):
        Sequential([Dense(4, 3), "relu"])
    with pytest.raises(ValueError, match="layers must include at least one Dense layer"):
        Sequential([fastbp.ReLU()])


@pytest.mark.parametrize("argument, kwargs, error, message", [
    ("in_features", dict(in_features=0, out_features=3), ValueError, "an integer >= 1; got 0"),
    ("out_features", dict(in_features=4, out_features=2.0), TypeError, "an integer; got float 2.0"),
    ("in_features", dict(in_features=True, out_features=3), TypeError, "an integer; got bool True"),
])
def test_dense_sizes(argument, kwargs, error, message):
    with pytest.raises(error, match=f"{argument} must be {message}"):
        Dense(**kwargs)


def test_unknown_activation_names():
    with pytest.raises(ValueError, match=r"unknown activation 'swish'; expected one of \['elu', 'gelu'"):
        Dense(4, 3, activation="swish")
    with pytest.raises(ValueError, match="unknown activation 'Relu'"):
        fastbp.Activation("Relu")
    with pytest.raises(ValueError, match="unknown init 'orthogonal'"):
        Dense(4, 3, init="orthogonal")


@pytest.mark.parametrize("rate", [1.0, -0.1])
def test_dropout_rate(rate):
    shown = re.escape(repr(rate))
    with pytest.raises(ValueError, match=rf"Dropout rate must be a number in \[0, 1\); got {shown}"):
        Dropout(rate)
    for rate, shown in (("0.5", "str '0.5'"), (True, "bool True")):
        with pytest.raises(TypeError, match=f"Dropout rate must be a number; got {shown}"):
            Dropout(rate)


def test_optimizer_arguments():
    with pytest.raises(ValueError, match="momentum must be in"):
        fastbp.SGD(lr=0.1, momentum=1.0)
    with pytest.raises(ValueError, match="momentum must be a finite number >= 0"):
        fastbp.SGD(lr=0.1, momentum=-0.5)
    with pytest.raises(ValueError, match="nesterov=True needs momentum > 0"):
        fastbp.SGD(lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="weight_decay must be a finite number >= 0"):
        fastbp.SGD(weight_decay=np.inf)
    with pytest.raises(ValueError, match="betas must be two numbers in"):
        fastbp.Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="eps must be a finite number > 0"):
        fastbp.Adam(eps=0.0)
    for lr in (0, -0.1, np.nan):
        with pytest.raises(ValueError, match="lr must be"):
            fastbp.SGD(lr=lr)
    with pytest.raises(TypeError, match="lr must be a finite number > 0, .*; got str '0.1'"):
        fastbp.SGD(lr="0.1")


def test_schedule_arguments():
    with pytest.raises(ValueError, match="step_size must be an integer >= 1; got 0"):
        fastbp.StepDecay(0.1, step_size=0)
    with pytest.raises(ValueError, match=r"gamma must be in \(0, 1\]"):
        fastbp.ExponentialDecay(0.1, gamma=1.5)
    with pytest.raises(ValueError, match="t_max must be an integer >= 1; got 0"):
        fastbp.CosineDecay(0.1, t_max=0)
    with pytest.raises(ValueError, match=r"factor must be in \(0, 1\)"):
        fastbp.ReduceLROnPlateau(0.1, factor=1.0)
    with pytest.raises(ValueError, match="mode must be 'auto', 'min' or 'max'; got 'up'"):
        fastbp.EarlyStopping(mode="up")


@pytest.mark.parametrize("make, message", [
    (lambda: fastbp.Adam(eps="x"), r"eps must be a number; got str 'x'"),
    (lambda: fastbp.Adam(betas=None), r"betas must be a pair of numbers \(beta1, beta2\); got None"),
    (lambda: fastbp.Adam(betas=(0.9, "0.999")), r"betas must be a number; got str '0.999'"),
    (lambda: fastbp.SGD(momentum="0.9"), r"momentum must be a number; got str '0.9'"),
    (lambda: fastbp.StepDecay(0.1, 2, gamma="0.5"), r"gamma must be a number; got str '0.5'"),
    (lambda: fastbp.Dense(3, 2, bias_init="0"), r"bias_init must be a number; got str '0'"),
    (lambda: fastbp.StepDecay(0.1, 2.5), r"step_size must be an integer; got float 2.5"),
    (lambda: fastbp.RMSprop(alpha="0.9"), r"alpha must be a number; got str '0.9'"),
    (lambda: fastbp.BatchNorm(4, affine=1), r"affine must be True or False; got int 1"),
    (lambda: fastbp.schedules.Constant("0.1"), r"lr must be a number; got str '0.1'"),
])
def test_arguments_of_the_wrong_type_give_a_type_error_naming_them(make, message):
    with pytest.raises(TypeError, match=message):
        make()


@pytest.mark.parametrize("make, message", [
    (lambda: fastbp.CosineDecay(0.1, 2, min_lr=-0.5), r"min_lr must be in \[0, 0.1\], finite; got -0.5"),
    (lambda: fastbp.CosineDecay(0.1, 2, min_lr=0.2), r"min_lr must be in \[0, 0.1\], finite; got 0.2"),
    (lambda: fastbp.StepDecay(0.1, 2, gamma=-1), r"gamma must be in \(0, 1\], finite; got -1.0"),
    (lambda: fastbp.StepDecay(0.1, 2, gamma=float("nan")), r"gamma must be in \(0, 1\], finite; got nan"),
    (lambda: fastbp.ReduceLROnPlateau(0.1, min_lr=float("inf")), r"min_lr must be in \[0, 0.1\], finite; got inf"),
    (lambda: fastbp.ReduceLROnPlateau(0.1, patience=-1), r"patience must be an integer >= 0; got -1"),
    (lambda: fastbp.ReduceLROnPlateau(0.1, min_delta=float("nan")), r"min_delta must be in \[0, inf\], finite"),
    (lambda: fastbp.schedules.Constant(float("inf")), r"lr must be a finite number > 0; got inf"),
    (lambda: fastbp.Adam(eps=float("inf")), r"eps must be a finite number > 0; got inf"),
    (lambda: fastbp.Adam(eps=float("nan")), r"eps must be a finite number > 0; got nan"),
    (lambda: fastbp.RMSprop(alpha=1.0), r"alpha must be a number in \[0, 1\); got 1.0"),
    (lambda: fastbp.Dense(3, 2, bias_init=float("nan")), r"bias_init must be a finite number; got nan"),
])
def test_schedule_and_optimizer_values_that_make_no_sense(make, message):
    with pytest.raises(ValueError, match=message):
        make()


class Swinging(fastbp.schedules.Schedule):
    """A user's schedule that turns negative at epoch 2."""

    def lr_at(self, epoch):
        return self.lr if epoch < 2 else -self.lr


def test_each_epochs_rate_is_checked_naming_the_schedule_and_the_epoch(data):
    X, y = data
    model = classifier()
    with pytest.raises(ValueError, match=r"the learning-rate schedule Swinging gave -0.1 for epoch 2; "
                                         r"expected a finite number >= 0"):
        fit(model, X, y, optimizer=fastbp.SGD(lr=Swinging(0.1)), epochs=4)
    assert model.epochs_trained == 2


@pytest.mark.parametrize("value", ["0.1", None, float("nan"), -0.5])
def test_a_learning_rate_function_returning_no_rate_names_the_epoch(data, value):
    X, y = data
    opt = lambda: fastbp.SGD(lr=lambda epoch: 0.1 if epoch < 1 else value)  # noqa: E731
    with pytest.raises(ValueError, match=rf"the learning-rate function returned {re.escape(repr(value))} "
                                         r"for epoch 1; expected a finite number >= 0"):
        fit(classifier(), X, y, optimizer=opt(), epochs=3)
    with pytest.raises(ValueError, match=rf"returned {re.escape(repr(value))} for epoch 0"):
        fastbp.SGD(lr=lambda epoch: value)


def test_learning_rate_function_returning_a_bad_rate(data):
    X, y = data
    opt = fastbp.SGD(lr=lambda epoch: 0.1 if epoch < 1 else -1.0)
    with pytest.raises(ValueError, match="the learning-rate function returned -1.0 for epoch 1"):
        fit(classifier(), X, y, optimizer=opt, epochs=3)


def test_set_weights_of_wrong_count_or_shape():
    model = classifier()
    weights = model.get_weights()
    with pytest.raises(ValueError, match=r"weights must hold 4 arrays \(W and b per Dense layer, "
                                         r"gamma and beta per affine norm layer\); got 3"):
        model.set_weights(weights[:3])
    weights[2] = weights[2].T
    with pytest.raises(ValueError, match=r"weights\[2\] must have shape \(6, 3\); got \(3, 6\)"):
        model.set_weights(weights)


def test_evaluate_and_predict_proba_need_a_loss(data):
    X, y = data
    with pytest.raises(RuntimeError, match=r"evaluate needs a loss: call compile\(loss=...\)"):
        classifier().evaluate(X, y)
    model = classifier().compile("mse")
    with pytest.raises(RuntimeError, match="predict_proba needs a classification loss"):
        model.predict_proba(X)


def test_unknown_device():
    with pytest.raises(ValueError, match="device must be 'cpu' or 'cuda'; got 'tpu'"):
        Sequential([Dense(4, 3)], device="tpu")


# ----- divergence ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def regression():
    X, y = fastbp.datasets.make_regression(64, 5, noise=0.1, nonlinear=False, seed=3)
    return X, y


def regressor(dtype):
    return Sequential([Dense(5, 16, activation="tanh"), Dense(16, 1)], dtype=dtype, seed=0)


class ThetaAtEpochBegin(fastbp.Callback):
    def __init__(self):
        self.copies = []

    def on_epoch_begin(self, epoch, logs=None):
        self.copies.append(self.model.get_flat_weights())


DIVERGING = dict(loss="mse", batch_size=8, shuffle=False, seed=0, verbose=0)


# Where these fail (float32: epoch 1, batch 5; float64: epoch 4, batch 5) depends on the
# numbers, so the test reads it from the error and checks it from there.
@pytest.mark.parametrize("dtype, lr", [("float32", 2e4), ("float64", 2e4)])
def test_divergence_names_epoch_and_batch_and_keeps_weights_from_before_the_step(regression, dtype, lr):
    X, y = regression
    model = regressor(dtype)
    spy = ThetaAtEpochBegin()
    with pytest.raises(fastbp.DivergenceError) as info:
        model.fit(X, y, epochs=5, optimizer=fastbp.SGD(lr=lr), callbacks=[spy], **DIVERGING)
    err = info.value
    message = str(err)
    assert re.search(rf"training diverged: non-finite (loss|gradient) at epoch {err.epoch + 1}, "
                     rf"batch {err.batch + 1} of 8 \(lr {lr:g}\)", message), message
    assert "keeps its weights from before that step" in message
    assert np.all(np.isfinite(model.theta))
    # The run must take some steps first, or "before the failing step" is the initial
    # theta and proves little.
    assert err.epoch * 8 + err.batch >= 2
    assert model.optimizer.steps == err.epoch * 8 + err.batch
    assert len(err.history.epoch) == err.epoch
    assert len(spy.copies) == err.epoch + 1

    # Replay the same steps and stop right before the failing one: the whole epochs
    # before it, then the first err.batch batches of the failing epoch, which
    # shuffle=False makes the first err.batch * 8 samples.
    replay = regressor(dtype)
    opt = fastbp.SGD(lr=lr)
    if err.epoch:
        replay.fit(X, y, epochs=err.epoch, optimizer=opt, **DIVERGING)
    # The replay is on track: theta as the failing epoch began, seen by the callback.
    np.testing.assert_array_equal(replay.theta, spy.copies[-1])
    if err.batch:
        replay.fit(X[:err.batch * 8], y[:err.batch * 8], epochs=1, optimizer=opt, **DIVERGING)
    assert opt.steps == model.optimizer.steps
    np.testing.assert_array_equal(model.theta, replay.theta)


def test_non_finite_parameters_are_refused_before_training_naming_the_array(data):
    X, y = data
    model = classifier()
    theta = model.get_flat_weights()
    theta[4 * 6 + 6 * 3 + 2] = np.nan  # layers[0].bias[2]: the biases follow every weight
    model.set_flat_weights(theta)
    with pytest.raises(ValueError, match=r"fit needs finite parameters; the model's layers\[0\].bias holds "
                                         r"nan at index 2"):
        fit(model, X, y, callbacks=[fastbp.EarlyStopping(monitor="loss", restore_best_weights=True)])


@pytest.mark.parametrize("frozen", ["theta", "buffers"])
def test_read_only_parameters_predict_and_evaluate_and_fit_names_them(data, frozen):
    # A memory-mapped or frozen model: inference reads it (the compiled loops take writable arrays
    # only, so it reads a copy); fit, which writes in place, says what to do.
    X, y = data
    model = Sequential([Dense(4, 6), fastbp.BatchNorm(6), fastbp.Activation("relu"), Dense(6, 3)], seed=0)
    fit(model, X, y)
    expected, scores = model.predict_proba(X), model.evaluate(X, y)
    getattr(model, frozen).flags.writeable = False
    np.testing.assert_array_equal(model.predict_proba(X), expected)
    assert model.evaluate(X, y) == scores
    with pytest.raises(ValueError, match=rf"fit updates the model's {frozen} in place, and it is read-only.*"
                                         rf"model\.{frozen} = np\.array\(model\.{frozen}\)"):
        fit(model, X, y)


def test_a_divergence_from_overflowing_weights_says_so(regression):
    # A rate this large makes the weights infinite in one finite-gradient step; the next
    # step's loss is then not finite. The message says the weights were, and blames no callback.
    X, y = regression
    model = regressor("float32")
    with pytest.raises(fastbp.DivergenceError) as info:
        model.fit(X, y, epochs=3, optimizer=fastbp.SGD(lr=3e38),
                  callbacks=[fastbp.EarlyStopping(monitor="loss", restore_best_weights=True)], **DIVERGING)
    message = str(info.value)
    assert re.search(r"the parameters were not finite before that step \(layers\[\d\]\.(weight|bias) holds "
                     r"-?(inf|nan) at index", message), message
    assert "an earlier update overflowed; the model keeps its weights from before that step" in message
    assert "callback" not in message


# The divergence check on the gradient: every position of a vectorized loop (body and tail)
# and every dtype, since a fastmath formulation once folded the check away for float64.
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_the_gradient_check_finds_every_non_finite_value(dtype, bad):
    from fastbp.kernels.cpu._finite import all_finite as _all_finite

    grad = np.linspace(-1e30, 1e30, 37).astype(dtype)
    assert _all_finite(grad)
    assert _all_finite(grad[:0])
    for i in range(grad.size):
        spoiled = grad.copy()
        spoiled[i] = bad
        assert not _all_finite(spoiled), i


def test_check_features_checks_one_block_of_rows_when_asked():
    # A data-parallel fit's rank checks its block of X only; the row in the message is X's.
    from fastbp._validation import check_features

    X = np.zeros((10, 3))
    X[5, 1] = np.nan
    check_features(X, 3, np.float64, "X", part=(0, 2))  # rows 0-4
    with pytest.raises(ValueError, match=r"X contains NaN or inf \(first at row 5, column 1\)"):
        check_features(X, 3, np.float64, "X", part=(1, 2))
    with pytest.raises(ValueError, match=r"first at row 5, column 1"):
        check_features(X, 3, np.float64, "X")
