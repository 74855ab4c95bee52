"""The kernel tables the CPU loop calls by address, and their compile ahead of the loop.

The loop's levels (``train_batches``, ``batch_gradient``, ``forward``, ``backward``,
...) call the kernels through their addresses, not directly: numba links every function a
compiled function calls directly into its own module and optimizes and emits the whole again,
so each level would compile every kernel under it once more. ``with_kernels`` puts the kernel
tables of ``TABLES`` into the ``Network``: ``kernels`` (dense layers, loss, optimizer, metrics)
and the tables of the activation, dropout and norm ops, every one whatever the network (zero
addresses for an op kind it lacks: one compiled loop per dtype serves every network). A table
holds int64 addresses (``kernel_table``: each kernel compiled, or loaded from the cache, for the
signature the loop calls it with, once per process; the signature follows from the ``ArgSpec``
written beside the kernel, ``SPECS``), so numba's dispatcher types the loop's
arguments as quickly as any; ``kcall(table, "name", (args))`` calls one with numba's calling
convention, and refuses at compile time any argument types other than the signature the table
was made for. The calls cost what a direct call costs. A table holds the kernels of the model's
own loss and optimizer (a dict entry of ``TABLES``, one kernel per code), so a new loss or
optimizer compiles its own kernels and nothing else (docs/performance-log.md, 2026-11-30,
d67e485). The activation and norm ops' kernels are compiled for one activation code each
(``BY_CODE``), their addresses in ``Network.code_kernels``, picked by the op's code at run time
(``kcall_code``): a network compiles the codes it has. The norm ops' kernels
(``_norm_ops``) cut the views of their statistics themselves, so that the loop's norm branches
are one call each.

A dense layer is two kernels of ``kernels`` (``dense.dense_table_forward`` and
``dense_table_backward``: the products with the ReLU and identity passes, which every network
has) and, for a layer of another activation, that code's kernels beside them (``dense_act_apply``
and ``dense_act_grad``, fields of ``BY_CODE``): the fused kernels of every code compiled five
activation passes a ReLU network never runs, 1.6 s of the backward's 4.5 s on one core. The
tables hold each kernel compiled without numba's Python and C wrappers (``_jit.compiled_only``):
the loop calls it by address, never from Python.

The kernels and the levels are therefore separate compile units, and on a cold cache they
compile in parallel: ``with_kernels(..., ahead=...)`` has worker processes compile the heaviest
kernels into the on-disk cache (``_warm``) while this process compiles the loop against tables of
placeholder addresses (a table's type does not depend on its values) and the other kernels, then
loads the workers' kernels from the cache (docs/performance-log.md, 2026-11-30, 5473674).
``fastbp compile`` (``fastbp/_precompile.py``) compiles the same units ahead.
"""
import functools
from collections import namedtuple

import numpy as np

from ..kernels import registry
from ..kernels._checks import numba_signature
from ..kernels._jit import compiled_only, jit
from ..kernels.cpu import activations, dense, dropout, losses, optim
from . import _norm_ops, _warm
from ._metrics import STATS, STATS_SPEC
from ._views import kernel_call_by_code_intrinsic, kernel_call_intrinsic


@jit(refcounts=False, callers="compiled")
def _not_in_table(a0, a1, a2, a3, a4, a5, a6, a7):
    """The entry for a loss or update kernel of a table made without that code (the loss's and the
    update's signatures have eight arguments, the stats' seven)."""
    raise RuntimeError("fastbp: this kernel table was made without a loss or an optimizer (with_kernels), "
                       "and the loop called that kernel")


@jit(refcounts=False, callers="compiled")
def _stats_not_in_table(a0, a1, a2, a3, a4, a5, a6):
    _not_in_table(a0, a1, a2, a3, a4, a5, a6, a6)


