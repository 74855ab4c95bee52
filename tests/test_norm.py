"""BatchNorm and LayerNorm kernels: forward against the reference, backward by central differences.

Awkward shapes: batches of 2, 3 and 7 rows (BatchNorm needs two), 1, 5 and 33
features; LayerNorm also at a batch of 1. Each kernel runs on every backend
(the CUDA simulator on a machine without a GPU).
"""
import numpy as np
import pytest

import reference as ref
from backends import assert_close, call, check_gradients
from fastbp.kernels import ACTIVATIONS, KernelArgumentError

EPS = 1e-5
BN_SHAPES = [(2, 5), (3, 1), (7, 33), (3, 5)]
LN_SHAPES = [(1, 5), (2, 1), (3, 33), (7, 5)]


def _params(rng, n_out, affine, dtype):
    if not affine:
        return np.zeros(0, dtype), np.zeros(0, dtype)
    return (rng.uniform(0.5, 1.5, n_out).astype(dtype), rng.standard_normal(n_out).astype(dtype))


def _inference_inputs(rng, shape, dtype):
    """x, gamma, beta and running statistics for BatchNorm in inference mode."""
    x = rng.standard_normal(shape).astype(dtype)
    gamma, beta = _params(rng, shape[1], True, dtype)
    running_mean = rng.standard_normal(shape[1]).astype(dtype)
    running_var = rng.uniform(0.5, 2.0, shape[1]).astype(dtype)
    return x, gamma, beta, running_mean, running_var


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
        n = shape[0]
        x, gamma, beta, running_mean, running_var = _inference_inputs(rng, shape, dtype)
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
@pytest.mark.parametrize("name", [None, "tanh", "silu"])
def test_gradient_check(backend, kind, name):
    # The plain kernels (None), and the fused ones: tanh's derivative comes from the output,
    # SiLU's from the recomputed pre-activation.
    rng = np.random.default_rng(53)
    shapes = BN_SHAPES if kind == "batchnorm" else LN_SHAPES
    # The fused kernels skip the one-feature shape: there LayerNorm's output is beta alone.
    for shape in shapes if name is None else [s for s in shapes if s[1] > 1]:
        n, o = shape
        x = 2.0 * rng.standard_normal(shape)
        gamma, beta = rng.uniform(0.5, 1.5, o), rng.standard_normal(o)
        dout = rng.standard_normal(shape)
        out = np.empty(shape)
        stats = [np.empty(o if kind == "batchnorm" else n) for _ in range(3 if kind == "batchnorm" else 2)]
        act = () if name is None else (ACTIVATIONS[name], 0.0)
        fused = "" if name is None else "_act"

        def loss():
            call(backend, f"{kind}{fused}_forward", out, *stats, x, gamma, beta, EPS, *act)
            return float(np.sum(dout * out))

        loss()
        mean, invstd = stats[0].copy(), stats[-1].copy()
        dx, dgamma, dbeta = np.empty(shape), np.empty(o), np.empty(o)
        if name is None:
            call(backend, f"{kind}_backward", dx, dgamma, dbeta, dout, x, mean, invstd, gamma)
        else:
            call(backend, f"{kind}_act_backward", dx, dgamma, dbeta, dout, out.copy(), x, mean, invstd, gamma, beta,
                 *act)
        check_gradients(backend, loss, [("x", x, dx), ("gamma", gamma, dgamma), ("beta", beta, dbeta)],
                        rng, err_msg=f"{kind} {name} {shape}")


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


# The activations fused after a norm: every elementwise code (GELU and SiLU take the
# pre-activation, which backward recomputes); the CUDA simulator runs three of them.
ACT_CASES = [("identity", 0.0), ("relu", 0.0), ("leaky_relu", 0.1), ("elu", 1.3), ("sigmoid", 0.0),
             ("tanh", 0.0), ("softplus", 0.0), ("gelu", 0.0), ("silu", 0.0), ("selu", 0.0)]
SIMULATOR_ACT_CASES = [("relu", 0.0), ("leaky_relu", 0.1), ("gelu", 0.0)]


