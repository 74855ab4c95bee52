"""asv: compile time from a cold numba cache, and start-up time of a fresh process.

Each figure comes from a fresh Python process whose FASTBP_CACHE_DIR (and NUMBA_CACHE_DIR) is
a new temporary directory, so "cold" means every kernel compiles. "warm" runs the same process a second time on the cache
the first run filled. startup_figures() is also used by compare.py; run this file as a
script to print all four figures.
"""
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# Compiles the core float32 kernels (first calls) and prints the seconds it took.
_KERNELS = """
import time
import numpy as np
from fastbp.kernels import ACTIVATIONS, cpu
f = np.float32
x, w, b, out, dz = (np.ones(s, f) for s in ((4, 3), (3, 2), (2,), (4, 2), (4, 2)))
dx, dw, db, loss, p, labels = np.ones((4, 3), f), np.ones((3, 2), f), np.ones(2, f), np.ones(1, f), np.ones(6, f), np.zeros(4, np.int64)
start = time.perf_counter()
cpu.dense_forward(out, x, w, b)
cpu.dense_backward(dx, dw, db, dz, x, w)
cpu.dense_act_forward(out, x, w, b, ACTIVATIONS["relu"], 0.0)
cpu.dense_act_backward(dx, dw, db, dz, dz, out, x, w, ACTIVATIONS["relu"], 0.0)
cpu.relu_forward(out, dz)
cpu.relu_backward(dz, dz, out)
cpu.softmax_cross_entropy_forward(loss, out, dz, labels, p[:0])
cpu.softmax_cross_entropy_backward(dz, out, labels, p[:0])
cpu.sgd_update(p, p.copy(), p.copy(), 0.1, 0.9, False, 0.0)
cpu.adam_update(p, p.copy(), p.copy(), p.copy(), 0.1, 0.9, 0.999, 1e-8, 1, 0.0, False)
print(time.perf_counter() - start)
"""

# The README's model on the bundled digits: import, load, build, one epoch; prints the seconds
# from before the import to the end of the epoch and of the epoch alone (a tiny epoch is
# almost all compile time when the cache is cold).
_DIGITS = """
import time
start = time.perf_counter()
import fastbp
from fastbp import datasets
X, y = datasets.load_digits()
model = fastbp.Sequential([fastbp.Dense(64, 256, activation="relu"), fastbp.Dense(256, 10)], seed=0)
model.compile("softmax_cross_entropy", fastbp.SGD(lr=0.1, momentum=0.9))
fit_start = time.perf_counter()
model.fit(X, y, epochs=1, batch_size=32, verbose=0)
end = time.perf_counter()
print(end - start, end - fit_start)
"""


def run_fresh(script, cache_dir):
    """Run ``script`` in a fresh interpreter whose kernel cache is cache_dir.

    Returns (wall seconds of the whole process, start-up included; the numbers it printed).
    """
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTBP_CACHE_DIR=cache_dir)
    env.pop("FASTBP_NO_CACHE", None)
    start = time.perf_counter()
    # Run from the cache directory, so that "import fastbp" finds the installed package, never a
    # source tree that happens to be the working directory.
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=cache_dir, capture_output=True,
                          text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr}")
    return wall, [float(v) for v in done.stdout.split()]


def startup_figures():
    """Seconds, each from a fresh process: {kernels_cold, training_loop_cold, digits_cold, digits_warm}.

    digits_* are whole-process wall times (interpreter start, import fastbp, load the digits,
    first epoch); training_loop_cold is the first epoch's fit alone with a cold cache.
    """
    figures = {}
    for name, script in (("kernels", _KERNELS), ("digits", _DIGITS)):
        cache = tempfile.mkdtemp(prefix="fastbp-numba-cache-")
        try:
            wall, printed = run_fresh(script, cache)
            if name == "kernels":
                figures["kernels_cold"] = printed[0]
            else:
                figures["training_loop_cold"] = printed[1]
                figures["digits_cold"] = wall
                figures["digits_warm"] = run_fresh(script, cache)[0]
        finally:
            shutil.rmtree(cache, ignore_errors=True)
    return figures


class _Fresh:
    unit = "seconds"
    rounds = 1
    repeat = 1
    timeout = 900

    def setup(self):
        self.cache = tempfile.mkdtemp(prefix="fastbp-numba-cache-")

    def teardown(self):
        shutil.rmtree(self.cache, ignore_errors=True)


class ColdCache(_Fresh):
    """Seconds in a fresh process with an empty cache directory (made in setup)."""

    def track_kernels(self):
        """First calls of the core float32 kernels (dense, dense+relu, relu, loss, sgd, adam)."""
        return run_fresh(_KERNELS, self.cache)[1][0]

    def track_training_loop(self):
        """First one-epoch fit on the digits: the training loop and every kernel it calls."""
        return run_fresh(_DIGITS, self.cache)[1][1]

    def track_digits_first_epoch(self):
        """Whole process: interpreter start, import fastbp, load the digits, first epoch."""
        return run_fresh(_DIGITS, self.cache)[0]


class WarmCache(_Fresh):
    """Seconds in a fresh process on a cache that setup filled (target: digits under 2 s)."""

    def setup(self):
        super().setup()
        run_fresh(_DIGITS, self.cache)

    def track_digits_first_epoch(self):
        """Whole process: interpreter start, import fastbp, load the digits, first epoch."""
        return run_fresh(_DIGITS, self.cache)[0]


# ----- time to a first result: the targets of a cold start, each a median of fresh processes --------

# `fastbp train` as a user runs it first: the whole process, interpreter start to exit.
_TRAIN = [sys.executable, "-m", "fastbp", "train", "--quiet"]

