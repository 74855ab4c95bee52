"""The norm ops (BatchNorm, LayerNorm and their fused activation) as the compiled loop calls them.

Each is a compile unit of its own, made for one activation code, which the loop calls through
the address its kernel table holds for the op's code (``_cpu_loop``: ``BY_CODE``). A unit takes
the op's row of ``Workspace.saved``, the running statistics, theta, the op's rows of
``Network.norms`` and ``Network.norm_consts``, and cuts the views of its statistics and of
gamma and beta itself; the loop holds one call per kind, which costs what an activation op's
costs to compile, so that one compiled loop serves networks with and without norm layers. A
first fit with a BatchNorm layer on a warm cache compiles that kind's units for its code and
nothing else: with the views cut in the loop, the loop had its norm branches only where the
network had norm layers, and a first BatchNorm fit compiled the loop again (4.8 s on one core)
and the BatchNorm kernels of every code.

Where the statistics sit in ``saved`` (``lowering``: BatchNorm mean, variance and inverse
standard deviation per feature; LayerNorm mean at 0 and inverse standard deviation at ``cap``,
per row) is read here and nowhere else in the CPU backend. A unit inlines the act kernel's body
(``kernels/cpu/norm.py``, ``*_body``) with the code a constant of its closure: the kernel's
arithmetic, that code's loop alone.
"""
import functools

from ..kernels import registry
from ..kernels._jit import jit
from ..kernels.cpu import norm as norm_kernels
from ._views import matrix


@jit(inline="always")
def _part(theta, at, size):
    """theta[at:at + size], or an empty view where at is -1 (a norm op without gamma and beta)."""
    return theta[at:at + size] if at >= 0 else theta[:0]


def _named(unit, kind, field, code):
    """``unit`` compiled without numba's runtime (it only cuts views of its caller's arrays), under a
    name of its own per code, which names its cache entries and what a compile listener sees."""
    unit.__qualname__ = unit.__name__ = f"{kind}_op_{field}_{registry.ACTIVATION_NAMES[code]}"
    return jit(unit, refcounts=False)


@jit(inline="always")
def _rows(flat, layout, cap, i, nb):
    """The first nb rows of activation i (or of its gradient) in a flat buffer with room for cap
    rows of each (``_cpu_loop._rows``)."""
    return matrix(flat, cap * layout[i], nb, layout[i + 1] - layout[i])


@jit(inline="always")
def _grad_part(grad, normgrad, at, which, width):
    """grad[at:at + width] (dgamma or dbeta), or a part of the scratch (``which``: 0 or 1) for an op
    without affine parameters, whose sums the backward still forms."""
    return grad[at:at + width] if at >= 0 else normgrad[which * width:(which + 1) * width]


@functools.lru_cache(maxsize=None)
def batchnorm_forward_for(code):
    """Forward of BatchNorm op i and its activation ``code``, x into out: with the batch's statistics,
    which go to the op's row of ``saved`` (training), or with the running ones (inference)."""

    def forward(out, x, saved, running, theta, norms, consts, i, cap, alpha, training):
        width = x.shape[1]
        stats = saved[norms[i, registry.NORM_SAVED]]
        gamma = _part(theta, norms[i, registry.NORM_GAMMA], width)
        beta = _part(theta, norms[i, registry.NORM_BETA], width)
        if training:
            norm_kernels.batchnorm_act_forward_body(out, stats[:width], stats[width:2 * width],
                                                    stats[2 * width:3 * width], x, gamma, beta, consts[i, 0], code,
                                                    alpha)
        else:
            at = norms[i, registry.NORM_RUNNING]
            norm_kernels.batchnorm_act_inference_body(out, x, running[at:at + width],
                                                      running[at + width:at + 2 * width], gamma, beta, consts[i, 0],
                                                      code, alpha)

    return _named(forward, "batchnorm", "forward", code)


