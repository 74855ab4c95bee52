"""fastbp.gradcheck and fastbp.gradcheck_pair: they pass on correct backward passes and catch wrong ones."""
import numpy as np
import pytest
from numba import njit

import fastbp
from fastbp import kernels as K
from fastbp.kernels import registry as R

ELEMENTWISE_LOSSES = ["mse", "binary_cross_entropy", "poisson", "huber", "mae"]


def _data(loss, n=7, n_features=3, n_out=2, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, n_features))
    if loss == "softmax_cross_entropy":
        return X, rng.integers(0, n_out, n)
    if loss == "binary_cross_entropy":
        return X, rng.uniform(0, 1, (n, n_out)).round(1)
    if loss == "poisson":
        return X, rng.poisson(1.5, (n, n_out)).astype(float)
    return X, 2 * rng.standard_normal((n, n_out))


@pytest.mark.parametrize("activation", [a.name for a in R.ACTIVATION_TABLE])
def test_every_activation_passes(activation):
    # Dense-fused (where the derivative follows from the output) and standalone.
    X, y = _data("softmax_cross_entropy", n_out=3)
    alpha = 0.3 if R.ACTIVATION_BY_NAME[activation].alpha is not None else None
    model = fastbp.Sequential([fastbp.Dense(3, 5, activation=activation, alpha=alpha),
                               fastbp.Activation(activation, alpha=alpha), fastbp.Dense(5, 3)],
                              dtype="float64", seed=1)
    result = fastbp.gradcheck(model, X, y, loss="softmax_cross_entropy")
    assert set(result.errors) == {"layers[0].weight", "layers[0].bias", "layers[2].weight", "layers[2].bias"}
    assert set(result.per_layer) == {"layers[0]", "layers[2]"}
    assert result.passed and result.max_error < 1e-2, result.errors


@pytest.mark.parametrize("loss", ["softmax_cross_entropy"] + ELEMENTWISE_LOSSES + ["huber_delta"])
@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
def test_every_loss_passes(loss, weighted):
    X, y = _data("mse" if loss == "huber_delta" else loss, n_out=3 if loss == "softmax_cross_entropy" else 2)
    w = np.linspace(0.2, 2.0, len(X)) if weighted else None
    model = fastbp.Sequential([fastbp.Dense(3, 4, activation="tanh"), fastbp.Dense(4, 3 if loss ==
                                                                                   "softmax_cross_entropy" else 2)],
                              dtype="float64", seed=2)
    loss_arg = fastbp.losses.Huber(delta=0.4) if loss == "huber_delta" else loss
    result = fastbp.gradcheck(model, X, y, loss=loss_arg, sample_weight=w)
    assert result.passed and result.max_error < 1e-2, result.errors


def test_a_float32_model_is_checked_in_a_float64_copy_and_left_alone():
    X, y = _data("mse")
    model = fastbp.Sequential([fastbp.Dense(3, 4, activation="silu"), fastbp.Dense(4, 2)], seed=3)
    model.compile("mse", fastbp.Adam(0.01))
    before = model.theta.copy()
    with pytest.warns(UserWarning, match="float32 model is checked in a float64 copy"):
        result = fastbp.gradcheck(model, X, y)
    assert result.passed, result.errors
    assert model.dtype == np.float32 and np.array_equal(model.theta, before)
    assert isinstance(model.optimizer, fastbp.Adam) and model.loss.name == "mse"


def test_dropout_is_checked_with_a_fixed_mask():
    X, y = _data("mse", n=9)
    model = fastbp.Sequential([fastbp.Dense(3, 6, activation="selu"), fastbp.Dropout(0.5), fastbp.Dense(6, 2)],
                              dtype="float64", seed=4)
    result = fastbp.gradcheck(model, X, y, loss="mse")
    assert set(result.per_layer) == {"layers[0]", "layers[2]"}
    assert result.passed, result.errors


def test_max_entries_checks_a_sample_and_bad_arguments_are_named():
    X, y = _data("mse")
    model = fastbp.Sequential([fastbp.Dense(3, 4), fastbp.Dense(4, 2)], dtype="float64")
    assert fastbp.gradcheck(model, X, y, loss="mse", max_entries=2).passed
    with pytest.raises(ValueError, match="gradcheck needs a loss"):
        fastbp.gradcheck(model, X, y)
    with pytest.raises(ValueError, match=r"eps must be in \(0, 1\), finite; got 0.0"):
        fastbp.gradcheck(model, X, y, loss="mse", eps=0)
    with pytest.raises(TypeError, match="eps must be a number; got str '0.1'"):
        fastbp.gradcheck(model, X, y, loss="mse", eps="0.1")
    with pytest.raises(TypeError, match="model must be a fastbp.Sequential"):
        fastbp.gradcheck("model", X, y, loss="mse")


