"""``fastbp compile``: the cache it builds is what fits load, for this CPU or a named one."""
import json
import os
import subprocess
import sys
import textwrap

import pytest
from compile_events import RECORD

from fastbp import _precompile

# A fit of the network `fastbp train` trains, counting what numba compiles (not loads).
_FIT = RECORD + textwrap.dedent("""
    import hashlib, json, sys
    if len(sys.argv) > 1:  # pretend to be another CPU: what numba would see on another machine
        import llvmlite.binding as llb
        llb.get_host_cpu_name = lambda: sys.argv[1]
    import numpy as np
    import fastbp
    rng = np.random.default_rng(0)
    X = rng.standard_normal((200, 12)).astype(np.float32)
    y = rng.integers(0, 3, 200)
    model = fastbp.Sequential([fastbp.Dense(12, 32, activation="relu"), fastbp.Dropout(0.2), fastbp.Dense(32, 3)],
                              seed=0)
    model.fit(X, y, epochs=2, batch_size=32, loss="softmax_cross_entropy", optimizer=fastbp.Adam(1e-3), seed=1,
              verbose=0, validation_data=(X[:50], y[:50]))
    model.predict(X)
    print(json.dumps({"compiled": compiled, "theta": hashlib.sha256(model.theta.tobytes()).hexdigest()}))
""")


