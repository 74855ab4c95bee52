"""Run a kernel on a backend with host arrays, so every kernel test can run on CUDA too.

``call(backend, name, *args)`` takes NumPy arrays whatever the backend: on
"cpu" it calls the checked ``fastbp.kernels.<name>``; on "cuda" it copies the
arrays to the device, calls ``fastbp.kernels.cuda.<name>`` with the same
argument order, and copies the outputs (the arguments the kernel's spec
``writes``) back into the host arrays. The "cuda" backend is listed only
when ``fastbp.kernels.cuda`` imports; it runs on a GPU when the machine has one
and under numba's CUDA simulator otherwise (tests/conftest.py decides which,
before numba is imported), where each GPU thread is a Python thread and shapes
must stay small: ``shapes(backend)``.

Also here: the tolerances per dtype and the central-difference gradient check
that every backward kernel test uses.
"""
import importlib
import os

import numpy as np
import pytest

import fastbp.kernels


def _import_cuda_kernels():
    try:
        module = importlib.import_module("fastbp.kernels.cuda")
    except ImportError:
        return None
    # A kernels/cuda/ folder without its __init__.py (a backend still being
    # written) imports as an empty namespace package: not a backend yet.
    if getattr(module, "__file__", None) is None:
        return None
    return module


_CUDA = _import_cuda_kernels()
BACKENDS = ["cpu"] + (["cuda"] if _CUDA is not None else [])
# FASTBP_TEST_BACKENDS=cpu (comma-separated names) narrows the run, e.g. to
# leave out the simulator while working on the CPU kernels.
if os.environ.get("FASTBP_TEST_BACKENDS"):
    BACKENDS = [b for b in BACKENDS if b in os.environ["FASTBP_TEST_BACKENDS"].split(",")]
CUDA_SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"

# Dense layer shapes (N, I, O). Batch of one, sizes that are multiples of no
# tile or vector width, a single output, and shapes past every threshold of the
# CPU kernels: BLAS instead of loop nests (N I O >= BLAS_MIN_FLOPS), and, for
# the largest, parallel elementwise kernels on its (N, O) output
# (N O >= PARALLEL_MIN_ELEMENTS). test_dense.py and test_optim.py hold these
# lists to that promise, reading the thresholds from the kernels.
DENSE_SHAPES = [(1, 23, 7), (5, 23, 7), (5, 23, 1), (40, 50, 40), (600, 130, 70)]
# Gradient checks re-run the forward pass twice per checked entry: the awkward
# shapes and one on the BLAS path.
GRAD_DENSE_SHAPES = [(1, 23, 7), (5, 23, 7), (5, 23, 1), (40, 50, 40)]

# Under the simulator every CUDA thread is a Python thread: one launch of a
# 256-thread GEMM block costs about half a second of CPU whatever the shape.
# The same awkward cases, small; a test parametrized over activations or losses
# passes ``rotate`` (its parameters' index) to get one of them in turn, so that
# the parametrization as a whole covers all three. Tests parametrized over the
# dtype alone take all three: the simulator runs float32 only (conftest.py).
SMALL_DENSE_SHAPES = [(1, 3, 2), (5, 23, 7), (4, 6, 1)]
SMALL_GRAD_DENSE_SHAPES = [(5, 23, 7)]


# The simulator runs the shared scalar math (kernels/_scalar.py) as plain
# Python, exactly as the CPU tests already exercise it: sweeping every
# activation through a simulated GEMM adds minutes and checks nothing new. The
# GEMM tests there sample a linear, a kinked, an output-derived and an
# input-derived activation; a GPU runs them all, on its own math library.
SIMULATOR_ACTIVATIONS = ("identity", "relu", "sigmoid", "gelu")


def _simulated(backend):
    return backend == "cuda" and CUDA_SIMULATOR


def skip_unsampled_activation(backend, activation):
    """Skip a simulated GEMM test of an activation outside SIMULATOR_ACTIVATIONS."""
    if _simulated(backend) and activation not in SIMULATOR_ACTIVATIONS:
        pytest.skip(f"CUDA simulator: GEMM tests sample the activations {SIMULATOR_ACTIVATIONS}")


def shapes(backend, rotate=None):
    """Dense shapes (N, I, O) to test on ``backend``; see SMALL_DENSE_SHAPES for ``rotate``."""
    if not _simulated(backend):
        return DENSE_SHAPES
    if rotate is None:
        return SMALL_DENSE_SHAPES
    return [SMALL_DENSE_SHAPES[rotate % len(SMALL_DENSE_SHAPES)]]


def grad_shapes(backend):
    """Dense shapes (N, I, O) for central-difference gradient checks on ``backend``."""
    return SMALL_GRAD_DENSE_SHAPES if _simulated(backend) else GRAD_DENSE_SHAPES


def matrix_shapes(backend, rotate=None):
    """(N, O) shapes for elementwise and row-wise kernels: the outputs of the dense shapes."""
    return [(n, o) for n, _, o in shapes(backend, rotate)]


def grad_matrix_shapes(backend):
    return [(n, o) for n, _, o in grad_shapes(backend)]


