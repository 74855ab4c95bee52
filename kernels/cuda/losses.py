"""Loss kernels on the GPU: ``*_forward`` writes the mean loss, ``*_backward`` its gradient.

Same names, arguments and conventions as ``fastbp.kernels.cpu.losses``: the
batch mean is taken here and only here; with per-sample weights s_n the mean
is sum_n s_n l_n / sum_n s_n and a zero-size ``weight`` means unweighted;
elementwise losses (MSE, BCE, Poisson, Huber, MAE) also average over the O
outputs, and share one kernel pair that takes the loss code and the scalar
formulas ``loss_term`` / ``loss_grad`` of ``_scalar.py``.

Forward kernels write the mean into ``loss``, a device array of shape (1,),
so the loss stays on the device: no copy, no host synchronization. They run
a single block of up to LOSS_THREADS threads that strides over the batch and
ends with a shared-memory tree: a loss is O(N O) work, microseconds at
training batch sizes, and one block sums in a fixed order with neither
atomics nor a scratch buffer, so the loss is bit-for-bit reproducible. Sums are float64
whatever the dtype, as on the CPU: the loss is one number that users watch,
and the accumulator costs nothing here.

Backward kernels are elementwise over the N x O gradient (grid-stride). With
weights, each block first reduces sum_n s_n itself (the same tree, so every
block gets the same value); that is why weighted launches are capped at
WEIGHTED_MAX_BLOCKS blocks. The per-row scale is float64 as on the CPU;
these kernels are memory-bound, so that costs nothing either.

Labels are never used as an address without a bounds check: an out-of-range
label makes the loss NaN and takes no part in the gradient, instead of
reading or writing outside the arrays (the checked entry points reject such
labels before launching).
"""
import math

import numpy as np

from .._scalar import loss_grad, loss_term, row_max, softmax_nll
from ..registry import LOSS_BCE, LOSS_HUBER, LOSS_MAE, LOSS_MSE, LOSS_POISSON, LOSS_SCE
from ._launch import MAX_BLOCKS, cdiv, dev, fixed, pow2_threads
from ._numba_cuda import cuda, device, kernel
from ._reduce import block_reduce

# Most threads of a loss block (a power of two, for the reduction tree);
# small batches get fewer, down to one warp.
LOSS_THREADS = 256
# A weighted backward block reduces all N weights first, so fewer blocks do
# more elements each: about one block per SM on an H100.
WEIGHTED_MAX_BLOCKS = 128


@device
def _inverse_total(buf, weight, n_rows):
    """1 / sum_n s_n over the whole batch (1 / N when unweighted), in every thread of the block.

    0 when every weight is 0, as on the CPU: the batch has loss 0 and gradient 0.
    """
    if weight.size == 0:
        return 1.0 / n_rows
    w = 0.0
    for n in range(cuda.threadIdx.x, n_rows, cuda.blockDim.x):
        w += weight[n]
    w = block_reduce(buf, w, False)
    return 1.0 / w if w > 0.0 else 0.0


@kernel
def _elementwise_forward_kernel(loss, pred, target, weight, code, param):
    """One block: loss[0] = sum_n s_n sum_o l(z, t) / (O sum_n s_n), l = ``loss_term``."""
    buf = cuda.shared.array(LOSS_THREADS, np.float64)
    n_rows, n_cols = pred.shape
    weighted = weight.size > 0
    total = 0.0
    # Flat index over (n, o): consecutive threads read consecutive elements.
    for e in range(cuda.threadIdx.x, n_rows * n_cols, cuda.blockDim.x):
        n = e // n_cols
        j = e - n * n_cols
        term = loss_term(code, pred[n, j], target[n, j], param)
        total += term * weight[n] if weighted else term
    total = block_reduce(buf, total, False)
    inv_total = _inverse_total(buf, weight, n_rows)
    if cuda.threadIdx.x == 0:
        loss[0] = total * inv_total / n_cols


@kernel
def _elementwise_backward_kernel(dpred, pred, target, weight, code, param):
    """dpred[n, o] = s_n l'(z, t) / (O sum_n s_n), l' = ``loss_grad``, one element per thread."""
    buf = cuda.shared.array(LOSS_THREADS, np.float64)
    n_rows, n_cols = pred.shape
    weighted = weight.size > 0
    scale = _inverse_total(buf, weight, n_rows) / n_cols
    for e in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        n = e // n_cols
        j = e - n * n_cols
        s = scale * weight[n] if weighted else scale
        dpred[n, j] = s * loss_grad(code, pred[n, j], target[n, j], param)


