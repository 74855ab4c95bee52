"""Inverted dropout on the GPU, with the same counter-based generator as the CPU.

Forward draws u_i = hash_uniform(seed, i) (``kernels/_scalar.py``: splitmix64
of the element index) and keeps element i when u_i >= rate, scaling kept
values by 1 / (1 - rate); the mask holds that factor (0 or 1 / (1 - rate)),
so backward is dx = dout * mask.

Why a hash of (seed, i) rather than numba's per-thread xoroshiro128+ states:
it is stateless (no state array to allocate, seed and carry between steps),
the draw of element i does not depend on which thread or how many threads
compute it, so it is reproducible under any launch configuration, and it is
the very function the CPU kernel calls, so the GPU mask equals the CPU mask
bit for bit for the same seed.
"""
from .._scalar import hash_uniform
from ._launch import dev, elementwise, flat
from ._numba_cuda import cuda, kernel


@kernel
def _dropout_forward_kernel(out, mask, x, rate, keep, seed):
    """Element i: mask = keep if u_i >= rate else 0, out = x * mask; one owner per element."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        if hash_uniform(seed, i) >= rate:
            mask[i] = keep
        else:
            mask[i] = 0
        # Through the stored mask (rounded to the dtype), exactly as the CPU does.
        out[i] = x[i] * mask[i]


@kernel
def _dropout_backward_kernel(dx, dout, mask):
    """dx = dout * mask, elementwise."""
    for i in range(cuda.grid(1), dx.size, cuda.gridsize(1)):
        dx[i] = dout[i] * mask[i]


def dropout_forward(out, mask, x, rate, seed):
    """out = x * mask with mask_i = [u_i >= rate] / (1 - rate).

    x (N, O) -> out (N, O) and mask (N, O), both overwritten; 0 <= rate < 1,
    seed >= 0. The caller passes a fresh seed per step.
    """
    out, mask, x = flat(dev(out)), flat(dev(mask)), flat(dev(x))
    rate = float(rate)
    elementwise(_dropout_forward_kernel, x.size)(out, mask, x, rate, 1.0 / (1.0 - rate), int(seed))


def dropout_backward(dx, dout, mask):
    """dx = dout * mask (N, O), overwritten; the mask already holds 1 / (1 - rate)."""
    dx, dout, mask = flat(dev(dx)), flat(dev(dout)), flat(dev(mask))
    elementwise(_dropout_backward_kernel, dx.size)(dx, dout, mask)
