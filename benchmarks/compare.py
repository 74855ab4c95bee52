"""Train the same network with fastbp and its peers, side by side, and report against the targets.

    python benchmarks/compare.py                                  # everything, full configurations
    python benchmarks/compare.py --samples-scale 0.05 --repeats 1 # a quick look
    python benchmarks/compare.py --configs mnist --peers fastbp,torch --threads 1
    python benchmarks/compare.py --configs 64-128-10:32,sweep --peers fastbp,jax,torch --no-threads
    python benchmarks/compare.py --configs sweep --peers fastbp,jax --rounds 3   # peers alternating

Peers: fastbp.Sequential, a plain NumPy hand-written backprop (below), PyTorch on the CPU,
JAX on the CPU (the whole training step under ``jax.jit``, an epoch's batches under
``lax.scan``, the data on the device before timing: it compiles whole epochs as fastbp does),
scikit-learn's MLPClassifier and fastbp.MLPClassifier; one that is not installed is skipped
with a note. Two more rows train fastbp.Sequential in a process that also runs PyTorch, imported
(and its OpenMP pool started by a small op) before fastbp ("PyTorch first") or after it
("PyTorch after"): another library's OpenMP runtime in the process must not slow fastbp down.
A last row trains PyTorch with fastbp imported first: nor must fastbp slow PyTorch down.

Every one trains the configurations of configs.py in float32 with the same batch size, ReLU
hidden layers, softmax cross-entropy and SGD with momentum 0.9 (learning rate
configs.LEARNING_RATE), on the same synthetic data, with the same thread count.

Each (implementation, configuration) runs in its own fresh process with NUMBA_NUM_THREADS,
OPENBLAS_NUM_THREADS, OMP_NUM_THREADS and MKL_NUM_THREADS set before any import (BLAS reads them
once), and torch.set_num_threads too. That process imports its library, makes the data, trains
one warm-up epoch (not timed; it compiles or loads numba's cache), then --repeats timed epochs;
the median is reported. With --rounds R the peers of a configuration take turns R times (fastbp,
JAX, PyTorch, fastbp, ...), each turn a fresh process: on a machine whose speed drifts from
minute to minute, every peer then samples the same stretches of it, the table pools all of a
peer's timed epochs, and a note gives fastbp's ratio to each peer in each round. The report says
which BLAS libraries the parent process loads (NumPy's and SciPy's, which fastbp's products
call) and which kernel OpenBLAS picked (threadpoolctl's ``architecture``): with
``OPENBLAS_CORETYPE=Haswell`` set, as on this workplace's machines, OpenBLAS runs its AVX2
kernels on an AVX-512 CPU. Memory (Linux) is the process's peak resident set (VmHWM): its growth
over the resident set once the library is imported and the data made, through the set-up and the
first epoch ("fit MB": what a fit costs), and the peak overall. For the MLPClassifier rows an
epoch is one ``fit`` call with max_iter=1 and warm_start=True (argument checks included); for
fastbp.Sequential one ``fit(epochs=1)``; for NumPy and PyTorch one pass of their training loop.

GFLOP/s counts 6 flops per weight per sample (2 forward, 4 backward; configs.Config.epoch_flops);
real GFLOP/s leaves out the first layer's dx, which no implementation computes
(Config.real_epoch_flops). Real GFLOP/s is compared with two peaks measured in the same run
(benchmarks/peak.py): this machine's SGEMM rate, a float32 NumPy matrix product of --sgemm-size
with the run's threads, and one core's FMA peak, a register-only micro-kernel of independent
``llvm.fma`` chains at fastbp's vector width, times the threads. The header names the CPU, its
vector flags, and its clock as measured while it runs.
The report ends with the targets this run measured, met or not: a network whose layers are all
at most 64 wide at >= 50% of one core's FMA peak in real flops and >= 3x JAX; mnist, wide and
256-1024-256:64, whose products BLAS runs, at >= 85% of the SGEMM peak in real flops; every
network at >= 1x JAX, PyTorch and the NumPy loop; no allocation per step.
Results: a markdown table (compare.md), the raw figures (compare.json) and a bar chart
(compare.png) in --out-dir.
"""
import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository, for benchmarks.configs
from benchmarks import peak  # noqa: E402
from benchmarks.configs import (CLOCK_VARIABLE, CONFIGS, LEARNING_RATE, MOMENTUM, SWEEP,  # noqa: E402
                                allocations_per_step, bench_clock, build_fastbp, config_named, fit_epoch,
                                make_data)

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
EVAL_SAMPLES = 4096


# ----------------------------------------------------------------------------- the plain NumPy peer


def softmax(z):
    p = np.exp(z - z.max(axis=1, keepdims=True))
    return p / p.sum(axis=1, keepdims=True)


