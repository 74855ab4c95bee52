"""The CPU backend's compiled loop: whole runs of mini-batches in one numba call.

It takes the grouped values of ``fastbp.lowering``: the lowered ``Network``
(op arrays, activation layout, parameter table), a ``Workspace`` of flat
buffers with room for ``cap`` rows of every activation, ``Targets`` for the
data and for one batch, and the ``Optimizer`` (flat parameters, gradient,
state, hyperparameters, step counter). Views into the flat buffers are made
inside the compiled code, so no numba typed list is needed: building one
compiles numba's list methods afresh in every process (1.3 s before the first
epoch, measured), and filling it costs 0.1 ms per element on every call.

No reference is counted in the loop (the counting was a tenth of the small network's step).
The levels here are compiled without numba's runtime (``jit(refcounts=False)``): they only cut
views of arrays their caller holds, and allocate nothing. The entry points (``train_batches``,
``share_gradient``, ``apply_update``, ``predict_batches``, ``evaluate_batches``) take their
arrays as ``_views.borrowed``, so that the kernels they call, which are compiled with the
runtime (they are public, and some allocate when called on their own), get arrays whose
increfs and decrefs are a test of a null pointer. Views are cut with ``_views.matrix``.

Constants handed to a compiled callee are typed values (``np.bool_(True)``,
``np.int64(0)``): numba types a bare ``True`` or ``0`` as a literal and compiles
a copy of the callee, and of everything it links, for that constant. ``forward``
was compiled twice that way (training and inference), ``batch_gradient`` twice
under MPI.

``train_batches`` runs forward, loss, backward and the optimizer update for a
range of batches with no Python in between and no allocation: the last,
smaller batch uses prefix views of the same buffers.

The loop's levels (``train_batches``, ``batch_gradient``, ``forward``, ``backward``,
...) call the kernels through their addresses, not directly: numba links every function a
compiled function calls directly into its own module and optimizes and emits the whole again,
so each level would compile every kernel under it once more. ``with_kernels`` puts the kernel
tables of ``TABLES`` into the ``Network``: ``kernels`` (dense layers, loss, optimizer, metrics),
the activation and dropout ops' tables always (zero addresses where the network has no such op:
one compiled loop serves both), and a norm kind's table where the network has that kind (None
otherwise: their branches are the loop's largest). A table holds int64 addresses
(``kernel_table``: each kernel compiled, or loaded from the cache, for the signature the loop
calls it with, once per process), so numba's dispatcher types the loop's arguments as quickly
as any; ``_kcall(table, "name", (args))`` calls one with numba's calling convention, and refuses
at compile time any argument types other than the signature the table was made for. The calls
cost what a direct call costs. A table holds the kernels of the model's own loss and optimizer
(a dict entry of ``TABLES``, one kernel per code), so a new loss or optimizer compiles its own
kernels and nothing else (docs/performance-log.md, 2026-11-30, d67e485).

The kernels and the levels are therefore separate compile units, and on a cold cache they
compile in parallel: ``with_kernels(..., ahead=...)`` has worker processes compile the heaviest
kernels into the on-disk cache (``_warm``) while this process compiles the loop against tables of
placeholder addresses (a table's type does not depend on its values) and the other kernels, then
loads the workers' kernels from the cache (docs/performance-log.md, 2026-11-30, 5473674).
``fastbp compile`` (``fastbp/_precompile.py``) compiles the same units ahead.

Divergence is caught before it can damage the model: a non-finite loss or
gradient stops the run *before* the update of that step, and the step is
reported back. The CUDA backend (``cuda.py``) applies the same rules.

These loops call only kernels that run on the calling thread (the ``*_serial``
twins, the ``*_code_*`` dispatchers): the products are BLAS's, on BLAS's
threads, and nothing here starts numba's thread pool (see ``kernels/_jit.py``).
"""
import functools
import math
from collections import namedtuple

import numba
import numpy as np
from numba import types

from ..kernels import registry as R
from ..kernels._jit import jit
from ..kernels.cpu import activations as A
from ..kernels.cpu import dense as D
from ..kernels.cpu import dropout as DR
from ..kernels.cpu import losses as L
from ..kernels.cpu import norm as NM
from ..kernels.cpu import optim as O
from ..kernels.cpu._finite import all_finite
from . import _warm
from ._views import borrowed, kernel_call_by_code_intrinsic, kernel_call_intrinsic, matrix, prefetch


@jit(inline="always")
def _rows(buf, layout, cap, i, nb):
    """The first nb rows of activation i in a buffer with room for cap rows of each."""
    return matrix(buf, cap * layout[i], nb, layout[i + 1] - layout[i])


@jit(inline="always")
def _weight(flat, params, p):
    return matrix(flat, params[p, 0], params[p, 2], params[p, 3])


@jit(inline="always")
def _bias(flat, params, p):
    at = params[p, 1]
    return flat[at:at + params[p, 3]]


@jit(inline="always")
def _part(flat, at, size):
    """flat[at:at + size], or an empty view where at is -1 (a norm op without gamma and beta)."""
    return flat[at:at + size] if at >= 0 else flat[:0]


