"""Loss kernels: ``*_forward`` writes the mean loss, ``*_backward`` its gradient.

The batch mean is taken here and only here, so every other backward kernel is
a plain sum over the batch. With per-sample weights s_n the mean is the
weighted mean sum_n s_n l_n / sum_n s_n; a zero-size ``weight`` array means
unweighted (s_n = 1), and a batch whose weights are all 0 has loss 0 and
gradient 0 (it carries no information, and 0/0 must not pass for divergence). Elementwise losses
(MSE, BCE, Poisson, Huber, MAE) also average over the O outputs, as PyTorch's and Keras's default
reductions do. They share one kernel pair, ``elementwise_loss_forward`` and
``elementwise_loss_backward``, which take the loss code and the scalar formulas
``loss_term`` / ``loss_grad`` of ``_scalar.py``; the named kernels fix the code.

Forward kernels write into ``loss``, a one-element array, instead of returning
a value, so that the CPU and GPU kernels share one signature and the GPU can
keep the loss on the device.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.
"""
import math

import numpy as np

from .._checks import ArgSpec
from .._jit import jit
from .._scalar import loss_grad, loss_term, row_max, softmax_nll
from ..registry import LOSS_BCE, LOSS_HUBER, LOSS_MAE, LOSS_MSE, LOSS_POISSON, LOSS_SCE
from ._exp import exp_in_place


@jit(callers="compiled")
def _inverse_total(weight, n_rows):
    """1 / sum_n s_n, or 0 when every weight is 0: such a batch contributes no loss and no gradient."""
    if weight.size == 0:
        return 1.0 / n_rows
    total = 0.0
    for n in range(n_rows):
        total += weight[n]
    return 1.0 / total if total > 0.0 else 0.0


@jit
def elementwise_loss_forward(loss, pred, target, weight, code, param):
    """Mean of an elementwise loss: loss[0] = sum_n s_n sum_o l(z, t) / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty; l is ``loss_term`` of
    ``_scalar.py`` for the loss ``code`` (any but softmax cross-entropy), with
    its parameter ``param`` (Huber's delta). Every elementwise loss is this
    one loop: the named kernels below only fix the code.
    """
    # A copy of the loop per code, each with the code a constant: LLVM folds loss_term's
    # branches and vectorizes. (With the code read inside one loop, MSE's backward ran
    # 5-12x slower than its own loop had.) The copies are inlined into numba's IR: as
    # compiled functions of their own, the ten cost 3 s of a cold start for the same code.
    if code == LOSS_MSE:
        _forward_loop(loss, pred, target, weight, LOSS_MSE, param)
    elif code == LOSS_BCE:
        _forward_loop(loss, pred, target, weight, LOSS_BCE, param)
    elif code == LOSS_POISSON:
        _forward_loop(loss, pred, target, weight, LOSS_POISSON, param)
    elif code == LOSS_HUBER:
        _forward_loop(loss, pred, target, weight, LOSS_HUBER, param)
    else:
        _forward_loop(loss, pred, target, weight, LOSS_MAE, param)


@jit(inline="always")
def _forward_loop(loss, pred, target, weight, code, param):
    n_rows, n_out = pred.shape
    total = 0.0
    for n in range(n_rows):
        row = 0.0
        for j in range(n_out):
            row += loss_term(code, pred[n, j], target[n, j], param)
        total += row * (weight[n] if weight.size else 1.0)
    loss[0] = total * _inverse_total(weight, n_rows) / n_out


@jit
def elementwise_loss_backward(dpred, pred, target, weight, code, param):
    """dpred (N, O) = s_n l'(z, t) / (O sum_n s_n), overwritten; l' is ``loss_grad``.

    Dispatched on ``code`` outside the loop, as the forward is.
    """
    if code == LOSS_MSE:
        _backward_loop(dpred, pred, target, weight, LOSS_MSE, param)
    elif code == LOSS_BCE:
        _backward_loop(dpred, pred, target, weight, LOSS_BCE, param)
    elif code == LOSS_POISSON:
        _backward_loop(dpred, pred, target, weight, LOSS_POISSON, param)
    elif code == LOSS_HUBER:
        _backward_loop(dpred, pred, target, weight, LOSS_HUBER, param)
    else:
        _backward_loop(dpred, pred, target, weight, LOSS_MAE, param)


@jit(inline="always")
def _backward_loop(dpred, pred, target, weight, code, param):
    n_rows, n_out = pred.shape
    scale = _inverse_total(weight, n_rows) / n_out
    for n in range(n_rows):
        s = scale * (weight[n] if weight.size else 1.0)
        for j in range(n_out):
            dpred[n, j] = s * loss_grad(code, pred[n, j], target[n, j], param)


MSE_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("loss",))


