"""Where a training step's CPU time goes, function by function, measured by Linux ``perf``.

    python benchmarks/perf_step.py --config small --seconds 15
    python benchmarks/perf_step.py --config mnist --top 40 --data mnist.perf

``profile_step.py`` times each kernel alone and calls the rest of the step "overhead". This
samples the real loop instead: it compiles the configuration's model in a fresh kernel cache,
trains it for ``--seconds`` with ``perf record`` attached to this process, and prints the
share of the samples in each function: fastbp's kernels and loop levels by name, next to
OpenBLAS's, libm's and Python's.

perf cannot name numba's functions on its own: they are machine code in memory that no file
describes. After training, this writes ``/tmp/perf-<pid>.map`` (perf's format for such code: start,
size, name per line) from the LLVM modules of every function numba compiled in the process.
Functions loaded from numba's cache have no module to read, hence the fresh cache (the compile,
about a minute, comes before perf starts). The map stays, so ``perf report -i <data>`` works
afterwards too. Needs ``perf`` on the PATH and permission to record this process.
Run with one thread per library (NUMBA_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1) on a shared machine.
"""
import argparse
import atexit
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.configs import CONFIGS, build_fastbp, config_named, fit_epoch, make_data  # noqa: E402

_NAME_PART = re.compile(r"(\d+)")


def readable(symbol):
    """'fastbp.kernels.cpu.losses.softmax_cross_entropy_forward' for numba's mangled symbol
    ``_ZN6fastbp7kernels3cpu6losses29softmax_cross_entropy_forwardB2v1B...E...``; a prefix
    ``cfunc.`` or a ``cpython`` wrapper is kept in front; other symbols come back unchanged."""
    prefix = ""
    if symbol.startswith("cfunc."):
        prefix, symbol = "cfunc ", symbol[len("cfunc."):]
    if not symbol.startswith("_ZN"):
        return prefix + symbol
    rest, parts = symbol[3:], []
    while rest and rest[0].isdigit():
        digits = _NAME_PART.match(rest).group(1)
        size = int(digits)
        parts.append(rest[len(digits):len(digits) + size])
        rest = rest[len(digits) + size:]
    if parts and parts[0] == "cpython":
        prefix, parts = prefix + "cpython ", parts[1:]
    return prefix + ".".join(parts) if parts else prefix + symbol


def write_perf_map(path=None):
    """Write perf's map of every function numba has compiled in this process; return its path.

    Each function's size is the distance to the next function's start (LLVM does not say), at
    most 1 MiB. Functions loaded from a cache, without an LLVM module, are left out.
    """
    import gc
    import weakref

    from numba.core.dispatcher import Dispatcher

    starts = {}
    for obj in gc.get_objects():
        # isinstance on a proxy asks its referent, and raises where that is gone: type() does not.
        if type(obj) in (weakref.ProxyType, weakref.CallableProxyType) or not isinstance(obj, Dispatcher):
            continue
        for result in list(obj.overloads.values()):
            library = result.library
            module = getattr(library, "_final_module", None)
            if module is None:
                continue
            for function in module.functions:
                if function.is_declaration:
                    continue
                try:
                    address = library.get_pointer_to_function(function.name)
                except Exception:  # noqa: BLE001 - a symbol the JIT did not emit
                    continue
                if address:
                    starts[address] = readable(function.name)
    path = path or f"/tmp/perf-{os.getpid()}.map"
    ordered = sorted(starts.items())
    with open(path, "w") as out:
        for (start, name), (following, _) in zip(ordered, ordered[1:] + [(ordered[-1][0] + 4096, "")]):
            out.write(f"{start:x} {min(following - start, 1 << 20):x} {name}\n")
    return path


def report(data, top):
    """The top functions of ``perf report`` on ``data``, as (percent, name) pairs."""
    text = subprocess.run(["perf", "report", "-i", data, "--no-children", "--sort", "sym", "--stdio"],
                          capture_output=True, text=True, check=True).stdout
    rows = []
    for line in text.splitlines():
        match = re.match(r"\s*([\d.]+)%\s+\[[.k]\]\s+(.*)", line)
        if match:
            rows.append((float(match.group(1)), match.group(2).strip()))
    return rows[:top]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default="small",
                        help=f"one of {sorted(CONFIGS)}, or a network spec such as 64-128-10:32 (sizes:batch)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--data", default=None, help="where perf writes its samples (default: a temporary file)")
    args = parser.parse_args(argv)
    try:
        config = config_named(args.config)
    except ValueError as err:
        parser.error(str(err))
    if shutil.which("perf") is None:
        raise SystemExit("perf_step.py needs Linux perf on the PATH (e.g. the linux-tools package)")
    # A fresh cache, so that every function is compiled here and has an LLVM module to name it;
    # removed at exit.
    cache = tempfile.mkdtemp(prefix="fastbp-perf-cache-")
    atexit.register(shutil.rmtree, cache, ignore_errors=True)
    os.environ["FASTBP_CACHE_DIR"] = cache
    # ...and every function compiled in this process: on a cold cache a fit has worker processes
    # compile the dense kernels (fastbp/backends/_warm.py), which this process then loads from the
    # cache, with no module to name them. _warm starts none where this process has one CPU.
    from fastbp.backends import _warm

    _warm.usable_cpus = lambda: 1
    model = build_fastbp(config, args.dtype)
    X, y = make_data(config)
    X = X.astype(args.dtype)
    print(f"compiling {args.config} ({args.dtype}) ...", file=sys.stderr, flush=True)
    fit_epoch(model, X[:4 * config.batch_size], y[:4 * config.batch_size], config)
    data = args.data or tempfile.mktemp(prefix="fastbp-", suffix=".perf")
    recorder = subprocess.Popen(["perf", "record", "-q", "-o", data, "-p", str(os.getpid())])
    time.sleep(1.0)  # perf attaches
    start, samples = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        fit_epoch(model, X, y, config)
        samples += len(X)
    elapsed = time.perf_counter() - start
    recorder.send_signal(signal.SIGINT)
    recorder.wait()
    path = write_perf_map()
    step_us = elapsed / (samples / config.batch_size) * 1e6
    print(f"{args.config}, {args.dtype}: {samples / elapsed:,.0f} samples/s, {step_us:.2f} us a step "
          f"(perf's own cost included); samples in {data}, names in {path}")
    print("| share | function |\n|--:|---|")
    for percent, name in report(data, args.top):
        print(f"| {percent:.2f}% | {name[:100]} |")


if __name__ == "__main__":
    main()
