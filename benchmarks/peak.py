"""What the hardware can do, measured: one core's float32 FMA peak and the BLAS's SGEMM rate.

compare.py and the asv suite ``bench_peak`` measure both in the same run as the training, so a
network's GFLOP/s can be read as a fraction of each:

- ``fma_gflops``: a register-only micro-kernel, one thread. ``CHAINS`` independent chains
  ``acc = fma(acc, m, a)`` on ``<width x float>`` vectors (LLVM's ``llvm.fma``, emitted through
  numba's ``@intrinsic`` as ``kernels/cpu/_simd.py`` does), no loads or stores in the loop: the
  rate at which this core retires vector FMAs, 2 flops per lane. It is an upper bound that no
  product reaches, since a product also loads its operands.
- ``clock_ghz``: the core's clock as it runs, from a chain of dependent integer adds (one
  cycle each), where ``perf stat -e cycles`` has no hardware counter to read (a virtual
  machine): ``fma_gflops / clock_ghz`` is the flops per cycle to set against the FMA units.
- ``sgemm_gflops``: a float32 (size x size) @ (size x size) NumPy product, the BLAS NumPy uses,
  with whatever threads it was given: what a large product reaches on this machine.

The width defaults to the one fastbp's SIMD kernels use (``fastbp.kernels.cpu._simd.WIDTH``:
16 floats with AVX-512F, 8 with AVX2 + FMA). Names here must not start with time_, track_,
mem_, peakmem_ or timeraw_ (asv would take them for benchmarks).
"""
import statistics
import time

import numpy as np

# Independent accumulators. A chain issues its next FMA only when the previous one is done, so
# the core is full when chains >= FMA latency x FMA issue rate: 4 cycles x 2 per cycle = 8 on
# Skylake-SP, Ice Lake, Zen 3 and Zen 4 (4 x 1 with 512 bits on Zen 4, whose two 256-bit pipes
# take one zmm FMA together), 5 x 2 = 10 on Haswell and Zen 2. 12 covers them all and, with the
# two operands, still fits the 16 ymm registers of AVX2 without spilling.
CHAINS = 12
# Rounds of CHAINS FMAs per trip of the loop: the counter, compare and branch run beside the
# FMAs on other ports, and 48 FMAs a trip leave them no weight.
UNROLL = 4
WIDTHS = (1, 2, 4, 8, 16)
# Rows and columns of the SGEMM peak's operands (compare.py --sgemm-size, bench_peak): large
# enough that OpenBLAS runs at its steady rate, about a second on two cores.
SGEMM_SIZE = 4096

_kernels = {}


def _chains_kernel(width):
    """A jitted ``run(trips, m, a) -> float``: CHAINS x UNROLL vector FMAs of ``width`` floats
    per trip, their sum returned so that no FMA is dead code."""
    if width in _kernels:
        return _kernels[width]
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic

    f32, i32 = ir.FloatType(), ir.IntType(32)
    vty = ir.VectorType(f32, width)

    def splat(builder, scalar):
        one = builder.insert_element(ir.Constant(vty, None), scalar, ir.Constant(i32, 0))
        return builder.shuffle_vector(one, ir.Constant(vty, None), ir.Constant(ir.VectorType(i32, width), [0] * width))

    @intrinsic
    def fma_chains(typingctx, trips, m, a):
        sig = types.float32(types.int64, types.float32, types.float32)

        def codegen(context, builder, signature, args):
            trips_, m_, a_ = args
            fma = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vty, [vty, vty, vty]),
                                                 f"llvm.fma.v{width}f32")
            mv, av = splat(builder, m_), splat(builder, a_)
            # Distinct starting values: chains that started equal would compute the same values,
            # and LLVM would merge them into one.
            accs = []
            for c in range(CHAINS):
                slot = cgutils.alloca_once(builder, vty)
                builder.store(ir.Constant(vty, [float(c + 1)] * width), slot)
                accs.append(slot)
            with cgutils.for_range(builder, trips_):
                values = [builder.load(slot) for slot in accs]
                for _ in range(UNROLL):
                    values = [builder.call(fma, [v, mv, av]) for v in values]
                for slot, v in zip(accs, values):
                    builder.store(v, slot)
            total = builder.load(accs[0])
            for slot in accs[1:]:
                total = builder.fadd(total, builder.load(slot))
            out = builder.extract_element(total, ir.Constant(i32, 0))
            for lane in range(1, width):
                out = builder.fadd(out, builder.extract_element(total, ir.Constant(i32, lane)))
            return out

        return sig, codegen

    @njit(nogil=True)
    def run(trips, m, a):
        return fma_chains(trips, m, a)

    _kernels[width] = run
    return run


