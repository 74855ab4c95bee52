"""benchmarks/compile_timeline.py: the events of every process of a run, and the report made of them."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.compile_timeline import parse, report, timeline  # noqa: E402


def test_the_report_lists_each_processs_top_level_units_and_its_gaps():
    lines = ["10 start 100.0 python -m fastbp train",
             "10 begin 100.5 0 train_batches", "10 begin 100.6 1 forward", "10 end 100.9 1 forward",
             "10 end 102.0 0 train_batches", "10 exit 103.0",
             "11 start 100.2 -c worker", "11 begin 101.0 0 dense_act_backward", "11 end 102.5 0 dense_act_backward"]
    procs = parse(lines)
    assert procs[10]["units"] == [("train_batches", 100.5, 102.0)]  # the nested compile is inside it
    assert procs[10]["argv"] == "python -m fastbp train" and procs[11]["exit"] is None
    text = report(procs).splitlines()
    assert text[0] == "process 10 (python -m fastbp train): starts at 0.00 s"
    assert text[1].split() == ["0.00", "0.50", "0.50", "(no", "compile)"]
    assert text[2].split() == ["0.50", "2.00", "1.50", "train_batches"]
    assert text[3].split() == ["2.00", "3.00", "1.00", "(no", "compile)"]
    assert text[4] == "  ends at 3.00 s; compiling 1.50 s"
    assert text[5] == "process 11 (-c worker): starts at 0.20 s"
    assert text[7].split()[-1] == "dense_act_backward"
    assert text[8].startswith("  compiling 1.50 s; no atexit record")


def test_the_site_hook_records_a_compile_in_a_fresh_process(tmp_path):
    (tmp_path / "cache").mkdir()
    script = "from numba import njit\n\n@njit\ndef plus_one(x):\n    return x + 1\n\nplus_one(1)\n"
    procs = timeline([sys.executable, "-c", script], str(tmp_path / "cache"), str(tmp_path))
    (proc,) = procs.values()
    assert [unit[0] for unit in proc["units"]] == ["plus_one"]
    assert proc["start"] <= proc["units"][0][1] <= proc["units"][0][2] <= proc["exit"]