@jit
def mse_forward(loss, pred, target, weight):
    """Mean squared error: loss[0] = sum_n s_n sum_o (pred - target)^2 / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty.

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_forward(loss, pred, target, weight, np.int64(LOSS_MSE), 0.0)


MSE_BACKWARD_SPEC = ArgSpec(
    [("dpred", "NO"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("dpred",))


@jit
def mse_backward(dpred, pred, target, weight):
    """dpred (N, O) = 2 s_n (pred - target) / (O sum_n s_n), overwritten.

    Parameters
    ----------
    dpred : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``pred``. Overwritten.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_backward(dpred, pred, target, weight, np.int64(LOSS_MSE), 0.0)


SOFTMAX_CROSS_ENTROPY_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("probs", "NO"), ("logits", "NO"), ("labels", "labels"), ("weight", "N?")],
    writes=("loss", "probs"))


@jit
def softmax_cross_entropy_forward(loss, probs, logits, labels, weight):
    """Softmax cross-entropy from logits with integer labels, fused and stable.

    logits (N, O), labels (N,) integers in [0, O), weight (N,) or empty ->
    probs (N, O) = softmax(logits) (kept for the backward pass) and
    loss[0] = sum_n s_n (logsumexp(logits_n) - logits_n[labels_n]) / sum_n s_n.
    The log-sum-exp subtracts the row maximum, so logits of +-1e4 give a
    finite loss.

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    probs : ndarray of shape (N, O)
        Receives the softmax probabilities of ``logits``; ``softmax_cross_entropy_backward`` reads them.
    logits : ndarray of shape (N, O)
        The network's outputs before the softmax or sigmoid.
    labels : ndarray of int, shape (N,)
        Class labels in [0, O).
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    _sce_forward(loss, probs, logits, labels, weight)


@jit(inline="always")
def _sce_forward(loss, probs, logits, labels, weight):
    n_rows, n_out = logits.shape
    for n in range(n_rows):
        m = row_max(logits, n)
        for j in range(n_out):
            probs[n, j] = logits[n, j] - m
    # The exponentials in one loop over the whole batch, which vectorizes: rows of 10 logits
    # made ten short loops of it, each with its own set-up.
    exp_in_place(probs)
    # nll_n = (max_n - logits[n, y_n]) + log(s_n), ``softmax_nll``. Unweighted, the shifts and
    # the logs are summed apart, the logs as the log of a product, one log for many rows (a libm
    # log per row was 3-4% of the small networks' step): every s_n lies in [1, O], the row's
    # largest term being exp(0), so the product is logged and restarted before it could
    # overflow. NaN from non-finite logits propagates either way.
    weighted = weight.size > 0
    total = 0.0
    product = 1.0
    for n in range(n_rows):
        s = 0.0
        for j in range(n_out):
            s += probs[n, j]
        inv = 1.0 / s
        for j in range(n_out):
            probs[n, j] *= inv
        m = row_max(logits, n)
        if weighted:
            total += softmax_nll(m, logits[n, labels[n]], s) * weight[n]
        else:
            total += m - logits[n, labels[n]]
            product *= s
            if product > 1e280:
                total += math.log(product)
                product = 1.0
    loss[0] = (total + math.log(product)) * _inverse_total(weight, n_rows)


SOFTMAX_CROSS_ENTROPY_BACKWARD_SPEC = ArgSpec(
    [("dlogits", "NO"), ("probs", "NO"), ("labels", "labels"), ("weight", "N?")],
    writes=("dlogits",))


@jit
def softmax_cross_entropy_backward(dlogits, probs, labels, weight):
    """dlogits (N, O) = s_n (probs - onehot(labels)) / sum_n s_n, overwritten.

    d/dz_k [logsumexp(z) - z_y] = softmax(z)_k - [k == y]: the softmax Jacobian
    and the log cancel, which is why the two are fused. dlogits may alias probs.

    Parameters
    ----------
    dlogits : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``logits``. Overwritten.
    probs : ndarray of shape (N, O)
        Receives the softmax probabilities of ``logits``; ``softmax_cross_entropy_backward`` reads them.
    labels : ndarray of int, shape (N,)
        Class labels in [0, O).
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    _sce_backward(dlogits, probs, labels, weight)


@jit(inline="always")
def _sce_backward(dlogits, probs, labels, weight):
    n_rows, n_out = probs.shape
    scale = _inverse_total(weight, n_rows)
    for n in range(n_rows):
        s = scale * (weight[n] if weight.size else 1.0)
        for j in range(n_out):
            dlogits[n, j] = s * probs[n, j]
        dlogits[n, labels[n]] -= s


BINARY_CROSS_ENTROPY_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("logits", "NO"), ("target", "NO"), ("weight", "N?")], writes=("loss",))