class NumpyMLP:
    """Backpropagation written out in plain NumPy, float32: the reference a user would write.

    Forward z_k = a_{k-1} W_k + b_k, a_k = relu(z_k) (no ReLU on the logits). Softmax
    cross-entropy averaged over the batch gives dL/dz_last = (softmax(z) - onehot(y)) / nb; then
    for each layer dW_k = a_{k-1}.T @ delta, db_k = sum(delta), and
    delta <- (delta @ W_k.T) * [a_{k-1} > 0] for the layer below. SGD with momentum in
    PyTorch's form: v = momentum v + g, p -= lr v.
    """

    def __init__(self, sizes, seed=0):
        rng = np.random.default_rng(seed)
        self.W = [rng.uniform(-np.sqrt(6 / i), np.sqrt(6 / i), (i, o)).astype(np.float32)
                  for i, o in zip(sizes, sizes[1:])]
        self.b = [np.zeros(o, np.float32) for o in sizes[1:]]
        self.vW = [np.zeros_like(w) for w in self.W]
        self.vb = [np.zeros_like(b) for b in self.b]

    def forward(self, x):
        acts = [x]
        for k, (w, b) in enumerate(zip(self.W, self.b)):
            z = acts[-1] @ w + b
            acts.append(np.maximum(z, 0) if k < len(self.W) - 1 else z)
        return acts

    def predict_proba(self, X):
        return softmax(self.forward(X)[-1])

    def train_epoch(self, X, y, batch_size, rng):
        order = rng.permutation(len(X))
        for start in range(0, len(X), batch_size):
            idx = order[start:start + batch_size]
            acts = self.forward(X[idx])
            delta = softmax(acts[-1])
            delta[np.arange(len(idx)), y[idx]] -= 1
            delta /= len(idx)
            for k in reversed(range(len(self.W))):
                grad_w, grad_b = acts[k].T @ delta, delta.sum(axis=0)
                if k:  # the input needs no gradient
                    delta = (delta @ self.W[k].T) * (acts[k] > 0)
                for param, velocity, grad in ((self.W[k], self.vW[k], grad_w), (self.b[k], self.vb[k], grad_b)):
                    velocity *= MOMENTUM
                    velocity += grad
                    param -= LEARNING_RATE * velocity


# ----------------------------------------------------------------------------- the implementations
# Each set-up takes (config, X, y, threads) and returns (one_epoch, predict_proba, weights_dtype),
# the last a function giving the dtype the weights are trained in.


def _setup_fastbp(config, X, y, threads):
    model = build_fastbp(config)
    return (lambda: fit_epoch(model, X, y, config)), model.predict_proba, lambda: model.dtype.name


def _setup_numpy(config, X, y, threads):
    model, rng = NumpyMLP(config.layers), np.random.default_rng(0)
    return (lambda: model.train_epoch(X, y, config.batch_size, rng)), model.predict_proba, lambda: "float32"


def _setup_torch(config, X, y, threads):
    import torch
    from torch import nn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    sizes = config.layers
    layers = []
    for i, o in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(i, o), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))
    # He-uniform weights and zero biases, as fastbp and the NumPy peer start: same start, comparable losses.
    for layer in model[::2]:
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    X_t, y_t = torch.from_numpy(X), torch.from_numpy(y)  # created once, sharing NumPy's memory
    generator = torch.Generator().manual_seed(0)

    def epoch():
        order = torch.randperm(len(X_t), generator=generator)
        for start in range(0, len(X_t), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(X_t[idx]), y_t[idx]).backward()
            optimizer.step()

    def predict_proba(X_eval):
        with torch.no_grad():
            return torch.softmax(model(torch.from_numpy(X_eval)), dim=1).numpy()

    return epoch, predict_proba, lambda: str(model[0].weight.dtype).removeprefix("torch.")


def _setup_jax(config, X, y, threads):
    """One epoch as a single jitted call: a permutation, lax.scan of the training step over the
    full batches, then the step once more on the last, smaller batch (its own static shape).

    The step is what the other peers do: forward with ReLU hidden layers, softmax cross-entropy
    averaged over the batch, its gradient by ``jax.grad``, SGD with momentum in PyTorch's form
    (v = momentum v + g, p -= lr v). X and y go to the device once, before any timing.
    """
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    sizes = config.layers
    params = [(rng.uniform(-np.sqrt(6 / i), np.sqrt(6 / i), (i, o)).astype(np.float32), np.zeros(o, np.float32))
              for i, o in zip(sizes, sizes[1:])]
    params = jax.device_put(params)
    velocity = jax.tree_util.tree_map(jnp.zeros_like, params)
    X_d, y_d = jax.device_put(X), jax.device_put(y.astype(np.int32))
    n, bs = len(X), config.batch_size
    n_full, tail = divmod(n, bs)

    def logits(params, x):
        for w, b in params[:-1]:
            x = jax.nn.relu(x @ w + b)
        w, b = params[-1]
        return x @ w + b

    def loss(params, x, labels):
        logp = jax.nn.log_softmax(logits(params, x))
        return -jnp.mean(jnp.take_along_axis(logp, labels[:, None], axis=1))

    def step(state, idx):
        params, velocity = state
        grads = jax.grad(loss)(params, X_d[idx], y_d[idx])
        velocity = jax.tree_util.tree_map(lambda v, g: MOMENTUM * v + g, velocity, grads)
        params = jax.tree_util.tree_map(lambda p, v: p - LEARNING_RATE * v, params, velocity)
        return (params, velocity), None

    @jax.jit
    def train_epoch(params, velocity, key):
        order = jax.random.permutation(key, n)
        state, _ = jax.lax.scan(step, (params, velocity), order[:n_full * bs].reshape(n_full, bs))
        if tail:
            state, _ = step(state, order[n_full * bs:])
        return state

    state = {"params": params, "velocity": velocity, "key": jax.random.PRNGKey(0)}

    def epoch():
        state["key"], key = jax.random.split(state["key"])
        state["params"], state["velocity"] = train_epoch(state["params"], state["velocity"], key)
        jax.block_until_ready(state["params"])

    predict = jax.jit(lambda params, x: jax.nn.softmax(logits(params, x)))
    return (epoch, lambda X_eval: np.asarray(predict(state["params"], X_eval)),
            lambda: str(state["params"][0][0].dtype))


