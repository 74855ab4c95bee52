"""Check fastbp on an NVIDIA GPU in one call: the CUDA tests on the device, training speed against
PyTorch, and the figures written to files.

    python benchmarks/gpu_check.py                    # on a machine with a GPU: under 8 minutes
    python benchmarks/gpu_check.py --out /tmp/gpu     # the files elsewhere
    python benchmarks/gpu_check.py --dry-run          # anywhere: numba's CUDA simulator, tiny sizes

It does three things, each in fresh processes with a time limit, so that the whole stays within
``--budget`` seconds (default 450) even when one part hangs:

1. Runs every test whose id names CUDA (``pytest tests -k cuda``: the kernel tests' "cuda"
   backend, tests/test_cuda_kernels.py, tests/test_cuda_training.py, ...) on the device, with
   ``NUMBA_ENABLE_CUDASIM`` removed from their environment: tests/conftest.py then leaves the
   simulator off because the machine has a device node.
2. Trains the small, mnist and wide networks of benchmarks/configs.py (ReLU hidden layers,
   softmax cross-entropy, SGD with momentum, float32) with fastbp on ``device="cuda"`` and with
   PyTorch on CUDA (the data on the device once, index batches there too), one warm-up epoch
   (compiling) and then ``--epochs`` timed epochs each; samples/s is the median. A peer that
   does not import, or a PyTorch without CUDA, is skipped with the reason.
3. Writes gpu_check.json (every figure) and gpu_check.md (a short report) to ``--out``: the
   device, driver and CUDA versions, the date, each network's samples/s per peer, and the test
   summary.

``--dry-run`` runs the same code under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1), where
every GPU thread is a Python thread: one tiny network, one timed epoch, one CUDA test, and
PyTorch on the CPU if it is installed. It checks the script's plumbing, not the GPU, in well
under a minute; tests/test_gpu_check.py runs it.
"""
import argparse
import dataclasses
import datetime
import json
import os
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from importlib import metadata
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # the repository, for benchmarks.configs
from benchmarks.configs import CONFIGS, LEARNING_RATE, MOMENTUM, Config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PEERS = {"fastbp": "fastbp.Sequential (CUDA)", "torch": "PyTorch (CUDA)"}
# Seconds for each part, out of --budget: the device query, the tests (compiling every CUDA
# kernel they call, on four workers) with all but TRAINING_SECONDS of what is left, then the six
# training runs, each in its own process with an equal share of what remains (a quick one leaves
# its rest to the next); REPORT_SECONDS stay for writing the files.
INFO_SECONDS = 60
TRAINING_SECONDS = 180
REPORT_SECONDS = 10
# On a GPU: every test whose id names CUDA. In the dry run, one test that builds and checks the
# CUDA package without a launch: the simulator takes about a second per 256-thread block.
TEST_ARGS = ["tests", "-k", "cuda"]
DRY_RUN_TEST_ARGS = ["tests/test_cuda_kernels.py::test_same_public_names_signatures_and_unchecked_launchers"]
# The dry run's network: one step per epoch of the smallest shapes (about five seconds an epoch
# under the simulator).
DRY_RUN_CONFIG = Config("tiny", (4, 3, 2), 4, 4, asv_samples=4)


# ----------------------------------------------------------------------------- child processes


