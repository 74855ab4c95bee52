"""Training end to end: it learns, its steps are the gradient, it is reproducible,
it reports progress as asked, and it allocates nothing per step.

The gradient tests treat the compiled loop as a black box: one full-batch step
of ``fit`` must move theta by exactly what the optimizer's formula gives for
the central-difference gradient of the loss that ``evaluate`` (or, with
dropout, ``fit`` itself) reports. That checks every backward kernel, the
fusion of activations into Dense, the loss's batch mean and the layout of the
flat parameter vector at once.
"""
import io
import json
import math
import os
import subprocess
import sys
import textwrap
import types

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Dropout, Sequential
from fastbp import datasets as ds

SCE = "softmax_cross_entropy"


def accuracy(model, X, y):
    return float(np.mean(model.predict(X) == y))


# ----- it learns --------------------------------------------------------------------------


@pytest.mark.slow
def test_digits_with_the_command_line_defaults():
    X, y = ds.load_digits()
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.2, seed=0, stratify=y)
    model = Sequential([Dense(64, 256, activation="relu"), Dropout(0.2), Dense(256, 10)], seed=0)
    history = model.fit(Xtr, ytr, epochs=30, batch_size=32, loss=SCE,
                        optimizer=fastbp.SGD(lr=0.1, momentum=0.9), seed=0, verbose=0)
    assert accuracy(model, Xte, yte) >= 0.97
    assert history["accuracy"][-1] > 0.98
    assert model.evaluate(Xte, yte)["accuracy"] == accuracy(model, Xte, yte)


def test_blobs():
    X, y = ds.make_blobs(600, 5, centers=4, cluster_std=2.0, seed=0)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.25, seed=0, stratify=y)
    model = Sequential([Dense(5, 32, activation="relu"), Dense(32, 4)], seed=0)
    model.fit(Xtr, ytr, epochs=10, batch_size=32, loss=SCE, optimizer=fastbp.SGD(0.05, momentum=0.9),
              seed=0, verbose=0)
    assert accuracy(model, Xte, yte) > 0.95


@pytest.mark.parametrize("activation, dtype, lr, epochs", [("relu", "float32", 0.01, 60),
                                                         ("tanh", "float32", 0.01, 150),
                                                         ("relu", "float64", 0.01, 60)])
def test_spirals(activation, dtype, lr, epochs):
    # No straight line separates the arms: a linear model stays near 1/3 to 1/2.
    X, y = ds.make_spirals(600, 3, noise=0.2, seed=0, dtype=np.dtype(dtype))
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.25, seed=0, stratify=y)
    model = Sequential([Dense(2, 64, activation=activation), Dense(64, 64, activation=activation),
                        Dense(64, 3)], dtype=dtype, seed=0)
    model.fit(Xtr, ytr, epochs=epochs, batch_size=32, loss=SCE, optimizer=fastbp.Adam(lr), seed=0, verbose=0)
    assert model.theta.dtype == np.dtype(dtype)
    assert accuracy(model, Xte, yte) > 0.9


def test_nonlinear_regression():
    X, y = ds.make_regression(800, 5, noise=0.1, nonlinear=True, seed=2)
    Xtr, Xte, ytr, yte = ds.train_test_split(X, y, test_size=0.25, seed=2)
    model = Sequential([Dense(5, 64, activation="tanh"), Dense(64, 64, activation="tanh"), Dense(64, 1)], seed=2)
    history = model.fit(Xtr, ytr, epochs=60, batch_size=32, loss="mse", optimizer=fastbp.Adam(0.005),
                        seed=2, verbose=0)
    assert history["loss"][-1] < 0.2 * ytr.var()
    r2 = 1 - np.mean((model.predict(Xte) - yte) ** 2) / yte.var()
    assert r2 > 0.8  # linear regression explains about a tenth of this target's variance


