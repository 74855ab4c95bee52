"""Functions only compiled code calls are compiled without numba's Python and C wrappers
(``kernels/_jit.py``, ``jit(callers=...)``), and a public kernel the training loop calls by
address gets a twin without them, whose cache entries stay apart from the public kernel's."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastbp
from fastbp.backends import _cpu_loop, _kernel_tables
from fastbp.kernels import registry as R
from fastbp.kernels._jit import CompiledOnly, compiled_only, jit
from fastbp.kernels.cpu import dense, gemm_small
from fastbp.kernels.cpu import losses as _losses


def _wrappers(cres):
    """Which of numba's wrappers a compile result holds: (Python's, C's)."""
    lib, fndesc = cres.library, cres.fndesc
    return (lib.get_pointer_to_function(fndesc.llvm_cpython_wrapper_name) != 0,
            lib.get_pointer_to_function(fndesc.llvm_cfunc_wrapper_name) != 0)


def _fit_small(dtype="float32"):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((32, 3)).astype(dtype)
    y = (X[:, 0] > 0).astype(np.int64)
    model = fastbp.Sequential([fastbp.Dense(3, 4, activation="relu"), fastbp.Dropout(0.25), fastbp.Dense(4, 2)],
                              seed=0, dtype=dtype)
    model.compile("softmax_cross_entropy", fastbp.SGD(0.1))
    model.fit(X, y, epochs=1, batch_size=8, verbose=0)
    model.evaluate(X, y)
    return model


def test_the_kernels_the_loop_calls_by_address_have_no_wrappers():
    model = _fit_small()
    loss, optimizer = R.LOSS_SCE, R.OPT_SGD
    checked = 0
    for name in ("kernels", "dropout_ops"):
        for field in _kernel_tables.fields(name):
            # A per-code field (a dense layer's tanh) for one code.
            for code in _kernel_tables.field_codes(name, field, (R.ACTIVATIONS["tanh"],)):
                kernel, sig = _kernel_tables._entry(name, field, np.float32, loss, optimizer, code)
                assert isinstance(kernel, CompiledOnly), (name, field)
                assert _wrappers(kernel.get_compile_result(sig)) == (False, False), (name, field)
                checked += 1
    assert checked == 11
    # The levels the backend calls from Python keep the Python wrapper alone; the loop's inner
    # levels (loaded with their caller, so compiled or loaded here) have neither.
    for level in (_cpu_loop.train_batches, _cpu_loop.evaluate_batches):
        assert level.overloads, level.py_func.__name__
        assert {_wrappers(cres) for cres in level.overloads.values()} == {(True, False)}, level.py_func.__name__
    lowered = model.lowered()
    net = _kernel_tables.with_kernels(lowered.net, model.dtype, loss, optimizer)
    ws = lowered.workspace(2, model.dtype, True, model.loss.kind, model.buffers)
    for level, args in ((_cpu_loop.forward, (net, ws, model.theta, 2, np.bool_(True), np.int64(0), np.int64(0))),
                        (_cpu_loop.update_running, (net, ws, 2))):
        sig = tuple(level.typeof_pyval(a) for a in args)
        level.compile(sig)
        assert _wrappers(level.overloads[sig]) == (False, False), level.py_func.__name__


def test_a_python_call_of_a_compiled_only_function_raises_and_names_it():
    x = np.ones((4, 3), np.float32)
    with pytest.raises(TypeError, match=r"gemm_small\._gemm is compiled for calls from compiled code only"):
        gemm_small._gemm(x, x, x)
    with pytest.raises(TypeError, match=r"_cpu_loop\.forward is compiled for calls from compiled code only"):
        _cpu_loop.forward(1, 2, 3)
    # The public kernel stays callable from Python; its twin for the loop's tables does not.
    w, b, out = np.ones((3, 2), np.float32), np.zeros(2, np.float32), np.empty((4, 2), np.float32)
    dense.dense_act_forward(out, x, w, b, R.ACTIVATIONS["relu"], 0.0)
    np.testing.assert_array_equal(out, np.full((4, 2), 3.0, np.float32))
    twin = compiled_only(dense.dense_act_forward)
    assert twin is not dense.dense_act_forward and compiled_only(twin) is twin
    assert compiled_only(dense.dense_act_forward) is twin  # one per process
    with pytest.raises(TypeError, match=r"this copy of fastbp\.kernels\.cpu\.dense\.dense_act_forward is the "
                                        r"training loop's, .* call fastbp\.kernels\.cpu\.dense\.dense_act_forward itself"):
        twin(out, x, w, b, R.ACTIVATIONS["relu"], 0.0)


def test_what_compile_returns_for_a_compiled_only_function_refuses_a_python_call_too():
    # numba's compile returns the compiled function's CPython wrapper, which a compiled-only
    # function lacks: called, it would jump to address 0.
    from numba import typeof

    x = np.ones(4, np.float32)
    sig = (typeof(x), typeof(np.int64(4)))
    compiled = _losses._inverse_total.compile(sig)
    assert sig in _losses._inverse_total.overloads
    with pytest.raises(TypeError, match=r"losses\._inverse_total is compiled for calls from compiled code only"):
        compiled(x, np.int64(4))


def test_callers_must_be_a_known_kind():
    with pytest.raises(ValueError, match=r"callers must be one of \['any', 'compiled', 'python'\], got 'cpu'"):
        jit(callers="cpu")


_TWIN_FIRST = """
import numpy as np
from numba import njit, typeof
from fastbp.kernels._jit import compiled_only
from fastbp.kernels.cpu import dense

twin = compiled_only(dense.dense_act_forward)
x, w = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
b, out = np.zeros(2, np.float32), np.empty((4, 2), np.float32)
# The very types of a Python call of the public kernel with these arrays.
twin.compile(tuple(typeof(a) for a in (out, x, w, b, np.int64(1), 0.0)))
"""

_PUBLIC_AFTER = """
import numpy as np
from fastbp.kernels.cpu import dense

x, w = np.ones((4, 3), np.float32), np.ones((3, 2), np.float32)
b, out = np.zeros(2, np.float32), np.empty((4, 2), np.float32)
dense.dense_act_forward(out, x, w, b, np.int64(1), 0.0)
print(out.sum())
"""


def test_the_public_kernel_never_loads_its_twins_cache_entry(tmp_path):
    # numba keys a cache entry by function and signature, not by options: had the twin cached
    # under the public kernel's name, the next process's Python call would have loaded code
    # without the Python wrapper and called address 0.
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path))
    for program in (_TWIN_FIRST, _PUBLIC_AFTER):
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(program)], env=env, capture_output=True,
                              text=True, cwd=tmp_path, timeout=300)
        assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert float(done.stdout.split()[-1]) == 24.0
    names = [n for _, _, files in os.walk(tmp_path) for n in files if "dense_act_forward" in n and n.endswith(".nbi")]
    assert len(names) == 2 and sum("compiled" in n for n in names) == 1, names