@functools.lru_cache(maxsize=None)
def layernorm_forward_for(code):
    """Forward of LayerNorm op i and its activation ``code``, x into out, each row's statistics into
    the op's row of ``saved`` (training and inference alike)."""

    def forward(out, x, saved, running, theta, norms, consts, i, cap, alpha, training):
        n_rows, width = x.shape
        stats = saved[norms[i, registry.NORM_SAVED]]
        norm_kernels.layernorm_act_forward_body(out, stats[:n_rows], stats[cap:cap + n_rows], x,
                                                _part(theta, norms[i, registry.NORM_GAMMA], width),
                                                _part(theta, norms[i, registry.NORM_BETA], width), consts[i, 0], code,
                                                alpha)

    return _named(forward, "layernorm", "forward", code)


@jit(inline="always")
def _backward_views(acts, dacts, theta, grad, normgrad, norms, layout, i, nb, cap):
    """A norm op's views for its act kernel's backward body: dx, dgamma, dbeta, dout, y, x, gamma,
    beta. The first op needs no input gradient: a zero-size dx skips it."""
    width = layout[i + 1] - layout[i]
    g, b = norms[i, registry.NORM_GAMMA], norms[i, registry.NORM_BETA]
    return (_rows(dacts, layout, cap, i, nb if i > 0 else 0), _grad_part(grad, normgrad, g, 0, width),
            _grad_part(grad, normgrad, b, 1, width), _rows(dacts, layout, cap, i + 1, nb),
            _rows(acts, layout, cap, i + 1, nb), _rows(acts, layout, cap, i, nb), _part(theta, g, width),
            _part(theta, b, width))


# The factories' closures hold the code alone: numba keys a closure's cache entry by its cells'
# pickles, and a dispatcher's pickle differs from process to process (a closure holding one
# compiled again in every process).
@functools.lru_cache(maxsize=None)
def batchnorm_backward_for(code):
    """Backward of BatchNorm op i and its activation ``code`` on the first nb rows of the activations
    ``acts`` and their gradients ``dacts``: dgamma and dbeta into grad (into the ``normgrad``
    scratch without affine parameters), the input gradient into its rows of ``dacts``."""

    def backward(acts, dacts, saved, theta, grad, normgrad, norms, layout, i, nb, cap, alpha):
        width = layout[i + 1] - layout[i]
        stats = saved[norms[i, registry.NORM_SAVED]]
        dx, dgamma, dbeta, dout, y, x, gamma, beta = _backward_views(acts, dacts, theta, grad, normgrad, norms,
                                                                     layout, i, nb, cap)
        norm_kernels.batchnorm_act_backward_body(dx, dgamma, dbeta, dout, y, x, stats[:width],
                                                 stats[2 * width:3 * width], gamma, beta, code, alpha)

    return _named(backward, "batchnorm", "backward", code)


@functools.lru_cache(maxsize=None)
def layernorm_backward_for(code):
    """Backward of LayerNorm op i and its activation ``code`` (as ``batchnorm_backward_for``)."""

    def backward(acts, dacts, saved, theta, grad, normgrad, norms, layout, i, nb, cap, alpha):
        stats = saved[norms[i, registry.NORM_SAVED]]
        dx, dgamma, dbeta, dout, y, x, gamma, beta = _backward_views(acts, dacts, theta, grad, normgrad, norms,
                                                                     layout, i, nb, cap)
        norm_kernels.layernorm_act_backward_body(dx, dgamma, dbeta, dout, y, x, stats[:nb], stats[cap:cap + nb],
                                                 gamma, beta, code, alpha)

    return _named(backward, "layernorm", "backward", code)


@jit(refcounts=False)
def batchnorm_update_running(running, saved, norms, consts, layout, i, nb):
    """Move BatchNorm op i's running statistics toward those of the batch of nb rows (momentum
    ``consts[i, 1]``), after a step that happened."""
    width = layout[i + 1] - layout[i]
    at = norms[i, registry.NORM_RUNNING]
    stats = saved[norms[i, registry.NORM_SAVED]]
    norm_kernels.batchnorm_update_running(running[at:at + width], running[at + width:at + 2 * width], stats[:width],
                                          stats[width:2 * width], consts[i, 1], nb)