def _mlp_classifier(cls, config, X, y):
    """scikit-learn's parameters for exactly one epoch of plain SGD with momentum per fit call."""
    clf = cls(hidden_layer_sizes=config.layers[1:-1], activation="relu", solver="sgd", alpha=0.0,
              batch_size=config.batch_size, learning_rate="constant", learning_rate_init=LEARNING_RATE,
              momentum=MOMENTUM, nesterovs_momentum=False, max_iter=1, shuffle=True, tol=0.0,
              n_iter_no_change=10**9, early_stopping=False, warm_start=True, random_state=0)

    def epoch():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "maximum iterations (1) reached"
            clf.fit(X, y)

    return epoch, clf.predict_proba, lambda: clf.coefs_[0].dtype.name


def _setup_sklearn(config, X, y, threads):
    from sklearn.neural_network import MLPClassifier

    return _mlp_classifier(MLPClassifier, config, X, y)


def _setup_fastbp_mlp(config, X, y, threads):
    from fastbp import MLPClassifier

    return _mlp_classifier(MLPClassifier, config, X, y)


# name: (label, the modules it needs, imported in this order before the memory baseline ("a+b");
# set-up)
# fastbp.Sequential, NumPy and PyTorch start from He-uniform weights; the two MLPClassifiers from
# scikit-learn's Glorot-uniform: losses are compared within these groups.
IMPLEMENTATIONS = {
    "fastbp": ("fastbp.Sequential", "fastbp", _setup_fastbp),
    "numpy": ("NumPy (hand-written)", "numpy", _setup_numpy),
    "torch": ("PyTorch (CPU)", "torch", _setup_torch),
    "jax": ("JAX (CPU, jit + scan)", "jax", _setup_jax),
    "sklearn": ("scikit-learn MLPClassifier", "sklearn.neural_network", _setup_sklearn),
    "fastbp-mlp": ("fastbp.MLPClassifier", "fastbp", _setup_fastbp_mlp),
    "fastbp-torch-first": ("fastbp.Sequential, PyTorch first", "torch+fastbp", _setup_fastbp),
    "fastbp-torch-after": ("fastbp.Sequential, PyTorch after", "fastbp+torch", _setup_fastbp),
    # And PyTorch's own speed with fastbp imported first: whatever fastbp's import does to the
    # process (once: OMP_WAIT_POLICY=PASSIVE for every OpenMP runtime loaded later) shows here.
    "torch-fastbp-first": ("PyTorch (CPU), fastbp first", "fastbp+torch", _setup_torch),
}
# Peers that are fastbp.Sequential in company: compared with fastbp.Sequential alone.
IN_COMPANY = ("fastbp-torch-first", "fastbp-torch-after")
SAME_START = (("fastbp", "numpy", "torch", "jax"), ("sklearn", "fastbp-mlp"))


# ----------------------------------------------------------------------------- measurements (child processes)


def _memory_mb(field):
    """VmRSS (resident now) or VmHWM (peak resident) of this process, in MB (Linux)."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise OSError(f"no {field} in /proc/self/status")


def _start_peak_window():
    """Reset the peak-RSS mark to the current RSS (Linux's clear_refs) and return it in MB,
    so that the next VmHWM is the peak of what runs from here, not of making the data."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    return _memory_mb("VmRSS")


def _import(modules, threads):
    """Import the modules of "a+b" in that order. PyTorch also runs one small op on ``threads``
    threads, so that its OpenMP runtime is loaded and its worker threads exist, as in a process
    that has used it."""
    import importlib

    if "jax" in modules.split("+") and threads == 1:
        # XLA's CPU client reads its flags once, when the backend starts: one thread for its
        # Eigen products, as the other libraries get one.
        os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_multi_thread_eigen=false"
                                   " intra_op_parallelism_threads=1").strip()
    for name in modules.split("+"):
        importlib.import_module(name)
        if name == "torch":
            import torch

            torch.set_num_threads(threads)
            torch.ones(1 << 20).exp_().sum()  # above PyTorch's grain size: a parallel region