# The kernels the loop's levels call through their addresses: ``Network.kernels`` always, the
# tables of the other op kinds where the network has such ops (``with_kernels``). A dict holds one
# kernel per code: the table gets the model's loss's (``loss_forward``, ``loss_backward``,
# ``stats``) and its optimizer's (``update``), so that a cold start compiles those alone.
# ``dense_act_apply`` and ``dense_act_grad`` are the per-code kernels of a dense layer whose
# activation the dense kernels do not apply themselves (``dense.TABLE_FUSED``): fields of ``BY_CODE``.
Kernels = namedtuple("Kernels", "dense_forward dense_backward loss_forward loss_backward update stats "
                                "dense_act_apply dense_act_grad")
ActivationKernels = namedtuple("ActivationKernels", "forward backward")
DropoutKernels = namedtuple("DropoutKernels", "forward backward inference")
# BatchNorm's and LayerNorm's tables are of one type, so that the loop calls either at one site;
# LayerNorm has no running statistics (None: no kernel, a zero address).
NormKernels = namedtuple("NormKernels", "forward backward update_running")
TABLES = {
    "kernels": Kernels(dense.dense_table_forward, dense.dense_table_backward, losses.CODE_FORWARD,
                       losses.CODE_BACKWARD, optim.CODE_UPDATES, STATS, dense.dense_act_apply_for,
                       dense.dense_act_grad_for),
    "activation_ops": ActivationKernels(activations.activation_forward_for, activations.activation_backward_for),
    "dropout_ops": DropoutKernels(dropout.dropout_forward_from, dropout.dropout_backward_serial,
                                  dropout.dropout_inference),
    "batchnorm_ops": NormKernels(_norm_ops.batchnorm_forward_for, _norm_ops.batchnorm_backward_for,
                                 _norm_ops.batchnorm_update_running),
    "layernorm_ops": NormKernels(_norm_ops.layernorm_forward_for, _norm_ops.layernorm_backward_for, None),
}
# Which code picks the kernel of a dict entry of ``Kernels``.
_CHOSEN_BY = Kernels(None, None, "loss", "loss", "optimizer", "loss", None, None)
# The (table, field)s of kernels compiled for one activation code each. The field of ``TABLES``
# holds a kernel factory (``activations.activation_forward_for``, ``_norm_ops.batchnorm_forward_for``);
# in a table of addresses it holds its row (``CODE_ROWS``) of ``Network.code_kernels``, a
# (len(BY_CODE), N_CODES) array of addresses, one column per code (zero for the codes the network
# does not have), which ``kcall_code`` picks by the op's code at run time. A kernel of every code
# took 3x as long to compile as one code's. One array for all of them, not a tuple of addresses
# per field: numba's front end spends time on every member of the structs the loop passes along,
# and 72 more members in ``Network`` cost 1.5-2 s of every cold start.
BY_CODE = (("activation_ops", "forward"), ("activation_ops", "backward"), ("batchnorm_ops", "forward"),
           ("batchnorm_ops", "backward"), ("layernorm_ops", "forward"), ("layernorm_ops", "backward"),
           ("kernels", "dense_act_apply"), ("kernels", "dense_act_grad"))
CODE_ROWS = {entry: row for row, entry in enumerate(BY_CODE)}
N_CODES = max(registry.ACTIVATIONS.values()) + 1
# The op kind of each table other than ``kernels``: the codes of its ops pick its kernels of ``BY_CODE``.
_KIND_OF = {"activation_ops": registry.OP_ACTIVATION, "dropout_ops": registry.OP_DROPOUT,
            "batchnorm_ops": registry.OP_BATCHNORM, "layernorm_ops": registry.OP_LAYERNORM}


