"""A cold start's kernels compiled in other processes while this one compiles the loop.

numba compiles one function at a time per process (a global lock; most of the work is Python),
so on a cold cache ``fit`` used one core for the whole compile. Since the loop calls its
kernels by address (``_kernel_tables.with_kernels``), the kernels and the loop's levels are separate
compile units: the loop compiles against kernel tables of placeholder addresses (their type
is all it needs), and the kernels go into the on-disk cache, wherever they are compiled.
``with_kernels(..., ahead=...)`` therefore starts worker processes that compile the heaviest
kernels into the cache (``python -c``, running ``_kernel_tables.compile_worker``), compiles the loop and
the other kernels here meanwhile, then those of the workers' kernels that no worker has begun
(``Claims``), waits for the workers, and then loads their kernels from the cache.
This module only starts, watches and ends worker processes; what a worker runs is its caller's
(``start`` takes the function), so it imports nothing of the loop it serves.

A worker only fills the cache: if it fails, is killed (after ``WAIT_SECONDS``), or writes to
another cache folder, this process finds the kernel missing and compiles it itself, as before.
Nothing starts where the cache is off, on one core, where the heaviest kernel is in the cache
already, in a frozen application (no Python to start), or under MPI (``cpu.DistributedTrainer``:
its ranks share the cores already). Processes that fit at once on a cold cache each start their
own workers; they compile the same kernels, and the last to finish writes the cache entry.
"""
import os
import shutil
import signal
import site
import stat
import subprocess
import sys
import tempfile
import threading
import time

from ..kernels import _cache

# How long to wait for a worker before compiling its kernels here instead (a cold compile of
# the dense kernels takes 10-20 s on the 2-core development machine).
WAIT_SECONDS = 600

# What a worker runs: ``main(sys.argv[1:])``, ``main`` a module-level function named by ``start``.
_PROGRAM = "import sys; from {module} import {name} as main; main(sys.argv[1:])"

# A worker's first act, before importing fastbp (seconds under load): end with the parent
# (``die_with_parent``, here as it can be without fastbp); PR_SET_PDEATHSIG is 1, SIGKILL 9. Then
# Python's cyclic garbage collector off for good: a worker only compiles, and the collections
# numba's objects set off are work for nothing in a process this short
# (``_first_run.gc_paused`` has the figures).
_GUARD = ("import ctypes, gc, os, sys\n"
          "gc.disable()\n"
          "try:\n"
          "    ctypes.CDLL(None).prctl(1, 9, 0, 0, 0)\n"
          "except (OSError, AttributeError):\n"
          "    pass\n"
          "if os.getppid() != int(os.environ.get('FASTBP_WARM_PARENT', os.getppid())):\n"
          "    sys.exit(1)\n")


# A worker's last act once ``statement`` has run: the end of the process without the interpreter's
# teardown. Its work is in the cache folder by then (numba writes each entry to a temporary file
# and renames it), and tearing down a process that has compiled (numba's and LLVM's objects
# collected, every module's globals cleared) took 0.3-0.4 s, which a fit waiting for its worker
# waited too: a first BatchNorm fit on a warm cache, 0.4 s of its 2.0-2.2 s (2026-12-07). The
# atexit handlers still run (a coverage measurement of the workers writes its data there). A
# statement that raises still ends the usual way, with its traceback and status 1.
_END = ("\nimport atexit\n"
        "getattr(atexit, '_run_exitfuncs', lambda: None)()\n"
        "sys.stdout.flush()\n"
        "sys.stderr.flush()\n"
        "os._exit(0)\n")


def worker_command(statement, *args):
    """The command line of a worker process that runs the Python ``statement`` (``sys.argv[1:]``
    are ``args``), ending with its parent from its first line, and without the interpreter's
    teardown after its last (``_END``)."""
    return [sys.executable, "-c", _GUARD + statement + _END, *args]


def usable_cpus():
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def cached(dispatcher, sig):
    """Whether ``dispatcher`` has ``sig`` compiled in this process or in the on-disk cache. ``sig`` as
    the function was compiled with: a numba signature (``get_compile_result``) or a tuple of
    argument types (``compile``); numba keys its cache entries on that very object."""
    if (tuple(sig.args) if hasattr(sig, "args") else tuple(sig)) in dispatcher.overloads:
        return True
    cache = getattr(dispatcher, "_cache", None)
    return _may_hold(cache) and cache.load_overload(sig, dispatcher.targetctx) is not None


def surely_uncached(dispatcher):
    """True where nothing of ``dispatcher`` is in this process or in the on-disk cache, known without
    loading anything (``cached`` is the full answer): a cold start's workers begin before this
    process first sets up numba's target context."""
    return not dispatcher.overloads and not _may_hold(getattr(dispatcher, "_cache", None))


def _may_hold(cache):
    """Whether ``cache`` may hold an entry (fastbp's cache says no without loading, numba's
    ``NullCache`` of a disabled cache never holds one)."""
    return cache is not None and getattr(cache, "may_hold", lambda: True)()


# A claims folder is named CLAIMS_PREFIX, the process id of the fit that made it, "-", and
# mkdtemp's random part.
CLAIMS_PREFIX = "fastbp-claims-"
# A claims folder untouched for this long is past any fit's cold compile (a worker is waited for
# WAIT_SECONDS at most): with its process gone, it is stale. The age matters where the folder's
# process cannot be seen: a fit in another PID namespace (a container) sharing the temporary folder.
STALE_SECONDS = 6 * WAIT_SECONDS