@jit
def binary_cross_entropy_forward(loss, logits, target, weight):
    """Binary cross-entropy from logits, stable for any logit.

    logits (N, O), target (N, O) in [0, 1], weight (N,) or empty ->
    loss[0] = sum_n s_n sum_o [log(1 + e^z) - t z] / (O sum_n s_n), with
    log(1 + e^z) = max(z, 0) + log1p(e^-abs(z)).

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    logits : ndarray of shape (N, O)
        The network's outputs before the softmax or sigmoid.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_forward(loss, logits, target, weight, np.int64(LOSS_BCE), 0.0)


BINARY_CROSS_ENTROPY_BACKWARD_SPEC = ArgSpec(
    [("dlogits", "NO"), ("logits", "NO"), ("target", "NO"), ("weight", "N?")],
    writes=("dlogits",))


@jit
def binary_cross_entropy_backward(dlogits, logits, target, weight):
    """dlogits (N, O) = s_n (sigmoid(z) - t) / (O sum_n s_n), overwritten.

    Parameters
    ----------
    dlogits : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``logits``. Overwritten.
    logits : ndarray of shape (N, O)
        The network's outputs before the softmax or sigmoid.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_backward(dlogits, logits, target, weight, np.int64(LOSS_BCE), 0.0)


POISSON_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("loss",))


@jit
def poisson_forward(loss, pred, target, weight):
    """Poisson loss with the log link: pred is eta = log of the predicted mean.

    pred (N, O), target (N, O) >= 0, weight (N,) or empty ->
    loss[0] = sum_n s_n sum_o [exp(eta) - y eta] / (O sum_n s_n): the negative
    log-likelihood without its constant log(y!), scikit-learn's
    ``HalfPoissonLoss`` (the deviance minus terms that depend on y alone).

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_forward(loss, pred, target, weight, np.int64(LOSS_POISSON), 0.0)


POISSON_BACKWARD_SPEC = ArgSpec(
    [("dpred", "NO"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("dpred",))


@jit
def poisson_backward(dpred, pred, target, weight):
    """dpred (N, O) = s_n (exp(eta) - y) / (O sum_n s_n), overwritten.

    d/deta [exp(eta) - y eta] = exp(eta) - y: the log link is the canonical one,
    so the gradient is mean minus target, as for the other fused losses.

    Parameters
    ----------
    dpred : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``pred``. Overwritten.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_backward(dpred, pred, target, weight, np.int64(LOSS_POISSON), 0.0)


HUBER_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("pred", "NO"), ("target", "NO"), ("weight", "N?"), ("delta", "positive")],
    writes=("loss",))


@jit
def huber_forward(loss, pred, target, weight, delta):
    """Huber loss, PyTorch's ``HuberLoss``: with d = pred - target, per output

    d^2 / 2 where abs(d) <= delta, delta (abs(d) - delta / 2) beyond;
    loss[0] = sum_n s_n sum_o l / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty, delta > 0.

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.
    delta : float > 0
        Where the loss turns from quadratic to linear.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_forward(loss, pred, target, weight, np.int64(LOSS_HUBER), delta)


HUBER_BACKWARD_SPEC = ArgSpec(
    [("dpred", "NO"), ("pred", "NO"), ("target", "NO"), ("weight", "N?"), ("delta", "positive")],
    writes=("dpred",))


@jit
def huber_backward(dpred, pred, target, weight, delta):
    """dpred (N, O) = s_n clip(pred - target, -delta, delta) / (O sum_n s_n), overwritten.

    Parameters
    ----------
    dpred : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``pred``. Overwritten.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.
    delta : float > 0
        Where the loss turns from quadratic to linear.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_backward(dpred, pred, target, weight, np.int64(LOSS_HUBER), delta)


MAE_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("loss",))


@jit
def mae_forward(loss, pred, target, weight):
    """Mean absolute error: loss[0] = sum_n s_n sum_o abs(pred - target) / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty.

    Parameters
    ----------
    loss : ndarray of shape (1,)
        Receives the mean loss of the batch.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_forward(loss, pred, target, weight, np.int64(LOSS_MAE), 0.0)


MAE_BACKWARD_SPEC = ArgSpec(
    [("dpred", "NO"), ("pred", "NO"), ("target", "NO"), ("weight", "N?")], writes=("dpred",))


@jit
def mae_backward(dpred, pred, target, weight):
    """dpred (N, O) = s_n sign(pred - target) / (O sum_n s_n), overwritten.

    abs(d) has no derivative at d = 0; the kernel uses sign(0) = 0 there, the
    subgradient PyTorch's ``l1_loss`` uses.

    Parameters
    ----------
    dpred : ndarray of shape (N, O)
        Gradient of the mean loss with respect to ``pred``. Overwritten.
    pred : ndarray of shape (N, O)
        The network's outputs.
    target : ndarray of shape (N, O)
        Targets.
    weight : ndarray of shape (N,) or of size 0
        Sample weights s_n, finite and non-negative; a zero-size array weighs every sample 1.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    elementwise_loss_backward(dpred, pred, target, weight, np.int64(LOSS_MAE), 0.0)


