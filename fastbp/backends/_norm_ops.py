"""The norm ops (BatchNorm, LayerNorm and their fused activation) as the compiled loop calls them.

Each is a compile unit of its own, made for one activation code, which the loop calls through
the address its kernel table holds for the op's code (``_kernel_tables``: ``BY_CODE``). A unit takes
the op's rows of the activations (as an activation op's kernel does), the whole of
``Workspace.saved``, the running statistics, theta, ``Network.norms`` and ``Network.norm_consts``
with the op's index (``NORM_*_SPEC``), and cuts the views of its statistics and of gamma and
beta itself; the loop holds one call per kind, which costs what an activation op's costs to
compile, so that one compiled loop serves networks with and without norm layers. A
first fit with a BatchNorm layer on a warm cache compiles that kind's units for its code and
nothing else: with the views cut in the loop, the loop had its norm branches only where the
network had norm layers, and a first BatchNorm fit compiled the loop again (4.8 s on one core)
and the BatchNorm kernels of every code.

An op's views (its statistics in ``saved``, gamma and beta, the running statistics) are
``lowering``'s (``norm_statistics``, ``norm_affine``, ...), inlined. A unit inlines the act kernel's body
(``kernels/cpu/norm.py``, ``*_body``) with the code a constant of its closure: the kernel's
arithmetic, that code's loop alone.
"""
import functools

from ..kernels import registry
from ..kernels._checks import ArgSpec
from ..kernels._jit import jit
from ..kernels.cpu import norm as norm_kernels
from ._views import norm_affine, norm_affine_grads, norm_running, norm_statistics


# The units' arguments, BatchNorm's and LayerNorm's alike: the op's rows of the activations, the
# workspace's ``saved`` (a slab per norm op), the running statistics, theta (its gradient, and the
# ``normgrad`` scratch), ``Network.norms`` and ``Network.norm_consts``, and the op's index.
NORM_FORWARD_SPEC = ArgSpec(
    [("out", "NO"), ("x", "NO"), ("saved", "float[:, :, :]"), ("running", "float[:]"), ("theta", "float[:]"),
     ("norms", "int64[:, :]"), ("consts", "float64[:, :]"), ("i", "index"), ("alpha", "float"),
     ("training", "bool")], writes=("out", "saved"))
NORM_BACKWARD_SPEC = ArgSpec(
    [("dx", "NO?"), ("dout", "NO"), ("y", "NO"), ("x", "NO"), ("saved", "float[:, :, :]"), ("theta", "float[:]"),
     ("grad", "float[:]"), ("normgrad", "float[:]"), ("norms", "int64[:, :]"), ("i", "index"), ("alpha", "float")],
    writes=("dx", "grad", "normgrad"))
NORM_UPDATE_RUNNING_SPEC = ArgSpec(
    [("running", "float[:]"), ("saved", "float[:, :, :]"), ("norms", "int64[:, :]"), ("consts", "float64[:, :]"),
     ("layout", "int64[:]"), ("i", "index"), ("nb", "count")], writes=("running",))


def _named(unit, kind, field, code):
    """``unit`` compiled without numba's runtime (it only cuts views of its caller's arrays), under a
    name of its own per code, which names its cache entries and what a compile listener sees."""
    unit.__qualname__ = unit.__name__ = f"{kind}_op_{field}_{registry.ACTIVATION_NAMES[code]}"
    return jit(unit, refcounts=False, callers="compiled")


