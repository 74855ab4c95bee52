"""Dense kernels: out = f(x @ w + b) and its backward, against the reference and by central differences."""
import numpy as np
import pytest

import reference as ref
from backends import (
    DENSE_SHAPES,
    DTYPES,
    GRAD_DENSE_SHAPES,
    SMALL_DENSE_SHAPES,
    assert_close,
    call,
    check_gradients,
    dyadic,
    grad_shapes,
    shapes,
    skip_unsampled_activation,
)
from fastbp.kernels import ACTIVATIONS, KernelArgumentError, dense_forward
from fastbp.kernels._jit import PARALLEL_MIN_ELEMENTS
from fastbp.kernels._scalar import OUTPUT_DERIVABLE
from fastbp.kernels.cpu.dense import BLAS_MIN_FLOPS

ALPHA = {"leaky_relu": 0.1, "elu": 1.3}  # alpha != 1 makes ELU's derivative jump at 0
FUSABLE = [name for name, code in ACTIVATIONS.items() if code in OUTPUT_DERIVABLE]


def _rotation(activation, dtype):
    """A distinct index per (activation, dtype), for shapes(backend, rotate=...)."""
    return 2 * list(ACTIVATIONS).index(activation) + DTYPES.index(dtype)


def _layer(rng, shape, dtype):
    n, i, o = shape
    x = rng.standard_normal((n, i)).astype(dtype)
    w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b


def test_shapes_cover_both_sides_of_every_threshold():
    # Loop nests below BLAS_MIN_FLOPS multiply-adds, BLAS at or above it.
    for shape_set in (DENSE_SHAPES, GRAD_DENSE_SHAPES):
        flops = [n * i * o for n, i, o in shape_set]
        assert min(flops) < BLAS_MIN_FLOPS <= max(flops)
    # Serial below PARALLEL_MIN_ELEMENTS elements, prange at or above it, in the
    # elementwise and row-wise kernels that test_activations.py, test_losses.py
    # and test_dropout.py run on the (N, O) outputs of these shapes.
    outputs = [n * o for n, _, o in DENSE_SHAPES]
    assert min(outputs) < PARALLEL_MIN_ELEMENTS <= max(outputs)
    # The awkward cases of the style guide, on every backend.
    for shape_set in (DENSE_SHAPES, SMALL_DENSE_SHAPES, GRAD_DENSE_SHAPES):
        assert any(n == 1 for n, _, _ in shape_set)
        assert any(o == 1 for _, _, o in shape_set)
        assert (5, 23, 7) in shape_set


def test_dense_forward_matches_reference(backend, dtype):
    rng = np.random.default_rng(1)
    for shape in shapes(backend):
        x, w, b = _layer(rng, shape, dtype)
        out = np.full((shape[0], shape[2]), np.nan, dtype)
        call(backend, "dense_forward", out, x, w, b)
        assert_close(out, ref.dense_forward(x, w, b), dtype, err_msg=str(shape))


def test_dense_backward_matches_reference(backend, dtype):
    rng = np.random.default_rng(2)
    for shape in shapes(backend):
        n, i, o = shape
        x, w, _ = _layer(rng, shape, dtype)
        dout = rng.standard_normal((n, o)).astype(dtype)
        # Garbage in the outputs: the kernels overwrite, never accumulate.
        dx, dw, db = np.full((n, i), 7, dtype), np.full((i, o), 7, dtype), np.full(o, 7, dtype)
        call(backend, "dense_backward", dx, dw, db, dout, x, w)
        for got, want, what in zip((dx, dw, db), ref.dense_backward(dout, x, w), "dx dw db".split()):
            assert_close(got, want, dtype, err_msg=f"{what} {shape}")


def test_zero_size_dx_skips_the_input_gradient(backend, dtype):
    rng = np.random.default_rng(3)
    for shape in shapes(backend):
        n, i, o = shape
        x, w, _ = _layer(rng, shape, dtype)
        dout = rng.standard_normal((n, o)).astype(dtype)
        dw, db = np.full((i, o), 7, dtype), np.full(o, 7, dtype)
        call(backend, "dense_backward", np.empty((0, 0), dtype), dw, db, dout, x, w)
        _, want_dw, want_db = ref.dense_backward(dout, x, w)
        assert_close(dw, want_dw, dtype, err_msg=str(shape))
        assert_close(db, want_db, dtype, err_msg=str(shape))


@pytest.mark.parametrize("activation", list(ACTIVATIONS))
def test_dense_act_forward_matches_reference(backend, dtype, activation):
    skip_unsampled_activation(backend, activation)
    rng = np.random.default_rng(4)
    code, alpha = ACTIVATIONS[activation], ALPHA.get(activation, 0.0)
    for shape in shapes(backend, rotate=_rotation(activation, dtype)):
        x, w, b = _layer(rng, shape, dtype)
        out = np.full((shape[0], shape[2]), np.nan, dtype)
        call(backend, "dense_act_forward", out, x, w, b, code, alpha)
        assert_close(out, ref.dense_act_forward(x, w, b, code, alpha), dtype, err_msg=str(shape))


