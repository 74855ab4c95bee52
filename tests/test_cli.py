"""The command line, run as users run it: ``python -m fastbp ...`` in a fresh process."""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

import fastbp
from fastbp import datasets as ds
from fastbp.cli import main as cli_main


def cli(*args, cwd, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "fastbp", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=dict(os.environ) if env is None else env)


# The installed console script, beside this Python.
FASTBP = os.path.join(os.path.dirname(sys.executable), "fastbp")


def ok(proc):
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    return proc.stdout


def failed(proc, *fragments):
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr, proc.stderr
    for fragment in fragments:
        assert fragment in proc.stderr, proc.stderr
    return proc.stderr


def metric(out, name):
    match = re.search(rf"{name}: (\d+\.\d+)", out)
    assert match, out
    return float(match.group(1))


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("cli")


@pytest.fixture(scope="module")
def blobs_npz(workdir):
    X, y = ds.make_blobs(150, 5, centers=3, cluster_std=1.5, seed=0)
    path = workdir / "blobs.npz"
    np.savez(path, X=X, y=y)
    return path, X, y


@pytest.fixture(scope="module")
def trained(workdir, blobs_npz):
    path, _, _ = blobs_npz
    out = ok(cli("train", "--data", path.name, "--hidden", "16", "--epochs", "3", "-o", "model.npz", cwd=workdir))
    return out, workdir / "model.npz"


@pytest.mark.slow
def test_train_with_the_defaults_reaches_97_percent_on_digits(tmp_path):
    out = ok(cli("train", cwd=tmp_path))
    lines = out.splitlines()
    assert re.match(r"fastbp \S+: training 64-256-10 \(relu, softmax_cross_entropy, sgd\) on bundled UCI digits: "
                    r"1437 train / 360 test samples", lines[0]), lines[0]
    assert sum(line.startswith("epoch ") for line in lines) == 30
    assert metric(out, "test accuracy") >= 0.97
    assert metric(out, "train accuracy") >= 0.98
    match = re.search(r"throughput: ([\d,]+) samples/s \(median epoch\), [\d.]+ s for 30 epochs", out)
    assert match and int(match.group(1).replace(",", "")) > 0, out


def test_train_on_npz_and_save(trained):
    out, model_path = trained
    lines = out.splitlines()
    assert ("training 5-16-3 (relu, softmax_cross_entropy, sgd) on blobs.npz: "
            "120 train / 30 test samples") in lines[0]
    assert sum(line.startswith("epoch ") for line in lines) == 3
    assert metric(out, "test accuracy") > 0.8
    assert lines[-1] == "saved model to model.npz"
    model = fastbp.load(model_path)
    assert [type(layer).__name__ for layer in model.layers] == ["Dense", "Dropout", "Dense"]
    assert model.epochs_trained == 3 and model.seed == 0


def test_evaluate(trained, blobs_npz):
    _, model_path = trained
    path, X, y = blobs_npz
    out = ok(cli("evaluate", model_path.name, path.name, cwd=path.parent))
    expected = fastbp.load(model_path).evaluate(X, y)
    assert out.splitlines() == [f"loss: {expected['loss']:.6g}", f"accuracy: {expected['accuracy']:.6g}"]


def test_predict(trained, blobs_npz):
    _, model_path = trained
    path, X, _ = blobs_npz
    out = ok(cli("predict", model_path, path, cwd=path.parent))
    lines = out.splitlines()
    assert len(lines) == len(X)
    np.testing.assert_array_equal(np.array(lines, dtype=int), fastbp.load(model_path).predict(X))


