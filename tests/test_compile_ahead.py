"""A cold start compiles the dense kernels in worker processes while fit compiles the loop (``_warm``)."""
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time

import numpy as np
import pytest
from compile_events import RECORD

import fastbp
from fastbp.backends import _kernel_tables, _warm
from fastbp.kernels import _cache

# The same model, data and seed in a cold subprocess and in this process.
_FIT = """
import numpy as np
import fastbp


def fit():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((96, 6)).astype(np.float32)
    y = rng.integers(0, 3, 96)
    model = fastbp.Sequential([fastbp.Dense(6, 16, activation="relu"), fastbp.Dropout(0.25),
                               fastbp.Dense(16, 3)], seed=1)
    model.fit(X, y, epochs=2, batch_size=32, loss="softmax_cross_entropy",
              optimizer=fastbp.SGD(0.1, momentum=0.9), seed=2, verbose=0)
    return model.theta
"""

_COLD = _FIT + RECORD + """
import json
from fastbp.backends import _warm

import sys

started, set_up = [], []
start = _warm.start


def start_recording(main, arg_lists):
    # numba imports its array implementations when it first sets up its target context, at the
    # first compile or cache load of a process.
    set_up.append("numba.np.arraymath" in sys.modules)
    return started.extend(start(main, arg_lists)) or started


_warm.start = start_recording
theta = fit()
np.save("theta.npy", theta)
print(json.dumps({"compiled": compiled, "workers": [p.returncode for p in started], "set_up": set_up}))
"""


def _fit_here():
    scope = {}
    exec(_FIT, scope)
    return scope["fit"]()


