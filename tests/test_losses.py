"""Loss kernels: the (weighted) batch mean and its gradient, the only place the batch mean is taken."""
import numpy as np
import pytest

import reference as ref
from backends import DTYPES, assert_close, call, check_gradients, grad_matrix_shapes, matrix_shapes
from fastbp.kernels import (
    KernelArgumentError,
    binary_cross_entropy_forward,
    mse_forward,
    softmax_cross_entropy_backward,
    softmax_cross_entropy_forward,
)

LOSSES = ["mse", "softmax_cross_entropy", "binary_cross_entropy", "poisson", "huber", "mae"]
WEIGHTING = ["unweighted", "weighted"]
# Parameters after the weight: Huber's delta, with errors on both sides of it.
PARAMS = {"huber": (0.8,)}
KINK = {"huber": 0.8, "mae": 0.0}  # |pred - target| where the derivative jumps


def _problem(rng, loss, shape, dtype, weighting):
    """(prediction or logits, target or labels, weight) for ``loss``; weight is empty if unweighted."""
    n, o = shape
    pred = (2 * rng.standard_normal(shape)).astype(dtype)
    if loss == "softmax_cross_entropy":
        target = rng.integers(0, o, size=n)
    elif loss == "binary_cross_entropy":
        target = rng.uniform(0, 1, size=shape).astype(dtype)  # soft targets are allowed
        target[rng.uniform(size=shape) < 0.5] = 1.0
    elif loss == "poisson":
        pred = (0.7 * rng.standard_normal(shape)).astype(dtype)  # log of means around 1
        target = rng.poisson(1.5, size=shape).astype(dtype)  # counts, 0 included
    else:
        target = rng.standard_normal(shape).astype(dtype)
    if loss in KINK:
        # Keep |pred - target| away from the kink, so central differences see one side.
        near = np.abs(np.abs(pred.astype(np.float64) - target) - KINK[loss]) < 0.05
        pred[near] += pred.dtype.type(0.2)  # moves |d| at least 0.15 from the kink
    if weighting == "weighted":
        weight = rng.uniform(0.2, 3.0, size=n).astype(dtype)
        weight[0] = 0.0  # a zero weight removes a sample from both the loss and the gradient
        if n == 1:
            weight[0] = 2.5
    else:
        weight = np.empty(0, dtype)
    return pred, target, weight


def _forward(backend, loss, pred, target, weight):
    """Run the forward kernel; returns the loss (and writes probs for softmax CE)."""
    out = np.full(1, np.nan, pred.dtype)
    if loss == "softmax_cross_entropy":
        probs = np.full(pred.shape, np.nan, pred.dtype)
        call(backend, f"{loss}_forward", out, probs, pred, target, weight)
        return out[0], probs
    call(backend, f"{loss}_forward", out, pred, target, weight, *PARAMS.get(loss, ()))
    return out[0], None


def _backward(backend, loss, pred, target, weight, probs):
    grad = np.full(pred.shape, np.nan, pred.dtype)
    first = probs if loss == "softmax_cross_entropy" else pred
    call(backend, f"{loss}_backward", grad, first, target, weight, *PARAMS.get(loss, ()))
    return grad


@pytest.mark.parametrize("weighting", WEIGHTING)
@pytest.mark.parametrize("loss", LOSSES)
def test_matches_reference(backend, dtype, loss, weighting):
    rng = np.random.default_rng(20)
    rotate = 4 * LOSSES.index(loss) + 2 * WEIGHTING.index(weighting) + DTYPES.index(dtype)
    for shape in matrix_shapes(backend, rotate=rotate):
        pred, target, weight = _problem(rng, loss, shape, dtype, weighting)
        value, probs = _forward(backend, loss, pred, target, weight)
        grad = _backward(backend, loss, pred, target, weight, probs)
        if loss == "softmax_cross_entropy":
            want_value, want_probs = ref.softmax_cross_entropy_forward(pred, target, weight)
            assert_close(probs, want_probs, dtype, err_msg=f"probs {shape}")
            want_grad = ref.softmax_cross_entropy_backward(probs, target, weight)
        else:
            want_value = getattr(ref, f"{loss}_forward")(pred, target, weight, *PARAMS.get(loss, ()))
            want_grad = getattr(ref, f"{loss}_backward")(pred, target, weight, *PARAMS.get(loss, ()))
        assert_close(value, want_value, dtype, err_msg=f"loss {shape}")
        # Gradients are O(1 / N): judge them on that scale, not on 1.
        scale = max(np.abs(want_grad).max(), 1.0 / shape[0])
        assert_close(grad, want_grad, dtype, scale=scale, err_msg=f"grad {shape}")
        if weighting == "weighted" and shape[0] > 1:
            np.testing.assert_array_equal(grad[0], 0.0)


