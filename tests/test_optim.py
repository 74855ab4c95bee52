"""Optimizer updates: worked steps computed by hand, then random arrays against the reference."""
import numpy as np
import pytest

import reference as ref
from backends import CUDA_SIMULATOR, assert_close, call
from fastbp.kernels import KernelArgumentError, adagrad_update, adam_update, rmsprop_update, sgd_update
from fastbp.kernels._jit import PARALLEL_MIN_ELEMENTS

# Hand arithmetic is exact to about 1e-16 in float64; float32 state rounds each step.
HAND_RTOL = {np.dtype(np.float32): 1e-6, np.dtype(np.float64): 1e-13}


def _sgd_two_steps(backend, dtype, momentum, nesterov, weight_decay):
    """param 1.0, lr 0.1, grads 0.5 then 0.25; returns [(param, velocity)] after each step."""
    param = np.array([1.0], dtype)
    velocity = np.array([0.0 if momentum else 7.0], dtype)  # 7.0: must stay untouched
    history = []
    for g in (0.5, 0.25):
        call(backend, "sgd_update", param, np.array([g], dtype), velocity, 0.1, momentum, nesterov,
             weight_decay)
        history.append((float(param[0]), float(velocity[0])))
    return history


# Each case: (momentum, nesterov, weight_decay), then (param, velocity) after steps 1 and 2.
SGD_BY_HAND = {
    # p = 1 - 0.1 * 0.5 = 0.95;  p = 0.95 - 0.1 * 0.25 = 0.925.
    "plain": ((0.0, False, 0.0), [(0.95, 7.0), (0.925, 7.0)]),
    # v = 0.5, p = 1 - 0.1 * 0.5 = 0.95;  v = 0.9 * 0.5 + 0.25 = 0.7, p = 0.95 - 0.07 = 0.88.
    "momentum": ((0.9, False, 0.0), [(0.95, 0.5), (0.88, 0.7)]),
    # v = 0.5, g = 0.5 + 0.9 * 0.5 = 0.95, p = 1 - 0.095 = 0.905;
    # v = 0.7, g = 0.25 + 0.9 * 0.7 = 0.88, p = 0.905 - 0.088 = 0.817.
    "nesterov": ((0.9, True, 0.0), [(0.905, 0.5), (0.817, 0.7)]),
    # g = 0.5 + 0.1 * 1 = 0.6, v = 0.6, p = 1 - 0.06 = 0.94;
    # g = 0.25 + 0.1 * 0.94 = 0.344, v = 0.9 * 0.6 + 0.344 = 0.884, p = 0.94 - 0.0884 = 0.8516.
    "momentum+weight_decay": ((0.9, False, 0.1), [(0.94, 0.6), (0.8516, 0.884)]),
    # Without momentum, weight decay alone: g = 0.6, p = 0.94; g = 0.25 + 0.094, p = 0.94 - 0.0344.
    "weight_decay": ((0.0, False, 0.1), [(0.94, 7.0), (0.9056, 7.0)]),
}


@pytest.mark.parametrize("case", list(SGD_BY_HAND))
def test_sgd_steps_by_hand(backend, dtype, case):
    (momentum, nesterov, weight_decay), expected = SGD_BY_HAND[case]
    got = _sgd_two_steps(backend, dtype, momentum, nesterov, weight_decay)
    np.testing.assert_allclose(got, expected, rtol=HAND_RTOL[dtype])
    # The reference agrees with the same hand numbers.
    p, v = np.array([1.0]), np.array([0.0 if momentum else 7.0])
    for g, (want_p, want_v) in zip((0.5, 0.25), expected):
        p, v = ref.sgd_update(p, np.array([g]), v, 0.1, momentum, nesterov, weight_decay)
        np.testing.assert_allclose([p[0], v[0]], [want_p, want_v], rtol=1e-13)


