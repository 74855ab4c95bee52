"""benchmarks/gpu_check.py: its dry run under numba's CUDA simulator writes the files a GPU run
would, every figure in them; its test runner counts what pytest did, finished or stopped."""
import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime
from pathlib import Path

import pytest

from backends import BACKENDS

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

needs_cuda_package = pytest.mark.skipif("cuda" not in BACKENDS, reason="numba-cuda is not installed")


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_check")
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return out


@needs_cuda_package
def test_the_dry_run_writes_every_figure_to_json(dry_run):
    figures = json.loads((dry_run / "gpu_check.json").read_text())
    assert figures["dry_run"] is True
    datetime.fromisoformat(figures["date"])
    device = figures["device"]
    assert device["simulator"] is True and device["name"] == "numba CUDA simulator"
    for key in ("driver_version", "cuda_runtime_version", "compute_capability", "numba_cuda_target"):
        assert device[key], key
    assert figures["versions"]["fastbp"] != "not installed"

    tests = figures["tests"]
    assert tests["returncode"] == 0 and not tests["timed_out"]
    assert tests["passed"] >= 1 and tests["failed"] == 0 and tests["failures"] == []
    assert tests["tests"] == tests["passed"] + tests["skipped"] and "passed" in tests["last_line"]

    (name, run), = figures["training"].items()
    assert run["layers"] == [4, 3, 2] and run["n_samples"] == 4 and run["batch_size"] == 4
    fastbp = run["fastbp"]
    assert fastbp["device"] == "cuda"
    assert fastbp["samples_per_second"] > 0 and fastbp["first_epoch_seconds"] > 0
    assert len(fastbp["seconds"]) == figures["epochs"] == 1 and min(fastbp["seconds"]) > 0
    assert fastbp["samples_per_second"] == pytest.approx(run["n_samples"] / fastbp["median_seconds"])
    torch = run["torch"]
    if "skipped" in torch:
        assert "PyTorch" in torch["skipped"]
    else:  # no GPU in the dry run: PyTorch's code path runs on the CPU
        assert torch["device"] == "cpu" and torch["samples_per_second"] > 0
    assert 0 < figures["elapsed_seconds"] < figures["budget_seconds"]


@needs_cuda_package
def test_the_dry_run_writes_a_markdown_report_of_the_same_figures(dry_run):
    figures = json.loads((dry_run / "gpu_check.json").read_text())
    text = (dry_run / "gpu_check.md").read_text()
    assert text.startswith("# fastbp on CUDA (dry run: numba's CUDA simulator)")
    assert "- device: numba CUDA simulator" in text and figures["date"] in text
    fastbp = figures["training"]["tiny"]["fastbp"]["samples_per_second"]
    assert f"| tiny: 4-3-2 | 4 | 4 | {fastbp:,.0f} |" in text
    assert f"Tests (passed, {figures['tests']['seconds']:.0f} s): {figures['tests']['passed']} passed, 0 failed" in text


def test_the_test_summary_counts_a_finished_run_and_a_stopped_one(tmp_path):
    from benchmarks.gpu_check import run_tests

    (tmp_path / "test_sample.py").write_text(textwrap.dedent("""
        import time

        import pytest

        def test_passes():
            pass

        def test_skips():
            pytest.skip("not here")

        def test_fails():
            assert 1 == 2

        def test_hangs():
            time.sleep(600)
    """))
    env = dict(os.environ)
    finished = run_tests([str(tmp_path / "test_sample.py"), "-k", "not hangs"], env, 300, 0, tmp_path / "a.xml")
    assert (finished["tests"], finished["passed"], finished["skipped"], finished["failed"]) == (3, 1, 1, 1)
    # JUnit's class name carries the file's path from pytest's root folder, which depends on where
    # the test runs: only the module and the test are fixed.
    assert len(finished["failures"]) == 1 and finished["failures"][0].endswith("test_sample::test_fails")
    assert finished["returncode"] == 1
    assert not finished["timed_out"] and "1 failed, 1 passed, 1 skipped" in finished["last_line"]
    # Stopped by its time limit: no XML, the counts from the progress characters printed so far.
    stopped = run_tests([str(tmp_path / "test_sample.py")], env, 10, 0, tmp_path / "b.xml")
    assert stopped["timed_out"] and stopped["returncode"] is None
    assert (stopped["tests"], stopped["passed"], stopped["skipped"], stopped["failed"]) == (3, 1, 1, 1)
    assert stopped["last_line"].startswith("stopped after 10 s")
