"""The compiled training loop: whole runs of mini-batches in one numba call.

A network is lowered (by ``fastbp.model``) to flat arrays that numba can take:
one op per layer (``kinds``: dense, activation or dropout, with ``codes``,
``alphas`` and ``rates``; ``params_of`` maps a dense op to its parameters),
``layout``, the running sum of the activation widths (the input's first), and
``params``, one row (weight offset, bias offset, fan-in, fan-out) per dense
layer into the flat parameter vector ``theta`` (weights first, then biases) and
the gradient ``grad`` of the same layout. Activations, their gradients and the
dropout masks live in one flat buffer each, with room for ``cap`` rows of every
activation. Views into these arrays are made inside the compiled code, so no
numba typed list is needed: building one compiles numba's list methods afresh
in every process (1.3 s before the first epoch, measured), and filling it costs
0.1 ms per element on every call.

``train_batches`` then runs forward, loss, backward and the optimizer update for
a range of batches with no Python in between and no allocation: the last,
smaller batch uses prefix views of the same buffers.

Divergence is caught before it can damage the model: a non-finite loss or
gradient stops the run *before* the update of that step, and the step is
reported back.

These loops call the ``*_serial`` kernels: the products are BLAS's, on BLAS's
threads, and nothing else here starts a thread pool (see ``kernels/_jit.py``).
"""
import math

import numpy as np

from .kernels._jit import jit
from .kernels._scalar import GELU, IDENTITY
from .kernels.cpu import activations as A
from .kernels.cpu import dense as D
from .kernels.cpu import dropout as R
from .kernels.cpu import losses as L
from .kernels.cpu import optim as O

# Op kinds of a lowered network.
OP_DENSE = 0
OP_ACTIVATION = 1
OP_DROPOUT = 2
# Row-wise activations, beyond the elementwise codes of kernels._scalar.
SOFTMAX = 8
LOG_SOFTMAX = 9

# Loss kinds.
LOSS_SCE = 0
LOSS_BCE = 1
LOSS_MSE = 2

# Optimizer kinds and the layout of the ``hyper`` array.
OPT_SGD = 0
OPT_ADAM = 1
H_LR, H_MOMENTUM, H_NESTEROV, H_WEIGHT_DECAY, H_BETA1, H_BETA2, H_EPS, H_DECOUPLED = range(8)

# Status codes returned by train_batches.
OK = 0
NONFINITE_LOSS = 1
NONFINITE_GRADIENT = 2

# Layout of the per-run statistics array: sums over the samples seen.
S_LOSS, S_WEIGHT, S_CORRECT, S_SQUARED, S_ABSOLUTE, S_COUNT, S_ELEMENTS = range(7)
N_STATS = 7


@jit
def _activation_forward(out, x, code, alpha):
    if code == GELU:
        A.activation_forward_serial(out, x, np.int64(GELU), 0.0)
    elif code == SOFTMAX:
        A.softmax_forward_serial(out, x)
    elif code == LOG_SOFTMAX:
        A.log_softmax_forward_serial(out, x)
    else:
        A.activation_forward_serial(out, x, code, alpha)


@jit
def _activation_backward(dx, dout, out, x, code, alpha):
    if code == GELU:
        A.gelu_backward_serial(dx, dout, x)
    elif code == SOFTMAX:
        A.softmax_backward_serial(dx, dout, out)
    elif code == LOG_SOFTMAX:
        A.log_softmax_backward_serial(dx, dout, out)
    else:
        A.activation_backward_serial(dx, dout, out, code, alpha)


@jit(inline="always")
def _rows(buf, layout, cap, i, nb):
    """The first nb rows of activation i in a buffer with room for cap rows of each."""
    start = cap * layout[i]
    width = layout[i + 1] - layout[i]
    return buf[start:start + nb * width].reshape((nb, width))


@jit(inline="always")
def _weight(flat, params, p):
    at = params[p, 0]
    return flat[at:at + params[p, 2] * params[p, 3]].reshape((params[p, 2], params[p, 3]))


@jit(inline="always")
def _bias(flat, params, p):
    at = params[p, 1]
    return flat[at:at + params[p, 3]]


@jit
def forward(acts, masks, cap, theta, params, kinds, codes, alphas, rates, params_of, layout, nb,
            training, seed):
    """Run the network on the first nb rows of activation 0; activation i + 1 is op i's output."""
    for i in range(kinds.size):
        x = _rows(acts, layout, cap, i, nb)
        out = _rows(acts, layout, cap, i + 1, nb)
        kind = kinds[i]
        if kind == OP_DENSE:
            p = params_of[i]
            D.dense_act_forward(out, x, _weight(theta, params, p), _bias(theta, params, p), codes[i],
                                alphas[i])
        elif kind == OP_ACTIVATION:
            _activation_forward(out, x, codes[i], alphas[i])
        elif training and rates[i] > 0.0:
            # A distinct stream per step and per layer.
            R.dropout_forward_serial(out, _rows(masks, layout, cap, i + 1, nb), x, rates[i], seed + i)
        else:
            A.activation_forward_serial(out, x, np.int64(IDENTITY), 0.0)