def _act_grad(name, dout, out, z, alpha):
    """dout * f'(z), the reference: from the output, or from z for GELU and SiLU."""
    if name in ("gelu", "silu"):
        return getattr(ref, f"{name}_backward")(dout, z)
    return ref.activate_backward(ACTIVATIONS[name], dout, out, alpha)


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
@pytest.mark.parametrize("affine", [True, False])
def test_act_kernels_are_the_norm_then_the_activation(backend, dtype, kind, affine):
    rng = np.random.default_rng(55)
    cases = ACT_CASES if backend == "cpu" else SIMULATOR_ACT_CASES
    shapes = (BN_SHAPES if kind == "batchnorm" else LN_SHAPES)[:3 if backend == "cpu" else 2]
    forward, backward = getattr(ref, f"{kind}_forward"), getattr(ref, f"{kind}_backward")
    for name, alpha in cases:
        code = ACTIVATIONS[name]
        for shape in shapes:
            n, o = shape
            msg = f"{name} {shape}"
            x = (2.0 * rng.standard_normal(shape) + 0.3).astype(dtype)
            gamma, beta = _params(rng, o, affine, dtype)
            z, *want_stats = forward(x, gamma, beta, EPS)
            want_out = ref.activate(code, z, alpha)
            out = np.full(shape, np.nan, dtype)
            stats = [np.full(a.shape, np.nan, dtype) for a in want_stats]
            call(backend, f"{kind}_act_forward", out, *stats, x, gamma, beta, EPS, code, alpha)
            assert_close(out, want_out, dtype, err_msg=msg)
            for got, expected in zip(stats, want_stats):
                assert_close(got, expected, dtype, err_msg=msg)

            dout = rng.standard_normal(shape).astype(dtype)
            # The derivative at the kernel's own output (float32 rounds it).
            g = _act_grad(name, dout.astype(np.float64), out.astype(np.float64), z, alpha)
            want_dx, want_dgamma, want_dbeta = backward(g, x, gamma, EPS)
            dx, dgamma, dbeta = np.full(shape, np.nan, dtype), np.full(o, np.nan, dtype), np.full(o, np.nan, dtype)
            call(backend, f"{kind}_act_backward", dx, dgamma, dbeta, dout, out, x, stats[0], stats[-1], gamma, beta,
                 code, alpha)
            scale = float(np.abs(g).max() * stats[-1].max() * 4)
            assert_close(dx, want_dx, dtype, scale=scale, err_msg=msg)
            assert_close(dgamma, want_dgamma, dtype, err_msg=msg)
            assert_close(dbeta, want_dbeta, dtype, err_msg=msg)


def test_batchnorm_act_inference_is_inference_then_the_activation(backend, dtype):
    rng = np.random.default_rng(56)
    for name, alpha in (ACT_CASES if backend == "cpu" else SIMULATOR_ACT_CASES):
        for shape in BN_SHAPES[:2]:
            x, gamma, beta, running_mean, running_var = _inference_inputs(rng, shape, dtype)
            out = np.full(shape, np.nan, dtype)
            call(backend, "batchnorm_act_inference", out, x, running_mean, running_var, gamma, beta, EPS,
                 ACTIVATIONS[name], alpha)
            z = ref.batchnorm_inference(x, running_mean, running_var, gamma, beta, EPS)
            assert_close(out, ref.activate(ACTIVATIONS[name], z, alpha), dtype, err_msg=f"{name} {shape}")


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
    # gamma and beta come together or not at all: a lone gamma would read a beta that is not there.
    with pytest.raises(KernelArgumentError, match="argument 'beta' must be zero-size exactly when 'gamma' is"):
        K.batchnorm_forward(np.empty((4, 5)), o.copy(), o.copy(), o.copy(), x, np.ones(5), np.zeros(0), EPS)
    with pytest.raises(KernelArgumentError, match="argument 'beta' must be zero-size exactly when 'gamma' is"):
        K.layernorm_act_backward(np.empty((4, 5)), o.copy(), o.copy(), x, x, x, np.empty(4), np.empty(4),
                                 np.zeros(0), np.ones(5), K.ACTIVATIONS["relu"], 0.0)
    with pytest.raises(KernelArgumentError, match="argument 'activation' must be an activation code"):
        K.batchnorm_act_forward(np.empty((4, 5)), o.copy(), o.copy(), o.copy(), x, np.zeros(0), np.zeros(0), EPS,
                                fastbp.kernels.registry.SOFTMAX, 0.0)


# ----- the layers in a model -------------------------------------------------------------------

import fastbp  # noqa: E402
from fastbp import SGD, BatchNorm, Dense, LayerNorm, ReLU, Sequential, Tanh  # noqa: E402