def test_multi_label_binary_cross_entropy():
    X, y = ds.make_blobs(600, 4, centers=4, cluster_std=1.5, seed=3)
    # Three labels per sample: "cluster 0 or 1", "cluster 0 or 2", "cluster 3".
    t = np.stack([y <= 1, (y == 0) | (y == 2), y == 3], axis=1).astype(np.float32)
    Xtr, Xte, ttr, tte = ds.train_test_split(X, t, test_size=0.25, seed=3)
    model = Sequential([Dense(4, 32, activation="relu"), Dense(32, 3)], seed=3)
    history = model.fit(Xtr, ttr, epochs=15, batch_size=32, loss="binary_cross_entropy",
                        optimizer=fastbp.Adam(0.01), seed=3, verbose=0)
    assert np.mean(model.predict(Xte) == tte) > 0.9
    assert history["accuracy"][-1] > 0.9
    assert model.evaluate(Xte, tte)["accuracy"] == np.mean(model.predict(Xte) == tte)


# ----- every step is the gradient ------------------------------------------------------------


def central_differences(f, theta, eps=1e-6):
    grad = np.empty_like(theta)
    for k in range(theta.size):
        t = theta.copy()
        t[k] += eps
        up = f(t)
        t[k] -= 2 * eps
        grad[k] = (up - f(t)) / (2 * eps)
    return grad


def deep_network():
    """Fused relu, tanh and sigmoid, a GELU Dense (a separate pass), a standalone ELU, and a dropout."""
    return Sequential([Dense(4, 6, activation="relu"), Dense(6, 5, activation="tanh"), Dropout(0.0),
                       Dense(5, 5, activation="sigmoid"), Dense(5, 4, activation="gelu"), fastbp.ELU(),
                       Dense(4, 3)], dtype="float64", seed=0)


def problem(loss, n=13, n_out=3, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 4))
    if loss == SCE:
        y = rng.integers(0, n_out, n)
    elif loss == "binary_cross_entropy":
        y = rng.uniform(0, 1, (n, n_out)).round(1)  # soft targets, 0 and 1 included
    elif loss == "poisson":
        y = rng.poisson(1.5, (n, n_out)).astype(np.float64)  # counts, 0 included
    else:
        y = rng.standard_normal((n, n_out))
    return X, y


@pytest.mark.parametrize("loss, weighted", [(SCE, False), (SCE, True), ("binary_cross_entropy", False),
                                            ("mse", False), ("mse", True), ("poisson", True),
                                            (fastbp.losses.Huber(delta=0.7), True), ("mae", False)],
                         ids=str)
def test_one_sgd_step_is_minus_lr_times_the_gradient(loss, weighted):
    X, y = problem(loss)
    w = np.random.default_rng(1).uniform(0.2, 2.0, len(X)) if weighted else None
    model = deep_network().compile(loss)
    theta0 = np.random.default_rng(2).normal(0.0, 0.6, model.n_parameters)

    def f(theta):
        model.set_flat_weights(theta)
        return model.evaluate(X, y, sample_weight=w)["loss"]

    grad = central_differences(f, theta0)
    loss0 = f(theta0)
    eta = 0.1
    history = model.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, optimizer=fastbp.SGD(lr=eta),
                        sample_weight=w, verbose=0)
    assert model.optimizer.steps == 1
    assert history["loss"][0] == pytest.approx(loss0, rel=1e-12)
    np.testing.assert_allclose(model.theta - theta0, -eta * grad, rtol=1e-6, atol=1e-10)
    # Every weight and bias block takes part: a layer skipped in the backward pass shows here.
    model.set_flat_weights(grad)
    for block in model.get_weights():
        assert np.abs(block).max() > 1e-4


