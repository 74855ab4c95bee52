"""What is specific to the CUDA kernels: agreement with the CPU kernels, tiling edges, device arrays.

The backend-parametrized tests (test_dense.py, test_activations.py, ...) check
every kernel against tests/reference.py on both backends. This file checks
that ``fastbp.kernels.cuda`` computes what ``fastbp.kernels`` computes, at
shapes chosen against the GPU implementation: not multiples of the GEMM tile
(64 x 64, k step 16) nor of a warp, one shape just past one block tile in every
dimension, rows wider than a softmax block, batches longer than a loss block.
Tolerances: float32 1e-5 and float64 1e-12, relative to each output's largest
magnitude (summation orders differ between the backends). Dropout masks must
be bit-identical.

Without a GPU, tests/conftest.py (and the lines below, if run alone) select
numba's CUDA simulator, which runs every GPU thread as Python: shapes stay
small and the large shape is used once.
"""
import importlib
import importlib.util
import inspect
import os
import subprocess
import sys
import time

if not (os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("numba_cuda")

import fastbp.kernels as cpu  # noqa: E402
import fastbp.kernels.cuda as gpu  # noqa: E402
from fastbp.kernels import ACTIVATIONS, KernelArgumentError  # noqa: E402
from fastbp.kernels._scalar import OUTPUT_DERIVABLE  # noqa: E402
from fastbp.kernels.cuda import _launch, _numba_cuda, activations, dense, dropout  # noqa: E402
from numba import cuda  # noqa: E402

F32, F64 = np.dtype(np.float32), np.dtype(np.float64)
KERNEL_NAMES = [name for name in cpu.__all__ if hasattr(getattr(cpu, name), "unchecked")]
RTOL = {F32: 1e-5, F64: 1e-12}
ALPHA = {"leaky_relu": 0.1, "elu": 1.3}

# (N, I, O): multiples of no tile size, a batch of one, a single output, and
# one shape just past one 64 x 64 block tile in every dimension (k too: 70 is
# five k steps of 16, the last partial).
SMALL = [(5, 23, 7), (1, 4, 3), (6, 5, 1)]
PAST_ONE_TILE = (67, 70, 65)
assert PAST_ONE_TILE[0] > dense.BM and PAST_ONE_TILE[2] > dense.BN and PAST_ONE_TILE[1] > dense.BM


def close(got, want, dtype, what=""):
    rtol = RTOL[np.dtype(dtype)]
    scale = max(1.0, float(np.max(np.abs(want), initial=0.0)))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * scale, err_msg=what)


def _outputs(name, args):
    spec = getattr(cpu, name).spec
    return [a for (arg, _), a in zip(spec, args) if arg in spec.writes]


def _copied(args, copy):
    """``args`` with each array replaced by ``copy(array)``; an array passed twice stays one array."""
    copies = {}
    for a in args:
        if isinstance(a, np.ndarray) and id(a) not in copies:
            copies[id(a)] = copy(a)
    return [copies.get(id(a), a) for a in args]


def run_cpu(name, *args):
    """Run the CPU kernel on copies of the arrays; return its outputs."""
    args = _copied(args, np.copy)
    getattr(cpu, name)(*args)
    return _outputs(name, args)


def run_gpu(name, *args):
    """Copy the arrays to the device, run the CUDA kernel, return its outputs on the host."""
    args = _copied(args, cuda.to_device)
    getattr(gpu, name)(*args)
    return [d.copy_to_host() if d.size else np.empty(d.shape, d.dtype) for d in _outputs(name, args)]


def both(name, *args):
    """(CPU outputs, GPU outputs) of kernel ``name`` on the same inputs."""
    return run_cpu(name, *args), run_gpu(name, *args)


def as_2d(a):
    """A 2-D view for the CPU side: its kernels are compiled for 2-D arrays by the other
    tests already, and an elementwise kernel does not care about the shape."""
    return a.reshape(1, -1) if isinstance(a, np.ndarray) and a.ndim != 2 else a


def layer(rng, shape, dtype):
    n, i, o = shape
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b