def _norm_model(dtype="float64", seed=0, **kwargs):
    """Dense -> BatchNorm -> ReLU -> Dense -> LayerNorm -> Tanh -> Dense: the layout of the
    PyTorch oracle below, index for index."""
    layers = [Dense(4, 6), BatchNorm(6, momentum=0.2), ReLU(), Dense(6, 5), LayerNorm(5), Tanh(), Dense(5, 3)]
    return Sequential(layers, dtype=dtype, seed=seed, **kwargs)


def _data(n=20, seed=60):
    rng = np.random.default_rng(seed)
    return 2.0 * rng.standard_normal((n, 4)) + 0.5, rng.integers(0, 3, n)


def test_parameters_and_buffers_layout():
    model = _norm_model()
    # Weights and biases of 3 Dense layers, then gamma and beta of the two norm layers.
    assert model.n_parameters == (4 * 6 + 6 * 5 + 5 * 3) + (6 + 5 + 3) + 2 * 6 + 2 * 5
    assert model.buffers.shape == (12,)  # BatchNorm(6): running mean, running variance
    np.testing.assert_array_equal(model.buffers, [0.0] * 6 + [1.0] * 6)
    weights = model.get_weights()
    assert [w.shape for w in weights] == [(4, 6), (6,), (6,), (6,), (6, 5), (5,), (5,), (5,), (5, 3), (3,)]
    np.testing.assert_array_equal(weights[2], np.ones(6))   # gamma
    np.testing.assert_array_equal(weights[3], np.zeros(6))  # beta
    weights[2][:] = 2.0
    model.set_weights(weights)
    assert model.get_weights()[2][0] == 2.0
    no_affine = Sequential([BatchNorm(4, affine=False), Dense(4, 2)], seed=0)
    assert no_affine.n_parameters == 4 * 2 + 2 and no_affine.buffers.size == 8


