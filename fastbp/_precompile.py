"""Compile ahead, into the on-disk cache, what a user's fits can reach: ``fastbp compile``.

A container image or a CI cache built with ``RUN fastbp compile`` starts its first fit warm.
What a fit compiles is a set of separate units (``backends/_kernel_tables.py``): the loop's levels
(``train_batches``, ``evaluate_batches``, ``predict_batches``), one set per dtype, and the
kernels of its tables: the dense layers' and dropout's for every network, each loss's and each
optimizer's, and the activation and norm layers', one per activation code. ``units`` lists
them for a choice of dtypes, losses, optimizers, norm kinds and activations; ``precompile``
deals them to worker processes (numba compiles one function at a time per process) and reports
each one done.

With ``cpu`` (a CPU name of LLVM's, such as ``x86-64-v3``) the code is compiled for that CPU
rather than for this one: the workers run with ``NUMBA_CPU_NAME`` set to it and
``NUMBA_CPU_FEATURES`` empty (the name's own features), which numba records in each cache
entry's key. A process that sets the same two variables loads those entries on any machine that
runs that CPU's instructions, whatever its own CPU is called; one that does not compiles for its
own CPU as usual.
"""
import json
import subprocess
import sys

import numpy as np

from .kernels import _cache
from .kernels import registry
from .kernels.cpu import dense

DTYPES = ("float32", "float64")
LOSSES = {loss.name: loss.code for loss in registry.LOSS_TABLE}
OPTIMIZERS = {"sgd": registry.OPT_SGD, "adam": registry.OPT_ADAM, "rmsprop": registry.OPT_RMSPROP,
              "adagrad": registry.OPT_ADAGRAD}
NORMS = ("batchnorm", "layernorm")
ACTIVATIONS = tuple(registry.ACTIVATIONS)
_NORM_TABLES = {"batchnorm": "batchnorm_ops", "layernorm": "layernorm_ops"}

def units(dtypes=DTYPES, losses=tuple(LOSSES), optimizers=tuple(OPTIMIZERS), norms=NORMS, activations=ACTIVATIONS):
    """The compile units for these choices: ``("kernel", table, field, dtype, loss, optimizer, code)``
    and ``("loop", dtype)`` tuples (codes of ``kernels.registry``), each compiled once.
    ``activations`` (names) are those the activation and norm layers' kernels are compiled for,
    one kernel per code (``_kernel_tables.BY_CODE``)."""
    from .backends import _kernel_tables

    found = []
    for dtype in dtypes:
        found += [("kernel", "kernels", field, dtype, None, None, None)
                  for field in ("dense_forward", "dense_backward")]
        # A dense layer's per-code kernels, for every activation the dense kernels do not apply
        # (``activations`` chooses the activation and norm layers' codes: a Dense layer's
        # activation needs no choosing, its kernels are small).
        found += [("kernel", "kernels", field, dtype, None, None, code)
                  for field in ("dense_act_apply", "dense_act_grad")
                  for code in sorted(registry.OUTPUT_DERIVABLE - set(dense.TABLE_FUSED))]
        for loss in losses:
            found += [("kernel", "kernels", field, dtype, LOSSES[loss], None, None)
                      for field in ("loss_forward", "loss_backward", "stats")]
        found += [("kernel", "kernels", "update", dtype, None, OPTIMIZERS[name], None) for name in optimizers]
        tables = ["activation_ops", "dropout_ops"] + [_NORM_TABLES[norm] for norm in norms]
        for table in tables:
            codes = [registry.ACTIVATIONS[name] for name in activations]
            found += [("kernel", table, field, dtype, None, None, code)
                      for field in _kernel_tables.fields(table)
                      for code in _kernel_tables.field_codes(table, field, codes)]
        found.append(("loop", dtype))
    return found


def describe(unit):
    """A unit as the progress bar names it."""
    if unit[0] == "loop":
        return f"training loop ({unit[1]})"
    _, table, field, dtype, loss, optimizer, code = unit
    if code is not None:
        name = registry.ACTIVATION_NAMES[code]
    else:
        names = {code: name for name, code in LOSSES.items()} if loss is not None else \
            {code: name for name, code in OPTIMIZERS.items()}
        name = names.get(loss if loss is not None else optimizer)
    return f"{table.replace('_ops', '')}.{field}{f' ({name})' if name else ''} ({dtype})"


def _cost(unit):
    """A unit's single-core seconds (``_kernel_tables.COMPILE_SECONDS``): the loop's levels with
    ``predict_batches``, or one kernel."""
    from .backends import _kernel_tables

    if unit[0] == "loop":
        return _kernel_tables.LOOP_SECONDS
    return getattr(_kernel_tables.COMPILE_SECONDS[unit[1]], unit[2])