class OnlyInterface:
    """Exposes only ``__cuda_array_interface__``, like a CuPy array or a PyTorch CUDA tensor."""

    def __init__(self, device_array, readonly=False):
        self._owner = device_array
        if hasattr(device_array, "__cuda_array_interface__"):
            interface = dict(device_array.__cuda_array_interface__)
        else:
            # The simulator's device arrays are host memory and export no CUDA
            # interface: describe that memory the way an exporter would.
            host = device_array.__array_interface__
            interface = {"shape": host["shape"], "typestr": host["typestr"], "data": host["data"],
                         "strides": host["strides"], "version": 3, "stream": None}
        interface["data"] = (interface["data"][0], readonly)
        self.__cuda_array_interface__ = interface


# ----------------------------------------------------------------------------
# Packaging
# ----------------------------------------------------------------------------

def test_cpu_package_never_imports_the_cuda_backend():
    code = ("import sys, fastbp.kernels; print(sorted(m for m in sys.modules "
            "if m.startswith(('fastbp.kernels.cuda', 'numba.cuda', 'numba_cuda'))))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_missing_numba_cuda_gives_a_clear_import_error(monkeypatch):
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "numba_cuda" else real_find_spec(name, *a))
    for module in [m for m in sys.modules if m.startswith("fastbp.kernels.cuda")]:
        monkeypatch.delitem(sys.modules, module)  # restored after the test
    with pytest.raises(ImportError, match=r"pip install fastbp\[cuda\]"):
        importlib.import_module("fastbp.kernels.cuda")


def test_same_public_names_signatures_and_unchecked_launchers():
    import inspect

    for name in KERNEL_NAMES:
        checked = getattr(gpu, name)
        assert inspect.signature(checked) == inspect.signature(getattr(cpu, name)), name
        assert callable(checked.unchecked) and checked.unchecked is not checked, name
        assert checked.spec is getattr(cpu, name).spec, name


# ----------------------------------------------------------------------------
# Dense: the three tiled products, bias reduction, fused epilogues
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype",
                         [(SMALL[0], F32), (SMALL[0], F64), (SMALL[1], F32), (SMALL[2], F64)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v.name)
def test_dense_products_match_cpu(shape, dtype):
    rng = np.random.default_rng(sum(shape))
    n, i, o = shape
    x, w, b = layer(rng, shape, dtype)
    (want,), (got,) = both("dense_forward", np.full((n, o), 7, dtype), x, w, b)
    close(got, want, dtype, f"x @ w + b {shape}")

    dout = rng.standard_normal((n, o)).astype(dtype)
    grads = (np.full((n, i), 7, dtype), np.full((i, o), 7, dtype), np.full(o, 7, dtype))
    want, got = both("dense_backward", *grads, dout, x, w)
    for g, c, what in zip(got, want, ("dx = dout @ w.T", "dw = x.T @ dout", "db = dout.sum(0)")):
        close(g, c, dtype, f"{what} {shape}")


def test_zero_size_dx_skips_the_input_gradient():
    rng = np.random.default_rng(1)
    x, w, _ = layer(rng, SMALL[0], F32)
    dout = rng.standard_normal((5, 7)).astype(F32)
    want, got = both("dense_backward", np.empty((0, 0), F32), np.full((23, 7), 7, F32),
                     np.full(7, 7, F32), dout, x, w)
    close(got[1], want[1], F32)
    close(got[2], want[2], F32)


SMALL_FUSED = (3, 9, 5)  # one k step: keeps the simulator quick, still no tile multiple


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_fused_epilogues_match_cpu(activation, dtype):
    rng = np.random.default_rng(3)
    code, alpha = ACTIVATIONS[activation], ALPHA.get(activation, 0.0)
    n, i, o = SMALL_FUSED
    x, w, b = layer(rng, SMALL_FUSED, dtype)
    (want_out,), (got_out,) = both("dense_act_forward", np.full((n, o), 7, dtype), x, w, b, code, alpha)
    close(got_out, want_out, dtype, f"f(x @ w + b), {activation}")
    # The fused backward: every activation in float32, where the float64
    # scalar formulas meet float32 arrays; float64 once (the simulator is slow).
    if code not in OUTPUT_DERIVABLE or (dtype == F64 and activation != "sigmoid"):
        return
    # dz aliases dout: the first backward pass transforms the gradient in place.
    dz = rng.standard_normal((n, o)).astype(dtype)
    grads = (np.full((n, i), 7, dtype), np.full((i, o), 7, dtype), np.full(o, 7, dtype))
    want, got = both("dense_act_backward", *grads, dz, dz, want_out, x, w, code, alpha)
    for g, c, what in zip(got, want, ("dx", "dw", "db", "dz")):
        close(g, c, dtype, f"{what}, {activation}")