# ----- dispatch by loss code (what the compiled training loop calls) ------------------------


# The loop's loss kernels take both kinds of targets; the one the loss does not use is empty, as
# ``probs`` is for every loss but softmax cross-entropy.
LOSS_CODE_FORWARD_SPEC = ArgSpec(
    [("loss", "L"), ("probs", "NO?"), ("out", "NO"), ("labels", "int64[:]"), ("target", "NO?"), ("weight", "N?"),
     ("code", "loss"), ("param", "float")], writes=("loss", "probs"))
LOSS_CODE_BACKWARD_SPEC = ArgSpec(
    [("dout", "NO"), ("probs", "NO?"), ("out", "NO"), ("labels", "int64[:]"), ("target", "NO?"), ("weight", "N?"),
     ("code", "loss"), ("param", "float")], writes=("dout",))


@jit
def loss_code_forward(loss, probs, out, labels, target, weight, code, param):
    """Mean loss of the batch into loss[0] for the loss ``code`` of ``kernels.registry``.

    Classification by softmax takes integer ``labels`` and leaves softmax(out) in
    ``probs``; the others take float ``target`` (N, O). The unused one may be empty.
    ``param`` is the loss's parameter (Huber's delta), ignored by the others.
    """
    if code == LOSS_SCE:
        softmax_cross_entropy_forward(loss, probs, out, labels, weight)
    else:
        elementwise_loss_forward(loss, out, target, weight, code, param)


@jit
def loss_code_backward(dout, probs, out, labels, target, weight, code, param):
    """Gradient of the mean loss with respect to ``out``, overwriting dout."""
    if code == LOSS_SCE:
        softmax_cross_entropy_backward(dout, probs, labels, weight)
    else:
        elementwise_loss_backward(dout, out, target, weight, code, param)


# ----- one kernel pair per loss code (what the loop's kernel table holds) -------------------
#
# The loop's signature, (loss or dout, probs, out, labels, target, weight, code, param), with the
# code fixed: the kernel table of a model holds its own loss's pair (``CODE_FORWARD``,
# ``CODE_BACKWARD``), so that a cold start compiles one loss, not six.


@jit
def sce_code_forward(loss, probs, out, labels, target, weight, code, param):
    _sce_forward(loss, probs, out, labels, weight)


@jit
def sce_code_backward(dout, probs, out, labels, target, weight, code, param):
    _sce_backward(dout, probs, labels, weight)


@jit
def bce_code_forward(loss, probs, out, labels, target, weight, code, param):
    _forward_loop(loss, out, target, weight, LOSS_BCE, param)


@jit
def bce_code_backward(dout, probs, out, labels, target, weight, code, param):
    _backward_loop(dout, out, target, weight, LOSS_BCE, param)


@jit
def mse_code_forward(loss, probs, out, labels, target, weight, code, param):
    _forward_loop(loss, out, target, weight, LOSS_MSE, param)


@jit
def mse_code_backward(dout, probs, out, labels, target, weight, code, param):
    _backward_loop(dout, out, target, weight, LOSS_MSE, param)


@jit
def poisson_code_forward(loss, probs, out, labels, target, weight, code, param):
    _forward_loop(loss, out, target, weight, LOSS_POISSON, param)


@jit
def poisson_code_backward(dout, probs, out, labels, target, weight, code, param):
    _backward_loop(dout, out, target, weight, LOSS_POISSON, param)


@jit
def huber_code_forward(loss, probs, out, labels, target, weight, code, param):
    _forward_loop(loss, out, target, weight, LOSS_HUBER, param)


@jit
def huber_code_backward(dout, probs, out, labels, target, weight, code, param):
    _backward_loop(dout, out, target, weight, LOSS_HUBER, param)


@jit
def mae_code_forward(loss, probs, out, labels, target, weight, code, param):
    _forward_loop(loss, out, target, weight, LOSS_MAE, param)


@jit
def mae_code_backward(dout, probs, out, labels, target, weight, code, param):
    _backward_loop(dout, out, target, weight, LOSS_MAE, param)


CODE_FORWARD = {LOSS_SCE: sce_code_forward, LOSS_BCE: bce_code_forward, LOSS_MSE: mse_code_forward,
                LOSS_POISSON: poisson_code_forward, LOSS_HUBER: huber_code_forward, LOSS_MAE: mae_code_forward}
CODE_BACKWARD = {LOSS_SCE: sce_code_backward, LOSS_BCE: bce_code_backward, LOSS_MSE: mse_code_backward,
                 LOSS_POISSON: poisson_code_backward, LOSS_HUBER: huber_code_backward,
                 LOSS_MAE: mae_code_backward}
