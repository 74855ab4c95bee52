"""BatchNorm and LayerNorm kernels: forward against the reference, backward by central differences.

Awkward shapes: batches of 2, 3 and 7 rows (BatchNorm needs two), 1, 5 and 33
features; LayerNorm also at a batch of 1. Each kernel runs on every backend
(the CUDA simulator on a machine without a GPU).
"""
import numpy as np
import pytest

import reference as ref
from backends import assert_close, call, check_gradients
from fastbp.kernels import KernelArgumentError

EPS = 1e-5
BN_SHAPES = [(2, 5), (3, 1), (7, 33), (3, 5)]
LN_SHAPES = [(1, 5), (2, 1), (3, 33), (7, 5)]


def _params(rng, n_out, affine, dtype):
    if not affine:
        return np.zeros(0, dtype), np.zeros(0, dtype)
    return (rng.uniform(0.5, 1.5, n_out).astype(dtype), rng.standard_normal(n_out).astype(dtype))


@pytest.mark.parametrize("affine", [True, False])
def test_batchnorm_forward_backward_match_reference(backend, dtype, affine):
    rng = np.random.default_rng(50)
    for shape in BN_SHAPES:
        n, o = shape
        x = (3.0 * rng.standard_normal(shape) + 1.0).astype(dtype)
        gamma, beta = _params(rng, o, affine, dtype)
        out, mean, var, invstd = (np.full(s, np.nan, dtype) for s in (shape, o, o, o))
        call(backend, "batchnorm_forward", out, mean, var, invstd, x, gamma, beta, EPS)
        want = ref.batchnorm_forward(x, gamma, beta, EPS)
        for got, expected in zip((out, mean, var, invstd), want):
            assert_close(got, expected, dtype, err_msg=str(shape))

        dout = rng.standard_normal(shape).astype(dtype)
        dx, dgamma, dbeta = np.full(shape, np.nan, dtype), np.full(o, np.nan, dtype), np.full(o, np.nan, dtype)
        call(backend, "batchnorm_backward", dx, dgamma, dbeta, dout, x, mean, invstd, gamma)
        want_dx, want_dgamma, want_dbeta = ref.batchnorm_backward(dout, x, gamma, EPS)
        # dx is a difference of terms of the size of dout * invstd: judge it at that scale.
        assert_close(dx, want_dx, dtype, scale=float(np.abs(dout).max() * invstd.max() * 4), err_msg=str(shape))
        assert_close(dgamma, want_dgamma, dtype, err_msg=str(shape))
        assert_close(dbeta, want_dbeta, dtype, err_msg=str(shape))


def test_batchnorm_inference_and_running_update_match_reference(backend, dtype):
    rng = np.random.default_rng(51)
    for shape in BN_SHAPES:
        n, o = shape
        x = rng.standard_normal(shape).astype(dtype)
        gamma, beta = _params(rng, o, True, dtype)
        running_mean = rng.standard_normal(o).astype(dtype)
        running_var = rng.uniform(0.5, 2.0, o).astype(dtype)
        out = np.full(shape, np.nan, dtype)
        call(backend, "batchnorm_inference", out, x, running_mean, running_var, gamma, beta, EPS)
        assert_close(out, ref.batchnorm_inference(x, running_mean, running_var, gamma, beta, EPS), dtype)

        _, mean, var, _ = ref.batchnorm_forward(x, None, None, EPS)
        want_mean, want_var = ref.batchnorm_update_running(running_mean, running_var, x, 0.1)
        call(backend, "batchnorm_update_running", running_mean, running_var, mean.astype(dtype),
             var.astype(dtype), 0.1, n)
        assert_close(running_mean, want_mean, dtype)
        assert_close(running_var, want_var, dtype)