def call(backend, name, *args):
    """Run kernel ``name`` on ``backend``; outputs land in the host arrays passed."""
    if backend == "cpu":
        getattr(fastbp.kernels, name)(*args)
        return
    if backend != "cuda":
        raise ValueError(f"unknown backend {backend!r}")
    from numba import cuda

    spec = getattr(fastbp.kernels, name).spec
    on_device = {}  # by id, so that an array passed twice (dz is dout) stays one array
    device_args = []
    for a in args:
        if isinstance(a, np.ndarray):
            if id(a) not in on_device:
                on_device[id(a)] = cuda.to_device(a)
            device_args.append(on_device[id(a)])
        else:
            device_args.append(a)
    getattr(_CUDA, name)(*device_args)
    cuda.synchronize()
    for (arg, _), host, device in zip(spec, args, device_args):
        if arg in spec.writes and isinstance(host, np.ndarray) and host.size:
            device.copy_to_host(host)


# Tolerances of a kernel against the float64 reference, per dtype: relative,
# and absolute as a fraction of the largest reference magnitude (so that
# entries that cancel to near zero are judged against the scale of the terms).
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
DTYPES = [np.float32, np.float64]


def assert_close(actual, expected, dtype, scale=None, err_msg=""):
    """Compare a kernel result with a float64 reference at the tolerance of ``dtype``."""
    expected = np.asarray(expected, dtype=np.float64)
    rtol = RTOL[np.dtype(dtype)]
    if scale is None:
        finite = np.abs(expected[np.isfinite(expected)])
        scale = max(1.0, float(finite.max())) if finite.size else 1.0
    np.testing.assert_allclose(np.asarray(actual, dtype=np.float64), expected, rtol=rtol,
                               atol=rtol * scale, err_msg=err_msg)


# Central differences in float64: the truncation error is O(eps^2) and the
# rounding error O(1e-16 |L| / eps), both far below GRAD_RTOL with eps = 1e-6.
GRAD_EPS = 1e-6
GRAD_RTOL = 1e-6
GRAD_ENTRIES = 8  # checked entries per array


def check_gradients(backend, loss, pairs, rng, err_msg="", degenerate=False):
    """Check analytic gradients against central differences of ``loss()``.

    ``pairs`` is a sequence of (name, param, analytic): ``analytic`` should be
    dL/dparam, and ``loss()`` evaluates L from the current contents of every
    ``param`` (float64 arrays, modified in place and restored).

    For GRAD_ENTRIES random entries t of each param, the derivative is
    (L(t + e) - L(t - e)) / (2 e). Under the CUDA simulator, where a forward
    pass costs Python threads, one random direction d through all params at
    once replaces the entries: (L(p + e d) - L(p - e d)) / (2 e) = <dL/dp, d>,
    which an error in any entry of any gradient changes.

    Unless the caller declares the case ``degenerate`` (L constant in the
    params), some derivative must be clearly non-zero: a check of zeros would
    pass for a kernel writing zeros.
    """
    for name, param, analytic in pairs:
        assert param.dtype == np.float64 and analytic.shape == param.shape, name
    numeric, expected, where, magnitude = [], [], [], 1.0
    if _simulated(backend):
        directions = [rng.standard_normal(param.shape) for _, param, _ in pairs]
        derivative, size = _central_difference(
            loss, [(param, slice(None), d) for (_, param, _), d in zip(pairs, directions)])
        numeric.append(derivative)
        expected.append(sum(float(np.sum(a * d)) for (_, _, a), d in zip(pairs, directions)))
        where.append("a random direction")
        magnitude = max(magnitude, size)
    else:
        for name, param, analytic in pairs:
            flat, grad = param.reshape(-1), analytic.reshape(-1)
            assert np.shares_memory(flat, param)
            for i in rng.choice(flat.size, size=min(GRAD_ENTRIES, flat.size), replace=False):
                derivative, size = _central_difference(loss, [(flat, i, 1.0)])
                numeric.append(derivative)
                expected.append(grad[i])
                where.append(f"{name}[{np.unravel_index(i, param.shape)}]")
                magnitude = max(magnitude, size)
    numeric, expected = np.array(numeric), np.array(expected)
    # Rounding in L itself is relative to |L|: the tolerance scales with it.
    scale = max(magnitude, float(np.abs(numeric).max()))
    np.testing.assert_allclose(expected, numeric, rtol=GRAD_RTOL, atol=GRAD_RTOL * scale,
                               err_msg=f"{err_msg}: analytic vs numeric at {where}")
    if not degenerate:
        assert np.abs(numeric).max() > 1e-3, f"{err_msg}: degenerate check, every derivative is ~0"


def _central_difference(loss, steps):
    """(L(p + e d) - L(p - e d)) / (2 e) and max |L|, moving array[index] by e d for each step."""
    saved = [np.copy(array[index]) for array, index, _ in steps]

    def moved(sign):
        for (array, index, d), s0 in zip(steps, saved):
            array[index] = s0 + sign * GRAD_EPS * d
        return loss()

    plus, minus = moved(1), moved(-1)
    for (array, index, _), s0 in zip(steps, saved):
        array[index] = s0
    return (plus - minus) / (2 * GRAD_EPS), max(abs(plus), abs(minus))


def dyadic(rng, shape, numerator, denominator):
    """Random multiples of 1/denominator in [-numerator, numerator] / denominator.

    Sums of a few hundred such products are exact in float64, which lets a test
    place every pre-activation away from a kink by construction.
    """
    return rng.integers(-numerator, numerator + 1, size=shape) / denominator


def away_from_zero(rng, shape, low=0.1, high=3.0):
    """Random values with low <= |x| <= high and random signs: no kink at 0 is touched."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(low, high, size=shape)
