"""The compiled-kernel cache: where it lands, what invalidates it, and a real install.

numba's cache=True writes beside the sources, i.e. into site-packages, where pip
neither records nor removes the files (an editable reinstall then imported the
leftover folder as an empty namespace package). kernels/_cache.py moves it to a
per-user folder keyed on the whole kernel tree; these tests hold it there.
"""
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

import fastbp.kernels
from fastbp.kernels import _cache

REPO = Path(__file__).resolve().parents[1]
KERNELS_DIR = Path(fastbp.kernels.__file__).resolve().parent

# Compiles one small kernel (a few seconds cold) and reports the cache's view of it.
_PROBE = textwrap.dedent("""
    import json, numpy as np
    import fastbp.kernels as k
    from fastbp.kernels import _cache
    x = np.ones((5, 3), np.float32); w = np.ones((3, 2), np.float32)
    b = np.zeros(2, np.float32); out = np.empty((5, 2), np.float32)
    k.dense_forward(out, x, w, b)
    stats = k.cpu.dense_forward.stats
    print(json.dumps(dict(_cache.info(), hits=sum(stats.cache_hits.values()),
                          misses=sum(stats.cache_misses.values()), package=k.__file__)))
""")


def _probe(env_updates, cwd, python=sys.executable):
    env = {k: v for k, v in os.environ.items()
           if k not in ("FASTBP_CACHE_DIR", "NUMBA_CACHE_DIR", "FASTBP_NO_CACHE")}
    env.update(env_updates)
    done = subprocess.run([python, "-c", _PROBE], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _compiled_files(folder):
    return sorted(str(p) for p in Path(folder).rglob("*") if p.suffix in (".nbi", ".nbc"))


def test_cache_lands_in_the_user_folder_and_is_reused(tmp_path):
    cache = tmp_path / "cache"
    first = _probe({"FASTBP_CACHE_DIR": str(cache)}, tmp_path)
    assert first["enabled"] and first["root"] == str(cache)
    assert first["folder"] == str(cache / _cache.TREE_HASH[:20])
    assert first["misses"] == 1 and first["hits"] == 0
    assert first["indexes"] >= 1 and _compiled_files(cache)
    second = _probe({"FASTBP_CACHE_DIR": str(cache)}, tmp_path)
    assert second["hits"] == 1 and second["misses"] == 0
    # Nothing compiled lands beside the sources.
    assert _compiled_files(KERNELS_DIR) == []


def test_numba_cache_dir_is_honoured_and_no_cache_turns_it_off(tmp_path):
    shared = tmp_path / "numba"
    info = _probe({"NUMBA_CACHE_DIR": str(shared)}, tmp_path)
    assert info["root"] == str(shared / "fastbp") and _compiled_files(shared / "fastbp")
    off = _probe({"FASTBP_NO_CACHE": "1", "FASTBP_CACHE_DIR": str(tmp_path / "off")}, tmp_path)
    assert not off["enabled"] and off["folder"] is None and off["hits"] == 0
    assert not (tmp_path / "off").exists()


def test_a_kernel_numba_will_not_cache_runs_with_its_warning(tmp_path):
    # Unoptimized (NUMBA_OPT=0), numba's code refers to addresses it will not save, and its
    # warning that says so read attributes of the cache's locator that fastbp's lacked.
    info = _probe({"FASTBP_CACHE_DIR": str(tmp_path / "cache"), "NUMBA_OPT": "0"}, tmp_path)
    assert info["misses"] == 1


def _copy_tree(dst):
    shutil.copytree(KERNELS_DIR, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_tree_hash_follows_content_of_every_kernel_module(tmp_path):
    tree = _copy_tree(tmp_path / "kernels")
    base = _cache.tree_hash(tree)
    assert base == _cache.TREE_HASH
    # A new date alone changes nothing ...
    os.utime(tree / "_scalar.py", (1, 1))
    assert _cache.tree_hash(tree) == base
    # ... an edit to the scalar formulas, to a _jit.py constant or a new module does.
    for name, edit in (("_scalar.py", "\n# edited\n"), ("_jit.py", "\nPARALLEL_MIN_ELEMENTS = 1\n"),
                       ("cpu/new_module.py", "X = 1\n")):
        path = tree / name
        before = _cache.tree_hash(tree)
        with open(path, "a") as fh:
            fh.write(edit)
        assert _cache.tree_hash(tree) != before, name


def test_code_outside_the_kernels_is_stamped_with_its_package_too(tmp_path):
    import numba

    from fastbp.backends import _cpu_loop
    from fastbp.kernels.cpu import dense

    loop_cache = _cpu_loop.train_batches._cache
    kernel_cache = dense.dense_forward._cache
    if _cache.FOLDER is None:
        pytest.skip("caching is off in this process")
    kernel_stamp = kernel_cache._impl.locator.get_source_stamp()
    loop_stamp = loop_cache._impl.locator.get_source_stamp()
    assert kernel_stamp == _cache.TREE_HASH
    assert loop_stamp.startswith(_cache.TREE_HASH) and loop_stamp != kernel_stamp
    sources = _cache.source_hash(_cpu_loop.__file__, _cpu_loop.__name__)
    folder = os.path.join(_cache.FOLDER, "fastbp.backends._cpu_loop", sources[:20])
    assert loop_cache.cache_path == folder
    assert isinstance(loop_cache, numba.core.caching.Cache)


def test_an_edit_of_any_module_of_the_package_outside_the_kernels_restamps_its_compiled_code(tmp_path):
    # The loop inlines lowering's views (compiled by backends/_views.py): an edit to lowering.py
    # must not leave the loop's cached code, built with the old offsets, in use.
    import importlib.util

    import numba

    if _cache.FOLDER is None:
        pytest.skip("caching is off in this process")
    package = tmp_path / "pkg"
    (package / "backends").mkdir(parents=True)
    for name in ("__init__.py", "lowering.py", "backends/__init__.py"):
        (package / name).write_text("X = 1\n")
    (package / "backends" / "loop.py").write_text("def f():\n    return 1\n")

    def stamp():
        _cache._package_hash.cache_clear()  # hashes are kept per process: sources do not change under it
        spec = importlib.util.spec_from_file_location("pkg.backends.loop", package / "backends" / "loop.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return _cache.enable_cpu(numba.njit(cache=False)(module.f))._cache._impl.locator.get_source_stamp()

    before = stamp()
    assert stamp() == before
    # The package is the module's own, found by its dotted name, even where the folders above it
    # are packages too (a vendored copy); an editor's lock file, a dangling link, is passed over.
    (tmp_path / "__init__.py").write_text("")
    (tmp_path / "other.py").write_text("Y = 1\n")
    os.symlink(tmp_path / "nowhere", package / ".#lowering.py")
    assert stamp() == before
    (package / "lowering.py").write_text("X = 2\n")
    assert stamp() != before


def test_each_version_of_a_file_outside_the_kernels_has_a_cache_folder_of_its_own(tmp_path, monkeypatch):
    # numba unpickles a function's whole index before comparing stamps: an index written by
    # another version of the file could name a class that version had and this one lacks.
    import importlib.util

    import numba

    if _cache.FOLDER is None:
        pytest.skip("caching is off in this process")
    paths = []
    for version, body in enumerate(("return 1", "return 2")):
        source = tmp_path / f"v{version}" / "loopish.py"
        source.parent.mkdir()
        source.write_text(f"def f():\n    {body}\n")
        spec = importlib.util.spec_from_file_location("loopish", source)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        dispatcher = _cache.enable_cpu(numba.njit(cache=False)(module.f))
        paths.append(dispatcher._cache.cache_path)
    assert paths[0] != paths[1]
    assert all(os.path.dirname(p) == os.path.join(_cache.FOLDER, "loopish") for p in paths)


def test_cuda_kernels_use_the_same_folder(tmp_path):
    # The real numba-cuda dispatcher (not the simulator), built without a GPU: where would it cache?
    script = textwrap.dedent("""
        import json
        from numba import cuda
        from fastbp.kernels import _cache

        def scale(x):
            i = cuda.grid(1)
            if i < x.size:
                x[i] *= 2.0

        d = _cache.enable_cuda(cuda.jit(scale))
        print(json.dumps([d._cache.cache_path, _cache.FOLDER]))
    """)
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    env["FASTBP_CACHE_DIR"] = str(tmp_path)
    # From a file: numba caches only functions whose source file exists.
    (tmp_path / "probe.py").write_text(script)
    done = subprocess.run([sys.executable, "probe.py"], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    if done.returncode and "numba" in done.stderr and "cuda" in done.stderr.lower():
        pytest.skip(f"numba-cuda cannot build a dispatcher here: {done.stderr.splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    path, folder = json.loads(done.stdout.strip().splitlines()[-1])
    # A file outside the kernels: a folder of its own per version of the file.
    digest = _cache._file_hash(str(tmp_path / "probe.py"))[:20]
    assert path == os.path.join(folder, "__main__", digest) and folder.startswith(str(tmp_path))


def test_clear_removes_only_tree_folders(tmp_path, monkeypatch):
    keep = tmp_path / "notes.txt"
    keep.write_text("mine")
    (tmp_path / "my-folder").mkdir()
    old = tmp_path / ("0" * 20)
    old.mkdir()
    (old / "x.nbc").write_bytes(b"1234")
    monkeypatch.setattr(_cache, "ROOT", str(tmp_path))
    assert _cache.clear() == 4
    assert not old.exists() and keep.exists() and (tmp_path / "my-folder").exists()


@pytest.mark.slow
def test_install_first_run_and_uninstall_leave_site_packages_clean(tmp_path):
    """pip install . into a scratch environment, run a kernel, pip uninstall: nothing of fastbp's stays.

    The scratch environment reuses this one's packages through a .pth line (numpy, numba, scipy and
    the build backend), so only fastbp itself is installed: seconds, no network.
    """
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                               check=True, capture_output=True, text=True).stdout.strip())
    outer = sysconfig.get_paths()["purelib"]
    (site / "_outer_packages.pth").write_text(outer + "\n")
    pip = [sys.executable, "-m", "pip", "--python", str(python), "--disable-pip-version-check"]
    build = tmp_path / "src"
    shutil.copytree(REPO, build, symlinks=True,
                    ignore=shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "build", ".asv",
                                                  "results"))
    done = subprocess.run(pip + ["install", "--no-deps", "--no-build-isolation", "--no-index", str(build)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    installed = site / "fastbp"
    assert (installed / "kernels" / "cpu" / "dense.py").exists()

    info = _probe({"FASTBP_CACHE_DIR": str(tmp_path / "cache")}, tmp_path, python=str(python))
    assert Path(info["package"]).resolve().is_relative_to(installed.resolve())
    assert info["misses"] == 1 and _compiled_files(tmp_path / "cache")
    assert _compiled_files(installed) == []

    done = subprocess.run(pip + ["uninstall", "--yes", "fastbp"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    left = sorted(p.name for p in site.iterdir() if p.name.lower().startswith("fastbp"))
    assert left == [], f"pip uninstall left {left} in {site}"
