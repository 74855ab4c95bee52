"""The kernel package as users meet it: names, lazy compilation, use from their own @njit code."""
import ast
import inspect
import subprocess
import sys
import textwrap

import numba
import numpy as np
import pytest

import fastbp.kernels
import reference as ref
from fastbp.kernels._checks import ArgSpec, public

ISSUE_NAMES = [
    "dense_forward", "dense_backward", "dense_act_forward", "dense_act_backward",
    *(f"{act}_{half}" for act in ("identity", "relu", "leaky_relu", "elu", "sigmoid", "tanh",
                                  "softplus", "gelu", "softmax", "log_softmax")
      for half in ("forward", "backward")),
    *(f"{loss}_{half}" for loss in ("mse", "softmax_cross_entropy", "binary_cross_entropy")
      for half in ("forward", "backward")),
    "dropout_forward", "dropout_backward", "sgd_update", "adam_update",
]
# Kernels beyond the first list: the Poisson loss; SiLU, SELU, Huber, MAE, RMSprop, Adagrad.
LATER_NAMES = ["poisson_forward", "poisson_backward", "silu_forward", "silu_backward", "selu_forward",
               "selu_backward", "huber_forward", "huber_backward", "mae_forward", "mae_backward",
               "rmsprop_update", "adagrad_update"]
# The normalization layers.
LATER_NAMES += ["batchnorm_forward", "batchnorm_inference", "batchnorm_update_running", "batchnorm_backward",
                "layernorm_forward", "layernorm_backward"]
# The norm kernels with an activation fused after them.
LATER_NAMES += ["batchnorm_act_forward", "batchnorm_act_inference", "batchnorm_act_backward",
                "layernorm_act_forward", "layernorm_act_backward"]


def test_every_kernel_of_the_issue_exists():
    assert len(ISSUE_NAMES) == 34
    missing = [name for name in ISSUE_NAMES if not callable(getattr(fastbp.kernels, name, None))]
    assert not missing
    assert set(ISSUE_NAMES) <= set(fastbp.kernels.__all__)
    assert set(ISSUE_NAMES + LATER_NAMES) == {name for name in fastbp.kernels.__all__
                                              if hasattr(getattr(fastbp.kernels, name), "unchecked")}
    for name in ISSUE_NAMES + LATER_NAMES:
        checked = getattr(fastbp.kernels, name)
        unchecked = getattr(fastbp.kernels.cpu, name)
        assert checked.unchecked is unchecked
        assert isinstance(unchecked, numba.core.registry.CPUDispatcher)
        # The checked wrapper shows the kernel's own signature and docstring.
        assert checked.__doc__ == unchecked.__doc__ and checked.__doc__
        assert [p for p in checked.__signature__.parameters] == [name for name, _ in checked.spec]