def deal(found, n_workers):
    """``found`` dealt to ``n_workers`` lists, longest first to the least loaded (LPT)."""
    shares = [[] for _ in range(max(1, n_workers))]
    loads = [0.0] * len(shares)
    for unit in sorted(found, key=_cost, reverse=True):
        k = loads.index(min(loads))
        shares[k].append(unit)
        loads[k] += _cost(unit)
    return [share for share in shares if share]


def cpu_environment(cpu):
    """The environment variables that make numba compile for ``cpu`` (None: this machine's)."""
    return {} if cpu is None else {"NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ""}


def precompile(dtypes=DTYPES, losses=tuple(LOSSES), optimizers=tuple(OPTIMIZERS), norms=NORMS, jobs=None,
               cpu=None, progress=None, activations=ACTIVATIONS):
    """Compile the units of ``units(...)`` into the cache folder, in ``jobs`` worker processes.

    ``progress(unit)`` is called as each unit is done. Returns the number of units. Raises
    RuntimeError naming the units of a worker that failed, and where nothing can be cached.
    """
    if _cache.FOLDER is None or not _cache.WRITABLE:
        raise RuntimeError(f"fastbp compile: the compiled-kernel cache cannot be written "
                           f"({_cache.OFF_REASON or f'{_cache.FOLDER} is read-only'})")
    from .backends import _warm

    found = units(dtypes, losses, optimizers, norms, activations)
    jobs = jobs or _warm.usable_cpus()
    env = dict(_warm.child_env(), **cpu_environment(cpu))
    procs = []
    try:
        for share in deal(found, jobs):
            procs.append((subprocess.Popen(
                _warm.worker_command("from fastbp import _precompile; _precompile.worker(sys.argv[1])",
                                     json.dumps(share)), env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True), share))
        _follow(procs, progress)
    except BaseException:
        _warm.stop([proc for proc, _ in procs])
        raise
    return len(found)


def _follow(procs, progress):
    """Report each unit a worker prints as done; raise for a worker that failed."""
    import selectors

    selector = selectors.DefaultSelector()
    for proc, share in procs:
        selector.register(proc.stdout, selectors.EVENT_READ, (proc, share))
    open_streams = len(procs)
    while open_streams:
        for key, _ in selector.select():
            proc, share = key.data
            line = key.fileobj.readline()
            if not line:
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            if line.startswith("done ") and progress is not None:
                progress(tuple(_as_unit(json.loads(line[5:]))))
    failed = []
    for proc, share in procs:
        if proc.wait() != 0:
            failed.append((share, proc.stderr.read().strip().splitlines()[-1:] or ["(no message)"]))
    if failed:
        raise RuntimeError("fastbp compile: a worker failed on " + "; ".join(
            f"{', '.join(describe(_as_unit(u)) for u in share)}: {why[0]}" for share, why in failed))


def _as_unit(unit):
    return tuple(unit)


def worker(share):
    """A worker: compile each unit of the JSON list ``share``, printing ``done <unit>`` after each."""
    from .backends import _warm

    _warm.die_with_parent()
    for unit in json.loads(share):
        if unit[0] == "kernel":
            from .backends import _kernel_tables

            _, table, field, dtype, loss, optimizer, code = unit
            _kernel_tables.compile_entry(table, field, np.dtype(dtype), loss, optimizer, code)
        else:
            compile_loops(np.dtype(unit[1]))
        print("done " + json.dumps(unit), flush=True)


def compile_loops(dtype):
    """Compile (or load) the loop's levels for ``dtype``, against kernel tables of zero addresses
    (the tables' types are all the loop needs, and one loop serves every network)."""
    from . import _fit, layers
    from .backends import _kernel_tables, cpu
    from .model import Sequential

    model = Sequential([layers.Dense(4, 4), layers.Dense(4, 2)], dtype=dtype, seed=0)
    model.compile("softmax_cross_entropy", "sgd")
    X = np.zeros((8, 4), dtype=dtype)
    X, data = _fit.prepare(model, X, np.arange(8) % 2, None, ("X", "y", "sample_weight"))
    lowered = model.lowered()
    model.optimizer.init_state(model.theta.size, model.dtype)
    trainer = cpu.Trainer(model, lowered, X, data, 4, 0)
    net = _kernel_tables.placeholder_net(lowered.net)
    trainer._compile_loop(net)
    cpu.compile_outputs(model, lowered, net, X, 4)