@jit(refcounts=False)
def _norm_forward(net, ws, theta, i, x, out, training, batchnorm_ops, layernorm_ops):
    """Op i, a BatchNorm or LayerNorm and its fused activation, on x into out; statistics to the
    op's row of ws.saved. The kernel tables as ``forward``'s: a kind's branch is dropped where its
    table is None."""
    n_rows, width = x.shape
    gamma = _part(theta, net.norms[i, R.NORM_GAMMA], width)
    beta = _part(theta, net.norms[i, R.NORM_BETA], width)
    saved = ws.saved[net.norms[i, R.NORM_SAVED]]
    eps, code, alpha = net.norm_consts[i, 0], net.codes[i], net.alphas[i]
    if net.kinds[i] == R.OP_LAYERNORM:
        if layernorm_ops is not None:
            _kcall(layernorm_ops, "forward", (out, saved[:n_rows], saved[ws.cap:ws.cap + n_rows], x, gamma, beta, eps,
                                              code, alpha))
    elif batchnorm_ops is None:
        pass
    elif training:
        _kcall(batchnorm_ops, "forward", (out, saved[:width], saved[width:2 * width], saved[2 * width:3 * width], x,
                                          gamma, beta, eps, code, alpha))
    else:
        at = net.norms[i, R.NORM_RUNNING]
        _kcall(batchnorm_ops, "inference", (out, x, ws.running[at:at + width], ws.running[at + width:at + 2 * width],
                                            gamma, beta, eps, code, alpha))


@jit(refcounts=False)
def _norm_backward(net, ws, theta, grad, i, nb, batchnorm_ops, layernorm_ops):
    """Backward of norm op i and its fused activation into grad (dgamma, dbeta; scratch without affine)
    and its input gradient; the tables as ``_norm_forward``'s."""
    layout, cap = net.layout, ws.cap
    dout = _rows(ws.dacts, layout, cap, i + 1, nb)
    out = _rows(ws.acts, layout, cap, i + 1, nb)
    x = _rows(ws.acts, layout, cap, i, nb)
    width = x.shape[1]
    # The first op needs no input gradient: a zero-size dx skips it.
    dx = _rows(ws.dacts, layout, cap, i, nb if i > 0 else 0)
    g, b = net.norms[i, R.NORM_GAMMA], net.norms[i, R.NORM_BETA]
    gamma = _part(theta, g, width)
    beta = _part(theta, b, width)
    dgamma = grad[g:g + width] if g >= 0 else ws.normgrad[:width]
    dbeta = grad[b:b + width] if b >= 0 else ws.normgrad[width:2 * width]
    saved = ws.saved[net.norms[i, R.NORM_SAVED]]
    code, alpha = net.codes[i], net.alphas[i]
    if net.kinds[i] == R.OP_LAYERNORM:
        if layernorm_ops is not None:
            _kcall(layernorm_ops, "backward", (dx, dgamma, dbeta, dout, out, x, saved[:nb], saved[cap:cap + nb], gamma,
                                               beta, code, alpha))
    elif batchnorm_ops is not None:
        _kcall(batchnorm_ops, "backward", (dx, dgamma, dbeta, dout, out, x, saved[:width], saved[2 * width:3 * width],
                                           gamma, beta, code, alpha))


@jit(refcounts=False)
def update_running(net, ws, nb, batchnorm_ops):
    """Move every BatchNorm op's running statistics toward the batch's, after a step that happened.

    batchnorm_ops is ``net.batchnorm_ops``: None, no BatchNorm op, and nothing to compile
    (``forward``); else the BatchNorm kernels' table.
    """
    for i in range(net.kinds.size):
        if batchnorm_ops is not None and net.kinds[i] == R.OP_BATCHNORM:
            width = net.layout[i + 1] - net.layout[i]
            at = net.norms[i, R.NORM_RUNNING]
            saved = ws.saved[net.norms[i, R.NORM_SAVED]]
            _kcall(batchnorm_ops, "update_running", (ws.running[at:at + width], ws.running[at + width:at + 2 * width],
                                                     saved[:width], saved[width:2 * width], net.norm_consts[i, 1], nb))


@jit(refcounts=False)
def forward(net, ws, theta, nb, training, seed, row0, activation_ops, batchnorm_ops, layernorm_ops, dropout_ops):
    """Run the network on the first nb rows of activation 0; activation i + 1 is op i's output.

    row0 is the first row's place in the whole batch: dropout draws row r's mask
    from the counters of row row0 + r, so a rank's share of a batch (MPI) gets
    the mask one process gives those rows.

    activation_ops, batchnorm_ops, layernorm_ops and dropout_ops are ``net``'s kernel tables of those
    op kinds (``with_kernels``), passed as arguments of their own: where one is
    None, numba drops the branch of that kind of op before typing.
    """
    layout, cap = net.layout, ws.cap
    for i in range(net.kinds.size):
        x = _rows(ws.acts, layout, cap, i, nb)
        out = _rows(ws.acts, layout, cap, i + 1, nb)
        kind = net.kinds[i]
        if kind == R.OP_DENSE:
            p = net.params_of[i]
            _kcall(net.kernels, "dense_forward", (out, x, _weight(theta, net.params, p), _bias(theta, net.params, p),
                                                  net.codes[i], net.alphas[i]))
        elif kind == R.OP_ACTIVATION:
            if activation_ops is not None:
                _kcall_code(activation_ops, "forward", net.codes[i], (out, x, net.codes[i], net.alphas[i]))
        elif kind == R.OP_BATCHNORM:
            if batchnorm_ops is not None:
                _norm_forward(net, ws, theta, i, x, out, training, batchnorm_ops, layernorm_ops)
        elif kind == R.OP_LAYERNORM:
            if layernorm_ops is not None:
                _norm_forward(net, ws, theta, i, x, out, training, batchnorm_ops, layernorm_ops)
        elif dropout_ops is None:
            pass
        elif training:
            # A distinct stream per step and per layer.
            _kcall(dropout_ops, "forward", (out, _rows(ws.masks, layout, cap, i + 1, nb), x, net.rates[i], seed + i,
                                            row0 * x.shape[1]))
        else:
            _kcall(dropout_ops, "inference", (out, x))


