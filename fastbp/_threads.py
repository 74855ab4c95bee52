"""Thread count: numba's pool (the parallel kernels) and the BLAS pool (large products).

``set_num_threads(n)`` sets both. The environment variables NUMBA_NUM_THREADS
and OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS), set before Python starts, do the
same for a whole process; NUMBA_NUM_THREADS is also the upper bound for
``set_num_threads``.
"""
import numba


def set_num_threads(n):
    """Use ``n`` threads in numba's parallel kernels and in BLAS (when threadpoolctl is installed)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n must be at most NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} "
                         f"(set that environment variable before starting Python to allow more); got {n}")
    numba.set_num_threads(n)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """Threads numba's parallel kernels use now."""
    return numba.get_num_threads()
