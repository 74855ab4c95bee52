"""GPU kernels that a training loop needs beyond the layers: batch gathers, metrics, finiteness.

The model keeps the whole training set on the device and, each step, gathers
the rows of the next mini-batch through the epoch's permutation, so data
crosses the bus once per fit. Per-batch metrics are written to a slot of a
device array, so the host reads them once per epoch instead of once per step.
"""
import math

from ..registry import LOSS_POISSON, LOSS_SCE
from ._launch import cdiv, elementwise, fixed
from ._numba_cuda import cuda, kernel
from ._reduce import block_reduce

GATHER_THREADS = 256
METRIC_THREADS = 256


@kernel
def _gather_rows_kernel(dst, src, order, start):
    # One thread per element of dst: a row-major walk, so a warp reads one
    # source row's consecutive columns (coalesced) after one index lookup.
    n_rows, n_cols = dst.shape
    for e in range(cuda.grid(1), n_rows * n_cols, cuda.gridsize(1)):
        r = e // n_cols
        dst[r, e - r * n_cols] = src[order[start + r], e - r * n_cols]


@kernel
def _gather_kernel(dst, src, order, start):
    for r in range(cuda.grid(1), dst.shape[0], cuda.gridsize(1)):
        dst[r] = src[order[start + r]]


def gather_rows(dst, src, order, start):
    """dst (n, F) = src[order[start:start + n]] (src (M, F), order (M,) integer indices)."""
    size = dst.shape[0] * dst.shape[1]
    fixed(_gather_rows_kernel, max(1, min(cdiv(size, GATHER_THREADS), 4096)), GATHER_THREADS)(
        dst, src, order, start)


def gather(dst, src, order, start):
    """dst (n,) = src[order[start:start + n]] for 1-D src (labels, sample weights)."""
    fixed(_gather_kernel, max(1, min(cdiv(dst.shape[0], GATHER_THREADS), 4096)), GATHER_THREADS)(
        dst, src, order, start)


@kernel
def _batch_metrics_kernel(metrics, slot, out, labels, target, weight, code):
    # One block: each thread scans a strided share of the batch, then a
    # shared-memory tree adds the partial sums in a fixed order.
    buf = cuda.shared.array(METRIC_THREADS, dtype=metrics.dtype)
    n_rows, n_out = out.shape
    t = cuda.threadIdx.x
    weighted = weight.size > 0
    correct = metrics.dtype.type(0)
    squared = metrics.dtype.type(0)
    absolute = metrics.dtype.type(0)
    if code == LOSS_SCE:
        for n in range(t, n_rows, cuda.blockDim.x):
            best = 0
            for j in range(1, n_out):
                if out[n, j] > out[n, best]:
                    best = j
            if best == labels[n]:
                correct += weight[n] if weighted else 1.0
    else:
        for e in range(t, n_rows * n_out, cuda.blockDim.x):
            n = e // n_out
            j = e - n * n_out
            s = weight[n] if weighted else 1.0
            if code == LOSS_POISSON:
                d = math.exp(out[n, j]) - target[n, j]  # the error of the predicted mean
            else:
                d = out[n, j] - target[n, j]
            if (out[n, j] > 0) == (target[n, j] > 0.5):
                correct += s
            # s (d d) and s |d|, as the CPU's elementwise_stats rounds them.
            squared += s * (d * d)
            absolute += s * abs(d)
    correct = block_reduce(buf, correct, False)
    squared = block_reduce(buf, squared, False)
    absolute = block_reduce(buf, absolute, False)
    if t == 0:
        metrics[slot, 0] = correct
        metrics[slot, 1] = squared
        metrics[slot, 2] = absolute


def batch_metrics(metrics, slot, out, labels, target, weight, code):
    """metrics[slot] = (correct, sum of squared errors, sum of absolute errors) of one batch.

    For softmax cross-entropy (``code``, the registry's loss code) a row is
    correct when its argmax equals its label; otherwise each output is correct
    when (out > 0) == (target > 0.5) (binary cross-entropy on logits) and the
    error sums are of out - target (regression), or of exp(out) - target for
    the Poisson loss (the predicted mean). Each sample counts with its weight
    (weight (N,), or empty for 1), as in the CPU's ``softmax_stats`` and ``elementwise_stats``.
    metrics is float64 (n_batches, 3).
    """
    fixed(_batch_metrics_kernel, 1, METRIC_THREADS)(metrics, slot, out, labels, target, weight, code)


@kernel
def _mark_nonfinite_kernel(flags, slot, a):
    # Every thread that finds a NaN or inf writes the same 1: no race on the value.
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        if not abs(a[i]) < math.inf:
            flags[slot] = 1


def mark_nonfinite(flags, slot, a):
    """flags[slot] = 1 when the 1-D device array ``a`` holds a NaN or an inf (else untouched).

    The training loop clears flags per epoch and marks one slot per step for the
    gradient, so the host learns of a non-finite gradient when it reads the flags,
    the same step at which the CPU loop stops.
    """
    elementwise(_mark_nonfinite_kernel, a.size)(flags, slot, a)
