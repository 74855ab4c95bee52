"""Data-parallel training over MPI (``fit(comm=...)``, ``fastbp train --distributed``).

The multi-rank tests start ``mpiexec -n N python tests/mpi_worker.py SCENARIO`` in a
subprocess, each with a timeout, so that a rank left waiting in a collective fails the
test instead of hanging the suite. The worker does the checks itself (against one process
on rank 0) and prints "OK <scenario>" when they pass. Skipped without mpi4py and mpiexec
(``pip install 'fastbp[mpi]'``).
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import fastbp

MPI = pytest.importorskip("mpi4py.MPI", reason="data-parallel training needs mpi4py: pip install 'fastbp[mpi]'")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
needs_mpiexec = pytest.mark.skipif(MPIEXEC is None, reason="no mpiexec (pip install mpich, or the site's MPI)")
ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).resolve().parent / "mpi_worker.py"
# Generous for a loaded 2-core machine; a rank blocked for good fails the test here.
TIMEOUT = 180


@pytest.fixture(scope="module", autouse=True)
def compiled_loop():
    """Compile (or load) the distributed step here, once, so that N ranks do not compile it at once.

    numba's cache on disk then serves every rank: float64, and a read-only X (a memory map).
    """
    X = np.zeros((6, 5))
    for features in (X, np.lib.stride_tricks.as_strided(X, writeable=False)):
        model = fastbp.Sequential([fastbp.Dense(5, 2)], dtype="float64", seed=0).compile("mse")
        model.fit(features, np.zeros((6, 2)), batch_size=4, verbose=0, comm=MPI.COMM_SELF)


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [env.get("PYTHONPATH")] if p])
    for var in ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS"):
        env[var] = "1"  # one thread per rank: the ranks share this machine's cores
    return env


def _mpiexec(n, args, cwd):
    return subprocess.run([MPIEXEC, "-n", str(n)] + args, cwd=cwd, env=_env(), capture_output=True,
                          text=True, timeout=TIMEOUT)


def _worker(n, scenario, tmp_path):
    return _mpiexec(n, [sys.executable, str(WORKER), scenario, str(tmp_path)], tmp_path)


@needs_mpiexec
@pytest.mark.parametrize("n", [2, 3])
def test_equal_to_one_process_and_identical_ranks(n, tmp_path):
    # Float64: parameters and every History value equal one process's to 1e-9 (SGD with
    # momentum, Adam with sample weights, class weights with a schedule and validation, a
    # memory-mapped X); after every step the parameters are bit-identical on all ranks.
    # 103 rows leave an uneven last batch; 3 ranks do not divide the batches evenly.
    result = _worker(n, "equal", tmp_path)
    assert result.returncode == 0 and "OK equal" in result.stdout, result.stderr[-3000:]


@needs_mpiexec
def test_divergence_on_one_rank_stops_every_rank(tmp_path):
    result = _worker(2, "diverge", tmp_path)
    assert result.returncode == 0 and "OK diverge" in result.stdout, result.stderr[-3000:]


@needs_mpiexec
@pytest.mark.parametrize("how", ["raise", "kill"])
def test_a_failing_rank_ends_the_job(how, tmp_path):
    # The last rank raises (or is killed) after epoch 2 while the other waits in epoch 3's
    # allreduce: the job must end, not hang (subprocess's timeout fails the test otherwise).
    result = _worker(2, how, tmp_path)
    assert result.returncode != 0
    assert "OK" not in result.stdout
    if how == "raise":
        assert "aborting every rank" in result.stderr and "a failure on the last rank" in result.stderr


@needs_mpiexec
def test_estimator_over_mpi(tmp_path):
    pytest.importorskip("sklearn", reason="fastbp.MLPClassifier needs scikit-learn")
    result = _worker(3, "estimator", tmp_path)
    assert result.returncode == 0 and "OK estimator" in result.stdout, result.stderr[-3000:]


@needs_mpiexec
def test_bad_data_on_one_rank_ends_the_job(tmp_path):
    # Each rank checks its own block of X for NaN (a memory map is not read through):
    # the rank that finds it aborts the others, which are already waiting for it.
    result = _worker(2, "nan", tmp_path)
    assert result.returncode != 0 and "OK" not in result.stdout
    assert "X contains NaN or inf (first at row 102, column 2)" in result.stderr


@needs_mpiexec
def test_ranks_given_different_data_all_raise_naming_the_ranks_and_sizes(tmp_path):
    result = _worker(2, "mismatch", tmp_path)
    assert result.returncode == 0 and "OK mismatch" in result.stdout, result.stderr[-3000:]


@needs_mpiexec
def test_a_rank_that_raises_before_fit_ends_the_job_under_abort_on_error(tmp_path):
    # Rank 0 goes on into fit's collectives; without the abort it would wait there until
    # the subprocess's timeout fails this test.
    result = _worker(2, "early", tmp_path)
    assert result.returncode != 0 and "OK" not in result.stdout
    assert "rank 1 of 2 failed; aborting every rank" in result.stderr
    assert "RuntimeError: rank 1 could not read its data" in result.stderr


def test_abort_on_error_on_one_rank_raises_as_it_is_and_checks_its_argument():
    with pytest.raises(KeyError, match="plain"):
        with fastbp.abort_on_error(MPI.COMM_SELF):
            raise KeyError("plain")
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator"):
        with fastbp.abort_on_error("world"):
            pass


@needs_mpiexec
def test_cli_distributed_equals_one_process(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((90, 6))
    np.savez(tmp_path / "d.npz", X=X, y=(X[:, 0] + X[:, 1] > 0).astype(np.int64))
    options = ["train", "--data", "d.npz", "--hidden", "5", "--dropout", "0", "--epochs", "2",
               "--batch-size", "8", "--dtype", "float64", "--test-size", "0.3"]
    cli = [sys.executable, "-m", "fastbp"]
    many = _mpiexec(2, cli + options + ["--distributed", "-o", "many.npz"], tmp_path)
    assert many.returncode == 0, many.stderr[-3000:]
    # Rank 0 alone prints and saves.
    assert many.stdout.count("training 6-5-2") == 1 and many.stdout.count("saved model") == 1
    assert "2 ranks" in many.stdout
    one = subprocess.run(cli + options + ["-o", "one.npz"], cwd=tmp_path, env=_env(), capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert one.returncode == 0, one.stderr[-3000:]
    a, b = fastbp.load(tmp_path / "many.npz").theta, fastbp.load(tmp_path / "one.npz").theta
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12 * np.abs(b).max())


def test_a_communicator_of_one_is_one_process():
    # The distributed path on COMM_SELF: shares are whole batches, the scale is 1, the
    # allreduce a copy: bit for bit the single-process run.
    rng = np.random.default_rng(1)
    X, y, w = rng.standard_normal((37, 4)), rng.integers(0, 2, 37), rng.uniform(0.5, 1.5, 37)

    def fit(**kwargs):
        model = fastbp.Sequential([fastbp.Dense(4, 6, activation="relu"), fastbp.Dense(6, 2)],
                                  dtype="float64", seed=0)
        model.compile("softmax_cross_entropy", fastbp.Adam(lr=0.01))
        history = model.fit(X, y, epochs=2, batch_size=5, sample_weight=w, seed=1, verbose=0,
                            validation_split=0.2, **kwargs)
        return model.theta, history.history

    theta, history = fit(comm=MPI.COMM_SELF)
    expected_theta, expected = fit()
    np.testing.assert_array_equal(theta, expected_theta)
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_array_equal(history[key], expected[key])


def test_comm_must_be_a_communicator():
    model = fastbp.Sequential([fastbp.Dense(2, 2)], seed=0).compile("mse")
    with pytest.raises(TypeError, match="comm must be an mpi4py intracommunicator.*got int"):
        model.fit(np.zeros((4, 2)), np.zeros((4, 2)), comm=1)


def test_batchnorm_is_refused_and_layernorm_trains_over_a_communicator():
    X = np.random.default_rng(0).standard_normal((8, 5))
    y = np.arange(8) % 3
    model = fastbp.Sequential([fastbp.Dense(5, 4), fastbp.BatchNorm(4), fastbp.ReLU(), fastbp.Dense(4, 3)],
                              dtype="float64", seed=0)
    with pytest.raises(ValueError, match=r"does not train BatchNorm layers \(layers \[1\]\)"):
        model.fit(X, y, loss="softmax_cross_entropy", batch_size=4, verbose=0, comm=MPI.COMM_SELF)
    # LayerNorm normalizes each row alone: over a communicator of one it is one process's fit.
    runs = []
    for comm in (None, MPI.COMM_SELF):
        model = fastbp.Sequential([fastbp.Dense(5, 4), fastbp.LayerNorm(4), fastbp.ReLU(), fastbp.Dense(4, 3)],
                                  dtype="float64", seed=0)
        model.fit(X, y, loss="softmax_cross_entropy", batch_size=4, epochs=2, seed=1, verbose=0, comm=comm)
        runs.append(model.theta.copy())
    np.testing.assert_array_equal(runs[0], runs[1])