def test_layer_widths_are_checked():
    with pytest.raises(ValueError, match=r"layer 1 \(BatchNorm\) normalizes num_features=5 .* gives 6"):
        Sequential([Dense(4, 6), BatchNorm(5), Dense(6, 2)])
    with pytest.raises(ValueError, match=r"layer 0 \(LayerNorm\) normalizes num_features=3 .* input has 4"):
        Sequential([LayerNorm(3), Dense(4, 2)])
    for bad in (dict(momentum=1.5), dict(eps=0.0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            BatchNorm(4, **bad)
    with pytest.raises(TypeError, match="affine must be True or False; got str 'yes'"):
        BatchNorm(4, affine="yes")
    with pytest.raises(ValueError, match="num_features"):
        LayerNorm(0)


def test_model_gradient_by_central_differences():
    # The compiled training step's gradient (objective runs it) against central differences of
    # its loss, through BatchNorm's batch statistics: awkward batch sizes, a norm op first
    # (no input gradient, still dgamma and dbeta) and one without affine parameters.
    for n in (2, 3, 7):
        X, y = _data(n, seed=61 + n)
        layers = [LayerNorm(4), Dense(4, 5), BatchNorm(5), ReLU(), Dense(5, 3), BatchNorm(3, affine=False),
                  Dense(3, 3)]
        model = Sequential(layers, dtype="float64", seed=n).compile("softmax_cross_entropy")
        theta = model.get_flat_weights()
        theta[-(2 * 4 + 2 * 5):] += np.random.default_rng(n).uniform(-0.5, 0.5, 2 * 4 + 2 * 5)
        f = model.objective(X, y)
        _, grad = f(theta.copy())
        buffers = model.buffers.copy()
        rng = np.random.default_rng(70 + n)
        for k in rng.choice(theta.size, 25, replace=False):
            e = np.zeros_like(theta)
            e[k] = 1e-6
            numeric = (f(theta + e)[0] - f(theta - e)[0]) / 2e-6
            np.testing.assert_allclose(grad[k], numeric, rtol=1e-6, atol=1e-8, err_msg=f"n={n} theta[{k}]")
        np.testing.assert_array_equal(model.buffers, buffers)  # objective leaves the running statistics


def test_the_activation_after_a_norm_is_fused_into_its_op():
    from fastbp.kernels import registry as R
    from fastbp.lowering import lower

    layers = [Dense(4, 6), BatchNorm(6), fastbp.GELU(), Dense(6, 5), LayerNorm(5), fastbp.LeakyReLU(alpha=0.2),
              Dense(5, 3), BatchNorm(3), fastbp.Softmax(), fastbp.Sigmoid()]
    net = lower(layers, None, 4).net
    assert list(net.kinds) == [R.OP_DENSE, R.OP_BATCHNORM, R.OP_DENSE, R.OP_LAYERNORM, R.OP_DENSE, R.OP_BATCHNORM,
                               R.OP_ACTIVATION, R.OP_ACTIVATION]
    names = [R.ACTIVATION_NAMES[int(c)] for c in net.codes]
    # Softmax works across a row: it stays an op of its own, and so does the layer after it.
    assert names == ["identity", "gelu", "identity", "leaky_relu", "identity", "identity", "softmax", "sigmoid"]
    assert net.alphas[3] == 0.2
    # A loss whose link is the fused activation (sigmoid for binary cross-entropy) takes it back.
    lowered = lower([Dense(4, 2), BatchNorm(2), fastbp.Sigmoid()], "sigmoid", 4)
    assert lowered.stripped_link and list(lowered.net.codes) == [R.IDENTITY, R.IDENTITY]


def test_fused_norm_activations_train_by_their_gradient():
    # The compiled step's gradient through every fused pair (GELU and SiLU from the recomputed
    # pre-activation, ELU from the output) against central differences of its loss.
    X, y = _data(7, seed=71)
    layers = [Dense(4, 5), BatchNorm(5), fastbp.GELU(), Dense(5, 5), LayerNorm(5), fastbp.SiLU(), Dense(5, 4),
              BatchNorm(4, affine=False), fastbp.ELU(alpha=0.7), Dense(4, 3)]
    model = Sequential(layers, dtype="float64", seed=3).compile("softmax_cross_entropy")
    theta = model.get_flat_weights()
    f = model.objective(X, y)
    _, grad = f(theta.copy())
    rng = np.random.default_rng(72)
    for k in rng.choice(theta.size, 30, replace=False):
        e = np.zeros_like(theta)
        e[k] = 1e-6
        numeric = (f(theta + e)[0] - f(theta - e)[0]) / 2e-6
        np.testing.assert_allclose(grad[k], numeric, rtol=1e-6, atol=1e-8, err_msg=f"theta[{k}]")


def test_batch_of_one_is_refused_for_batchnorm_and_fine_for_layernorm():
    X, y = _data(17)
    model = _norm_model()
    with pytest.raises(ValueError, match="batch_size=8 over 17 training samples leaves a last batch of 1"):
        model.fit(X, y, epochs=1, batch_size=8, loss="softmax_cross_entropy", verbose=0)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        model.fit(X[:1], y[:1], epochs=1, batch_size=8, loss="softmax_cross_entropy", verbose=0)
    assert model.optimizer.steps == 0 and model.batches_tracked == 0
    # 17 = 3 x 5 + 2: a last batch of two rows trains.
    model.fit(X, y, epochs=1, batch_size=5, loss="softmax_cross_entropy", verbose=0)
    assert model.batches_tracked == 4
    # Inference takes any batch, one row included, with the running statistics.
    np.testing.assert_allclose(model.decision_function(X[3:4]), model.decision_function(X)[3:4], rtol=1e-12)
    ln = Sequential([Dense(4, 5), LayerNorm(5), ReLU(), Dense(5, 3)], dtype="float64", seed=0)
    ln.fit(X, y, epochs=2, batch_size=1, loss="softmax_cross_entropy", verbose=0)
    assert ln.optimizer.steps == 34 and np.isfinite(ln.theta).all()


def _numpy_inference(model, X):
    """The model's outputs from its weights and running statistics, in NumPy (the reference)."""
    weights = iter(model.get_weights())
    buffers = iter(v for views in model._norm_views(model.theta) if views is not None for v in views[2:])
    h = np.asarray(X, np.float64)
    for layer in model.layers:
        if isinstance(layer, Dense):
            h = h @ next(weights) + next(weights)
        elif isinstance(layer, BatchNorm):
            h = ref.batchnorm_inference(h, next(buffers), next(buffers), next(weights), next(weights), layer.eps)
        elif isinstance(layer, LayerNorm):
            next(buffers), next(buffers)
            h = ref.layernorm_forward(h, next(weights), next(weights), layer.eps)[0]
        else:
            h = ref.activate(fastbp.kernels.ACTIVATIONS[layer.activation], h)
    return h


def test_inference_uses_the_running_statistics():
    X, y = _data(30)
    model = _norm_model()
    model.fit(X, y, epochs=3, batch_size=8, loss="softmax_cross_entropy", optimizer=SGD(0.1), verbose=0)
    assert not np.allclose(model.buffers, [0.0] * 6 + [1.0] * 6)
    np.testing.assert_allclose(model.decision_function(X), _numpy_inference(model, X), rtol=1e-10, atol=1e-12)
    # In training mode (batch statistics) the outputs differ: the loss objective reports that one.
    train_loss = model.objective(X, y)(model.get_flat_weights())[0]
    assert abs(train_loss - model.evaluate(X, y)["loss"]) > 1e-6


def test_pytorch_oracle_training_steps_and_running_statistics():
    torch = pytest.importorskip("torch")
    X, y = _data(20)
    model = _norm_model()
    net = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.BatchNorm1d(6, momentum=0.2), torch.nn.ReLU(),
                              torch.nn.Linear(6, 5), torch.nn.LayerNorm(5), torch.nn.Tanh(),
                              torch.nn.Linear(5, 3)).double()
    # Gamma and beta away from 1 and 0, so that their gradients matter.
    weights = model.get_weights()
    rng = np.random.default_rng(62)
    for k in (2, 3, 6, 7):
        weights[k] = weights[k] + rng.uniform(-0.3, 0.3, weights[k].shape)
    model.set_weights(weights)
    net.load_state_dict({k: torch.from_numpy(np.asarray(v)) for k, v in model.state_dict().items()})

    batch_size, epochs, lr = 8, 3, 0.1  # 20 rows: batches of 8, 8 and 4
    model.fit(X, y, epochs=epochs, batch_size=batch_size, loss="softmax_cross_entropy", optimizer=SGD(lr),
              shuffle=False, verbose=0)
    opt = torch.optim.SGD(net.parameters(), lr=lr)
    net.train()
    tx, ty = torch.from_numpy(X), torch.from_numpy(y)
    for _ in range(epochs):
        for start in range(0, len(X), batch_size):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(tx[start:start + batch_size]), ty[start:start + batch_size])
            loss.backward()
            opt.step()
    want = net.state_dict()
    got = model.state_dict()
    assert sorted(got) == sorted(want)
    for key in want:
        np.testing.assert_allclose(got[key], want[key].numpy(), rtol=1e-9, atol=1e-12, err_msg=key)
    assert int(want["1.num_batches_tracked"]) == model.batches_tracked == 9
    net.eval()
    with torch.no_grad():
        np.testing.assert_allclose(model.decision_function(X), net(tx).numpy(), rtol=1e-9, atol=1e-12)
        # And back: PyTorch's tensors, running statistics and count load into a fresh model.
        fresh = _norm_model(seed=5)
        fresh.load_state_dict(net.state_dict())
        assert fresh.batches_tracked == 9
        np.testing.assert_array_equal(fresh.buffers[6:], net[1].running_var.numpy())
        np.testing.assert_allclose(fresh.decision_function(X), net(tx).numpy(), rtol=1e-12, atol=1e-13)


