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
increfs and decrefs are a test of a null pointer. Views are cut with ``_views.matrix``, where
``lowering`` says they are (``_views.rows``, ``dense_weight``, ...).

Constants handed to a compiled callee are typed values (``np.bool_(True)``,
``np.int64(0)``): numba types a bare ``True`` or ``0`` as a literal and compiles
a copy of the callee, and of everything it links, for that constant. ``forward``
was compiled twice that way (training and inference), ``batch_gradient`` twice
under MPI.

``train_batches`` runs forward, loss, backward and the optimizer update for a
range of batches with no Python in between and no allocation: the last,
smaller batch uses prefix views of the same buffers.

The loop's levels call the kernels through their addresses, with ``kcall`` and ``kcall_code``
(``_kernel_tables``, which makes the tables and says why), and the loss metrics of ``_metrics``
the same way.

Divergence is caught before it can damage the model: a non-finite loss or
gradient stops the run *before* the update of that step, and the step is
reported back. The CUDA backend (``cuda.py``) applies the same rules.

These loops call only kernels that run on the calling thread (the ``*_serial``
twins, the ``*_code_*`` dispatchers): the products are BLAS's, on BLAS's
threads, and nothing here starts numba's thread pool (see ``kernels/_jit.py``).
"""
import numpy as np

from ..kernels import registry
from ..kernels._jit import jit
from ..kernels.cpu import dense
from ..kernels.cpu._finite import all_finite
from ._kernel_tables import kcall, kcall_code
from ._views import borrowed, dense_bias, dense_weight, matrix, prefetch, rows

# The activations the table's dense kernels apply themselves (``dense.TABLE_FUSED``): a dense layer
# of any other code calls its code's kernels beside them (``_kernel_tables.Kernels``).
_FUSED = dense.TABLE_FUSED


@jit(refcounts=False, callers="compiled")
def update_running(net, ws, nb):
    """Move every BatchNorm op's running statistics toward the batch's, after a step that happened
    (``_norm_ops.batchnorm_update_running``)."""
    for i in range(net.kinds.size):
        if net.kinds[i] == registry.OP_BATCHNORM:
            kcall(net.batchnorm_ops, "update_running",
                   (ws.running, ws.saved, net.norms, net.norm_consts, net.layout, i, nb))


@jit(refcounts=False, callers="compiled")
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
        if kind == registry.OP_DENSE:
            p = net.params_of[i]
            code = net.codes[i]
            kcall(net.kernels, "dense_forward", (out, x, dense_weight(theta, net.params, p),
                                                  dense_bias(theta, net.params, p), code, net.alphas[i]))
            if code not in _FUSED:
                # The dense kernel left out = x @ w + b; the activation, in place, by its code's kernel.
                kcall_code(net.code_kernels, net.kernels, "dense_act_apply", code, (out, code, net.alphas[i]))
        elif kind == registry.OP_ACTIVATION:
            kcall_code(net.code_kernels, net.activation_ops, "forward", net.codes[i],
                        (out, x, net.codes[i], net.alphas[i]))
        elif kind == registry.OP_BATCHNORM or kind == registry.OP_LAYERNORM:
            # One call site for both kinds (their tables are of one type): every call site is
            # compiled into each of the loop's levels.
            norm_ops = net.batchnorm_ops if kind == registry.OP_BATCHNORM else net.layernorm_ops
            kcall_code(net.code_kernels, norm_ops, "forward", net.codes[i],
                        (out, x, ws.saved, ws.running, theta, net.norms, net.norm_consts, i, net.alphas[i], training))
        elif training:
            # A distinct stream per step and per layer.
            kcall(net.dropout_ops, "forward",
                   (out, rows(ws.masks, layout, cap, i + 1, nb), x, net.rates[i], seed + i, row0 * x.shape[1]))
        else:
            kcall(net.dropout_ops, "inference", (out, x))


@jit(refcounts=False, callers="compiled")
def backward(net, ws, theta, grad, nb):
    """Backpropagate the gradient of the last activation into grad, through the ops of the
    network's backward schedule (``lowering.backward_schedule``).

    A dense layer's dz = dout * f'(z) goes to ``ws.scratch`` (at least nb times
    the widest layer), not over dout: LLVM cannot vectorize the pass when its
    input and output are the same memory, and the mnist configuration's step
    was 20% slower for it.
    """
    layout, cap = net.layout, ws.cap
    for step in range(net.backward_order.size):
        i = net.backward_order[step]
        dout = rows(ws.dacts, layout, cap, i + 1, nb)
        out = rows(ws.acts, layout, cap, i + 1, nb)
        x = rows(ws.acts, layout, cap, i, nb)
        # No input gradient where nothing before the op learns: a zero-size dx skips it.
        dx_rows = nb if net.input_grads[i] else 0
        kind = net.kinds[i]
        if kind == registry.OP_DENSE:
            p = net.params_of[i]
            dx = rows(ws.dacts, layout, cap, i, dx_rows)
            dz = matrix(ws.scratch, 0, nb, dout.shape[1])
            db = dense_bias(grad, net.params, p)
            code = net.codes[i]
            if code not in _FUSED:
                # dz and db by the code's kernel; the dense kernel then computes dx and dw from dz.
                kcall_code(net.code_kernels, net.kernels, "dense_act_grad", code, (dz, db, dout, out, code,
                                                                                   net.alphas[i]))
            kcall(net.kernels, "dense_backward", (dx, dense_weight(grad, net.params, p), db, dz, dout, out, x,
                                                   dense_weight(theta, net.params, p), code, net.alphas[i]))
        elif kind == registry.OP_BATCHNORM or kind == registry.OP_LAYERNORM:
            norm_ops = net.batchnorm_ops if kind == registry.OP_BATCHNORM else net.layernorm_ops
            kcall_code(net.code_kernels, norm_ops, "backward", net.codes[i],
                        (rows(ws.dacts, layout, cap, i, dx_rows), dout, out, x, ws.saved, theta, grad, ws.normgrad,
                         net.norms, i, net.alphas[i]))
        # An op without parameters is in the schedule only where an op before it learns.
        elif kind == registry.OP_ACTIVATION:
            kcall_code(net.code_kernels, net.activation_ops, "backward", net.codes[i],
                        (rows(ws.dacts, layout, cap, i, nb), dout, out, x, net.codes[i], net.alphas[i]))
        else:
            masks = rows(ws.masks, layout, cap, i + 1, nb)
            kcall(net.dropout_ops, "backward", (rows(ws.dacts, layout, cap, i, nb), dout, masks))


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
# Larger batches up to this many bytes of rows are prefetched into L2 only: a quarter of a
# 512 KiB L2 (Zen 3; Zen 4 has 1 MiB).
PREFETCH_L2_BYTES = 128 * 1024


@jit(inline="always")
def _prefetch_rows(src, order, start, nb, locality):
    """Prefetch every cache line of rows order[start:start + nb] of the 2-d src; ``locality`` a
    literal, ``prefetch``'s (3: every level, 2: L2 and below)."""
    row_bytes = src.shape[1] * src.itemsize
    if row_bytes == 0:
        return
    for r in range(nb):
        k = order[start + r]
        for offset in range(0, row_bytes, 64):
            prefetch(src, k, offset, locality)
        # A row that starts inside a cache line ends in the line after its last 64-byte step.
        prefetch(src, k, row_bytes - 1, locality)