def flops_per_trip(width):
    """Flops of one trip of the micro-kernel's loop.

    Parameters
    ----------
    width : int
        Floats per vector.

    Returns
    -------
    int
        CHAINS x UNROLL FMAs of ``width`` lanes, 2 flops each.
    """
    return 2 * CHAINS * UNROLL * width


def default_width():
    """The vector width the FMA peak is measured at by default.

    Returns
    -------
    int
        ``fastbp.kernels.cpu._simd.WIDTH`` (16 with AVX-512F, 8 with AVX2 + FMA), or 4 (SSE)
        where fastbp has no SIMD kernels.
    """
    from fastbp.kernels.cpu._simd import WIDTH

    return WIDTH or 4


def fma_gflops(width=None, seconds=0.05, repeats=7, clock=time.process_time):
    """One core's float32 FMA rate, from a register-only micro-kernel, in GFLOP/s.

    Parameters
    ----------
    width : int, optional
        Floats per vector, one of 1, 2, 4, 8, 16; default ``default_width()`` (16 with AVX-512F,
        8 with AVX2 + FMA). A width above the hardware's runs as several registers per vector.
    seconds : float, default 0.05
        About how long each timed call runs.
    repeats : int, default 7
        Timed calls; the fastest is reported (a peak: interruptions only slow a call down).
    clock : callable, default time.process_time
        The clock. The process's CPU time is one thread's time on a core, which other work on
        the machine does not lengthen (the wall clock counts the time slices it takes).

    Returns
    -------
    float
        2 flops per lane per FMA, over the fastest call's time, in GFLOP/s.

    Raises
    ------
    ValueError
        If ``width`` is not one of ``WIDTHS``.

    Notes
    -----
    The theoretical figure is FMA units x lanes per unit x 2 flops x clock: on Zen 4 two 256-bit
    pipes, 2 x 8 x 2 = 32 flops per cycle at either width (a 512-bit FMA takes both), so 83
    GFLOP/s at 2.6 GHz and 118 at a 3.7 GHz boost; on a Xeon with two 512-bit FMA units, 64
    flops per cycle with AVX-512 and 32 with AVX2. On the 2-vCPU AMD EPYC (Zen 4) virtual
    machine of BENCHMARKS.md it measures 115-117 GFLOP/s at either width, 32.0 flops per cycle
    at the 3.6-3.7 GHz that ``clock_ghz`` reads, under a load average of 10 as when idle.
    """
    width = default_width() if width is None else width
    if width not in WIDTHS:
        raise ValueError(f"width must be one of {WIDTHS}; got {width!r}")
    run = _chains_kernel(width)
    m, a = np.float32(0.999999), np.float32(1e-6)  # the values stay near 1: no overflow, no denormals
    run(1, m, a)  # compiles
    trips = 1024
    while True:  # calibrate: double until one call takes a tenth of the target
        start = clock()
        run(trips, m, a)
        took = clock() - start
        if took >= seconds / 10 or trips >= 1 << 40:
            break
        trips *= 2
    trips = max(1, int(trips * seconds / max(took, 1e-9)))
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        total = run(trips, m, a)
        best = min(best, clock() - start)
    if not np.isfinite(total):
        raise FloatingPointError(f"FMA micro-kernel produced {total}")
    return flops_per_trip(width) * trips / best / 1e9


def fma_kernel_ir(width=None):
    """The LLVM IR of the FMA micro-kernel, compiled on first use, for inspection.

    Parameters
    ----------
    width : int, optional
        Floats per vector; default ``default_width()``.

    Returns
    -------
    str
        The IR of the compiled function, ``llvm.fma.v<width>f32`` calls included.
    """
    width = default_width() if width is None else width
    run = _chains_kernel(width)
    run(1, np.float32(1.0), np.float32(0.0))
    return next(iter(run.inspect_llvm().values()))


def fma_kernel_asm(width=None):
    """The machine code of the FMA micro-kernel, for inspection (which registers it uses).

    Parameters
    ----------
    width : int, optional
        Floats per vector; default ``default_width()``.

    Returns
    -------
    str
        The assembly of the compiled function.
    """
    width = default_width() if width is None else width
    run = _chains_kernel(width)
    run(1, np.float32(1.0), np.float32(0.0))
    return next(iter(run.inspect_asm().values()))


