"""What every benchmark measures: configurations, kernel shapes, data and models, defined once.

asv (bench_*.py), pytest-benchmark (test_kernels_bench.py) and compare.py all import from here,
so a shape or a configuration changes in one place. Heavy imports (fastbp, numba) happen inside
the functions: importing this module is cheap and starts no thread pool.

Names here must not start with time_, track_, mem_, peakmem_ or timeraw_: asv imports every
module of this package and would take such a function for a benchmark.
"""
from dataclasses import dataclass

import numpy as np

LEARNING_RATE = 0.01
# "wall" (default) or "cpu": with "cpu", timings are the process's CPU time (all its threads),
# which a machine shared with other work inflates far less than wall time; meaningful with one
# thread per library (spinning workers count as work). compare.py --clock sets it for its children.
CLOCK_VARIABLE = "FASTBP_BENCH_CLOCK"
MOMENTUM = 0.9
DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class Config:
    """A training benchmark: layer sizes (inputs, hidden..., classes), samples per epoch, batch size.

    ``asv_samples`` is the smaller epoch that asv times, so that one benchmark stays within a few
    seconds; layer and batch sizes are the same as in the full configuration.
    """

    name: str
    layers: tuple
    n_samples: int
    batch_size: int
    asv_samples: int

    @property
    def n_weights(self):
        """Multiply-accumulates per sample in one forward pass: the weights, biases excluded."""
        return sum(i * o for i, o in zip(self.layers, self.layers[1:]))

    @property
    def n_parameters(self):
        return self.n_weights + sum(self.layers[1:])

    def epoch_flops(self, n_samples=None):
        """Nominal flops of one epoch: 6 per weight per sample.

        Forward is 2 flops (a multiply and an add) per weight and sample; backward is 4 (2 for
        dW = x.T @ dz, 2 for dx = dz @ W.T). The first layer's dx is counted although no
        implementation computes it, as is customary (it is 29% of the count on small, 25% on
        mnist, 11% on wide); elementwise work and the update are not counted.
        """
        return 6 * self.n_weights * (self.n_samples if n_samples is None else n_samples)

    def real_epoch_flops(self, n_samples=None):
        """Flops of one epoch that training performs: epoch_flops less the first layer's dx.

        Per sample, 2 per weight forward and 2 per weight for dW = x.T @ dz in every layer, and
        2 per weight for dx = dz @ W.T in every layer but the first (the data needs no gradient,
        and no implementation computes it). For 64-32-10: 2 (64 32 + 32 10) + 2 (64 32 + 32 10)
        + 2 (32 10) = 10,112, against epoch_flops's 14,208. Elementwise work and the update are
        not counted. This is the count to hold against a machine's peak.
        """
        first = self.layers[0] * self.layers[1]
        return (6 * self.n_weights - 2 * first) * (self.n_samples if n_samples is None else n_samples)


CONFIGS = {c.name: c for c in (
    Config("small", (64, 32, 10), 20_000, 32, asv_samples=20_000),
    Config("mnist", (784, 512, 256, 10), 60_000, 128, asv_samples=6_400),
    Config("wide", (1024, 2048, 2048, 10), 16_384, 256, asv_samples=2_048),
)}

# A network that is not in CONFIGS, named "inputs-hidden...-classes:batch" ("64-128-10:32"): an
# epoch of about this many nominal flops (Config.epoch_flops), within the bounds below, so that
# one epoch takes a fraction of a second for tiny and for wide networks alike.
SPEC_EPOCH_FLOPS = 20e9
SPEC_SAMPLES = (4_096, 100_000)


def config_named(name):
    """CONFIGS[name], or the Config a network spec such as "64-128-10:32" describes.

    A spec has at least two layer sizes (inputs and classes), each a positive integer, and a
    positive batch size after the colon; its epoch holds SPEC_EPOCH_FLOPS nominal flops (bounded
    by SPEC_SAMPLES and at least two batches).
    """
    if name in CONFIGS:
        return CONFIGS[name]
    layers, sep, batch = name.partition(":")
    try:
        sizes = tuple(int(v) for v in layers.split("-"))
        batch_size = int(batch)
    except ValueError:
        sizes, batch_size = (), 0
    if not sep or len(sizes) < 2 or min(sizes) < 1 or batch_size < 1:
        raise ValueError(f"config {name!r}: expected one of {sorted(CONFIGS)} or a network spec "
                         f"'inputs-hidden...-classes:batch' such as '64-128-10:32'")
    n_weights = sum(i * o for i, o in zip(sizes, sizes[1:]))
    lo, hi = SPEC_SAMPLES
    n_samples = max(2 * batch_size, min(hi, max(lo, round(SPEC_EPOCH_FLOPS / (6 * n_weights)))))
    return Config(name, sizes, n_samples, batch_size, asv_samples=n_samples)


