"""The first run on a machine: say so before compiling, and keep the compile out of epoch 1's speed.

numba compiles the training loop, and every kernel it calls, on the loop's first call in a
process, or loads it from its cache on disk, where a compile leaves it. ``fit`` calls
``compile_loop`` once before its first timed epoch: an empty run of batches (first == last)
that compiles or loads the loop and returns at once. numba announces a real compile (not a
load from the cache) with its ``numba:compile`` event, at the start: the note is printed
then, before the wait, and the call's duration is returned as the compile time, which fit
records in the first epoch's logs as ``compile_seconds`` (``History.compile_seconds``)
and leaves out of its ``samples_per_second``.
"""
import contextlib
import gc
import sys
import threading
import time
import warnings

from numba.core import event


class CompileWarning(UserWarning):
    """The first fit on a machine compiles fastbp's kernels: what, and about how long.

    Issued (once per process) instead of the printed note where fit prints nothing, as inside
    ``fastbp.MLPClassifier`` and ``fastbp.MLPRegressor``; silence it with
    ``warnings.filterwarnings("ignore", category=fastbp.CompileWarning)``.
    """


# The wall time of a compile against the single-core seconds of its units
# (``_kernel_tables.COMPILE_SECONDS``): what the processes' start, the wait for workers and imports add.
_OVERHEAD = 1.3

_always = threading.local()


@contextlib.contextmanager
def announce_always():
    """Print the note whatever fit's ``verbose`` says (the command line does, on stderr)."""
    before = getattr(_always, "on", False)
    _always.on = True
    try:
        yield
    finally:
        _always.on = before


class _Announce(event.Listener):
    """Says what compiles at the start of the first compile, in the thread that compiles: a note
    on stderr (``verbose``, or ``announce_always``), else a ``CompileWarning`` under
    ``warn_instead``."""

    def __init__(self, verbose, message):
        self.verbose, self.message = verbose, message
        self.compiled, self.thread = False, threading.get_ident()

    def on_start(self, ev):
        global _warned
        if self.compiled or threading.get_ident() != self.thread:
            return
        self.compiled = True
        if self.verbose or getattr(_always, "on", False):
            print(f"fastbp: {self.message()}", file=sys.stderr, flush=True)
        elif getattr(_warn, "on", False) and not _warned:
            _warned = True
            warnings.warn(self.message(), CompileWarning, stacklevel=2)

    def on_end(self, ev):
        pass


_warn = threading.local()
_warned = False


@contextlib.contextmanager
def warn_instead():
    """Issue a ``CompileWarning`` (once per process) where fit would print no note (the
    estimators: scikit-learn pipelines stay quiet where warnings are filtered)."""
    before = getattr(_warn, "on", False)
    _warn.on = True
    try:
        yield
    finally:
        _warn.on = before


def _unit_name(unit, model):
    if unit == "loop":
        return "the training loop"
    table, field = unit
    if table != "kernels":
        return _table_names()[table]
    if field.startswith("dense"):
        return "dense layers"
    if field == "update":
        return f"{type(model.optimizer).__name__} updates"
    return f"the {model.loss.name} loss"


def _table_names():
    from .backends import _kernel_tables

    return _kernel_tables.TABLE_NAMES


def expected_seconds(units):
    """About how long compiling ``units`` ((unit, single-core seconds) pairs) takes here: on two
    cores or more the heaviest kernels compile in a worker process meanwhile, so the wait is the
    larger of the two shares, and never less than the longest unit."""
    from .backends import _warm

    seconds = [s for _, s in units]
    if not seconds:
        return 0
    share = sum(seconds) / min(2, _warm.usable_cpus())
    return max(1, round(_OVERHEAD * max(share, max(seconds))))


def note(trainer):
    """What the first run says: the units that compile (``trainer.pending()``) and the wait."""
    model = trainer.model
    pending = trainer.pending() if hasattr(trainer, "pending") else None
    if pending is None:  # a backend that cannot tell (CUDA): the whole of it
        return ("compiling the training loop's kernels for this machine (once, then cached on disk; "
                "seconds to a minute)")
    names = list(dict.fromkeys(_unit_name(unit, model) for unit, _ in pending))
    return (f"compiling for this machine (once, then cached on disk): {', '.join(names)}; about "
            f"{expected_seconds(pending)} s")


@contextlib.contextmanager
def gc_paused():
    """Python's cyclic garbage collector off for the block, as it was after it.

    numba's compiles make millions of objects, and the collections they set off were 5.5% of a
    cold ``fastbp train``'s CPU samples (``perf``). Paused here and off in the compile workers
    (``_warm._GUARD``), a cold ``fastbp train`` took 7.02 s against 7.77 s (medians of five
    alternated runs, 2026-12-07, 0a1ac2e) and its fitting process peaked at 294 MB against
    236 MB. The garbage is collected after the block, by the collector's next pass.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def compile_loop(trainer, order, hyper, verbose):
    """Compile or load the trainer's loop now; the seconds it took when it was a compile, else None.

    ``trainer`` is a fit backend (``begin_epoch``, ``run``); ``order`` and ``hyper`` are
    any valid permutation and hyperparameters, since no batch runs. The garbage collector is
    paused meanwhile (``gc_paused``).
    """
    listener = _Announce(verbose, lambda: note(trainer))
    start = time.perf_counter()
    with event.install_listener("numba:compile", listener), gc_paused():
        trainer.begin_epoch(order, hyper)
        trainer.run(0, 0)
    seconds = time.perf_counter() - start
    return seconds if listener.compiled else None
