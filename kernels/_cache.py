"""Where fastbp's compiled kernels are cached on disk, and when a cached copy is stale.

numba's own ``cache=True`` writes ``.nbi``/``.nbc`` files into a
``__pycache__`` folder beside each source file. For an installed package that
is ``site-packages/fastbp/...``: files the package manager never recorded, so
``pip uninstall`` leaves them behind and an editable reinstall finds a folder
``fastbp/`` holding only caches, which Python then imports as an empty
namespace package. numba also keys each cached function on its own source
file alone: an edit to ``_scalar.py`` (inlined into every kernel) or to a
compile-time constant in another module is not noticed.

fastbp therefore gives its functions a cache locator of its own:

- The folder is per user, outside the installation: ``$FASTBP_CACHE_DIR``,
  else ``$NUMBA_CACHE_DIR/fastbp``, else the platform's user cache folder
  (``$XDG_CACHE_HOME/fastbp`` or ``~/.cache/fastbp`` on Linux,
  ``~/Library/Caches/fastbp`` on macOS, ``%LOCALAPPDATA%\\fastbp\\Cache`` on
  Windows). Where none can be made, a per-user folder in the temporary
  directory; where that fails too, nothing is cached. ``FASTBP_NO_CACHE=1``
  turns caching off.
- A cache folder is code that runs as you: numba's index files are pickles, and
  its data files are machine code. So a folder is used only when it is owned by
  this user (or by root, for a cache built into a system image) and no one else
  may write to it, checked for the root and for every folder below it, as ssh
  checks ``~/.ssh`` (``_trust_problem``). fastbp creates its folders with mode
  0700. A folder that fails the check is neither read nor written: fastbp says
  so once and compiles without a cache.
- A cache that may be read but not written (a read-only image, another
  account's ``fastbp compile`` run as root) is loaded from; what compiles
  afresh is not saved, with one warning.
- A cache entry that cannot be loaded (an emptied, truncated or garbled
  ``.nbi``/``.nbc`` file, from a full disk or a killed process) is dropped with
  one warning and compiled again, not raised into ``fit``.
- Inside it, one subfolder per *kernel tree*: a hash of every source file of
  this package (``fastbp.kernels``), the numba version, the Python version
  and ``FASTBP_SIMD_WIDTH`` where set. Any edit to any kernel module,
  ``_scalar.py`` and ``_jit.py`` included, or another fastbp release,
  selects a fresh subfolder, so a stale cache is never loaded. Compiled code outside this package (the training
  loop) takes the tree hash plus a hash of every source file of its own package (fastbp's
  model layer: the loop inlines the views of ``lowering.py`` and ``backends/_views.py``) as its
  source stamp, and a folder per version of those sources.

Old subfolders are left in place (another environment may still use them);
``clear()`` removes the whole folder.
"""
import functools
import hashlib
import os
import shutil
import stat
import sys
import tempfile
import warnings

import numba

_PACKAGE_DIR = os.path.dirname(os.path.realpath(__file__))
# Subfolders of the cache root are named by the first characters of a tree hash.
_TREE_NAME_LENGTH = 20


def _enabled():
    return os.environ.get("FASTBP_NO_CACHE", "").lower() not in ("1", "true", "yes")


def _platform_cache_root():
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or os.path.expanduser(r"~\AppData\Local")
        return os.path.join(base, "fastbp", "Cache")
    if sys.platform == "darwin":
        return os.path.expanduser("~/Library/Caches/fastbp")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "fastbp")


def _candidate_roots():
    explicit = os.environ.get("FASTBP_CACHE_DIR")
    if explicit:
        return [explicit]
    numba_dir = os.environ.get("NUMBA_CACHE_DIR")
    roots = [os.path.join(numba_dir, "fastbp")] if numba_dir else []
    uid = os.getuid() if hasattr(os, "getuid") else os.environ.get("USERNAME", "user")
    return roots + [_platform_cache_root(), os.path.join(tempfile.gettempdir(), f"fastbp-cache-{uid}")]


# Where ownership and modes mean nothing (Windows), folders are not checked.
_CHECKS_OWNERS = hasattr(os, "geteuid")
# Owners whose folders may be loaded: this user, and root (a cache built into an image by root;
# root can replace this user's files anyway).
_TRUSTED_OWNERS = {os.geteuid(), 0} if _CHECKS_OWNERS else set()
_warned = set()


def _warn_once(message, kind=None):
    """Warn with ``message`` unless this process warned of the same ``kind`` (or message) before."""
    key = kind or message
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=3)