def test_predict_probabilities_to_a_file(trained, blobs_npz, workdir):
    _, model_path = trained
    path, X, _ = blobs_npz
    assert ok(cli("predict", model_path, path, "--proba", "-o", "proba.csv", cwd=workdir)) == ""
    p = np.loadtxt(workdir / "proba.csv", delimiter=",")
    assert p.shape == (len(X), 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(p, fastbp.load(model_path).predict_proba(X), atol=1e-6)


def test_train_on_csv(tmp_path):
    X, y = ds.make_blobs(120, 3, centers=2, seed=1)
    header = "a,b,c,label"
    np.savetxt(tmp_path / "data.csv", np.column_stack([X, y]), delimiter=",", header=header, comments="")
    out = ok(cli("train", "--data", "data.csv", "--hidden", "8", "--epochs", "2", "--quiet", cwd=tmp_path))
    assert "training 3-8-2 " in out and "96 train / 24 test samples" in out
    assert not any(line.startswith("epoch ") for line in out.splitlines())
    assert 0.0 <= metric(out, "test accuracy") <= 1.0


def test_train_a_regressor_on_csv(tmp_path):
    X, y = ds.make_regression(100, 3, seed=2)
    np.savetxt(tmp_path / "reg.csv", np.column_stack([X, y]), delimiter=",")
    out = ok(cli("train", "--data", "reg.csv", "--hidden", "8", "--epochs", "2", "-q", cwd=tmp_path))
    assert "(relu, mse, sgd)" in out
    assert metric(out, "test mse") >= 0.0


def test_train_on_an_mnist_folder(tmp_path):
    rng = np.random.default_rng(0)

    def images(n):
        labels = rng.integers(0, 10, n).astype(np.uint8)
        pixels = rng.integers(0, 40, (n, 28, 28)).astype(np.uint8)
        for i, label in enumerate(labels):  # each digit lights its own band of rows
            pixels[i, 2 * label + 4:2 * label + 7, 6:22] = 230
        return pixels, labels

    folder = tmp_path / "mnist"
    folder.mkdir()
    for prefix, n in (("train", 200), ("t10k", 50)):
        pixels, labels = images(n)
        ds.save_idx(folder / f"{prefix}-images-idx3-ubyte", pixels)
        ds.save_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    out = ok(cli("train", "--data", "mnist", "--hidden", "16", "--epochs", "2", "-q", cwd=tmp_path))
    assert "training 784-16-10 " in out and "200 train / 50 test samples" in out
    assert 0.0 <= metric(out, "test accuracy") <= 1.0


@pytest.mark.parametrize("simulator", [False, True])
def test_info(tmp_path, simulator):
    import numba

    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    if simulator:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
    lines = ok(cli("info", cwd=tmp_path, env=env)).splitlines()
    assert lines[0] == f"fastbp {fastbp.__version__}"
    assert f"numpy {np.__version__}, numba {numba.__version__}" in lines
    assert any(line.startswith("threads: ") for line in lines)
    assert re.match(r"cuda: (usable|not usable) \(.+\)$", lines[-1]), lines[-1]
    if simulator:
        assert "CUDA simulator" in lines[-1]


def test_info_reports_the_kernel_cache(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("FASTBP_NO_CACHE", "NUMBA_CACHE_DIR")}
    env["FASTBP_CACHE_DIR"] = str(tmp_path / "cache")
    stale = tmp_path / "cache" / ("0" * 20)
    stale.mkdir(parents=True)
    (stale / "old.nbc").write_bytes(b"x" * 2**20)
    lines = ok(cli("info", cwd=tmp_path, env=env)).splitlines()
    cache = [line for line in lines if line.startswith("cache: ")]
    assert re.match(rf"cache: {re.escape(str(tmp_path / 'cache'))}/[0-9a-f]{{20}} \(cold: ", cache[0]), cache
    assert "1 folder(s) of other fastbp versions" in cache[1]
    lines = ok(cli("info", "--clear-cache", cwd=tmp_path, env=env)).splitlines()
    assert "cache: cleared 1.0 MiB" in lines and not stale.exists()
    env["FASTBP_NO_CACHE"] = "1"
    lines = ok(cli("info", cwd=tmp_path, env=env)).splitlines()
    assert "cache: off (FASTBP_NO_CACHE is set): kernels compile in every process" in lines


def test_info_reports_blas_threads_and_openmp(capsys):
    # In this process, so that every figure can be checked against the library's own.
    import numba
    from threadpoolctl import threadpool_info

    assert cli_main(["info"]) == 0
    lines = capsys.readouterr().out.splitlines()
    threads = [re.match(r"threads: numba (\d+) \(of (\d+); NUMBA_NUM_THREADS\), BLAS (\d+) ", line)
               for line in lines if line.startswith("threads: ")]
    assert threads and threads[0], lines
    numba_threads, numba_max, blas_threads = map(int, threads[0].groups())
    assert (numba_threads, numba_max) == (fastbp.get_num_threads(), numba.config.NUMBA_NUM_THREADS)
    import scipy

    scipy_libs = os.path.dirname(os.path.realpath(scipy.__file__))
    products = [i for i in threadpool_info() if i["user_api"] == "blas"
                and os.path.realpath(i["filepath"]).startswith(scipy_libs)] or \
               [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas_threads == products[0]["num_threads"], (lines, products)
    from fastbp.kernels import _cache

    if _cache.FOLDER:
        state = "warm: " if _cache.info()["indexes"] else "cold: "
        assert f"cache: {_cache.FOLDER} ({state}" in "\n".join(lines)
    layer = [line for line in lines if line.startswith("numba threading layer: ")]
    assert layer and layer[0].split()[3] == numba.threading_layer(), layer

    blas = {i["filepath"]: i for i in threadpool_info() if i["user_api"] == "blas"}
    reported = [re.match(r"blas: (\w+) (\S+), kernel (\S+), (\d+) threads \((.+?)\), (.+): (/\S+)$", line)
                for line in lines if line.startswith("blas: ")]
    assert reported and all(reported), lines
    assert len(reported) == len(blas)
    # The first line is the BLAS that the compiled products call (SciPy's).
    assert "used by fastbp's products" in reported[0].group(6)
    for match in reported:
        api, version, kernel, n_threads, _, _, path = match.groups()
        info = blas[path]
        assert (api, int(n_threads)) == (info["internal_api"], info["num_threads"])
        assert version == info["version"]
        if api == "openblas":
            assert kernel == info["architecture"] != "not reported"

    openmp = [line for line in lines if line.startswith("openmp runtimes loaded: ")]
    assert len(openmp) == 1
    for info in threadpool_info():
        if info["user_api"] == "openmp":
            assert info["filepath"] in openmp[0]
    if numba.threading_layer() == "omp":
        assert "libgomp" in openmp[0] or "libomp" in openmp[0] or "libiomp" in openmp[0], openmp[0]


@pytest.mark.slow
def test_a_cold_first_run_says_it_compiles_and_leaves_the_compile_out_of_the_first_epoch(tmp_path):
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path / "numba-cache"))
    for name in ("FASTBP_NO_CACHE", "FASTBP_CACHE_DIR"):  # either would keep this run from being cold
        env.pop(name, None)
    note = "compiling for this machine (once, then cached on disk): "
    cold = cli("train", "--epochs", "3", "--hidden", "64", cwd=tmp_path, env=env)
    out = ok(cold)
    assert note in cold.stderr
    first = re.search(r"^epoch 1/3: .* ([\d,]+) samples/s, compiled first in ([\d.]+) s", out, re.M)
    second = re.search(r"^epoch 2/3: .* ([\d,]+) samples/s$", out, re.M)
    assert first and second, out
    compile_seconds = float(first.group(2))
    assert compile_seconds > 1.0  # that nothing compiles during the epochs: test_compile_ahead.py

    warm = cli("train", "--epochs", "2", "--hidden", "64", cwd=tmp_path, env=env)
    out = ok(warm)
    assert note not in warm.stderr
    assert "compiled first" not in out


