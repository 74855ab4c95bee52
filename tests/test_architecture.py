"""The registry is the one source of codes, and both backends dispatch by it the same way."""
import ast
import inspect
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp.kernels import registry as R
from backends import BACKENDS

FASTBP_DIR = Path(fastbp.__file__).resolve().parent


def test_codes_are_unique_and_every_table_derives_from_the_registry():
    for table in (R.ACTIVATION_TABLE, R.LOSS_TABLE):
        codes = [row.code for row in table]
        assert len(set(codes)) == len(codes) and sorted(codes) == list(range(len(codes)))
    assert fastbp.layers.ACTIVATIONS is R.ACTIVATIONS
    assert fastbp.kernels.ACTIVATIONS == {a.name: a.code for a in R.ACTIVATION_TABLE if a.backward_from != "rows"}
    assert R.OUTPUT_DERIVABLE == {a.code for a in R.ACTIVATION_TABLE if a.backward_from == "output"}
    for loss in (fastbp.losses.SoftmaxCrossEntropy(), fastbp.losses.BinaryCrossEntropy(),
                 fastbp.losses.MeanSquaredError(), fastbp.losses.Poisson(), fastbp.losses.Huber(),
                 fastbp.losses.MeanAbsoluteError()):
        assert (loss.name, loss.link) == (R.LOSS_TABLE[loss.kind].name, R.LOSS_TABLE[loss.kind].link)
    assert fastbp.losses.Huber().delta == R.LOSS_TABLE[R.LOSS_HUBER].param
    assert set(R.INPUT_DERIVED) == {a.code for a in R.ACTIVATION_TABLE if a.backward_from == "input"}
    assert len({R.H_LR, R.H_MOMENTUM, R.H_NESTEROV, R.H_WEIGHT_DECAY, R.H_BETA1, R.H_BETA2, R.H_EPS,
                R.H_DECOUPLED, R.H_ALPHA, R.H_CENTERED, R.H_LR_DECAY, R.H_EPS_HAT}) == R.N_HYPER
    assert len({R.S_LOSS, R.S_WEIGHT, R.S_CORRECT, R.S_SQUARED, R.S_ABSOLUTE, R.S_COUNT,
                R.S_ELEMENTS}) == R.N_STATS


def _named_kernels(backend):
    if backend == "cuda":
        from fastbp.kernels.cuda import activations
    else:
        from fastbp.kernels.cpu import activations
    return activations


def device_array(backend, a):
    if backend == "cuda":
        from numba import cuda

        return cuda.to_device(a)
    return a


def to_host(backend, a):
    return a.copy_to_host() if backend == "cuda" else a.copy()


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", R.ACTIVATION_TABLE, ids=lambda a: a.name)
def test_dispatch_by_code_runs_the_named_kernel(backend, activation):
    # activation_code_* is what both training loops call; it must be the named kernel, bit for bit.
    A = _named_kernels(backend)
    rng = np.random.default_rng(activation.code)
    x = rng.standard_normal((5, 7)).astype(np.float32)
    dout = rng.standard_normal((5, 7)).astype(np.float32)
    alpha = activation.alpha or 0.0
    extra = (alpha,) if activation.alpha is not None else ()
    by_name = np.empty_like(x)
    by_code = np.empty_like(x)
    out_dev, x_dev = device_array(backend, by_name), device_array(backend, x)
    getattr(A, activation.name + "_forward")(out_dev, x_dev, *extra)
    by_name = to_host(backend, out_dev)
    code_dev = device_array(backend, by_code)
    A.activation_code_forward(code_dev, x_dev, np.int64(activation.code), alpha)
    np.testing.assert_array_equal(to_host(backend, code_dev), by_name)

    y_dev = device_array(backend, by_name)
    dx_name, dx_code = device_array(backend, np.empty_like(x)), device_array(backend, np.empty_like(x))
    dout_dev = device_array(backend, dout)
    second = x_dev if activation.backward_from == "input" else y_dev
    if activation.name == "identity":
        A.identity_backward(dx_name, dout_dev)
    else:
        getattr(A, activation.name + "_backward")(dx_name, dout_dev, second, *extra)
    A.activation_code_backward(dx_code, dout_dev, y_dev, x_dev, np.int64(activation.code), alpha)
    np.testing.assert_array_equal(to_host(backend, dx_code), to_host(backend, dx_name))


# Public keyword APIs (fit, the scikit-learn constructors) may take many parameters; nothing else.
_PUBLIC_WIDE = {("model.py", "fit"), ("estimators.py", "__init__")}


def test_no_internal_function_of_the_model_layer_takes_more_than_12_parameters():
    wide = []
    for path in sorted(FASTBP_DIR.rglob("*.py")):
        relative = path.relative_to(FASTBP_DIR)
        if relative.parts[0] == "kernels":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                a = node.args
                count = len(a.posonlyargs) + len(a.args) + len(a.kwonlyargs) - (a.args[:1] != [] and
                                                                                 a.args[0].arg == "self")
                if count > 12 and (path.name, node.name) not in _PUBLIC_WIDE:
                    wide.append(f"{relative}:{node.lineno} {node.name} ({count})")
    assert wide == []
    # The compiled training loop in particular: grouped values, not dozens of arrays.
    from fastbp.backends import _cpu_loop

    assert len(inspect.signature(_cpu_loop.train_batches.py_func).parameters) <= 12