def _trust_problem(path, follow=True):
    """Why the existing folder ``path`` may not hold compiled code, or None where it may.

    It must be a directory, owned by this user or root, that neither its group nor others may
    write to. ``follow=False`` refuses a symbolic link (folders below the root: a link there
    could lead anywhere).
    """
    try:
        st = os.stat(path) if follow else os.lstat(path)
    except OSError as exc:
        return f"cannot be inspected ({exc.strerror})"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a directory"
    if not _CHECKS_OWNERS:
        return None
    if st.st_uid not in _TRUSTED_OWNERS:
        return f"is owned by uid {st.st_uid}, not by this user (uid {os.geteuid()})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"may be written by other users (mode {stat.S_IMODE(st.st_mode):o})"
    return None


def _make_private(path):
    """Create the folder ``path`` (and missing parents) with mode 0700; False where it cannot be."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
    except OSError:
        return False
    return True


def _can_write(folder):
    try:
        tempfile.TemporaryFile(dir=folder).close()
    except OSError:
        return False
    return True


def tree_hash(package_dir=_PACKAGE_DIR):
    """sha256 over every source file of fastbp.kernels (by content, not date) and the numba
    and Python versions."""
    h = hashlib.sha256()
    h.update(f"numba {numba.__version__} python {sys.version_info[:3]}".encode())
    # A forced SIMD width (cpu/_simd.py) is frozen into the code; the host CPU's own is in numba's key.
    h.update(f"simd {os.environ.get('FASTBP_SIMD_WIDTH', '').strip()}".encode())
    _hash_sources(h, package_dir)
    return h.hexdigest()


def _hash_sources(h, root):
    """Feed ``h`` the relative path and content of every module file under ``root``, in a fixed
    order, the kernel tree aside where ``root`` holds it. A name no import can reach (an editor's
    lock file ``.#model.py``, often a dangling link) is passed over, and a file that cannot be
    read counts by its name: Python could not import it either."""
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__"
                               and os.path.realpath(os.path.join(folder, d)) != _PACKAGE_DIR)
        for name in sorted(files):
            if name.endswith(".py") and name[:-3].isidentifier():
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, root).replace(os.sep, "/").encode())
                try:
                    with open(path, "rb") as fh:
                        h.update(hashlib.sha256(fh.read()).digest())
                except OSError:
                    h.update(b"unreadable")


def _file_hash(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


@functools.lru_cache(maxsize=None)
def _package_hash(root):
    """sha256 over every source file of the package folder ``root``, the kernel tree aside."""
    h = hashlib.sha256()
    _hash_sources(h, root)
    return h.hexdigest()


def source_hash(py_file, module):
    """What stamps compiled code outside the kernel tree: a hash of every source file of the
    top-level package of ``module`` (``fastbp`` for ``fastbp.backends._cpu_loop``), found from
    ``py_file`` by the module's dotted name, or of the file alone for a module in no package. The
    training loop inlines functions of other modules (``backends/_views.py``, ``lowering.py``):
    stamped with its own file only, its cached code outlived an edit of theirs."""
    depth = module.count(".") + (os.path.basename(py_file) == "__init__.py")
    if depth == 0:
        return _file_hash(py_file)
    root = os.path.dirname(os.path.abspath(py_file))
    for _ in range(depth - 1):
        root = os.path.dirname(root)
    return _package_hash(root)


# Why nothing is cached, for ``fastbp info``; None where caching is on.
OFF_REASON = None if _enabled() else "FASTBP_NO_CACHE is set"


def _off(reason):
    global OFF_REASON
    OFF_REASON = reason


def _root():
    """The cache root and whether it may be written: the first candidate that exists or can be
    made; (None, False) where caching is off, refused or impossible."""
    if not _enabled():
        return None, False
    candidates = _candidate_roots()
    for root in candidates:
        existed = os.path.isdir(root)
        if not existed and not _make_private(root):
            continue
        problem = _trust_problem(root)
        if problem is not None:
            # Never fall through to another folder: a planted folder is an attack on this user,
            # and they should hear of it.
            _off(f"{root} {problem}")
            _warn_once(f"fastbp: not using the compiled-kernel cache folder {root}: it {problem}. "
                       f"Kernels compile afresh in every process until it is removed or fixed "
                       f"(chmod go-w, or chown to this user), or FASTBP_CACHE_DIR names another folder")
            return None, False
        return root, _can_write(root)
    _off(f"no folder could be made (tried {', '.join(candidates)})")
    _warn_once(f"fastbp: no folder for the compiled-kernel cache could be made (tried {candidates}); "
               f"kernels compile afresh in every process")
    return None, False


def _tree_folder(root, writable):
    """This kernel tree's folder under ``root``, made if it may be; None where it is refused."""
    if root is None:
        return None
    folder = os.path.join(root, TREE_HASH[:_TREE_NAME_LENGTH])
    if not os.path.lexists(folder):
        if not writable:
            return folder  # nothing to load yet, nothing to save: every lookup misses
        _make_private(folder)
    problem = _trust_problem(folder, follow=False)
    if problem is not None:
        _off(f"{folder} {problem}")
        _warn_once(f"fastbp: not using the compiled-kernel cache folder {folder}: it {problem}; "
                   f"kernels compile afresh in every process")
        return None
    return folder


TREE_HASH = tree_hash()
ROOT, WRITABLE = _root()
# The folder of this kernel tree's compiled code; None when nothing is cached.
FOLDER = _tree_folder(ROOT, WRITABLE)
if FOLDER is None:
    ROOT = None


def _checked_path(path):
    """Make (where allowed) and check every folder from FOLDER down to ``path``; the first problem
    as (folder, why), or None. Results are remembered: a process checks each folder once."""
    if path in _CHECKED:
        return _CHECKED[path]
    parent = os.path.dirname(path)
    problem = _checked_path(parent) if path != FOLDER and parent != path else None
    if problem is None and path != FOLDER:
        if not os.path.lexists(path) and WRITABLE:
            try:
                os.mkdir(path, 0o700)
            except FileExistsError:
                pass
            except OSError as exc:
                problem = (path, f"cannot be made ({exc.strerror})")
        if problem is None and os.path.lexists(path):
            why = _trust_problem(path, follow=False)
            problem = None if why is None else (path, why)
    _CHECKED[path] = problem
    return problem


_CHECKED = {}


def _is_tree_folder(path):
    name = os.path.basename(path)
    return (os.path.isdir(path) and len(name) == _TREE_NAME_LENGTH
            and all(c in "0123456789abcdef" for c in name))


class _LocatorMixin:
    """Caches a function under FOLDER/<its module>, stamped with the kernel tree's hash."""

    def __init__(self, py_func, py_file):
        # numba's own locators' attributes, which its warnings read (a function it cannot cache).
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        # A twin compiled without numba's wrappers (``_jit.compiled_only``) has entries of its own.
        self._tag = getattr(py_func, "_fastbp_cache_tag", "")
        self._cache_path = os.path.join(FOLDER, py_func.__module__)
        inside = os.path.realpath(py_file).startswith(_PACKAGE_DIR + os.sep)
        self._stamp = TREE_HASH
        if not inside:
            # A folder per version of the sources too: numba unpickles a function's whole index
            # before it compares stamps, and an index written by another version of the file
            # names its classes (a namedtuple of the loop's, renamed since: AttributeError).
            sources = source_hash(py_file, py_func.__module__)
            self._stamp += sources
            self._cache_path = os.path.join(self._cache_path, sources[:_TREE_NAME_LENGTH])

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return self._stamp

    def get_disambiguator(self):
        return f"{self._lineno}{self._tag}"

    def ensure_cache_path(self):
        """Check the folders down to this function's (numba calls it before a save); writing is
        ``_Guarded.save_overload``'s concern, so a read-only cache still loads."""
        problem = _checked_path(self._cache_path)
        if problem is not None:
            raise OSError(f"compiled-kernel cache folder {problem[0]} {problem[1]}")

    @classmethod
    def from_function(cls, py_func, py_file):
        if FOLDER is None or not os.path.exists(py_file):
            return None
        self = cls(py_func, py_file)
        # A refused folder still gives a locator (numba raises without one); the cache that
        # holds it is disabled (``_Guarded.__init__``).
        self.refused = _checked_path(self._cache_path)
        if self.refused is not None:
            _warn_once(f"fastbp: not using the compiled-kernel cache folder {self.refused[0]}: it "
                       f"{self.refused[1]}; the kernels under it compile afresh in every process",
                       kind=self.refused[0])
        return self


class _Guarded:
    """What fastbp's cache classes add to numba's: an entry that fails to load is dropped and
    compiled again; a save that fails (a read-only cache) is skipped."""

    def __init__(self, py_func):
        super().__init__(py_func)
        if self._impl.locator.refused is not None:
            self.disable()

    def load_overload(self, sig, target_context):
        try:
            return super().load_overload(sig, target_context)
        except Exception as exc:  # a garbled pickle raises anything: UnpicklingError, EOFError, ...
            _warn_once(f"fastbp: dropped a compiled-kernel cache entry that could not be loaded "
                       f"({self._cache_file._index_path}: {type(exc).__name__}); it is compiled again "
                       f"(later entries that fail to load are dropped without a word)", kind="dropped")
            self._drop_entries()
            return None

    def may_hold(self):
        """False when nothing of this function was ever cached (its index file is missing): known
        without numba's target context, whose set-up a ``load_overload`` needs (0.4-0.5 s, once
        per process)."""
        return os.path.exists(self._cache_file._index_path)

    def _drop_entries(self):
        """Remove this function's index and data files (all signatures: the index names them)."""
        index = self._cache_file._index_path
        folder, base = os.path.dirname(index), os.path.basename(index)[:-len(".nbi")]
        try:
            names = os.listdir(folder)
        except OSError:
            return
        for name in names:
            if name == base + ".nbi" or (name.startswith(base + ".") and name.endswith(".nbc")):
                try:
                    os.unlink(os.path.join(folder, name))
                except OSError:
                    pass

    def save_overload(self, sig, data):
        if not WRITABLE:
            return
        try:
            super().save_overload(sig, data)
        except OSError as exc:
            _warn_once(f"fastbp: could not save compiled kernels to the cache ({exc}); "
                       f"they are compiled again in the next process")


def _cache_class(cache_base, impl_base, locator_base):
    """A numba cache class (CPU or CUDA) whose only locator is fastbp's."""
    locator = type("FastbpCacheLocator", (_LocatorMixin, locator_base), {})
    impl = type("FastbpCacheImpl", (impl_base,), {"_locator_classes": [locator]})
    return type("FastbpFunctionCache", (_Guarded, cache_base), {"_impl_class": impl})


def _cpu_cache_class():
    from numba.core import caching

    return _cache_class(caching.FunctionCache, caching.CompileResultCacheImpl, caching._CacheLocator)


def _cuda_cache_class():
    from numba.cuda import dispatcher
    from numba.cuda.core import caching

    return _cache_class(dispatcher.CUDACache, dispatcher.CUDACacheImpl, caching._CacheLocator)


_CACHE_CLASSES = {"cpu": _cpu_cache_class, "cuda": _cuda_cache_class}


def _enable(dispatcher, target):
    if FOLDER is None:
        return dispatcher
    make = _CACHE_CLASSES[target]
    if not isinstance(make, type):
        make = _CACHE_CLASSES[target] = make()  # built once, on first use
    dispatcher._cache = make(dispatcher.py_func)
    return dispatcher


def enable_cpu(dispatcher):
    """Give a CPU dispatcher (made with cache=False) fastbp's on-disk cache."""
    return _enable(dispatcher, "cpu")


def enable_cuda(dispatcher):
    """Give a numba-cuda kernel dispatcher fastbp's on-disk cache (not under the simulator)."""
    return _enable(dispatcher, "cuda")


def info():
    """What ``fastbp info`` reports: the folder, whether caching is on, and how warm it is."""
    files = nbytes = indexes = 0
    if FOLDER and os.path.isdir(FOLDER):
        for folder, _, names in os.walk(FOLDER):
            for name in names:
                files += 1
                indexes += name.endswith(".nbi")
                nbytes += os.path.getsize(os.path.join(folder, name))
    others = []
    if ROOT and os.path.isdir(ROOT):
        others = [d for d in os.listdir(ROOT)
                  if _is_tree_folder(os.path.join(ROOT, d)) and d != os.path.basename(FOLDER)]
    return {"enabled": FOLDER is not None, "root": ROOT, "folder": FOLDER, "writable": bool(FOLDER and WRITABLE),
            "files": files, "indexes": indexes, "bytes": nbytes, "stale_trees": len(others)}


def clear():
    """Remove the cached kernels of every fastbp version from ROOT; returns the bytes freed.

    Only the tree folders fastbp made are removed, never anything else a user
    keeps in a FASTBP_CACHE_DIR they chose.
    """
    if not ROOT or not os.path.isdir(ROOT):
        return 0
    freed = 0
    for entry in os.listdir(ROOT):
        path = os.path.join(ROOT, entry)
        if _is_tree_folder(path):
            freed += sum(os.path.getsize(os.path.join(f, n)) for f, _, names in os.walk(path) for n in names)
            shutil.rmtree(path, ignore_errors=True)
    return freed