def measure_training(impl, config_name, n_samples, repeats, threads, allocations=False):
    """Run in a fresh process: warm-up epoch, ``repeats`` timed epochs, loss, memory."""
    label, modules, setup = IMPLEMENTATIONS[impl]
    config = config_named(config_name)
    try:
        _import(modules, threads)
        X, y = make_data(config, n_samples)
        baseline = _start_peak_window()
        epoch, predict_proba, weights_dtype = setup(config, X, y, threads)
    except ImportError as err:
        return {"skipped": f"{label} not available ({err})"}
    except TypeError as err:  # e.g. an estimator that lacks one of scikit-learn's parameters
        return {"skipped": f"{label} could not be set up ({err})"}
    epoch()
    first_fit = _memory_mb("VmHWM")
    seconds = []
    clock = bench_clock()
    for _ in range(repeats):
        start = clock()
        epoch()
        seconds.append(clock() - start)
    p = np.asarray(predict_proba(X[:EVAL_SAMPLES]))
    loss = float(-np.mean(np.log(np.maximum(p[np.arange(len(p)), y[:EVAL_SAMPLES]], 1e-12))))
    result = {"seconds": statistics.median(seconds), "all_seconds": seconds, "loss": loss, "dtype": weights_dtype(),
              "baseline_mb": baseline, "peak_mb": _memory_mb("VmHWM"), "fit_mb": first_fit - baseline}
    if allocations and impl in ("fastbp", *IN_COMPANY):
        model = build_fastbp(config)
        fit_epoch(model, X[:2 * config.batch_size], y[:2 * config.batch_size], config)  # warm-up
        result["allocations_per_step"] = allocations_per_step(model, X, y, config,
                                                              min(8, len(X) // (2 * config.batch_size)))
    return result


def measure_sgemm(size, repeats):
    """Median GFLOP/s of a float32 (size x size) @ (size x size) NumPy product, after one warm-up."""
    return {"gflops": peak.sgemm_gflops(size, repeats, clock=bench_clock())}


def measure_fma_peak():
    """One core's float32 FMA peak (peak.fma_gflops at fastbp's vector width) and its clock.

    Both by the process's CPU time, whatever --clock says: one thread's peak is its rate while
    it holds a core, which the time slices other work takes must not dilute.

    Returns
    -------
    dict
        ``gflops`` (peak.fma_gflops), ``width`` (floats per vector), ``clock_ghz``
        (peak.clock_ghz; None off x86-64).
    """
    width = peak.default_width()
    return {"gflops": peak.fma_gflops(width), "width": width, "clock_ghz": peak.clock_ghz()}


def in_child(job, threads):
    """Run ``job`` (a dict naming a measure_* function and its keyword arguments) in a fresh
    interpreter whose thread variables are all ``threads``; returns its result dict."""
    env = dict(os.environ, **{v: str(threads) for v in THREAD_VARIABLES})
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)],
                          env=env, capture_output=True, text=True)
    if done.returncode:
        return {"skipped": f"failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}",
                "stderr": done.stderr}
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- report


def _versions():
    names = ["numpy", "numba", "llvmlite", "scipy", "torch", "jax", "jaxlib", "scikit-learn", "threadpoolctl",
             "fastbp"]
    found = {"python": platform.python_version()}
    for name in names:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def _blas_info():
    """The BLAS libraries loaded once NumPy and SciPy's BLAS are (threadpoolctl), one line each:
    which library, version, the kernel OpenBLAS chose ('architecture') and its threads."""
    import scipy.linalg.cython_blas  # noqa: F401  the BLAS numba's products call
    from threadpoolctl import threadpool_info

    lines = []
    for lib in threadpool_info():
        if lib.get("user_api") != "blas":
            continue
        lines.append(f"{lib.get('internal_api')} {lib.get('version')} kernel {lib.get('architecture', '?')}, "
                     f"{lib.get('num_threads')} threads ({Path(lib.get('filepath', '?')).name})")
    held = {v: os.environ[v] for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if v in os.environ}
    if held:
        lines.append("set: " + ", ".join(f"{k}={v}" for k, v in held.items()))
    return lines


def _blas_lines(threads):
    found = in_child({"measure": "_blas_info"}, threads)
    return found if isinstance(found, list) else [f"unknown ({found.get('skipped')})"]


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _fmt(value, spec):
    return "" if value is None else format(value, spec)


# The speed targets by kind of network. Narrow: every layer at most NARROW_WIDTH wide, where a
# step's arithmetic is small enough that the loop's own work decides its speed; these are held to
# a share of one core's FMA peak and a multiple of JAX. BLAS-bound: the networks whose products
# BLAS runs, held to a share of the same run's SGEMM peak. Every network: no slower than JAX,
# PyTorch or the NumPy loop.
NARROW_WIDTH = 64
NARROW_FMA_SHARE = 0.5
NARROW_JAX_RATIO = 3.0
BLAS_BOUND = ("mnist", "wide", "256-1024-256:64")
BLAS_BOUND_SGEMM_SHARE = 0.85