@jit(refcounts=False)
def backward(net, ws, theta, grad, nb, activation_ops, batchnorm_ops, layernorm_ops, dropout_ops):
    """Backpropagate the gradient of the last activation through every op into grad.

    activation_ops, batchnorm_ops, layernorm_ops, dropout_ops: as ``forward``'s.

    A dense layer's dz = dout * f'(z) goes to ``ws.scratch`` (at least nb times
    the widest layer), not over dout: LLVM cannot vectorize the pass when its
    input and output are the same memory, and the mnist configuration's step
    was 20% slower for it.
    """
    layout, cap = net.layout, ws.cap
    for i in range(net.kinds.size - 1, -1, -1):
        dout = _rows(ws.dacts, layout, cap, i + 1, nb)
        out = _rows(ws.acts, layout, cap, i + 1, nb)
        x = _rows(ws.acts, layout, cap, i, nb)
        kind = net.kinds[i]
        if kind == R.OP_DENSE:
            p = net.params_of[i]
            # The first layer needs no input gradient: a zero-size dx skips it.
            dx = _rows(ws.dacts, layout, cap, i, nb if i > 0 else 0)
            dz = matrix(ws.scratch, 0, nb, dout.shape[1])
            _kcall(net.kernels, "dense_backward", (dx, _weight(grad, net.params, p), _bias(grad, net.params, p), dz,
                                                   dout, out, x, _weight(theta, net.params, p), net.codes[i],
                                                   net.alphas[i]))
        # Before the i == 0 exit: a norm op first in the network still has dgamma and dbeta.
        elif kind == R.OP_BATCHNORM:
            if batchnorm_ops is not None:
                _norm_backward(net, ws, theta, grad, i, nb, batchnorm_ops, layernorm_ops)
        elif kind == R.OP_LAYERNORM:
            if layernorm_ops is not None:
                _norm_backward(net, ws, theta, grad, i, nb, batchnorm_ops, layernorm_ops)
        elif i == 0:
            break
        elif kind == R.OP_ACTIVATION:
            if activation_ops is not None:
                _kcall_code(activation_ops, "backward", net.codes[i], (_rows(ws.dacts, layout, cap, i, nb), dout, out,
                                                                       x, net.codes[i], net.alphas[i]))
        elif dropout_ops is not None:
            masks = _rows(ws.masks, layout, cap, i + 1, nb)
            _kcall(dropout_ops, "backward", (_rows(ws.dacts, layout, cap, i, nb), dout, masks))


@jit(inline="always")
def _add_loss(stats, loss, weight, nb):
    """Add the batch's loss (a weighted mean) times its weight total, the total and the row count;
    returns the total (nb unweighted)."""
    total = 0.0
    if weight.size > 0:
        for n in range(nb):
            total += weight[n]
    else:
        total = float(nb)
    stats[R.S_LOSS] += loss * total
    stats[R.S_WEIGHT] += total
    stats[R.S_COUNT] += nb
    return total


@jit(refcounts=False)
def softmax_stats(stats, loss, out, labels, target, weight, loss_code):
    """Add one batch's loss and accuracy (softmax cross-entropy) to stats, each sample counted with
    its weight s_n.

    The loss (a weighted mean already) enters times the batch's weight total; correct predictions
    as the sum of s_n over them, over S_WEIGHT = sum s_n: a weighted mean, as the loss is.
    Unweighted, s_n = 1 and these are plain counts.
    """
    nb, n_out = out.shape
    _add_loss(stats, loss, weight, nb)
    weighted = weight.size > 0
    # In locals, not through stats, and against the running maximum rather than out[n, best]:
    # LLVM keeps both in registers (the pass took 5% of the small network's step).
    correct = 0.0
    for n in range(nb):
        best, top = 0, out[n, 0]
        for j in range(1, n_out):
            if out[n, j] > top:
                best, top = j, out[n, j]
        if best == labels[n]:
            correct += weight[n] if weighted else 1.0
    stats[R.S_CORRECT] += correct


@jit(refcounts=False)
def elementwise_stats(stats, loss, out, labels, target, weight, loss_code):
    """Add one batch's loss and metrics (an elementwise loss) to stats, each sample counted with its
    weight s_n: as ``softmax_stats``, with binary accuracy (BCE) or squared and absolute errors as
    sums of s_n times the sample's terms over S_ELEMENTS = O sum s_n."""
    nb, n_out = out.shape
    total = _add_loss(stats, loss, weight, nb)
    weighted = weight.size > 0
    stats[R.S_ELEMENTS] += total * n_out
    correct = squared = absolute = 0.0
    for n in range(nb):
        s = weight[n] if weighted else 1.0
        for j in range(n_out):
            if loss_code == R.LOSS_BCE:
                if (out[n, j] > 0.0) == (target[n, j] > 0.5):
                    correct += s
            elif loss_code == R.LOSS_POISSON:
                # Errors of the predicted mean exp(eta), not of its log.
                d = math.exp(out[n, j]) - target[n, j]
                squared += s * (d * d)
                absolute += s * abs(d)
            else:
                d = out[n, j] - target[n, j]
                squared += s * (d * d)
                absolute += s * abs(d)
    stats[R.S_CORRECT] += correct
    stats[R.S_SQUARED] += squared
    stats[R.S_ABSOLUTE] += absolute


