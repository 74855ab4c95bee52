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
  Windows). Where none is writable, a per-user folder in the temporary
  directory; where that fails too, nothing is cached. ``FASTBP_NO_CACHE=1``
  turns caching off.
- Inside it, one subfolder per *kernel tree*: a hash of every source file of
  this package (``fastbp.kernels``), the numba version, the Python version
  and ``FASTBP_SIMD_WIDTH`` where set. Any edit to any kernel module,
  ``_scalar.py`` and ``_jit.py`` included, or another fastbp release,
  selects a fresh subfolder, so a stale cache is never loaded. Compiled code outside this package (the training
  loop) takes the tree hash plus its own file's hash as its source stamp, and a folder per
  version of its file; its compile-time constants come from this package, so they are covered
  too.

Old subfolders are left in place (another environment may still use them);
``clear()`` removes the whole folder.
"""
import hashlib
import os
import shutil
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


def _writable(folder):
    try:
        os.makedirs(folder, exist_ok=True)
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
    for folder, subfolders, files in os.walk(package_dir):
        subfolders[:] = sorted(d for d in subfolders if d != "__pycache__")
        for name in sorted(files):
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                h.update(os.path.relpath(path, package_dir).replace(os.sep, "/").encode())
                with open(path, "rb") as fh:
                    h.update(hashlib.sha256(fh.read()).digest())
    return h.hexdigest()


def _file_hash(path):
    with open(path, "rb") as fh:
        return hashlib.sha256(fh.read()).hexdigest()


def _root():
    if not _enabled():
        return None
    candidates = _candidate_roots()
    root = next((root for root in candidates if _writable(root)), None)
    if root is None:
        warnings.warn(f"fastbp: no writable folder for the compiled-kernel cache (tried {candidates}); "
                      f"kernels compile afresh in every process", RuntimeWarning, stacklevel=2)
    return root


TREE_HASH = tree_hash()
ROOT = _root()
# The folder of this kernel tree's compiled code; None when nothing is cached.
FOLDER = os.path.join(ROOT, TREE_HASH[:_TREE_NAME_LENGTH]) if ROOT else None


def _is_tree_folder(path):
    name = os.path.basename(path)
    return (os.path.isdir(path) and len(name) == _TREE_NAME_LENGTH
            and all(c in "0123456789abcdef" for c in name))


class _LocatorMixin:
    """Caches a function under FOLDER/<its module>, stamped with the kernel tree's hash."""

    def __init__(self, py_func, py_file):
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(FOLDER, py_func.__module__)
        inside = os.path.realpath(py_file).startswith(_PACKAGE_DIR + os.sep)
        self._stamp = TREE_HASH
        if not inside:
            # A folder per version of the file too: numba unpickles a function's whole index
            # before it compares stamps, and an index written by another version of the file
            # names its classes (a namedtuple of the loop's, renamed since: AttributeError).
            file_hash = _file_hash(py_file)
            self._stamp += file_hash
            self._cache_path = os.path.join(self._cache_path, file_hash[:_TREE_NAME_LENGTH])

    def get_cache_path(self):
        return self._cache_path

    def get_source_stamp(self):
        return self._stamp

    def get_disambiguator(self):
        return str(self._lineno)

    @classmethod
    def from_function(cls, py_func, py_file):
        if FOLDER is None or not os.path.exists(py_file):
            return None
        self = cls(py_func, py_file)
        try:
            self.ensure_cache_path()
        except OSError:
            return None
        return self


def _cache_class(cache_base, impl_base, locator_base):
    """A numba cache class (CPU or CUDA) whose only locator is fastbp's."""
    locator = type("FastbpCacheLocator", (_LocatorMixin, locator_base), {})
    impl = type("FastbpCacheImpl", (impl_base,), {"_locator_classes": [locator]})
    return type("FastbpFunctionCache", (cache_base,), {"_impl_class": impl})


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
    return {"enabled": FOLDER is not None, "root": ROOT, "folder": FOLDER, "files": files,
            "indexes": indexes, "bytes": nbytes, "stale_trees": len(others)}


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
