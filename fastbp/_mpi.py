"""Data-parallel training over MPI: the communicator, agreed values, rank 0's output, faults.

mpi4py is imported only when ``fit`` is given ``comm=`` (here and in the
trainer) or by ``fastbp train --distributed``; ``pip install 'fastbp[mpi]'``
brings mpi4py and the mpich wheel. The step
itself is ``backends.cpu.DistributedTrainer``; this module holds what fit does
around it:

- ``check_comm``: the argument check (any mpi4py intracommunicator).
- ``agreed_seconds``: an epoch's (or the compile's) duration as the slowest rank
  saw it, so that every rank's logs, and the callbacks that read them, hold the
  same numbers.
- ``evaluate``: validation in shards, one contiguous block of rows per rank,
  the S_* sums added over the ranks.
- ``rank_zero_output``: on the other ranks, no output (stdout, stderr) and no files while fit
  runs (progress, LearningRateLogger, ModelCheckpoint, save).
- ``agree_on_data``: one allgather at the start of fit compares what every rank
  was given (the data's shapes, the parameter count, the batch size); ranks that
  differ would train on silently misaligned shares, or fail inside a collective.
  Every rank raises the same ``DataMismatchError``, naming the ranks and sizes.
- ``abort_on_error`` (public as ``fastbp.abort_on_error``): an exception on one
  rank (other than the agreed ``DivergenceError`` and ``DataMismatchError``)
  prints its traceback and calls ``comm.Abort(1)``: the other ranks may be
  waiting in a collective that will never complete, and MPI offers no other way
  to wake them. The whole job ends with exit status 1. A rank that is killed ends
  the job too (mpiexec's doing).
"""
import contextlib
import os
import sys
import time
import traceback

import numpy as np

from .kernels import registry

_DRAIN_SECONDS = 0.5  # abort_on_error: time for mpiexec to forward the report before MPI_Abort


def check_comm(comm, argument="comm"):
    """``comm`` if it is an mpi4py intracommunicator; ImportError without mpi4py, TypeError otherwise."""
    try:
        from mpi4py import MPI
    except ImportError as err:
        raise ImportError(f"{argument}= needs mpi4py: pip install 'fastbp[mpi]' (mpi4py and the mpich "
                          f"wheel), or mpi4py built against the site's MPI") from err
    if not isinstance(comm, MPI.Intracomm):
        raise TypeError(f"{argument} must be an mpi4py intracommunicator such as MPI.COMM_WORLD; "
                        f"got {type(comm).__name__}")
    return comm


class DataMismatchError(ValueError):
    """The ranks of a data-parallel fit were given different data shapes; every rank raises it."""


def agree_on_data(comm, described):
    """Raise ``DataMismatchError`` on every rank unless every rank's ``described`` is the same.

    ``described``: {what: value} (a shape, a count), compared across the ranks with one
    allgather. The message names each differing entry and which ranks have which value.
    """
    everyone = comm.allgather(described)
    problems = []
    for what in dict.fromkeys(k for d in everyone for k in d):
        values = [d.get(what, "nothing") for d in everyone]
        if len(set(map(repr, values))) > 1:
            groups = {}
            for r, value in enumerate(values):
                groups.setdefault(repr(value), []).append(r)
            parts = [f"{value} on rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"
                     for value, ranks in groups.items()]
            problems.append(f"{what}: {'; '.join(parts)}")
    if problems:
        raise DataMismatchError("fit(comm=...) needs the same data, model and batch_size on every rank "
                                "(each rank trains on its share of every global batch); they differ: "
                                + " | ".join(problems))


def agreed_seconds(comm, seconds):
    """The largest of the ranks' ``seconds``; None where every rank has None (fit's compile_seconds)."""
    from mpi4py import MPI

    longest = comm.allreduce(-1.0 if seconds is None else seconds, op=MPI.MAX)
    return None if longest < 0 else longest


def shard(n, comm):
    """This rank's block of n rows: [n r / size, n (r + 1) / size)."""
    rank, size = comm.Get_rank(), comm.Get_size()
    return slice(n * rank // size, n * (rank + 1) // size)


def evaluate(backend, model, lowered, X, data, comm):
    """The S_* sums on (X, data), each rank evaluating its block of rows, added over the ranks."""
    from mpi4py import MPI

    rows = shard(len(X), comm)
    stats = np.zeros(registry.N_STATS)
    if rows.stop > rows.start:
        part = type(data)(*(a[rows] if a.size else a for a in data))
        stats = backend.evaluate(model, lowered, X[rows], part, min(1024, rows.stop - rows.start))
    comm.Allreduce(MPI.IN_PLACE, stats, op=MPI.SUM)
    return stats


@contextlib.contextmanager
def rank_zero_output(comm):
    """Rank 0 prints; the others' stdout and stderr go to the null device. Yields whether this
    rank writes files (rank 0 alone): the caller turns its saves off where it does not."""
    if comm.Get_rank() == 0:
        yield True
        return
    with (open(os.devnull, "w") as null, contextlib.redirect_stdout(null),
          contextlib.redirect_stderr(null)):
        yield False


@contextlib.contextmanager
def abort_on_error(comm, agreed=()):
    """End the whole MPI job when the code inside raises on this rank.

    One rank that raises while the others wait in a collective (a ``fit(comm=...)``,
    a ``Barrier``) would leave them waiting for good: this prints the traceback and
    calls ``comm.Abort(1)``, so every rank ends and ``mpiexec`` exits non-zero. Wrap
    a script's whole body, the data loading before ``fit`` included::

        with fastbp.abort_on_error(MPI.COMM_WORLD):
            X, y = load_my_shard()
            model.fit(X, y, comm=MPI.COMM_WORLD)

    ``fit(comm=...)`` does the same for its own body.

    Parameters
    ----------
    comm : mpi4py intracommunicator
        The communicator of the job (``MPI.COMM_WORLD``).
    agreed : tuple of exception classes, optional
        Exceptions that every rank raises together (a ``DivergenceError``): they
        propagate as they are, without an abort.

    Raises
    ------
    TypeError
        If ``comm`` is not an mpi4py intracommunicator.
    ImportError
        Without mpi4py.

    Notes
    -----
    On a communicator of one rank the exception propagates as it is.
    """
    check_comm(comm)
    try:
        yield
    except agreed:
        raise
    except BaseException:
        if comm.Get_size() == 1:
            raise
        report = (f"fastbp: rank {comm.Get_rank()} of {comm.Get_size()} failed; aborting every rank "
                  f"(MPI_Abort):\n{traceback.format_exc()}")
        # One write, then a pause: mpiexec forwards a rank's stderr from a pipe and stops reading
        # it once the abort reaches it. Line by line, it had forwarded the first line and dropped
        # the traceback (a CI run under load); the pause lets it drain the pipe first.
        sys.stderr.write(report)
        sys.stderr.flush()
        time.sleep(_DRAIN_SECONDS)
        comm.Abort(1)
        raise
