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
tables of ``TABLES`` into the ``Network``: ``kernels`` (dense layers, loss, optimizer, metrics)
and the tables of the activation, dropout and norm ops, every one whatever the network (zero
addresses for an op kind it lacks: one compiled loop per dtype serves every network). A table
holds int64 addresses (``kernel_table``: each kernel compiled, or loaded from the cache, for the
signature the loop calls it with, once per process), so numba's dispatcher types the loop's
arguments as quickly as any; ``_kcall(table, "name", (args))`` calls one with numba's calling
convention, and refuses at compile time any argument types other than the signature the table
was made for. The calls cost what a direct call costs. A table holds the kernels of the model's
own loss and optimizer (a dict entry of ``TABLES``, one kernel per code), so a new loss or
optimizer compiles its own kernels and nothing else (docs/performance-log.md, 2026-11-30,
d67e485). The activation and norm ops' kernels are compiled for one activation code each
(``BY_CODE``), their addresses in ``Network.code_kernels``, picked by the op's code at run time
(``_kcall_code``): a network compiles the codes it has. The norm ops' kernels
(``_norm_ops``) cut the views of their statistics themselves, so that the loop's norm branches
are one call each.

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
from ..kernels.cpu import optim as O
from ..kernels.cpu._finite import all_finite
from . import _norm_ops, _warm
from ._views import (borrowed, dense_bias, dense_weight, kernel_call_by_code_intrinsic, kernel_call_intrinsic, matrix,
                     prefetch, rows)


@jit(refcounts=False)
def update_running(net, ws, nb):
    """Move every BatchNorm op's running statistics toward the batch's, after a step that happened
    (``_norm_ops.batchnorm_update_running``)."""
    for i in range(net.kinds.size):
        if net.kinds[i] == R.OP_BATCHNORM:
            _kcall(net.batchnorm_ops, "update_running",
                   (ws.running, ws.saved, net.norms, net.norm_consts, net.layout, i, nb))


@jit(refcounts=False)
def forward(net, ws, theta, nb, training, seed, row0):
    """Run the network on the first nb rows of activation 0; activation i + 1 is op i's output.

    row0 is the first row's place in the whole batch: dropout draws row r's mask
    from the counters of row row0 + r, so a rank's share of a batch (MPI) gets
    the mask one process gives those rows.
    """
    layout, cap = net.layout, ws.cap
    for i in range(net.kinds.size):
        x = rows(ws.acts, layout, cap, i, nb)
        out = rows(ws.acts, layout, cap, i + 1, nb)
        kind = net.kinds[i]
        if kind == R.OP_DENSE:
            p = net.params_of[i]
            _kcall(net.kernels, "dense_forward", (out, x, dense_weight(theta, net.params, p),
                                                  dense_bias(theta, net.params, p), net.codes[i], net.alphas[i]))
        elif kind == R.OP_ACTIVATION:
            _kcall_code(net.code_kernels, net.activation_ops, "forward", net.codes[i],
                        (out, x, net.codes[i], net.alphas[i]))
        elif kind == R.OP_BATCHNORM or kind == R.OP_LAYERNORM:
            # One call site for both kinds (their tables are of one type): every call site is
            # compiled into each of the loop's levels.
            norm_ops = net.batchnorm_ops if kind == R.OP_BATCHNORM else net.layernorm_ops
            _kcall_code(net.code_kernels, norm_ops, "forward", net.codes[i],
                        (out, x, ws.saved, ws.running, theta, net.norms, net.norm_consts, i, cap, net.alphas[i],
                         training))
        elif training:
            # A distinct stream per step and per layer.
            _kcall(net.dropout_ops, "forward",
                   (out, rows(ws.masks, layout, cap, i + 1, nb), x, net.rates[i], seed + i, row0 * x.shape[1]))
        else:
            _kcall(net.dropout_ops, "inference", (out, x))