@jit(inline="always")
def _gather(dst, src, order, start, nb):
    """dst[r] = src[order[start + r]] for r < nb, 1-d arrays."""
    for r in range(nb):
        dst[r] = src[order[start + r]]


@jit(inline="always")
def _copy_rows(dst, src, start, nb):
    """dst[r, :] = src[start + r, :] for r < nb, element by element.

    Not ``dst[:] = src[start:start + nb]``: an array assigned to a slice makes numba
    compile its shape-mismatch error, an f-string of both shapes, with string
    formatting's whole machinery (4-6 s of every cold start).
    """
    n_cols = src.shape[1]
    for r in range(nb):
        for c in range(n_cols):
            dst[r, c] = src[start + r, c]


@jit(inline="always")
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


@jit(inline="always")
def _prefix(tg, nb):
    """The first nb rows of a batch's targets; an empty array stays empty."""
    return (tg.labels[:nb] if tg.labels.size else tg.labels, tg.target[:nb],
            tg.weight[:nb] if tg.weight.size else tg.weight)


@jit(inline="always")
def _gather_batch(ws, net, X, data, batch, order, start, nb):
    """Rows order[start:start + nb] of X into activation 0, of the targets into batch."""
    _gather_rows(_rows(ws.acts, net.layout, ws.cap, 0, nb), X, order, start, nb)
    if data.labels.size:
        _gather(batch.labels, data.labels, order, start, nb)
    else:
        _gather_rows(batch.target, data.target, order, start, nb)
    if data.weight.size:
        _gather(batch.weight, data.weight, order, start, nb)


# The most bytes of rows (features and float targets) of one batch that the loop prefetches: half
# of a 32 KiB L1 data cache. Larger batches are not prefetched (``_prefetch_batch``).
PREFETCH_BYTES = 16 * 1024


@jit(inline="always")
def _prefetch_rows(src, order, start, nb):
    """Prefetch every cache line of rows order[start:start + nb] of the 2-d src."""
    row_bytes = src.shape[1] * src.itemsize
    if row_bytes == 0:
        return
    for r in range(nb):
        k = order[start + r]
        for offset in range(0, row_bytes, 64):
            prefetch(src, k, offset, 3)
        # A row that starts inside a cache line ends in the line after its last 64-byte step.
        prefetch(src, k, row_bytes - 1, 3)


@jit(inline="always")
def _prefetch_batch(X, data, order, start, nb):
    """Prefetch the rows of X and of the targets that ``_gather_batch`` will copy for the batch
    order[start:start + nb]. ``train_batches`` asks for the next batch's rows before it trains on
    the current one, so that they arrive from memory meanwhile: the gather's cache misses were 18% of
    the 16-16-2 network's step (batch 16) in a perf profile, the loop's largest single cost."""
    if nb * (X.shape[1] + data.target.shape[1]) * X.itemsize <= PREFETCH_BYTES:
        _prefetch_rows(X, order, start, nb)
        _prefetch_rows(data.target, order, start, nb)
    for r in range(nb):
        k = order[start + r]
        if data.labels.size:
            prefetch(data.labels, k, 0, 3)
        if data.weight.size:
            prefetch(data.weight, k, 0, 3)


@jit(inline="always")
def batch_gradient(net, ws, batch, opt, nb, loss, seed, row0):
    """Forward, loss and backward on the nb rows in activation 0 and ``batch``: the gradient into opt.grad.

    Returns OK, or NONFINITE_LOSS (then opt.grad is not written). The dropout
    stream is seed + step * (n_ops + 1), step = opt.counters[0]; row0 is the
    rows' place in the batch (``forward``).

    Inlined into numba's IR of its callers (``train_batches``, ``share_gradient``), as are the
    gathers and ``all_finite``: compiled as functions of their own, each cost a compile of its
    own and was emitted once more in every caller (a cold ``fastbp train`` took 1-2 s longer).
    """
    n_ops = net.kinds.size
    labels, target, weight = _prefix(batch, nb)
    forward(net, ws, opt.theta, nb, np.bool_(True), seed + opt.counters[0] * (n_ops + 1), row0, net.activation_ops,
            net.batchnorm_ops, net.layernorm_ops, net.dropout_ops)
    out = _rows(ws.acts, net.layout, ws.cap, n_ops, nb)
    probs = ws.probs[:nb]
    _kcall(net.kernels, "loss_forward", (ws.loss, probs, out, labels, target, weight, loss.code, loss.param))
    if not np.isfinite(ws.loss[0]):
        return R.NONFINITE_LOSS
    _kcall(net.kernels, "loss_backward", (_rows(ws.dacts, net.layout, ws.cap, n_ops, nb), probs, out, labels, target,
                                          weight, loss.code, loss.param))
    backward(net, ws, opt.theta, opt.grad, nb, net.activation_ops, net.batchnorm_ops, net.layernorm_ops,
             net.dropout_ops)
    return R.OK