def _speed_target_rows(results, sgemm, fma):
    """The speed targets' rows (``NARROW_*``, ``BLAS_BOUND*``, every network against each peer):
    shares of the peaks in real flops, the peaks measured in the same run; one core's FMA peak,
    whatever the run's threads."""
    rows = []
    for config, by_impl in results.items():
        ours = by_impl.get("fastbp", {})
        if "samples_per_second" not in ours:
            continue
        narrow = max(config_named(config).layers) <= NARROW_WIDTH
        if narrow and fma:
            share = ours["real_gflops"] / fma
            rows.append((f"{config}: fastbp.Sequential >= {NARROW_FMA_SHARE:.0%} of one core's FMA peak (real flops)",
                         f"{share:.0%} ({ours['real_gflops']:.1f} of {fma:.1f} GFLOP/s)", share >= NARROW_FMA_SHARE))
        if config in BLAS_BOUND and sgemm:
            share = ours["real_gflops"] / sgemm
            rows.append((f"{config}: fastbp.Sequential >= {BLAS_BOUND_SGEMM_SHARE:.0%} of the SGEMM peak (real flops)",
                         f"{share:.0%} ({ours['real_gflops']:.1f} of {sgemm:.1f} GFLOP/s)",
                         share >= BLAS_BOUND_SGEMM_SHARE))
        for peer in ("jax", "torch", "numpy"):
            theirs = by_impl.get(peer, {}).get("samples_per_second")
            if not theirs:
                continue
            goal = NARROW_JAX_RATIO if narrow and peer == "jax" else 1.0
            value = ours["samples_per_second"] / theirs
            rows.append((f"{config}: fastbp.Sequential >= {goal:g}x {IMPLEMENTATIONS[peer][0]}", f"{value:.3g}x",
                         value >= goal))
    return rows


def _target_rows(results, threads_table, startup, sgemm, fma=None):
    """(target, measured, met) for every target that this run measured; ``fma`` is one core's
    FMA peak in GFLOP/s."""
    def sps(config, impl):
        r = results.get(config, {}).get(impl, {})
        return r.get("samples_per_second")

    def ratio(config, impl, peer):
        a, b = sps(config, impl), sps(config, peer)
        return a / b if a and b else None

    rows = []
    for config, peer, goal in (("small", "torch", 30), ("small", "numpy", 8), ("mnist", "torch", 1.2),
                               ("wide", "torch", 1.0), ("mnist", "fastbp-mlp/sklearn", 5),
                               ("small", "fastbp-mlp/sklearn", 10)):
        impl, peer = ("fastbp-mlp", "sklearn") if "/" in peer else ("fastbp", peer)
        value = ratio(config, impl, peer)
        if value is not None:
            rows.append((f"{config}: {IMPLEMENTATIONS[impl][0]} >= {goal}x {IMPLEMENTATIONS[peer][0]}",
                         f"{value:.3g}x", value >= goal))
    rows += _speed_target_rows(results, sgemm, fma)
    for config in results:
        for impl, alone in ((i, "fastbp") for i in IN_COMPANY), ("torch-fastbp-first", "torch"):
            value = ratio(config, impl, alone)
            if value is not None:
                rows.append((f"{config}: {IMPLEMENTATIONS[impl][0]} >= 0.9x {IMPLEMENTATIONS[alone][0]} alone",
                             f"{value:.3g}x", value >= 0.9))
    mnist = results.get("mnist", {}).get("fastbp", {})
    for config, r in results.items():
        for impl in ("fastbp", *IN_COMPANY):
            if "allocations_per_step" in r.get(impl, {}):
                n = r[impl]["allocations_per_step"]
                who = "" if impl == "fastbp" else f" ({IMPLEMENTATIONS[impl][0]})"
                rows.append((f"{config}: no allocation per training step{who}", f"{n:g} per step", n == 0))
    torch_mnist = results.get("mnist", {}).get("torch", {})
    if mnist.get("fit_mb") is not None and torch_mnist.get("fit_mb") is not None:
        rows.append(("mnist: fit memory no larger than PyTorch's",
                     f"{mnist['fit_mb']:.0f} MB vs {torch_mnist['fit_mb']:.0f} MB",
                     mnist["fit_mb"] <= torch_mnist["fit_mb"]))
    if startup:
        rows.append(("fresh process, warm cache: import + first digits epoch < 2 s",
                     f"{startup['digits_warm']:.2f} s (cold cache: {startup['digits_cold']:.1f} s)",
                     startup["digits_warm"] < 2.0))
    for config, (one, two) in threads_table.items():
        if one and two:
            goal = "never slower" if config == "small" else "faster"
            met = two >= one if config == "small" else two > one
            rows.append((f"{config}: 2 threads {goal} than 1", f"{two / one:.3g}x", met))
    return rows


