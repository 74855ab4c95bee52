"""Inverted dropout: the counter-hash mask against the reference, and its backward."""
import numpy as np
import pytest

import reference as ref
from backends import assert_close, call, check_gradients, grad_matrix_shapes, matrix_shapes
from fastbp.kernels import KernelArgumentError, dropout_backward, dropout_forward


@pytest.mark.parametrize("rate", [0.0, 0.3, 0.9])
def test_forward_and_backward_match_reference(backend, dtype, rate):
    rng = np.random.default_rng(30)
    for k, shape in enumerate(matrix_shapes(backend)):
        seed = 12345 + 1000 * k
        x = rng.standard_normal(shape).astype(dtype)
        out, mask = np.full(shape, np.nan, dtype), np.full(shape, np.nan, dtype)
        call(backend, "dropout_forward", out, mask, x, rate, seed)
        want_out, want_mask = ref.dropout_forward(x, rate, seed)
        # The same elements are dropped as the splitmix64 reference drops, exactly.
        np.testing.assert_array_equal(mask != 0, want_mask != 0, err_msg=str(shape))
        assert_close(mask, want_mask, dtype, err_msg=str(shape))
        assert_close(out, want_out, dtype, err_msg=str(shape))

        dout = rng.standard_normal(shape).astype(dtype)
        dx = np.full(shape, np.nan, dtype)
        call(backend, "dropout_backward", dx, dout, mask)
        assert_close(dx, ref.dropout_backward(dout, mask), dtype, err_msg=str(shape))


def test_reference_hash_matches_the_scalar_kernel_function():
    # The vectorized uint64 reference against the kernels' own scalar splitmix64
    # (plain Python here), including a seed near 2**63 where the sum wraps.
    from fastbp.kernels._scalar import hash_uniform

    for seed in (0, 7, 2**63 - 1):
        draws = ref.hash_uniform(seed, 50)
        assert ((0.0 <= draws) & (draws < 1.0)).all()
        with np.errstate(over="ignore"):  # NumPy warns when uint64 scalars wrap
            scalar_draws = [hash_uniform(seed, i) for i in range(50)]
        np.testing.assert_array_equal(draws, scalar_draws)
    # splitmix64's first output for state 0 (counter 0 of seed 0 hashes the state 0).
    assert ref.hash_uniform(0, 1)[0] == 0.0
    # Counter 1 of seed 0 hashes 0x9E3779B97F4A7C15, whose splitmix64 finalizer is
    # 0xE220A8397B1DCDAF, the well-known first output of splitmix64 seeded with 0.
    assert ref.hash_uniform(0, 2)[1] == (0xE220A8397B1DCDAF >> 11) / 2.0**53


def test_gradient_check(backend):
    rng = np.random.default_rng(31)
    for shape in grad_matrix_shapes(backend):
        x = rng.standard_normal(shape)
        dout = rng.standard_normal(shape)
        out, mask = np.empty(shape), np.empty(shape)

        def loss():
            # The same seed on every call: the mask is fixed, so L is linear in x.
            call(backend, "dropout_forward", out, mask, x, 0.4, 99)
            return float(np.sum(dout * out))

        loss()
        dx = np.empty(shape)
        call(backend, "dropout_backward", dx, dout, mask.copy())
        check_gradients(backend, loss, [("x", x, dx)], rng, err_msg=str(shape),
                        degenerate=not mask.any())


def test_nan_propagates(backend):
    x = np.full((4, 5), np.nan)
    out, mask = np.empty_like(x), np.empty_like(x)
    call(backend, "dropout_forward", out, mask, x, 0.5, 3)
    assert (mask == 0).any() and (mask == 2).any()
    # Kept or dropped (NaN * 0), a NaN stays NaN.
    assert np.isnan(out).all()


def test_argument_errors_name_the_argument():
    x = np.ones((4, 5))
    out, mask = np.empty_like(x), np.empty_like(x)
    for rate in (1.0, -0.1, 1.5):
        with pytest.raises(KernelArgumentError, match=r"argument 'rate' must be in \[0, 1\)"):
            dropout_forward(out, mask, x, rate, 0)
    with pytest.raises(KernelArgumentError, match=r"argument 'rate' must be finite"):
        dropout_forward(out, mask, x, float("nan"), 0)
    with pytest.raises(KernelArgumentError, match=r"argument 'seed' must be in \[0, 2\*\*63\)"):
        dropout_forward(out, mask, x, 0.5, -1)
    with pytest.raises(KernelArgumentError, match=r"argument 'seed' must be an integer"):
        dropout_forward(out, mask, x, 0.5, 1.5)
    with pytest.raises(KernelArgumentError, match=r"argument 'mask' must be of shape \(4, 5\) like the first"):
        dropout_backward(out, x, np.ones((5, 4)))
    with pytest.raises(KernelArgumentError, match=r"argument 'mask' must be writeable"):
        mask.flags.writeable = False
        dropout_forward(out, mask, x, 0.5, 0)


@pytest.mark.parametrize("shape", [(5, 23), (1, 1), (32, 7)])
def test_dropout_inference_copies_its_input(shape):
    from fastbp.kernels.cpu import dropout

    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    out = np.full_like(x, np.nan)
    dropout.dropout_inference(out, x)
    assert np.array_equal(out, x)