@jit(refcounts=False)
def apply_update(net, ws, batch, opt, nb, loss, stats):
    """The optimizer step with opt.grad, unless it is not finite, and the nb rows' loss and metrics.

    Returns OK, or NONFINITE_GRADIENT with theta and state untouched. The entry point of
    the distributed step; ``train_batches`` inlines ``_apply_update``.
    """
    net, ws, batch, opt, stats = borrowed((net, ws, batch, opt, stats))
    return _apply_update(net, ws, batch, opt, nb, loss, stats)


@jit(inline="always")
def _apply_update(net, ws, batch, opt, nb, loss, stats):
    # Inlined into its callers' numba IR: as a compiled function of its own under
    # train_batches, it and the update kernels were optimized and emitted once more (2 s of
    # a cold start).
    if not all_finite(opt.grad):
        return R.NONFINITE_GRADIENT
    opt.counters[0] += 1
    _kcall(net.kernels, "update", (opt.theta, opt.grad, opt.state1, opt.state2, net.n_weights, opt.code, opt.hyper,
                                   opt.counters[0]))
    # Running statistics move only with a step that happened (fit refuses batches of one row).
    update_running(net, ws, nb, net.batchnorm_ops)
    labels, target, weight = _prefix(batch, nb)
    out = _rows(ws.acts, net.layout, ws.cap, net.kinds.size, nb)
    _kcall(net.kernels, "stats", (stats, ws.loss[0], out, labels, target, weight, loss.code))
    return R.OK


@jit(refcounts=False)
def train_batches(X, data, order, first, last, net, ws, batch, opt, loss, seed, stats):
    """Train on batches first..last-1 (of ws.cap rows) of the permutation ``order``.

    ``loss`` is a ``lowering.LossSpec``: the registry's loss code and its parameter.

    opt.counters[0] is the optimizer step count (incremented per update, Adam's t).
    Returns (status, batch): status OK, or NONFINITE_LOSS / NONFINITE_GRADIENT
    with the batch at which training stopped, before that batch's update.
    """
    # Every array here is the caller's, held for the whole call: no reference counting below.
    X, data, order, net, ws, batch, opt, stats = borrowed((X, data, order, net, ws, batch, opt, stats))
    n = order.size
    for b in range(first, last):
        start = b * ws.cap
        nb = min(ws.cap, n - start)
        _gather_batch(ws, net, X, data, batch, order, start, nb)
        if b + 1 < last:
            _prefetch_batch(X, data, order, start + ws.cap, min(ws.cap, n - start - ws.cap))
        status = batch_gradient(net, ws, batch, opt, nb, loss, seed, np.int64(0))
        if status == R.OK:
            status = _apply_update(net, ws, batch, opt, nb, loss, stats)
        if status != R.OK:
            return status, b
    return R.OK, last


@jit(refcounts=False)
def _weight_total(weight, order, start, nb):
    """sum of weight[order[start:start + nb]], or nb when there are no sample weights."""
    if weight.size == 0:
        return float(nb)
    total = 0.0
    for r in range(nb):
        total += weight[order[start + r]]
    return total


@jit(refcounts=False)
def share_gradient(X, data, order, start, nb, share, net, ws, batch, opt, loss, seed):
    """One rank's part of a data-parallel step: the gradient of rows share[0]..share[1]-1 of the batch.

    The global batch is order[start:start + nb]. The loss backward takes the
    (weighted) mean over the rows it sees, so the share's gradient is scaled by
    (its weight total) / (the batch's weight total): summed over the ranks'
    shares it is the gradient of the whole batch, sample weights included. A
    rank with no rows (or no weight) contributes a zero gradient and a zero loss.
    Returns OK or NONFINITE_LOSS, like ``batch_gradient``.
    """
    X, data, order, share, net, ws, batch, opt = borrowed((X, data, order, share, net, ws, batch, opt))
    lo, hi = share[0], share[1]
    local = _weight_total(data.weight, order, start + lo, hi - lo)
    total = _weight_total(data.weight, order, start, nb)
    _gather_batch(ws, net, X, data, batch, order, start + lo, hi - lo)
    if local == 0.0:
        opt.grad[:] = 0.0
        ws.loss[0] = 0.0
        return R.OK
    status = batch_gradient(net, ws, batch, opt, hi - lo, loss, seed, lo)
    scale = local / total
    for k in range(opt.grad.size):
        opt.grad[k] *= scale
    return status


@jit(inline="always")
def _infer_rows(X, net, ws, theta, start, nb):
    """The network's outputs (inference mode) on rows start..start+nb of X, as a view of ws.

    Inlined into numba's IR of its two callers: compiled on its own, it and the whole
    forward pass under it were optimized and emitted once more (2.7 s of a cold start).
    """
    _copy_rows(_rows(ws.acts, net.layout, ws.cap, 0, nb), X, start, nb)
    forward(net, ws, theta, nb, np.bool_(False), np.int64(0), np.int64(0), net.activation_ops, net.batchnorm_ops,
            net.layernorm_ops, net.dropout_ops)
    return _rows(ws.acts, net.layout, ws.cap, net.kinds.size, nb)