@pytest.mark.parametrize("activation", FUSABLE)
def test_dense_act_backward_matches_reference(backend, dtype, activation):
    skip_unsampled_activation(backend, activation)
    rng = np.random.default_rng(5)
    code, alpha = ACTIVATIONS[activation], ALPHA.get(activation, 0.0)
    for shape in shapes(backend, rotate=_rotation(activation, dtype)):
        n, i, o = shape
        x, w, b = _layer(rng, shape, dtype)
        out = ref.dense_act_forward(x, w, b, code, alpha).astype(dtype)
        dout = rng.standard_normal((n, o)).astype(dtype)
        dx, dw, db, dz = (np.full(a.shape, 7, dtype) for a in (x, w, b, out))
        call(backend, "dense_act_backward", dx, dw, db, dz, dout, out, x, w, code, alpha)
        want = ref.dense_act_backward(dout, out, x, w, code, alpha)
        for got, expected, what in zip((dx, dw, db, dz), want, "dx dw db dz".split()):
            assert_close(got, expected, dtype, err_msg=f"{what} {shape}")


def test_dense_act_backward_in_place(backend, dtype):
    # dz may be dout itself: the gradient is transformed in place.
    rng = np.random.default_rng(6)
    code = ACTIVATIONS["tanh"]
    for shape in shapes(backend):
        n, i, o = shape
        x, w, b = _layer(rng, shape, dtype)
        out = np.tanh(x @ w + b)
        dout = rng.standard_normal((n, o)).astype(dtype)
        want = ref.dense_act_backward(dout, out, x, w, code, 0.0)
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        call(backend, "dense_act_backward", dx, dw, db, dout, dout, out, x, w, code, 0.0)
        for got, expected, what in zip((dx, dw, db, dout), want, "dx dw db dz".split()):
            assert_close(got, expected, dtype, err_msg=f"{what} {shape}")


def _grad_layer(rng, shape):
    """float64 x, w, b whose pre-activations z = x @ w + b are all >= 1/256 from 0.

    x and w are multiples of 1/8 and 1/16, so x @ w is an exact multiple of
    1/128 and b an odd multiple of 1/256: no kink of relu, leaky relu or ELU
    lies within a central-difference step of any z.
    """
    n, i, o = shape
    x = dyadic(rng, (n, i), 16, 8)
    w = dyadic(rng, (i, o), 4, 16)
    # Centre each column at its median so that relu keeps about half the batch.
    b = (-np.round(np.median(x @ w, axis=0) * 128) + 0.5) / 128
    z = x @ w + b
    assert np.abs(z).min() >= 1 / 256 - 1e-12
    return x, w, b


def test_dense_gradient_check(backend):
    rng = np.random.default_rng(7)
    for shape in grad_shapes(backend):
        n, i, o = shape
        x, w, b = _grad_layer(rng, shape)
        dout = rng.standard_normal((n, o))
        out = np.empty((n, o))

        def loss():
            call(backend, "dense_forward", out, x, w, b)
            return float(np.sum(dout * out))

        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        call(backend, "dense_backward", dx, dw, db, dout, x, w)
        check_gradients(backend, loss, [("x", x, dx), ("w", w, dw), ("b", b, db)], rng,
                        err_msg=str(shape))


@pytest.mark.parametrize("activation", FUSABLE)
def test_dense_act_gradient_check(backend, activation):
    skip_unsampled_activation(backend, activation)
    rng = np.random.default_rng(8)
    code, alpha = ACTIVATIONS[activation], ALPHA.get(activation, 0.0)
    for shape in grad_shapes(backend):
        n, i, o = shape
        x, w, b = _grad_layer(rng, shape)
        dout = rng.standard_normal((n, o))
        out = np.empty((n, o))

        def loss():
            call(backend, "dense_act_forward", out, x, w, b, code, alpha)
            return float(np.sum(dout * out))

        # The backward takes the forward output: computed on the host, one launch fewer.
        y = ref.dense_act_forward(x, w, b, code, alpha)
        dx, dw, db, dz = np.empty_like(x), np.empty_like(w), np.empty_like(b), np.empty_like(y)
        call(backend, "dense_act_backward", dx, dw, db, dz, dout, y, x, w, code, alpha)
        check_gradients(backend, loss, [("x", x, dx), ("w", w, dw), ("b", b, db)], rng,
                        err_msg=f"{activation} {shape}")