def device_info():
    """The device, the driver and CUDA versions and the CUDA target; run in a fresh process.

    Returns
    -------
    dict
        ``simulator``, ``numba_cuda_target``, ``cuda_available``, ``name``, ``compute_capability``,
        ``driver_version`` (nvidia-smi), ``driver_cuda_version``, ``cuda_runtime_version``,
        ``memory_gib``; a field that cannot be read says why in its value. ``error`` alone (with
        ``simulator``) where fastbp's CUDA package does not import.
    """
    info = {"simulator": os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"}
    try:
        from fastbp.kernels.cuda._numba_cuda import TARGET, cuda
    except ImportError as err:
        return {**info, "error": f"fastbp.kernels.cuda does not import ({err})"}
    info["numba_cuda_target"] = TARGET
    info["cuda_available"] = bool(cuda.is_available())

    def attempt(key, read):
        try:
            info[key] = read()
        except Exception as err:  # a field this driver or simulator lacks: say so, keep the rest
            info[key] = f"unknown ({type(err).__name__}: {err})"

    def name():
        value = cuda.get_current_device().name
        return value.decode() if isinstance(value, bytes) else str(value)

    attempt("compute_capability", lambda: ".".join(map(str, cuda.get_current_device().compute_capability)))
    if info["simulator"]:
        info.update(name="numba CUDA simulator", driver_version="simulator", driver_cuda_version="simulator",
                    cuda_runtime_version="simulator")
        return info
    attempt("name", name)
    attempt("driver_cuda_version", lambda: ".".join(map(str, cuda.cudadrv.driver.driver.get_version())))
    attempt("cuda_runtime_version", lambda: ".".join(map(str, cuda.runtime.get_version())))
    attempt("memory_gib", lambda: round(cuda.current_context().get_memory_info()[1] / 2**30, 1))
    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm",
                              "--format=csv,noheader"], capture_output=True, text=True, timeout=30)
        fields = [f.strip() for f in smi.stdout.splitlines()[0].split(",")]
        info.update(nvidia_smi_name=fields[0], driver_version=fields[1], nvidia_smi_memory=fields[2],
                    max_sm_clock=fields[3])
    except (OSError, IndexError, subprocess.SubprocessError) as err:
        info["driver_version"] = f"unknown (nvidia-smi: {err})"
    return info


def _torch_setup(config, X, y, device):
    """compare.py's PyTorch peer on ``device``: the data there once, batches indexed there."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    sizes = config.layers
    layers = []
    for i, o in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(i, o), nn.ReLU()]
    model = nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1])).to(device)
    for layer in model[::2]:
        nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
        nn.init.zeros_(layer.bias)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE, momentum=MOMENTUM)
    loss_fn = nn.CrossEntropyLoss()
    X_d, y_d = torch.from_numpy(X).to(device), torch.from_numpy(y).to(device)
    generator = torch.Generator(device=device).manual_seed(0)

    def epoch():
        order = torch.randperm(len(X_d), generator=generator, device=device)
        for start in range(0, len(X_d), config.batch_size):
            idx = order[start:start + config.batch_size]
            optimizer.zero_grad(set_to_none=True)
            loss_fn(model(X_d[idx]), y_d[idx]).backward()
            optimizer.step()
        if device == "cuda":
            torch.cuda.synchronize()  # kernels run asynchronously: the epoch ends when they do

    return epoch


def measure_training(peer, config, epochs):
    """One warm-up epoch, then ``epochs`` timed ones, of one peer; run in a fresh process.

    Parameters
    ----------
    peer : {'fastbp', 'torch'}
        fastbp.Sequential on device="cuda", or PyTorch on CUDA (on the CPU under the simulator).
    config : dict
        The fields of a ``configs.Config``.
    epochs : int
        Timed epochs.

    Returns
    -------
    dict
        ``device``, ``first_epoch_seconds`` (compiling included), ``seconds`` (each timed epoch),
        ``median_seconds`` and ``samples_per_second``; or ``skipped`` with the reason.
    """
    from benchmarks.configs import build_fastbp, fit_epoch, make_data

    config = Config(**{**config, "layers": tuple(config["layers"])})
    simulator = os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"
    X, y = make_data(config)
    if peer == "fastbp":
        device = "cuda"
        model = build_fastbp(config)
        model.to("cuda")

        def epoch():
            fit_epoch(model, X, y, config)  # fit reads the epoch's statistics back: synchronous
    else:
        try:
            import torch
        except ImportError as err:
            return {"skipped": f"PyTorch not installed ({err})"}
        if torch.cuda.is_available() and not simulator:
            device = "cuda"
        elif simulator:
            device = "cpu"  # the dry run checks the code path; there is no GPU to use
        else:
            return {"skipped": f"PyTorch {torch.__version__} sees no CUDA device (a CPU build?)"}
        epoch = _torch_setup(config, X, y, device)
    start = time.perf_counter()
    epoch()
    first = time.perf_counter() - start
    seconds = []
    for _ in range(epochs):
        start = time.perf_counter()
        epoch()
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    return {"device": device, "first_epoch_seconds": first, "seconds": seconds, "median_seconds": median,
            "samples_per_second": config.n_samples / median}


def _run(command, env, timeout):
    """(returncode, stdout, stderr) of ``command`` run from the repository, or returncode None
    when it ran past ``timeout`` seconds. It runs in a session of its own, and on timeout the
    whole session is killed: pytest-xdist's workers and a hung compile go with it."""
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    try:
        out, err = process.communicate(timeout=max(1.0, timeout))
        return process.returncode, out, err
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        return None, out, err