@functools.lru_cache(maxsize=None)
def batchnorm_forward_for(code):
    """Forward of BatchNorm op i and its activation ``code``, x into out: with the batch's statistics,
    which go to the op's row of ``saved`` (training), or with the running ones (inference)."""

    def forward(out, x, saved, running, theta, norms, consts, i, alpha, training):
        width = x.shape[1]
        gamma, beta = norm_affine(theta, norms, i, width)
        if training:
            mean, var, invstd = norm_statistics(saved, norms, i, width)
            norm_kernels.batchnorm_act_forward_body(out, mean, var, invstd, x, gamma, beta, consts[i, 0], code, alpha)
        else:
            running_mean, running_var = norm_running(running, norms, i, width)
            norm_kernels.batchnorm_act_inference_body(out, x, running_mean, running_var, gamma, beta, consts[i, 0],
                                                      code, alpha)

    return _named(forward, "batchnorm", "forward", code)


@functools.lru_cache(maxsize=None)
def layernorm_forward_for(code):
    """Forward of LayerNorm op i and its activation ``code``, x into out, each row's statistics into
    the op's row of ``saved`` (training and inference alike)."""

    def forward(out, x, saved, running, theta, norms, consts, i, alpha, training):
        n_rows, width = x.shape
        mean, _, invstd = norm_statistics(saved, norms, i, n_rows)
        gamma, beta = norm_affine(theta, norms, i, width)
        norm_kernels.layernorm_act_forward_body(out, mean, invstd, x, gamma, beta, consts[i, 0], code, alpha)

    return _named(forward, "layernorm", "forward", code)


@jit(inline="always")
def _affine_views(theta, grad, normgrad, norms, i, width):
    """Norm op i's dgamma, dbeta, gamma and beta for its act kernel's backward body."""
    dgamma, dbeta = norm_affine_grads(grad, normgrad, norms, i, width)
    gamma, beta = norm_affine(theta, norms, i, width)
    return dgamma, dbeta, gamma, beta


# The factories' closures hold the code alone: numba keys a closure's cache entry by its cells'
# pickles, and a dispatcher's pickle differs from process to process (a closure holding one
# compiled again in every process).
@functools.lru_cache(maxsize=None)
def batchnorm_backward_for(code):
    """Backward of BatchNorm op i and its activation ``code``, the loop's views of its rows as an
    activation op's: dgamma and dbeta into grad (into the ``normgrad`` scratch without affine
    parameters), the input gradient into dx (zero rows where the backward schedule asks for none:
    skipped)."""

    def backward(dx, dout, y, x, saved, theta, grad, normgrad, norms, i, alpha):
        width = x.shape[1]
        mean, _, invstd = norm_statistics(saved, norms, i, width)
        dgamma, dbeta, gamma, beta = _affine_views(theta, grad, normgrad, norms, i, width)
        norm_kernels.batchnorm_act_backward_body(dx, dgamma, dbeta, dout, y, x, mean, invstd, gamma, beta, code,
                                                 alpha)

    return _named(backward, "batchnorm", "backward", code)


@functools.lru_cache(maxsize=None)
def layernorm_backward_for(code):
    """Backward of LayerNorm op i and its activation ``code`` (as ``batchnorm_backward_for``)."""

    def backward(dx, dout, y, x, saved, theta, grad, normgrad, norms, i, alpha):
        mean, _, invstd = norm_statistics(saved, norms, i, x.shape[0])
        dgamma, dbeta, gamma, beta = _affine_views(theta, grad, normgrad, norms, i, x.shape[1])
        norm_kernels.layernorm_act_backward_body(dx, dgamma, dbeta, dout, y, x, mean, invstd, gamma, beta, code,
                                                 alpha)

    return _named(backward, "layernorm", "backward", code)


@jit(refcounts=False, callers="compiled")
def batchnorm_update_running(running, saved, norms, consts, layout, i, nb):
    """Move BatchNorm op i's running statistics toward those of the batch of nb rows (momentum
    ``consts[i, 1]``), after a step that happened."""
    width = layout[i + 1] - layout[i]
    running_mean, running_var = norm_running(running, norms, i, width)
    mean, var, _ = norm_statistics(saved, norms, i, width)
    norm_kernels.batchnorm_update_running(running_mean, running_var, mean, var, consts[i, 1], nb)