def test_a_dropout_step_is_the_gradient_of_the_masked_training_loss():
    # With rate > 0 the loss that fit reports is that of the masked network. The mask is
    # drawn from the fit seed and the optimizer's step count, so a fresh optimizer and the
    # same seed give the same mask on every call: fit with a negligible rate is then a pure
    # function of theta, and the real step must follow its gradient.
    X, y = problem("mse")
    model = Sequential([Dense(4, 8, activation="tanh"), Dropout(0.5), Dense(8, 6, activation="softplus"),
                        Dropout(0.3), Dense(6, 3)], dtype="float64", seed=0)
    theta0 = model.get_flat_weights()
    common = dict(epochs=1, batch_size=len(X), shuffle=False, seed=7, loss="mse", verbose=0)

    def train_loss(theta):
        model.set_flat_weights(theta)
        return model.fit(X, y, optimizer=fastbp.SGD(lr=1e-300), **common)["loss"][0]

    grad = central_differences(train_loss, theta0)
    model.set_flat_weights(theta0)
    inference_loss = model.evaluate(X, y)["loss"]
    assert abs(train_loss(theta0) - inference_loss) > 1e-3 * inference_loss  # dropout is active
    model.set_flat_weights(theta0)
    model.fit(X, y, optimizer=fastbp.SGD(lr=0.05), **common)
    np.testing.assert_allclose(model.theta - theta0, -0.05 * grad, rtol=1e-6, atol=1e-10)
    # A different seed draws a different mask, so a different loss.
    model.set_flat_weights(theta0)
    other = model.fit(X, y, optimizer=fastbp.SGD(lr=1e-300), **dict(common, seed=8))["loss"][0]
    assert other != pytest.approx(train_loss(theta0), rel=1e-6)


def test_dropout_with_rate_zero_is_the_identity_in_training():
    # Regression: the backward pass of a Dropout(0) must not multiply by a mask that its
    # forward never drew (zeros), or the layers before it never learn.
    X, y = problem(SCE)
    kwargs = dict(epochs=3, batch_size=4, loss=SCE, optimizer=None, seed=0, verbose=0)
    with_zero = Sequential([Dense(4, 6, activation="relu"), Dropout(0.0), Dense(6, 3)], dtype="float64", seed=0)
    without = Sequential([Dense(4, 6, activation="relu"), Dense(6, 3)], dtype="float64", seed=0)
    before = with_zero.get_weights()[0]
    for model in (with_zero, without):
        model.fit(X, y, **dict(kwargs, optimizer=fastbp.SGD(0.1, momentum=0.9)))
    np.testing.assert_array_equal(with_zero.theta, without.theta)
    assert not np.array_equal(with_zero.get_weights()[0], before)


def small_network():
    return Sequential([Dense(4, 5, activation="tanh"), Dense(5, 3)], dtype="float64", seed=1)


@pytest.mark.parametrize("nesterov", [False, True])
def test_two_momentum_steps(nesterov):
    X, y = problem(SCE, seed=3)
    model = small_network().compile(SCE)
    theta0 = model.get_flat_weights()

    def f(theta):
        model.set_flat_weights(theta)
        return model.evaluate(X, y)["loss"]

    eta, mu = 0.2, 0.9
    g1 = central_differences(f, theta0)
    theta1 = theta0 - eta * (g1 + mu * g1 if nesterov else g1)
    g2 = central_differences(f, theta1)
    v2 = mu * g1 + g2
    theta2 = theta1 - eta * (g2 + mu * v2 if nesterov else v2)
    model.set_flat_weights(theta0)
    model.fit(X, y, epochs=2, batch_size=len(X), shuffle=False,
              optimizer=fastbp.SGD(lr=eta, momentum=mu, nesterov=nesterov), verbose=0)
    np.testing.assert_allclose(model.theta, theta2, rtol=1e-6, atol=1e-9)


def test_weight_decay_applies_to_weights_only():
    X, y = problem("mse", seed=4)
    model = small_network().compile("mse")
    theta0 = model.get_flat_weights()
    n_weights = sum(w.size for w in model.get_weights()[::2])  # theta holds the weights first
    theta0[n_weights:] = 0.5  # non-zero biases, which must not decay

    def f(theta):
        model.set_flat_weights(theta)
        return model.evaluate(X, y)["loss"]

    g = central_differences(f, theta0)
    decay = np.zeros_like(theta0)
    decay[:n_weights] = 0.01 * theta0[:n_weights]
    model.set_flat_weights(theta0)
    model.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, optimizer=fastbp.SGD(lr=0.1, weight_decay=0.01),
              verbose=0)
    np.testing.assert_allclose(model.theta - theta0, -0.1 * (g + decay), rtol=1e-6, atol=1e-10)


