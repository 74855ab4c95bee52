"""Data-parallel training over MPI against one process with the same cores, per configuration.

    python benchmarks/mpi_scaling.py                          # every configuration, 2 ranks
    python benchmarks/mpi_scaling.py --configs small --repeats 3 --samples-scale 0.25
    python benchmarks/mpi_scaling.py --model                  # the scaling model's table only

For each configuration of configs.py (float32, the configuration's global batch, SGD with
momentum, as compare.py trains them), two fresh runs: ``mpiexec -n R`` with one thread per
rank (``fit(..., comm=MPI.COMM_WORLD)``), and one process with R threads (``fit``). Thread
variables are set before any import, as in compare.py. Each run trains one warm-up epoch (not
timed: it compiles or loads the cache), then --repeats epochs; the median of fit's own
samples_per_second is reported (over MPI the slowest rank's epoch time, which fit agrees on).

``--model`` prints the scaling model of BENCHMARKS.md: the bytes every step allreduces (the
flat gradient, parameters x 4 bytes in float32, plus one flag element) and a ring allreduce's
time on N machines, 2 (N - 1) / N x bytes / bandwidth + 2 (N - 1) x latency.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository, for benchmarks.configs
from benchmarks.configs import CONFIGS, build_fastbp, make_data  # noqa: E402

THREAD_VARIABLES = ("NUMBA_NUM_THREADS", "OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
LATENCY_S = 5e-6  # one message's latency on a cluster network (TCP is nearer 20-50 us)


def _child(name, scale, repeats, distributed):
    config = CONFIGS[name]
    X, y = make_data(config, max(config.batch_size, int(config.n_samples * scale)))
    comm = None
    if distributed:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    model = build_fastbp(config)
    rates = []
    for epoch in range(repeats + 1):
        more = {"comm": comm} if comm is not None else {}
        history = model.fit(X, y, epochs=1, batch_size=config.batch_size, verbose=0, seed=epoch, **more)
        if epoch:
            rates.append(history.history["samples_per_second"][-1])
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps({"rates": rates}), flush=True)


def _run(name, scale, repeats, ranks, distributed):
    env = dict(os.environ)
    for var in THREAD_VARIABLES:
        env[var] = "1" if distributed else str(ranks)
    cmd = [sys.executable, __file__, "--child", name, "--samples-scale", str(scale), "--repeats", str(repeats)]
    if distributed:
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable)) or shutil.which("mpiexec")
        cmd = [mpiexec, "-n", str(ranks)] + cmd + ["--distributed"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = [l for l in out.splitlines() if l.startswith("RESULT ")][-1]
    return statistics.median(json.loads(line[7:])["rates"])


def scaling_model(machines=(2, 4, 8, 16, 64), bandwidths=(10, 100)):
    """Markdown: per configuration, allreduced bytes per step and ring-allreduce time on N machines."""
    lines = ["| config | parameters | bytes per step (float32) | " + " | ".join(
        f"{g} Gbit/s, N={n} (ms)" for g in bandwidths for n in machines) + " |",
        "|---|---:|---:|" + "---:|" * (len(machines) * len(bandwidths))]
    for config in CONFIGS.values():
        size = 4 * (config.n_parameters + 1)
        cells = []
        for g in bandwidths:
            for n in machines:
                seconds = 2 * (n - 1) / n * size / (g * 1e9 / 8) + 2 * (n - 1) * LATENCY_S
                cells.append(f"{seconds * 1e3:.3f}")
        lines.append(f"| {config.name} | {config.n_parameters:,} | {size / 2**20:.2f} MiB | "
                     + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--samples-scale", type=float, default=1.0)
    parser.add_argument("--model", action="store_true", help="print the scaling model only")
    parser.add_argument("--single-only", action="store_true", help="only the one-process runs")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return _child(args.child, args.samples_scale, args.repeats, args.distributed)
    if args.model:
        print(scaling_model())
        return None
    r = args.ranks
    print(f"| config | 1 process, {r} threads (samples/s) | mpiexec -n {r}, 1 thread each (samples/s) | ratio |")
    print("|---|---:|---:|---:|")
    for name in args.configs.split(","):
        single = _run(name, args.samples_scale, args.repeats, r, False)
        if args.single_only:
            print(f"| {name} | {single:,.0f} | | |", flush=True)
            continue
        mpi = _run(name, args.samples_scale, args.repeats, r, True)
        print(f"| {name} | {single:,.0f} | {mpi:,.0f} | {mpi / single:.2f} |", flush=True)
    return None


if __name__ == "__main__":
    main()