@jit(refcounts=False)
def backward(net, ws, theta, grad, nb):
    """Backpropagate the gradient of the last activation through every op into grad.

    A dense layer's dz = dout * f'(z) goes to ``ws.scratch`` (at least nb times
    the widest layer), not over dout: LLVM cannot vectorize the pass when its
    input and output are the same memory, and the mnist configuration's step
    was 20% slower for it.
    """
    layout, cap = net.layout, ws.cap
    for i in range(net.kinds.size - 1, -1, -1):
        dout = rows(ws.dacts, layout, cap, i + 1, nb)
        out = rows(ws.acts, layout, cap, i + 1, nb)
        x = rows(ws.acts, layout, cap, i, nb)
        kind = net.kinds[i]
        if kind == R.OP_DENSE:
            p = net.params_of[i]
            # The first layer needs no input gradient: a zero-size dx skips it.
            dx = rows(ws.dacts, layout, cap, i, nb if i > 0 else 0)
            dz = matrix(ws.scratch, 0, nb, dout.shape[1])
            _kcall(net.kernels, "dense_backward", (dx, dense_weight(grad, net.params, p),
                                                   dense_bias(grad, net.params, p), dz, dout, out, x,
                                                   dense_weight(theta, net.params, p), net.codes[i], net.alphas[i]))
        # Before the i == 0 exit: a norm op first in the network still has dgamma and dbeta.
        elif kind == R.OP_BATCHNORM or kind == R.OP_LAYERNORM:
            norm_ops = net.batchnorm_ops if kind == R.OP_BATCHNORM else net.layernorm_ops
            _kcall_code(net.code_kernels, norm_ops, "backward", net.codes[i],
                        (ws.acts, ws.dacts, ws.saved, theta, grad, ws.normgrad, net.norms, layout, i, nb, cap,
                         net.alphas[i]))
        elif i == 0:
            break
        elif kind == R.OP_ACTIVATION:
            _kcall_code(net.code_kernels, net.activation_ops, "backward", net.codes[i],
                        (rows(ws.dacts, layout, cap, i, nb), dout, out, x, net.codes[i], net.alphas[i]))
        else:
            masks = rows(ws.masks, layout, cap, i + 1, nb)
            _kcall(net.dropout_ops, "backward", (rows(ws.dacts, layout, cap, i, nb), dout, masks))


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
    _gather_rows(rows(ws.acts, net.layout, ws.cap, 0, nb), X, order, start, nb)
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
    forward(net, ws, opt.theta, nb, np.bool_(True), seed + opt.counters[0] * (n_ops + 1), row0)
    out = rows(ws.acts, net.layout, ws.cap, n_ops, nb)
    probs = ws.probs[:nb]
    _kcall(net.kernels, "loss_forward", (ws.loss, probs, out, labels, target, weight, loss.code, loss.param))
    if not np.isfinite(ws.loss[0]):
        return R.NONFINITE_LOSS
    _kcall(net.kernels, "loss_backward", (rows(ws.dacts, net.layout, ws.cap, n_ops, nb), probs, out, labels, target,
                                          weight, loss.code, loss.param))
    backward(net, ws, opt.theta, opt.grad, nb)
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
    update_running(net, ws, nb)
    labels, target, weight = _prefix(batch, nb)
    out = rows(ws.acts, net.layout, ws.cap, net.kinds.size, nb)
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
    _copy_rows(rows(ws.acts, net.layout, ws.cap, 0, nb), X, start, nb)
    forward(net, ws, theta, nb, np.bool_(False), np.int64(0), np.int64(0))
    return rows(ws.acts, net.layout, ws.cap, net.kinds.size, nb)


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
# BatchNorm's and LayerNorm's tables are of one type, so that the loop calls either at one site;
# LayerNorm has no running statistics (None: no kernel, a zero address).
NormKernels = namedtuple("NormKernels", "forward backward update_running")
TABLES = {
    "kernels": Kernels(D.dense_act_forward, D.dense_act_backward, L.CODE_FORWARD, L.CODE_BACKWARD, O.CODE_UPDATES,
                       STATS),
    "activation_ops": ActivationKernels(A.activation_forward_for, A.activation_backward_for),
    "dropout_ops": DropoutKernels(DR.dropout_forward_from, DR.dropout_backward_serial, DR.dropout_inference),
    "batchnorm_ops": NormKernels(_norm_ops.batchnorm_forward_for, _norm_ops.batchnorm_backward_for,
                                 _norm_ops.batchnorm_update_running),
    "layernorm_ops": NormKernels(_norm_ops.layernorm_forward_for, _norm_ops.layernorm_backward_for, None),
}
# Which code picks the kernel of a dict entry of ``Kernels``.
_CHOSEN_BY = Kernels(None, None, "loss", "loss", "optimizer", "loss")
# The (table, field)s of kernels compiled for one activation code each. The field of ``TABLES``
# holds a kernel factory (``activations.activation_forward_for``, ``_norm_ops.batchnorm_forward_for``);
# in a table of addresses it holds its row (``CODE_ROWS``) of ``Network.code_kernels``, a
# (len(BY_CODE), N_CODES) array of addresses, one column per code (zero for the codes the network
# does not have), which ``_kcall_code`` picks by the op's code at run time. A kernel of every code
# took 3x as long to compile as one code's. One array for all of them, not a tuple of addresses
# per field: numba's front end spends time on every member of the structs the loop passes along,
# and 72 more members in ``Network`` cost 1.5-2 s of every cold start.
BY_CODE = (("activation_ops", "forward"), ("activation_ops", "backward"), ("batchnorm_ops", "forward"),
           ("batchnorm_ops", "backward"), ("layernorm_ops", "forward"), ("layernorm_ops", "backward"))
