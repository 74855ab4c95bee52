"""Threads: one pool at a time in the compiled loops, the same parameters whatever numba's thread count.

The training, prediction and evaluation loops call BLAS for the products and the
``*_serial`` twins of the parallel kernels for everything else, so that numba's
OpenMP workers never wait (spinning, in some runtimes) between two BLAS calls
(kernels/_jit.py says why). The twins must give what the parallel kernels give.
"""
import inspect
import os
import subprocess
import sys
import types

import numba
import numpy as np
import pytest
from numba.core.registry import CPUDispatcher
from threadpoolctl import threadpool_limits

import fastbp
from fastbp import Dense, Dropout, Sequential
from fastbp.backends import _cpu_loop, _kernel_tables
from fastbp.kernels import ACTIVATIONS
from fastbp.kernels._jit import PARALLEL_MIN_ELEMENTS
from fastbp.kernels.cpu import activations as A
from fastbp.kernels.cpu import dropout as R
from fastbp.kernels.cpu import optim as O
from fastbp.layers import Activation


def _callees(dispatcher):
    """The numba dispatchers that ``dispatcher``'s source names, directly or as module.attribute."""
    func = dispatcher.py_func
    names = set(func.__code__.co_names)
    for const in func.__code__.co_consts:  # nested code objects (comprehensions, closures)
        if inspect.iscode(const):
            names |= set(const.co_names)
    modules = [v for v in func.__globals__.values() if isinstance(v, types.ModuleType)]
    found = set()
    for name in names:
        for obj in [func.__globals__.get(name)] + [getattr(m, name, None) for m in modules]:
            if isinstance(obj, CPUDispatcher):
                found.add(obj)
    return found


def _reachable(roots):
    seen, todo = set(), list(roots)
    while todo:
        d = todo.pop()
        if d not in seen:
            seen.add(d)
            todo.extend(_callees(d))
    return seen


def _table_kernels():
    """Every kernel the loops can call through the tables of _kernel_tables.TABLES (by address): a dict entry
    holds one kernel per loss or optimizer code, a field of ``BY_CODE`` a factory of one kernel per
    activation code."""
    for name, table in _kernel_tables.TABLES.items():
        for field, entry in zip(table._fields, table):
            if entry is None:
                continue
            if (name, field) in _kernel_tables.CODE_ROWS:
                yield from (entry(code) for code in ACTIVATIONS.values())
            elif isinstance(entry, dict):
                yield from entry.values()
            else:
                yield entry


def test_the_compiled_loops_start_no_parallel_region():
    reachable = _reachable([_cpu_loop.train_batches, _cpu_loop.predict_batches, _cpu_loop.evaluate_batches,
                            *_table_kernels()])
    names = {d.py_func.__name__ for d in reachable}
    # The walk does find the kernels (else the test proves nothing) ...
    assert {"dense_table_forward", "dense_table_backward", "dense_act_grad_tanh", "dense_act_apply_softplus",
            "sgd_code_update", "adam_code_update", "rmsprop_code_update", "dropout_forward_from",
            "activation_forward_elu", "activation_backward_gelu", "sce_code_forward", "mse_code_backward",
            "batchnorm_act_forward_body", "_layernorm_act_backward_loop"} <= names
    # ... and none of them is compiled with parallel=True.
    parallel = sorted(d.py_func.__name__ for d in reachable if d.targetoptions.get("parallel"))
    assert parallel == []


def test_every_parallel_kernel_has_a_serial_twin():
    for module in (A, R, O):
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.targetoptions.get("parallel"):
                twin = getattr(module, name + "_serial", None)
                assert isinstance(twin, CPUDispatcher) and not twin.targetoptions.get("parallel"), name


