"""Where one training step's time goes, kernel by kernel, for each configuration of configs.py.

    python benchmarks/profile_step.py                 # every configuration, float32
    python benchmarks/profile_step.py --configs small --rounds 7

Each kernel the compiled loop calls in a step (fastbp/backends/_cpu_loop.py: gather, per dense
layer the forward and backward, the loss, the finiteness check, the SGD momentum update) is
called on the configuration's shapes ``repeats`` times in a row inside one compiled loop, so
no Python sits between calls; the median over ``rounds`` of the per-call time is reported.
A dense layer's time is split into its products (BLAS's sgemm, or fastbp's SIMD kernels where
``gemm_small.use_simd`` picks them: both are timed) and its epilogues (bias + activation
forward; activation derivative + bias gradient backward). The step itself is timed by
training epochs with ``fit`` on the configuration's own samples (``timed_epochs``); what the
kernels do not account for is the loop's own overhead (views, calls, branches) and the cache
misses of going from kernel to kernel.
``--clock cpu`` times by the process's CPU time instead of the wall clock: on a machine shared
with other work, with NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1. Run with the thread count of interest (NUMBA_NUM_THREADS / OPENBLAS_NUM_THREADS set before
start); BLAS products are timed on BLAS's threads, as in a step.
"""
import argparse
import os
import statistics
import sys
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.configs import (CLOCK_VARIABLE, CONFIGS, LEARNING_RATE, MOMENTUM, bench_clock,  # noqa: E402
                                build_fastbp, config_named, fit_epoch, make_data)


def _kernels():
    """The compiled helpers, built on first use (numba imported here only)."""
    from numba import njit

    from fastbp.backends import _cpu_loop as loop
    from fastbp.kernels import registry as R
    from fastbp.kernels.cpu import dense as D
    from fastbp.kernels.cpu import losses as L
    from fastbp.kernels.cpu import optim as O

    try:
        from fastbp.kernels.cpu import gemm_small as G
    except ImportError:  # a fastbp from before the SIMD kernels: every product is BLAS's
        G = None

    @njit
    def repeat(f, args, r):
        for _ in range(r):
            f(*args)

    @njit
    def blas_fwd(out, x, w):
        np.dot(x, w, out)

    @njit
    def blas_tn(dw, x, dz):
        np.dot(x.T, dz, dw)

    @njit
    def blas_nt(dx, dz, w):
        np.dot(dz, w.T, dx)

    @njit
    def losses(loss, probs, out, labels, dout, no_weight):
        L.loss_code_forward(loss, probs, out, labels, out[:0], no_weight, R.LOSS_SCE, 0.0)
        L.loss_code_backward(dout, probs, out, labels, out[:0], no_weight, R.LOSS_SCE, 0.0)

    @njit
    def update(theta, grad, s1, s2, n_weights, hyper):
        O.optimizer_code_update(theta, grad, s1, s2, n_weights, R.OPT_SGD, hyper, 1)

    @njit
    def gather(dst, X, order, labels_dst, labels, nb):
        loop._gather_rows(dst, X, order, 0, nb)
        loop._gather(labels_dst, labels, order, 0, nb)

    return dict(repeat=repeat, blas_fwd=blas_fwd, blas_tn=blas_tn, blas_nt=blas_nt, losses=losses,
                update=update, gather=gather, all_finite=loop.all_finite, D=D, G=G, R=R)


def _time(k, f, args, repeats, rounds):
    k["repeat"](f, args, 2)
    per_call = []
    clock = bench_clock()
    for _ in range(rounds):
        start = clock()
        k["repeat"](f, args, repeats)
        per_call.append((clock() - start) / repeats)
    return statistics.median(per_call)