# beta1 = beta2 = 0.5 and eps = 0.5 keep the hand arithmetic short while every
# term matters: eps is added after the square root of the bias-corrected v.
# param 1.0, lr 0.1, grads 0.5 then -0.5. Each case: (weight_decay, decoupled),
# then (param, m, v) after steps 1 and 2.
ADAM_BY_HAND = {
    # m = 0.5 * 0.5 = 0.25, v = 0.5 * 0.25 = 0.125; m_hat = 0.25 / (1 - 0.5) = 0.5,
    # v_hat = 0.125 / 0.5 = 0.25; p = 1 - 0.1 * 0.5 / (sqrt(0.25) + 0.5) = 0.95.
    # m = 0.5 * 0.25 - 0.25 = -0.125, v = 0.0625 + 0.125 = 0.1875; m_hat = -0.125 / 0.75 = -1/6,
    # v_hat = 0.1875 / 0.75 = 0.25; p = 0.95 - 0.1 * (-1/6) / 1.0 = 0.95 + 1/60.
    "adam": ((0.0, False), [(0.95, 0.25, 0.125), (0.9666666666666667, -0.125, 0.1875)]),
    # L2: g = 0.5 + 0.1 * 1 = 0.6, m = 0.3, v = 0.18, m_hat = 0.6, v_hat = 0.36,
    # p = 1 - 0.1 * 0.6 / (0.6 + 0.5) = 0.9454545454545454.
    # g = -0.5 + 0.1 * 0.9454545454545454 = -0.40545454545454546,
    # m = 0.15 + 0.5 g = -0.052727272727272734, v = 0.09 + 0.5 g^2 = 0.17219669421487604,
    # m_hat = m / 0.75 = -0.07030303030303031, v_hat = v / 0.75 = 0.2295955922865014,
    # p = 0.9454545454545454 + 0.1 * 0.07030303030303031 / (sqrt(0.2295955922865014) + 0.5).
    "adam_l2": ((0.1, False), [(0.9454545454545454, 0.3, 0.18),
                               (0.9526344684397642, -0.052727272727272734, 0.17219669421487604)]),
    # AdamW: p = 1 * (1 - 0.1 * 0.1) = 0.99 first, then the plain step: p = 0.99 - 0.05 = 0.94.
    # p = 0.94 * 0.99 = 0.9306, then p = 0.9306 + 1/60.
    "adamw": ((0.1, True), [(0.94, 0.25, 0.125), (0.9472666666666667, -0.125, 0.1875)]),
}


@pytest.mark.parametrize("case", list(ADAM_BY_HAND))
def test_adam_steps_by_hand(backend, dtype, case):
    (weight_decay, decoupled), expected = ADAM_BY_HAND[case]
    param, m, v = np.array([1.0], dtype), np.zeros(1, dtype), np.zeros(1, dtype)
    for step, (g, want) in enumerate(zip((0.5, -0.5), expected), start=1):
        call(backend, "adam_update", param, np.array([g], dtype), m, v, 0.1, 0.5, 0.5, 0.5, step,
             weight_decay, decoupled)
        np.testing.assert_allclose([param[0], m[0], v[0]], want, rtol=HAND_RTOL[dtype],
                                   err_msg=f"step {step}")
    p, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    for step, (g, want) in enumerate(zip((0.5, -0.5), expected), start=1):
        p, m, v = ref.adam_update(p, np.array([g]), m, v, 0.1, 0.5, 0.5, 0.5, step, weight_decay,
                                  decoupled)
        np.testing.assert_allclose([p[0], m[0], v[0]], want, rtol=1e-13)


def test_first_adam_step_moves_by_lr(backend):
    # With the usual betas, step 1 is lr * sign(g) up to eps:
    # m_hat = 0.05 / 0.1 = 0.5, v_hat = 0.00025 / 0.001 = 0.25,
    # p = 1 - 0.1 * 0.5 / (0.5 + 1e-8) = 0.900000002.
    param, m, v = np.array([1.0]), np.zeros(1), np.zeros(1)
    call(backend, "adam_update", param, np.array([0.5]), m, v, 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)
    np.testing.assert_allclose([param[0], m[0], v[0]], [0.900000002, 0.05, 0.00025], rtol=1e-12)


