"""fastbp.MLPClassifier on the digits: dtype=None (float64 data trains in float64) against dtype='float32'.

    NUMBA_NUM_THREADS=1 python benchmarks/estimator_dtype.py            # 15 repeats
    NUMBA_NUM_THREADS=1 python benchmarks/estimator_dtype.py --repeats 5

One process; each estimator fits once untimed (compiling, or loading numba's cache), then the
two fit in turn, --repeats times each, and the median wall and CPU seconds are reported with
the training accuracy. The fit: 1797 x 64 digits scaled to [0, 1], 100 ReLU hidden units, Adam,
batch 200, 50 epochs (n_iter_no_change=inf, so every fit runs all 50).
"""
import argparse
import statistics
import time
import warnings

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()

    from sklearn.datasets import load_digits
    from sklearn.exceptions import ConvergenceWarning

    from fastbp import MLPClassifier

    warnings.simplefilter("ignore", ConvergenceWarning)
    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    params = dict(hidden_layer_sizes=(100,), max_iter=50, n_iter_no_change=np.inf, random_state=0)
    candidates = {"dtype=None (float64)": dict(params), "dtype='float32'": dict(params, dtype="float32")}
    for p in candidates.values():
        MLPClassifier(**dict(p, max_iter=2)).fit(X, y)
    wall = {name: [] for name in candidates}
    cpu = {name: [] for name in candidates}
    accuracy = {}
    for _ in range(args.repeats):
        for name, p in candidates.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            clf = MLPClassifier(**p).fit(X, y)
            wall[name].append(time.perf_counter() - start)
            cpu[name].append(time.process_time() - start_cpu)
            accuracy[name] = clf.score(X, y)
    for name in candidates:
        print(f"{name:22s} wall {statistics.median(wall[name]):.3f} s, cpu {statistics.median(cpu[name]):.3f} s "
              f"(medians of {args.repeats}), training accuracy {accuracy[name]:.4f}")
    base, fast = (statistics.median(wall[name]) for name in candidates)
    print(f"float32 speed-up (wall): {base / fast:.2f}x")


if __name__ == "__main__":
    main()
