"""Shared fixtures. Decides, before anything imports numba, where CUDA kernels run.

Without an NVIDIA device node, numba's CUDA simulator runs the CUDA kernels in
Python (slowly: tests/backends.py keeps the shapes small there). An explicit
NUMBA_ENABLE_CUDASIM in the environment wins either way.
"""
import os

if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from backends import BACKENDS, DTYPES  # noqa: E402


@pytest.fixture(params=BACKENDS)
def backend(request):
    """Each kernel test runs once per backend: "cpu", and "cuda" when it imports."""
    return request.param


@pytest.fixture(params=DTYPES, ids=lambda d: np.dtype(d).name)
def dtype(request):
    return np.dtype(request.param)


def pytest_configure(config):
    # Under the simulator the scalar splitmix64 of kernels/_scalar.py runs on
    # NumPy uint64 scalars, which warn when they wrap; wrapping is the point.
    config.addinivalue_line(
        "filterwarnings",
        "ignore:overflow encountered in scalar:RuntimeWarning:fastbp.kernels._scalar")


# Tests that take tens of seconds each (the CUDA simulator's training runs, fresh
# processes that compile): run first, so that the two workers (pytest-xdist,
# --dist worksteal) end together instead of one finishing them alone at the end.
SLOW_FIRST = ("test_cuda_training.py", "test_cache.py", "test_compile_ahead.py", "test_a_cold_first_run", "test_mpi.py",
              "test_gemm_small.py::test_each_vector_width", "test_gpu_check.py",
              "test_golden_fits.py::test_golden_fits[")


def pytest_collection_modifyitems(config, items):
    items.sort(key=lambda item: not any(mark in item.nodeid for mark in SLOW_FIRST))
    # The simulator runs the CUDA kernels as Python, with NumPy scalars: a float64
    # run takes the same code path as float32 and proves nothing new, at the
    # price of minutes. On a GPU both dtypes run (they compile differently).
    if os.environ.get("NUMBA_ENABLE_CUDASIM", "0") != "1":
        return
    skip = pytest.mark.skip(reason="CUDA simulator: float64 repeats the float32 code path")
    for item in items:
        params = getattr(item, "callspec", None)
        params = params.params if params else {}
        if params.get("backend") == "cuda" and "dtype" in params:
            try:
                is64 = np.dtype(params["dtype"]) == np.float64
            except TypeError:
                continue
            if is64:
                item.add_marker(skip)