@jit(refcounts=False)
def predict_batches(out_all, X, net, ws, theta):
    """Forward pass (inference mode) over X in batches of ws.cap rows into out_all (n, O)."""
    out_all, X, net, ws, theta = borrowed((out_all, X, net, ws, theta))
    n = X.shape[0]
    for start in range(0, n, ws.cap):
        nb = min(ws.cap, n - start)
        out = _infer_rows(X, net, ws, theta, start, nb)
        _copy_rows(out_all[start:start + nb], out, 0, nb)


@jit(refcounts=False)
def evaluate_batches(X, data, net, ws, theta, loss, stats):
    """Accumulate loss and metrics of the model (inference mode) over X into stats."""
    X, data, net, ws, theta, stats = borrowed((X, data, net, ws, theta, stats))
    n = X.shape[0]
    for start in range(0, n, ws.cap):
        nb = min(ws.cap, n - start)
        out = _infer_rows(X, net, ws, theta, start, nb)
        labels = data.labels[start:start + nb] if data.labels.size else data.labels
        weight = data.weight[start:start + nb] if data.weight.size else data.weight
        target = data.target[start:start + nb]
        _kcall(net.kernels, "loss_forward", (ws.loss, ws.probs[:nb], out, labels, target, weight, loss.code,
                                             loss.param))
        _kcall(net.kernels, "stats", (stats, ws.loss[0], out, labels, target, weight, loss.code))


STATS = {loss.code: softmax_stats if loss.code == R.LOSS_SCE else elementwise_stats for loss in R.LOSS_TABLE}


@jit(refcounts=False)
def _not_in_table(a0, a1, a2, a3, a4, a5, a6, a7):
    """The entry for a loss or update kernel of a table made without that code (the loss's and the
    update's signatures have eight arguments, the stats' seven)."""
    raise RuntimeError("fastbp: this kernel table was made without a loss or an optimizer (with_kernels), "
                       "and the loop called that kernel")


@jit(refcounts=False)
def _stats_not_in_table(a0, a1, a2, a3, a4, a5, a6):
    _not_in_table(a0, a1, a2, a3, a4, a5, a6, a6)


# The kernels the loop's levels call through their addresses: ``Network.kernels`` always, the
# tables of the other op kinds where the network has such ops (``with_kernels``). A dict holds one
# kernel per code: the table gets the model's loss's (``loss_forward``, ``loss_backward``,
# ``stats``) and its optimizer's (``update``), so that a cold start compiles those alone.
Kernels = namedtuple("Kernels", "dense_forward dense_backward loss_forward loss_backward update stats")
ActivationKernels = namedtuple("ActivationKernels", "forward backward")
DropoutKernels = namedtuple("DropoutKernels", "forward backward inference")
BatchNormKernels = namedtuple("BatchNormKernels", "forward inference backward update_running")
LayerNormKernels = namedtuple("LayerNormKernels", "forward backward")
TABLES = {
    "kernels": Kernels(D.dense_act_forward, D.dense_act_backward, L.CODE_FORWARD, L.CODE_BACKWARD, O.CODE_UPDATES,
                       STATS),
    "activation_ops": ActivationKernels(A.activation_forward_for, A.activation_backward_for),
    "dropout_ops": DropoutKernels(DR.dropout_forward_from, DR.dropout_backward_serial, DR.dropout_inference),
    "batchnorm_ops": BatchNormKernels(NM.batchnorm_act_forward, NM.batchnorm_act_inference, NM.batchnorm_act_backward,
                                      NM.batchnorm_update_running),
    "layernorm_ops": LayerNormKernels(NM.layernorm_act_forward, NM.layernorm_act_backward),
}
# Which code picks the kernel of a dict entry of ``Kernels``.
_CHOSEN_BY = Kernels(None, None, "loss", "loss", "optimizer", "loss")
# Tables of kernels compiled for one activation code each: a field holds a kernel factory
# (``activations.activation_forward_for``) and, in a table of addresses, one address per code
# (zero for the codes the network does not have), which ``_kcall_code`` picks by the op's code
# at run time. A kernel of every code took 3x as long to compile as one code's.
BY_CODE = frozenset({"activation_ops"})
N_CODES = max(R.ACTIVATIONS.values()) + 1
# The op kind whose codes a table of ``BY_CODE`` is made for.
_KIND_OF = {"activation_ops": R.OP_ACTIVATION}


@functools.lru_cache(maxsize=None)
def _signatures(dtype):
    """Each table's kernel signatures for parameters of ``dtype``, as the loop calls them."""
    dt = numba.from_dtype(np.dtype(dtype))
    m, v = types.Array(dt, 2, "C"), types.Array(dt, 1, "C")
    labels, f64s = types.Array(types.int64, 1, "C"), types.Array(types.float64, 1, "C")
    i64, f64, void = types.int64, types.float64, types.void
    norm_backward = void(m, v, v, m, m, m, v, v, v, v, i64, f64)
    return {
        "kernels": Kernels(dense_forward=void(m, m, m, v, i64, f64),
                           dense_backward=void(m, m, v, m, m, m, m, m, i64, f64),
                           loss_forward=void(v, m, m, labels, m, v, i64, f64),
                           loss_backward=void(m, m, m, labels, m, v, i64, f64),
                           update=void(v, v, v, v, i64, i64, f64s, i64),
                           stats=void(f64s, dt, m, labels, m, v, i64)),
        "activation_ops": ActivationKernels(forward=void(m, m, i64, f64), backward=void(m, m, m, m, i64, f64)),
        "dropout_ops": DropoutKernels(forward=void(m, m, m, f64, i64, i64), backward=void(m, m, m),
                                      inference=void(m, m)),
        "batchnorm_ops": BatchNormKernels(forward=void(m, v, v, v, m, v, v, f64, i64, f64),
                                          inference=void(m, m, v, v, v, v, f64, i64, f64), backward=norm_backward,
                                          update_running=void(v, v, v, v, f64, i64)),
        "layernorm_ops": LayerNormKernels(forward=void(m, v, v, m, v, v, f64, i64, f64), backward=norm_backward),
    }