def test_first_adam_step():
    # After one step m_hat = g and v_hat = g^2, so the step is -lr * g / (|g| + eps).
    X, y = problem(SCE, seed=5)
    model = small_network().compile(SCE)
    theta0 = model.get_flat_weights()

    def f(theta):
        model.set_flat_weights(theta)
        return model.evaluate(X, y)["loss"]

    g = central_differences(f, theta0)
    model.set_flat_weights(theta0)
    model.fit(X, y, epochs=1, batch_size=len(X), shuffle=False, optimizer=fastbp.Adam(lr=0.01), verbose=0)
    step = model.theta - theta0
    big = np.abs(g) > 1e-4
    assert big.sum() > 0.9 * g.size
    np.testing.assert_allclose(step[big], -0.01 * g[big] / (np.abs(g[big]) + 1e-8), rtol=1e-6)
    assert np.all(np.abs(step) <= 0.01 * (1 + 1e-9))
    assert model.optimizer.steps == 1


# ----- bookkeeping ------------------------------------------------------------------------


def test_steps_epochs_and_a_partial_last_batch():
    X, y = ds.make_blobs(50, 3, centers=2, seed=0)
    model = Sequential([Dense(3, 4, activation="relu"), Dense(4, 2)], seed=0)
    opt = fastbp.SGD(0.05, momentum=0.5)
    history = model.fit(X, y, epochs=3, batch_size=16, loss=SCE, optimizer=opt, verbose=0)
    assert opt.steps == 3 * 4  # 16 + 16 + 16 + 2
    assert model.epochs_trained == 3 and history.epoch == [0, 1, 2]
    # A second fit continues: epochs and optimizer steps count on.
    history = model.fit(X, y, epochs=2, batch_size=64, verbose=0)  # batch larger than the data
    assert opt.steps == 12 + 2
    assert model.epochs_trained == 5 and history.epoch == [3, 4]
    for seconds, rate in zip(history["seconds"], history["samples_per_second"]):
        assert rate == pytest.approx(50 / seconds)


# ----- reproducibility ------------------------------------------------------------------------


def trained_theta(model_seed, fit_seed, shuffle=True, dropout=0.3):
    X, y = ds.make_blobs(80, 2, centers=3, seed=5)
    layers = [Dense(2, 16, activation="relu")] + ([Dropout(dropout)] if dropout else []) + [Dense(16, 3)]
    model = Sequential(layers, seed=model_seed)
    model.fit(X, y, epochs=3, batch_size=16, loss=SCE, optimizer=fastbp.SGD(0.1, momentum=0.9),
              seed=fit_seed, shuffle=shuffle, verbose=0)
    return model.get_flat_weights()


def test_same_seeds_give_identical_weights():
    np.testing.assert_array_equal(trained_theta(0, 1), trained_theta(0, 1))
    # Without a fit seed, fit draws from the model's generator, itself seeded.
    np.testing.assert_array_equal(trained_theta(0, None), trained_theta(0, None))


def test_different_seeds_give_different_weights():
    reference = trained_theta(0, 1)
    assert not np.array_equal(reference, trained_theta(0, 2))
    assert not np.array_equal(reference, trained_theta(1, 1))
    # Through the shuffle alone, and through the dropout masks alone.
    assert not np.array_equal(trained_theta(0, 1, dropout=0), trained_theta(0, 2, dropout=0))
    assert not np.array_equal(trained_theta(0, 1, shuffle=False), trained_theta(0, 2, shuffle=False))
    np.testing.assert_array_equal(trained_theta(0, 1, shuffle=False, dropout=0),
                                  trained_theta(0, 2, shuffle=False, dropout=0))


# ----- progress -----------------------------------------------------------------------------


@pytest.fixture
def tiny():
    X, y = ds.make_blobs(40, 2, centers=2, seed=6)
    return X, y, Sequential([Dense(2, 4, activation="relu"), Dense(4, 2)], seed=0)