def _twin_cases(rng, n_rows, n_cols):
    def arr(positive=False):
        a = rng.standard_normal((n_rows, n_cols)).astype(np.float32)
        return np.abs(a) * 0.1 if positive else a

    x, d, y = arr(), arr(), arr(positive=True)
    empty = np.empty_like(x)
    return {
        # name: (arguments, indices of the outputs)
        "sgd_update": ((x.ravel().copy(), d.ravel(), y.ravel().copy(), 0.01, 0.9, True, 0.1), (0, 2)),
        "adam_update": ((x.ravel().copy(), d.ravel(), d.ravel().copy(), y.ravel().copy(), 0.01, 0.9, 0.999,
                         1e-8, 3, 0.1, True), (0, 2, 3)),
        "activation_forward": ((empty.copy(), x, np.int64(ACTIVATIONS["elu"]), 0.5), (0,)),
        "activation_backward": ((empty.copy(), d, y, np.int64(ACTIVATIONS["elu"]), 0.5), (0,)),
        "activation_input_backward": ((empty.copy(), d, x, np.int64(ACTIVATIONS["silu"])), (0,)),
        "rmsprop_update": ((x.ravel().copy(), d.ravel(), y.ravel() + 1, d.ravel().copy(), d.ravel() * 0.1,
                            0.01, 0.99, 1e-8, 0.9, True, 0.1), (0, 2, 3, 4)),
        "adagrad_update": ((x.ravel().copy(), d.ravel(), y.ravel().copy(), 0.01, 0.1, 1e-10, 3, 0.1), (0, 2)),
        "softmax_forward": ((empty.copy(), x), (0,)),
        "softmax_backward": ((empty.copy(), d, y), (0,)),
        "log_softmax_forward": ((empty.copy(), x), (0,)),
        "log_softmax_backward": ((empty.copy(), d, -y), (0,)),
        "dropout_forward": ((empty.copy(), empty.copy(), x, 0.3, 7), (0, 1)),
        "dropout_backward": ((empty.copy(), d, y), (0,)),
    }


@pytest.mark.parametrize("n_rows, n_cols", [(3, 5), (67, PARALLEL_MIN_ELEMENTS // 64 + 3)],
                         ids=["serial-size", "parallel-size"])
def test_serial_twins_give_the_parallel_kernels_results_bit_for_bit(n_rows, n_cols):
    rng = np.random.default_rng(0)
    for name, (args, outputs) in _twin_cases(rng, n_rows, n_cols).items():
        module = next(m for m in (A, R, O) if hasattr(m, name))
        copy = tuple(a.copy() if isinstance(a, np.ndarray) else a for a in args)
        getattr(module, name)(*args)
        getattr(module, name + "_serial")(*copy)
        for k in outputs:
            np.testing.assert_array_equal(args[k], copy[k], err_msg=name)


def _train(numba_threads, X, y):
    numba.set_num_threads(numba_threads)
    model = Sequential([Dense(X.shape[1], 256, activation="relu"), Dropout(0.25), Dense(256, 256),
                        Activation("gelu"), Dense(256, 10)], seed=0)
    model.fit(X, y, epochs=2, batch_size=200, loss="softmax_cross_entropy", optimizer=fastbp.Adam(1e-3),
              seed=1, verbose=0)
    return model.get_flat_weights(), model.predict_proba(X)


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs NUMBA_NUM_THREADS >= 2")
def test_parameters_are_bit_identical_whatever_numbas_thread_count():
    # Layers wide enough that every twin is above the size where its parallel
    # kernel would use the pool. BLAS keeps one thread count throughout: OpenBLAS's
    # own products change in the last bits with its thread count (sgemm with 1
    # and 2 threads differs on every shape tried), which no code of fastbp decides.
    rng = np.random.default_rng(0)
    X = rng.standard_normal((600, 300)).astype(np.float32)
    y = rng.integers(0, 10, 600)
    before = numba.get_num_threads()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            theta_1, proba_1 = _train(1, X, y)
            theta_2, proba_2 = _train(2, X, y)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(theta_1, theta_2)
    np.testing.assert_array_equal(proba_1, proba_2)


def test_set_num_threads_reaches_the_blas_of_the_compiled_products():
    # SciPy's BLAS (what numba's np.dot calls) may be a copy apart from NumPy's and
    # loads late; set_num_threads loads it first so that the limit reaches it.
    from threadpoolctl import threadpool_info

    before = fastbp.get_num_threads()
    try:
        fastbp.set_num_threads(1)
        blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
        assert blas and all(i["num_threads"] == 1 for i in blas), blas
    finally:
        fastbp.set_num_threads(before)


def test_importing_fastbp_leaves_the_openmp_wait_policy_alone():
    # Setting it reached every OpenMP runtime loaded later: PyTorch trained 2.4x slower.
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = "import os, fastbp, numba; numba.get_num_threads(); print(os.environ.get('OMP_WAIT_POLICY'))"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "None"