def _env(cache, **extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NUMBA_CACHE_DIR", "FASTBP_NO_CACHE", "NUMBA_CPU_NAME", "NUMBA_CPU_FEATURES")}
    return dict(env, FASTBP_CACHE_DIR=str(cache), **extra)


def _fit(cache, cwd, *argv, **extra):
    done = subprocess.run([sys.executable, "-c", _FIT, *argv], env=_env(cache, **extra), cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compile(cache, cwd, *options, **extra):
    # The network of _FIT has no Activation or norm layer: one activation's kernels stand for the option.
    done = subprocess.run([sys.executable, "-m", "fastbp", "compile", "--losses", "softmax_cross_entropy",
                           "--optimizers", "adam", "--norms", "none", "--activations", "relu", *options],
                          env=_env(cache, **extra), cwd=cwd,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    return done


def test_units_cover_every_table_entry_and_loop_once():
    found = _precompile.units()
    assert len(found) == len(set(found))
    loops = [u for u in found if u[0] == "loop"]
    assert len(loops) == len(_precompile.DTYPES)  # one loop per dtype serves every network
    kernels = {u[1:3] for u in found if u[0] == "kernel"}
    from fastbp.backends import _kernel_tables
    assert kernels == {(t, f) for t in _kernel_tables.TABLES for f in _kernel_tables.fields(t)}
    # The activation layers' kernels once per code.
    from fastbp.kernels import registry as R
    assert sorted(u[6] for u in found if u[1:4] == ("activation_ops", "forward", "float32")) == \
        sorted(R.ACTIVATIONS.values())
    # Each loss's three kernels and each optimizer's update, per dtype.
    per_dtype = [u for u in found if u[0] == "kernel" and u[3] == "float32"]
    assert sum(u[2] == "update" for u in per_dtype) == len(_precompile.OPTIMIZERS)
    assert sum(u[2] == "stats" for u in per_dtype) == len(_precompile.LOSSES)


def test_units_are_named_by_their_loss_or_optimizer():
    from fastbp.kernels import registry as R

    assert _precompile.describe(("kernel", "kernels", "update", "float32", None, R.OPT_ADAM, None)) == \
        "kernels.update (adam) (float32)"
    # The loss and optimizer codes overlap (0 is softmax cross-entropy and SGD): each by its own table.
    assert _precompile.describe(("kernel", "kernels", "loss_forward", "float64", R.LOSS_SCE, None, None)) == \
        "kernels.loss_forward (softmax_cross_entropy) (float64)"
    assert _precompile.describe(("kernel", "kernels", "update", "float32", None, R.OPT_SGD, None)) == \
        "kernels.update (sgd) (float32)"
    assert _precompile.describe(("kernel", "dropout_ops", "forward", "float32", None, None, None)) == \
        "dropout.forward (float32)"
    assert _precompile.describe(("kernel", "activation_ops", "backward", "float32", None, None, R.GELU)) == \
        "activation.backward (gelu) (float32)"
    assert _precompile.describe(("loop", "float32")) == "training loop (float32)"


def test_dealing_puts_the_longest_first_and_balances():
    shares = _precompile.deal(_precompile.units(dtypes=("float32",)), 2)
    loads = [sum(map(_precompile._cost, share)) for share in shares]
    assert len(shares) == 2 and max(loads) - min(loads) <= max(map(_precompile._cost, _precompile.units()))


@pytest.mark.slow
def test_a_compiled_cache_is_loaded_by_a_fit_that_then_compiles_nothing(tmp_path):
    cold = _fit(tmp_path / "cold", tmp_path)
    assert "train_batches" in cold["compiled"]
    out = _compile(tmp_path / "ahead", tmp_path).stdout
    assert "compile units" in out and "done in" in out
    ahead = _fit(tmp_path / "ahead", tmp_path)
    assert ahead["compiled"] == []
    warm = _fit(tmp_path / "cold", tmp_path)
    assert warm["compiled"] == []
    # The same parameters, bit for bit, from a cold cache, a warm one and one built ahead.
    assert cold["theta"] == ahead["theta"] == warm["theta"]


@pytest.mark.slow
def test_a_cache_compiled_for_a_named_cpu_is_loaded_on_a_host_of_another_name(tmp_path):
    cache = tmp_path / "portable"
    out = _compile(cache, tmp_path, "--cpu", "x86-64-v3").stdout
    assert "NUMBA_CPU_NAME=x86-64-v3" in out
    target = {"NUMBA_CPU_NAME": "x86-64-v3", "NUMBA_CPU_FEATURES": ""}
    # A process whose host CPU has another name loads it, compiling nothing.
    other_host = _fit(cache, tmp_path, "haswell", **target)
    assert other_host["compiled"] == []
    # Without the variables, a process compiles for its own CPU: the entries are keyed on the CPU.
    own = _fit(cache, tmp_path)
    assert "train_batches" in own["compiled"]


def test_compile_refuses_unknown_names_and_names_the_argument(tmp_path):
    done = subprocess.run([sys.executable, "-m", "fastbp", "compile", "--optimizers", "sgd,lbfgs"], cwd=tmp_path,
                          env=_env(tmp_path / "c"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "--optimizers" in done.stderr and "lbfgs" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run([sys.executable, "-m", "fastbp", "compile", "--activations", "relu,swish"], cwd=tmp_path,
                          env=_env(tmp_path / "c"), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert "--activations" in done.stderr and "swish" in done.stderr and "Traceback" not in done.stderr


def test_chosen_activations_are_the_codes_the_activation_and_norm_kernels_compile_for():
    from fastbp.kernels import registry

    found = _precompile.units(("float32",), activations=("identity", "gelu"))
    codes = {(u[1], u[2]): set() for u in found if u[0] == "kernel" and u[6] is not None}
    for unit in found:
        if unit[0] == "kernel" and unit[6] is not None:
            codes[unit[1], unit[2]].add(unit[6])
    assert codes[("activation_ops", "forward")] == {registry.IDENTITY, registry.GELU}
    assert codes[("batchnorm_ops", "backward")] == {registry.IDENTITY, registry.GELU}
    assert codes[("layernorm_ops", "forward")] == {registry.IDENTITY, registry.GELU}
    # A Dense layer of any activation: its per-code kernels are built whatever the choice.
    others = set(registry.OUTPUT_DERIVABLE) - {registry.IDENTITY, registry.RELU}
    assert codes[("kernels", "dense_act_apply")] == codes[("kernels", "dense_act_grad")] == others