@pytest.mark.parametrize("weighting", WEIGHTING)
@pytest.mark.parametrize("loss", LOSSES)
def test_gradient_check(backend, loss, weighting):
    rng = np.random.default_rng(21)
    for shape in grad_matrix_shapes(backend):
        pred, target, weight = _problem(rng, loss, shape, np.float64, weighting)

        # N times the mean, whose derivatives are O(1) rather than O(1 / N).
        def value():
            return shape[0] * _forward(backend, loss, pred, target, weight)[0]

        probs = _forward(backend, loss, pred, target, weight)[1]
        grad = _backward(backend, loss, pred, target, weight, probs)
        # Softmax cross-entropy over one class is log(1) = 0 whatever the logit.
        degenerate = loss == "softmax_cross_entropy" and shape[1] == 1
        check_gradients(backend, value, [("pred", pred, shape[0] * grad)], rng,
                        err_msg=f"{loss} {weighting} {shape}", degenerate=degenerate)


def test_weighted_mean_by_hand(backend):
    # Two samples with per-sample losses l = (1, 4) (MSE over one output),
    # weights (3, 1): mean = (3 * 1 + 1 * 4) / (3 + 1) = 1.75, and
    # dpred = 2 s (pred - target) / sum(s) = (2 * 3 * 1 / 4, 2 * 1 * 2 / 4) = (1.5, 1.0).
    pred = np.array([[1.0], [2.0]])
    target = np.array([[0.0], [0.0]])
    weight = np.array([3.0, 1.0])
    value, _ = _forward(backend, "mse", pred, target, weight)
    assert value == 1.75
    np.testing.assert_array_equal(_backward(backend, "mse", pred, target, weight, None), [[1.5], [1.0]])
    # Unweighted: (1 + 4) / 2 = 2.5; dpred = 2 (pred - target) / 2 = (1, 2).
    value, _ = _forward(backend, "mse", pred, target, np.empty(0))
    assert value == 2.5
    np.testing.assert_array_equal(_backward(backend, "mse", pred, target, np.empty(0), None), [[1.0], [2.0]])
    # MSE averages over outputs too: ((1 - 0)^2 + (3 - 1)^2) / 2 = 2.5 for one sample.
    value, _ = _forward(backend, "mse", np.array([[1.0, 3.0]]), np.array([[0.0, 1.0]]), np.empty(0))
    assert value == 2.5


def test_softmax_cross_entropy_by_hand(backend):
    # Logits (0, log 3) -> probs (1/4, 3/4). Label 1: loss = -log(3/4);
    # dlogits = probs - onehot = (1/4, -1/4).
    logits = np.array([[0.0, np.log(3.0)]])
    value, probs = _forward(backend, "softmax_cross_entropy", logits, np.array([1]), np.empty(0))
    np.testing.assert_allclose(probs, [[0.25, 0.75]], rtol=1e-14)
    assert value == pytest.approx(-np.log(0.75), rel=1e-14)
    grad = _backward(backend, "softmax_cross_entropy", logits, np.array([1]), np.empty(0), probs)
    np.testing.assert_allclose(grad, [[0.25, -0.25]], rtol=1e-14)


# ----------------------------------------------------------------------------
# Extreme inputs
# ----------------------------------------------------------------------------