def _allowed(table_class, field):
    """The signatures a table's kernel is held for: one per float dtype."""
    name = next(n for n, t in TABLES.items() if type(t) is table_class)
    return [getattr(_signatures(np.dtype(dtype))[name], field) for dtype in ("float32", "float64")]


_kcall = kernel_call_intrinsic(_allowed)
_kcall_code = kernel_call_by_code_intrinsic(_allowed)
_TABLES_BY_DTYPE = {}


def _chosen(name, codes):
    """TABLES[name]'s kernels, a dict entry resolved by its code in ``codes``; ``_not_in_table``
    where that code is None."""
    kernels = TABLES[name]
    if name != "kernels":
        return kernels
    chosen = []
    for field, kernel, by in zip(Kernels._fields, kernels, _CHOSEN_BY):
        if by is not None:
            code = codes[by]
            if code is None:
                kernel = _stats_not_in_table if field == "stats" else _not_in_table
            elif code not in kernel:
                raise ValueError(f"no {field} kernel for {by} code {code}; known: {sorted(kernel)}")
            else:
                kernel = kernel[code]
        chosen.append(kernel)
    return chosen


def _entry(name, field, dtype, loss, optimizer, code=None):
    """The kernel and signature of TABLES[name].<field> for ``dtype`` and the codes (``code``: the
    activation code of a table of ``BY_CODE``)."""
    codes = {"loss": loss, "optimizer": optimizer}
    index = type(TABLES[name])._fields.index(field)
    kernel = _chosen(name, codes)[index]
    if name in BY_CODE:
        kernel = kernel(code)
    return kernel, _signatures(np.dtype(dtype))[name][index]


def compile_entry(name, field, dtype, loss=None, optimizer=None, code=None):
    """The address of TABLES[name].<field>'s kernel, compiled or loaded from the cache if needed."""
    kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
    result = kernel.get_compile_result(sig)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def table_codes(net, name):
    """The activation codes that a table of ``BY_CODE`` needs kernels of for ``net`` (sorted);
    () for the other tables."""
    if name not in BY_CODE:
        return ()
    return tuple(sorted({int(c) for c in net.codes[net.kinds == _KIND_OF[name]]}))


def kernel_table(name, dtype, loss=None, optimizer=None, codes=()):
    """TABLES[name] as the addresses of its kernels compiled (or loaded from the cache) for
    ``dtype``'s signatures; once per process. ``loss`` and ``optimizer`` (registry codes) pick
    the loss and update kernels of ``kernels``; where one is None, its entries raise when called
    (a table for ``predict`` of a model with no loss). A table of ``BY_CODE`` holds the kernels
    of the activation ``codes``, and zero for every other code."""
    if name != "kernels":
        loss = optimizer = None
    codes = tuple(sorted(codes)) if name in BY_CODE else ()
    key = (name, np.dtype(dtype), loss, optimizer, codes)
    if key not in _TABLES_BY_DTYPE:
        table = type(TABLES[name])
        if name in BY_CODE:
            fields = [tuple(compile_entry(name, field, dtype, code=code) if code in codes else 0
                            for code in range(N_CODES)) for field in table._fields]
        else:
            fields = [compile_entry(name, field, dtype, loss, optimizer) for field in table._fields]
        _TABLES_BY_DTYPE[key] = table(*fields)
    return _TABLES_BY_DTYPE[key]


# What each compile unit costs, in seconds of one core of the 2-core development machine (AMD
# EPYC, AVX-512; each unit alone in a fresh process, benchmarks/bench_compile.py): what the first
# run's note adds up (``pending``), and how ``fastbp compile`` deals units to its workers.
COMPILE_SECONDS = {
    "kernels": Kernels(dense_forward=2.2, dense_backward=2.8, loss_forward=0.8, loss_backward=0.3, update=0.8,
                       stats=0.25),
    # One code's kernels (``BY_CODE``).
    "activation_ops": ActivationKernels(forward=0.6, backward=0.4),
    "dropout_ops": DropoutKernels(forward=0.2, backward=0.1, inference=0.1),
    "batchnorm_ops": BatchNormKernels(forward=1.9, inference=1.6, backward=2.1, update_running=0.1),
    "layernorm_ops": LayerNormKernels(forward=0.7, backward=1.6),
}
# The loop's levels (train_batches and evaluate_batches), and what norm layers add to them.
LOOP_SECONDS = 3.3
LOOP_NORM_SECONDS = 1.5
# What the first run's note calls each table's kernels.
TABLE_NAMES = {"activation_ops": "activation layers", "dropout_ops": "dropout", "batchnorm_ops": "BatchNorm",
               "layernorm_ops": "LayerNorm"}