def test_importing_compiles_nothing():
    # A fresh interpreter: this one has compiled kernels already.
    code = textwrap.dedent("""
        import fastbp, fastbp.kernels
        kernels = [getattr(fastbp.kernels, name) for name in fastbp.kernels.__all__]
        kernels = [f for f in kernels if hasattr(f, "unchecked")]
        print(len(kernels), [f.__name__ for f in kernels if f.unchecked.signatures])
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    # A dispatcher lists a signature once it has compiled or loaded one from the cache.
    assert result.stdout.split() == [str(len(ISSUE_NAMES + LATER_NAMES)), "[]"]


def test_scalar_code_keeps_its_own_floating_point_flags():
    # numba compiles a shared function with the options of the kernel that calls it first.
    # A fastmath caller first (as _small_forward can be) must not hand its flags to the
    # formulas and dispatchers every other kernel links: results would depend on the order
    # of compilation. A fresh interpreter, so that this caller is the first.
    code = textwrap.dedent("""
        import re
        import numpy as np
        from numba import njit
        from numba.core.registry import cpu_target
        from fastbp.kernels._scalar import GELU, activate, gelu

        @njit(fastmath=True)
        def first(z):
            return gelu(z) + activate(GELU, z, 0.5)

        first(np.float32(0.5))
        for func in (gelu, activate):
            for template in cpu_target.typing_context.resolve_value_type(func).templates:
                for dispatcher, _ in template._impl_cache.values():
                    for compiled in dispatcher.overloads.values():
                        ir = compiled.library.get_llvm_str()
                        ops = re.findall(r"= f(?:add|sub|mul|div) ([a-z ]*)(?:float|double) ", ir)
                        print(func.__name__, len(ops), sorted(set(flag for op in ops for flag in op.split())))
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert {line.split()[0] for line in lines} == {"activate", "gelu"}, result.stdout
    for line in lines:
        name, n_ops, flags = line.split(" ", 2)
        assert int(n_ops) > 0 and flags == "[]", line


# ----------------------------------------------------------------------------
# Public names are defined where a reader (and jump-to-definition) finds them
# ----------------------------------------------------------------------------

KERNEL_NAMES = [name for name in fastbp.kernels.__all__
                if hasattr(getattr(fastbp.kernels, name), "unchecked")]


def _top_level(source):
    """{name: the top-level statement that binds it} and the literal value of ``__all__``."""
    bound, literal_all = {}, None
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            names = [t.id for t in node.targets if isinstance(t, ast.Name)]
            bound.update((name, node) for name in names)
            if "__all__" in names:
                literal_all = ast.literal_eval(node.value)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound.update((alias.asname or alias.name, node) for alias in node.names)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            bound[node.name] = node
    return bound, literal_all


@pytest.mark.parametrize("package", ["fastbp.kernels", "fastbp.kernels.cuda"])
def test_public_names_are_written_out_in_the_package_source(package):
    module = pytest.importorskip(package)
    source = inspect.getsource(module)
    bound, literal_all = _top_level(source)
    # __all__ is a literal list, readable without running the module.
    assert literal_all == module.__all__
    assert "globals()" not in source
    for name in module.__all__:
        assert name in bound, f"{package}.{name} is not bound by a statement of its own"
        if name not in KERNEL_NAMES:
            continue
        # name = public(<kernel module>.<name>, <cpu module>.<NAME>_SPEC)
        call = bound[name].value
        assert isinstance(call, ast.Call) and call.func.id == "public", name
        kernel, spec = call.args
        assert (kernel.attr, spec.attr) == (name, f"{name.upper()}_SPEC"), name
        assert getattr(module, name).__name__ == name


@pytest.mark.parametrize("name", KERNEL_NAMES)
def test_each_spec_is_the_one_written_just_above_its_kernel(name):
    checked = getattr(fastbp.kernels, name)
    module = sys.modules[checked.unchecked.py_func.__module__]
    assert checked.spec is getattr(module, f"{name.upper()}_SPEC")
    assert isinstance(checked.spec, ArgSpec) and checked.spec.writes
    body = ast.parse(inspect.getsource(module)).body
    position = next(i for i, node in enumerate(body)
                    if isinstance(node, ast.FunctionDef) and node.name == name)
    above = body[position - 1]
    assert isinstance(above, ast.Assign) and above.targets[0].id == f"{name.upper()}_SPEC"


def test_spec_mistakes_fail_at_import():
    with pytest.raises(ValueError, match=r"unknown argument kinds \['NX'\]"):
        ArgSpec([("out", "NX")], writes=("out",))
    with pytest.raises(ValueError, match=r"writes \['dx'\], not all of them arguments"):
        ArgSpec([("out", "*"), ("x", "*")], writes=("dx",))
    with pytest.raises(ValueError, match=r"paired \(\('gamma', 'beta'\),\), not all of them arguments"):
        ArgSpec([("out", "*"), ("gamma", "O?")], writes=("out",), paired=[("gamma", "beta")])
    # A spec whose arguments are not the kernel's, in order, is refused before any wrapping.
    with pytest.raises(TypeError, match=r"does not take the arguments of its spec"):
        public(fastbp.kernels.cpu.dense_forward, fastbp.kernels.dense_backward.spec)


# ----------------------------------------------------------------------------
# A user's own @njit training step, calling the public (checked) names
# ----------------------------------------------------------------------------

@numba.njit
def _train_step(x, labels, w1, b1, w2, b2, lr, momentum, nesterov, v1, v2, v3, v4):
    """One SGD step of a 2-layer MLP (dense, relu, dense, softmax cross-entropy); returns the loss.

    Scalars arrive as arguments, not literals: a literal (0, False) would make
    numba compile a constant-specialized copy of the kernel it is passed to.
    """
    n = x.shape[0]
    hidden = np.empty((n, w1.shape[1]))
    act = np.empty_like(hidden)
    logits = np.empty((n, w2.shape[1]))
    probs = np.empty_like(logits)
    loss = np.empty(1)
    no_weight = np.empty(0)
    fastbp.kernels.dense_forward(hidden, x, w1, b1)
    fastbp.kernels.relu_forward(act, hidden)
    fastbp.kernels.dense_forward(logits, act, w2, b2)
    fastbp.kernels.softmax_cross_entropy_forward(loss, probs, logits, labels, no_weight)

    dlogits = np.empty_like(logits)
    fastbp.kernels.softmax_cross_entropy_backward(dlogits, probs, labels, no_weight)
    dw2, db2, dact = np.empty_like(w2), np.empty_like(b2), np.empty_like(act)
    fastbp.kernels.dense_backward(dact, dw2, db2, dlogits, act, w2)
    dhidden = np.empty_like(hidden)
    fastbp.kernels.relu_backward(dhidden, dact, act)
    dw1, db1 = np.empty_like(w1), np.empty_like(b1)
    fastbp.kernels.dense_backward(np.empty((0, 0)), dw1, db1, dhidden, x, w1)  # no input gradient

    # Flat views, updated in place.
    fastbp.kernels.sgd_update(w1.ravel(), dw1.ravel(), v1, lr, momentum, nesterov, 0.0)
    fastbp.kernels.sgd_update(b1, db1, v2, lr, momentum, nesterov, 0.0)
    fastbp.kernels.sgd_update(w2.ravel(), dw2.ravel(), v3, lr, momentum, nesterov, 0.0)
    fastbp.kernels.sgd_update(b2, db2, v4, lr, momentum, nesterov, 0.0)
    return loss[0]


def _numpy_step(x, labels, w1, b1, w2, b2, lr):
    hidden = ref.dense_forward(x, w1, b1)
    act = ref.relu_forward(hidden)
    logits = ref.dense_forward(act, w2, b2)
    loss, probs = ref.softmax_cross_entropy_forward(logits, labels)
    dlogits = ref.softmax_cross_entropy_backward(probs, labels)
    dact, dw2, db2 = ref.dense_backward(dlogits, act, w2)
    _, dw1, db1 = ref.dense_backward(ref.relu_backward(dact, act), x, w1)
    return loss, (w1 - lr * dw1, b1 - lr * db1, w2 - lr * dw2, b2 - lr * db2)


def _mlp(rng, n=16, i=4, h=9, o=3):
    x = rng.standard_normal((n, i))
    labels = rng.integers(0, o, size=n)
    params = (rng.standard_normal((i, h)) / 2, np.zeros(h), rng.standard_normal((h, o)) / 3, np.zeros(o))
    return x, labels, params


def test_user_njit_training_step_matches_numpy_and_learns():
    rng = np.random.default_rng(50)
    x, labels, (w1, b1, w2, b2) = _mlp(rng)
    velocities = [np.zeros(p.size) for p in (w1, b1, w2, b2)]
    want_loss, want_params = _numpy_step(x, labels, w1, b1, w2, b2, 0.5)
    loss = _train_step(x, labels, w1, b1, w2, b2, 0.5, 0.0, False, *velocities)
    assert loss == pytest.approx(want_loss, rel=1e-12)
    for got, want in zip((w1, b1, w2, b2), want_params):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)

    losses = [loss] + [_train_step(x, labels, w1, b1, w2, b2, 0.5, 0.0, False, *velocities)
                       for _ in range(20)]
    assert losses[-1] < 0.8 * losses[0]
    assert all(np.isfinite(losses))