@pytest.mark.parametrize("affine", [True, False])
def test_layernorm_forward_backward_match_reference(backend, dtype, affine):
    rng = np.random.default_rng(52)
    for shape in LN_SHAPES:
        n, o = shape
        x = (2.0 * rng.standard_normal(shape) - 1.0).astype(dtype)
        gamma, beta = _params(rng, o, affine, dtype)
        out, mean, invstd = np.full(shape, np.nan, dtype), np.full(n, np.nan, dtype), np.full(n, np.nan, dtype)
        call(backend, "layernorm_forward", out, mean, invstd, x, gamma, beta, EPS)
        want = ref.layernorm_forward(x, gamma, beta, EPS)
        for got, expected in zip((out, mean, invstd), want):
            assert_close(got, expected, dtype, err_msg=str(shape))

        dout = rng.standard_normal(shape).astype(dtype)
        dx, dgamma, dbeta = np.full(shape, np.nan, dtype), np.full(o, np.nan, dtype), np.full(o, np.nan, dtype)
        call(backend, "layernorm_backward", dx, dgamma, dbeta, dout, x, mean, invstd, gamma)
        want_dx, want_dgamma, want_dbeta = ref.layernorm_backward(dout, x, gamma, EPS)
        scale = float(np.abs(dout).max() * invstd.max() * 4)
        assert_close(dx, want_dx, dtype, scale=scale, err_msg=str(shape))
        assert_close(dgamma, want_dgamma, dtype, err_msg=str(shape))
        assert_close(dbeta, want_dbeta, dtype, err_msg=str(shape))


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_gradient_check(backend, kind):
    rng = np.random.default_rng(53)
    for shape in (BN_SHAPES if kind == "batchnorm" else LN_SHAPES):
        n, o = shape
        x = 2.0 * rng.standard_normal(shape)
        gamma, beta = rng.uniform(0.5, 1.5, o), rng.standard_normal(o)
        dout = rng.standard_normal(shape)
        out = np.empty(shape)
        stats = [np.empty(o if kind == "batchnorm" else n) for _ in range(3 if kind == "batchnorm" else 2)]

        def loss():
            call(backend, f"{kind}_forward", out, *stats, x, gamma, beta, EPS)
            return float(np.sum(dout * out))

        loss()
        mean, invstd = stats[0], stats[-1]
        dx, dgamma, dbeta = np.empty(shape), np.empty(o), np.empty(o)
        call(backend, f"{kind}_backward", dx, dgamma, dbeta, dout, x, mean.copy(), invstd.copy(), gamma)
        check_gradients(backend, loss, [("x", x, dx), ("gamma", gamma, dgamma), ("beta", beta, dbeta)],
                        rng, err_msg=f"{kind} {shape}")


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_zero_size_dx_skips_the_input_gradient_but_not_dgamma(backend, kind):
    rng = np.random.default_rng(54)
    n, o = 4, 3
    x, dout = rng.standard_normal((n, o)), rng.standard_normal((n, o))
    gamma, beta = np.ones(o), np.zeros(o)
    out = np.empty((n, o))
    stats = [np.empty(o if kind == "batchnorm" else n) for _ in range(3 if kind == "batchnorm" else 2)]
    call(backend, f"{kind}_forward", out, *stats, x, gamma, beta, EPS)
    dgamma, dbeta = np.full(o, np.nan), np.full(o, np.nan)
    call(backend, f"{kind}_backward", np.zeros((0, 0)), dgamma, dbeta, dout, x, stats[0], stats[-1], gamma)
    want = (ref.batchnorm_backward if kind == "batchnorm" else ref.layernorm_backward)(dout, x, gamma, EPS)
    assert_close(dgamma, want[1], np.float64)
    assert_close(dbeta, want[2], np.float64)