# Each table kernel's arguments (``ArgSpec``, written beside its kernel), from which its compiled
# signature follows for each dtype (``_checks.numba_signature``): one spec for all the kernels of
# a field, whatever their code.
SPECS = {
    "kernels": Kernels(dense.DENSE_ACT_FORWARD_SPEC, dense.DENSE_ACT_BACKWARD_SPEC, losses.LOSS_CODE_FORWARD_SPEC,
                       losses.LOSS_CODE_BACKWARD_SPEC, optim.OPTIMIZER_CODE_UPDATE_SPEC, STATS_SPEC,
                       dense.DENSE_ACT_APPLY_SPEC, dense.DENSE_ACT_GRAD_SPEC),
    "activation_ops": ActivationKernels(activations.ACTIVATION_CODE_FORWARD_SPEC,
                                        activations.ACTIVATION_CODE_BACKWARD_SPEC),
    "dropout_ops": DropoutKernels(dropout.DROPOUT_FORWARD_FROM_SPEC, dropout.DROPOUT_BACKWARD_SPEC,
                                  dropout.DROPOUT_INFERENCE_SPEC),
    "batchnorm_ops": NormKernels(_norm_ops.NORM_FORWARD_SPEC, _norm_ops.NORM_BACKWARD_SPEC,
                                 _norm_ops.NORM_UPDATE_RUNNING_SPEC),
    "layernorm_ops": NormKernels(_norm_ops.NORM_FORWARD_SPEC, _norm_ops.NORM_BACKWARD_SPEC,
                                 _norm_ops.NORM_UPDATE_RUNNING_SPEC),
}


@functools.lru_cache(maxsize=None)
def _signatures(dtype):
    """Each table's kernel signatures for parameters of ``dtype``, as the loop calls them (its
    "*" arrays are (rows, width) views)."""
    return {name: type(specs)(*(numba_signature(spec, dtype, star_rank=2) for spec in specs))
            for name, specs in SPECS.items()}


def _allowed(table_class, field):
    """The signatures a table's kernel is held for: one per float dtype."""
    name = next(n for n, t in TABLES.items() if type(t) is table_class)
    return [getattr(_signatures(np.dtype(dtype))[name], field) for dtype in ("float32", "float64")]


# How the loop's levels call a table's kernel: by its address, typed against its signatures.
kcall = kernel_call_intrinsic(_allowed)
kcall_code = kernel_call_by_code_intrinsic(_allowed)
_TABLES_BY_DTYPE = {}


def _chosen(name, codes):
    """TABLES[name]'s kernels, a dict entry resolved by its code in ``codes``; ``_not_in_table``
    where that code is None."""
    kernels = TABLES[name]
    if name != "kernels":
        return kernels
    chosen = []
    for field, kernel, by in zip(Kernels._fields, kernels, _CHOSEN_BY):
        if by is not None:
            code = codes[by]
            if code is None:
                kernel = _stats_not_in_table if field == "stats" else _not_in_table
            elif code not in kernel:
                raise ValueError(f"no {field} kernel for {by} code {code}; known: {sorted(kernel)}")
            else:
                kernel = kernel[code]
        chosen.append(kernel)
    return chosen


def _entry(name, field, dtype, loss, optimizer, code=None):
    """The kernel and signature of TABLES[name].<field> for ``dtype`` and the codes (``code``: the
    activation code of a field of ``BY_CODE``)."""
    codes = {"loss": loss, "optimizer": optimizer}
    index = type(TABLES[name])._fields.index(field)
    kernel = _chosen(name, codes)[index]
    if (name, field) in CODE_ROWS:
        kernel = kernel(code)
    # The loop calls it by address: the kernel without numba's Python and C wrappers (``compiled_only``).
    return compiled_only(kernel), _signatures(np.dtype(dtype))[name][index]


def compile_entry(name, field, dtype, loss=None, optimizer=None, code=None):
    """The address of TABLES[name].<field>'s kernel, compiled or loaded from the cache if needed."""
    kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
    result = kernel.get_compile_result(sig)
    return result.library.get_pointer_to_function(result.fndesc.llvm_func_name)


def fields(name):
    """The fields of TABLES[name] that hold a kernel (not None)."""
    return [field for field, kernel in zip(type(TABLES[name])._fields, TABLES[name]) if kernel is not None]