def test_launch_configuration_is_cached_per_shape():
    rng = np.random.default_rng(4)
    x, w, b = (cuda.to_device(a) for a in layer(rng, (2, 3, 4), F32))
    out = cuda.device_array((2, 4), F32)
    gpu.dense_forward.unchecked(out, x, w, b)
    misses = _launch.fixed.cache_info().misses
    gpu.dense_forward.unchecked(out, x, w, b)
    assert _launch.fixed.cache_info().misses == misses


# ----------------------------------------------------------------------------
# Activations
# ----------------------------------------------------------------------------

ELEMENTWISE = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu", "silu", "selu"]


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_activations_match_cpu(name, dtype):
    rng = np.random.default_rng(5)
    extra = (ALPHA[name],) if name in ALPHA else ()
    for shape in [(5, 7), (37,), (2, 3, 5)]:  # any shape: the launchers index flat
        x = (3 * rng.standard_normal(shape)).astype(dtype)
        out = np.full(shape, 7, dtype)
        (want,) = run_cpu(f"{name}_forward", as_2d(out), as_2d(x), *extra)
        (got,) = run_gpu(f"{name}_forward", out, x, *extra)
        close(got, want.reshape(shape), dtype, f"{name} forward {shape}")
        dout = rng.standard_normal(shape).astype(dtype)
        if name == "identity":
            args = (dout,)
        elif name in ("gelu", "silu"):
            args = (dout, x)
        else:
            args = (dout, got, *extra)
        (want_dx,) = run_cpu(f"{name}_backward", as_2d(out), *map(as_2d, args))
        (got_dx,) = run_gpu(f"{name}_backward", out, *args)
        close(got_dx, want_dx.reshape(shape), dtype, f"{name} backward {shape}")


# ----------------------------------------------------------------------------
# Losses
# ----------------------------------------------------------------------------

def _loss_args(name, rng, shape, dtype, weighted):
    n, o = shape
    weight = rng.uniform(0.2, 2.0, n).astype(dtype) if weighted else np.empty(0, dtype)
    z = (2 * rng.standard_normal(shape)).astype(dtype)
    if name == "softmax_cross_entropy":
        labels = rng.integers(0, o, n)
        probs = np.empty(shape, dtype)
        cpu.softmax_cross_entropy_forward(np.zeros(1, dtype), probs, z, labels, weight)
        return ((np.full(1, 7, dtype), np.full(shape, 7, dtype), z, labels, weight),
                (np.full(shape, 7, dtype), probs, labels, weight))
    if name == "poisson":
        target = rng.poisson(1.5, shape).astype(dtype)
    else:
        target = rng.uniform(0, 1, shape).astype(dtype) if name == "binary_cross_entropy" \
            else rng.standard_normal(shape).astype(dtype)
    extra = (0.8,) if name == "huber" else ()  # delta: some errors inside, some beyond
    return ((np.full(1, 7, dtype), z, target, weight, *extra), (np.full(shape, 7, dtype), z, target, weight, *extra))


LOSSES = ["mse", "softmax_cross_entropy", "binary_cross_entropy", "poisson", "huber", "mae"]


@pytest.mark.parametrize("weighted", [False, True], ids=["unweighted", "weighted"])
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
@pytest.mark.parametrize("name", LOSSES)
def test_losses_match_cpu(name, dtype, weighted):
    rng = np.random.default_rng(7)
    forward_args, backward_args = _loss_args(name, rng, (5, 7), dtype, weighted)
    want, got = both(f"{name}_forward", *forward_args)
    for g, c in zip(got, want):  # the loss, and probs for softmax cross-entropy
        close(g, c, dtype, f"{name} forward")
    (want_grad,), (got_grad,) = both(f"{name}_backward", *backward_args)
    close(got_grad, want_grad, dtype, f"{name} backward")


