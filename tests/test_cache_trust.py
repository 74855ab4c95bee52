"""The cache folder is input: planted, garbled or read-only caches never run foreign code, break a
fit or go unused.

numba's index files are pickles and its data files machine code, so a cache folder that someone
else can write to is code that runs as the user. Each test runs a fresh process on a cache folder
it prepares (kernels/_cache.py).
"""
import json
import os
import pickle
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

# Compiles (or loads) one small kernel and reports the cache's view of it.
_PROBE = textwrap.dedent("""
    import json, os, warnings
    warnings.simplefilter("always")
    with warnings.catch_warnings(record=True) as caught:
        import numpy as np
        import fastbp.kernels as k
        from fastbp.kernels import _cache
        x = np.ones((5, 3), np.float32); w = np.ones((3, 2), np.float32)
        b = np.zeros(2, np.float32); out = np.empty((5, 2), np.float32)
        k.dense_forward(out, x, w, b)
        if os.environ.get("PROBE_ALSO_RELU"):
            k.relu_forward(out, out)
    stats = k.cpu.dense_forward.stats
    print(json.dumps(dict(_cache.info(), hits=sum(stats.cache_hits.values()),
                          misses=sum(stats.cache_misses.values()), out=out.tolist(),
                          warnings=[str(w.message) for w in caught if "fastbp" in str(w.message)])))
""")


def _read_only_command(folder, command):
    """``command`` run where ``folder`` is a read-only mount (a private mount namespace)."""
    script = (f'mount --bind "{folder}" "{folder}" && mount -o remount,ro,bind "{folder}" && exec "$@"')
    return ["unshare", "-m", "sh", "-c", script, "sh", *command]


def _can_mount_read_only(tmp_path):
    folder = tmp_path / "probe-ro"
    folder.mkdir()
    try:
        done = subprocess.run(_read_only_command(folder, ["sh", "-c", f'! touch "{folder}/x" 2>/dev/null']),
                              capture_output=True, timeout=60)
    except OSError:
        return False
    return done.returncode == 0


def _probe(cache, cwd, read_only=False, also_relu=False):
    env = {k: v for k, v in os.environ.items() if k not in ("NUMBA_CACHE_DIR", "FASTBP_NO_CACHE")}
    env["FASTBP_CACHE_DIR"] = str(cache)
    if also_relu:
        env["PROBE_ALSO_RELU"] = "1"
    command = [sys.executable, "-c", _PROBE]
    if read_only:
        command = _read_only_command(cache, command)
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _indexes(folder):
    return sorted(Path(folder).rglob("*.nbi"))


class _Payload:
    """A pickle that, when loaded, creates a file: what a planted index could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant(cache, marker):
    """Replace every index under ``cache`` with one whose unpickling runs code."""
    for index in _indexes(cache):
        index.write_bytes(pickle.dumps(_Payload(marker)))


@pytest.mark.parametrize("how", ["world-writable", "another owner"])
def test_a_cache_folder_another_user_controls_is_neither_loaded_nor_written(tmp_path, how):
    if how == "another owner" and os.geteuid() != 0:
        pytest.skip("giving a folder to another user needs root")
    cache, marker = tmp_path / "cache", tmp_path / "payload-ran"
    _probe(cache, tmp_path)  # a real cache, so that the planted files sit where numba looks
    _plant(cache, marker)
    if how == "world-writable":
        os.chmod(cache, 0o777)
    else:
        for folder in [cache, *[p for p in cache.rglob("*")]]:
            os.chown(folder, 12345, 12345)
    before = sorted(p.name for p in cache.rglob("*"))
    info = _probe(cache, tmp_path)
    assert not marker.exists(), "a planted cache index was unpickled"
    assert not info["enabled"] and info["hits"] == 0 and info["misses"] == 1
    assert info["out"] == [[0.0, 0.0]] * 0 + [[3.0, 3.0]] * 5
    assert len(info["warnings"]) == 1 and str(cache) in info["warnings"][0]
    assert ("other users" in info["warnings"][0]) == (how == "world-writable")
    assert sorted(p.name for p in cache.rglob("*")) == before


def test_a_writable_subfolder_inside_a_private_cache_is_refused(tmp_path):
    cache, marker = tmp_path / "cache", tmp_path / "payload-ran"
    _probe(cache, tmp_path)
    module_folder = _indexes(cache)[0].parent
    _plant(module_folder, marker)
    os.chmod(module_folder, 0o777)
    info = _probe(cache, tmp_path)
    assert not marker.exists()
    assert info["hits"] == 0 and info["misses"] == 1
    assert any(str(module_folder) in w for w in info["warnings"])


def test_new_cache_folders_are_private(tmp_path):
    cache = tmp_path / "cache"
    _probe(cache, tmp_path)
    folders = [cache, *[p for p in cache.rglob("*") if p.is_dir()]]
    assert len(folders) >= 3
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o700 for p in folders), \
        [(str(p), oct(p.stat().st_mode)) for p in folders]


@pytest.mark.parametrize("damage", ["empty", "truncated", "garbage"])
def test_a_corrupt_cache_entry_is_dropped_and_compiled_again(tmp_path, damage):
    cache = tmp_path / "cache"
    _probe(cache, tmp_path)
    files = sorted(p for p in cache.rglob("*") if p.suffix in (".nbi", ".nbc"))
    assert files
    for path in files:
        data = path.read_bytes()
        path.write_bytes({"empty": b"", "truncated": data[:len(data) // 2],
                          "garbage": os.urandom(len(data))}[damage])
    info = _probe(cache, tmp_path)
    assert info["misses"] == 1 and info["hits"] == 0 and info["out"] == [[3.0, 3.0]] * 5
    assert len(info["warnings"]) == 1 and "dropped" in info["warnings"][0]
    # The entry was written again, so the next process loads it without a word.
    again = _probe(cache, tmp_path)
    assert again["hits"] == 1 and again["misses"] == 0 and again["warnings"] == []


def test_a_read_only_cache_is_loaded(tmp_path):
    if not _can_mount_read_only(tmp_path):
        pytest.skip("a read-only mount needs unshare and mount (root in a container, or a user namespace)")
    cache = tmp_path / "cache"
    _probe(cache, tmp_path)
    files = sorted(p.name for p in cache.rglob("*"))
    # relu_forward is not in the cache: it compiles here, and saving it is skipped.
    info = _probe(cache, tmp_path, read_only=True, also_relu=True)
    assert info["enabled"] and not info["writable"]
    assert info["hits"] == 1 and info["misses"] == 0 and info["warnings"] == []
    assert sorted(p.name for p in cache.rglob("*")) == files