def test_nan_propagates(backend):
    # NaN must survive both the loop nests and BLAS, so that divergence stays detectable.
    rng = np.random.default_rng(9)
    for shape in shapes(backend, rotate=1):
        n, i, o = shape
        row = n // 2
        x, w, b = _layer(rng, shape, np.float64)
        x[row, i // 2] = np.nan
        out = np.empty((n, o))
        call(backend, "dense_forward", out, x, w, b)
        assert np.isnan(out[row]).all(), shape
        assert np.isfinite(np.delete(out, row, axis=0)).all(), shape

        x[row, i // 2] = 0.5
        dout = rng.standard_normal((n, o))
        dout[row, o - 1] = np.nan
        dx, dw, db = np.empty_like(x), np.empty_like(w), np.empty_like(b)
        call(backend, "dense_backward", dx, dw, db, dout, x, w)
        assert np.isnan(dx[row]).all() and np.isnan(dw[:, o - 1]).all() and np.isnan(db[o - 1]), shape
        assert np.isfinite(np.delete(dx, row, axis=0)).all(), shape
        assert np.isfinite(dw[:, : o - 1]).all() and np.isfinite(db[: o - 1]).all(), shape


# ----------------------------------------------------------------------------
# Argument checking at the public boundary (CPU entry points)
# ----------------------------------------------------------------------------

def _args(n=5, i=23, o=7, dtype=np.float64):
    rng = np.random.default_rng(10)
    x, w, b = _layer(rng, (n, i, o), dtype)
    return np.empty((n, o), dtype), x, w, b


def test_zero_size_batch_is_rejected():
    out, x, w, b = _args(n=0)
    with pytest.raises(KernelArgumentError, match=r"argument 'out' must be non-empty \(empty batch"):
        dense_forward(out, x, w, b)


def test_wrong_dtype_is_rejected():
    out, x, w, b = _args()
    with pytest.raises(KernelArgumentError, match=r"argument 'w' must be float64 like the arrays"):
        dense_forward(out, x, w.astype(np.float32), b)
    with pytest.raises(KernelArgumentError, match=r"argument 'x' must be float32 or float64.*int64"):
        dense_forward(out, x.astype(np.int64), w, b)


def test_mismatched_shapes_are_rejected():
    out, x, w, b = _args()
    with pytest.raises(KernelArgumentError, match=r"argument 'w' must be of size 23 on axis 0 \(I, as in 'x'\)"):
        dense_forward(out, x, np.zeros((22, 7)), b)
    with pytest.raises(KernelArgumentError, match=r"argument 'b' must be of size 7 on axis 0 \(O, as in 'out'\)"):
        dense_forward(out, x, w, np.zeros(8))
    with pytest.raises(KernelArgumentError, match=r"argument 'b' must be 1-D of shape \(O,\)"):
        dense_forward(out, x, w, np.zeros((1, 7)))
    dx, dw, db = np.empty((5, 23)), np.empty((23, 7)), np.empty(7)
    with pytest.raises(KernelArgumentError, match=r"argument 'dout' must be of size 5 on axis 0 \(N, as in 'dx'\)"):
        call("cpu", "dense_backward", dx, dw, db, np.empty((4, 7)), x, w)


def test_non_contiguous_array_is_rejected():
    out, x, w, b = _args()
    wide = np.zeros((5, 46))
    with pytest.raises(KernelArgumentError, match=r"argument 'x' must be C-contiguous.*non-contiguous"):
        dense_forward(out, wide[:, ::2], w, b)
    with pytest.raises(KernelArgumentError, match=r"argument 'w' must be C-contiguous"):
        dense_forward(out, x, np.asfortranarray(w), b)


def test_read_only_output_is_rejected():
    out, x, w, b = _args()
    out.flags.writeable = False
    with pytest.raises(KernelArgumentError, match=r"argument 'out' must be writeable"):
        dense_forward(out, x, w, b)


def test_gelu_is_rejected_by_dense_act_backward():
    out, x, w, b = _args()
    dx, dw, db, dz = np.empty_like(x), np.empty_like(w), np.empty_like(b), np.empty_like(out)
    with pytest.raises(KernelArgumentError, match=r"argument 'activation' must be .*GELU needs its input"):
        call("cpu", "dense_act_backward", dx, dw, db, dz, out, out, x, w, ACTIVATIONS["gelu"], 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'activation' must be an activation code"):
        call("cpu", "dense_act_forward", out, x, w, b, 99, 0.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_backward_pass_stays_in_the_arrays_dtype(dtype):
    # dz = dout * [y > 0] and db = sum(dz), in float32 arithmetic for float32 arrays: the float64
    # 1.0 and 0.0 of the shared formula widened each element to float64 and back. The bits are
    # those of the formula's, NaN, inf and the sign of zero included.
    from numba import njit

    from fastbp.kernels._scalar import activate_grad
    from fastbp.kernels.cpu import dense
    from fastbp.kernels.registry import RELU

    @njit
    def relu_pass(dz, db, dout, y):
        dense._act_grad_and_bias(dz, db, dout, y, RELU, 0.0)

    rng = np.random.default_rng(11)
    y = np.maximum(rng.standard_normal((9, 21)), 0).astype(dtype)
    y[0, :4] = [0.0, -0.0, 1.0, np.nan]
    dout = rng.standard_normal((9, 21)).astype(dtype)
    dout[0, 0], dout[1, 1], dout[0, 1], dout[2, 2] = np.nan, np.inf, -2.0, -np.inf
    dz, db = np.empty_like(dout), np.empty(21, dtype)
    relu_pass(dz, db, dout, y)
    with np.errstate(invalid="ignore"):  # inf * 0 is NaN, as in the kernel
        want = (dout.astype(np.float64) * np.vectorize(lambda v: activate_grad(RELU, v, 0.0))(y)).astype(dtype)
    want_db = np.zeros(21, dtype)
    for row in want:
        want_db = (want_db.astype(np.float64) + row.astype(np.float64)).astype(dtype)
    assert dz.tobytes() == want.tobytes() and db.tobytes() == want_db.tobytes()
    if dtype == np.float32:
        ir = relu_pass.inspect_llvm(relu_pass.signatures[0])
        assert "fpext" not in ir and "fptrunc" not in ir


# (rows, inputs, outputs) that take each product path of the dense kernels: the loop nests (fewer
# multiply-adds than BLAS_MIN_FLOPS), fastbp's SIMD products (float32, ReLU and identity) and BLAS.
_PATHS = [(4, 3, 5), (32, 24, 40), (64, 72, 96)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("activation", FUSABLE)
def test_the_loops_dense_units_give_the_fused_kernels_bits(activation, dtype):
    # The training loop calls dense_table_forward / _backward and, for an activation they do not
    # apply, the code's own kernels beside them: bit for bit what dense_act_forward and
    # dense_act_backward give, the products, the bias added first and db summed from the unrounded dz.
    # Both compiled for the argument types the loop calls them with (its views: the table's
    # signatures), where LLVM vectorizes as it does in the loop.
    from numba import njit, types

    from fastbp.backends import _kernel_tables
    from fastbp.kernels.cpu import dense as D

    assert D.TABLE_FUSED == (ACTIVATIONS["identity"], ACTIVATIONS["relu"])
    code, alpha = ACTIVATIONS[activation], ALPHA.get(activation, 0.0)
    table_forward, table_backward = D.dense_table_forward, D.dense_table_backward
    apply = grad = None
    if code not in D.TABLE_FUSED:
        apply, grad = D.dense_act_apply_for(code), D.dense_act_grad_for(code)
    signatures = _kernel_tables._signatures(np.dtype(dtype))["kernels"]

    @njit(types.void(*signatures.dense_forward.args))
    def loop_forward(out, x, w, b, code, alpha):
        table_forward(out, x, w, b, code, alpha)
        if apply is not None:
            apply(out, code, alpha)

    @njit(types.void(*signatures.dense_backward.args))
    def loop_backward(dx, dw, db, dz, dout, out, x, w, code, alpha):
        if grad is not None:
            grad(dz, db, dout, out, code, alpha)
        table_backward(dx, dw, db, dz, dout, out, x, w, code, alpha)

    public = []
    for kernel, sig in ((D.dense_act_forward, signatures.dense_forward), (D.dense_act_backward,
                                                                          signatures.dense_backward)):
        kernel.compile(sig.args)
        public.append(kernel.overloads[sig.args].entry_point)
    public_forward, public_backward = public
    rng = np.random.default_rng(code)
    for n, i, o in _PATHS:
        x, w, b = _layer(rng, (n, i, o), dtype)
        want, got = np.empty((n, o), dtype), np.full((n, o), np.nan, dtype)
        public_forward(want, x, w, b, code, alpha)
        loop_forward(got, x, w, b, code, alpha)
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8), err_msg=f"forward {(n, i, o)}")
        out, dout = want, rng.standard_normal((n, o)).astype(dtype)
        want = [np.empty((n, i), dtype), np.empty((i, o), dtype), np.empty(o, dtype), np.empty((n, o), dtype)]
        got = [np.full_like(a, np.nan) for a in want]
        public_backward(*want, dout, out, x, w, code, alpha)
        loop_backward(*got, dout, out, x, w, code, alpha)
        for name, g, wnt in zip(("dx", "dw", "db", "dz"), got, want):
            np.testing.assert_array_equal(g.view(np.uint8), wnt.view(np.uint8), err_msg=f"{name} {(n, i, o)}")