@pytest.mark.skipif(not _numba_cuda.SIMULATOR, reason="the simulator's shared arrays; a GPU has real ones")
def test_every_simulated_thread_of_a_block_gets_the_same_shared_array(monkeypatch):
    # The simulator allocates a block's shared array when the first thread asks
    # for it. A thread switch during that allocation must not give two threads
    # two arrays (the weight total of a loss would come out as garbage).
    # A slow allocation forces the switch every time.
    _, backward_args = _loss_args("softmax_cross_entropy", np.random.default_rng(12), (40, 3), F64, True)
    want = run_cpu("softmax_cross_entropy_backward", *backward_args)
    allocate = np.empty

    def slow_empty(*args, **kwargs):
        time.sleep(0.02)  # releases the GIL: the block's other threads run meanwhile
        return allocate(*args, **kwargs)

    monkeypatch.setattr(np, "empty", slow_empty)
    got = run_gpu("softmax_cross_entropy_backward", *backward_args)
    monkeypatch.undo()
    close(got[0], want[0], F64, "weighted softmax cross-entropy backward")


def test_loss_stays_on_the_device_and_is_reproducible():
    rng = np.random.default_rng(9)
    logits = cuda.to_device((1e4 * rng.standard_normal((6, 4))).astype(F32))  # huge logits: finite loss
    labels = cuda.to_device(rng.integers(0, 4, 6))
    probs, loss = cuda.device_array((6, 4), F32), cuda.device_array(1, F32)
    none = cuda.device_array(0, F32)
    gpu.softmax_cross_entropy_forward(loss, probs, logits, labels, none)
    first = loss.copy_to_host()
    gpu.softmax_cross_entropy_forward(loss, probs, logits, labels, none)
    assert np.isfinite(first[0]) and first[0] > 0
    assert loss.copy_to_host().tobytes() == first.tobytes()


def test_unchecked_out_of_range_label_gives_nan_not_a_stray_access():
    rng = np.random.default_rng(10)
    logits = cuda.to_device(rng.standard_normal((4, 3)))
    labels = cuda.to_device(np.array([0, 3, 1, -1]))  # 3 and -1 are not classes of 3 outputs
    probs, loss, none = cuda.device_array((4, 3)), cuda.device_array(1), cuda.device_array(0)
    gpu.softmax_cross_entropy_forward.unchecked(loss, probs, logits, labels, none)
    assert np.isnan(loss.copy_to_host()[0])
    dlogits = cuda.to_device(np.full((4, 3), 7.0))
    gpu.softmax_cross_entropy_backward.unchecked(dlogits, probs, labels, none)
    g, p = dlogits.copy_to_host(), probs.copy_to_host()
    np.testing.assert_allclose(g[[1, 3]], p[[1, 3]] / 4)  # no label column: probs / N only


# ----------------------------------------------------------------------------
# Dropout and optimizers
# ----------------------------------------------------------------------------

# Under the simulator hash_uniform runs as Python on NumPy uint64 scalars, and
# NumPy warns about the modular wraparound that splitmix64 relies on.
IGNORE_HASH_OVERFLOW = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")


def check_dropout_against_cpu(shape, dtype, rate, seed, rng):
    x = rng.standard_normal(shape).astype(dtype)
    outputs = (np.full(shape, 7, dtype), np.full(shape, 7, dtype))
    want, got = both("dropout_forward", *outputs, x, rate, seed)
    np.testing.assert_array_equal(got[1], want[1])  # mask
    np.testing.assert_array_equal(got[0], want[0])  # out
    kept = np.count_nonzero(got[1]) / got[1].size
    assert 0 < kept < 1 and abs(kept - (1 - rate)) < 0.25
    dout = rng.standard_normal(shape).astype(dtype)
    (want_dx,), (got_dx,) = both("dropout_backward", np.full(shape, 7, dtype), dout, want[1])
    np.testing.assert_array_equal(got_dx, want_dx)


@IGNORE_HASH_OVERFLOW
@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_dropout_mask_is_the_cpu_mask_bit_for_bit(dtype):
    rng = np.random.default_rng(11)
    check_dropout_against_cpu((5, 7), dtype, 0.3, 1234, rng)
    check_dropout_against_cpu((5, 7), dtype, 0.5, 2**62 + 5, rng)

    # The mask depends on the seed, not on the launch: one block of 32
    # threads striding over 250 elements draws what the launcher's grid does.
    x = cuda.to_device(np.ones(250, dtype))
    out, mask_a, mask_b = (cuda.device_array(250, dtype) for _ in range(3))
    gpu.dropout_forward(out, mask_a, x, 0.5, 1)
    dropout._dropout_forward_kernel[1, 32](out, mask_b, x, 0.5, 2.0, 1)
    np.testing.assert_array_equal(mask_b.copy_to_host(), mask_a.copy_to_host())
    gpu.dropout_forward(out, mask_b, x, 0.5, 2)
    assert not np.array_equal(mask_b.copy_to_host(), mask_a.copy_to_host())