def test_verbose_0_prints_nothing(tiny, capsys):
    X, y, model = tiny
    model.fit(X, y, epochs=3, loss=SCE, verbose=0, validation_split=0.25)
    assert capsys.readouterr() == ("", "")


def test_verbose_auto_prints_one_line_per_epoch_off_a_terminal(tiny, capsys):
    # A log file or a pipe: no bar, whose every redraw would be written, but not silence either.
    X, y, model = tiny
    assert not sys.stderr.isatty()
    model.fit(X, y, epochs=3, loss=SCE)  # verbose="auto" by default
    out, err = capsys.readouterr()
    assert [line.split(":")[0] for line in out.splitlines()] == ["epoch 1/3", "epoch 2/3", "epoch 3/3"]
    assert "\r" not in out + err


def test_verbose_2_prints_one_line_per_epoch(tiny, capsys):
    X, y, model = tiny
    history = model.fit(X, y, epochs=4, loss=SCE, verbose=2, validation_split=0.25)
    out, err = capsys.readouterr()
    assert err == ""
    lines = out.splitlines()
    assert len(lines) == 4
    for i, line in enumerate(lines):
        assert line.startswith(f"epoch {i + 1}/4: loss {history['loss'][i]:.4f}, "
                               f"accuracy {history['accuracy'][i]:.4f}, val_loss {history['val_loss'][i]:.4f}")
        assert line.endswith(" samples/s")


def test_verbose_1_off_a_terminal_writes_one_line_per_epoch(capsys):
    # Piped, a bar's redraws would fill the log (25 KB for 5 epochs of the digits).
    X, y = ds.load_digits()
    model = Sequential([Dense(64, 32, activation="relu"), Dense(32, 10)], seed=0)
    model.fit(X, y, epochs=5, batch_size=32, loss=SCE, verbose=1)
    out, err = capsys.readouterr()
    assert "\r" not in out + err
    assert [line.split(":")[0] for line in out.splitlines()] == [f"epoch {i}/5" for i in range(1, 6)]
    assert len(out + err) < 1000


class FakeTerminal(io.StringIO):
    def isatty(self):
        return True


class ZMQInteractiveShell:
    """What get_ipython() returns in a Jupyter kernel, as far as fastbp looks."""

    config = {"IPKernelApp": {}}


@pytest.fixture
def notebook(monkeypatch):
    ipython = types.ModuleType("IPython")
    ipython.get_ipython = ZMQInteractiveShell
    monkeypatch.setitem(sys.modules, "IPython", ipython)


def long_logs_fit(model, X, y, verbose):
    return model.fit(X, y, epochs=2, batch_size=4, loss=SCE, verbose=verbose, validation_split=0.25)


def test_a_notebook_shows_a_bar_and_each_epochs_full_summary(tiny, notebook, monkeypatch, capsys):
    # A Jupyter kernel's stderr is no terminal, but it is watched live: the bar (the text
    # bar here, where ipywidgets is missing), the compile note, and every summary in full.
    X, y, model = tiny
    seen = []
    real = fastbp._fit._first_run.compile_loop
    monkeypatch.setattr(fastbp._fit._first_run, "compile_loop",
                        lambda trainer, order, hyper, verbose: seen.append(verbose) or real(trainer, order, hyper, verbose))
    history = long_logs_fit(model, X, y, "auto")
    out, err = capsys.readouterr()
    assert seen and seen[0]  # the compile note is printed when the loop compiles
    assert "[1/" in err  # the bar drew batches
    summaries = [line.split("\r")[-1].strip() for line in err.splitlines() if ": loss" in line]
    assert len(summaries) == 2
    last = summaries[-1]
    assert last.startswith(f"epoch 2/2: loss {history['loss'][1]:.4f}, accuracy {history['accuracy'][1]:.4f}, "
                           f"val_loss {history['val_loss'][1]:.4f}, val_accuracy {history['val_accuracy'][1]:.4f}, ")
    assert last.endswith(" samples/s")