@jit
def _backward(dacts, scratch, acts, masks, cap, theta, grad, params, kinds, codes, alphas, rates,
              params_of, layout, nb):
    """Backpropagate the gradient of the last activation through every op into grad.

    A dense layer's dz = dout * f'(z) goes to ``scratch`` (at least nb times the
    widest layer), not over dout: LLVM cannot vectorize the pass when its
    input and output are the same memory, and the mnist configuration's step
    was 20% slower for it.
    """
    for i in range(kinds.size - 1, -1, -1):
        dout = _rows(dacts, layout, cap, i + 1, nb)
        out = _rows(acts, layout, cap, i + 1, nb)
        x = _rows(acts, layout, cap, i, nb)
        kind = kinds[i]
        if kind == OP_DENSE:
            p = params_of[i]
            # The first layer needs no input gradient: a zero-size dx skips it.
            dx = _rows(dacts, layout, cap, i, nb if i > 0 else 0)
            dz = scratch[:dout.size].reshape(dout.shape)
            D.dense_act_backward(dx, _weight(grad, params, p), _bias(grad, params, p), dz, dout, out, x,
                                 _weight(theta, params, p), codes[i], alphas[i])
        elif i == 0:
            break
        elif kind == OP_ACTIVATION:
            _activation_backward(_rows(dacts, layout, cap, i, nb), dout, out, x, codes[i], alphas[i])
        elif rates[i] > 0.0:
            R.dropout_backward_serial(_rows(dacts, layout, cap, i, nb), dout, _rows(masks, layout, cap, i + 1, nb))
        else:
            # Forward copied x and drew no mask: the gradient passes through.
            A.activation_backward_serial(_rows(dacts, layout, cap, i, nb), dout, dout, np.int64(IDENTITY), 0.0)


@jit
def loss_forward(loss, probs, out, y_int, y_float, sw, loss_kind):
    """Mean loss of the batch into loss[0]; SCE also leaves softmax(out) in probs."""
    if loss_kind == LOSS_SCE:
        L.softmax_cross_entropy_forward(loss, probs, out, y_int, sw)
    elif loss_kind == LOSS_BCE:
        L.binary_cross_entropy_forward(loss, out, y_float, sw)
    else:
        L.mse_forward(loss, out, y_float, sw)


@jit
def _loss_backward(dout, probs, out, y_int, y_float, sw, loss_kind):
    if loss_kind == LOSS_SCE:
        L.softmax_cross_entropy_backward(dout, probs, y_int, sw)
    elif loss_kind == LOSS_BCE:
        L.binary_cross_entropy_backward(dout, out, y_float, sw)
    else:
        L.mse_backward(dout, out, y_float, sw)


@jit
def accumulate_stats(stats, loss, out, y_int, y_float, sw, loss_kind):
    """Add one batch's loss (weighted by its sample-weight total) and metrics to stats."""
    nb, n_out = out.shape
    total = 0.0
    if sw.size:
        for n in range(nb):
            total += sw[n]
    else:
        total = float(nb)
    stats[S_LOSS] += loss * total
    stats[S_WEIGHT] += total
    stats[S_COUNT] += nb
    if loss_kind == LOSS_SCE:
        for n in range(nb):
            best = 0
            for j in range(1, n_out):
                if out[n, j] > out[n, best]:
                    best = j
            if best == y_int[n]:
                stats[S_CORRECT] += 1.0
    else:
        stats[S_ELEMENTS] += nb * n_out
        for n in range(nb):
            for j in range(n_out):
                if loss_kind == LOSS_BCE:
                    if (out[n, j] > 0.0) == (y_float[n, j] > 0.5):
                        stats[S_CORRECT] += 1.0
                else:
                    d = out[n, j] - y_float[n, j]
                    stats[S_SQUARED] += d * d
                    stats[S_ABSOLUTE] += abs(d)


@jit
def _all_finite(a):
    """True when no element is NaN or inf.

    Counts |x| < inf, an integer reduction that vectorizes without fastmath.
    (A fastmath sum of x - x does not work: with reassociation LLVM is free to
    fold it to 0 and hide a NaN, which it does for float64.)
    """
    finite = 0
    for i in range(a.size):
        finite += abs(a[i]) < math.inf
    return finite == a.size


@jit
def _gather(dst, src, order, start, nb):
    """dst[r] = src[order[start + r]] for r < nb, 1-d arrays."""
    for r in range(nb):
        dst[r] = src[order[start + r]]


@jit
def _gather_rows(dst, src, order, start, nb):
    """dst[r, :] = src[order[start + r], :] for r < nb, element by element.

    An explicit loop: numba's row assignment ``dst[r] = src[k]`` goes through
    its generic broadcasting setitem, 3-4x slower on the small network's rows.
    """
    n_cols = src.shape[1]
    for r in range(nb):
        k = order[start + r]
        for c in range(n_cols):
            dst[r, c] = src[k, c]


