"""Thread count: numba's pool (the parallel kernels) and the BLAS pool (large products).

``set_num_threads(n)`` sets both. The environment variables NUMBA_NUM_THREADS
and OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS), set before Python starts, do the
same for a whole process; NUMBA_NUM_THREADS is also the upper bound for
``set_num_threads``.

The compiled training loop runs on BLAS's threads alone (kernels/_jit.py), so
for training the BLAS limit is the one that counts. The products call the BLAS
that SciPy brings (``scipy.linalg.cython_blas``), which can be a copy apart
from NumPy's and is loaded only when a kernel first needs it: it is loaded here
first, so that the limit reaches it.
"""
import numba
from threadpoolctl import threadpool_limits


def set_num_threads(n):
    """Use ``n`` threads in numba's parallel kernels and in every BLAS library of the process.

    Parameters
    ----------
    n : int
        The thread count, from 1 to ``NUMBA_NUM_THREADS`` (set before Python starts).

    Raises
    ------
    ValueError
        ``n`` is not a positive integer, or is above ``NUMBA_NUM_THREADS``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive integer; got {n!r}")
    if n > numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"n must be at most NUMBA_NUM_THREADS={numba.config.NUMBA_NUM_THREADS} "
                         f"(set that environment variable before starting Python to allow more); got {n}")
    numba.set_num_threads(n)
    import scipy.linalg.cython_blas  # noqa: F401  (the BLAS of the compiled products)

    threadpool_limits(limits=n, user_api="blas")


def get_num_threads():
    """Threads numba's parallel kernels use now.

    Returns
    -------
    int
        The thread count of numba's pool.
    """
    return numba.get_num_threads()