@pytest.mark.parametrize("dtype", [F32, F64], ids=lambda d: d.name)
def test_optimizers_match_cpu(dtype):
    rng = np.random.default_rng(12)
    shape = (13, 7)  # the GPU updates any shape as a flat vector; the CPU gets that vector

    def state(k):
        return [rng.standard_normal(shape).astype(dtype) for _ in range(k)]

    for momentum, nesterov in [(0.0, False), (0.9, False), (0.9, True)]:
        args = (*state(3), 0.1, momentum, nesterov, 0.01)
        want = run_cpu("sgd_update", *(a.ravel() if isinstance(a, np.ndarray) else a for a in args))
        got = run_gpu("sgd_update", *args)
        for g, c, what in zip(got, want, ("param", "grad", "velocity")):
            close(g.ravel(), c, dtype, f"sgd momentum={momentum} nesterov={nesterov} {what}")
    for decoupled in (False, True):
        param, grad, m = state(3)
        v = rng.uniform(0, 1, shape).astype(dtype)
        args = (param, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, 3, 0.01, decoupled)
        want = run_cpu("adam_update", *(a.ravel() if isinstance(a, np.ndarray) else a for a in args))
        got = run_gpu("adam_update", *args)
        for g, c, what in zip(got, want, ("param", "grad", "m", "v")):
            close(g.ravel(), c, dtype, f"adam decoupled={decoupled} {what}")
    for momentum, centered in [(0.0, False), (0.9, True)]:
        param, grad, buf, gavg = state(4)
        gavg *= 0.1  # v - gavg^2 > 0, as a running average keeps it
        v = rng.uniform(1, 2, shape).astype(dtype)
        args = (param, grad, v, buf, gavg, 1e-2, 0.99, 1e-8, momentum, centered, 0.01)
        want = run_cpu("rmsprop_update", *(a.ravel() if isinstance(a, np.ndarray) else a for a in args))
        got = run_gpu("rmsprop_update", *args)
        for g, c, what in zip(got, want, ("param", "grad", "square_avg", "momentum_buffer", "grad_avg")):
            close(g.ravel(), c, dtype, f"rmsprop momentum={momentum} centered={centered} {what}")
    param, grad = state(2)
    args = (param, grad, rng.uniform(0, 1, shape).astype(dtype), 1e-2, 0.1, 1e-10, 3, 0.01)
    want = run_cpu("adagrad_update", *(a.ravel() if isinstance(a, np.ndarray) else a for a in args))
    got = run_gpu("adagrad_update", *args)
    for g, c, what in zip(got, want, ("param", "grad", "state_sum")):
        close(g.ravel(), c, dtype, f"adagrad {what}")


def _python_function(compiled):
    """The Python function behind a CPU dispatcher, a CUDA kernel or a simulated kernel."""
    return getattr(compiled, "py_func", None) or compiled.fn


# (CPU loop, CUDA kernel, the scalar formulas both must call): each formula written once.
SHARED_FORMULAS = [
    ("optim", "_sgd_loop", "_sgd_kernel", ["sgd_step"]),
    ("optim", "_adam_loop", "_adam_kernel", ["adam_step"]),
    ("optim", "_rmsprop_loop", "_rmsprop_kernel", ["rmsprop_step"]),
    ("optim", "_adagrad_loop", "_adagrad_kernel", ["adagrad_step"]),
    ("norm", "_layernorm_act_forward_loop", "_layernorm_forward_kernel", ["row_mean_invstd"]),
    ("losses", "_sce_forward", "_softmax_cross_entropy_forward_kernel", ["row_max", "softmax_nll"]),
]


@pytest.mark.parametrize("module, cpu_name, cuda_name, formulas", SHARED_FORMULAS, ids=lambda v: str(v))
def test_cpu_and_cuda_kernels_call_the_same_scalar_formulas(module, cpu_name, cuda_name, formulas):
    from fastbp.kernels import _jit, _scalar

    cpu_module = importlib.import_module(f"fastbp.kernels.cpu.{module}")
    cuda_module = importlib.import_module(f"fastbp.kernels.cuda.{module}")
    for compiled in (getattr(cpu_module, cpu_name), getattr(cuda_module, cuda_name)):
        used = inspect.getclosurevars(_python_function(compiled)).globals
        for name in formulas:
            formula = getattr(_scalar, name)
            assert formula in _jit.SCALAR_FUNCTIONS, name
            assert used.get(name) is formula, f"{compiled} does not call _scalar.{name}"
        if module != "losses":
            # The optimizer and LayerNorm formulas take their square roots in _scalar.py.
            assert "math" not in used, f"{compiled} computes math of its own"