def test_a_wrong_backward_in_the_compiled_model_is_caught(monkeypatch):
    # The compiled kernels cannot be patched from Python: wrap the training step's gradient
    # (Sequential.objective, what gradcheck differentiates against) with a 1% error in one
    # block. The check must fail on that block, and on it only.
    model = fastbp.Sequential([fastbp.Dense(3, 4, activation="silu"), fastbp.Dense(4, 2)], dtype="float64", seed=5)
    X, y = _data("mse")
    assert fastbp.gradcheck(model, X, y, loss="mse").passed
    real = fastbp.Sequential.objective

    def wrong_first_layer(self, X, y, sample_weight=None):
        f = real(self, X, y, sample_weight)
        n_first = 3 * 4

        def g(theta):
            value, grad = f(theta)
            grad = grad.copy()
            grad[:n_first] *= 1.01  # layers[0].weight, first in theta
            return value, grad
        return g

    monkeypatch.setattr(fastbp.Sequential, "objective", wrong_first_layer)
    result = fastbp.gradcheck(model, X, y, loss="mse")
    assert not result.passed
    # A 1% error on an entry g uses 0.01 |g| / (1e-5 + 1e-3 |g|) of the tolerance: more
    # than 1 where |g| > 1.2e-3, less than 10 always.
    assert 1 < result.errors["layers[0].weight"] < 10, result.errors
    assert result.errors["layers[1].weight"] < 1e-2 and result.errors["layers[0].bias"] < 1e-2
    with pytest.raises(fastbp.GradcheckError, match=r"layers\[0\].weight differs from the central differences by"):
        fastbp.gradcheck(model, X, y, loss="mse", raise_on_failure=True)


# ----- a user's own pair: the @njit training step of docs/kernels.md --------------------------------


@njit
def _readme_loss(x, labels, w, b, buffers):
    """The forward half of docs/kernels.md's train_step: dense, then softmax cross-entropy."""
    out, probs, dout, dw, db, no_dx, no_weight, loss = buffers
    K.dense_forward(out, x, w, b)
    K.softmax_cross_entropy_forward(loss, probs, out, labels, no_weight)
    return loss[0]


@njit
def _readme_grads(x, labels, w, b, buffers):
    """Its backward half: the gradients that train_step hands to sgd_update."""
    out, probs, dout, dw, db, no_dx, no_weight, loss = buffers
    K.dense_forward(out, x, w, b)
    K.softmax_cross_entropy_forward(loss, probs, out, labels, no_weight)
    K.softmax_cross_entropy_backward(dout, probs, labels, no_weight)
    K.dense_backward(no_dx, dw, db, dout, x, w)


@njit
def _wrong_grads(x, labels, w, b, buffers):
    """A plausible mistake: the loss gradient without its 1/N (dout * N), as if summed."""
    _readme_grads(x, labels, w, b, buffers)
    n = x.shape[0]
    out, probs, dout, dw, db, no_dx, no_weight, loss = buffers
    for i in range(dw.shape[0]):
        for j in range(dw.shape[1]):
            dw[i, j] *= n


def _readme_problem():
    N, I, O = 16, 5, 3
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N, I))
    labels = np.argmax(x[:, :O], axis=1)
    w, b = 0.3 * rng.normal(size=(I, O)), 0.1 * rng.normal(size=O)
    buffers = (np.empty((N, O)), np.empty((N, O)), np.empty((N, O)), np.empty_like(w), np.empty_like(b),
               np.empty((0, 0)), np.empty(0), np.empty(1))
    return x, labels, w, b, buffers


def _pair(grads_fn):
    x, labels, w, b, buffers = _readme_problem()

    def forward(w, b):
        return _readme_loss(x, labels, w, b, buffers)

    def backward(dout, w, b):
        grads_fn(x, labels, w, b, buffers)
        return dout * buffers[3], dout * buffers[4]

    return forward, backward, {"w": w, "b": b}


def test_gradcheck_pair_passes_the_readme_step():
    forward, backward, inputs = _pair(_readme_grads)
    result = fastbp.gradcheck_pair(forward, backward, inputs)
    assert set(result.errors) == {"w", "b"}
    assert result.passed and result.max_error < 1e-2, result.errors


