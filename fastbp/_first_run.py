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
import sys
import threading
import time

from numba.core import event

# A cold compile of the training loop (the kinds of op the network has, its own loss and
# optimizer; the kernels each compiled once, called by address, the heaviest in a worker process
# while this one compiles the loop) on the 2-core development machine, wall time of a cold
# `fastbp train --epochs 1`, most of it compiling: 14-17 s for Dense and Dropout layers (the
# default), 19-22 s with BatchNorm or LayerNorm (BENCHMARKS.md, sixth session, "cold start").
# On one core no worker starts, and the compile takes the sum: about 1.7 times as long (the
# user CPU time of those runs). More under load, less on faster cores.
EXPECTED_SECONDS = 15
EXPECTED_SECONDS_WITH_NORM = 22
ONE_CORE_FACTOR = 1.7

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
    """Prints the note at the start of the first compile, in the thread that compiles."""

    def __init__(self, verbose, seconds):
        self.verbose, self.seconds = verbose, seconds
        self.compiled, self.thread = False, threading.get_ident()

    def on_start(self, ev):
        if self.compiled or threading.get_ident() != self.thread:
            return
        self.compiled = True
        if self.verbose or getattr(_always, "on", False):
            print(f"fastbp: compiling the training loop's kernels for this machine (once: about "
                  f"{self.seconds} s, cached on disk afterwards)", file=sys.stderr, flush=True)

    def on_end(self, ev):
        pass


def expected_seconds(trainer):
    """What the note says a cold compile of ``trainer``'s loop takes: more where its network (a
    ``lowering.Network``, the CPU backend's ``net``) has norm layers, and on one core."""
    from .backends import _warm

    net = getattr(trainer, "net", None)
    norm = any(getattr(net, name, None) is not None for name in ("batchnorm_ops", "layernorm_ops"))
    seconds = EXPECTED_SECONDS_WITH_NORM if norm else EXPECTED_SECONDS
    return seconds if _warm.usable_cpus() > 1 else round(seconds * ONE_CORE_FACTOR)


def compile_loop(trainer, order, hyper, verbose):
    """Compile or load the trainer's loop now; the seconds it took when it was a compile, else None.

    ``trainer`` is a fit backend (``begin_epoch``, ``run``); ``order`` and ``hyper`` are
    any valid permutation and hyperparameters, since no batch runs.
    """
    listener = _Announce(verbose, expected_seconds(trainer))
    start = time.perf_counter()
    with event.install_listener("numba:compile", listener):
        trainer.begin_epoch(order, hyper)
        trainer.run(0, 0)
    seconds = time.perf_counter() - start
    return seconds if listener.compiled else None
