"""A crash while saving never destroys a model.

``Sequential.save`` writes a temporary file beside the target and renames it over
the target once it is whole and on disk. These tests kill a saving process at
random moments, fill the disk, and take away write permission, and check each
time that the file at the path is a whole model: the new one or the old one,
byte for byte, never a mixture, and that no temporary file is left behind except
by a process that was killed while writing it, and that one only until the next save
to that path.
"""
import errno
import os
import re
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pytest

import fastbp
from fastbp import Dense, Sequential

ROOT = Path(fastbp.__file__).resolve().parent.parent


def named(path):
    return re.escape(str(path))


def temporaries(folder):
    return sorted(p.name for p in Path(folder).iterdir() if ".fastbp-tmp-" in p.name)


# ----- a process killed while saving -----------------------------------------------------------


def wide_model():
    # The model SAVER builds: 66k float64 parameters (half a megabyte), so that a
    # save lasts long enough to be killed in the middle of it.
    return Sequential([Dense(64, 512, activation="tanh"), Dense(512, 64)], dtype="float64", seed=0)


# A server that imports fastbp once and forks a saver process per command: "loop"
# saves version k (theta = initial theta + k) for k = 1, 2, ... until killed, "once k"
# saves version k and exits. It answers with the saver's pid, then with its exit
# status once it has ended (the test kills the looping ones).
SERVER = """
import itertools, os, sys
import fastbp
model = fastbp.Sequential([fastbp.Dense(64, 512, activation="tanh"), fastbp.Dense(512, 64)],
                          dtype="float64", seed=0)
base = model.get_flat_weights()
print("ready", flush=True)
for line in sys.stdin:
    command = line.split()
    pid = os.fork()
    if pid == 0:
        for k in (itertools.count(1) if command[0] == "loop" else [int(command[1])]):
            model.set_flat_weights(base + k)
            model.save(sys.argv[1])
        os._exit(0)
    print(pid, flush=True)
    print(os.waitpid(pid, 0)[1], flush=True)
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")
def test_a_save_killed_at_any_moment_leaves_a_whole_model(tmp_path):
    folder = tmp_path / "models"
    folder.mkdir()
    path = folder / "model.npz"
    reference = wide_model()
    base = reference.get_flat_weights()
    reference.save(path)  # version 0
    X = np.random.default_rng(0).normal(size=(7, 64))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    log = tmp_path / "server.err"
    server = subprocess.Popen([sys.executable, "-c", SERVER, str(path)], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log.open("w"))

    def ask(command):
        server.stdin.write(command + "\n")
        server.stdin.flush()
        answer = server.stdout.readline()
        assert answer.strip().isdigit(), log.read_text()
        return int(answer)

    running = None
    try:
        assert server.stdout.readline() == "ready\n", log.read_text()
        rng = np.random.default_rng(10)
        left, versions, landed = [], [], 0
        for _ in range(8):
            running = running_pid = ask("loop")
            time.sleep(rng.uniform(0.05, 0.3))
            os.kill(running, signal.SIGKILL)
            running = None
            status = int(server.stdout.readline())
            assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, log.read_text()
            loaded = fastbp.load(path)
            version = round(loaded.theta[0] - base[0])
            np.testing.assert_array_equal(loaded.theta, base + version)
            reference.set_flat_weights(base + version)
            assert np.array_equal(loaded.decision_function(X), reference.decision_function(X))
            versions.append(version)
            # The killed process may leave the one temporary file it was writing, no other:
            # its first save removed those of the processes killed before it.
            now = temporaries(folder)
            assert len(now) <= 1, (left, now)
            assert sorted(os.listdir(folder)) == sorted(["model.npz"] + now)
            if now:
                assert now[0].startswith(".model.npz.fastbp-tmp-") and f"-{running_pid}-" in now[0], now
                landed += 1
            left = now
        # The test must be able to fail: the savers got to replace the file, and kills hit
        # saves in progress. A save loop spends about two thirds of its time with a
        # temporary file open (the rest in fsync of the folder, after the rename), so
        # eight kills all missing one is a chance below 1 in 1000.
        assert max(versions) >= 1, versions
        assert landed, "no kill landed inside a save"

        # A fresh process saves, removes the leftover of the killed one, and leaves none of its own.
        ask("once 1000000")
        assert int(server.stdout.readline()) == 0, log.read_text()
        np.testing.assert_array_equal(fastbp.load(path).theta, base + 1000000)
        assert temporaries(folder) == []
    finally:
        if running is not None:
            os.kill(running, signal.SIGKILL)
        server.stdin.close()
        server.wait(timeout=60)


def test_a_save_removes_dead_processes_leftovers_and_leaves_live_ones(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    path = tmp_path / "model.npz"
    host = fastbp._persist._HOST
    ended = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                           text=True, check=True)
    dead_pid = int(ended.stdout)
    live = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)
    try:
        names = {
            "dead": f".model.npz.fastbp-tmp-{host}-{dead_pid}-abc_12",
            "live": f".model.npz.fastbp-tmp-{host}-{live.pid}-def_34",
            "live-but-idle": f".model.npz.fastbp-tmp-{host}-{live.pid}-ghi_56",
            "other-host": f".model.npz.fastbp-tmp-elsewhere-{dead_pid}-jkl_78",
            "other-target": f".other.npz.fastbp-tmp-{host}-{dead_pid}-mno_90",
            "not-ours": ".model.npz.fastbp-tmp-notes",
        }
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        hours_ago = time.time() - 2 * 3600
        os.utime(tmp_path / names["live-but-idle"], (hours_ago, hours_ago))
        model.save(path)
        assert sorted(os.listdir(tmp_path)) == sorted(
            ["model.npz", names["live"], names["other-host"], names["other-target"], names["not-ours"]])
        assert fastbp.load(path).get_config() == model.get_config()
    finally:
        live.stdin.close()
        live.wait(timeout=60)


# ----- a save that fails ----------------------------------------------------------------------


@pytest.fixture
def saved(tmp_path):
    """A model saved at tmp_path/model.npz, then changed: the next save would differ."""
    model = Sequential([Dense(3, 5, activation="relu"), Dense(5, 2)], seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    old = path.read_bytes()
    model.theta += 1
    return model, path, old


def assert_untouched(path, old):
    assert path.read_bytes() == old
    assert os.listdir(path.parent) == [path.name]


class DiskFull:
    """A file that takes ``room`` bytes and then fails as a full disk does."""

    def __init__(self, fh, room, error):
        self.fh, self.room, self.error = fh, room, error

    def write(self, data):
        if len(data) > self.room:
            raise self.error
        self.room -= len(data)
        return self.fh.write(data)

    def __getattr__(self, name):
        return getattr(self.fh, name)


def test_a_full_disk_in_the_middle_of_the_write(saved, monkeypatch):
    model, path, old = saved
    savez = np.savez
    written = []

    def savez_on_a_full_disk(file, **arrays):
        written.extend(temporaries(path.parent))
        savez(DiskFull(file, 600, OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))), **arrays)

    monkeypatch.setattr(np, "savez", savez_on_a_full_disk)
    with pytest.raises(OSError, match=rf"could not save the model to '{named(path)}': "
                                      rf"{os.strerror(errno.ENOSPC)}; a file already there is left") as info:
        model.save(path)
    assert info.value.errno == errno.ENOSPC
    assert len(written) == 1 and written[0].startswith(".model.npz.")  # it wrote a temporary file
    assert_untouched(path, old)


def test_a_full_disk_at_fsync(saved, monkeypatch):
    model, path, old = saved

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=rf"{named(path)}.*: {os.strerror(errno.ENOSPC)}") as info:
        model.save(path)
    assert info.value.errno == errno.ENOSPC
    assert_untouched(path, old)


def test_an_interrupt_in_the_middle_of_the_write(saved, monkeypatch):
    model, path, old = saved
    savez = np.savez
    monkeypatch.setattr(np, "savez", lambda file, **arrays: savez(DiskFull(file, 600, KeyboardInterrupt()),
                                                                  **arrays))
    with pytest.raises(KeyboardInterrupt):
        model.save(path)
    assert_untouched(path, old)


def test_a_read_only_folder(saved, monkeypatch):
    model, path, old = saved
    folder = path.parent
    if not hasattr(os, "geteuid") or os.geteuid() == 0:
        # root writes into a read-only folder anyway (and Windows folders have no such
        # mode): refuse the temporary file the way the OS would.
        def mkstemp(*args, **kwargs):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES))

        monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    try:
        folder.chmod(0o555)
        with pytest.raises(PermissionError, match=rf"{named(path)}.*: {os.strerror(errno.EACCES)}"):
            model.save(path)
    finally:
        folder.chmod(0o755)
    assert_untouched(path, old)


def test_a_missing_folder(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    path = tmp_path / "absent" / "model.npz"
    with pytest.raises(FileNotFoundError, match=rf"{named(path)}.*: the folder .*absent' does not exist"):
        model.save(path)
    assert os.listdir(tmp_path) == []


# ----- what a successful save leaves ------------------------------------------------------------


def test_the_file_has_exactly_the_name_given(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    model.save(str(tmp_path / "model"))  # NumPy's np.savez would have added ".npz"
    model.save(tmp_path / "model.bin")
    assert sorted(os.listdir(tmp_path)) == ["model", "model.bin"]
    for name in ("model", "model.bin"):
        np.testing.assert_array_equal(fastbp.load(tmp_path / name).theta, model.theta)


def test_a_save_replaces_the_file_that_a_link_points_to(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    (tmp_path / "real").mkdir()
    target = tmp_path / "real" / "model.npz"
    model.save(target)
    link = tmp_path / "link.npz"
    try:
        link.symlink_to(target)
    except OSError:
        pytest.skip("cannot make a symbolic link here")
    model.theta += 1
    model.save(link)
    assert link.is_symlink()
    np.testing.assert_array_equal(fastbp.load(target).theta, model.theta)
    assert os.listdir(tmp_path / "real") == ["model.npz"]


@pytest.mark.skipif(os.name == "nt", reason="Unix permissions")
def test_a_save_keeps_the_permissions_of_the_file_it_replaces(tmp_path):
    model = Sequential([Dense(3, 2)], seed=0)
    path = tmp_path / "model.npz"
    model.save(path)
    umask = os.umask(0)
    os.umask(umask)
    # A new file gets what open() would give it, not mkstemp's private 0o600.
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    path.chmod(0o640)
    model.save(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


def test_model_checkpoint_saves_the_same_way(tmp_path, monkeypatch):
    X, y = fastbp.datasets.make_blobs(24, 3, centers=2, seed=0)
    model = Sequential([Dense(3, 4, activation="tanh"), Dense(4, 2)], seed=0)
    path = tmp_path / "checkpoint.npz"
    checkpoint = fastbp.ModelCheckpoint(path, save_best_only=False)
    model.fit(X, y, epochs=2, loss="softmax_cross_entropy", callbacks=[checkpoint], verbose=0)
    assert checkpoint.saved_epochs == [0, 1]
    assert os.listdir(tmp_path) == ["checkpoint.npz"]
    old = path.read_bytes()

    def fsync(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(OSError, match=rf"could not save the model to '{named(path)}': "):
        model.fit(X, y, epochs=1, callbacks=[checkpoint], verbose=0)
    assert_untouched(path, old)