def test_a_terminal_bar_ends_each_epoch_with_the_full_summary(tiny, monkeypatch):
    pytest.importorskip("tqdm")
    X, y, model = tiny
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    monkeypatch.setenv("COLUMNS", "60")
    history = long_logs_fit(model, X, y, 1)
    text = terminal.getvalue()
    for epoch in range(2):
        line = (f"epoch {epoch + 1}/2: loss {history['loss'][epoch]:.4f}, accuracy {history['accuracy'][epoch]:.4f}, "
                f"val_loss {history['val_loss'][epoch]:.4f}, val_accuracy {history['val_accuracy'][epoch]:.4f}, ")
        assert len(line) > 60 and line in text


# ----- no allocation per step ---------------------------------------------------------------

ALLOCATIONS = textwrap.dedent("""
    import json
    import numpy as np
    from numba.core.runtime import rtsys
    import fastbp
    from fastbp.backends import _cpu_loop

    # Count the NumPy arrays handed to the compiled loop, those inside its grouped
    # (namedtuple) arguments included: numba wraps each array argument in a new NRT
    # MemInfo when it enters code compiled with its runtime, and the loop's is compiled without.
    array_args = []
    compiled = _cpu_loop.train_batches

    def n_arrays(a):
        if isinstance(a, tuple):
            return sum(n_arrays(b) for b in a)
        return isinstance(a, np.ndarray)

    def counted(*args):
        array_args.append(n_arrays(args))
        return compiled(*args)

    # On a cold cache the loop is compiled ahead through the dispatcher's own methods.
    counted.compile, counted.typeof_pyval = compiled.compile, compiled.typeof_pyval
    _cpu_loop.train_batches = counted

    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 96)
    targets = rng.standard_normal((96, 2)).astype(np.float32)


    def build(kind):
        if kind == "sgd":
            layers = [fastbp.Dense(6, 8, activation="relu"), fastbp.Dropout(0.3),
                      fastbp.Dense(8, 8, activation="gelu"), fastbp.Tanh(), fastbp.Dense(8, 3)]
            model = fastbp.Sequential(layers, seed=0)
            return model.compile("softmax_cross_entropy", fastbp.SGD(0.05, momentum=0.9)), labels, None
        if kind == "norm":
            layers = [fastbp.Dense(6, 8), fastbp.BatchNorm(8), fastbp.ReLU(), fastbp.Dense(8, 8),
                      fastbp.LayerNorm(8), fastbp.Tanh(), fastbp.Dense(8, 3)]
            model = fastbp.Sequential(layers, seed=0)
            return model.compile("softmax_cross_entropy", fastbp.SGD(0.05, momentum=0.9)), labels, None
        model = fastbp.Sequential([fastbp.Dense(6, 8, activation="elu"), fastbp.Dense(8, 2)], seed=0)
        return model.compile("mse", fastbp.Adam(0.01, weight_decay=1e-4)), targets, np.ones(96)


    def fit(kind, epochs, batch_size):
        model, y, w = build(kind)
        model.fit(X, y, epochs=epochs, batch_size=batch_size, sample_weight=w, seed=0, verbose=0)
        return model


    def run(kind, epochs, batch_size):
        del array_args[:]
        before = rtsys.get_allocation_stats()
        model = fit(kind, epochs, batch_size)
        steps = model.optimizer.steps
        after = rtsys.get_allocation_stats()
        return dict(alloc=after.alloc - before.alloc, free=after.free - before.free,
                    mi_alloc=after.mi_alloc - before.mi_alloc, steps=steps,
                    calls=len(array_args), array_args=sum(array_args))


    def again(kind, epochs, batch_size):
        # A second fit of the same model: nothing is compiled or built in compiled code.
        model, y, w = build(kind)
        model.fit(X, y, epochs=1, batch_size=batch_size, sample_weight=w, seed=0, verbose=0)
        del array_args[:]
        before = rtsys.get_allocation_stats()
        model.fit(X, y, epochs=epochs, batch_size=batch_size, sample_weight=w, seed=0, verbose=0)
        after = rtsys.get_allocation_stats()
        return dict(alloc=after.alloc - before.alloc, free=after.free - before.free,
                    array_args=sum(array_args))


    results = {}
    for kind in ("sgd", "adam", "norm"):
        fit(kind, 1, 16)  # warm-up: compiling (or loading the cache) allocates; it also starts the NRT
        results[kind] = {f"{e}x{b}": run(kind, e, b) for e, b in ((1, 16), (5, 16), (10, 16), (5, 8), (10, 8))}
        results[kind + " again"] = again(kind, 3, 16)
    print(json.dumps(results))
""")


