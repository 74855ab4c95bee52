"""asv: compile time from a cold numba cache, and start-up time of a fresh process.

Each figure comes from a fresh Python process whose FASTBP_CACHE_DIR (and NUMBA_CACHE_DIR) is
a new temporary directory, so "cold" means every kernel compiles. "warm" runs the same process a second time on the cache
the first run filled. startup_figures() is also used by compare.py; run this file as a
script to print all four figures.
"""
import json
import os
import shutil
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


if __name__ == "__main__":
    print(json.dumps(startup_figures(), indent=1))