def profile(config, rounds=5, dtype="float32"):
    """{part: microseconds per step} for one configuration, and the step's own time."""
    k = _kernels()
    D, G, R = k["D"], k["G"], k["R"]
    rng = np.random.default_rng(0)
    nb, sizes = config.batch_size, config.layers
    flops = nb * config.n_weights
    repeats = max(20, int(2e8 / (6 * flops)))
    X, y = make_data(config, 4 * nb)
    acts = [rng.standard_normal((nb, s)).astype(dtype) for s in sizes]
    parts = {}

    def t(name, f, *args):
        parts[name] = parts.get(name, 0.0) + 1e6 * _time(k, f, args, repeats, rounds)

    t("gather", k["gather"], np.empty((nb, sizes[0]), dtype), X, np.arange(4 * nb), np.empty(nb, np.int64), y, nb)
    simd = {"forward": 0.0, "dw": 0.0}
    for layer, (i, o) in enumerate(zip(sizes, sizes[1:])):
        x, out = acts[layer], np.maximum(acts[layer + 1], 0)
        w = (rng.standard_normal((i, o)) / np.sqrt(i)).astype(dtype)
        b, dz = np.zeros(o, dtype), rng.standard_normal((nb, o)).astype(dtype)
        code = R.RELU if layer < len(sizes) - 2 else R.IDENTITY
        macs = nb * i * o
        uses_simd = G is not None and G.use_simd(x, nb, macs)
        t("products (BLAS)", k["blas_fwd"], out, x, w)
        t("products (BLAS)", k["blas_tn"], np.empty((i, o), dtype), x, dz)
        if layer:
            t("products (BLAS)", k["blas_nt"], np.empty((nb, i), dtype), dz, w)
            t("products (step)", k["blas_nt"], np.empty((nb, i), dtype), dz, w)
        if uses_simd:
            t("products (step)", G.matmul_bias, out, x, w, b, code == R.RELU)
            t("products (step)", G.matmul_tn, np.empty((i, o), dtype), x, dz)
        else:
            t("products (step)", k["blas_fwd"], out, x, w)
            t("products (step)", k["blas_tn"], np.empty((i, o), dtype), x, dz)
            t("epilogues", D._bias_act_rows, out, b, code, 0.0)
        t("epilogues", D._act_grad_and_bias, np.empty_like(dz), np.empty(o, dtype), dz, out, code, 0.0)
        if G is not None and G.WIDTH and dtype == "float32":
            for key, f, args in (("forward", G.matmul_bias, (out, x, w, b, code == R.RELU)),
                                 ("dw", G.matmul_tn, (np.empty((i, o), dtype), x, dz))):
                simd[key] += 1e6 * _time(k, f, args, repeats, rounds)
    logits = acts[-1]
    t("loss", k["losses"], np.empty(1, dtype), np.empty_like(logits), logits, y[:nb], np.empty_like(logits),
      np.empty(0, dtype))
    n_params = config.n_parameters
    theta, grad = rng.standard_normal(n_params).astype(dtype), rng.standard_normal(n_params).astype(dtype)
    hyper = np.zeros(8, dtype)
    hyper[0], hyper[1] = LEARNING_RATE, MOMENTUM
    t("finite check", k["all_finite"], grad)
    t("update", k["update"], theta, grad, np.zeros(n_params, dtype), np.zeros(0, dtype), config.n_weights, hyper)

    model = build_fastbp(config, dtype)
    Xs, ys = make_data(config)
    epochs, n_steps = timed_epochs(config)
    fit_epoch(model, Xs[:2 * nb], ys[:2 * nb], config)
    steps = []
    clock = bench_clock()
    for _ in range(rounds):
        start = clock()
        for _ in range(epochs):
            fit_epoch(model, Xs, ys, config)
        steps.append((clock() - start) / n_steps * 1e6)
    return parts, simd, statistics.median(steps)


def timed_epochs(config):
    """(epochs, steps) of the step's timing: epochs over the configuration's own samples (as
    compare.py trains on), enough of them that fit's own set-up is under a few % of the time.

    Not one epoch over more samples: on a tiny network that took gigabytes of data (16-16-2:16,
    890 MB), and gathering each batch's rows from DRAM came out as 2-4 us of "overhead" a step.
    """
    flops = config.batch_size * config.n_weights
    per_epoch = -(-config.n_samples // config.batch_size)
    epochs = max(1, -(-max(20, int(4e9 / (6 * flops))) // per_epoch))
    return epochs, epochs * per_epoch


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, from %(default)s, or network specs such as 64-128-10:32 (sizes:batch)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall time, or the process's CPU time (run with one thread on a shared machine)")
    args = parser.parse_args(argv)
    os.environ[CLOCK_VARIABLE] = args.clock
    print("| config | step us | " + " | ".join(("gather", "products (step)", "epilogues", "loss", "finite check",
                                                 "update", "overhead")) + " | products (BLAS) | SIMD fwd + dw |")
    print("|---|--:|" + "--:|" * 7 + "--:|--:|")
    for name in args.configs.split(","):
        parts, simd, step = profile(config_named(name), args.rounds)
        order = ("gather", "products (step)", "epilogues", "loss", "finite check", "update")
        overhead = step - sum(parts[p] for p in order)
        cells = [f"{parts[p]:.2f} ({parts[p] / step:.0%})" for p in order]
        cells.append(f"{overhead:.2f} ({overhead / step:.0%})")
        simd_cell = f"{simd['forward']:.2f} + {simd['dw']:.2f}" if simd["forward"] else "n/a"
        print(f"| {name} | {step:.2f} | " + " | ".join(cells) + f" | {parts['products (BLAS)']:.2f} | {simd_cell} |",
              flush=True)


if __name__ == "__main__":
    main()