def _process_gone(pid):
    """True where no process has id ``pid`` here (POSIX: signal 0 tests for it and sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (OSError, OverflowError):
        return False  # someone else's process, or no way to tell
    return False


def _claims_pid(name):
    """The process id in a claims folder's name, or None for any other name."""
    pid, dash, _ = name[len(CLAIMS_PREFIX):].partition("-")
    if not (name.startswith(CLAIMS_PREFIX) and dash and pid.isascii() and pid.isdigit() and len(pid) <= 10):
        return None
    return int(pid)


def sweep_stale_claims(root=None, now=None):
    """Remove the claims folders in ``root`` (the temporary folder) that this user's fits made and
    could not remove because they were killed (SIGKILL, a crash): a folder whose process is gone
    and that nothing has touched for STALE_SECONDS. Only a real folder (not a link) of this user
    is touched, and only if it holds nothing but files (claims); any other name in the folder,
    whoever made it, is passed over. POSIX only (elsewhere ``os.kill`` with signal 0 would end
    the process)."""
    if os.name != "posix":
        return
    root = root or tempfile.gettempdir()
    now = time.time() if now is None else now
    try:
        names = os.listdir(root)
    except OSError:
        return
    for name in names:
        pid = _claims_pid(name)
        if pid is None or not _process_gone(pid):
            continue
        path = os.path.join(root, name)
        try:
            info = os.lstat(path)
            if (not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid()
                    or now - info.st_mtime < STALE_SECONDS):
                continue
            entries = list(os.scandir(path))
            if any(entry.is_dir(follow_symlinks=False) for entry in entries):
                continue
            for entry in entries:
                os.unlink(entry.path)
            os.rmdir(path)
        except OSError:
            continue  # raced with another sweep, or not ours to remove


class Claims:
    """Units of work that this process and its workers share, each done by whoever claims it first:
    a claim is a file created exclusively in a private folder (``folder``, passed to the workers).
    A worker works through its list in order; this process, once its own work is done, through
    the whole list in order, taking what no worker has begun instead of waiting idle for a
    worker's second unit (the lists go heaviest first: ``_kernel_tables._heaviest_first``). The
    folder is made when first asked for (a fit on a warm cache starts no worker and makes none),
    named after this process; ``close()`` removes it, and a fit killed before it could is swept
    by a later cold fit (``sweep_stale_claims``)."""

    def __init__(self, folder=None):
        self._folder = folder

    @property
    def folder(self):
        if self._folder is None:
            sweep_stale_claims()
            self._folder = tempfile.mkdtemp(prefix=f"{CLAIMS_PREFIX}{os.getpid()}-")
        return self._folder

    def claim(self, name):
        """True for the first process to claim ``name`` (a file name), False after that; True as
        well where the folder is gone or unusable (the work is then done twice, not left undone)."""
        try:
            os.close(os.open(os.path.join(self.folder, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
        except FileExistsError:
            return False
        except OSError:
            return True
        return True

    def close(self):
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def child_env():
    """This process's environment for a worker, which imports this very fastbp: the folder holding
    it goes first on PYTHONPATH, unless it is a site-packages folder (found there anyway; put
    first, it could shadow the standard library with an old backport). FASTBP_WARM_PARENT names
    this process, for the worker's ``die_with_parent``."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    site_dirs = site.getsitepackages() + [site.getusersitepackages()] if hasattr(site, "getsitepackages") else []
    env = dict(os.environ, FASTBP_WARM_PARENT=str(os.getpid()))
    if root in map(os.path.abspath, site_dirs):
        return env
    return dict(env, PYTHONPATH=os.pathsep.join([root] + [p for p in [os.environ.get("PYTHONPATH")] if p]))


def start(main, arg_lists):
    """Start one worker per list of ``arg_lists``, each running ``main(args)`` (a module-level
    function, imported by its module's name in the worker); the processes."""
    if (_cache.FOLDER is None or not _cache.WRITABLE or not arg_lists or not sys.executable
            or getattr(sys, "frozen", False)):
        return []  # no cache to fill, nothing to do, or no Python to start (a frozen application)
    program = _PROGRAM.format(module=main.__module__, name=main.__qualname__)
    env = child_env()
    procs = []
    for args in arg_lists:
        try:
            procs.append(subprocess.Popen(worker_command(program, *args), env=env,
                                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        except OSError:
            break
    return procs


def wait(procs):
    """Wait for the workers (killing one that takes longer than ``WAIT_SECONDS``); an interrupt
    while waiting stops them."""
    try:
        for proc in procs:
            try:
                proc.wait(timeout=WAIT_SECONDS)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    except BaseException:
        stop(procs)
        raise


def stop(procs):
    """End the workers now (a kernel a worker was writing is left out of the cache: numba writes
    each entry to a temporary file and renames it)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
    for proc in procs:
        proc.wait()


def die_with_parent():
    """End this worker when the process that started it (FASTBP_WARM_PARENT, set by ``child_env``)
    ends, however it ends (SIGKILL too): where Linux offers it, the kernel sends SIGKILL on the
    parent's death (PR_SET_PDEATHSIG); elsewhere a thread looks at the parent pid twice a second."""
    parent = int(os.environ.get("FASTBP_WARM_PARENT", os.getppid()))
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass
    if os.getppid() != parent:  # the parent died before the request above took effect
        os._exit(1)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True).start()
