"""The three products of a dense layer in fastbp's own float32 SIMD kernels (``_simd.py``).

For small and medium layers, where OpenBLAS spends as long packing both operands and setting
up as it does multiplying (a 32 x 64 x 32 product is 65k flops): out = x @ w + b (with ReLU
fused into the stores), dw = x.T @ dz and dx = dz @ w.T. Shapes as everywhere: x (N, I),
w (I, O), b (O,), out and dz (N, O). Outputs are overwritten. float32 only, rows contiguous;
``dense.py`` decides when these run instead of BLAS (``use_simd``).

The driver walks the output in panels of NR columns, and in each panel tiles of MR rows (the
last one of 4 rows where at most 4 are left): one panel of B (k x NR) is reused by every tile
of rows while it is in cache. A product at most one vector wide (the logits) takes the narrow
tile, MR_NARROW rows by one vector. dx needs w.T, whose rows are not contiguous: panels of it
are packed, k-chunk by k-chunk, into PACK floats on the stack (no allocation), and chunks after
the first accumulate into dx. dw copies each panel of dz to the stack first where dz's row
stride would map the panel's rows onto a few L1 sets (PANEL_STRIDE).

Every sum runs over k in order within a tile, on the calling thread: results do not depend on
the thread count.
"""
import numba
import numpy as np
from numba import types
from numba.extending import overload

from .._jit import jit
from ._simd import (MR, MR_NARROW, NR, RELU_OUT, START_BIAS, START_C, START_ZERO, VEC, WIDTH, address,
                    copy_panel, stack_floats, stack_floats_here, tile_narrow, tile_rows4, tile_wide)

# Products of at most this many multiply-adds (N I O) run here rather than in BLAS, float32
# only: the crossover measured on 2 contended AVX2 cores (docs/performance-log.md, 2026-11-29,
# "fastbp's own SIMD products") lies
# between 0.5M (SIMD 1.4-9x faster than single-threaded OpenBLAS) and 17M (0.7x).
SIMD_MAX_MACS = 1 << 20
# A batch of at most SIMD_FEW_ROWS rows keeps its products here up to SIMD_FEW_ROWS_MAX_MACS.
# OpenBLAS's two threads gain little on so few rows (16 x 784 x 128: 62 GFLOP/s, against 79
# here on one thread), and in a training step they cost more than in a product timed alone:
# the step's other kernels run between BLAS calls, and waking BLAS's second thread again costs
# up to 35 us on this VM (after a 200 us pause, a product took as long as on one thread). On a
# busy machine the two-thread products also slow down whenever either thread waits for its
# core. Epochs at batch 16, alternating with the previous rule: 784-128-10 1.37x (and steadier:
# 87-105k samples/s against 41-97k), 512-256-10 1.05x, 1024-256-10 1.09x. At 32 or 64 rows and
# 2-4M multiply-adds BLAS's two threads won (0.72-0.86x): docs/performance-log.md, 2026-11-30,
# b663958.
SIMD_FEW_ROWS = 16
SIMD_FEW_ROWS_MAX_MACS = 1 << 22
# dx = dz @ w.T of a product in these kernels runs here too up to this many multiply-adds, and
# in BLAS above: matmul_nt packs w.T first (one pass over w), which larger products do not pay
# back. 150 shapes of 16-256 rows, 16-256 inputs and 2-128 outputs against single-threaded
# sgemm, medians of 5 (docs/performance-log.md, 2026-11-30, eebaeb3): geometric mean of BLAS's time over this
# kernel's 1.36 up to 4K multiply-adds (11 of 12 shapes faster), 1.10 from 4K to 16K (18 of
# 23), 0.92 from 16K to 256K. dense.py's loop nests are 2-10x slower than either on these
# shapes.
SIMD_NT_MAX_MACS = 1 << 14