def table_codes(net, name):
    """The activation codes of ``net``'s ops of table ``name``'s kind (sorted): those its fields of
    ``BY_CODE`` need kernels of. For ``kernels``, the dense layers' codes other than those the
    dense kernels apply themselves (``dense.TABLE_FUSED``)."""
    if name == "kernels":
        # A dense layer's per-code kernels: for the activations the dense kernels do not apply.
        dense_codes = {int(c) for c in net.codes[net.kinds == registry.OP_DENSE]}
        return tuple(sorted(dense_codes - set(dense.TABLE_FUSED)))
    return tuple(sorted({int(c) for c in net.codes[net.kinds == _KIND_OF[name]]}))


def field_codes(name, field, codes):
    """The codes TABLES[name].<field> compiles a kernel for: ``codes`` for a field of ``BY_CODE``,
    else (None,), its one kernel."""
    return tuple(codes) if (name, field) in CODE_ROWS else (None,)


def kernel_table(name, dtype, loss=None, optimizer=None):
    """TABLES[name] as the addresses of its kernels compiled (or loaded from the cache) for
    ``dtype``'s signatures; once per process. ``loss`` and ``optimizer`` (registry codes) pick
    the loss and update kernels of ``kernels``; where one is None, its entries raise when called
    (a table for ``predict`` of a model with no loss). A field of ``BY_CODE`` holds its row of
    ``code_kernels`` instead, and a field without a kernel (None) zero."""
    if name != "kernels":
        loss = optimizer = None
    key = (name, np.dtype(dtype), loss, optimizer)
    if key not in _TABLES_BY_DTYPE:
        addresses = []
        for field, kernel in zip(type(TABLES[name])._fields, TABLES[name]):
            if (name, field) in CODE_ROWS:
                addresses.append(CODE_ROWS[name, field])
            else:
                addresses.append(0 if kernel is None else compile_entry(name, field, dtype, loss, optimizer))
        _TABLES_BY_DTYPE[key] = type(TABLES[name])(*addresses)
    return _TABLES_BY_DTYPE[key]


def code_kernels(dtype, codes):
    """``Network.code_kernels`` for ``dtype``: the addresses of the kernels of ``BY_CODE``, compiled
    (or loaded from the cache) for the codes ``codes[table]`` of each table named there."""
    addresses = np.zeros((len(BY_CODE), N_CODES), dtype=np.int64)
    for row, (name, field) in enumerate(BY_CODE):
        for code in codes.get(name, ()):
            addresses[row, code] = compile_entry(name, field, dtype, code=code)
    return addresses


# What each compile unit costs, in seconds of one core of the 2-core development machine (AMD
# EPYC, AVX-512; each unit alone in a fresh process, benchmarks/bench_compile.py): what the first
# run's note adds up (``pending``), and how ``fastbp compile`` deals units to its workers.
COMPILE_SECONDS = {
    "kernels": Kernels(dense_forward=1.9, dense_backward=1.8, loss_forward=0.8, loss_backward=0.3, update=0.8,
                       stats=0.25, dense_act_apply=0.4, dense_act_grad=0.4),
    # One code's kernels, in the fields of ``BY_CODE``.
    "activation_ops": ActivationKernels(forward=0.6, backward=0.4),
    "dropout_ops": DropoutKernels(forward=0.2, backward=0.1, inference=0.1),
    "batchnorm_ops": NormKernels(forward=1.0, backward=0.8, update_running=0.2),
    "layernorm_ops": NormKernels(forward=0.5, backward=0.8, update_running=0.0),
}
# The loop's levels (train_batches and evaluate_batches).
LOOP_SECONDS = 3.3
# What the first run's note calls each table's kernels.
TABLE_NAMES = {"activation_ops": "activation layers", "dropout_ops": "dropout", "batchnorm_ops": "BatchNorm",
               "layernorm_ops": "LayerNorm"}


def pending(net, dtype, loss=None, optimizer=None):
    """The kernels of ``net``'s tables not compiled yet in this process nor in the cache, as
    ((table, field), single-core seconds) pairs."""
    found = []
    for name in _present(net):
        for field in fields(name):
            for code in field_codes(name, field, table_codes(net, name)):
                kernel, sig = _entry(name, field, dtype, loss, optimizer, code)
                if not _warm.cached(kernel, sig):
                    found.append(((name, field), getattr(COMPILE_SECONDS[name], field)))
    return found