# Adam(eps_hat=True): eps on the uncorrected sqrt(v), the step size corrected instead
# (lr_t = lr sqrt(1 - beta2^t) / (1 - beta1^t)). lr 0.1, betas 0.5, eps 0.5, grads 0.5, -0.5:
# m = 0.25, v = 0.125, lr_t = 0.1 sqrt(2); p = 1 - 0.1 sqrt(2) 0.25 / (sqrt(0.125) + 0.5);
# m = -0.125, v = 0.1875, lr_t = 0.1 sqrt(0.75) / 0.75; p -= lr_t (-0.125) / (sqrt(0.1875) + 0.5).
EPS_HAT_BY_HAND = [(0.9585786437626905, 0.25, 0.125), (0.9740486976006156, -0.125, 0.1875)]


def test_adam_eps_hat_steps_by_hand(backend, dtype):
    """The by-code dispatcher (the training loops' entry) turns eps_hat into adam_update's eps per step."""
    from fastbp.kernels import registry as R

    module = __import__(f"fastbp.kernels.{backend}.optim", fromlist=["optim"])
    hyper = np.zeros(R.N_HYPER)
    hyper[[R.H_LR, R.H_BETA1, R.H_BETA2, R.H_EPS, R.H_EPS_HAT]] = 0.1, 0.5, 0.5, 0.5, 1.0
    theta, m, v = np.array([1.0], dtype), np.zeros(1, dtype), np.zeros(1, dtype)
    if backend == "cuda":
        from numba import cuda
        theta, m, v = cuda.to_device(theta), cuda.to_device(m), cuda.to_device(v)
    for step, (g, want) in enumerate(zip((0.5, -0.5), EPS_HAT_BY_HAND), start=1):
        grad = np.array([g], dtype) if backend == "cpu" else cuda.to_device(np.array([g], dtype))
        module.optimizer_code_update(theta, grad, m, v, 1, R.OPT_ADAM, hyper, step)
        got = [np.asarray(a if backend == "cpu" else a.copy_to_host())[0] for a in (theta, m, v)]
        np.testing.assert_allclose(got, want, rtol=HAND_RTOL[dtype], err_msg=f"step {step}")


# Sizes below and above PARALLEL_MIN_ELEMENTS (2**15), odd so no vector width
# divides them; under the CUDA simulator, where every GPU thread is a Python
# thread, one block's worth.
SIZES = {"cpu": [1, 37, 40001], "cuda": [1, 37] if CUDA_SIMULATOR else [1, 37, 40001]}


def test_sizes_cover_both_sides_of_the_parallel_threshold():
    assert min(SIZES["cpu"]) < PARALLEL_MIN_ELEMENTS <= max(SIZES["cpu"])


@pytest.mark.parametrize("nesterov", [False, True])
def test_sgd_matches_reference(backend, dtype, nesterov):
    rng = np.random.default_rng(40)
    for size in SIZES[backend]:
        param, velocity = rng.standard_normal(size).astype(dtype), np.zeros(size, dtype)
        want_p, want_v = param.astype(np.float64), velocity.astype(np.float64)
        for _ in range(3):
            grad = rng.standard_normal(size).astype(dtype)
            call(backend, "sgd_update", param, grad, velocity, 0.05, 0.9, nesterov, 1e-3)
            want_p, want_v = ref.sgd_update(want_p, grad, want_v, 0.05, 0.9, nesterov, 1e-3)
            assert_close(param, want_p, dtype, err_msg=str(size))
            assert_close(velocity, want_v, dtype, err_msg=str(size))