CODE_ROWS = {entry: row for row, entry in enumerate(BY_CODE)}
N_CODES = max(R.ACTIVATIONS.values()) + 1
# The op kind of each table other than ``kernels``: the codes of its ops pick its kernels of ``BY_CODE``.
_KIND_OF = {"activation_ops": R.OP_ACTIVATION, "dropout_ops": R.OP_DROPOUT, "batchnorm_ops": R.OP_BATCHNORM,
            "layernorm_ops": R.OP_LAYERNORM}


@functools.lru_cache(maxsize=None)
def _signatures(dtype):
    """Each table's kernel signatures for parameters of ``dtype``, as the loop calls them."""
    dt = numba.from_dtype(np.dtype(dtype))
    m, v = types.Array(dt, 2, "C"), types.Array(dt, 1, "C")
    labels, f64s = types.Array(types.int64, 1, "C"), types.Array(types.float64, 1, "C")
    i64, f64, void = types.int64, types.float64, types.void
    saved, norms, consts = types.Array(dt, 3, "C"), types.Array(types.int64, 2, "C"), types.Array(types.float64, 2, "C")
    layout = types.Array(types.int64, 1, "C")
    norm_forward = void(m, m, saved, v, v, norms, consts, i64, i64, f64, types.boolean)
    norm_backward = void(v, v, saved, v, v, v, norms, layout, i64, i64, i64, f64)
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
        "batchnorm_ops": NormKernels(forward=norm_forward, backward=norm_backward,
                                     update_running=void(v, saved, norms, consts, layout, i64, i64)),
        "layernorm_ops": NormKernels(forward=norm_forward, backward=norm_backward,
                                     update_running=void(v, saved, norms, consts, layout, i64, i64)),
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
    activation code of a field of ``BY_CODE``)."""
    codes = {"loss": loss, "optimizer": optimizer}
    index = type(TABLES[name])._fields.index(field)
    kernel = _chosen(name, codes)[index]
    if (name, field) in CODE_ROWS:
        kernel = kernel(code)
    return kernel, _signatures(np.dtype(dtype))[name][index]


def compile_entry(name, field, dtype, loss=None, optimizer=None, code=None):
    """The address of TABLES[name].<field>'s kernel, compiled or loaded from the cache if needed."""
    kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
    result = kernel.get_compile_result(sig)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def fields(name):
    """The fields of TABLES[name] that hold a kernel (not None)."""
    return [field for field, kernel in zip(type(TABLES[name])._fields, TABLES[name]) if kernel is not None]


def table_codes(net, name):
    """The activation codes of ``net``'s ops of table ``name``'s kind (sorted): those its fields of
    ``BY_CODE`` need kernels of. () for ``kernels``."""
    if name not in _KIND_OF:
        return ()
    return tuple(sorted({int(c) for c in net.codes[net.kinds == _KIND_OF[name]]}))


def field_codes(name, field, codes):
    """The codes TABLES[name].<field> compiles a kernel for: ``codes`` for a field of ``BY_CODE``,
    else (None,), its one kernel."""
    return tuple(codes) if (name, field) in CODE_ROWS else (None,)