# Stack scratch for a packed panel of w.T (32 KiB, L1-sized), and its widest panel.
PACK = 8192
PACK_COLS = 256
# k chunk of the driver: a B panel of KC x NR floats stays in L1.
KC = 256
# The weight gradient copies each panel of dz (its B) into a stack buffer, rows side by side
# (``_gemm_copying_b``), where more than one tile of rows reads the panel and its rows would not
# stay in L1: dz's row stride a multiple of PANEL_STRIDE floats (256 bytes), so that the rows
# fall into a few of the L1's 64 sets (one set at 4 KiB), and a k chunk of rows spanning at
# least L1_FLOATS (a 32 KiB, 8-way L1; Zen 5's 48 KiB has 12 ways in the same 64 sets): the rows
# then outnumber those sets' ways, and later tiles of the panel found it evicted. Copied against
# in place (one process, medians of 31 alternating calls, which vary 0.89-1.12x for the same
# code): 1.03-1.31x on ten shapes copied, e.g. 16 x 128 x 1024 1.10-1.31x, 32 x 512 x 512
# 1.07-1.24x, 128 x 128 x 128 1.12-1.20x; 0.92-1.03x on shapes below the span, which are not
# copied (docs/performance-log.md, 2026-11-30, 6a2f092). The forward's B, the weights, is read in place: there
# the cost is the first, strided read of each panel, which a copy repeats (16 x 1024 x 512: 1.08x
# slower copied).
PANEL_STRIDE = 64
L1_FLOATS = 8192
PANEL = KC * NR
_F4 = 4  # bytes per float32


@jit(callers="compiled")
def _gemm(c, a, b, bias, strides, m, n, k, mode):
    """C (m, n) from A (m, k) and B (k, n) at addresses c, a, b (strides in elements, see
    ``_simd.tile_wide``); bias: the address of n floats when mode starts from the bias.

    k runs in chunks of KC, so that a panel of B (KC x NR floats, 16 KiB with AVX2) stays in L1
    while every tile of rows reads it; chunks after the first add to C, and ReLU applies to
    the last chunk's stores only.
    """
    ldc, a_rs, a_cs, ldb = strides
    for k0 in range(0, k, KC):
        kn = min(KC, k - k0)
        chunk_mode = mode & RELU_OUT if k0 + kn == k else 0
        chunk_mode |= mode & 3 if k0 == 0 else START_C
        ak, bk = a + _F4 * k0 * a_cs, b + _F4 * k0 * ldb
        for j0 in range(0, n, NR):
            cols = min(NR, n - j0)
            cj, bj, biasj = c + _F4 * j0, bk + _F4 * j0, bias + _F4 * j0
            if cols <= VEC:
                for i0 in range(0, m, MR_NARROW):
                    tile_narrow(cj + _F4 * i0 * ldc, ak + _F4 * i0 * a_rs, bj, biasj, strides, kn,
                                min(MR_NARROW, m - i0), cols, chunk_mode)
            else:
                for i0 in range(0, m, MR):
                    ci, ai, rows = cj + _F4 * i0 * ldc, ak + _F4 * i0 * a_rs, min(MR, m - i0)
                    if rows > 4:
                        tile_wide(ci, ai, bj, biasj, strides, kn, rows, cols, chunk_mode)
                    else:
                        tile_rows4(ci, ai, bj, biasj, strides, kn, rows, cols, chunk_mode)