def test_save_and_load_keep_running_statistics_bit_for_bit(tmp_path):
    X, y = _data(20)
    for dtype in ("float32", "float64"):
        model = _norm_model(dtype)
        model.fit(X, y, epochs=2, batch_size=6, loss="softmax_cross_entropy", verbose=0)
        model.save(tmp_path / "m.npz")
        loaded = fastbp.load(tmp_path / "m.npz")
        assert loaded.buffers.dtype == model.buffers.dtype
        np.testing.assert_array_equal(loaded.buffers, model.buffers)
        np.testing.assert_array_equal(loaded.theta, model.theta)
        assert loaded.batches_tracked == model.batches_tracked == 8
        assert [l.get_config() for l in loaded.layers] == [l.get_config() for l in model.layers]
        assert loaded.layers[1].momentum == 0.2
        np.testing.assert_array_equal(loaded.decision_function(X), model.decision_function(X))
        # Training goes on from the loaded state as it would have from the saved one.
        model.fit(X, y, epochs=1, batch_size=6, verbose=0)
        loaded.fit(X, y, epochs=1, batch_size=6, verbose=0)
        np.testing.assert_array_equal(loaded.buffers, model.buffers)


def test_state_dict_round_trip_and_errors():
    model = _norm_model()
    state = model.state_dict()
    assert list(state) == ["0.weight", "0.bias", "1.weight", "1.bias", "1.running_mean", "1.running_var",
                           "1.num_batches_tracked", "3.weight", "3.bias", "4.weight", "4.bias",
                           "6.weight", "6.bias"]
    state["1.running_mean"] = np.arange(6.0)
    state["1.num_batches_tracked"] = np.array(5)
    other = _norm_model(seed=1)
    other.load_state_dict(state)
    np.testing.assert_array_equal(other.buffers[:6], np.arange(6.0))
    assert other.batches_tracked == 5
    state["1.running_var"] = np.ones(5)
    with pytest.raises(ValueError, match=r"state_dict\['1.running_var'\] must have shape \(6,\)"):
        other.load_state_dict(state)
    del state["1.running_var"]
    with pytest.raises(ValueError, match="missing key"):
        other.load_state_dict(state)