def kernel_table(name, dtype, loss=None, optimizer=None):
    """TABLES[name] as the addresses of its kernels compiled (or loaded from the cache) for
    ``dtype``'s signatures; once per process. ``loss`` and ``optimizer`` (registry codes) pick
    the loss and update kernels of ``kernels``; where one is None, its entries raise when called
    (a table for ``predict`` of a model with no loss). A field of ``BY_CODE`` holds its row of
    ``code_kernels`` instead, and a field without a kernel (None) zero."""
    if name != "kernels":
        loss = optimizer = None
    key = (name, np.dtype(dtype), loss, optimizer)
    if key not in _TABLES_BY_DTYPE:
        addresses = []
        for field, kernel in zip(type(TABLES[name])._fields, TABLES[name]):
            if (name, field) in CODE_ROWS:
                addresses.append(CODE_ROWS[name, field])
            else:
                addresses.append(0 if kernel is None else compile_entry(name, field, dtype, loss, optimizer))
        _TABLES_BY_DTYPE[key] = type(TABLES[name])(*addresses)
    return _TABLES_BY_DTYPE[key]


def code_kernels(dtype, codes):
    """``Network.code_kernels`` for ``dtype``: the addresses of the kernels of ``BY_CODE``, compiled
    (or loaded from the cache) for the codes ``codes[table]`` of each table named there."""
    addresses = np.zeros((len(BY_CODE), N_CODES), dtype=np.int64)
    for row, (name, field) in enumerate(BY_CODE):
        for code in codes.get(name, ()):
            addresses[row, code] = compile_entry(name, field, dtype, code=code)
    return addresses


# What each compile unit costs, in seconds of one core of the 2-core development machine (AMD
# EPYC, AVX-512; each unit alone in a fresh process, benchmarks/bench_compile.py): what the first
# run's note adds up (``pending``), and how ``fastbp compile`` deals units to its workers.
COMPILE_SECONDS = {
    "kernels": Kernels(dense_forward=2.2, dense_backward=2.8, loss_forward=0.8, loss_backward=0.3, update=0.8,
                       stats=0.25),
    # One code's kernels, in the fields of ``BY_CODE``.
    "activation_ops": ActivationKernels(forward=0.6, backward=0.4),
    "dropout_ops": DropoutKernels(forward=0.2, backward=0.1, inference=0.1),
    "batchnorm_ops": NormKernels(forward=1.0, backward=0.8, update_running=0.2),
    "layernorm_ops": NormKernels(forward=0.5, backward=0.8, update_running=0.0),
}
# The loop's levels (train_batches and evaluate_batches).
LOOP_SECONDS = 3.3
# What the first run's note calls each table's kernels.
TABLE_NAMES = {"activation_ops": "activation layers", "dropout_ops": "dropout", "batchnorm_ops": "BatchNorm",
               "layernorm_ops": "LayerNorm"}


def pending(net, dtype, loss=None, optimizer=None):
    """The kernels of ``net``'s tables not compiled yet in this process nor in the cache, as
    ((table, field), single-core seconds) pairs."""
    found = []
    for name in _present(net):
        for field in fields(name):
            for code in field_codes(name, field, table_codes(net, name)):
                kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
                if not _warm.cached(kernel, sig):
                    found.append(((name, field), getattr(COMPILE_SECONDS[name], field)))
    return found


# The kernels worker processes compile while this one compiles the loop (``_warm``): the
# heaviest, those of the dense and the norm layers (where the network has norm layers), dealt
# round-robin to as many workers as there are cores beside this process's. On two cores the one
# worker's share and this process's (the loop's levels, ``evaluate_batches`` and the other
# kernels) then take about as long (benchmarks/bench_compile.py --first-result). On a warm cache
# with a new norm layer, the worker compiles its backward while this process compiles its forward.
_AHEAD = (("kernels", "dense_backward"), ("kernels", "dense_forward"), ("batchnorm_ops", "backward"),
          ("layernorm_ops", "backward"), ("batchnorm_ops", "forward"), ("layernorm_ops", "forward"))


def _placeholder(name):
    """A table of TABLES[name]'s type holding zero addresses: what the loop is compiled against
    while the kernels compile elsewhere, and what it holds for an op kind the network lacks
    (never called: no op of that kind)."""
    return type(TABLES[name])(*[CODE_ROWS.get((name, field), 0) for field in type(TABLES[name])._fields])