# One fit on the cache that `fastbp train` filled, of its network (64-256-10, ReLU, dropout 0.2,
# softmax cross-entropy, SGD with momentum) with one new kind of thing; prints the fit's seconds.
_FIRST_FIT = """
import sys, time
import numpy as np
import fastbp
from fastbp import datasets
X, y = datasets.load_digits()
X = (X / 16.0).astype(np.float32)
what = sys.argv[1]
if what in ("norm", "layernorm"):
    norm = fastbp.BatchNorm(256) if what == "norm" else fastbp.LayerNorm(256)
    hidden = [fastbp.Dense(64, 256), norm, fastbp.ReLU()]
else:
    hidden = [fastbp.Dense(64, 256, activation="gelu" if what == "activation" else "relu")]
model = fastbp.Sequential(hidden + [fastbp.Dropout(0.2), fastbp.Dense(256, 10)], seed=0)
loss, target = ("mse", np.eye(10, dtype=np.float32)[y]) if what == "loss" else ("softmax_cross_entropy", y)
optimizer = fastbp.RMSprop(lr=0.001) if what == "optimizer" else fastbp.SGD(lr=0.1, momentum=0.9)
start = time.perf_counter()
model.fit(X, target, epochs=1, batch_size=32, loss=loss, optimizer=optimizer, verbose=0)
print(time.perf_counter() - start)
"""

# scikit-learn's way in, with the estimators' defaults: the whole process, import to end of fit.
_ESTIMATOR = """
import sys, warnings
warnings.simplefilter("ignore")
import fastbp
from fastbp import datasets
X, y = datasets.load_digits()
if sys.argv[1] == "classifier":
    fastbp.MLPClassifier().fit(X, y)
else:
    fastbp.MLPRegressor().fit(X, y.astype(float))
"""


def _fresh_env(cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir, FASTBP_CACHE_DIR=cache_dir)
    env.pop("FASTBP_NO_CACHE", None)
    return env


def _timed(command, cache_dir, cpus=None):
    """Wall seconds of ``command`` in a fresh process on the cache ``cache_dir``, on ``cpus`` (a
    taskset list such as "0") where given; and what it printed."""
    if cpus is not None:
        command = ["taskset", "-c", cpus, *command]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, env=_fresh_env(cache_dir), cwd=cache_dir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise RuntimeError(f"benchmark subprocess failed:\n{done.stderr}")
    _CPU_SECONDS.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)
    return wall, done.stdout


# The CPU seconds (user and system, the process and the workers it waited for) of each _timed
# run: the work a cold start does, which another load on the machine inflates less than the wall.
_CPU_SECONDS = []


def first_result_figures(rounds=3, cpus=None):
    """Median seconds of ``rounds`` fresh processes for each target of a cold start.

    - ``train_cold``: `fastbp train` (the bundled digits, 30 epochs), a fresh cache folder.
    - ``first_fit_<what>``: on a copy of the cache that `fastbp train` filled, a fit that brings
      one new loss (mse), optimizer (RMSprop), activation (GELU) or norm layer (BatchNorm, and
      ``first_fit_layernorm`` LayerNorm); the fit's own seconds.
    - ``classifier_cold``, ``regressor_cold``: MLPClassifier / MLPRegressor with their defaults on
      the digits, import to end of fit, a fresh cache folder.
    - ``*_cpu``: the CPU seconds of the cold runs (``_CPU_SECONDS``).
    """
    runs = {}
    for _ in range(rounds):
        cache = tempfile.mkdtemp(prefix="fastbp-cold-")
        try:
            runs.setdefault("train_cold", []).append(_timed(_TRAIN, cache, cpus)[0])
            runs.setdefault("train_cold_cpu", []).append(_CPU_SECONDS[-1])
            for what in ("loss", "optimizer", "activation", "norm", "layernorm"):
                copy = tempfile.mkdtemp(prefix="fastbp-warm-")
                try:
                    shutil.copytree(cache, copy, dirs_exist_ok=True)
                    printed = _timed([sys.executable, "-c", _FIRST_FIT, what], copy, cpus)[1]
                    runs.setdefault(f"first_fit_{what}", []).append(float(printed.split()[-1]))
                finally:
                    shutil.rmtree(copy, ignore_errors=True)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        for kind in ("classifier", "regressor"):
            cache = tempfile.mkdtemp(prefix="fastbp-cold-")
            try:
                runs.setdefault(f"{kind}_cold", []).append(_timed([sys.executable, "-c", _ESTIMATOR, kind],
                                                                  cache, cpus)[0])
                runs.setdefault(f"{kind}_cold_cpu", []).append(_CPU_SECONDS[-1])
            finally:
                shutil.rmtree(cache, ignore_errors=True)
    return {name: statistics.median(values) for name, values in runs.items()}, runs


class FirstResult(_Fresh):
    """The cold-start targets (``first_result_figures``), one fresh process each."""

    timeout = 1800

    def track_train_cold(self):
        """`fastbp train`, whole process, empty cache folder."""
        return _timed(_TRAIN, self.cache)[0]

    def track_classifier_cold(self):
        """MLPClassifier().fit on the digits, whole process, empty cache folder."""
        return _timed([sys.executable, "-c", _ESTIMATOR, "classifier"], self.cache)[0]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-result", action="store_true",
                        help="the cold-start targets: fastbp train, a first fit per new kind, the estimators")
    parser.add_argument("--rounds", type=int, default=3, help="fresh processes per figure (default: 3)")
    parser.add_argument("--cpus", help="run the processes on these CPUs only (taskset list, e.g. 0)")
    args = parser.parse_args()
    if args.first_result:
        medians, runs = first_result_figures(args.rounds, args.cpus)
        print(json.dumps({"median": medians, "runs": runs}, indent=1))
    else:
        print(json.dumps(startup_figures(), indent=1))