def test_running_statistics_are_the_same_whatever_numbas_thread_count():
    numba = pytest.importorskip("numba")
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2")
    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(63)
    X = rng.standard_normal((300, 4)).astype(np.float32)
    y = rng.integers(0, 3, 300)
    before = numba.get_num_threads()
    results = []
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            for threads in (1, 2):
                numba.set_num_threads(threads)
                model = Sequential([Dense(4, 64), BatchNorm(64), ReLU(), Dense(64, 32), LayerNorm(32),
                                    ReLU(), Dense(32, 3)], seed=0)
                model.fit(X, y, epochs=2, batch_size=64, loss="softmax_cross_entropy", seed=1, verbose=0)
                results.append((model.buffers.copy(), model.theta.copy()))
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(results[0][0], results[1][0])
    np.testing.assert_array_equal(results[0][1], results[1][1])


def test_early_stopping_restores_the_running_statistics_of_its_best_epoch():
    X, y = _data(40)

    class Record(fastbp.Callback):
        def on_train_begin(self, logs=None):
            self.states = []

        def on_epoch_end(self, epoch, logs=None):
            self.states.append((self.model.theta.copy(), self.model.buffers.copy()))
            logs["earliness"] = -epoch  # a quantity whose best epoch is the first, not the last

    record = Record()
    stop = fastbp.EarlyStopping(monitor="earliness", mode="max", patience=10, restore_best_weights=True)
    model = _norm_model()
    model.fit(X, y, epochs=4, batch_size=8, loss="softmax_cross_entropy", optimizer=SGD(0.1),
              callbacks=[record, stop], verbose=0)
    assert stop.best_epoch < 3
    np.testing.assert_array_equal(model.theta, record.states[stop.best_epoch][0])
    np.testing.assert_array_equal(model.buffers, record.states[stop.best_epoch][1])
    assert not np.array_equal(model.buffers, record.states[-1][1])


def test_a_diverging_step_leaves_the_running_statistics_as_before_it():
    X, y = _data(40)
    model = _norm_model()
    model.fit(X, y, epochs=1, batch_size=8, loss="softmax_cross_entropy", optimizer=SGD(0.1), verbose=0)
    with pytest.raises(fastbp.DivergenceError) as caught:
        model.fit(X, y, epochs=3, batch_size=8, optimizer=SGD(1e300), verbose=0)
    # Each step that happened moved the statistics once; the failing one (whose batch statistics
    # are not finite) did not.
    assert np.isfinite(model.buffers).all() and np.isfinite(model.theta).all()
    assert caught.value.epoch == 1 and model.optimizer.steps == caught.value.batch >= 1
    assert model.batches_tracked == 5 + model.optimizer.steps


def test_cli_names_the_batch_size_that_leaves_one_sample(tmp_path, capsys, monkeypatch):
    from fastbp.cli import main

    X, y = _data(41)
    np.savez(tmp_path / "d.npz", X=X, y=y)
    monkeypatch.chdir(tmp_path)
    # 41 samples, 20% held out for the test: 32 train, and a batch size of 31 leaves one.
    status = main(["train", "--data", "d.npz", "--norm", "batch", "--batch-size", "31", "--epochs", "1", "-q"])
    err = capsys.readouterr().err
    assert status == 2 and "batch_size=31 over 32 training samples leaves a last batch of 1 sample" in err, err