@kernel
def _softmax_cross_entropy_forward_kernel(loss, probs, logits, labels, weight):
    """One block, one thread per row: probs = softmax(logits), loss[0] = weighted mean NLL.

    Each thread owns whole rows (n = t, t + blockDim.x, ...), so probs has a single
    writer per row; a row's maximum and NLL are ``row_max`` and ``softmax_nll``, as on
    the CPU.
    """
    buf = cuda.shared.array(LOSS_THREADS, np.float64)
    n_rows, n_cols = logits.shape
    weighted = weight.size > 0
    total = 0.0
    for n in range(cuda.threadIdx.x, n_rows, cuda.blockDim.x):
        m = row_max(logits, n)
        s = 0.0
        for j in range(n_cols):
            e = math.exp(logits[n, j] - m)
            probs[n, j] = e
            s += e
        inv = 1.0 / s
        for j in range(n_cols):
            probs[n, j] *= inv
        label = labels[n]
        if 0 <= label < n_cols:
            nll = softmax_nll(m, logits[n, label], s)
        else:
            nll = math.nan
        total += nll * weight[n] if weighted else nll
    total = block_reduce(buf, total, False)
    inv_total = _inverse_total(buf, weight, n_rows)
    if cuda.threadIdx.x == 0:
        loss[0] = total * inv_total


@kernel
def _softmax_cross_entropy_backward_kernel(dlogits, probs, labels, weight):
    """dlogits[n, o] = s_n (probs - [o == label_n]) / sum_n s_n, one element per thread.

    Written as s p, then minus s at the label, through the stored value: the
    same two roundings as the CPU kernel. Each element is read and written by
    its one owner, so dlogits may alias probs.
    """
    buf = cuda.shared.array(LOSS_THREADS, np.float64)
    n_rows, n_cols = probs.shape
    weighted = weight.size > 0
    scale = _inverse_total(buf, weight, n_rows)
    for e in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        n = e // n_cols
        j = e - n * n_cols
        s = scale * weight[n] if weighted else scale
        dlogits[n, j] = s * probs[n, j]
        if j == labels[n]:
            dlogits[n, j] -= s


def _single_block(kernel_, work):
    return fixed(kernel_, 1, pow2_threads(work, LOSS_THREADS))


def _gradient(kernel_, shape, weight):
    size = shape[0] * shape[1]
    threads = pow2_threads(size, LOSS_THREADS)
    cap = WEIGHTED_MAX_BLOCKS if weight.size else MAX_BLOCKS
    return fixed(kernel_, max(1, min(cdiv(size, threads), cap)), threads)


def elementwise_loss_forward(loss, pred, target, weight, code, param):
    """Mean of the elementwise loss ``code``: sum_n s_n sum_o l(z, t) / (O sum_n s_n), into loss (1,)."""
    loss, pred, target, weight = dev(loss), dev(pred), dev(target), dev(weight)
    _single_block(_elementwise_forward_kernel, pred.size)(loss, pred, target, weight, code, float(param))


def elementwise_loss_backward(dpred, pred, target, weight, code, param):
    """dpred (N, O) = s_n l'(z, t) / (O sum_n s_n), overwritten."""
    dpred, pred, target, weight = dev(dpred), dev(pred), dev(target), dev(weight)
    launch = _gradient(_elementwise_backward_kernel, pred.shape, weight)
    launch(dpred, pred, target, weight, code, float(param))


def mse_forward(loss, pred, target, weight):
    """Mean squared error: loss[0] = sum_n s_n sum_o (pred - target)^2 / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty; loss (1,) on the device.
    """
    elementwise_loss_forward(loss, pred, target, weight, LOSS_MSE, 0.0)


def mse_backward(dpred, pred, target, weight):
    """dpred (N, O) = 2 s_n (pred - target) / (O sum_n s_n), overwritten."""
    elementwise_loss_backward(dpred, pred, target, weight, LOSS_MSE, 0.0)


def softmax_cross_entropy_forward(loss, probs, logits, labels, weight):
    """``fastbp.kernels.softmax_cross_entropy_forward`` on device arrays: probs (N, O) =
    softmax(logits) and loss[0] the weighted mean of ``softmax_nll`` over the rows."""
    loss, probs, logits, labels, weight = (dev(a) for a in (loss, probs, logits, labels, weight))
    launch = _single_block(_softmax_cross_entropy_forward_kernel, logits.shape[0])
    launch(loss, probs, logits, labels, weight)


