"""benchmarks/perf_step.py's names for perf: numba's symbols made readable, and the map of compiled code."""
import sys
from pathlib import Path

import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.perf_step import readable, write_perf_map  # noqa: E402


def test_readable_names_of_numba_symbols():
    mangled = "_ZN6fastbp7kernels3cpu6losses29softmax_cross_entropy_forwardB2v1B38c8tJTIeFIjxB2IKSgI4CrvQClQZ6FczSBAA_3dE"
    assert readable(mangled) == "fastbp.kernels.cpu.losses.softmax_cross_entropy_forward"
    assert readable("_ZN7cpython6fastbp5loops5trainB2v3E") == "cpython fastbp.loops.train"
    assert readable("cfunc._ZN3pkg1fE") == "cfunc pkg.f"
    assert readable("sgemm_kernel_HASWELL") == "sgemm_kernel_HASWELL"


def test_the_map_covers_a_function_compiled_in_this_process(tmp_path):
    @njit
    def twice_the_sum(a):
        return 2 * a.sum()

    twice_the_sum(np.ones(3))
    result = next(iter(twice_the_sum.overloads.values()))
    address = result.library.get_pointer_to_function(result.fndesc.mangled_name)
    path = write_perf_map(str(tmp_path / "perf.map"))
    rows = [line.split(" ", 2) for line in Path(path).read_text().splitlines()]
    starts = [int(start, 16) for start, _, _ in rows]
    assert starts == sorted(starts)
    hits = [name for start, size, name in rows if int(start, 16) <= address < int(start, 16) + int(size, 16)]
    assert hits == [readable(result.fndesc.mangled_name)]
    assert hits[0].endswith("twice_the_sum")