@numba.njit
def _unchecked_forward_backward(out, dx, dw, db, x, w, b, dout, activation, alpha):
    fastbp.kernels.cpu.dense_act_forward(out, x, w, b, activation, alpha)
    fastbp.kernels.cpu.dense_act_backward(dx, dw, db, dout, dout, out, x, w, activation, alpha)


def test_unchecked_kernels_work_inside_njit():
    rng = np.random.default_rng(51)
    x, w, b = rng.standard_normal((5, 23)), rng.standard_normal((23, 7)) / 5, rng.standard_normal(7)
    dout = rng.standard_normal((5, 7))
    out, dx, dw, db = np.empty((5, 7)), np.empty((5, 23)), np.empty((23, 7)), np.empty(7)
    want_out = np.tanh(x @ w + b)
    want = ref.dense_backward(dout * (1 - want_out**2), x, w)
    _unchecked_forward_backward(out, dx, dw, db, x, w, b, dout, fastbp.kernels.ACTIVATIONS["tanh"], 0.0)
    np.testing.assert_allclose(out, want_out, rtol=1e-12)
    for got, expected in zip((dx, dw, db), want):
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-12)


# ----------------------------------------------------------------------------
# Dropout's generator
# ----------------------------------------------------------------------------

def test_dropout_mask_is_a_function_of_the_seed():
    x = np.ones((400, 500))  # 200000 elements: the parallel path
    rate = 0.3
    masks = []
    for seed in (2024, 2024, 2025):
        out, mask = np.empty_like(x), np.empty_like(x)
        fastbp.kernels.dropout_forward(out, mask, x, rate, seed)
        masks.append(mask)
    np.testing.assert_array_equal(masks[0], masks[1])
    assert (masks[0] != masks[2]).mean() > 0.3  # independent masks differ in 2 p (1 - p) = 42%
    kept = masks[0] != 0
    # Binomial: the kept fraction is 0.7 with standard deviation sqrt(0.21 / 200000) = 0.001.
    assert abs(kept.mean() - (1 - rate)) < 0.005
    np.testing.assert_array_equal(np.unique(masks[0]), [0.0, 1 / (1 - rate)])
    # Rows are not copies of one another: the counter runs over the flat array.
    assert not np.array_equal(kept[0], kept[1])