def softmax_cross_entropy_backward(dlogits, probs, labels, weight):
    """``fastbp.kernels.softmax_cross_entropy_backward`` on device arrays: dlogits (N, O) =
    s_n (probs - onehot(labels)) / sum_n s_n, overwritten; dlogits may alias probs."""
    dlogits, probs, labels, weight = dev(dlogits), dev(probs), dev(labels), dev(weight)
    launch = _gradient(_softmax_cross_entropy_backward_kernel, probs.shape, weight)
    launch(dlogits, probs, labels, weight)


def binary_cross_entropy_forward(loss, logits, target, weight):
    """Binary cross-entropy from logits, stable for any logit.

    logits (N, O), target (N, O) in [0, 1], weight (N,) or empty ->
    loss[0] = sum_n s_n sum_o [log(1 + e^z) - t z] / (O sum_n s_n), with
    log(1 + e^z) = max(z, 0) + log1p(e^-|z|).
    """
    elementwise_loss_forward(loss, logits, target, weight, LOSS_BCE, 0.0)


def binary_cross_entropy_backward(dlogits, logits, target, weight):
    """dlogits (N, O) = s_n (sigmoid(z) - t) / (O sum_n s_n), overwritten."""
    elementwise_loss_backward(dlogits, logits, target, weight, LOSS_BCE, 0.0)


def poisson_forward(loss, pred, target, weight):
    """Poisson loss with the log link: pred is eta = log of the predicted mean.

    pred (N, O), target (N, O) >= 0, weight (N,) or empty ->
    loss[0] = sum_n s_n sum_o [exp(eta) - y eta] / (O sum_n s_n), without the
    constant log(y!) (scikit-learn's ``HalfPoissonLoss``); loss (1,) on the device.
    """
    elementwise_loss_forward(loss, pred, target, weight, LOSS_POISSON, 0.0)


def poisson_backward(dpred, pred, target, weight):
    """dpred (N, O) = s_n (exp(eta) - y) / (O sum_n s_n), overwritten."""
    elementwise_loss_backward(dpred, pred, target, weight, LOSS_POISSON, 0.0)


def huber_forward(loss, pred, target, weight, delta):
    """Huber loss, PyTorch's ``HuberLoss``: with d = pred - target, per output
    d^2 / 2 where |d| <= delta, delta (|d| - delta / 2) beyond;
    loss[0] = sum_n s_n sum_o l / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty, delta > 0.
    """
    elementwise_loss_forward(loss, pred, target, weight, LOSS_HUBER, delta)


def huber_backward(dpred, pred, target, weight, delta):
    """dpred (N, O) = s_n clip(pred - target, -delta, delta) / (O sum_n s_n), overwritten."""
    elementwise_loss_backward(dpred, pred, target, weight, LOSS_HUBER, delta)


def mae_forward(loss, pred, target, weight):
    """Mean absolute error: loss[0] = sum_n s_n sum_o |pred - target| / (O sum_n s_n).

    pred (N, O), target (N, O), weight (N,) or empty.
    """
    elementwise_loss_forward(loss, pred, target, weight, LOSS_MAE, 0.0)


def mae_backward(dpred, pred, target, weight):
    """dpred (N, O) = s_n sign(pred - target) / (O sum_n s_n), overwritten.

    |d| has no derivative at d = 0; the kernel uses sign(0) = 0 there, the
    subgradient PyTorch's ``l1_loss`` uses.
    """
    elementwise_loss_backward(dpred, pred, target, weight, LOSS_MAE, 0.0)


def loss_code_forward(loss, probs, out, labels, target, weight, code, param):
    """Mean loss of the batch into loss[0] for the loss ``code``, as on the CPU."""
    if code == LOSS_SCE:
        softmax_cross_entropy_forward(loss, probs, out, labels, weight)
    else:
        elementwise_loss_forward(loss, out, target, weight, code, param)


def loss_code_backward(dout, probs, out, labels, target, weight, code, param):
    """Gradient of the mean loss with respect to ``out``, overwriting dout."""
    if code == LOSS_SCE:
        softmax_cross_entropy_backward(dout, probs, labels, weight)
    else:
        elementwise_loss_backward(dout, out, target, weight, code, param)