@pytest.mark.parametrize("decoupled", [False, True])
def test_adam_matches_reference(backend, dtype, decoupled):
    rng = np.random.default_rng(41)
    for size in SIZES[backend]:
        param = rng.standard_normal(size).astype(dtype)
        m, v = np.zeros(size, dtype), np.zeros(size, dtype)
        want = (param.astype(np.float64), m.astype(np.float64), v.astype(np.float64))
        for step in range(1, 4):
            grad = rng.standard_normal(size).astype(dtype)
            call(backend, "adam_update", param, grad, m, v, 1e-2, 0.9, 0.999, 1e-8, step, 0.01, decoupled)
            want = ref.adam_update(*want[:1], grad, *want[1:], 1e-2, 0.9, 0.999, 1e-8, step, 0.01,
                                   decoupled)
            for got, expected, what in zip((param, m, v), want, ("param", "m", "v")):
                # m and v are O(|g|) and O(g^2): judged on their own scale.
                assert_close(got, expected, dtype, scale=np.abs(expected).max(),
                             err_msg=f"{what} {size} step {step}")


def test_nan_gradient_propagates(backend):
    grad = np.array([0.5, np.nan, -0.5])
    param, velocity = np.ones(3), np.zeros(3)
    call(backend, "sgd_update", param, grad, velocity, 0.1, 0.9, False, 0.0)
    assert np.isnan(param[1]) and np.isnan(velocity[1]) and np.isfinite(param[[0, 2]]).all()
    param, m, v = np.ones(3), np.zeros(3), np.zeros(3)
    call(backend, "adam_update", param, grad, m, v, 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)
    assert np.isnan(param[1]) and np.isnan(m[1]) and np.isnan(v[1])
    assert np.isfinite(param[[0, 2]]).all()