def test_the_first_run_note_names_what_compiles_and_adds_up_its_wait(monkeypatch):
    from types import SimpleNamespace

    from fastbp import _first_run
    from fastbp.backends import _kernel_tables, _warm

    monkeypatch.setattr(_warm, "usable_cpus", lambda: 2)
    model = fastbp.Sequential([fastbp.Dense(4, 8), fastbp.BatchNorm(8), fastbp.Dense(8, 2)])
    model.compile("mse", fastbp.RMSprop())
    seconds = _kernel_tables.COMPILE_SECONDS
    pending = [(("kernels", "dense_backward"), seconds["kernels"].dense_backward),
               (("kernels", "loss_forward"), seconds["kernels"].loss_forward),
               (("kernels", "update"), seconds["kernels"].update),
               (("batchnorm_ops", "forward"), seconds["batchnorm_ops"].forward),
               ("loop", _kernel_tables.LOOP_SECONDS)]
    note = _first_run.note(SimpleNamespace(model=model, pending=lambda: pending))
    assert note.startswith("compiling for this machine")
    for name in ("dense layers", "the mse loss", "RMSprop updates", "BatchNorm", "the training loop"):
        assert name in note, note
    total = sum(s for _, s in pending)
    two_cores = _first_run.expected_seconds(pending)
    assert two_cores == max(1, round(_first_run._OVERHEAD * total / 2))
    assert f"about {two_cores} s" in note
    # One core: no worker compiles beside fit, the wait is the sum.
    monkeypatch.setattr(_warm, "usable_cpus", lambda: 1)
    assert _first_run.expected_seconds(pending) == round(_first_run._OVERHEAD * total) > two_cores
    # Nothing pending (a warm cache): nothing to wait for; one small unit: never "about 0 s".
    assert _first_run.expected_seconds([]) == 0
    assert _first_run.expected_seconds([(("kernels", "stats"), 0.25)]) == 1
    # A backend that cannot tell what it compiles (CUDA) still gets a note.
    assert "compiling" in _first_run.note(SimpleNamespace(model=model))