def test_softmax_cross_entropy_of_huge_logits(backend, dtype):
    logits = np.array([[1e4, -1e4, 0.0], [1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    labels = np.array([0, 1, 2])
    value, probs = _forward(backend, "softmax_cross_entropy", logits, labels, np.empty(0, dtype))
    # Row losses: 0 (right and certain), 2e4 (wrong by 2e4), log 3 (uniform).
    assert np.isfinite(value)
    assert value == pytest.approx((0.0 + 2e4 + np.log(3.0)) / 3, rel=1e-6)
    want_value, want_probs = ref.softmax_cross_entropy_forward(logits, labels)
    assert value == pytest.approx(want_value, rel=1e-6)
    np.testing.assert_array_equal(probs[:2], [[1.0, 0.0, 0.0]] * 2)
    grad = _backward(backend, "softmax_cross_entropy", logits, labels, np.empty(0, dtype), probs)
    assert np.isfinite(grad).all()
    # The limit of (probs - onehot) / N.
    assert_close(grad[:2], np.array([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]]) / 3, dtype, scale=1.0)
    assert_close(grad, ref.softmax_cross_entropy_backward(want_probs, labels), dtype, scale=1.0)


def test_softmax_cross_entropy_of_many_rows_of_many_classes(backend, dtype):
    # Unweighted, the CPU kernel sums the rows' log-sum-exps as the log of a product of sums, each
    # in [1, O]: 400 uniform rows of 1000 classes multiply to 1000^400 = 1e1200, far past the
    # float64 range unless the product is logged and restarted on the way. Every row's loss is
    # log 1000.
    logits = np.zeros((400, 1000), dtype)
    labels = np.arange(400) % 1000
    value, probs = _forward(backend, "softmax_cross_entropy", logits, labels, np.empty(0, dtype))
    assert value == pytest.approx(np.log(1000.0), rel=1e-6 if dtype == np.float32 else 1e-12)
    np.testing.assert_allclose(probs, 1e-3, rtol=1e-6 if dtype == np.float32 else 1e-12)
    weighted, _ = _forward(backend, "softmax_cross_entropy", logits, labels, np.full(400, 0.5, dtype))
    assert weighted == pytest.approx(value, rel=1e-6 if dtype == np.float32 else 1e-12)


def test_binary_cross_entropy_of_huge_logits(backend, dtype):
    logits = np.array([[1e4, -1e4, 1e4, -1e4]], dtype)
    target = np.array([[1.0, 0.0, 0.0, 1.0]], dtype)
    value, _ = _forward(backend, "binary_cross_entropy", logits, target, np.empty(0, dtype))
    # Element losses: 0, 0 (right and certain), 1e4, 1e4 (wrong by 1e4); mean over 4 outputs.
    assert value == 5e3
    assert value == pytest.approx(ref.binary_cross_entropy_forward(logits, target), rel=1e-12)
    grad = _backward(backend, "binary_cross_entropy", logits, target, np.empty(0, dtype), None)
    # (sigmoid(z) - t) / O, with sigmoid saturated to exactly 1 and 0.
    np.testing.assert_array_equal(grad, [[0.0, 0.0, 0.25, -0.25]])


@pytest.mark.parametrize("loss", LOSSES)
def test_nan_propagates(backend, loss):
    rng = np.random.default_rng(22)
    pred, target, weight = _problem(rng, loss, (4, 3), np.float64, "unweighted")
    pred[2, 1] = np.nan
    value, probs = _forward(backend, loss, pred, target, weight)
    assert np.isnan(value)
    grad = _backward(backend, loss, pred, target, weight, probs)
    assert np.isnan(grad[2, 1])
    assert np.isfinite(grad[[0, 1, 3]]).all()


@pytest.mark.parametrize("loss", LOSSES)
def test_an_all_zero_weight_batch_has_loss_0_and_gradient_0(backend, dtype, loss):
    # A batch of zero-weight samples (a training loop's last, fully masked batch)
    # carries no information: loss 0 and gradient 0, not 0 / 0 = NaN, which would
    # pass for a divergence. The checked names accept it, as the kernels do.
    rng = np.random.default_rng(24)
    pred, target, _ = _problem(rng, loss, (4, 3), dtype, "unweighted")
    weight = np.zeros(4, dtype)
    value, probs = _forward(backend, loss, pred, target, weight)  # NaN until written
    grad = _backward(backend, loss, pred, target, weight, probs)
    assert value == 0.0
    np.testing.assert_array_equal(grad, 0.0)


def test_int32_labels(backend):
    rng = np.random.default_rng(23)
    logits, labels, weight = _problem(rng, "softmax_cross_entropy", (5, 7), np.float64, "weighted")
    value64, probs = _forward(backend, "softmax_cross_entropy", logits, labels, weight)
    value32, _ = _forward(backend, "softmax_cross_entropy", logits, labels.astype(np.int32), weight)
    assert value32 == value64
    grad64 = _backward(backend, "softmax_cross_entropy", logits, labels, weight, probs)
    grad32 = _backward(backend, "softmax_cross_entropy", logits, labels.astype(np.int32), weight, probs)
    np.testing.assert_array_equal(grad32, grad64)


# ----------------------------------------------------------------------------
# Argument checking at the public boundary
# ----------------------------------------------------------------------------

def _sce_args():
    logits = np.zeros((4, 3))
    return np.empty(1), np.empty((4, 3)), logits, np.array([0, 1, 2, 0]), np.empty(0)


def test_labels_out_of_range_are_rejected():
    loss, probs, logits, _, weight = _sce_args()
    with pytest.raises(KernelArgumentError, match=r"argument 'labels' must be class labels in \[0, 3\); got label 3"):
        softmax_cross_entropy_forward(loss, probs, logits, np.array([0, 1, 3, 0]), weight)
    with pytest.raises(KernelArgumentError, match=r"argument 'labels' must be class labels in \[0, 3\); got label -1"):
        softmax_cross_entropy_backward(probs, probs, np.array([0, -1, 2, 0]), weight)
    with pytest.raises(KernelArgumentError, match=r"argument 'labels' must be an integer array"):
        softmax_cross_entropy_forward(loss, probs, logits, np.array([0.0, 1.0, 2.0, 0.0]), weight)
    with pytest.raises(KernelArgumentError, match=r"argument 'labels' must be of size 4 on axis 0 \(N"):
        softmax_cross_entropy_forward(loss, probs, logits, np.array([0, 1, 2]), weight)


def test_bad_weights_are_rejected():
    loss, probs, logits, labels, _ = _sce_args()
    with pytest.raises(KernelArgumentError, match=r"argument 'weight' must be finite and non-negative"):
        softmax_cross_entropy_forward(loss, probs, logits, labels, np.array([1.0, -0.5, 1.0, 1.0]))
    with pytest.raises(KernelArgumentError, match=r"argument 'weight' must be finite and non-negative"):
        mse_forward(loss, logits, logits, np.array([1.0, np.nan, 1.0, 1.0]))
    with pytest.raises(KernelArgumentError, match=r"argument 'weight' must be finite and non-negative"):
        binary_cross_entropy_forward(loss, logits, logits, np.array([1.0, 1.0, np.inf, 1.0]))
    with pytest.raises(KernelArgumentError, match=r"argument 'weight' must be finite and non-negative"):
        binary_cross_entropy_forward(loss, logits, logits, np.array([0.0, -0.0, -1e-300, 0.0]))
    with pytest.raises(KernelArgumentError, match=r"argument 'weight' must be of size 4 on axis 0 \(N"):
        mse_forward(loss, logits, logits, np.ones(3))


def test_zero_size_batch_and_bad_loss_buffer_are_rejected():
    with pytest.raises(KernelArgumentError, match=r"argument 'pred' must be non-empty \(empty batch"):
        mse_forward(np.empty(1), np.empty((0, 3)), np.empty((0, 3)), np.empty(0))
    with pytest.raises(KernelArgumentError, match=r"argument 'loss' must be a one-element array of shape \(1,\)"):
        mse_forward(np.empty(()), np.zeros((2, 3)), np.zeros((2, 3)), np.empty(0))
    with pytest.raises(KernelArgumentError, match=r"argument 'target' must be float64 like the arrays"):
        mse_forward(np.empty(1), np.zeros((2, 3)), np.zeros((2, 3), np.float32), np.empty(0))


def test_poisson_by_hand(backend):
    # eta = (0, log 2), y = (3, 1): element losses exp(0) - 0 = 1 and 2 - log 2; mean over 2 outputs.
    # Gradient (exp(eta) - y) / O = ((1 - 3) / 2, (2 - 1) / 2).
    eta = np.array([[0.0, np.log(2.0)]])
    y = np.array([[3.0, 1.0]])
    value, _ = _forward(backend, "poisson", eta, y, np.empty(0))
    assert value == pytest.approx((1.0 + 2.0 - np.log(2.0)) / 2, rel=1e-14)
    np.testing.assert_allclose(_backward(backend, "poisson", eta, y, np.empty(0), None), [[-1.0, 0.5]],
                               rtol=1e-14)
    # Weights (3, 1) on two one-output samples with losses 1 (eta 0, y 0) and e - 2 (eta 1, y 2).
    value, _ = _forward(backend, "poisson", np.array([[0.0], [1.0]]), np.array([[0.0], [2.0]]),
                        np.array([3.0, 1.0]))
    assert value == pytest.approx((3 * 1.0 + (np.e - 2.0)) / 4, rel=1e-14)


def test_huber_and_mae_by_hand(backend):
    # d = pred - target = (0.5, -3, 0): Huber(delta 1) terms 0.125, 1 (3 - 1/2) = 2.5, 0;
    # mean over 3 outputs = 2.625 / 3. Gradient clip(d, -1, 1) / 3 = (0.5, -1, 0) / 3.
    pred = np.array([[0.5, -3.0, 2.0]])
    target = np.array([[0.0, 0.0, 2.0]])
    value = np.full(1, np.nan)
    call(backend, "huber_forward", value, pred, target, np.empty(0), 1.0)
    assert value[0] == pytest.approx(2.625 / 3, rel=1e-15)
    grad = np.full((1, 3), np.nan)
    call(backend, "huber_backward", grad, pred, target, np.empty(0), 1.0)
    np.testing.assert_allclose(grad, [[0.5 / 3, -1 / 3, 0.0]], rtol=1e-15)
    # delta 4 covers every error: the Huber loss is half the squared error there.
    call(backend, "huber_forward", value, pred, target, np.empty(0), 4.0)
    assert value[0] == pytest.approx((0.125 + 4.5) / 3, rel=1e-15)
    # MAE: (0.5 + 3 + 0) / 3; gradient sign(d) / 3 with sign(0) = 0 (the documented subgradient).
    call(backend, "mae_forward", value, pred, target, np.empty(0))
    assert value[0] == pytest.approx(3.5 / 3, rel=1e-15)
    call(backend, "mae_backward", grad, pred, target, np.empty(0))
    np.testing.assert_array_equal(grad, [[1 / 3, -1 / 3, 0.0]])
    # Weights (3, 1) on two one-output samples with |d| = 1 and 2: (3 + 2) / 4.
    call(backend, "mae_forward", value, np.array([[1.0], [0.0]]), np.array([[0.0], [2.0]]), np.array([3.0, 1.0]))
    assert value[0] == 1.25


def test_huber_and_mae_match_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(25)
    pred, target = 2 * rng.standard_normal((9, 4)), rng.standard_normal((9, 4))
    for delta in (0.3, 1.0, 2.5):
        value, grad = np.full(1, np.nan), np.full(pred.shape, np.nan)
        call("cpu", "huber_forward", value, pred, target, np.empty(0), delta)
        call("cpu", "huber_backward", grad, pred, target, np.empty(0), delta)
        p = torch.tensor(pred, requires_grad=True)
        want = torch.nn.HuberLoss(delta=delta)(p, torch.from_numpy(target))
        want.backward()
        assert value[0] == pytest.approx(want.item(), rel=1e-14)
        np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-14)
    p = torch.tensor(pred, requires_grad=True)
    want = torch.nn.L1Loss()(p, torch.from_numpy(target))
    want.backward()
    call("cpu", "mae_forward", value, pred, target, np.empty(0))
    call("cpu", "mae_backward", grad, pred, target, np.empty(0))
    assert value[0] == pytest.approx(want.item(), rel=1e-14)
    np.testing.assert_allclose(grad, p.grad.numpy(), rtol=1e-14)


def test_huber_delta_is_checked():
    with pytest.raises(KernelArgumentError, match=r"argument 'delta' must be > 0"):
        call("cpu", "huber_forward", np.empty(1), np.zeros((2, 3)), np.zeros((2, 3)), np.empty(0), 0.0)


@pytest.mark.parametrize("weighting", WEIGHTING)
@pytest.mark.parametrize("loss", LOSSES)
def test_each_code_kernel_pair_is_the_named_kernels(dtype, loss, weighting):
    # The compiled loop's kernel table holds one pair per loss code (CODE_FORWARD, CODE_BACKWARD),
    # in the loop's signature: the same numbers as the named kernels, bit for bit.
    from fastbp.kernels import registry as R
    from fastbp.kernels.cpu import losses as L

    code = next(entry.code for entry in R.LOSS_TABLE if entry.name == loss)
    pred, target, weight = _problem(np.random.default_rng(5), loss, (7, 3), dtype, weighting)
    labels = target if loss == "softmax_cross_entropy" else np.zeros(0, np.int64)
    floats = pred[:0] if loss == "softmax_cross_entropy" else target
    param = PARAMS.get(loss, (0.0,))[0]
    want, probs_want = _forward("cpu", loss, pred, target, weight)
    got, probs = np.full(1, np.nan, dtype), np.full(pred.shape, np.nan, dtype)
    L.CODE_FORWARD[code](got, probs, pred, labels, floats, weight, code, param)
    assert got[0] == want and np.isfinite(want)
    if probs_want is not None:
        np.testing.assert_array_equal(probs, probs_want)
    grad = np.full(pred.shape, np.nan, dtype)
    L.CODE_BACKWARD[code](grad, probs, pred, labels, floats, weight, code, param)
    np.testing.assert_array_equal(grad, _backward("cpu", loss, pred, target, weight, probs_want))
    assert sorted(L.CODE_FORWARD) == sorted(L.CODE_BACKWARD) == sorted(entry.code for entry in R.LOSS_TABLE)