def test_no_allocation_per_training_step(tmp_path):
    script = tmp_path / "allocations.py"
    script.write_text(ALLOCATIONS)
    env = dict(os.environ, NUMBA_NRT_STATS="1")  # must be set before numba is imported
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env,
                          cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout.splitlines()[-1])
    for kind in ("sgd", "adam", "norm"):
        # Fitting a model again allocates nothing in numba's runtime: the finiteness check of X
        # is NumPy's, and the loop is compiled without numba's runtime (jit(refcounts=False)):
        # the arrays passed to it, once per epoch, get no MemInfo.
        r = results.pop(kind + " again")
        assert r["array_args"] > 0
        assert r["alloc"] == r["free"] == 0, (kind, r)
    for kind, runs in results.items():
        for name, r in runs.items():
            epochs, batch_size = map(int, name.split("x"))
            assert r["steps"] == epochs * math.ceil(96 / batch_size), (kind, name, r)
            # verbose=0: one compiled call per epoch, after the empty one with which fit compiles
            # (or loads) the loop before its first timed epoch (fastbp/_first_run.py); the first
            # call trains at most 8 batches (fastbp/_interrupt.py: BatchChunks), then calls grow.
            n_batches = math.ceil(96 / batch_size)
            assert r["calls"] == epochs + 1 + (n_batches > 8), (kind, name, r)
            assert r["alloc"] == r["free"], (kind, name, r)  # nothing leaks
            assert r["mi_alloc"] == r["alloc"]
        # Twice the batches (batch size 8 instead of 16) cost no extra allocation at all.
        assert runs["5x8"]["alloc"] == runs["5x16"]["alloc"], (kind, runs)
        assert runs["10x8"]["alloc"] == runs["10x16"]["alloc"], (kind, runs)
        # Nor do ten times the epochs: the loop, called once per epoch with the same arrays,
        # unboxes them without a MemInfo (it is compiled without numba's runtime).
        assert runs["1x16"]["array_args"] > 0
        assert runs["10x16"]["alloc"] == runs["5x16"]["alloc"] == runs["1x16"]["alloc"], (kind, runs)


# ----- class_weight: the weight of each sample's class multiplies its sample_weight ------------------


def _fit_theta(loss, X, y, n_out, **kwargs):
    model = Sequential([Dense(X.shape[1], 6, activation="tanh"), Dense(6, n_out)], dtype="float64", seed=3)
    model.fit(X, y, epochs=3, batch_size=7, loss=loss, optimizer=fastbp.SGD(lr=0.1), seed=0, verbose=0,
              **kwargs)
    return model.theta


@pytest.mark.parametrize("loss, n_out", [(SCE, 3), ("binary_cross_entropy", 1)])
def test_class_weight_equals_the_matching_sample_weight(loss, n_out):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((23, 4))
    # Unbalanced classes: the last class of softmax takes 3 in 5 samples, class 1 of BCE 3 in 10.
    y = np.minimum(rng.integers(0, 5, 23), 2) if n_out > 1 else (rng.uniform(size=23) < 0.3).astype(np.int64)
    counts = np.bincount(y, minlength=max(n_out, 2))
    cw = {0: 0.5, 1: 2.0}
    for c, expected in (("dict", np.array([cw.get(int(k), 1.0) for k in y])),
                        ("balanced", len(y) / (np.count_nonzero(counts) * counts[y]))):
        theta = _fit_theta(loss, X, y, n_out, class_weight=cw if c == "dict" else "balanced")
        np.testing.assert_array_equal(theta, _fit_theta(loss, X, y, n_out, sample_weight=expected))
        assert not np.array_equal(theta, _fit_theta(loss, X, y, n_out))
    # With a sample_weight too, the two multiply.
    sw = rng.integers(1, 4, len(y)).astype(np.float64)
    np.testing.assert_array_equal(_fit_theta(loss, X, y, n_out, class_weight=cw, sample_weight=sw),
                                  _fit_theta(loss, X, y, n_out,
                                             sample_weight=sw * np.array([cw.get(int(k), 1.0) for k in y])))