def _fma_peak_line(meta):
    """The header's line on the FMA peak: per core, flops per cycle at the measured clock, and
    what the run's threads make of it."""
    fma, ghz = meta.get("fma_peak_gflops"), meta.get("clock_ghz")
    if not fma:
        return f"- FMA peak: not measured ({meta.get('fma_peak_skipped', 'no result')})"
    per_cycle = f" = {fma / ghz:.1f} flops per cycle at {ghz:.2f} GHz (measured clock)" if ghz else ""
    return (f"- FMA peak (one core, float32, {meta['fma_width']}-wide llvm.fma, {peak.CHAINS} chains in registers, "
            f"fastest of 7, CPU time): {fma:.1f} GFLOP/s{per_cycle}; x {_cores(meta)} thread(s) = "
            f"{fma * _cores(meta):.1f} GFLOP/s, the % FMA peak column's base")


def _cores(meta):
    """Cores the run's threads can occupy: the FMA peak scales with them, not beyond the CPUs."""
    return min(meta["threads"], os.cpu_count() or 1)


def write_report(out_dir, meta, results, threads_table, startup, notes):
    sgemm = meta["sgemm_gflops"]
    fma = meta.get("fma_peak_gflops")
    fma_all = fma * _cores(meta) if fma else None
    flags = meta.get("cpu_flags")
    lines = [
        "# fastbp side-by-side comparison", "",
        f"- date: {meta['date']}",
        f"- CPU: {meta['cpu']} ({os.cpu_count()} logical CPUs), vector flags: "
        f"{' '.join(flags) if flags else 'unknown'}; threads: {meta['threads']}",
        f"- load average at start / end: {meta['load_start']} / {meta['load_end']}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in meta["versions"].items()),
        f"- samples scale {meta['samples_scale']}, {meta['repeats']} timed epoch(s) after one warm-up "
        f"(median, {meta.get('clock', 'wall')} clock)"
        + (f" in each of {meta['rounds']} rounds, the peers alternating (median of all)" if meta.get("rounds", 1) > 1
           else "")
        + f", float32, SGD momentum {MOMENTUM}, lr {LEARNING_RATE}",
        "- BLAS: " + "; ".join(meta.get("blas", [])),
        f"- SGEMM peak (NumPy float32 {meta['sgemm_size']}^3, median): {_fmt(sgemm, '.1f')} GFLOP/s",
        _fma_peak_line(meta),
        "- GFLOP/s = 6 x weights x samples / epoch seconds (2 forward + 4 backward flops per weight); "
        "real GFLOP/s leaves out the first layer's dx, which nobody computes (Config.real_epoch_flops); "
        "the % columns divide real GFLOP/s by each peak",
        "- fit MB: growth of the peak resident set over the resident set once the library is imported "
        "and the data made, through the model's set-up and first epoch; peak RSS MB: the process's peak",
        "- fastbp.Sequential, NumPy and PyTorch start He-uniform, the MLPClassifiers Glorot-uniform "
        "(scikit-learn's): compare losses within each group", "",
        "| config | implementation | dtype | samples | samples/s | GFLOP/s | real GFLOP/s | % SGEMM peak "
        "| % FMA peak | fastbp.Sequential ÷ this | loss after | peak RSS MB | fit MB |",
        "|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for config, by_impl in results.items():
        base = by_impl.get("fastbp", {}).get("samples_per_second")
        for impl, r in by_impl.items():
            label = IMPLEMENTATIONS[impl][0]
            if "skipped" in r:
                lines.append(f"| {config} | {label} | | | skipped: {r['skipped']} | | | | | | | | |")
                continue
            speedup = base / r["samples_per_second"] if base and impl != "fastbp" else None
            lines.append(
                f"| {config} | {label} | {r['dtype']} | {r['n_samples']:,} | {r['samples_per_second']:,.0f} | {r['gflops']:.1f} "
                f"| {r['real_gflops']:.1f} | {_fmt(r['real_gflops'] / sgemm if sgemm else None, '.0%')} "
                f"| {_fmt(r['real_gflops'] / fma_all if fma_all else None, '.0%')} | {_fmt(speedup, '.2f')} "
                f"| {r['loss']:.3f} | {r['peak_mb']:.0f} | {r['fit_mb']:.0f} |")
    if threads_table:
        lines += ["", "fastbp.Sequential, samples/s by thread count (each in a fresh process):", "",
                  "| config | 1 thread | 2 threads | 2 ÷ 1 |", "|---|--:|--:|--:|"]
        for config, (one, two) in threads_table.items():
            lines.append(f"| {config} | {_fmt(one, ',.0f')} | {_fmt(two, ',.0f')} "
                         f"| {_fmt(two / one if one and two else None, '.2f')} |")
    if startup:
        lines += ["", "Start-up, each in a fresh process (NUMBA_CACHE_DIR a new temporary directory):", "",
                  "| figure | seconds |", "|---|--:|",
                  f"| core kernels, first calls, cold cache | {startup['kernels_cold']:.2f} |",
                  f"| first digits epoch (fit alone), cold cache | {startup['training_loop_cold']:.2f} |",
                  f"| whole process: import + digits + first epoch, cold cache | {startup['digits_cold']:.2f} |",
                  f"| whole process: import + digits + first epoch, warm cache | {startup['digits_warm']:.2f} |"]
    targets = _target_rows(results, threads_table, startup, sgemm, fma)
    if targets:
        lines += ["", "Targets:", "", "| target | measured | met |", "|---|--:|:-:|"]
        lines += [f"| {t} | {m} | {'yes' if ok else 'no'} |" for t, m, ok in targets]
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    text = "\n".join(lines) + "\n"
    (out_dir / "compare.md").write_text(text)
    (out_dir / "compare.json").write_text(json.dumps(
        {"meta": meta, "results": results, "threads": threads_table, "startup": startup}, indent=1))
    return text


def plot(out_dir, results, meta):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib not installed: no compare.png"
    configs = list(results)
    impls = [i for i in IMPLEMENTATIONS if any("samples_per_second" in results[c].get(i, {}) for c in configs)]
    width = 0.8 / max(len(impls), 1)
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for k, impl in enumerate(impls):
        values = [results[c].get(impl, {}).get("samples_per_second", 0) for c in configs]
        ax.bar(np.arange(len(configs)) + (k - (len(impls) - 1) / 2) * width, values, width,
               label=IMPLEMENTATIONS[impl][0])
    ax.set_xticks(np.arange(len(configs)), configs)
    ax.set_yscale("log")
    ax.set_ylabel("training samples per second (log)")
    ax.set_title(f"One epoch, float32, SGD momentum {MOMENTUM}, {meta['threads']} threads\n"
                 f"{meta['cpu']}, {meta['date'][:10]}", fontsize="medium")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(out_dir / "compare.png", dpi=120)
    plt.close(fig)
    return None


# ----------------------------------------------------------------------------- main


def train(impl, config_name, n_samples, repeats, threads, allocations=False):
    """measure_training in a fresh process, with samples/s and GFLOP/s added; prints one line."""
    r = in_child({"measure": "measure_training", "impl": impl, "config_name": config_name,
                  "n_samples": n_samples, "repeats": repeats, "threads": threads, "allocations": allocations},
                 threads)
    label = f"{config_name:6} {IMPLEMENTATIONS[impl][0]:33} {threads} thread(s)"
    if "seconds" not in r:
        print(f"{label} skipped: {r['skipped']}")
        return {"skipped": r["skipped"]}
    r.update(n_samples=n_samples, samples_per_second=n_samples / r["seconds"])
    r.update(_rates(config_name, r))
    print(f"{label} {r['samples_per_second']:>12,.0f} samples/s {r['gflops']:7.1f} GFLOP/s "
          f"({r['real_gflops']:.1f} real)  "
          f"loss {r['loss']:.3f}  fit {r['fit_mb']:.0f} MB")
    return r


def _rates(config_name, r):
    """GFLOP/s, nominal and real (configs.Config), of a result with n_samples and seconds."""
    config = config_named(config_name)
    return {"gflops": config.epoch_flops(r["n_samples"]) / r["seconds"] / 1e9,
            "real_gflops": config.real_epoch_flops(r["n_samples"]) / r["seconds"] / 1e9}


def pooled(runs, config_name):
    """One result from the same implementation's runs in alternating rounds: the median of all
    their timed epochs; memory, loss and allocations from the first round."""
    if any("seconds" not in r for r in runs):
        return next(r for r in runs if "seconds" not in r)
    r = dict(runs[0])
    r["all_seconds"] = [t for run in runs for t in run["all_seconds"]]
    r["round_seconds"] = [run["seconds"] for run in runs]
    r["seconds"] = statistics.median(r["all_seconds"])
    r["samples_per_second"] = r["n_samples"] / r["seconds"]
    r.update(_rates(config_name, r))
    return r


def round_ratios(by_impl):
    """fastbp.Sequential's speed over each peer's, round by round: {peer: [ratio, ...]}."""
    base = by_impl.get("fastbp", {}).get("round_seconds")
    if not base:
        return {}
    return {impl: [s / b for s, b in zip(r["round_seconds"], base)]
            for impl, r in by_impl.items() if impl != "fastbp" and "round_seconds" in r}


def _positive(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1; got {value}")
    return value


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS),
                        help="comma-separated, from %(default)s, network specs such as 64-128-10:32 "
                             "(sizes:batch), and 'sweep' for configs.SWEEP")
    parser.add_argument("--peers", default=",".join(IMPLEMENTATIONS), help="comma-separated, from %(default)s")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed epochs after the warm-up (median)")
    parser.add_argument("--rounds", type=_positive, default=1,
                        help="times the peers of a configuration take turns, a fresh process each (pooled)")
    parser.add_argument("--threads", type=_positive, default=os.cpu_count(), help="threads for every library")
    parser.add_argument("--samples-scale", type=float, default=1.0,
                        help="fraction of each configuration's samples (for quick runs)")
    parser.add_argument("--sgemm-size", type=int, default=peak.SGEMM_SIZE,
                        help="rows and columns of the SGEMM peak's operands")
    parser.add_argument("--no-threads", action="store_true", help="skip fastbp's 1-vs-2 thread runs")
    parser.add_argument("--no-startup", action="store_true", help="skip the cold/warm start-up runs")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="time epochs by the wall clock, or by the process's CPU time (with --threads 1, "
                             "on a machine shared with other work)")
    parser.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parent / "results")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(globals()[job.pop("measure")](**job)))
        return

    os.environ[CLOCK_VARIABLE] = args.clock  # read by the children
    configs = [c for name in args.configs.split(",") for c in (SWEEP if name == "sweep" else (name,))]
    peers = args.peers.split(",")
    unknown = set(peers) - set(IMPLEMENTATIONS)
    if unknown:
        parser.error(f"unknown peers {sorted(unknown)}; expected some of {list(IMPLEMENTATIONS)}")
    try:
        config_of = {name: config_named(name) for name in configs}
    except ValueError as err:
        parser.error(str(err))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    meta = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "cpu": _cpu_model(),
            "cpu_flags": peak.cpu_vector_flags(),
            "threads": args.threads, "load_start": " ".join(f"{x:.2f}" for x in os.getloadavg()),
            "versions": _versions(), "samples_scale": args.samples_scale, "repeats": args.repeats,
            "rounds": args.rounds,
            "sgemm_size": args.sgemm_size, "clock": args.clock, "blas": _blas_lines(args.threads)}
    print(f"{meta['cpu']} ({' '.join(meta['cpu_flags'])}), {args.threads} threads, "
          f"load average {meta['load_start']}")
    print("BLAS: " + "; ".join(meta["blas"]))
    print(", ".join(f"{k} {v}" for k, v in meta["versions"].items()))
    notes = []

    n_samples = {name: max(2 * c.batch_size, round(c.n_samples * args.samples_scale)) for name, c in config_of.items()}

    # Fill numba's cache first, so that no measured process pays for compiling.
    for impl in ("fastbp", "fastbp-mlp"):
        if impl in peers:
            in_child({"measure": "measure_training", "impl": impl, "config_name": configs[0],
                      "n_samples": 2 * config_of[configs[0]].batch_size, "repeats": 1, "threads": args.threads},
                     args.threads)

    sgemm = in_child({"measure": "measure_sgemm", "size": args.sgemm_size, "repeats": max(3, args.repeats)},
                     args.threads)
    meta["sgemm_gflops"] = sgemm.get("gflops")
    print(f"SGEMM peak: {_fmt(meta['sgemm_gflops'], '.1f')} GFLOP/s")
    fma = in_child({"measure": "measure_fma_peak"}, 1)  # one core, one thread
    meta.update(fma_peak_gflops=fma.get("gflops"), fma_width=fma.get("width"), clock_ghz=fma.get("clock_ghz"))
    if "skipped" in fma:
        meta["fma_peak_skipped"] = fma["skipped"]
    print(_fma_peak_line(meta)[2:])

    results = {}
    for name in configs:
        rounds = [{impl: train(impl, name, n_samples[name], args.repeats, args.threads, allocations=not turn)
                   for impl in peers} for turn in range(args.rounds)]
        results[name] = {impl: pooled([run[impl] for run in rounds], name) for impl in peers}
        if args.rounds > 1:
            for impl, ratios in round_ratios(results[name]).items():
                notes.append(f"{name}: fastbp.Sequential ÷ {IMPLEMENTATIONS[impl][0]} by round: "
                             + ", ".join(f"{x:.2f}" for x in ratios))
    for name, by_impl in results.items():
        for group in SAME_START:
            losses = {i: by_impl[i]["loss"] for i in group if "loss" in by_impl.get(i, {})}
            if len(losses) > 1 and max(losses.values()) > 1.5 * min(losses.values()):
                notes.append(f"{name}: losses after the timed epochs differ by more than 1.5x between peers "
                             f"that start alike ({', '.join(f'{i} {v:.3f}' for i, v in losses.items())}): "
                             f"check that they learn the same problem")

    threads_table = {}
    if not args.no_threads and "fastbp" in peers:
        for name in configs:
            threads_table[name] = [
                (results[name]["fastbp"] if t == args.threads else
                 train("fastbp", name, n_samples[name], args.repeats, t)).get("samples_per_second")
                for t in (1, 2)]

    startup = None
    if not args.no_startup:
        from benchmarks.bench_compile import startup_figures

        startup = startup_figures()
        print("start-up (s): " + ", ".join(f"{k} {v:.2f}" for k, v in startup.items()))

    meta["load_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    problem = plot(args.out_dir, results, meta)
    if problem:
        notes.append(problem)
    print()
    print(write_report(args.out_dir, meta, results, threads_table, startup, notes))
    print(f"written: {args.out_dir / 'compare.md'}, compare.json, compare.png")


if __name__ == "__main__":
    main()