# The kernels worker processes compile while this one compiles the loop (``_warm``): the
# heaviest, those of the dense and the norm layers (where the network has norm layers), dealt
# round-robin to as many workers as there are cores beside this process's. On two cores the one
# worker's share and this process's (the loop's levels, ``evaluate_batches`` and the other
# kernels) then take about as long (benchmarks/bench_compile.py --first-result). Every process
# claims them heaviest first (``_heaviest_first``): on a warm cache with a new norm layer, this
# process, ready first, compiles the heavier of its two units.
_AHEAD = (("kernels", "dense_backward"), ("kernels", "dense_forward"), ("batchnorm_ops", "backward"),
          ("layernorm_ops", "backward"), ("batchnorm_ops", "forward"), ("layernorm_ops", "forward"))
# Lighter kernels shared the same way where a worker starts for those of ``_AHEAD`` anyway, never a
# reason to start one: the loss's forward. Since the dense kernels lost their passes of every
# activation (f9b2c47), the worker of a cold `fastbp train` ended 1.4 s before this process; with
# the loss's forward shareable, cold `fastbp train` 6.78 -> 6.38 s (medians of ten alternated rounds,
# docs/performance-log.md, 2026-12-08, a5435e0). Started for it alone, a worker made a first fit
# with a new loss slower (0.96 -> 1.18 s).
_RIDERS = (("kernels", "loss_forward"),)


def _placeholder(name):
    """A table of TABLES[name]'s type holding zero addresses: what the loop is compiled against
    while the kernels compile elsewhere, and what it holds for an op kind the network lacks
    (never called: no op of that kind)."""
    return type(TABLES[name])(*[CODE_ROWS.get((name, field), 0) for field in type(TABLES[name])._fields])


def placeholder_net(net):
    """``net`` with a table of zero addresses for each op kind: the types ``with_kernels`` gives it,
    for compiling the loop while its kernels are compiled elsewhere."""
    return net._replace(code_kernels=np.zeros((len(BY_CODE), N_CODES), dtype=np.int64),
                        **{name: _placeholder(name) for name in TABLES})


def _present(net):
    """The tables ``net`` calls kernels of: ``kernels``, and those of the op kinds it has."""
    return [name for name in TABLES if name == "kernels" or getattr(net, name) is not None]


def _compile_ahead(net, dtype, loss, optimizer, ahead):
    """On a cold cache: the kernels of ``_AHEAD`` not in the cache yet in worker processes,
    meanwhile ``ahead(placeholder)`` (the caller compiles its loop against tables of zero
    addresses, which have the same types) and the other kernels here, then the workers' kernels
    that none has begun yet (``_warm.Claims``, the heaviest first); then wait for the workers."""
    def keyed(pairs):
        return {_key(name, field, loss, optimizer, code): _entry(name, field, dtype, loss, optimizer, code)
                for name, field in pairs if name in _present(net)
                for code in field_codes(name, field, table_codes(net, name))}

    candidates = keyed(_AHEAD)
    # Those surely not in the cache go to the workers at once; finding out about the others loads
    # them, which first sets up numba's target context here (0.4-0.5 s), meanwhile.
    entries = [entry for entry, (kernel, _) in candidates.items() if _warm.surely_uncached(kernel)]
    if entries:
        entries += [entry for entry, (kernel, _) in keyed(_RIDERS).items() if _warm.surely_uncached(kernel)]
    entries = _heaviest_first(entries)
    claims = _warm.Claims()
    procs = _start_workers(claims, dtype, entries)
    try:
        entries = _heaviest_first(entries + [entry for entry, (kernel, sig) in candidates.items()
                                             if entry not in entries and not _warm.cached(kernel, sig)])
        procs = procs or _start_workers(claims, dtype, entries)
        if not procs:
            return
        ahead(placeholder_net(net))
        for name in _present(net):
            for field in fields(name):
                if (name, field) not in _AHEAD:
                    for code in field_codes(name, field, table_codes(net, name)):
                        if _key(name, field, loss, optimizer, code) not in entries:
                            compile_entry(name, field, dtype, loss, optimizer, code)
        for entry in entries:
            if claims.claim(entry):
                _compile_named(entry, dtype)
        _warm.wait(procs)
    except BaseException:
        # An interrupt or an error here: the workers' kernels are no longer wanted.
        _warm.stop(procs)
        raise
    finally:
        claims.close()