def test_an_estimators_first_fit_warns_once_instead_of_printing(tmp_path):
    script = (
        "import json, warnings, fastbp\n"
        "from fastbp import datasets\n"
        "X, y = datasets.load_digits()\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        "    fastbp.MLPClassifier(max_iter=2, hidden_layer_sizes=(16,)).fit(X, y)\n"
        "    fastbp.MLPRegressor(max_iter=2, hidden_layer_sizes=(16,)).fit(X, y.astype(float))\n"
        "print(json.dumps([str(w.message) for w in caught if w.category is fastbp.CompileWarning]))\n")
    env = dict(os.environ, FASTBP_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stderr
    import json

    messages = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(messages) == 1 and "the training loop" in messages[0] and "about" in messages[0]
    assert "compiling" not in done.stderr  # nothing printed


# ----- bad input: a message on stderr, a non-zero status, no traceback -----------------------
# Two cases run as subprocesses, as users meet them; the rest call main() in this process
# (starting Python and importing numba costs seconds each), where a traceback would be an
# exception escaping main().


def test_missing_data_file(tmp_path):
    failed(cli("train", "--data", "nowhere.npz", cwd=tmp_path), "--data 'nowhere.npz' does not exist")


def test_unknown_loss(blobs_npz):
    path, _, _ = blobs_npz
    failed(cli("train", "--data", path.name, "--loss", "hinge", "--epochs", "1", cwd=path.parent),
           "fastbp train: error: unknown loss 'hinge'")


def main(*args, capsys):
    """(exit status, stderr) of the command line run in this process."""
    try:
        status = cli_main(list(map(str, args)))
    except SystemExit as exit:  # argparse errors, and messages raised as SystemExit(text)
        status = exit.code
    err = capsys.readouterr().err
    if isinstance(status, str):  # Python prints such a message to stderr and exits with 1
        err, status = err + status, 1
    return status, err


@pytest.mark.parametrize("args, message", [
    (["--activation", "swish"], "fastbp train: error: unknown activation 'swish'"),
    (["--hidden", "16,0"], "argument --hidden: layer sizes must be positive; got '16,0'"),
    (["--dropout", "1.5"], "argument --dropout: expected a number >= 0 and < 1; got '1.5'"),
    (["--batch-size", "0"], "argument --batch-size: expected a whole number >= 1; got '0'"),
    (["--epochs", "-2"], "argument --epochs: expected a whole number >= 1; got '-2'"),
    (["--lr", "0"], "argument --lr: expected a number > 0; got '0'"),
    (["--optimizer", "lbfgs"], "argument --optimizer: invalid choice: 'lbfgs'"),
    (["--lr", "1e30", "--epochs", "2"], "fastbp train: error: training diverged: non-finite"),
])
def test_bad_training_arguments(blobs_npz, capsys, monkeypatch, args, message):
    path, _, _ = blobs_npz
    monkeypatch.chdir(path.parent)
    status, err = main("train", "--data", path.name, "-q", *args, capsys=capsys)
    assert status != 0 and message in err, err


def test_unsupported_data_file(tmp_path, capsys):
    (tmp_path / "data.json").write_text("{}")
    status, err = main("train", "--data", tmp_path / "data.json", capsys=capsys)
    assert status != 0 and "expected a .npz file with arrays X and y" in err, err


def test_folder_without_mnist_files(tmp_path, capsys):
    status, err = main("train", "--data", tmp_path, capsys=capsys)
    assert status != 0 and "fastbp train: error: no MNIST train images in" in err, err


def test_evaluate_with_a_file_that_is_not_a_model(blobs_npz, capsys):
    path, _, _ = blobs_npz
    status, err = main("evaluate", path, path, capsys=capsys)
    assert status != 0 and f"fastbp evaluate: error: {str(path)!r} is not a fastbp model file" in err, err


def test_evaluate_with_data_that_does_not_fit_the_model(trained, workdir, capsys):
    _, model_path = trained
    np.savez(workdir / "narrow.npz", X=np.zeros((4, 3)), y=np.zeros(4, dtype=int))
    status, err = main("evaluate", model_path, workdir / "narrow.npz", capsys=capsys)
    assert status != 0 and "fastbp evaluate: error: X must have 5 features (columns) for this model" in err, err


def test_predict_with_missing_data(trained, capsys):
    _, model_path = trained
    status, err = main("predict", model_path, "absent.csv", capsys=capsys)
    assert status != 0 and "DATA 'absent.csv' does not exist" in err, err


@pytest.mark.parametrize("optimizer, cls", [("rmsprop", fastbp.RMSprop), ("adagrad", fastbp.Adagrad)])
def test_train_with_rmsprop_and_adagrad(blobs_npz, capsys, monkeypatch, optimizer, cls):
    path, _, _ = blobs_npz
    monkeypatch.chdir(path.parent)
    status, err = main("train", "--data", path.name, "--hidden", "8", "--epochs", "2", "-q", "--optimizer", optimizer,
                       "--lr", "0.02", "--weight-decay", "0.001", "-o", f"{optimizer}.npz", capsys=capsys)
    assert status in (0, None), err
    model = fastbp.load(path.parent / f"{optimizer}.npz")
    assert isinstance(model.optimizer, cls) and model.optimizer.lr == 0.02
    assert model.optimizer.weight_decay == 0.001 and model.optimizer.steps > 0
    if optimizer == "rmsprop":
        assert model.optimizer.momentum == 0.0  # SGD's default momentum 0.9 is not RMSprop's


def test_train_a_regressor_with_the_huber_loss(tmp_path):
    X, y = ds.make_regression(100, 3, seed=2)
    np.savetxt(tmp_path / "reg.csv", np.column_stack([X, y]), delimiter=",")
    out = ok(cli("train", "--data", "reg.csv", "--hidden", "8", "--epochs", "2", "-q", "--loss", "huber",
                 "--optimizer", "adagrad", cwd=tmp_path))
    assert "(relu, huber, adagrad)" in out
    assert metric(out, "test mse") >= 0.0


@pytest.mark.parametrize("norm, layer", [("batch", "BatchNorm"), ("layer", "LayerNorm")])
def test_train_with_a_norm_layer_after_each_hidden_dense(blobs_npz, capsys, monkeypatch, norm, layer):
    path, X, y = blobs_npz
    monkeypatch.chdir(path.parent)
    status = cli_main(["train", "--data", path.name, "--hidden", "16,8", "--epochs", "3", "--norm", norm,
                       "--dropout", "0", "-q", "-o", f"{norm}.npz"])
    out = capsys.readouterr().out
    assert status == 0 and f"training 5-16-8-3 (relu, {norm}norm, softmax_cross_entropy, sgd)" in out, out
    assert metric(out, "test accuracy") > 0.8
    model = fastbp.load(path.parent / f"{norm}.npz")
    assert [type(l).__name__ for l in model.layers] == ["Dense", layer, "Activation"] * 2 + ["Dense"]
    assert model.layers[0].activation == "identity" and model.layers[2].activation == "relu"
    if norm == "batch":
        assert model.batches_tracked == 3 * 4 and not np.allclose(model.buffers[:16], 0.0)


def test_info_shows_numbas_and_blass_thread_counts_apart():
    # NUMBA_NUM_THREADS sets numba's pool only; the BLAS that training runs on keeps its own.
    env = dict(os.environ, NUMBA_NUM_THREADS="1", OPENBLAS_NUM_THREADS="2")
    env.pop("OMP_NUM_THREADS", None)
    run = subprocess.run([sys.executable, "-m", "fastbp", "info"], capture_output=True, text=True, env=env,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    line = [line for line in run.stdout.splitlines() if line.startswith("threads: ")]
    assert line and line[0].startswith("threads: numba 1 (of 1; NUMBA_NUM_THREADS), BLAS 2 "), run.stdout


# A site hook for the command's process (a sitecustomize module): marks in FASTBP_TEST_MARKS for
# the interpreter's teardown (a global's finalizer) and for the atexit handlers; with
# FASTBP_TEST_THREAD, a thread of another library that outlives the command; with FASTBP_TEST_MPI,
# mpi4py's MPI module as imported (a stand-in: the command only looks for it).
_SITE_HOOK = """
import atexit, os, sys, threading, time, types

_marks = os.environ["FASTBP_TEST_MARKS"]


def _mark(name, open=open, join=os.path.join):
    open(join(_marks, name), "w").close()


class _Teardown:
    def __del__(self, mark=_mark):
        mark("teardown")


kept = _Teardown()
atexit.register(_mark, "atexit")


def _outlive_main():
    # Running until the main thread is done, however long the command takes: the usual exit
    # stops the main thread, then waits for this one.
    while threading.main_thread().is_alive():
        time.sleep(0.01)
    _mark("thread")


if os.environ.get("FASTBP_TEST_THREAD"):
    threading.Thread(target=_outlive_main).start()
if os.environ.get("FASTBP_TEST_MPI"):
    sys.modules["mpi4py.MPI"] = types.ModuleType("mpi4py.MPI")
"""


def _hooked(tmp_path, **extra):
    """An environment whose Python processes run ``_SITE_HOOK``, their marks in tmp_path/marks."""
    (tmp_path / "hook").mkdir()
    (tmp_path / "hook" / "sitecustomize.py").write_text(_SITE_HOOK)
    (tmp_path / "marks").mkdir()
    return dict(os.environ, FASTBP_TEST_MARKS=str(tmp_path / "marks"), **extra,
                PYTHONPATH=os.pathsep.join([str(tmp_path / "hook")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


@pytest.mark.parametrize("command", ["python -m fastbp", "fastbp"])
def test_the_command_ends_without_the_interpreters_teardown(tmp_path, command):
    """The teardown (collecting numba's objects, clearing every module) was 0.3 s of a warm
    ``fastbp train``; the atexit handlers still run."""
    argv = [sys.executable, "-m", "fastbp"] if command == "python -m fastbp" else [FASTBP]
    run = subprocess.run([*argv, "info"], capture_output=True, text=True, env=_hooked(tmp_path), cwd=tmp_path,
                         timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("fastbp ") and run.stderr == ""
    assert os.listdir(tmp_path / "marks") == ["atexit"]


@pytest.mark.parametrize("why", ["a thread still running", "MPI", "a profiler"])
def test_the_command_ends_the_usual_way_where_the_teardown_may_matter(tmp_path, why):
    """A thread is waited for; mpi4py finalizes MPI, and a profiler or coverage writes its data, in the
    interpreter's exit."""
    extra = {"a thread still running": {"FASTBP_TEST_THREAD": "1"}, "MPI": {"FASTBP_TEST_MPI": "1"}}.get(why, {})
    profile = ["-m", "cProfile", "-o", str(tmp_path / "info.prof")] if why == "a profiler" else []
    run = subprocess.run([sys.executable, *profile, "-m", "fastbp", "info"], capture_output=True, text=True,
                         env=_hooked(tmp_path, **extra), cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.startswith("fastbp ")
    marks = sorted(os.listdir(tmp_path / "marks"))
    assert marks == (["atexit", "teardown", "thread"] if why == "a thread still running" else ["atexit", "teardown"])
    if why == "a profiler":
        assert (tmp_path / "info.prof").stat().st_size > 0


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full (Linux)")
def test_output_that_cannot_be_written_fails_the_command(tmp_path):
    # Block-buffered output (no PYTHONUNBUFFERED): the command's lines are still in the buffer at its end.
    env = dict(os.environ)
    env.pop("PYTHONUNBUFFERED", None)
    with open("/dev/full", "w") as full:
        run = subprocess.run([sys.executable, "-m", "fastbp", "info"], stdout=full, stderr=subprocess.PIPE,
                             text=True, env=env, cwd=tmp_path, timeout=600)
    assert run.returncode == 120 and "No space left on device" in run.stderr


def test_the_command_run_by_another_programs_runpy_hands_its_exit_back(tmp_path):
    script = ("import runpy, sys\n"
              "sys.argv = ['fastbp', 'info']\n"
              "try:\n"
              "    runpy.run_module('fastbp', run_name='__main__')\n"
              "except SystemExit as end:\n"
              "    print('exit status', end.code)\n"
              "print('the program goes on')\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-2:] == ["exit status 0", "the program goes on"]


# ----- real tabular CSV files, through the installed fastbp command ---------------------------



def fastbp_cmd(*args, cwd):
    return subprocess.run([FASTBP, *map(str, args)], cwd=cwd, capture_output=True, text=True, timeout=600)


def tabular(n=240, seed=0):
    """Three species told apart by features of very different scales and offsets, as raw
    measurements are: (features, string labels)."""
    rng = np.random.default_rng(seed)
    species = np.array(["bird", "cat", "dog"])[rng.integers(0, 3, n)]
    centre = {"bird": 0.0, "cat": 1.0, "dog": 2.0}
    c = np.array([centre[s] for s in species])
    X = np.column_stack([5000 + 400 * c + 100 * rng.standard_normal(n),    # grams
                         0.002 * c + 0.0006 * rng.standard_normal(n),       # a tiny ratio
                         rng.standard_normal(n),                            # noise
                         -300 + 60 * c + 20 * rng.standard_normal(n)])
    return X, species


def write_csv(path, header, columns):
    rows = [",".join(str(v) for v in row) for row in zip(*columns)]
    path.write_text((",".join(header) + "\n" if header else "") + "\n".join(rows) + "\n")


@pytest.fixture(scope="module")
def species_csv(workdir):
    X, y = tabular()
    header = ["species", "weight", "ratio", "noise", "offset"]
    write_csv(workdir / "species.csv", header, [y, *X.T])
    write_csv(workdir / "species_features.csv", None, list(X.T))  # features only, no header
    return X, y


def test_a_headed_csv_with_text_labels_first_trains_standardized(workdir, species_csv):
    X, y = species_csv
    out = ok(fastbp_cmd("train", "--data", "species.csv", "--target", "species", "--hidden", "16",
                        "--epochs", "15", "--dropout", "0", "-o", "species.npz", cwd=workdir))
    assert ("training 4-16-3 (relu, softmax_cross_entropy, sgd) on species.csv: 192 train / 48 test samples"
            in out)
    assert "target column 'species' (1 of 5), features standardized" in out
    assert metric(out, "test accuracy") >= 0.9
    # predict: a file of exactly the model's features is features only; the labels come back as text.
    predicted = ok(fastbp_cmd("predict", "species.npz", "species_features.csv", cwd=workdir)).split()
    assert len(predicted) == len(y) and set(predicted) <= {"bird", "cat", "dog"}
    assert np.mean(np.array(predicted) == y) >= 0.9
    # evaluate finds the target by its name, and maps the text labels as training did.
    assert metric(ok(fastbp_cmd("evaluate", "species.npz", "species.csv", cwd=workdir)), "accuracy") >= 0.9
    model = fastbp.load(workdir / "species.npz")
    assert model.classes.tolist() == ["bird", "cat", "dog"]
    mean, scale = model.input_scaling  # the training part's statistics, saved with the model
    assert abs(mean[0] - X[:, 0].mean()) < 100 and abs(scale[1] / X[:, 1].std() - 1) < 0.2


def test_a_label_column_is_found_by_its_name_without_target(workdir, species_csv):
    X, y = species_csv
    header = ["label", "weight", "ratio", "noise", "offset"]
    write_csv(workdir / "labelled.csv", header, [np.searchsorted(["bird", "cat", "dog"], y), *X.T])
    out = ok(fastbp_cmd("train", "--data", "labelled.csv", "--hidden", "8", "--epochs", "10", cwd=workdir))
    assert "training 4-8-3 (relu, softmax_cross_entropy, sgd)" in out
    assert "target column 'label' (1 of 5)" in out


def test_the_standardization_is_in_the_exported_graph(workdir, species_csv):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    X, _ = species_csv
    ok(fastbp_cmd("train", "--data", "species.csv", "--target", "0", "--hidden", "8", "--epochs", "2",
                  "-o", "graph.npz", cwd=workdir))
    ok(fastbp_cmd("export", "graph.npz", "-o", "graph.onnx", cwd=workdir))
    model = fastbp.load(workdir / "graph.npz")
    raw = X[:20].astype(np.float32)
    logits = ort.InferenceSession(str(workdir / "graph.onnx")).run(["output"], {"X": raw})[0]
    np.testing.assert_allclose(logits, model.decision_function(raw), rtol=1e-4, atol=1e-4)
    mean, scale = model.input_scaling
    assert scale[0] > 100 and abs(mean[0] - X[:, 0].mean()) < 100  # raw grams in, standardized inside


def test_labels_that_are_not_0_to_k_minus_1_are_classes(workdir):
    rng = np.random.default_rng(1)
    labels = np.array([-1, 1000000000, 3000000])[rng.integers(0, 3, 90)]
    X = rng.standard_normal((90, 3)) + 3 * (labels[:, None] == np.array([-1, 1000000000, 3000000])[None, :])
    write_csv(workdir / "odd.csv", None, [*X.T, labels])
    out = ok(fastbp_cmd("train", "--data", "odd.csv", "--hidden", "8", "--epochs", "5", "-o", "odd.npz",
                        cwd=workdir))
    assert "training 3-8-3 (relu, softmax_cross_entropy, sgd)" in out
    predicted = ok(fastbp_cmd("predict", "odd.npz", "odd.csv", cwd=workdir)).split()
    assert set(predicted) <= {"-1", "1000000000", "3000000"} and len(predicted) == 90
    assert np.mean(np.array(predicted).astype(np.int64) == labels) > 0.8


def test_poisson_counts_train_and_save(workdir):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 3))
    write_csv(workdir / "counts.csv", None, [*X.T, rng.poisson(np.exp(0.3 * X[:, 0]))])
    out = ok(fastbp_cmd("train", "--data", "counts.csv", "--loss", "poisson", "--optimizer", "adam",
                        "--lr", "0.01", "--epochs", "2", "-o", "counts.npz", cwd=workdir))
    assert re.search(r"train mae: \d+\.\d+ +test mae: \d+\.\d+", out), out
    assert fastbp.load(workdir / "counts.npz").loss.name == "poisson"


@pytest.mark.parametrize("output, message", [
    (".", "is a folder; give a file name in it"),
    ("absent/model.npz", "the folder"),
    ("model.h5", "has the extension '.h5'"),
])
def test_output_paths_are_checked_before_training(workdir, blobs_npz, output, message):
    path, _, _ = blobs_npz
    proc = fastbp_cmd("train", "--data", path.name, "--epochs", "1", "-o", output, cwd=workdir)
    failed(proc, message)
    assert "epoch" not in proc.stdout and "training" not in proc.stdout


def test_help_shows_the_defaults(workdir):
    text = " ".join(ok(fastbp_cmd("train", "--help", cwd=workdir)).split())
    for fragment in ("the optimizer (default: sgd)", "passes over the training data (default: 30)",
                     "samples per gradient step (default: 32)", "(default: 0.2)", "(default: float32)"):
        assert fragment in text, fragment
