"""Inverted dropout with an explicit mask and a counter-based seeded generator.

Forward draws u_i = hash_uniform(seed, i) for every element and keeps it when
u_i >= rate, scaling kept values by 1 / (1 - rate) so that the expectation of
out equals x and inference needs no rescaling. The mask holds that factor (0 or
1 / (1 - rate)), so backward is dx = dout * mask. The draw depends only on
(seed, i), so the mask is the same whatever the thread count, and the CUDA
kernel draws the same mask.

Each public kernel has its argument spec (``*_SPEC``, an ``ArgSpec``) just
above it: what ``fastbp.kernels`` and ``fastbp.kernels.cuda`` check before
calling it.

Each kernel has a ``*_serial`` twin that runs the same loop on the calling thread
alone, for compiled loops that call BLAS between kernels (see ``_jit.py``); the
parallel kernel calls it below the size where the thread pool pays off.
"""
from numba import prange

from .._checks import ArgSpec
from .._jit import PARALLEL_MIN_ELEMENTS, jit
from .._scalar import hash_uniform
from ._flat import flat


DROPOUT_FORWARD_SPEC = ArgSpec(
    [("out", "*"), ("mask", "*"), ("x", "*"), ("rate", "rate"), ("seed", "seed")],
    writes=("out", "mask"))


@jit(parallel=True)
def dropout_forward(out, mask, x, rate, seed):
    """out = x * mask with mask_i = [u_i >= rate] / (1 - rate).

    x (N, O) -> out (N, O) and mask (N, O), both overwritten; 0 <= rate < 1,
    seed >= 0. The caller passes a fresh seed per step.

    Parameters
    ----------
    out : ndarray
        Output, x * mask; may be ``x`` itself.
    mask : ndarray, the shape of ``out``
        Receives the mask: 0 for a dropped element, 1 / (1 - rate) for a kept one.
    x : ndarray, the shape of ``out``
        Input.
    rate : float in [0, 1)
        Probability of dropping an element.
    seed : int in [0, 2**63)
        Seed of the counter-based generator; the same seed draws the same mask.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if x.size < PARALLEL_MIN_ELEMENTS:
        dropout_forward_serial(out, mask, x, rate, seed)
    else:
        _dropout_forward_loop(out, mask, x, rate, seed, 0)


@jit
def dropout_forward_serial(out, mask, x, rate, seed):
    """``dropout_forward`` on the calling thread alone: the same mask and output."""
    _dropout_forward_loop(out, mask, x, rate, seed, 0)


DROPOUT_FORWARD_FROM_SPEC = ArgSpec(
    [("out", "*"), ("mask", "*"), ("x", "*"), ("rate", "rate"), ("seed", "seed"), ("first", "index")],
    writes=("out", "mask"))


@jit
def dropout_forward_from(out, mask, x, rate, seed, first):
    """``dropout_forward_serial`` drawing element i's mask from counter first + i.

    The training loop's entry: a block of rows that starts at element ``first``
    of a larger batch (a rank's share, under MPI) gets that batch's mask.
    """
    _dropout_forward_loop(out, mask, x, rate, seed, first)


@jit(inline="always")
def _dropout_forward_loop(out, mask, x, rate, seed, first):
    o = flat(out)
    m = flat(mask)
    v = flat(x)
    keep = 1.0 / (1.0 - rate)
    for i in prange(v.size):
        m[i] = keep if hash_uniform(seed, first + i) >= rate else 0.0
        o[i] = v[i] * m[i]


DROPOUT_BACKWARD_SPEC = ArgSpec([("dx", "*"), ("dout", "*"), ("mask", "*")], writes=("dx",))


@jit(parallel=True)
def dropout_backward(dx, dout, mask):
    """dx = dout * mask (N, O), overwritten; the mask already holds 1 / (1 - rate).

    Parameters
    ----------
    dx : ndarray
        Gradient with respect to the dropout's input, dout * mask. Overwritten.
    dout : ndarray, the shape of ``dx``
        Gradient of the loss with respect to ``out`` (from the layer above).
    mask : ndarray, the shape of ``dx``
        The dropout mask: 0 for a dropped element, 1 / (1 - rate) for a kept one.

    Raises
    ------
    KernelArgumentError
        Called from Python with an argument that breaks these rules (shape, dtype,
        contiguity, range), naming it. Inside ``@njit`` code nothing is checked.
    """
    if dx.size < PARALLEL_MIN_ELEMENTS:
        dropout_backward_serial(dx, dout, mask)
    else:
        _dropout_backward_loop(dx, dout, mask)


@jit
def dropout_backward_serial(dx, dout, mask):
    """``dropout_backward`` on the calling thread alone."""
    _dropout_backward_loop(dx, dout, mask)


@jit(inline="always")
def _dropout_backward_loop(dx, dout, mask):
    d = flat(dx)
    g = flat(dout)
    m = flat(mask)
    for i in prange(d.size):
        d[i] = g[i] * m[i]


DROPOUT_INFERENCE_SPEC = ArgSpec([("out", "NO"), ("x", "NO")], writes=("out",))


@jit
def dropout_inference(out, x):
    """Dropout in inference mode: out = x (the masks scaled the kept units by 1 / (1 - rate)
    during training, so nothing is rescaled here). x, out (N, O) C-contiguous; serial.

    A copy of its own rather than the identity activation, which compiles every activation's
    formula for this one copy (0.5 s of a cold start, benchmarks/bench_compile.py).
    """
    n_rows, n_cols = x.shape
    for n in range(n_rows):
        for j in range(n_cols):
            out[n, j] = x[n, j]