# ----------------------------------------------------------------------------
# Device arrays from other libraries, and argument errors
# ----------------------------------------------------------------------------

def test_cuda_array_interface_objects_are_used_in_place():
    rng = np.random.default_rng(13)
    x, w, b = layer(rng, (3, 4, 5), F32)
    out = cuda.to_device(np.full((3, 5), 7, F32))
    gpu.dense_forward(OnlyInterface(out), *(OnlyInterface(cuda.to_device(a)) for a in (x, w, b)))
    want = np.empty((3, 5), F32)
    cpu.dense_forward(want, x, w, b)
    close(out.copy_to_host(), want, F32)  # written through the interface: no copy

    pred, target = rng.standard_normal((3, 5)).astype(F32), rng.standard_normal((3, 5)).astype(F32)
    loss = cuda.to_device(np.zeros(1, F32))
    gpu.mse_forward(OnlyInterface(loss), OnlyInterface(cuda.to_device(pred)),
                    OnlyInterface(cuda.to_device(target)), OnlyInterface(cuda.device_array(0, F32)))
    close(loss.copy_to_host(), [np.mean((pred.astype(F64) - target) ** 2)], F32)

    param = cuda.to_device(np.ones(10, F32))
    gpu.sgd_update(OnlyInterface(param), OnlyInterface(cuda.to_device(np.ones(10, F32))),
                   OnlyInterface(cuda.device_array(10, F32)), 0.5, 0.0, False, 0.0)
    np.testing.assert_array_equal(param.copy_to_host(), np.full(10, 0.5, F32))


def _dense_args(dtype=F32, n=5, i=23, o=7):
    return [cuda.device_array((n, o), dtype), cuda.to_device(np.ones((n, i), dtype)),
            cuda.to_device(np.ones((i, o), dtype)), cuda.to_device(np.ones(o, dtype))]


@pytest.mark.parametrize("position,replacement,message", [
    (1, lambda a: np.ones((5, 23), np.float32), r"'x' must be a CUDA device array.*host NumPy"),
    (2, lambda a: cuda.to_device(np.ones((22, 7), np.float32)), r"'w' must be of size 23 on axis 0"),
    (3, lambda a: cuda.to_device(np.ones(7, np.float64)), r"'b' must be float32 like the arrays before"),
    (1, lambda a: cuda.to_device(np.ones((5, 23), np.int32)), r"'x' must be float32 or float64"),
    (2, lambda a: cuda.to_device(np.ones((23, 14), np.float32))[:, ::2], r"'w' must be C-contiguous"),
    (3, lambda a: cuda.to_device(np.ones((1, 7), np.float32)), r"'b' must be 1-D"),
    (0, lambda a: OnlyInterface(a, readonly=True), r"'out' must be writeable"),
])
def test_argument_errors_name_the_argument(position, replacement, message):
    args = _dense_args()
    args[position] = replacement(args[position])
    with pytest.raises(KernelArgumentError, match=message):
        gpu.dense_forward(*args)


def test_value_and_scalar_errors_match_the_cpu_checks():
    logits = cuda.to_device(np.zeros((4, 3)))
    probs, loss, none = cuda.device_array((4, 3)), cuda.device_array(1), cuda.device_array(0)
    with pytest.raises(KernelArgumentError, match=r"'labels' must be class labels in \[0, 3\)"):
        labels = cuda.to_device(np.array([0, 1, 3, 2]))
        gpu.softmax_cross_entropy_forward(loss, probs, logits, labels, none)
    with pytest.raises(KernelArgumentError, match=r"'loss' must be a one-element array"):
        gpu.mse_forward(cuda.device_array(2), logits, logits, none)
    with pytest.raises(KernelArgumentError, match=r"'weight' must be finite and non-negative"):
        gpu.mse_forward(loss, logits, logits, cuda.to_device(np.array([1.0, -1.0, 1.0, 1.0])))
    args = _dense_args(F64)
    grads = [cuda.device_array(s) for s in [(5, 23), (23, 7), (7,), (5, 7)]]
    with pytest.raises(KernelArgumentError, match=r"'activation' must be an activation whose"):
        gpu.dense_act_backward(*grads, args[0], args[0], args[1], args[2], ACTIVATIONS["gelu"], 0.0)
    with pytest.raises(KernelArgumentError, match=r"'rate' must be in \[0, 1\)"):
        gpu.dropout_forward(args[0], cuda.device_array((5, 7)), args[0], 1.0, 3)
    with pytest.raises(TypeError, match=r"takes 4 arguments; got 3"):
        gpu.dense_forward(*args[:3])


