"""Block-wide reductions through a shared-memory tree, shared by the row and loss kernels."""
from ._numba_cuda import cuda, device


@device
def block_reduce(buf, value, is_max):
    """Combine ``value`` over the threads of a 1-D block (max or sum); every thread gets the result.

    ``buf`` is a shared array with at least blockDim.x entries and blockDim.x
    a power of two. At each level of the tree the lower half of the active
    threads folds in the upper half, so the order of the additions is fixed
    and the result deterministic (no atomics). Every thread of the block must
    call this with the same ``is_max``: the loop has the same trip count in
    all of them, so no barrier sits in a divergent branch.
    """
    t = cuda.threadIdx.x
    buf[t] = value
    cuda.syncthreads()
    step = cuda.blockDim.x // 2
    while step > 0:
        if t < step:
            if is_max:
                buf[t] = max(buf[t], buf[t + step])
            else:
                buf[t] += buf[t + step]
        cuda.syncthreads()
        step //= 2
    result = buf[0]
    cuda.syncthreads()  # everyone has read buf[0] before a next reduction overwrites it
    return result
