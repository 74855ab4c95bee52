"""A batch's loss and metrics added to the run's sums (registry ``S_*``): the ``stats`` kernels
of the loop's kernel table, compiled as units of their own and called by address, one per loss
kind (``STATS``). The CUDA backend's ``evaluate`` sums with the same functions.
"""
import math

from ..kernels import registry
from ..kernels._checks import ArgSpec
from ..kernels._jit import jit

# Every loss kind's ``stats`` kernel: the batch's mean loss (``loss``, a float of the arrays'
# dtype) and outputs into the run's sums.
STATS_SPEC = ArgSpec([("stats", "float64[:]"), ("loss", "value"), ("out", "NO"), ("labels", "int64[:]"),
                      ("target", "NO?"), ("weight", "N?"), ("loss_code", "loss")], writes=("stats",))


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
    stats[registry.S_LOSS] += loss * total
    stats[registry.S_WEIGHT] += total
    stats[registry.S_COUNT] += nb
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
    stats[registry.S_CORRECT] += correct


@jit(refcounts=False)
def elementwise_stats(stats, loss, out, labels, target, weight, loss_code):
    """Add one batch's loss and metrics (an elementwise loss) to stats, each sample counted with its
    weight s_n: as ``softmax_stats``, with binary accuracy (BCE) or squared and absolute errors as
    sums of s_n times the sample's terms over S_ELEMENTS = O sum s_n."""
    nb, n_out = out.shape
    total = _add_loss(stats, loss, weight, nb)
    weighted = weight.size > 0
    stats[registry.S_ELEMENTS] += total * n_out
    correct = squared = absolute = 0.0
    for n in range(nb):
        s = weight[n] if weighted else 1.0
        for j in range(n_out):
            if loss_code == registry.LOSS_BCE:
                if (out[n, j] > 0.0) == (target[n, j] > 0.5):
                    correct += s
            elif loss_code == registry.LOSS_POISSON:
                # Errors of the predicted mean exp(eta), not of its log.
                d = math.exp(out[n, j]) - target[n, j]
                squared += s * (d * d)
                absolute += s * abs(d)
            else:
                d = out[n, j] - target[n, j]
                squared += s * (d * d)
                absolute += s * abs(d)
    stats[registry.S_CORRECT] += correct
    stats[registry.S_SQUARED] += squared
    stats[registry.S_ABSOLUTE] += absolute


STATS = {loss.code: softmax_stats if loss.code == registry.LOSS_SCE else elementwise_stats
         for loss in registry.LOSS_TABLE}
