"""Launch configurations, computed once per shape and cached.

Each helper returns a configured launch (``kernel[grid, block]``) from an
``lru_cache`` keyed on the kernel and the sizes that decide the grid, so a
training loop that calls a launcher with the same shapes every step pays one
dictionary lookup, not a grid computation and a launch-object construction.
"""
import functools

from ._numba_cuda import as_device_array, configure

# Threads per block of the elementwise kernels (activations, dropout,
# optimizers, loss gradients): a multiple of the 32-thread warp.
ELEMENTWISE_THREADS = 256
# Grid-stride kernels launch at most this many blocks and loop over the rest:
# about 8 resident waves of 256-thread blocks on a 132-SM H100, while keeping
# block scheduling cheap for very large arrays.
MAX_BLOCKS = 4096


def cdiv(a, b):
    return -(-a // b)


@functools.lru_cache(maxsize=None)
def elementwise(launch_kernel, size):
    """One thread per element, grid-stride beyond MAX_BLOCKS blocks.

    A small array gets one block of just enough warps: the same work on a GPU,
    and far fewer Python threads under the simulator.
    """
    threads = min(ELEMENTWISE_THREADS, 32 * cdiv(max(size, 1), 32))
    blocks = max(1, min(cdiv(size, threads), MAX_BLOCKS))
    return configure(launch_kernel, blocks, threads)


def pow2_threads(work, cap):
    """Threads for a block that reduces ``work`` items: a power of two (for the
    tree) from one warp up to ``cap``, no more than the work needs."""
    return min(cap, max(32, 1 << (max(work, 1) - 1).bit_length()))


@functools.lru_cache(maxsize=None)
def fixed(launch_kernel, blocks, threads):
    """A launch whose grid the caller has computed (row and tile kernels)."""
    return configure(launch_kernel, blocks, threads)


def flat(a):
    """The 1-D view of a C-contiguous device array (elementwise kernels index it flat)."""
    return a if a.ndim == 1 else a.reshape(a.size)


def dev(a):
    """``a`` as a numba device array when it is on the device; anything else unchanged.

    The unchecked launchers pass what they cannot view straight to numba,
    which copies host arrays to and from the device on every launch (slow, but
    it works); the checked entry points reject host arrays instead.
    """
    d = as_device_array(a)
    return a if d is None else d