def test_gradcheck_pair_catches_a_wrong_backward():
    forward, backward, inputs = _pair(_wrong_grads)
    result = fastbp.gradcheck_pair(forward, backward, inputs)
    assert not result.passed
    assert result.errors["w"] > 1 and result.errors["b"] < 1e-2
    with pytest.raises(fastbp.GradcheckError, match="w differs from the central differences by"):
        fastbp.gradcheck_pair(forward, backward, inputs, raise_on_failure=True)


def test_gradcheck_pair_on_array_outputs_and_its_errors():
    # An elementwise kernel pair: the output is an array, dout a random array of its shape.
    x = np.random.default_rng(1).standard_normal((4, 5))

    def forward(x):
        out = np.empty_like(x)
        K.silu_forward(out, x)
        return out

    def backward(dout, x):
        dx = np.empty_like(x)
        K.silu_backward(dx, dout, x)
        return dx

    result = fastbp.gradcheck_pair(forward, backward, (x,))
    assert list(result.errors) == ["inputs[0]"] and result.passed, result.errors

    def gelu_backward_for_silu(dout, x):  # the wrong derivative
        dx = np.empty_like(x)
        K.gelu_backward(dx, dout, x)
        return dx

    assert not fastbp.gradcheck_pair(forward, gelu_backward_for_silu, (x,)).passed
    with pytest.raises(ValueError, match=r"inputs\[0\] is float32"):
        fastbp.gradcheck_pair(forward, backward, (x.astype(np.float32),), wrt=[0])
    with pytest.raises(ValueError, match="backward returned 2 gradient"):
        fastbp.gradcheck_pair(forward, lambda dout, x: (x, x), (x,))


def test_a_gradient_that_is_zero_in_truth_passes_and_norm_parameters_are_checked():
    # The bias before BatchNorm has gradient 0 (the mean subtraction cancels it): analytic and
    # numeric are rounding on either side of 0, which a purely relative error blew up to 1.
    X, y = _data("softmax_cross_entropy", n=12, n_features=4, n_out=3)
    model = fastbp.Sequential([fastbp.Dense(4, 5), fastbp.BatchNorm(5), fastbp.ReLU(), fastbp.Dense(5, 3),
                               fastbp.LayerNorm(3)], dtype="float64", seed=0)
    result = fastbp.gradcheck(model, X, y, loss="softmax_cross_entropy")
    assert result.errors["layers[0].bias"] < 1e-2, result.errors
    assert set(result.errors) == {"layers[0].weight", "layers[0].bias", "layers[1].gamma", "layers[1].beta",
                                  "layers[3].weight", "layers[3].bias", "layers[4].gamma", "layers[4].beta"}
    assert set(result.per_layer) == {"layers[0]", "layers[1]", "layers[3]", "layers[4]"}
    assert result.passed and result.max_error < 1e-2, result.errors
    assert (result.atol, result.rtol) == (1e-5, 1e-3)


def test_a_wrong_gamma_gradient_is_caught(monkeypatch):
    X, y = _data("mse", n=9, n_features=3, n_out=2)
    model = fastbp.Sequential([fastbp.Dense(3, 4), fastbp.LayerNorm(4), fastbp.Tanh(), fastbp.Dense(4, 2)],
                              dtype="float64", seed=1)
    real = fastbp.Sequential.objective
    gamma = slice(3 * 4 + 4 * 2 + 4 + 2, 3 * 4 + 4 * 2 + 4 + 2 + 4)  # after every weight and bias

    def wrong_gamma(self, X, y, sample_weight=None):
        f = real(self, X, y, sample_weight)

        def g(theta):
            value, grad = f(theta)
            grad = grad.copy()
            grad[gamma] *= 1.05
            return value, grad
        return g

    monkeypatch.setattr(fastbp.Sequential, "objective", wrong_gamma)
    result = fastbp.gradcheck(model, X, y, loss="mse")
    assert not result.passed
    assert result.errors["layers[1].gamma"] > 1, result.errors
    assert max(v for k, v in result.errors.items() if k != "layers[1].gamma") < 1e-2, result.errors


def test_tolerances_are_checked():
    model = fastbp.Sequential([fastbp.Dense(3, 2)], dtype="float64", seed=0)
    X, y = _data("mse")
    with pytest.raises(ValueError, match="atol and rtol cannot both be 0"):
        fastbp.gradcheck(model, X, y, loss="mse", atol=0, rtol=0)
    with pytest.raises(ValueError, match="rtol must be a finite number >= 0; got -1"):
        fastbp.gradcheck(model, X, y, loss="mse", rtol=-1)
    with pytest.raises(TypeError, match="atol must be a number; got str '1e-5'"):
        fastbp.gradcheck(model, X, y, loss="mse", atol="1e-5")
