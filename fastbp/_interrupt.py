"""Ctrl-C during fit: it acts within about a second, and never between a step and its bookkeeping.

Python acts on SIGINT only between bytecodes, so a compiled epoch (one ``train_batches`` call,
nogil) used to hold an interrupt until the epoch ended, and the interrupt then struck in the few
bytecodes after the call, before the optimizer's step count was copied back: the weights and
Adam's moments held the whole epoch while ``optimizer.steps`` still said 0, and a resumed fit
used the wrong bias correction. ``fit`` therefore runs each epoch in calls of about
``CALL_SECONDS`` (``BatchChunks``) and, while they run, records SIGINT instead of raising it
(``Interrupts``); the interrupt is raised between two calls, where the model's weights, optimizer
state and counters agree.

While kernels compile the interrupt is raised at once, as usual (numba compiles in Python). But
llvmlite calls back into Python from C (its object cache), and an exception raised inside such a
callback is printed and dropped: the interrupt was lost and training ran to its end. The recorded
flag raises it again once the compile returns, or in place of the error the lost interrupt caused.
"""
import signal
import threading
import time

# How long one compiled call of the training loop runs before Python looks for an interrupt.
CALL_SECONDS = 0.2


class Interrupts:
    """A context in which SIGINT is recorded; ``deferring()`` holds it back until ``check()``.

    Outside the main thread (where Python delivers no signal) it does nothing.
    """

    def __init__(self):
        self.pending = False
        self._defer = False
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            previous = signal.getsignal(signal.SIGINT)
            # Only Python's own handler is replaced: a program that installed its own keeps it.
            if previous is signal.default_int_handler:
                self._previous = previous
                signal.signal(signal.SIGINT, self._handle)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
        if exc[0] is None:
            self.check()
        elif self.pending and not issubclass(exc[0], KeyboardInterrupt):
            # The dropped interrupt can itself cause the error: numba's cache then finds no
            # compiled object to save ("no compiled object yet"). The user asked to stop.
            self.pending = False
            raise KeyboardInterrupt from exc[1]
        return False

    def _handle(self, signum, frame):
        self.pending = True
        if not self._defer:
            raise KeyboardInterrupt

    def check(self):
        """Raise the interrupt recorded since the last check, if any."""
        if self.pending:
            self.pending = False
            raise KeyboardInterrupt

    def deferring(self):
        """A context in which an interrupt waits for ``check()``."""
        return _Deferring(self)


class _Deferring:
    def __init__(self, interrupts):
        self.interrupts = interrupts

    def __enter__(self):
        self.before, self.interrupts._defer = self.interrupts._defer, True

    def __exit__(self, *exc):
        self.interrupts._defer = self.before
        return False


class BatchChunks:
    """How many batches the next compiled call trains: as many as take about ``CALL_SECONDS``,
    learnt from the calls so far (a call costs microseconds, so more calls cost nothing
    measurable), and at most ``limit`` (the progress bar's step)."""

    def __init__(self, limit):
        self.limit = max(1, limit)
        self.size = min(self.limit, 8)

    def timed(self, run, first, last):
        start = time.perf_counter()
        result = run(first, last)
        seconds = time.perf_counter() - start
        done = last - first
        if done == self.size:
            grown = self.size * 4 if seconds <= 0 else int(self.size * CALL_SECONDS / seconds)
            self.size = max(1, min(self.limit, grown, self.size * 4))
        return result