def test_balanced_class_weight_by_hand():
    # Labels 0, 0, 0, 1 of 3 classes (class 2 absent): n / (n_present * count) = 4/6 and 4/2.
    weights = fastbp._fit.class_weights("balanced", np.array([0, 0, 0, 1]), 3)
    np.testing.assert_allclose(weights, [4 / 6, 2.0, 1.0])


def test_class_weight_errors_name_the_argument():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((10, 3))
    model = Sequential([Dense(3, 3)], seed=0)
    y = rng.integers(0, 3, 10)
    with pytest.raises(ValueError, match=r"class_weight has key 3, which is not a class.*0\.\.2"):
        model.fit(X, y, loss=SCE, class_weight={3: 2.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight has key 'a'"):
        model.fit(X, y, loss=SCE, class_weight={"a": 2.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight\[1\] must be a finite number >= 0"):
        model.fit(X, y, loss=SCE, class_weight={1: -1.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight must be None, 'balanced' or a dict"):
        model.fit(X, y, loss=SCE, class_weight="auto", verbose=0)
    with pytest.raises(ValueError, match=r"class_weight needs class labels.*got mse"):
        model.fit(X, rng.standard_normal((10, 3)), loss="mse", class_weight="balanced", verbose=0)
    binary = Sequential([Dense(3, 1)], seed=0)
    with pytest.raises(ValueError, match=r"class_weight needs 0/1 targets"):
        binary.fit(X, rng.uniform(size=10), loss="binary_cross_entropy", class_weight={1: 2.0}, verbose=0)
    with pytest.raises(ValueError, match=r"class_weight has key 2"):
        binary.fit(X, rng.integers(0, 2, 10), loss="binary_cross_entropy", class_weight={2: 2.0}, verbose=0)


# ----- the Poisson loss with the log link --------------------------------------------------------------


def test_poisson_loss_fits_counts_and_predicts_the_mean():
    rng = np.random.default_rng(0)
    X = rng.uniform(-1, 1, (400, 2))
    mean = np.exp(0.8 * X[:, 0] - 0.5 * X[:, 1] + 0.3)
    y = rng.poisson(mean).astype(np.float64)
    model = Sequential([Dense(2, 1)], dtype="float64", seed=0)
    history = model.fit(X, y, epochs=60, batch_size=400, loss="poisson", optimizer=fastbp.SGD(0.5),
                        shuffle=False, verbose=0)
    assert set(history.history) >= {"loss", "mae"} and "mse" not in history.history
    w, b = model.get_weights()
    # Full-batch gradient descent on a GLM: the coefficients that generated the counts, to sampling error.
    np.testing.assert_allclose([w[0, 0], w[1, 0], b[0]], [0.8, -0.5, 0.3], atol=0.2)
    eta = model.decision_function(X)
    np.testing.assert_array_equal(model.predict(X), np.exp(eta))
    metrics = model.evaluate(X, y)
    assert metrics["loss"] == pytest.approx(np.mean(np.exp(eta[:, 0]) - y * eta[:, 0]), rel=1e-12)
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(np.exp(eta[:, 0]) - y)), rel=1e-12)
    with pytest.raises(RuntimeError, match="predict_proba needs a classification loss"):
        model.predict_proba(X)
    with pytest.raises(ValueError, match=r"y must hold targets >= 0 for poisson"):
        model.fit(X, -y, loss="poisson", verbose=0)