def test_a_cold_fit_compiles_the_dense_kernels_in_a_worker_with_the_same_result(tmp_path):
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path / "cache"))
    env.pop("FASTBP_NO_CACHE", None)
    done = subprocess.run([sys.executable, "-c", _COLD], env=env, capture_output=True, text=True, cwd=tmp_path,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    if _warm.usable_cpus() < 2:
        assert report["workers"] == []
        pytest.skip("one CPU: no worker starts (checked); nothing more to see")
    # One worker ran and succeeded; this process compiled the loop once (against placeholder tables,
    # not again for the real ones), and each dense kernel at most once: those the worker had not
    # begun when the loop was done (``_warm.Claims``); it loaded the others from the cache.
    assert report["workers"] == [0]
    # The worker started before this process set up numba (0.4-0.5 s it would otherwise wait).
    assert report["set_up"] == [False]
    assert report["compiled"].count("train_batches") == 1
    assert {"train_batches", "forward", "backward", "sgd_code_update"} <= set(report["compiled"])
    # The dense kernels and the loss's forward (shared with the worker: ``_RIDERS``) at most once here.
    assert all(report["compiled"].count(name) <= 1
               for name in ("dense_table_forward", "dense_table_backward", "sce_code_forward"))
    # The kernels are the same wherever they were compiled: the same parameters to the bit.
    np.testing.assert_array_equal(np.load(tmp_path / "theta.npy"), _fit_here())


def test_each_claimed_unit_goes_to_one_process_and_the_folder_goes_at_the_end():
    ours = _warm.Claims()
    theirs = _warm.Claims(ours.folder)  # a worker's view of the same folder
    assert ours.claim("kernels:dense_forward:None:None:None")
    assert not theirs.claim("kernels:dense_forward:None:None:None")
    assert theirs.claim("kernels:dense_backward:None:None:None") and not ours.claim("kernels:dense_backward:None:None:None")
    assert oct(os.stat(ours.folder).st_mode & 0o777) == "0o700"
    ours.close()
    assert not os.path.exists(ours.folder)
    # Without its folder a claim succeeds: the work is done twice, never left undone.
    assert theirs.claim("kernels:update:None:0:None")


@pytest.mark.skipif(os.name != "posix", reason="the sweep tells a dead process by signal 0")
def test_a_killed_fits_claims_folder_is_swept_later_and_nothing_else_is(tmp_path, monkeypatch):
    # A fit killed during a cold compile cannot remove its claims folder; a later cold fit of this
    # user removes the folders whose process is gone and that nothing touched for STALE_SECONDS,
    # and leaves every other thing alone, whatever another user named it.
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    dead = int(gone.stdout)
    old = time.time() - _warm.STALE_SECONDS - 60

    def folder(name, age=old):
        path = tmp_path / name
        path.mkdir()
        (path / "kernels:dense_forward:None:None:None").write_text("")
        os.utime(path, (age, age))
        return path

    stale = folder(f"{_warm.CLAIMS_PREFIX}{dead}-abc123")
    recent = folder(f"{_warm.CLAIMS_PREFIX}{dead}-new000", age=time.time())  # another PID namespace's, perhaps
    alive = folder(f"{_warm.CLAIMS_PREFIX}{os.getppid()}-def456")  # a running process's
    others = [folder(f"{_warm.CLAIMS_PREFIX}{name}") for name in
              ("q1w2e3r4", "\u00b2-x", "99999999999999999999999-x", "-x", "12a-x")]  # no process id
    holding = tmp_path / f"{_warm.CLAIMS_PREFIX}{dead}-ghi789"  # holds a folder: not a claims folder
    (holding / "inner").mkdir(parents=True)
    os.utime(holding, (old, old))
    target = tmp_path / "elsewhere"
    target.mkdir()
    (target / "keep").write_text("data")
    link = tmp_path / f"{_warm.CLAIMS_PREFIX}{dead}-link00"
    link.symlink_to(target, target_is_directory=True)

    claims = _warm.Claims()
    folder_made = claims.folder
    assert os.path.basename(folder_made).startswith(f"{_warm.CLAIMS_PREFIX}{os.getpid()}-")
    assert not stale.exists()
    assert recent.is_dir() and alive.is_dir() and all(path.is_dir() for path in others)
    assert (holding / "inner").is_dir()
    assert link.is_symlink() and (target / "keep").read_text() == "data"
    claims.close()
    assert not os.path.exists(folder_made)


def test_a_failed_worker_leaves_its_kernels_to_this_process(monkeypatch):
    want = _fit_here()
    started = []
    start = _warm.start
    monkeypatch.setattr(_warm, "_PROGRAM", "import sys; sys.exit(3)")
    monkeypatch.setattr(_warm, "cached", lambda dispatcher, sig: False)  # as if the cache were cold
    monkeypatch.setattr(_warm, "usable_cpus", lambda: 2)
    monkeypatch.setattr(_warm, "start", lambda main, arg_lists: started.extend(start(main, arg_lists)) or started)
    monkeypatch.setattr(_kernel_tables, "_TABLES_BY_DTYPE", {})
    np.testing.assert_array_equal(_fit_here(), want)
    assert [p.returncode for p in started] == [3]


# A statement whose process, torn down the usual way, creates ``marker`` (a global's finalizer); its
# atexit handler creates ``handled``.
_TEARDOWN_MARKER = """
import atexit


class _Teardown:
    def __del__(self, open=open):  # the builtin bound early: teardown may have cleared the name
        open({marker!r}, "w").close()


kept = _Teardown()
atexit.register(lambda: open({handled!r}, "w").close())
print("done", flush=True)
"""


def test_a_worker_ends_without_the_interpreters_teardown(tmp_path):
    """Its kernels are in the cache when its work returns: the teardown (0.3-0.4 s after a compile)
    would only keep a waiting fit waiting. Its atexit handlers still run."""
    statement = _TEARDOWN_MARKER.format(marker=str(tmp_path / "torn down"), handled=str(tmp_path / "handled"))
    plain = subprocess.run([sys.executable, "-c", statement], capture_output=True, text=True)
    assert (plain.returncode, plain.stdout) == (0, "done\n")
    assert sorted(os.listdir(tmp_path)) == ["handled", "torn down"]
    for name in os.listdir(tmp_path):
        os.remove(tmp_path / name)
    worker = subprocess.run(_warm.worker_command(statement), capture_output=True, text=True)
    assert (worker.returncode, worker.stdout, worker.stderr) == (0, "done\n", "")
    assert os.listdir(tmp_path) == ["handled"]
    failing = subprocess.run(_warm.worker_command("raise ValueError('no kernel')"), capture_output=True, text=True)
    assert failing.returncode == 1 and "ValueError: no kernel" in failing.stderr


def test_a_worker_compiles_without_the_cyclic_garbage_collector():
    # The collections numba's objects set off were 5.5% of a cold start's CPU samples.
    worker = subprocess.run(_warm.worker_command("import gc; print(gc.isenabled())"), capture_output=True,
                            text=True)
    assert (worker.returncode, worker.stdout) == (0, "False\n")


@pytest.mark.parametrize("enabled", [True, False])
def test_the_fits_compile_pauses_the_garbage_collector_and_restores_it(enabled):
    import gc

    from fastbp import _first_run

    class Trainer:  # the backend's part that compile_loop calls; nothing compiles
        seen = []

        def begin_epoch(self, order, hyper):
            pass

        def run(self, first, last):
            self.seen.append(gc.isenabled())

    was = gc.isenabled()
    try:
        (gc.enable if enabled else gc.disable)()
        assert _first_run.compile_loop(Trainer(), np.arange(4), np.zeros(8), 0) is None
        assert Trainer.seen == [False] and gc.isenabled() == enabled
    finally:
        (gc.enable if was else gc.disable)()


def test_the_heaviest_unit_goes_to_the_process_ready_first(monkeypatch):
    """A first LayerNorm fit on a warm cache: this process, whose numba set-up (0.4 s) is done before a
    worker has started (0.7-1.0 s), claims the backward (the heavier unit) first, as a worker would.
    The other way round, this process compiled the forward and then waited for the worker's
    backward."""
    def layernorm(kernel):
        return getattr(kernel, "py_func", kernel).__name__.startswith("layernorm")

    lists, here = [], []
    monkeypatch.setattr(_warm, "usable_cpus", lambda: 2)
    monkeypatch.setattr(_warm, "surely_uncached", layernorm)
    monkeypatch.setattr(_warm, "cached", lambda kernel, sig: not layernorm(kernel))
    monkeypatch.setattr(_warm, "start", lambda main, arg_lists: lists.extend(arg_lists) or ["a worker"])
    monkeypatch.setattr(_warm, "wait", lambda procs: None)
    monkeypatch.setattr(_kernel_tables, "compile_entry", lambda name, field, *rest: None)
    monkeypatch.setattr(_kernel_tables, "_compile_named", lambda entry, dtype: here.append(entry.split(":")[:2]))
    model = fastbp.Sequential([fastbp.Dense(4, 8), fastbp.LayerNorm(8), fastbp.ReLU(), fastbp.Dense(8, 2)], seed=0)
    model.compile("softmax_cross_entropy", fastbp.SGD(0.1))
    _kernel_tables._compile_ahead(model.lowered().net, model.dtype, model.loss.kind, model.optimizer.kind,
                                  lambda net: None)
    assert [entry.split(":")[:2] for entry in lists[0][2:]] == [["layernorm_ops", "backward"],
                                                                 ["layernorm_ops", "forward"]]
    assert here == [["layernorm_ops", "backward"], ["layernorm_ops", "forward"]]


@pytest.mark.parametrize("cold", [True, False])
def test_the_losss_forward_is_shared_only_where_a_worker_starts_anyway(monkeypatch, cold):
    """Cold (the dense kernels uncached): the loss's forward is shareable with the worker, and this
    process leaves it to the claims. A new loss on a warm cache: no worker starts for it alone."""
    def uncached(kernel):
        name = getattr(kernel, "py_func", kernel).__name__
        return name.startswith("mse_code") or (cold and name.startswith("dense_table"))

    lists, here, compiled = [], [], []
    monkeypatch.setattr(_warm, "usable_cpus", lambda: 2)
    monkeypatch.setattr(_warm, "surely_uncached", uncached)
    monkeypatch.setattr(_warm, "cached", lambda kernel, sig: not uncached(kernel))
    monkeypatch.setattr(_warm, "start", lambda main, arg_lists: lists.extend(arg_lists) or ["a worker"])
    monkeypatch.setattr(_warm, "wait", lambda procs: None)
    monkeypatch.setattr(_kernel_tables, "compile_entry", lambda name, field, *rest: compiled.append(field))
    monkeypatch.setattr(_kernel_tables, "_compile_named", lambda entry, dtype: here.append(entry.split(":")[1]))
    model = fastbp.Sequential([fastbp.Dense(4, 8, activation="relu"), fastbp.Dense(8, 2)], seed=0)
    model.compile("mse", fastbp.SGD(0.1))
    _kernel_tables._compile_ahead(model.lowered().net, model.dtype, model.loss.kind, model.optimizer.kind,
                                  lambda net: None)
    if cold:
        assert [entry.split(":")[1] for entry in lists[0][2:]] == ["dense_forward", "dense_backward",
                                                                   "loss_forward"]
        assert "loss_forward" not in compiled and "loss_backward" in compiled
        assert here == ["dense_forward", "dense_backward", "loss_forward"]  # the stand-in worker claims nothing
    else:
        assert lists == [] and here == [] and compiled == []


@pytest.mark.parametrize("why", ["cache off", "one cpu", "kernels cached"])
def test_no_worker_starts_where_it_cannot_help(monkeypatch, why):
    popen = []
    monkeypatch.setattr(_warm.subprocess, "Popen", lambda *a, **k: popen.append(a))
    monkeypatch.setattr(_warm, "usable_cpus", lambda: 1 if why == "one cpu" else 4)
    if why == "cache off":
        monkeypatch.setattr(_cache, "FOLDER", None)
        monkeypatch.setattr(_warm, "cached", lambda dispatcher, sig: False)
    elif why == "one cpu":
        monkeypatch.setattr(_warm, "cached", lambda dispatcher, sig: False)
    model = fastbp.Sequential([fastbp.Dense(4, 8, activation="relu"), fastbp.Dense(8, 2)], seed=0)
    model.compile("softmax_cross_entropy", fastbp.SGD(0.1))
    if why == "kernels cached":
        _kernel_tables.kernel_table("kernels", model.dtype, model.loss.kind, model.optimizer.kind)
    calls = []
    net = _kernel_tables.with_kernels(model.lowered().net, model.dtype, model.loss.kind, model.optimizer.kind,
                                      ahead=calls.append)
    assert popen == [] and calls == []  # neither a worker nor the early compile of the loop
    assert all(address != 0 for address in net.kernels)


# A fit whose network has the layers named in argv, on a cache another network filled.
_KINDS = RECORD + textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastbp
    X = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    y = np.arange(64) % 3
    middle = {"plain": [], "gelu": [fastbp.GELU()], "dropout": [fastbp.Dropout(0.3)],
              "batchnorm": [fastbp.BatchNorm(16), fastbp.ELU()]}[sys.argv[1]]
    model = fastbp.Sequential([fastbp.Dense(6, 16, activation="relu"), *middle, fastbp.Dense(16, 3)], seed=0)
    model.fit(X, y, epochs=1, batch_size=16, loss="softmax_cross_entropy", verbose=0)
    print(json.dumps(compiled))
""")


@pytest.mark.slow
def test_a_new_activation_dropout_or_norm_layer_compiles_its_kernels_once_not_the_loop_again(tmp_path):
    def fit(kind):
        env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTBP_NO_CACHE")}
        done = subprocess.run([sys.executable, "-c", _KINDS, kind], env=dict(env, FASTBP_CACHE_DIR=str(tmp_path / "c")),
                              cwd=tmp_path, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout.strip().splitlines()[-1])

    assert "train_batches" in fit("plain")
    gelu = fit("gelu")
    # GELU's kernels alone, not one of every activation.
    assert {"activation_forward_gelu", "activation_backward_gelu"} <= set(gelu) and "train_batches" not in gelu
    assert not [name for name in gelu if name.startswith("activation_") and not name.endswith("_gelu")], gelu
    dropout = fit("dropout")
    assert "dropout_forward_from" in dropout and "train_batches" not in dropout
    # BatchNorm's ops for ELU (here or in a compile worker), not the loop again; and then, in the
    # next process, nothing: every kernel loads from the cache.
    batchnorm = fit("batchnorm")
    assert "train_batches" not in batchnorm and not [name for name in batchnorm if "_op_" in name
                                                     and not name.endswith("_elu")], batchnorm
    assert fit("batchnorm") == []


# A cold fit with validation, recording what numba compiles in each phase.
_PHASES = RECORD + textwrap.dedent("""
    import json
    import numpy as np
    import fastbp
    phase[0] = "before the epochs"

    class Phase(fastbp.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            phase[0] = f"epoch {epoch}"

    X = np.random.default_rng(0).standard_normal((256, 8)).astype(np.float32)
    y = np.arange(256) % 3
    model = fastbp.Sequential([fastbp.Dense(8, 16, activation="relu"), fastbp.Dropout(0.2), fastbp.Dense(16, 3)],
                              seed=0)
    model.fit(X, y, epochs=2, batch_size=16, loss="softmax_cross_entropy", verbose=0,
              validation_data=(X[:50], y[:50]), callbacks=[Phase()])
    print(json.dumps(compiled_in))
""")


@pytest.mark.slow
def test_a_cold_fit_compiles_everything_before_its_first_epoch(tmp_path):
    # The compile is out of the first epoch's time and samples/s (fastbp/_first_run.py), the
    # validation's evaluate_batches included: it compiles while the workers compile kernels.
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTBP_NO_CACHE")}
    done = subprocess.run([sys.executable, "-c", _PHASES], env=dict(env, FASTBP_CACHE_DIR=str(tmp_path / "c")),
                          cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    events = json.loads(done.stdout.strip().splitlines()[-1])
    assert any(name == "train_batches" for _, name in events)
    assert [e for e in events if e[0] != "before the epochs"] == []
