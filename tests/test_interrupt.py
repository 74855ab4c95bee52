"""Ctrl-C during fit: it stops within a call of about 0.2 s, the model's counters agree with its
weights, and no compile worker outlives its parent (fastbp/_interrupt.py, backends/_warm.py)."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fastbp import _interrupt

# A single epoch long enough (seconds) that an interrupt sent after its start lands inside it;
# then the same model trained on exactly the batches that ran, for comparison.
_INTERRUPTED = textwrap.dedent("""
    import json, os, signal, threading
    import numpy as np
    import fastbp

    rng = np.random.default_rng(0)
    X = rng.standard_normal((60000, 256)).astype(np.float32)
    y = rng.integers(0, 10, len(X))
    batch = 64

    def model():
        return fastbp.Sequential([fastbp.Dense(256, 512, activation="relu"), fastbp.Dense(512, 512, activation="relu"),
                                  fastbp.Dense(512, 10)], seed=3)

    class Interrupt(fastbp.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs):
            threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()

    first = model()
    first.fit(X[:256], y[:256], epochs=1, batch_size=batch, loss="softmax_cross_entropy",
              optimizer=fastbp.Adam(1e-3), shuffle=False, verbose=0)  # compiles, outside the timed part
    interrupted = model()
    try:
        interrupted.fit(X, y, epochs=3, batch_size=batch, loss="softmax_cross_entropy", optimizer=fastbp.Adam(1e-3),
                        shuffle=False, verbose=0, callbacks=[Interrupt()])
        raised = False
    except KeyboardInterrupt:
        raised = True
    steps = interrupted.optimizer.steps
    same = model()
    if steps:
        same.fit(X[:steps * batch], y[:steps * batch], epochs=1, batch_size=batch, loss="softmax_cross_entropy",
                 optimizer=fastbp.Adam(1e-3), shuffle=False, verbose=0)
    print(json.dumps({"raised": raised, "steps": steps, "n_batches": -(-len(X) // batch),
                      "epochs_trained": interrupted.epochs_trained,
                      "theta": bool(np.array_equal(interrupted.theta, same.theta)),
                      "state": all(np.array_equal(a, b) for a, b in zip(interrupted.optimizer.state, same.optimizer.state))}))
""")


@pytest.mark.slow
def test_an_interrupt_stops_inside_an_epoch_with_counters_that_match_the_weights(tmp_path):
    done = subprocess.run([sys.executable, "-c", _INTERRUPTED], capture_output=True, text=True, timeout=600,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["raised"]
    assert 0 < result["steps"] < result["n_batches"], result  # inside the first epoch, not at its end
    assert result["epochs_trained"] == 0
    # The weights and Adam's moments are those of exactly `steps` steps.
    assert result["theta"] and result["state"]


def test_an_interrupt_swallowed_by_a_callback_from_c_is_raised_again():
    with pytest.raises(KeyboardInterrupt):
        with _interrupt.Interrupts() as interrupts:
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass  # what ctypes does with an exception raised inside a callback
            interrupts.check()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_error_left_by_a_swallowed_interrupt_becomes_the_interrupt():
    # An interrupt dropped inside llvmlite's object-cache callback leaves numba without the
    # compiled object, and saving to the cache then fails with a RuntimeError.
    with pytest.raises(KeyboardInterrupt) as raised:
        with _interrupt.Interrupts():
            try:
                signal.raise_signal(signal.SIGINT)
            except KeyboardInterrupt:
                pass
            raise RuntimeError("no compiled object yet")
    assert isinstance(raised.value.__cause__, RuntimeError)


def test_an_error_without_an_interrupt_is_left_alone():
    with pytest.raises(RuntimeError):
        with _interrupt.Interrupts():
            raise RuntimeError("a real error")


def test_deferred_interrupts_wait_for_the_check():
    with _interrupt.Interrupts() as interrupts:
        with interrupts.deferring():
            signal.raise_signal(signal.SIGINT)
            reached = True
        assert reached and interrupts.pending
        with pytest.raises(KeyboardInterrupt):
            interrupts.check()
        assert not interrupts.pending


def test_calls_grow_to_the_time_budget_and_respect_the_progress_step():
    chunks = _interrupt.BatchChunks(1000)
    calls = []

    def run(first, last):
        calls.append(last - first)
        return 0, last

    for _ in range(7):
        chunks.timed(run, 0, chunks.size)
    assert calls == [8, 32, 128, 512, 1000, 1000, 1000]
    assert _interrupt.BatchChunks(3).size == 3


# A cold fit whose compile workers are recorded; the parent then waits to be killed or interrupted.
_COLD = textwrap.dedent("""
    import json, sys
    import numpy as np
    import fastbp
    from fastbp.backends import _warm

    start = _warm.start
    def recording(main, arg_lists):
        procs = start(main, arg_lists)
        print(json.dumps({"workers": [p.pid for p in procs]}), flush=True)
        recording.procs = procs
        return procs
    recording.procs = []
    _warm.start = recording
    X = np.random.default_rng(0).standard_normal((64, 5)).astype(np.float32)
    y = np.arange(64) % 3
    try:
        fastbp.Sequential([fastbp.Dense(5, 8, activation="relu"), fastbp.Dense(8, 3)], seed=0).fit(
            X, y, epochs=1, loss="softmax_cross_entropy", verbose=0)
    except KeyboardInterrupt:
        print(json.dumps({"interrupted": [p.returncode for p in recording.procs]}), flush=True)
        sys.exit(3)
""")


def _start_cold(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTBP_NO_CACHE")}
    env["FASTBP_CACHE_DIR"] = str(tmp_path / "cache")
    proc = subprocess.Popen([sys.executable, "-c", _COLD], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    workers = json.loads(line)["workers"] if line.startswith("{") else []
    if not workers:
        proc.kill()
        proc.wait()
        pytest.skip("no compile worker starts here (one usable CPU, or no cache)")
    return proc, workers


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_a_compile_worker_ends_with_its_killed_parent(tmp_path):
    proc, workers = _start_cold(tmp_path)
    time.sleep(0.5)
    assert all(_alive(pid) for pid in workers)  # still compiling: a cold compile takes seconds
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + 3
    while any(_alive(pid) for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in workers)


@pytest.mark.slow
def test_an_interrupt_during_a_cold_compile_stops_the_workers(tmp_path):
    proc, workers = _start_cold(tmp_path)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 3, err
    # Stopped, not waited for: a worker left to finish would have exited with 0.
    assert json.loads(out.strip().splitlines()[-1])["interrupted"] == [-signal.SIGKILL] * len(workers)
