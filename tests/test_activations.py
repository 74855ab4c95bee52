"""Activation kernels: elementwise and row-wise (softmax, log-softmax) forward/backward pairs."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import reference as ref
from compile_events import RECORD
from backends import (
    DTYPES,
    assert_close,
    away_from_zero,
    call,
    check_gradients,
    grad_matrix_shapes,
    matrix_shapes,
)
from fastbp.kernels import KernelArgumentError, relu_forward, sigmoid_forward

# name: parameters after the arrays. leaky_relu's slope and ELU's alpha != 1
# make their derivatives jump at 0, which the gradient checks keep away from.
PARAMS = {"leaky_relu": (0.1,), "elu": (1.3,)}
ELEMENTWISE = ["identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh", "softplus", "gelu"]
ROWWISE = ["softmax", "log_softmax"]
LATER = ["silu", "selu"]  # last in ALL, so that the shape rotation of the others stays
ALL = ELEMENTWISE + ROWWISE + LATER
ELEMENTWISE = ELEMENTWISE + LATER
INPUT_DERIVED = ("gelu", "silu")


def _rotation(name, dtype):
    """A distinct index per (activation, dtype), for matrix_shapes(backend, rotate=...)."""
    return 2 * ALL.index(name) + DTYPES.index(dtype)


def _backward_args(name, dout, x, out):
    """The arrays a backward kernel takes after dx: (dout,), (dout, x) for GELU and SiLU, else (dout, out)."""
    if name == "identity":
        return (dout,)
    return (dout, x) if name in INPUT_DERIVED else (dout, out)


def _inputs(rng, shape, dtype):
    # Spread over the interesting range of every activation, saturation included.
    return (3 * rng.standard_normal(shape)).astype(dtype)


@pytest.mark.parametrize("name", ALL)
def test_forward_matches_reference(backend, dtype, name):
    rng = np.random.default_rng(10)
    params = PARAMS.get(name, ())
    for shape in matrix_shapes(backend, rotate=_rotation(name, dtype)):
        x = _inputs(rng, shape, dtype)
        out = np.full(shape, np.nan, dtype)
        call(backend, f"{name}_forward", out, x, *params)
        assert_close(out, getattr(ref, f"{name}_forward")(x, *params), dtype, err_msg=str(shape))


@pytest.mark.parametrize("name", ALL)
def test_backward_matches_reference(backend, dtype, name):
    rng = np.random.default_rng(11)
    params = PARAMS.get(name, ())
    for shape in matrix_shapes(backend, rotate=_rotation(name, dtype)):
        x = _inputs(rng, shape, dtype)
        out = getattr(ref, f"{name}_forward")(x, *params).astype(dtype)
        dout = rng.standard_normal(shape).astype(dtype)
        dx = np.full(shape, np.nan, dtype)
        args = _backward_args(name, dout, x, out)
        call(backend, f"{name}_backward", dx, *args, *params)
        assert_close(dx, getattr(ref, f"{name}_backward")(*args, *params), dtype, err_msg=str(shape))


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_kernels_work_in_place(backend, name):
    # out may alias x, and dx may alias dout.
    rng = np.random.default_rng(12)
    params = PARAMS.get(name, ())
    x = _inputs(rng, (5, 7), np.float64)
    out = np.empty_like(x)
    call(backend, f"{name}_forward", out, x, *params)
    in_place = x.copy()
    call(backend, f"{name}_forward", in_place, in_place, *params)
    np.testing.assert_array_equal(in_place, out)

    dout = rng.standard_normal(x.shape)
    dx = np.empty_like(x)
    call(backend, f"{name}_backward", dx, *_backward_args(name, dout, x, out), *params)
    in_place = dout.copy()
    call(backend, f"{name}_backward", in_place, *_backward_args(name, in_place, x, out), *params)
    np.testing.assert_array_equal(in_place, dx)


@pytest.mark.parametrize("name", ALL)
def test_gradient_check(backend, name):
    """dL/dx of L = sum(dout * f(x)) by central differences against the backward kernel."""
    rng = np.random.default_rng(13)
    params = PARAMS.get(name, ())
    for shape in grad_matrix_shapes(backend):
        x = away_from_zero(rng, shape)
        dout = rng.standard_normal(shape)
        out = np.empty(shape)

        def loss():
            call(backend, f"{name}_forward", out, x, *params)
            return float(np.sum(dout * out))

        y = getattr(ref, f"{name}_forward")(x, *params)
        dx = np.empty(shape)
        call(backend, f"{name}_backward", dx, *_backward_args(name, dout, x, y), *params)
        # A softmax over one output is the constant 1: its gradient must be exactly 0.
        check_gradients(backend, loss, [("x", x, dx)], rng, err_msg=f"{name} {shape}",
                        degenerate=name in ROWWISE and shape[1] == 1)


def test_softmax_rows_sum_to_one_and_log_softmax_is_its_log(backend, dtype):
    rng = np.random.default_rng(14)
    x = _inputs(rng, (3, 9), dtype)
    p, logp = np.empty_like(x), np.empty_like(x)
    call(backend, "softmax_forward", p, x)
    call(backend, "log_softmax_forward", logp, x)
    assert_close(p.sum(axis=1), np.ones(3), dtype)
    assert_close(np.exp(logp.astype(np.float64)), p, dtype)
    # Shift invariance: softmax(x + c) = softmax(x), computed with the row maximum removed.
    shifted = np.empty_like(x)
    call(backend, "softmax_forward", shifted, (x + dtype.type(100)).astype(dtype))
    assert_close(shifted, p, dtype)


# ----------------------------------------------------------------------------
# Extreme inputs: saturation is exact and finite, NaN is never swallowed
# ----------------------------------------------------------------------------

def test_saturated_sigmoid_and_tanh(backend, dtype):
    x = np.array([[-1000.0, -50.0, 50.0, 1000.0]], dtype)
    out, dx = np.empty_like(x), np.empty_like(x)
    dout = np.ones_like(x)

    call(backend, "sigmoid_forward", out, x)
    assert out[0, 0] == 0.0 and out[0, 2] == 1.0 and out[0, 3] == 1.0
    # sigmoid(-50) = e^-50 / (1 + e^-50) = 1.9287e-22 is representable: not flushed to 0.
    assert out[0, 1] == pytest.approx(1.928749847963918e-22, rel=1e-5)
    call(backend, "sigmoid_backward", dx, dout, out)
    assert np.isfinite(dx).all()
    np.testing.assert_array_equal(dx[0, [0, 2, 3]], 0.0)
    assert dx[0, 1] == pytest.approx(1.928749847963918e-22, rel=1e-5)

    call(backend, "tanh_forward", out, x)
    np.testing.assert_array_equal(out, [[-1.0, -1.0, 1.0, 1.0]])
    call(backend, "tanh_backward", dx, dout, out)
    np.testing.assert_array_equal(dx, np.zeros_like(dx))


def test_softplus_at_extremes(backend, dtype):
    x = np.array([[-1000.0, -50.0, 50.0, 1000.0]], dtype)
    out, dx = np.empty_like(x), np.empty_like(x)
    call(backend, "softplus_forward", out, x)
    assert out[0, 0] == 0.0 and out[0, 3] == 1000.0 and out[0, 2] == 50.0
    assert out[0, 1] == pytest.approx(1.928749847963918e-22, rel=1e-5)  # log(1 + e^-50) ~ e^-50
    # The derivative is sigmoid(x), recovered from the output as 1 - e^-out.
    call(backend, "softplus_backward", dx, np.ones_like(x), out)
    assert dx[0, 0] == 0.0 and dx[0, 2] == 1.0 and dx[0, 3] == 1.0
    assert dx[0, 1] == pytest.approx(1.928749847963918e-22, rel=1e-5)


def test_softmax_of_huge_logits_is_finite(backend, dtype):
    x = np.array([[1e4, -1e4, 0.0], [-1e4, -1e4, -1e4]], dtype)
    p, logp = np.empty_like(x), np.empty_like(x)
    call(backend, "softmax_forward", p, x)
    np.testing.assert_array_equal(p[0], [1.0, 0.0, 0.0])
    assert_close(p[1], [1 / 3] * 3, dtype)
    call(backend, "log_softmax_forward", logp, x)
    np.testing.assert_array_equal(logp[0], [0.0, -2e4, -1e4])
    assert_close(logp[1], [-np.log(3)] * 3, dtype, scale=1.0)


@pytest.mark.parametrize("name", ALL)
def test_nan_propagates(backend, name):
    params = PARAMS.get(name, ())
    x = np.array([[0.5, np.nan, -0.5], [1.0, 2.0, -3.0]])
    out = np.empty_like(x)
    call(backend, f"{name}_forward", out, x, *params)
    if name in ROWWISE:
        assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()
    else:
        assert np.isnan(out[0, 1]) and np.isfinite(np.delete(out.ravel(), 1)).all()

    x[0, 1] = -1.5
    call(backend, f"{name}_forward", out, x, *params)
    dout = np.array([[0.5, 1.0, np.nan], [1.0, 2.0, -3.0]])
    dx = np.empty_like(x)
    call(backend, f"{name}_backward", dx, *_backward_args(name, dout, x, out), *params)
    if name in ROWWISE:
        assert np.isnan(dx[0]).all() and np.isfinite(dx[1]).all()
    else:
        assert np.isnan(dx[0, 2]) and np.isfinite(np.delete(dx.ravel(), 2)).all()


def test_silu_and_selu_by_hand(backend):
    # silu(0) = 0, silu'(0) = 1/2; silu(x) -> x for large x and -> 0 (from below) for very negative x.
    x = np.array([[0.0, 40.0, -40.0, 1.0]])
    out, dx = np.empty_like(x), np.empty_like(x)
    call(backend, "silu_forward", out, x)
    s1 = 1.0 / (1.0 + np.exp(-1.0))
    np.testing.assert_allclose(out, [[0.0, 40.0, -40.0 * np.exp(-40.0) / (1 + np.exp(-40.0)), s1]], rtol=1e-14)
    call(backend, "silu_backward", dx, np.ones_like(x), x)
    np.testing.assert_allclose(dx, [[0.5, 1.0, 0.0, s1 * (1 + (1 - s1))]], rtol=1e-12, atol=1e-15)
    # selu: scale x above 0, scale alpha (e^x - 1) below; PyTorch's constants, to the last digit.
    x = np.array([[2.0, -1.0, -1000.0]])
    call(backend, "selu_forward", out[:, :3], x)
    scale, alpha = 1.0507009873554804934193349852946, 1.6732632423543772848170429916717
    np.testing.assert_allclose(out[:, :3], [[2 * scale, scale * alpha * np.expm1(-1.0), -scale * alpha]],
                               rtol=1e-15)
    y = out[:, :3].copy()
    call(backend, "selu_backward", dx[:, :3], np.ones_like(x), y)
    np.testing.assert_allclose(dx[:, :3], [[scale, scale * alpha * np.exp(-1.0), 0.0]], rtol=1e-14, atol=1e-15)


def test_selu_matches_torch():
    torch = pytest.importorskip("torch")
    x = np.linspace(-6, 6, 49).reshape(7, 7)
    out = np.empty_like(x)
    call("cpu", "selu_forward", out, x)
    np.testing.assert_allclose(out, torch.nn.functional.selu(torch.from_numpy(x)).numpy(), rtol=1e-15, atol=0)
    call("cpu", "silu_forward", out, x)
    np.testing.assert_allclose(out, torch.nn.functional.silu(torch.from_numpy(x)).numpy(), rtol=1e-14, atol=1e-300)


# ----------------------------------------------------------------------------
# Argument checking at the public boundary
# ----------------------------------------------------------------------------

def test_argument_errors_name_the_argument():
    x = np.ones((3, 4))
    with pytest.raises(KernelArgumentError, match=r"argument 'x' must be of shape \(3, 4\) like the first"):
        relu_forward(np.empty((3, 4)), np.ones((4, 3)))
    with pytest.raises(KernelArgumentError, match=r"argument 'out' must be non-empty"):
        relu_forward(np.empty((0, 4)), np.ones((0, 4)))
    with pytest.raises(KernelArgumentError, match=r"argument 'x' must be float64 like the arrays before it"):
        sigmoid_forward(np.empty((3, 4)), x.astype(np.float32))
    with pytest.raises(KernelArgumentError, match=r"argument 'slope' must be >= 0"):
        call("cpu", "leaky_relu_forward", np.empty_like(x), x, -0.1)
    with pytest.raises(KernelArgumentError, match=r"argument 'alpha' must be > 0"):
        call("cpu", "elu_forward", np.empty_like(x), x, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'x' must be 2-D of shape \(N, O\)"):
        call("cpu", "softmax_forward", np.empty((1, 4)), np.ones(4))
    with pytest.raises(KernelArgumentError, match=r"argument 'dout' must be C-contiguous"):
        call("cpu", "tanh_backward", np.empty((4, 3)), x.T, np.ones((4, 3)))



# In a fresh process, where no formula is compiled yet: for each code in turn, the scalar functions
# numba compiles for a kernel that calls ``activate_dz`` with that code as a constant.
_CONSTANT_CODES = RECORD + textwrap.dedent("""
    import json, sys
    import numpy as np
    from numba import njit
    from fastbp.kernels import ACTIVATIONS, _scalar

    def run(constant):
        @njit
        def kernel(dout, y, z, alpha):
            out = np.empty_like(dout)
            for i in range(dout.size):
                out[i] = _scalar.activate_dz(constant, dout[i], y[i], z[i], alpha)
            return out

        z = np.linspace(-2.0, 2.0, 9)
        y = np.array([_scalar.activate(constant, v, 0.3) for v in z])
        del compiled[:]
        got = kernel(np.ones_like(z), y, z, 0.3)
        expected = [_scalar.activate_dz(constant, 1.0, a, b, 0.3) for a, b in zip(y, z)]
        return {"compiled": sorted(set(compiled)), "same": bool(np.array_equal(got, expected))}

    print(json.dumps({code: run(ACTIVATIONS[code]) for code in sys.argv[1:]}))
""")


def test_a_kernel_with_a_constant_code_compiles_that_codes_formula_alone():
    codes = ["relu", "elu", "gelu", "selu"]
    done = subprocess.run([sys.executable, "-c", _CONSTANT_CODES, *codes], capture_output=True, text=True,
                          timeout=300, env={k: v for k, v in os.environ.items() if k != "NUMBA_DISABLE_JIT"})
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    for code in codes:
        assert found[code]["same"], code
        formulas = {name for name in found[code]["compiled"] if name.endswith("_grad")
                    and not name.startswith("activate")}
        assert formulas == {f"{code}_grad"}, (code, found[code]["compiled"])