def test_pytorch_oracle_forward_and_backward():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(55)
    import fastbp.kernels as K

    for shape in [(7, 33), (2, 5)]:
        n, o = shape
        x, dout = rng.standard_normal(shape), rng.standard_normal(shape)
        gamma, beta = rng.uniform(0.5, 1.5, o), rng.standard_normal(o)
        for kind, module in (("batchnorm", torch.nn.BatchNorm1d(o, eps=EPS)),
                             ("layernorm", torch.nn.LayerNorm(o, eps=EPS))):
            module = module.double()
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(gamma))
                module.bias.copy_(torch.from_numpy(beta))
            tx = torch.from_numpy(x.copy()).requires_grad_(True)
            ty = module.train()(tx)
            ty.backward(torch.from_numpy(dout))
            out = np.empty(shape)
            dx, dgamma, dbeta = np.empty(shape), np.empty(o), np.empty(o)
            if kind == "batchnorm":
                mean, var, invstd = np.empty(o), np.empty(o), np.empty(o)
                K.batchnorm_forward(out, mean, var, invstd, x, gamma, beta, EPS)
                K.batchnorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma)
                rm, rv = np.zeros(o), np.ones(o)
                K.batchnorm_update_running(rm, rv, mean, var, 0.1, n)
                np.testing.assert_allclose(rm, module.running_mean.numpy(), rtol=1e-12, atol=1e-14)
                np.testing.assert_allclose(rv, module.running_var.numpy(), rtol=1e-12, atol=1e-14)
            else:
                mean, invstd = np.empty(n), np.empty(n)
                K.layernorm_forward(out, mean, invstd, x, gamma, beta, EPS)
                K.layernorm_backward(dx, dgamma, dbeta, dout, x, mean, invstd, gamma)
            np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-10, atol=1e-12, err_msg=kind)
            np.testing.assert_allclose(dx, tx.grad.numpy(), rtol=1e-9, atol=1e-11, err_msg=kind)
            np.testing.assert_allclose(dgamma, module.weight.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=kind)
            np.testing.assert_allclose(dbeta, module.bias.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=kind)


def test_statistics_are_deterministic_and_nan_propagates():
    import fastbp.kernels as K

    rng = np.random.default_rng(56)
    x = rng.standard_normal((64, 9)).astype(np.float32)
    results = []
    for _ in range(2):
        out, mean, var, invstd = np.empty_like(x), *(np.empty(9, np.float32) for _ in range(3))
        K.batchnorm_forward(out, mean, var, invstd, x, np.zeros(0, np.float32), np.zeros(0, np.float32), EPS)
        results.append((out.copy(), mean.copy(), var.copy()))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    x[3, 2] = np.nan
    K.batchnorm_forward(out, mean, var, invstd, x, np.zeros(0, np.float32), np.zeros(0, np.float32), EPS)
    assert np.isnan(out[:, 2]).all() and np.isfinite(np.delete(out, 2, axis=1)).all()


def test_argument_errors_name_the_argument():
    import fastbp.kernels as K

    x = np.ones((4, 5))
    o = np.empty(5)
    with pytest.raises(KernelArgumentError, match="argument 'mean' must be .*size 5"):
        K.batchnorm_forward(np.empty((4, 5)), np.empty(4), o, o.copy(), x, np.zeros(0), np.zeros(0), EPS)
    with pytest.raises(KernelArgumentError, match="argument 'mean' must be .*size 4"):
        K.layernorm_forward(np.empty((4, 5)), np.empty(5), np.empty(4), x, np.zeros(0), np.zeros(0), EPS)
    with pytest.raises(KernelArgumentError, match="argument 'eps' must be > 0"):
        K.layernorm_forward(np.empty((4, 5)), np.empty(4), np.empty(4), x, np.zeros(0), np.zeros(0), 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'momentum' must be in \[0, 1\]"):
        K.batchnorm_update_running(o, o.copy(), o.copy(), o.copy(), 1.5, 4)
    with pytest.raises(KernelArgumentError, match="argument 'n' must be >= 2"):
        K.batchnorm_update_running(o, o.copy(), o.copy(), o.copy(), 0.1, 1)
