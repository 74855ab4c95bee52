"""pytest-benchmark: every kernel phase at every shape of configs.SHAPES, in float32 and float64.

    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-autosave
    pytest benchmarks --benchmark-enable --benchmark-only --benchmark-compare   # against the last save

Each group is "<kernel> <shape> <dtype>" and holds that kernel's forward and backward (or its
update). The kernel is called once before timing, so compiling is never measured. This module
does not import pytest (asv imports every module of this package, in environments without it).
"""
from .configs import DTYPES, KERNELS, SHAPES, kernel_calls

CASES = [(kernel, phase, shape, dtype) for kernel, phases in KERNELS.items()
         for phase in phases for shape in SHAPES for dtype in DTYPES]


def pytest_generate_tests(metafunc):
    metafunc.parametrize("kernel,phase,shape,dtype", CASES, ids=["-".join(case) for case in CASES])


def test_kernel(benchmark, kernel, phase, shape, dtype):
    func, args = kernel_calls(kernel, shape, dtype)[phase]
    func(*args)
    benchmark.group = f"{kernel} {shape} {dtype}"
    benchmark(func, *args)