def _key(name, field, loss, optimizer, code):
    """A compile unit as the workers are handed it: ``table:field:loss:optimizer:code``."""
    return ":".join(map(str, (name, field, loss, optimizer, code)))


def _heaviest_first(entries):
    """``entries`` (``table:field:...``) by their compile time (``COMPILE_SECONDS``), the longest first.
    The workers and this process each claim the first unit nobody has begun, so that the heaviest
    goes to whichever process is ready for it first and the lighter ones fill the end. On a warm
    cache this process is ready first (its numba set-up 0.4 s, a worker's start 0.7-1.0 s): a first
    LayerNorm fit, where this process took the last unit of the list, compiled the forward (0.5 s)
    here and then waited 0.8 s for the worker's backward (1.0 s)."""
    def seconds(entry):
        name, field = entry.split(":")[:2]
        return getattr(COMPILE_SECONDS[name], field)

    return sorted(entries, key=seconds, reverse=True)


def _start_workers(claims, dtype, entries):
    """Worker processes (one per core beside this process's, at most one per entry) sharing
    ``entries`` round-robin; none where there are none."""
    n_workers = min(len(entries), _warm.usable_cpus() - 1)
    return _warm.start(compile_worker, [[claims.folder, np.dtype(dtype).name] + entries[k::n_workers]
                                        for k in range(n_workers)]) if n_workers > 0 else []


def _compile_named(entry, dtype):
    """``compile_entry`` for an entry written ``table:field:loss:optimizer:code``."""
    name, field, *codes = entry.split(":")
    loss, optimizer, code = (None if code == "None" else int(code) for code in codes)
    compile_entry(name, field, dtype, loss, optimizer, code)


def compile_worker(argv):
    """A worker process of ``_compile_ahead`` (``_warm.start``): compile those of the entries
    ``table:field:loss:optimizer:code`` of ``argv[2:]`` that it claims first in the folder
    ``argv[0]`` (``_warm.Claims``), for dtype ``argv[1]``, into the cache."""
    _warm.die_with_parent()
    claims = _warm.Claims(argv[0])
    dtype = np.dtype(argv[1])
    for entry in argv[2:]:
        if claims.claim(entry):
            _compile_named(entry, dtype)


def with_kernels(net, dtype, loss=None, optimizer=None, ahead=None):
    """``net`` (``lowering.Network``) with the CPU kernel tables for ``dtype``: ``kernels`` always,
    with the kernels of the ``loss`` and ``optimizer`` codes (``kernel_table``), and for each other
    op kind the table of its kernels where the network has that kind (its flag True), for the
    codes of its ops of that kind, else a table of zero addresses (``_placeholder``).

    Every table is there, whatever the network: the tables' types do not depend on their
    addresses, so the loop's levels compile once per dtype, and a network with a new loss,
    optimizer, activation or norm layer compiles only that thing's kernels, for its codes, not
    the loop again.

    ``ahead(placeholder_net)``, where given, compiles the caller's loop: on a cold cache it runs
    while worker processes compile the heaviest kernels (``_compile_ahead``).
    """
    if ahead is not None:
        _compile_ahead(net, dtype, loss, optimizer, ahead)
    present = _present(net)
    return net._replace(code_kernels=code_kernels(dtype, {name: table_codes(net, name) for name in present}),
                        **{name: kernel_table(name, dtype, loss, optimizer) if name in present else _placeholder(name)
                           for name in TABLES})