def _child(job, env, timeout):
    """Run ``job`` (a dict naming a child function and its keyword arguments) in a fresh
    interpreter with ``env``; its result dict, or {"skipped": why} on failure or timeout."""
    code, out, err = _run([sys.executable, str(Path(__file__).resolve()), "--child", json.dumps(job)], env, timeout)
    if code is None:
        return {"skipped": f"stopped after its {timeout:.0f} s budget"}
    if code:
        return {"skipped": f"failed: {err.strip().splitlines()[-1] if err.strip() else f'exit status {code}'}"}
    return json.loads(out.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- the tests


def run_tests(pytest_args, env, timeout, workers, junit):
    """Run ``python -m pytest`` from the repository within a time limit and summarize it.

    Parameters
    ----------
    pytest_args : list of str
        Test paths and options.
    env : dict
        The environment of the run (NUMBA_ENABLE_CUDASIM decides the simulator).
    timeout : float
        Seconds before the run, its workers included, is killed.
    workers : int
        pytest-xdist workers; 0 runs in the one process.
    junit : path
        Where pytest writes its JUnit XML, which the counts come from.

    Returns
    -------
    dict
        ``command``, ``seconds``, ``returncode`` (None if stopped), ``timed_out``, ``tests``,
        ``passed``, ``failed`` (errors included), ``skipped``, ``failures`` (test ids) and
        ``last_line`` (pytest's). A run stopped at ``timeout`` writes no XML: its counts come
        from the progress characters printed so far, and ``failures`` is empty.
    """
    command = [sys.executable, "-m", "pytest", *pytest_args, "-q", "-p", "no:cacheprovider",
               f"--numprocesses={workers}", f"--junitxml={junit}"]
    start = time.perf_counter()
    returncode, output, _ = _run(command, env, timeout)
    summary = {"command": shlex.join(["python", "-m", "pytest", *pytest_args, f"--numprocesses={workers}"]),
               "seconds": time.perf_counter() - start, "returncode": returncode, "timed_out": returncode is None,
               "tests": 0, "passed": 0, "failed": 0, "skipped": 0, "failures": []}
    lines = [line for line in output.splitlines() if line.strip()]
    summary["last_line"] = lines[-1].strip("= ") if lines else ""
    if returncode is None:
        progress = "".join(m.group(1) for m in map(re.compile(r"^([.FEsxX]+)\s*(\[\s*\d+%\])?$").match, lines) if m)
        summary.update(passed=progress.count(".") + progress.count("X"), failed=progress.count("F") + progress.count("E"),
                       skipped=progress.count("s") + progress.count("x"), tests=len(progress),
                       last_line=f"stopped after {timeout:.0f} s; {summary['last_line']}")
    elif Path(junit).exists():
        for case in ET.parse(junit).getroot().iter("testcase"):
            summary["tests"] += 1
            if case.find("failure") is not None or case.find("error") is not None:
                summary["failed"] += 1
                summary["failures"].append(f"{case.get('classname')}::{case.get('name')}")
            elif case.find("skipped") is not None:
                summary["skipped"] += 1
            else:
                summary["passed"] += 1
    return summary


# ----------------------------------------------------------------------------- report


def _versions():
    found = {"python": platform.python_version()}
    for name in ("fastbp", "numpy", "numba", "numba-cuda", "numba-cuda-mlir", "torch"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = "not installed"
    return found


def write_report(out_dir, figures):
    """Write gpu_check.json (the figures as they are) and gpu_check.md (a report) to ``out_dir``.

    Parameters
    ----------
    out_dir : pathlib.Path
        Created if missing.
    figures : dict
        ``date``, ``host``, ``dry_run``, ``budget_seconds``, ``epochs``, ``versions``, ``device``
        (device_info), ``tests`` (run_tests), ``training`` ({network: {layers, n_samples,
        batch_size, peer: measure_training's result}}) and ``elapsed_seconds``.

    Returns
    -------
    str
        The markdown.
    """
    device, tests = figures["device"], figures["tests"]
    memory = f", {device['memory_gib']} GiB" if isinstance(device.get("memory_gib"), (int, float)) else ""
    lines = ["# fastbp on CUDA" + (" (dry run: numba's CUDA simulator)" if figures["dry_run"] else ""), "",
             f"- date: {figures['date']}; host: {figures['host']}",
             f"- device: {device.get('name', '?')}, compute capability {device.get('compute_capability', '?')}"
             f"{memory}; numba target {device.get('numba_cuda_target', '?')}" + (f" ({device['error']})"
                                                                                 if "error" in device else ""),
             f"- driver {device.get('driver_version', '?')} (CUDA {device.get('driver_cuda_version', '?')}); "
             f"CUDA runtime {device.get('cuda_runtime_version', '?')}",
             "- versions: " + ", ".join(f"{k} {v}" for k, v in figures["versions"].items()),
             f"- training: float32, ReLU hidden layers, softmax cross-entropy, SGD momentum {MOMENTUM}, "
             f"lr {LEARNING_RATE}; one warm-up epoch (compiling), then the median of {figures['epochs']} "
             f"timed epoch(s), wall clock", "",
             "| network | samples | batch | " + " | ".join(PEERS.values()) + " | fastbp ÷ PyTorch | "
             "fastbp first epoch s |",
             "|---|--:|--:|" + "--:|" * len(PEERS) + "--:|--:|"]
    for name, run in figures["training"].items():
        cells = []
        for peer in PEERS:
            r = run[peer]
            cells.append(f"{r['samples_per_second']:,.0f}" + (f" ({r['device']})" if r["device"] != "cuda" else "")
                         if "samples_per_second" in r else f"skipped: {r['skipped']}")
        fast, torch = (run[p].get("samples_per_second") for p in ("fastbp", "torch"))
        first = run["fastbp"].get("first_epoch_seconds")
        layers = "-".join(map(str, run["layers"]))
        lines.append(f"| {name}: {layers} | {run['n_samples']:,} | {run['batch_size']} | " + " | ".join(cells)
                     + f" | {f'{fast / torch:.2f}' if fast and torch else ''} | {f'{first:.1f}' if first else ''} |")
    verdict = "timed out" if tests["timed_out"] else ("passed" if tests["returncode"] == 0 else "FAILED")
    lines += ["", f"Tests ({verdict}, {tests['seconds']:.0f} s): {tests['passed']} passed, {tests['failed']} failed, "
              f"{tests['skipped']} skipped of {tests['tests']}; `{tests['command']}`",
              f"pytest: {tests['last_line']}"]
    lines += [f"- failed: {f}" for f in tests["failures"]]
    lines += ["", f"Whole check: {figures['elapsed_seconds']:.0f} s of a {figures['budget_seconds']:.0f} s budget."]
    text = "\n".join(lines) + "\n"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "gpu_check.md").write_text(text)
    (out_dir / "gpu_check.json").write_text(json.dumps(figures, indent=1))
    return text


# ----------------------------------------------------------------------------- main


def main(argv=None):
    """The command line (see the module's docstring); returns the exit status, 0."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder for gpu_check.json and gpu_check.md (default %(default)s)")
    parser.add_argument("--dry-run", action="store_true",
                        help="numba's CUDA simulator, one tiny network, one CUDA test: the plumbing, in seconds")
    parser.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated, from %(default)s")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs after the warm-up (median)")
    parser.add_argument("--budget", type=float, default=450.0, help="seconds for the whole check")
    parser.add_argument("--test-workers", type=int, default=4, help="pytest-xdist workers for the CUDA tests")
    parser.add_argument("--no-tests", action="store_true", help="time the training only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(globals()[job.pop("run")](**job)))
        return 0

    began = time.perf_counter()
    env = dict(os.environ)
    if args.dry_run:
        env["NUMBA_ENABLE_CUDASIM"] = "1"
        configs = {DRY_RUN_CONFIG.name: DRY_RUN_CONFIG}
        epochs, test_args, workers = 1, DRY_RUN_TEST_ARGS, 0
    else:
        env.pop("NUMBA_ENABLE_CUDASIM", None)  # the tests' conftest.py would otherwise keep the simulator
        try:
            configs = {name: CONFIGS[name] for name in args.configs.split(",")}
        except KeyError as err:
            parser.error(f"unknown configuration {err}; expected some of {list(CONFIGS)}")
        epochs, test_args, workers = args.epochs, TEST_ARGS, args.test_workers

    def left():
        return args.budget - (time.perf_counter() - began)

    figures = {"date": datetime.datetime.now().isoformat(timespec="minutes"), "host": platform.node(),
               "dry_run": args.dry_run, "budget_seconds": args.budget, "epochs": epochs, "versions": _versions()}
    figures["device"] = _child({"run": "device_info"}, env, min(INFO_SECONDS, left()))
    print(f"device: {figures['device']}", flush=True)
    if not args.dry_run and not figures["device"].get("cuda_available"):
        print("no usable CUDA device: the tests and the fastbp runs will say why", flush=True)

    if args.no_tests:
        figures["tests"] = {"command": "", "seconds": 0.0, "returncode": None, "timed_out": False, "tests": 0,
                            "passed": 0, "failed": 0, "skipped": 0, "failures": [], "last_line": "not run (--no-tests)"}
    else:
        test_seconds = left() - (REPORT_SECONDS if args.dry_run else TRAINING_SECONDS + REPORT_SECONDS)
        with tempfile.TemporaryDirectory() as scratch:
            figures["tests"] = run_tests(test_args, env, test_seconds, workers, Path(scratch) / "junit.xml")
        print(f"tests: {figures['tests']['last_line']} ({figures['tests']['seconds']:.0f} s)", flush=True)

    figures["training"] = {}
    runs = [(name, peer) for name in configs for peer in PEERS]
    for k, (name, peer) in enumerate(runs):
        config = configs[name]
        run = figures["training"].setdefault(name, {"layers": list(config.layers), "n_samples": config.n_samples,
                                                    "batch_size": config.batch_size})
        share = (left() - REPORT_SECONDS) / (len(runs) - k)
        job = {"run": "measure_training", "peer": peer, "config": dataclasses.asdict(config), "epochs": epochs}
        run[peer] = _child(job, env, share) if share > 1 else {"skipped": "no time left in the budget"}
        r = run[peer]
        print(f"{name:6} {PEERS[peer]:26} " + (f"{r['samples_per_second']:>12,.0f} samples/s ({r['device']}), "
                                               f"first epoch {r['first_epoch_seconds']:.1f} s"
                                               if "samples_per_second" in r else f"skipped: {r['skipped']}"), flush=True)

    figures["elapsed_seconds"] = time.perf_counter() - began
    print()
    print(write_report(args.out, figures))
    print(f"written: {args.out / 'gpu_check.md'}, gpu_check.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