def test_argument_errors_name_the_argument():
    p, g, s = np.ones(3), np.ones(3), np.zeros(3)
    with pytest.raises(KernelArgumentError, match=r"argument 'lr' must be >= 0"):
        sgd_update(p, g, s, -0.1, 0.9, False, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'nesterov' must be a bool"):
        sgd_update(p, g, s, 0.1, 0.9, 1, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'velocity' must be of shape \(3,\) like the first"):
        sgd_update(p, g, np.zeros(4), 0.1, 0.9, False, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'step' must be >= 1"):
        adam_update(p, g, s, s.copy(), 0.1, 0.9, 0.999, 1e-8, 0, 0.0, False)
    with pytest.raises(KernelArgumentError, match=r"argument 'beta2' must be in \[0, 1\)"):
        adam_update(p, g, s, s.copy(), 0.1, 0.9, 1.0, 1e-8, 1, 0.0, False)
    with pytest.raises(KernelArgumentError, match=r"argument 'eps' must be > 0"):
        adam_update(p, g, s, s.copy(), 0.1, 0.9, 0.999, 0.0, 1, 0.0, False)
    with pytest.raises(KernelArgumentError, match=r"argument 'm' must be float64 like the arrays"):
        adam_update(p, g, s.astype(np.float32), s.copy(), 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)


def test_updates_only_need_write_access_to_what_they_write():
    # The gradient is read, never written: a read-only gradient is fine; read-only state is not.
    p = np.ones(5)
    grad = np.full(5, 0.5)
    grad.flags.writeable = False
    velocity = np.zeros(5)
    sgd_update(p, grad, velocity, 0.1, 0.9, False, 0.0)
    np.testing.assert_allclose(p, 0.95)
    m, v = np.zeros(5), np.zeros(5)
    adam_update(p, grad, m, v, 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)
    np.testing.assert_allclose(p, 0.85, rtol=1e-6)
    for name, frozen in (("velocity", velocity), ("param", p)):
        frozen.flags.writeable = False
        with pytest.raises(KernelArgumentError, match=rf"argument '{name}' must be writeable"):
            sgd_update(p, grad, velocity, 0.1, 0.9, False, 0.0)
        frozen.flags.writeable = True
    v.flags.writeable = False
    with pytest.raises(KernelArgumentError, match=r"argument 'v' must be writeable"):
        adam_update(p, grad, m, v, 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)


# ----------------------------------------------------------------------------
# RMSprop and Adagrad: worked steps by hand, then torch.optim as the oracle
# ----------------------------------------------------------------------------

# alpha = 0.75 and eps = 0.5 keep the square roots short; param 1.0, lr 0.1, grads 1.0 then 0.5.
# Each case: (momentum, centered, weight_decay), then (param, square_avg, buffer, grad_avg)
# after steps 1 and 2 (buffer and grad_avg stay 7.0 when unused).
RMSPROP_BY_HAND = {
    # v = 0.25 * 1 = 0.25, a = sqrt(0.25) + 0.5 = 1, p = 1 - 0.1 * 1 / 1 = 0.9;
    # v = 0.75 * 0.25 + 0.25 * 0.25 = 0.25, a = 1, p = 0.9 - 0.1 * 0.5 = 0.85.
    "plain": ((0.0, False, 0.0), [(0.9, 0.25, 7.0, 7.0), (0.85, 0.25, 7.0, 7.0)]),
    # Momentum 0.5: b = 1 / 1 = 1, p = 0.9; b = 0.5 * 1 + 0.5 / 1 = 1, p = 0.9 - 0.1 = 0.8.
    "momentum": ((0.5, False, 0.0), [(0.9, 0.25, 1.0, 7.0), (0.8, 0.25, 1.0, 7.0)]),
    # Centered, momentum 0.5: gbar = 0 + 0.25 (1 - 0) = 0.25, a = sqrt(0.25 - 0.0625) + 0.5
    # = 0.9330127018922193, b = 1 / a = 1.0717967697244908, p = 1 - 0.1 b = 0.8928203230275509;
    # v = 0.25, gbar = 0.25 + 0.25 (0.5 - 0.25) = 0.3125, a = sqrt(0.25 - 0.09765625) + 0.5,
    # b = 0.5 * 1.0717967697244908 + 0.5 / a = 1.0974990253747579, p = 0.8928203230275509 - 0.1 b.
    "centered": ((0.5, True, 0.0), [(0.8928203230275509, 0.25, 1.0717967697244908, 0.25),
                                    (0.7830704204900751, 0.25, 1.0974990253747579, 0.3125)]),
    # Weight decay 0.1: g = 1 + 0.1 = 1.1, v = 0.3025, a = 0.55 + 0.5 = 1.05, p = 1 - 0.11 / 1.05;
    # g = 0.5 + 0.1 p = 0.5895238095238096, v = 0.75 * 0.3025 + 0.25 g^2 = 0.31375958049886626,
    # p = 0.8952380952380953 - 0.1 g / (sqrt(v) + 0.5) = 0.8396301152464299.
    "weight_decay": ((0.0, False, 0.1), [(0.8952380952380953, 0.3025, 7.0, 7.0),
                                         (0.8396301152464299, 0.31375958049886626, 7.0, 7.0)]),
}


@pytest.mark.parametrize("case", list(RMSPROP_BY_HAND))
def test_rmsprop_steps_by_hand(backend, dtype, case):
    (momentum, centered, weight_decay), expected = RMSPROP_BY_HAND[case]
    param, v = np.array([1.0], dtype), np.zeros(1, dtype)
    buf = np.array([0.0 if momentum else 7.0], dtype)
    gavg = np.array([0.0 if centered else 7.0], dtype)
    for step, (g, want) in enumerate(zip((1.0, 0.5), expected), start=1):
        call(backend, "rmsprop_update", param, np.array([g], dtype), v, buf, gavg, 0.1, 0.75, 0.5, momentum,
             centered, weight_decay)
        np.testing.assert_allclose([param[0], v[0], buf[0], gavg[0]], want, rtol=HAND_RTOL[dtype],
                                   err_msg=f"step {step}")
    p, v, b, ga = np.array([1.0]), np.zeros(1), np.zeros(1), np.zeros(1)
    for g, want in zip((1.0, 0.5), expected):
        p, v, b, ga = ref.rmsprop_update(p, np.array([g]), v, b, ga, 0.1, 0.75, 0.5, momentum, centered,
                                         weight_decay)
        np.testing.assert_allclose([p[0], v[0]], want[:2], rtol=1e-13)


# param 1.0, lr 0.1, eps 0.5, grads 0.5 then 1.2. Each case: (lr_decay, weight_decay,
# initial_accumulator_value), then (param, sum) after steps 1 and 2.
ADAGRAD_BY_HAND = {
    # s = 0.25, p = 1 - 0.1 * 0.5 / (0.5 + 0.5) = 0.95; s = 0.25 + 1.44 = 1.69,
    # p = 0.95 - 0.1 * 1.2 / (1.3 + 0.5) = 0.95 - 1/15.
    "plain": ((0.0, 0.0, 0.0), [(0.95, 0.25), (0.8833333333333333, 1.69)]),
    # lr_decay 0.5: step 2 uses clr = 0.1 / (1 + 1 * 0.5) = 1/15, p = 0.95 - (1/15) (1.2 / 1.8) = 0.95 - 2/45.
    "lr_decay": ((0.5, 0.0, 0.0), [(0.95, 0.25), (0.9055555555555556, 1.69)]),
    # Accumulator starting at 0.75: s = 1, p = 1 - 0.05 / 1.5; s = 2.44, p -= 0.12 / (sqrt(2.44) + 0.5).
    "initial_accumulator": ((0.0, 0.0, 0.75), [(0.9666666666666667, 1.0), (0.9084721496704293, 2.44)]),
    # Weight decay 0.1: g = 0.6, s = 0.36, p = 1 - 0.06 / 1.1 = 0.9454545454545454;
    # g = 1.2 + 0.09454545454545454 = 1.2945454545454544, s = 0.36 + g^2, p -= 0.1 g / (sqrt(s) + 0.5).
    "weight_decay": ((0.0, 0.1, 0.0), [(0.9454545454545454, 0.36), (0.8782693504556648, 2.0358479338842974)]),
}


@pytest.mark.parametrize("case", list(ADAGRAD_BY_HAND))
def test_adagrad_steps_by_hand(backend, dtype, case):
    (lr_decay, weight_decay, initial), expected = ADAGRAD_BY_HAND[case]
    param, s = np.array([1.0], dtype), np.array([initial], dtype)
    for step, (g, want) in enumerate(zip((0.5, 1.2), expected), start=1):
        call(backend, "adagrad_update", param, np.array([g], dtype), s, 0.1, lr_decay, 0.5, step, weight_decay)
        np.testing.assert_allclose([param[0], s[0]], want, rtol=HAND_RTOL[dtype], err_msg=f"step {step}")
    p, s = np.array([1.0]), np.array([initial])
    for step, (g, want) in enumerate(zip((0.5, 1.2), expected), start=1):
        p, s = ref.adagrad_update(p, np.array([g]), s, 0.1, lr_decay, 0.5, step, weight_decay)
        np.testing.assert_allclose([p[0], s[0]], want, rtol=1e-13)


RMSPROP_CONFIGS = [dict(), dict(momentum=0.9), dict(centered=True, weight_decay=0.01),
                   dict(momentum=0.5, centered=True, weight_decay=0.01, alpha=0.9, eps=1e-3)]
ADAGRAD_CONFIGS = [dict(), dict(lr_decay=0.1, weight_decay=0.01), dict(initial_accumulator_value=0.3, eps=1e-3)]


@pytest.mark.parametrize("config", RMSPROP_CONFIGS, ids=str)
def test_rmsprop_matches_torch(backend, config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(42)
    size = 37
    param = rng.standard_normal(size)
    theirs = torch.tensor(param.copy(), requires_grad=True)
    opt = torch.optim.RMSprop([theirs], lr=0.01, **config)
    v, buf, gavg = np.zeros(size), np.zeros(size), np.zeros(size)
    for _ in range(5):
        grad = rng.standard_normal(size)
        call(backend, "rmsprop_update", param, grad, v, buf, gavg, 0.01, config.get("alpha", 0.99),
             config.get("eps", 1e-8), config.get("momentum", 0.0), config.get("centered", False),
             config.get("weight_decay", 0.0))
        theirs.grad = torch.from_numpy(grad.copy())
        opt.step()
        np.testing.assert_allclose(param, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(v, opt.state[theirs]["square_avg"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("config", ADAGRAD_CONFIGS, ids=str)
def test_adagrad_matches_torch(backend, config):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(43)
    size = 37
    param = rng.standard_normal(size)
    theirs = torch.tensor(param.copy(), requires_grad=True)
    opt = torch.optim.Adagrad([theirs], lr=0.05, **config)
    s = np.full(size, config.get("initial_accumulator_value", 0.0))
    for step in range(1, 6):
        grad = rng.standard_normal(size)
        call(backend, "adagrad_update", param, grad, s, 0.05, config.get("lr_decay", 0.0), config.get("eps", 1e-10),
             step, config.get("weight_decay", 0.0))
        theirs.grad = torch.from_numpy(grad.copy())
        opt.step()
        np.testing.assert_allclose(param, theirs.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(s, opt.state[theirs]["sum"].numpy(), rtol=1e-12)


@pytest.mark.parametrize("centered", [False, True])
def test_rmsprop_matches_reference(backend, dtype, centered):
    rng = np.random.default_rng(44)
    for size in SIZES[backend]:
        param = rng.standard_normal(size).astype(dtype)
        v, buf, gavg = (np.zeros(size, dtype) for _ in range(3))
        want = tuple(a.astype(np.float64) for a in (param, v, buf, gavg))
        for _ in range(3):
            grad = rng.standard_normal(size).astype(dtype)
            call(backend, "rmsprop_update", param, grad, v, buf, gavg, 1e-2, 0.9, 1e-8, 0.9, centered, 0.01)
            want = ref.rmsprop_update(want[0], grad, *want[1:], 1e-2, 0.9, 1e-8, 0.9, centered, 0.01)
            for got, expected, what in zip((param, v, buf, gavg), want, ("param", "v", "buf", "gavg")):
                if what == "gavg" and not centered:
                    continue
                assert_close(got, expected, dtype, scale=np.abs(expected).max(), err_msg=f"{what} {size}")


def test_adagrad_matches_reference(backend, dtype):
    rng = np.random.default_rng(45)
    for size in SIZES[backend]:
        param, s = rng.standard_normal(size).astype(dtype), np.full(size, 0.1, dtype)
        want = (param.astype(np.float64), s.astype(np.float64))
        for step in range(1, 4):
            grad = rng.standard_normal(size).astype(dtype)
            call(backend, "adagrad_update", param, grad, s, 1e-2, 0.1, 1e-10, step, 0.01)
            want = ref.adagrad_update(*want[:1], grad, want[1], 1e-2, 0.1, 1e-10, step, 0.01)
            for got, expected in zip((param, s), want):
                assert_close(got, expected, dtype, scale=np.abs(expected).max(), err_msg=str(size))


def test_rmsprop_and_adagrad_argument_errors():
    p, g, s = np.ones(3), np.ones(3), np.zeros(3)
    with pytest.raises(KernelArgumentError, match=r"argument 'alpha' must be in \[0, 1\)"):
        rmsprop_update(p, g, s, s.copy(), s.copy(), 0.1, 1.0, 1e-8, 0.0, False, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'centered' must be a bool"):
        rmsprop_update(p, g, s, s.copy(), s.copy(), 0.1, 0.99, 1e-8, 0.0, 1, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'grad_avg' must be of shape \(3,\) like the first"):
        rmsprop_update(p, g, s, s.copy(), np.zeros(4), 0.1, 0.99, 1e-8, 0.0, False, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'step' must be >= 1"):
        adagrad_update(p, g, s, 0.1, 0.0, 1e-10, 0, 0.0)
    with pytest.raises(KernelArgumentError, match=r"argument 'lr_decay' must be >= 0"):
        adagrad_update(p, g, s, 0.1, -1.0, 1e-10, 1, 0.0)


# The compiled loop's kernel table holds one update per optimizer code (``CODE_UPDATES``), reading
# the hyperparameters from the optimizer's H_* array. Each must do what the public kernel does
# with those hyperparameters passed by name: weight decay on the weights only, RMSprop's two
# buffers in the halves of state2, Adam's eps_hat turned into eps for the step.
CODE_UPDATE_CASES = {
    "sgd": (lambda: __import__("fastbp").SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
            lambda p, g, s1, s2, wd, step: sgd_update(p, g, s1, 0.05, 0.9, True, wd)),
    "adam": (lambda: __import__("fastbp").Adam(0.05, weight_decay=0.01, decoupled=True),
             lambda p, g, s1, s2, wd, step: adam_update(p, g, s1, s2, 0.05, 0.9, 0.999, 1e-8, step, wd, True)),
    "adam_eps_hat": (lambda: __import__("fastbp").Adam(0.05, eps=1e-3, eps_hat=True),
                     lambda p, g, s1, s2, wd, step: adam_update(p, g, s1, s2, 0.05, 0.9, 0.999,
                                                                1e-3 / np.sqrt(1.0 - 0.999**step), step, 0.0, False)),
    "rmsprop": (lambda: __import__("fastbp").RMSprop(0.05, momentum=0.5, centered=True, weight_decay=0.01),
                None),
    "adagrad": (lambda: __import__("fastbp").Adagrad(0.05, lr_decay=0.1, weight_decay=0.01), None),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CODE_UPDATE_CASES))
def test_each_code_update_is_the_public_kernel_with_decay_on_the_weights_alone(dtype, case):
    from fastbp.kernels.cpu import optim as O

    make, public = CODE_UPDATE_CASES[case]
    opt = make()
    n, n_weights = 23, 15
    rng = np.random.default_rng(3)
    theta = rng.standard_normal(n).astype(dtype)
    sizes = opt.state_sizes or (1,) * max(opt.n_states, 1)
    states = [np.abs(rng.standard_normal(k * n)).astype(dtype) * 0.1 for k in sizes]
    state1, state2 = states[0], states[-1]
    mine = [theta.copy(), state1.copy(), state2.copy()]
    theirs = [theta.copy(), state1.copy(), state2.copy()]
    for step in (1, 2, 3):
        grad = rng.standard_normal(n).astype(dtype)
        O.CODE_UPDATES[opt.kind](mine[0], grad, mine[1], mine[2], n_weights, opt.kind, opt.hyper(0.05), step)
        p, s1, s2 = theirs
        for part, wd in ((slice(0, n_weights), opt.weight_decay), (slice(n_weights, n), 0.0)):
            if case == "rmsprop":
                rmsprop_update(p[part], grad[part], s1[part], s2[:n][part], s2[n:][part], 0.05, opt.alpha, opt.eps,
                               opt.momentum, opt.centered, wd)
            elif case == "adagrad":
                adagrad_update(p[part], grad[part], s1[part], 0.05, opt.lr_decay, opt.eps, step, wd)
            else:
                public(p[part], grad[part], s1[part], s2[part], wd, step)
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b)
    assert not np.array_equal(mine[0], theta)  # it moved


def test_the_code_updates_cover_every_optimizer():
    from fastbp.kernels import registry as R
    from fastbp.kernels.cpu import optim as O

    assert sorted(O.CODE_UPDATES) == sorted(v for k, v in vars(R).items() if k.startswith("OPT_"))