# ----------------------------------------------------------------------------
# Launches of several blocks: row kernels, grid-stride loops, long batches, and
# a GEMM past one block tile. Last in the file because, under the simulator, a
# launch of several blocks leaves later launches in the same process slower
# (simulator threading); the tests above all launch single blocks.
# ----------------------------------------------------------------------------

@pytest.mark.parametrize("shape,dtype", [((3, 7), F32), ((3, 7), F64), ((1, 1), F64), ((2, 130), F32)],
                         ids=lambda v: "x".join(map(str, v)) if isinstance(v, tuple) else v.name)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_row_softmax_matches_cpu(name, shape, dtype):
    # 130 columns: wider than a 128-thread row block, so threads stride the row.
    rng = np.random.default_rng(6)
    x = (4 * rng.standard_normal(shape)).astype(dtype)
    (y_cpu,), (y_gpu,) = both(f"{name}_forward", np.full(shape, 7, dtype), x)
    close(y_gpu, y_cpu, dtype, f"{name} forward")
    dout = rng.standard_normal(shape).astype(dtype)
    (want,), (got,) = both(f"{name}_backward", np.full(shape, 7, dtype), dout, y_cpu)
    close(got, want, dtype, f"{name} backward")


def test_grid_stride_loops_cover_arrays_larger_than_the_grid():
    # Two blocks of 32 threads for 1000 elements: each thread takes ~16.
    x = np.linspace(-3, 3, 1000)
    out = cuda.to_device(np.full(1000, 7.0))
    activations._map_forward_kernel[2, 32](out, cuda.to_device(x), ACTIVATIONS["tanh"], 0.0)
    close(out.copy_to_host(), np.tanh(x), F64)


@IGNORE_HASH_OVERFLOW
def test_dropout_mask_across_several_blocks_is_the_cpu_mask():
    check_dropout_against_cpu((2, 350), F32, 0.5, 77, np.random.default_rng(14))


@pytest.mark.parametrize("name,shape", [("mse", (130, 2)), ("softmax_cross_entropy", (260, 2))])
def test_losses_over_batches_longer_than_a_block(name, shape):
    # More than the 256 threads of a single-block forward: 260 elements for the
    # flat (n, o) loop of MSE (and BCE), 260 rows for the row-per-thread softmax
    # cross-entropy. The weighted backward runs several blocks that each sum the
    # sample weights.
    rng = np.random.default_rng(8)
    forward_args, backward_args = _loss_args(name, rng, shape, F32, weighted=True)
    want, got = both(f"{name}_forward", *forward_args)
    for g, c in zip(got, want):
        close(g, c, F32, f"{name} forward")
    (want_grad,), (got_grad,) = both(f"{name}_backward", *backward_args)
    close(got_grad, want_grad, F32, f"{name} backward")


def test_dense_products_past_one_block_tile_match_cpu():
    test_dense_products_match_cpu(PAST_ONE_TILE, F32)


def test_the_cuda_target_prefers_numba_cuda_mlir_where_it_can_run():
    from fastbp.kernels.cuda._numba_cuda import TARGET, choose_target

    has_mlir = {"numba_cuda_mlir": object()}.get
    none = {}.get
    assert choose_target({}, has_mlir) == "numba-cuda-mlir"
    assert choose_target({}, none) == "numba-cuda"
    # The simulator is numba-cuda's alone; an explicit choice wins.
    assert choose_target({"NUMBA_ENABLE_CUDASIM": "1"}, has_mlir) == "numba-cuda"
    assert choose_target({"FASTBP_CUDA_TARGET": "numba-cuda"}, has_mlir) == "numba-cuda"
    with pytest.raises(ImportError, match="FASTBP_CUDA_TARGET must be one of"):
        choose_target({"FASTBP_CUDA_TARGET": "cupy"}, none)
    if os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        assert TARGET == "numba-cuda"