# Dependent integer adds per trip of the clock loop: each waits for the one before, so a trip
# takes ADDS cycles (1-cycle latency on every x86-64 core; a register operand, not an immediate,
# which Golden Cove can fold at rename), the counter and branch running beside them.
ADDS = 200
_clock_kernel = []


def _add_chain_kernel():
    """A jitted ``run(trips, one) -> int``: ``trips`` x ADDS dependent adds in inline assembly."""
    if _clock_kernel:
        return _clock_kernel[0]
    import llvmlite.binding as llb
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic

    llb.initialize_native_asmparser()  # numba's JIT assembles inline asm only with the parser loaded
    i64 = ir.IntType(64)

    @intrinsic
    def add_chain(typingctx, trips, one):
        sig = types.int64(types.int64, types.int64)

        def codegen(context, builder, signature, args):
            trips_, one_ = args
            body = f"1:\n.rept {ADDS}\naddq $2, $0\n.endr\ndecq $1\njnz 1b"
            asm = ir.InlineAsm(ir.FunctionType(ir.LiteralStructType([i64, i64]), [i64, i64, i64]), body,
                               "=r,=r,r,0,1,~{cc}", side_effect=True)
            return builder.extract_value(builder.call(asm, [one_, ir.Constant(i64, 0), trips_]), 0)

        return sig, codegen

    @njit(nogil=True)
    def run(trips, one):
        return add_chain(trips, one)

    _clock_kernel.append(run)
    return run


def clock_ghz(seconds=0.05, repeats=7, clock=time.process_time):
    """The core's clock while it runs, in GHz, from a chain of dependent integer adds (x86-64).

    ``perf stat -e cycles`` needs hardware counters that a virtual machine often lacks; a chain
    of adds, one cycle each, counts cycles without them. fma_gflops / clock_ghz is then the
    core's flops per cycle, to set against its FMA units (fma_gflops's Notes).

    Parameters
    ----------
    seconds : float, default 0.05
        About how long each timed call runs.
    repeats : int, default 7
        Timed calls; the fastest is reported.
    clock : callable, default time.process_time
        The clock; CPU time, as for fma_gflops.

    Returns
    -------
    float or None
        Cycles per nanosecond over the fastest call; None on a CPU that is not x86-64.
    """
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    run = _add_chain_kernel()
    if run(3, 1) != 3 * ADDS:
        raise RuntimeError("the add chain did not run as written")
    trips = max(1, int(seconds * 1e9 / ADDS))  # about ``seconds`` at 1 GHz; a faster core takes less
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        run(trips, 1)
        best = min(best, clock() - start)
    return trips * ADDS / best / 1e9


def sgemm_gflops(size=SGEMM_SIZE, repeats=3, clock=time.perf_counter):
    """The BLAS's float32 product rate: median GFLOP/s of (size x size) @ (size x size), after a warm-up.

    Parameters
    ----------
    size : int, default SGEMM_SIZE (4096)
        Rows and columns of both operands.
    repeats : int, default 3
        Timed products; the median is reported.
    clock : callable, default time.perf_counter
        The clock.

    Returns
    -------
    float
        2 size^3 flops over the median time, in GFLOP/s, with the threads the BLAS was given.
    """
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((size, size), dtype=np.float32) for _ in range(2))
    c = np.empty_like(a)
    np.matmul(a, b, out=c)
    seconds = []
    for _ in range(repeats):
        start = clock()
        np.matmul(a, b, out=c)
        seconds.append(clock() - start)
    return 2 * size**3 / statistics.median(seconds) / 1e9


# /proc/cpuinfo flags that decide a core's vector rate, in the order they arrived.
VECTOR_FLAGS = ("sse4_2", "avx", "fma", "avx2", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx512_bf16",
                "avx512_fp16", "amx_tile", "amx_bf16")


def cpu_vector_flags():
    """The CPU's vector extensions, as /proc/cpuinfo names them.

    Returns
    -------
    list of str
        The flags of ``VECTOR_FLAGS`` that /proc/cpuinfo lists, in that order; empty where there
        is no /proc/cpuinfo (not Linux).
    """
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    present = set(line.split(":", 1)[1].split())
                    return [f for f in VECTOR_FLAGS if f in present]
    except OSError:
        pass
    return []