# Networks beyond CONFIGS that the speed targets cover (2 to 5 dense layers, widths 16 to 1024,
# batches 16 to 512): compare.py --configs sweep. Chosen to span the range: every layer at most 64
# wide (the first three: compare.py's narrow targets), mixed widths, deep and narrow, wide and shallow.
# The last three came out slowest against JAX of twelve more networks (docs/performance-log.md,
# 2026-11-30, 6a2f092): a thin wide layer at batch 512, a wide first layer at batch 16 (whose weight gradient
# copies dz's panels), and a BLAS-bound network at batch 64.
SWEEP = ("16-16-2:16", "32-64-64-4:64", "64-64-64-64-64-10:512", "100-32-16:128", "256-128-10:32",
         "128-256-256-256-10:64", "784-128-10:16", "512-256-128-64-10:256", "1024-1024-10:128",
         "32-1024-1024-10:512", "1024-512-512-16:32", "300-1000-100-10:256", "16-1024-16:512",
         "128-1024-10:16", "256-1024-256:64")


# Kernel shapes (N, I, O) = (batch, inputs, outputs) of each configuration's first dense layer.
SHAPES = {c.name: (c.batch_size, c.layers[0], c.layers[1]) for c in CONFIGS.values()}

# Each kernel benchmarked, with its phases: a forward/backward pair, or an optimizer update.
KERNELS = {**{k: ("forward", "backward") for k in ("dense", "dense_act", "relu", "softmax", "gelu",
                                                  "softmax_cross_entropy", "silu", "selu", "mse", "huber",
                                                  "mae")},
           "sgd_update": ("update",), "adam_update": ("update",), "rmsprop_update": ("update",),
           "adagrad_update": ("update",),
           # The normalization layers, on the first dense layer's (N, O) output.
           "batchnorm": ("forward", "backward"), "layernorm": ("forward", "backward"),
           # ... and with the ReLU after them fused in (the ops a Dense, norm, ReLU network runs).
           "batchnorm_act": ("forward", "backward"), "layernorm_act": ("forward", "backward")}


def bench_clock():
    """time.perf_counter, or time.process_time where FASTBP_BENCH_CLOCK=cpu."""
    import os
    import time

    return time.process_time if os.environ.get(CLOCK_VARIABLE, "wall") == "cpu" else time.perf_counter


def make_data(config, n_samples=None, seed=0):
    """A learnable synthetic problem: float32 X ~ N(0, 1), int64 labels from a fixed random teacher.

    The teacher (two fixed random projections with a tanh between) depends only on the
    configuration, so every sample count draws from the same problem.
    """
    n_in, n_classes = config.layers[0], config.layers[-1]
    teacher = np.random.default_rng(12345)
    p = teacher.standard_normal((n_in, 64)) / np.sqrt(n_in)
    q = teacher.standard_normal((64, n_classes))
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((config.n_samples if n_samples is None else n_samples, n_in), dtype=np.float32)
    y = np.argmax(np.tanh(X @ p) @ q, axis=1).astype(np.int64)
    return X, y


def build_fastbp(config, dtype="float32", seed=0):
    """fastbp.Sequential with ReLU hidden layers, softmax cross-entropy and SGD with momentum."""
    import fastbp

    sizes = config.layers
    layers = [fastbp.Dense(i, o, activation="relu") for i, o in zip(sizes[:-2], sizes[1:-1])]
    layers.append(fastbp.Dense(sizes[-2], sizes[-1]))
    model = fastbp.Sequential(layers, dtype=dtype, seed=seed)
    return model.compile("softmax_cross_entropy", fastbp.SGD(lr=LEARNING_RATE, momentum=MOMENTUM))


def fit_epoch(model, X, y, config):
    """One epoch of ``fit``, argument checks and buffer set-up included, as a user calls it."""
    return model.fit(X, y, epochs=1, batch_size=config.batch_size, verbose=0)


def allocations_per_step(model, X, y, config, n_batches=8):
    """numba runtime (NRT) allocations per training step of a warmed-up model; the target is 0.

    Counted over one epoch of 2 n_batches and one of n_batches, so fit's own set-up cancels out.
    X must hold at least 2 n_batches batches.
    """
    from numba.core.runtime import _nrt_python as nrt

    def allocations(n):
        rows = n * config.batch_size
        before = nrt.memsys_get_stats_alloc()
        fit_epoch(model, X[:rows], y[:rows], config)
        return nrt.memsys_get_stats_alloc() - before

    enabled = nrt.memsys_stats_enabled()
    nrt.memsys_enable_stats()
    try:
        return (allocations(2 * n_batches) - allocations(n_batches)) / n_batches
    finally:
        if not enabled:
            nrt.memsys_disable_stats()