def placeholder_net(net):
    """``net`` with a table of zero addresses for each op kind: the types ``with_kernels`` gives it,
    for compiling the loop while its kernels are compiled elsewhere."""
    return net._replace(code_kernels=np.zeros((len(BY_CODE), N_CODES), dtype=np.int64),
                        **{name: _placeholder(name) for name in TABLES})


def _present(net):
    """The tables ``net`` calls kernels of: ``kernels``, and those of the op kinds it has."""
    return [name for name in TABLES if name == "kernels" or getattr(net, name) is not None]


def _compile_ahead(net, dtype, loss, optimizer, ahead):
    """On a cold cache: the kernels of ``_AHEAD`` not in the cache yet in worker processes,
    meanwhile ``ahead(placeholder)`` (the caller compiles its loop against tables of zero
    addresses, which have the same types) and the other kernels here, then the workers' kernels
    that none has begun yet (``_warm.Claims``, from the end of the list); then wait for the workers."""
    entries = [":".join(map(str, (name, field, loss, optimizer, code)))
               for name, field in _AHEAD if name in _present(net)
               for code in field_codes(name, field, table_codes(net, name))
               if not _warm.cached(*_entry(name, field, dtype, loss, optimizer, code))]
    if not entries:
        return
    n_workers = min(len(entries), _warm.usable_cpus() - 1)
    claims = _warm.Claims()
    procs = _warm.start(compile_worker, [[claims.folder, np.dtype(dtype).name] + entries[k::n_workers]
                                         for k in range(n_workers)])
    try:
        if not procs:
            return
        ahead(placeholder_net(net))
        for name in _present(net):
            for field in fields(name):
                if (name, field) not in _AHEAD:
                    for code in field_codes(name, field, table_codes(net, name)):
                        compile_entry(name, field, dtype, loss, optimizer, code)
        for entry in reversed(entries):
            if claims.claim(entry):
                _compile_named(entry, dtype)
        _warm.wait(procs)
    except BaseException:
        # An interrupt or an error here: the workers' kernels are no longer wanted.
        _warm.stop(procs)
        raise
    finally:
        claims.close()


def _compile_named(entry, dtype):
    """``compile_entry`` for an entry written ``table:field:loss:optimizer:code``."""
    name, field, *codes = entry.split(":")
    loss, optimizer, code = (None if code == "None" else int(code) for code in codes)
    compile_entry(name, field, dtype, loss, optimizer, code)


def compile_worker(argv):
    """A worker process of ``_compile_ahead`` (``_warm.start``): compile those of the entries
    ``table:field:loss:optimizer:code`` of ``argv[2:]`` that it claims first in the folder
    ``argv[0]`` (``_warm.Claims``), for dtype ``argv[1]``, into the cache."""
    _warm.die_with_parent()
    claims = _warm.Claims(argv[0])
    dtype = np.dtype(argv[1])
    for entry in argv[2:]:
        if claims.claim(entry):
            _compile_named(entry, dtype)


def with_kernels(net, dtype, loss=None, optimizer=None, ahead=None):
    """``net`` (``lowering.Network``) with the CPU kernel tables for ``dtype``: ``kernels`` always,
    with the kernels of the ``loss`` and ``optimizer`` codes (``kernel_table``), and for each other
    op kind the table of its kernels where the network has that kind (its flag True), for the
    codes of its ops of that kind, else a table of zero addresses (``_placeholder``).

    Every table is there, whatever the network: the tables' types do not depend on their
    addresses, so the loop's levels compile once per dtype, and a network with a new loss,
    optimizer, activation or norm layer compiles only that thing's kernels, for its codes, not
    the loop again.

    ``ahead(placeholder_net)``, where given, compiles the caller's loop: on a cold cache it runs
    while worker processes compile the heaviest kernels (``_compile_ahead``).
    """
    if ahead is not None:
        _compile_ahead(net, dtype, loss, optimizer, ahead)
    present = _present(net)
    return net._replace(code_kernels=code_kernels(dtype, {name: table_codes(net, name) for name in present}),
                        **{name: kernel_table(name, dtype, loss, optimizer) if name in present else _placeholder(name)
                           for name in TABLES})