def pending(net, dtype, loss=None, optimizer=None):
    """The kernels of ``net``'s tables not compiled yet in this process nor in the cache, as
    ((table, field), single-core seconds) pairs."""
    found = []
    for name in TABLES:
        if name != "kernels" and getattr(net, name) is None:
            continue
        for field in type(TABLES[name])._fields:
            for code in table_codes(net, name) or (None,):
                kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
                if not _warm.cached(kernel, sig):
                    found.append(((name, field), getattr(COMPILE_SECONDS[name], field)))
    return found


# The kernels worker processes compile while this one compiles the loop (``_warm``): the
# heaviest, those of the dense and the norm layers (where the network has norm layers), dealt
# round-robin to as many workers as there are cores beside this process's. On two cores the one
# worker's share and this process's (the loop's levels, ``evaluate_batches`` and the other
# kernels) then take about as long (benchmarks/bench_compile.py --first-result).
_AHEAD = (("kernels", "dense_backward"), ("kernels", "dense_forward"), ("batchnorm_ops", "backward"),
          ("layernorm_ops", "backward"), ("batchnorm_ops", "forward"), ("layernorm_ops", "forward"))


def _placeholder(name):
    """A table of TABLES[name]'s type holding zero addresses: what the loop is compiled against
    while the kernels compile elsewhere, and what it holds for an op kind the network lacks
    (never called: no op of that kind)."""
    zero = (0,) * N_CODES if name in BY_CODE else 0
    return type(TABLES[name])(*[zero] * len(TABLES[name]))


def placeholder_net(net):
    """``net`` with a table of zero addresses for each op kind the loop holds for it: the types
    ``with_kernels`` gives it, for compiling the loop while its kernels are compiled elsewhere."""
    present = [name for name in TABLES if name == "kernels" or getattr(net, name) is not None]
    return net._replace(**{name: _placeholder(name) if name in present else _absent(name) for name in TABLES})


def _compile_ahead(net, dtype, loss, optimizer, ahead):
    """On a cold cache: the kernels of ``_AHEAD`` in worker processes, meanwhile ``ahead(placeholder)``
    (the caller compiles its loop against tables of zero addresses, which have the same types) and
    the other kernels here; then wait for the workers."""
    kernel, sig = _entry("kernels", "dense_backward", dtype, loss, optimizer)
    if _warm.cached(kernel, sig):
        return
    names = [name for name in TABLES if name == "kernels" or getattr(net, name) is not None]
    entries = [(name, field, loss, optimizer, code) for name, field in _AHEAD if name in names
               for code in table_codes(net, name) or (None,)]
    n_workers = min(len(entries), _warm.usable_cpus() - 1)
    procs = _warm.start(compile_worker, [[np.dtype(dtype).name] + [":".join(map(str, entry)) for entry in
                                                                    entries[k::n_workers]] for k in range(n_workers)])
    if not procs:
        return
    try:
        ahead(placeholder_net(net))
        for name in names:
            for field in type(TABLES[name])._fields:
                if (name, field) not in _AHEAD:
                    for code in table_codes(net, name) or (None,):
                        compile_entry(name, field, dtype, loss, optimizer, code)
    except BaseException:
        # An interrupt or an error here: the workers' kernels are no longer wanted.
        _warm.stop(procs)
        raise
    _warm.wait(procs)


def compile_worker(argv):
    """A worker process of ``_compile_ahead`` (``_warm.start``): compile the entries
    ``table:field:loss:optimizer:code`` of ``argv[1:]`` for dtype ``argv[0]`` into the cache."""
    _warm.die_with_parent()
    dtype = np.dtype(argv[0])
    for entry in argv[1:]:
        name, field, *codes = entry.split(":")
        loss, optimizer, code = (None if code == "None" else int(code) for code in codes)
        compile_entry(name, field, dtype, loss, optimizer, code)


def with_kernels(net, dtype, loss=None, optimizer=None, ahead=None):
    """``net`` (``lowering.Network``) with the CPU kernel tables for ``dtype``: ``kernels`` always,
    with the kernels of the ``loss`` and ``optimizer`` codes (``kernel_table``), and for each other
    op kind the table of its kernels where the network has that kind (its flag True), else a
    table of zero addresses (``_placeholder``).

    Every table is there, whatever the network: the tables' types do not depend on their
    addresses, so the loop's levels compile once per dtype, and a network with a new loss,
    optimizer, activation or norm layer compiles only that thing's kernels, not the loop again.

    ``ahead(placeholder_net)``, where given, compiles the caller's loop: on a cold cache it runs
    while worker processes compile the heaviest kernels (``_compile_ahead``).
    """
    if ahead is not None:
        _compile_ahead(net, dtype, loss, optimizer, ahead)
    return net._replace(**{name: kernel_table(name, dtype, loss, optimizer, table_codes(net, name))
                           if name == "kernels" or getattr(net, name) is not None else _absent(name)
                           for name in TABLES})


# Op kinds whose branches the loop always holds, present in the network or not (a table of zero
# addresses where absent): their code in the loop is one kernel call, cheap to compile. The norm
# kinds' branches cut views of statistics and weigh more (1.7 s of a cold `fastbp train` on the
# 2-core development machine): the loop has them only where the network has norm layers.
ALWAYS_IN_LOOP = ("kernels", "activation_ops", "dropout_ops")


def _absent(name):
    """What an op kind's table is where the network has no op of that kind."""
    return _placeholder(name) if name in ALWAYS_IN_LOOP else None