def kernel_calls(kernel, shape, dtype):
    """{phase: (kernel, args)} for one kernel at SHAPES[shape] in ``dtype``.

    The phases are those of KERNELS[kernel]. The
    kernels are the unchecked numba dispatchers of ``fastbp.kernels.cpu``: the argument checks
    of ``fastbp.kernels`` are Python and would dominate the small shapes. The loss works on
    (N, classes) logits; optimizer updates cover the configuration's whole parameter vector.
    """
    from fastbp.kernels import ACTIVATIONS, cpu

    n, i, o = SHAPES[shape]
    rng = np.random.default_rng(0)

    def arr(*dims, scale=1.0):
        return (scale * rng.standard_normal(dims)).astype(dtype)

    x, w, b = arr(n, i), arr(i, o, scale=i ** -0.5), arr(o)
    out, dout, dx, dw, db, dz = arr(n, o), arr(n, o), arr(n, i), arr(i, o), arr(o), arr(n, o)
    relu = ACTIVATIONS["relu"]
    if kernel == "dense":
        return {"forward": (cpu.dense_forward, (out, x, w, b)),
                "backward": (cpu.dense_backward, (dx, dw, db, dout, x, w))}
    if kernel == "dense_act":
        return {"forward": (cpu.dense_act_forward, (out, x, w, b, relu, 0.0)),
                "backward": (cpu.dense_act_backward, (dx, dw, db, dz, dout, out, x, w, relu, 0.0))}
    if kernel in ("relu", "softmax", "gelu", "silu", "selu"):
        forward, backward = getattr(cpu, f"{kernel}_forward"), getattr(cpu, f"{kernel}_backward")
        z = arr(n, o)
        # GELU's and SiLU's backward take the forward input, the others the forward output.
        return {"forward": (forward, (out, z)),
                "backward": (backward, (dz, dout, z if kernel in ("gelu", "silu") else out))}
    if kernel in ("mse", "huber", "mae"):
        # The elementwise losses (one shared kernel pair) on the configuration's (N, O) outputs.
        forward, backward = getattr(cpu, f"{kernel}_forward"), getattr(cpu, f"{kernel}_backward")
        loss, no_weight, target = np.zeros(1, dtype=dtype), np.empty(0, dtype=dtype), arr(n, o)
        extra = (1.0,) if kernel == "huber" else ()
        return {"forward": (forward, (loss, out, target, no_weight, *extra)),
                "backward": (backward, (dz, out, target, no_weight, *extra))}
    if kernel in ("batchnorm", "layernorm", "batchnorm_act", "layernorm_act"):
        x_o, gamma, beta, dgamma, dbeta = arr(n, o), arr(o), arr(o), arr(o), arr(o)
        batch = kernel.startswith("batchnorm")
        stats = [arr(o if batch else n) for _ in range(3 if batch else 2)]
        forward, backward = getattr(cpu, f"{kernel}_forward"), getattr(cpu, f"{kernel}_backward")
        if kernel.endswith("_act"):
            act = (relu, 0.0)
            return {"forward": (forward, (out, *stats, x_o, gamma, beta, 1e-5, *act)),
                    "backward": (backward, (dz, dgamma, dbeta, dout, out, x_o, stats[0], stats[-1], gamma, beta,
                                            *act))}
        return {"forward": (forward, (out, *stats, x_o, gamma, beta, 1e-5)),
                "backward": (backward, (dz, dgamma, dbeta, dout, x_o, stats[0], stats[-1], gamma))}
    if kernel == "softmax_cross_entropy":
        n_classes = CONFIGS[shape].layers[-1]
        logits, probs, dlogits = arr(n, n_classes), arr(n, n_classes), arr(n, n_classes)
        labels = rng.integers(0, n_classes, n)
        loss, no_weight = np.zeros(1, dtype=dtype), np.empty(0, dtype=dtype)
        return {"forward": (cpu.softmax_cross_entropy_forward, (loss, probs, logits, labels, no_weight)),
                "backward": (cpu.softmax_cross_entropy_backward, (dlogits, probs, labels, no_weight))}
    size = CONFIGS[shape].n_parameters
    param, grad, state1, state2 = arr(size), arr(size), np.zeros(size, dtype), np.zeros(size, dtype)
    if kernel == "sgd_update":
        return {"update": (cpu.sgd_update, (param, grad, state1, 1e-3, MOMENTUM, False, 0.0))}
    if kernel == "adam_update":
        return {"update": (cpu.adam_update, (param, grad, state1, state2, 1e-3, 0.9, 0.999, 1e-8, 1, 0.0, False))}
    if kernel == "rmsprop_update":
        state3 = np.zeros(size, dtype)
        return {"update": (cpu.rmsprop_update, (param, grad, state1, state2, state3, 1e-3, 0.99, 1e-8, MOMENTUM,
                                                True, 0.0))}
    if kernel == "adagrad_update":
        return {"update": (cpu.adagrad_update, (param, grad, state1, 1e-3, 0.0, 1e-10, 1, 0.0))}
    raise ValueError(f"unknown kernel {kernel!r}; expected one of {list(KERNELS)}")