@jit(inline="always")
def _prefetch_batch(X, data, order, start, nb):
    """Prefetch the rows of X and of the targets that ``_gather_batch`` will copy for the batch
    order[start:start + nb]. ``train_batches`` asks for the next batch's rows before it trains on
    the current one, so that they arrive from memory meanwhile: the gather's cache misses were 18% of
    the 16-16-2 network's step (batch 16) in a perf profile, the loop's largest single cost."""
    batch_bytes = nb * (X.shape[1] + data.target.shape[1]) * X.itemsize
    if batch_bytes <= PREFETCH_BYTES:
        _prefetch_rows(X, order, start, nb, 3)
        _prefetch_rows(data.target, order, start, nb, 3)
    elif batch_bytes <= PREFETCH_L2_BYTES:
        _prefetch_rows(X, order, start, nb, 2)
        _prefetch_rows(data.target, order, start, nb, 2)
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
    kcall(net.kernels, "loss_forward", (ws.loss, probs, out, labels, target, weight, loss.code, loss.param))
    if not np.isfinite(ws.loss[0]):
        return registry.NONFINITE_LOSS
    kcall(net.kernels, "loss_backward", (rows(ws.dacts, net.layout, ws.cap, n_ops, nb), probs, out, labels, target,
                                          weight, loss.code, loss.param))
    backward(net, ws, opt.theta, opt.grad, nb)
    return registry.OK


@jit(refcounts=False, callers="python")
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
        return registry.NONFINITE_GRADIENT
    opt.counters[0] += 1
    kcall(net.kernels, "update", (opt.theta, opt.grad, opt.state1, opt.state2, net.n_weights, opt.code, opt.hyper,
                                   opt.counters[0]))
    # Running statistics move only with a step that happened (fit refuses batches of one row).
    update_running(net, ws, nb)
    labels, target, weight = _prefix(batch, nb)
    out = rows(ws.acts, net.layout, ws.cap, net.kinds.size, nb)
    kcall(net.kernels, "stats", (stats, ws.loss[0], out, labels, target, weight, loss.code))
    return registry.OK


@jit(refcounts=False, callers="python")
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
        if status == registry.OK:
            status = _apply_update(net, ws, batch, opt, nb, loss, stats)
        if status != registry.OK:
            return status, b
    return registry.OK, last


@jit(refcounts=False, callers="compiled")
def _weight_total(weight, order, start, nb):
    """sum of weight[order[start:start + nb]], or nb when there are no sample weights."""
    if weight.size == 0:
        return float(nb)
    total = 0.0
    for r in range(nb):
        total += weight[order[start + r]]
    return total


@jit(refcounts=False, callers="python")
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
        return registry.OK
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


@jit(refcounts=False, callers="python")
def predict_batches(out_all, X, net, ws, theta):
    """Forward pass (inference mode) over X in batches of ws.cap rows into out_all (n, O)."""
    out_all, X, net, ws, theta = borrowed((out_all, X, net, ws, theta))
    n = X.shape[0]
    for start in range(0, n, ws.cap):
        nb = min(ws.cap, n - start)
        out = _infer_rows(X, net, ws, theta, start, nb)
        _copy_rows(out_all[start:start + nb], out, 0, nb)


@jit(refcounts=False, callers="python")
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
        kcall(net.kernels, "loss_forward", (ws.loss, ws.probs[:nb], out, labels, target, weight, loss.code,
                                             loss.param))
        kcall(net.kernels, "stats", (stats, ws.loss[0], out, labels, target, weight, loss.code))
