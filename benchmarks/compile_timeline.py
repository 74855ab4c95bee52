"""When each process of a first run compiles what: a timeline of a cold start, across processes.

    python benchmarks/compile_timeline.py                     # `fastbp train`, a fresh cache folder
    python benchmarks/compile_timeline.py --first-fit norm    # a first BatchNorm fit on a warm cache

``bench_compile.py`` times a first result; this says where its wall time goes. The command runs
with a fresh cache folder (for ``--first-fit``, a copy of the one a `fastbp train` filled) and a
site hook (``sitecustomize``, put first on PYTHONPATH, which the compile workers inherit) that
logs from every Python process: its start, each compile numba begins and ends (its ``numba:compile``
events, with their nesting) and its atexit handlers. The report lists, per process, the top-level
units with their start, end and seconds from the first process's start, and the gaps where a
process compiled nothing: a fit waiting for a worker, a worker starting, a process ending.
The first-fit scripts are ``bench_compile.py``'s (``--first-fit loss``, ``optimizer``,
``activation``, ``norm`` or ``layernorm``).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))
from benchmarks.bench_compile import _FIRST_FIT, _TRAIN, _fresh_env  # noqa: E402

# The site hook: one line per event, appended at once (a worker ends with os._exit): pid, kind,
# wall-clock time, then the kind's details (a start's are the process's arguments, the rest of the line).
SITE_HOOK = '''
import atexit, os, sys, time

_LOG = os.environ["FASTBP_TIMELINE_LOG"]


def _log(kind, *details):
    with open(_LOG, "a") as log:
        log.write(" ".join([str(os.getpid()), kind, repr(time.time())] + [str(d) for d in details]) + "\\n")


_log("start", " ".join(sys.argv)[:80])
atexit.register(_log, "exit")

from numba.core import event as _event


class _Units(_event.Listener):
    depth = 0

    def on_start(self, ev):
        _log("begin", self.depth, ev.data["dispatcher"].py_func.__qualname__)
        self.depth += 1

    def on_end(self, ev):
        self.depth -= 1
        _log("end", self.depth, ev.data["dispatcher"].py_func.__qualname__)


_event.register("numba:compile", _Units())
'''


def parse(lines):
    """{pid: {"start": t, "exit": t or None, "argv": str, "units": [(name, begin, end)]}} from the
    hook's log lines; a unit is a top-level compile (nesting 0)."""
    procs = defaultdict(lambda: {"start": None, "exit": None, "argv": "", "units": []})
    open_units = {}
    for line in lines:
        pid, kind, when, *details = line.split()
        proc, when = procs[int(pid)], float(when)
        if kind == "start":
            proc["start"], proc["argv"] = when, " ".join(details)
        elif kind == "exit":
            proc["exit"] = when
        elif kind == "begin" and details[0] == "0":
            open_units[int(pid)] = (details[1], when)
        elif kind == "end" and details[0] == "0" and int(pid) in open_units:
            name, begin = open_units.pop(int(pid))
            proc["units"].append((name, begin, when))
    return dict(procs)


def report(procs, min_gap=0.05):
    """The timeline as text: per process, in order of start, its units and the gaps between them
    (at least ``min_gap`` seconds), times in seconds from the first process's start."""
    origin = min(p["start"] for p in procs.values() if p["start"] is not None)
    out = []
    for pid, proc in sorted(procs.items(), key=lambda item: item[1]["start"] or origin):
        start = proc["start"] if proc["start"] is not None else origin
        out.append(f"process {pid} ({proc['argv']}): starts at {start - origin:.2f} s")
        at, busy = start, 0.0
        for name, begin, end in proc["units"]:
            if begin - at >= min_gap:
                out.append(f"  {at - origin:7.2f} {begin - origin:7.2f} {begin - at:6.2f}  (no compile)")
            out.append(f"  {begin - origin:7.2f} {end - origin:7.2f} {end - begin:6.2f}  {name}")
            at, busy = max(at, end), busy + end - begin
        if proc["exit"] is not None:
            if proc["exit"] - at >= min_gap:
                out.append(f"  {at - origin:7.2f} {proc['exit'] - origin:7.2f} {proc['exit'] - at:6.2f}  (no compile)")
            out.append(f"  ends at {proc['exit'] - origin:.2f} s; compiling {busy:.2f} s")
        else:
            out.append(f"  compiling {busy:.2f} s; no atexit record (killed, or ended by os._exit alone)")
    return "\n".join(out)


def timeline(command, cache_dir, folder):
    """Run ``command`` with the cache folder ``cache_dir`` and the site hook; the parsed log."""
    hook = Path(folder) / "hook"
    hook.mkdir(exist_ok=True)
    (hook / "sitecustomize.py").write_text(SITE_HOOK)
    log = Path(folder) / "events.log"
    log.write_text("")
    env = _fresh_env(cache_dir)
    env["FASTBP_TIMELINE_LOG"] = str(log)
    env["PYTHONPATH"] = os.pathsep.join([str(hook)] + [p for p in [env.get("PYTHONPATH")] if p])
    done = subprocess.run(command, env=env, cwd=cache_dir, capture_output=True, text=True)
    if done.returncode:
        raise RuntimeError(f"the timed command failed:\n{done.stderr}")
    return parse(log.read_text().splitlines())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--first-fit", choices=["loss", "optimizer", "activation", "norm", "layernorm"],
                        help="a first fit bringing this into a warm cache, instead of a cold `fastbp train`")
    parser.add_argument("--min-gap", type=float, default=0.05, help="shortest gap to list, in seconds")
    args = parser.parse_args(argv)
    folder = tempfile.mkdtemp(prefix="fastbp-timeline-")
    try:
        cache = os.path.join(folder, "cache")
        os.mkdir(cache)
        if args.first_fit:
            done = subprocess.run(_TRAIN, env=_fresh_env(cache), cwd=cache, capture_output=True, text=True)
            if done.returncode:
                raise RuntimeError(f"fastbp train failed:\n{done.stderr}")
            procs = timeline([sys.executable, "-c", _FIRST_FIT, args.first_fit], cache, folder)
        else:
            procs = timeline(_TRAIN, cache, folder)
        print(report(procs, args.min_gap))
    finally:
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