@jit
def _update(theta, grad, state1, state2, n_weights, opt_kind, hyper, step):
    lr = hyper[H_LR]
    wd = hyper[H_WEIGHT_DECAY]
    if opt_kind == OPT_SGD:
        nesterov = hyper[H_NESTEROV] != 0.0
        momentum = hyper[H_MOMENTUM]
        # Weight decay applies to the weights, not to the biases stored after them.
        O.sgd_update_serial(theta[:n_weights], grad[:n_weights], state1[:n_weights], lr, momentum, nesterov, wd)
        O.sgd_update_serial(theta[n_weights:], grad[n_weights:], state1[n_weights:], lr, momentum, nesterov, 0.0)
    else:
        b1 = hyper[H_BETA1]
        b2 = hyper[H_BETA2]
        eps = hyper[H_EPS]
        decoupled = hyper[H_DECOUPLED] != 0.0
        O.adam_update_serial(theta[:n_weights], grad[:n_weights], state1[:n_weights], state2[:n_weights],
                             lr, b1, b2, eps, step, wd, decoupled)
        O.adam_update_serial(theta[n_weights:], grad[n_weights:], state1[n_weights:], state2[n_weights:],
                             lr, b1, b2, eps, step, 0.0, decoupled)


@jit
def train_batches(X, y_int, y_float, sw, order, batch_size, first, last,
                  kinds, codes, alphas, rates, params_of, layout, params,
                  acts, dacts, scratch, masks, probs,
                  yb_int, yb_float, swb, loss_buf,
                  theta, grad, state1, state2, n_weights, opt_kind, hyper, counters,
                  loss_kind, seed, stats):
    """Train on batches first..last-1 of the permutation ``order``.

    counters[0] is the optimizer step count (incremented per update, Adam's t).
    Returns (status, batch): status OK, or NONFINITE_LOSS / NONFINITE_GRADIENT
    with the batch at which training stopped, before that batch's update.
    """
    n = order.size
    n_ops = kinds.size
    for batch in range(first, last):
        start = batch * batch_size
        nb = min(batch_size, n - start)
        _gather_rows(_rows(acts, layout, batch_size, 0, nb), X, order, start, nb)
        if y_int.size:
            _gather(yb_int, y_int, order, start, nb)
        else:
            _gather_rows(yb_float, y_float, order, start, nb)
        if sw.size:
            _gather(swb, sw, order, start, nb)
        w = swb[:nb] if sw.size else swb[:0]
        yi = yb_int[:nb] if y_int.size else yb_int[:0]
        yf = yb_float[:nb]

        step_seed = seed + counters[0] * (n_ops + 1)
        forward(acts, masks, batch_size, theta, params, kinds, codes, alphas, rates, params_of, layout, nb,
                True, step_seed)
        out = _rows(acts, layout, batch_size, n_ops, nb)
        pb = probs[:nb]
        loss_forward(loss_buf, pb, out, yi, yf, w, loss_kind)
        if not np.isfinite(loss_buf[0]):
            return NONFINITE_LOSS, batch
        _loss_backward(_rows(dacts, layout, batch_size, n_ops, nb), pb, out, yi, yf, w, loss_kind)
        _backward(dacts, scratch, acts, masks, batch_size, theta, grad, params, kinds, codes, alphas, rates,
                  params_of, layout, nb)
        if not _all_finite(grad):
            return NONFINITE_GRADIENT, batch
        counters[0] += 1
        _update(theta, grad, state1, state2, n_weights, opt_kind, hyper, counters[0])
        accumulate_stats(stats, loss_buf[0], out, yi, yf, w, loss_kind)
    return OK, last


@jit
def predict_batches(out_all, X, batch_size, kinds, codes, alphas, rates, params_of, layout, params,
                    theta, acts, masks):
    """Forward pass (inference mode) over X in batches into out_all (n, O)."""
    n = X.shape[0]
    n_ops = kinds.size
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _rows(acts, layout, batch_size, 0, nb)[:] = X[start:start + nb]
        forward(acts, masks, batch_size, theta, params, kinds, codes, alphas, rates, params_of, layout, nb,
                False, 0)
        out_all[start:start + nb] = _rows(acts, layout, batch_size, n_ops, nb)


@jit
def evaluate_batches(X, y_int, y_float, sw, batch_size, kinds, codes, alphas, rates, params_of, layout,
                     params, theta, acts, masks, probs, loss_buf, loss_kind, stats):
    """Accumulate loss and metrics of the model (inference mode) over X into stats."""
    n = X.shape[0]
    n_ops = kinds.size
    for start in range(0, n, batch_size):
        nb = min(batch_size, n - start)
        _rows(acts, layout, batch_size, 0, nb)[:] = X[start:start + nb]
        forward(acts, masks, batch_size, theta, params, kinds, codes, alphas, rates, params_of, layout, nb,
                False, 0)
        out = _rows(acts, layout, batch_size, n_ops, nb)
        w = sw[start:start + nb] if sw.size else sw[:0]
        yi = y_int[start:start + nb] if y_int.size else y_int[:0]
        yf = y_float[start:start + nb]
        loss_forward(loss_buf, probs[:nb], out, yi, yf, w, loss_kind)
        accumulate_stats(stats, loss_buf[0], out, yi, yf, w, loss_kind)