@jit(inline="always")
def matmul_bias(out, x, w, b, relu):
    """out = x @ w + b, then max(out, 0) if relu. x (N, I), w (I, O), b (O,) -> out (N, O)."""
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    mode = START_BIAS | (RELU_OUT if relu else 0)
    strides = (out.strides[0] // _F4, x.strides[0] // _F4, np.int64(1), w.strides[0] // _F4)
    _gemm(address(out), address(x), address(w), address(b), strides, n_rows, n_out, n_in, np.int64(mode))


@jit(inline="always")
def matmul_tn(dw, x, dz):
    """dw = x.T @ dz. x (N, I), dz (N, O) -> dw (I, O); A[i, n] = x[n, i] is read in place.

    Where dz's panels would not stay in L1 (PANEL_STRIDE), through ``_gemm_copying_b``.
    """
    n_rows, n_in = x.shape
    n_out = dz.shape[1]
    strides = (dw.strides[0] // _F4, np.int64(1), x.strides[0] // _F4, dz.strides[0] // _F4)
    ldz = strides[3]
    if min(n_rows, KC) * ldz >= L1_FLOATS and ldz % PANEL_STRIDE == 0 and n_in > MR:
        _gemm_copying_b(address(dw), address(x), address(dz), strides, n_in, n_out, n_rows)
    else:
        _gemm(address(dw), address(x), address(dz), np.int64(0), strides, n_in, n_out, n_rows,
              np.int64(START_ZERO))


@jit(inline="always")
def _gemm_copying_b(c, a, b, strides, m, n, k):
    """C = A @ B from zero as ``_gemm``, each k chunk of each panel of B first copied into PANEL
    floats on the stack (``_simd.copy_panel``), rows side by side, where ``_gemm`` reads it with
    a row stride of NR: the same chunks, tiles and sums as ``_gemm`` on B in place, equal bit for
    bit. Inlined into ``matmul_tn`` (compiled as a function of its own, it took another copy of
    ``_gemm``'s code, 1 s of a cold start), and the buffer is allocated here only: the calls that
    copy nothing keep ``matmul_tn``'s frame as small as before (tiny products ran 5-10% slower
    with it, or with the copy inside ``_gemm``).
    """
    ldc, a_rs, a_cs, ldb = strides
    packed = stack_floats_here(PANEL)
    panel_strides = (ldc, a_rs, a_cs, np.int64(NR))
    for k0 in range(0, k, KC):
        kn = min(KC, k - k0)
        mode = np.int64(START_ZERO if k0 == 0 else START_C)
        for j0 in range(0, n, NR):
            cols = min(NR, n - j0)
            copy_panel(packed, b + _F4 * (k0 * ldb + j0), ldb, kn, cols)
            _gemm(c + _F4 * j0, a + _F4 * k0 * a_cs, packed, np.int64(0), panel_strides, m, cols, kn, mode)


@jit(inline="always")
def matmul_nt(dx, dz, w):
    """dx = dz @ w.T. dz (N, O), w (I, O) -> dx (N, I), through packed panels of w.T."""
    n_rows, n_out = dz.shape
    n_in = w.shape[0]
    packed = numba.carray(stack_floats(PACK), (PACK,))
    panel = min((n_in + NR - 1) // NR * NR, PACK_COLS)
    chunk = PACK // panel
    ldw, ldz, ldx = w.strides[0] // _F4, dz.strides[0] // _F4, dx.strides[0] // _F4
    for c0 in range(0, n_in, panel):
        nc = min(panel, n_in - c0)
        for k0 in range(0, n_out, chunk):
            kn = min(chunk, n_out - k0)
            for kk in range(kn):
                for cc in range(nc):
                    packed[kk * nc + cc] = w[c0 + cc, k0 + kk]
            _gemm(address(dx) + _F4 * c0, address(dz) + _F4 * k0, address(packed), np.int64(0),
                  (ldx, ldz, np.int64(1), nc), n_rows, nc, kn, np.int64(START_ZERO if k0 == 0 else START_C))


def is_float32(a):
    """True for a float32 array: a constant where compiled, so the other branch is dropped."""
    return a.dtype == np.float32


@overload(is_float32)
def _is_float32_overload(a):
    answer = isinstance(a, types.Array) and a.dtype == types.float32
    return lambda a: answer


@jit(inline="always")
def use_simd(a, rows, macs):
    """Whether a layer's product of ``macs`` multiply-adds over a batch of ``rows`` rows, on
    arrays like ``a``, runs in these kernels."""
    return WIDTH > 0 and is_float32(a) and (
        macs <= SIMD_MAX_MACS or (rows <= SIMD_FEW_ROWS and macs <= SIMD_FEW_ROWS_MAX_MACS))
