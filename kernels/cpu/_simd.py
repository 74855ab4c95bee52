"""Explicit SIMD for float32 products: a register-blocked GEMM micro-kernel in LLVM vector IR.

numba's loop nests do not keep a tile of C in vector registers (they were 2-8x slower than
OpenBLAS on small products), so the micro-kernel is written here as LLVM IR through numba's
``@intrinsic``: MR x NV accumulators of ``<WIDTH x float>``, each step of the k loop loads NV
vectors of a row of B, broadcasts MR elements of A and issues MR * NV ``llvm.fma`` calls. The
accumulators live in allocas that LLVM's SROA turns into registers (6 x 2 of them: 12 of the 16
ymm registers with AVX2, of the 32 zmm registers with AVX-512).

The vector width comes from the CPU numba compiles for (llvmlite's feature list of the host, or
the CPU that ``NUMBA_CPU_NAME`` and ``NUMBA_CPU_FEATURES`` name): 16 floats with AVX-512F,
8 with AVX2 + FMA, 0 (no SIMD kernels: callers keep BLAS and their loop nests) otherwise.
``FASTBP_SIMD_WIDTH`` (0, 8 or 16), read once at import, forces it: the tests run both widths
on one machine (16-wide IR runs on AVX2 hardware too, LLVM splits each vector in two). The
width is part of the kernel cache key (``kernels/_cache.py``), as it is frozen into the code.

Ragged edges: a tile narrower than NV * WIDTH columns takes a second copy of the loop whose B
loads and C stores are ``llvm.masked.load``/``llvm.masked.store`` (no read or write past a
row's end); a tile of fewer rows than it has computes its missing rows on a copy of its last row
and does not store them. The last rows of a product take a tile of 4 rows where at most 4 are
left. Everything is float32 and loads and stores say ``align 4``: the operands are views at any
element offset. The code runs on the calling thread and allocates nothing.
"""
import os

import llvmlite.binding as llb
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


# The widths of the x86-64 microarchitecture levels that a cache built ahead for "any machine of
# that level" names (``fastbp compile --cpu``): a level's name implies its features.
_LEVEL_WIDTHS = {"generic": 0, "x86-64": 0, "x86-64-v2": 0, "x86-64-v3": 8, "x86-64-v4": 16}


def _width_of(features):
    if features.get("avx512f", False):
        return 16
    if features.get("avx2", False) and features.get("fma", False):
        return 8
    return 0


def _target_width():
    """The vector width of the CPU numba compiles for: the host's, or the one that
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` name (a cache built for other machines)."""
    forced = os.environ.get("FASTBP_SIMD_WIDTH", "").strip()
    if forced:
        if forced not in ("0", "8", "16"):
            raise ValueError(f"FASTBP_SIMD_WIDTH must be 0, 8 or 16; got {forced!r}")
        return int(forced)
    from numba.core import config

    if config.CPU_FEATURES:
        named = {f[1:]: f[0] == "+" for f in config.CPU_FEATURES.split(",") if f[:1] in "+-" and len(f) > 1}
        return _width_of(named)
    if config.CPU_NAME is not None and config.CPU_NAME != llb.get_host_cpu_name():
        # A named CPU whose features numba takes from LLVM: known levels by name; for others,
        # no SIMD kernels (BLAS and the loop nests run anywhere).
        return _LEVEL_WIDTHS.get(config.CPU_NAME.lower(), 0)
    return _width_of(llb.get_host_cpu_features())


# Floats per vector register; 0: no SIMD kernels on this CPU. A compile-time constant.
WIDTH = _target_width()
# The micro-tile: MR rows by NV vectors of columns (6 x 16 with AVX2, 6 x 32 with AVX-512), and
# a narrow one for the last columns of a product at most one vector wide (10 logits).
MR = 6
NV = 2
MR_NARROW = 8
NR = NV * max(WIDTH, 8)
VEC = max(WIDTH, 8)  # the IR's vector width; 8 when WIDTH is 0 (code that is never called)

# Tile modes (bits): where the accumulators start, and ReLU on the way out.
START_ZERO = 0
START_C = 1     # C += A @ B
START_BIAS = 2  # C = bias + A @ B, bias a row of NR floats at the bias address
RELU_OUT = 4

_F32 = ir.FloatType()
_I32 = ir.IntType(32)
_I64 = ir.IntType(64)


@intrinsic
def address(typingctx, arr):
    """The address of an array's first element, as an integer (no copy, no reference kept)."""
    if not isinstance(arr, types.Array):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        return builder.ptrtoint(ary.data, _I64)

    return types.int64(arr), codegen


@intrinsic
def stack_floats(typingctx, n):
    """A pointer to n float32 (a compile-time constant) on the calling function's stack frame.

    The alloca sits in the entry block of the function that calls this, so the memory lives as
    long as that call; scratch for packing an operand without an allocation per step
    (``numba.carray`` makes it an array).
    """
    if not isinstance(n, types.IntegerLiteral):
        return None
    count = n.literal_value

    def codegen(context, builder, sig, args):
        # Not cgutils.alloca_once, which zero-fills its slot at every entry of the function: a
        # 32 KiB memset per call, 0.3 us, more than a whole 16 x 16 x 2 product.
        with builder.goto_entry_block():
            slot = builder.alloca(ir.ArrayType(_F32, count))
        slot.align = 64
        return builder.bitcast(slot, _F32.as_pointer())

    return types.CPointer(types.float32)(n), codegen


@intrinsic
def stack_floats_here(typingctx, n):
    """The address (an integer) of n float32 (a compile-time constant) on the calling function's
    stack, allocated where this runs rather than in the function's entry block: a call that
    does not reach it keeps its frame as small as before. The memory lives until the function
    returns, so never call this in a loop (each pass would take n more floats)."""
    if not isinstance(n, types.IntegerLiteral):
        return None
    count = n.literal_value

    def codegen(context, builder, sig, args):
        slot = builder.alloca(_F32, size=ir.Constant(_I64, count))
        slot.align = 64
        return builder.ptrtoint(slot, _I64)

    return types.int64(n), codegen


def _declare(module, name, ret, params):
    return cgutils.get_or_insert_function(module, ir.FunctionType(ret, params), name)


class _Vectors:
    """Loads and stores of VEC floats at a float* base plus an offset in floats: plain, or masked
    (``llvm.masked.load``/``llvm.masked.store``: nothing outside the mask is read or written)."""

    def __init__(self, builder):
        self.builder = builder
        self.vty = vty = ir.VectorType(_F32, VEC)
        self.vptr = vptr = vty.as_pointer()
        mty = ir.VectorType(ir.IntType(1), VEC)
        suffix = f"v{VEC}f32"
        # Named for a typed pointer (<VEC x float>*), as LLVM before opaque pointers wants; later
        # LLVMs remangle the name to ".p0" when they read the module.
        self.mload = _declare(builder.module, f"llvm.masked.load.{suffix}.p0{suffix}", vty, [vptr, _I32, mty, vty])
        self.mstore = _declare(builder.module, f"llvm.masked.store.{suffix}.p0{suffix}", ir.VoidType(),
                               [vty, vptr, _I32, mty])
        self.zero = ir.Constant(vty, [0.0] * VEC)
        self.align4 = ir.Constant(_I32, 4)

    def masks(self, cols, nv):
        """For each of nv vectors of a row, the lanes below ``cols`` (an i64) floats."""
        builder, ity = self.builder, ir.VectorType(_I32, VEC)
        iota = ir.Constant(ity, list(range(VEC)))
        out = []
        for j in range(nv):
            left = builder.trunc(builder.sub(cols, ir.Constant(_I64, j * VEC)), _I32)
            splat = builder.shuffle_vector(builder.insert_element(ir.Constant(ity, None), left, ir.Constant(_I32, 0)),
                                           ir.Constant(ity, None), ir.Constant(ity, [0] * VEC))
            out.append(builder.icmp_signed("<", iota, splat))
        return out

    def at(self, base, offset):
        return self.builder.bitcast(self.builder.gep(base, [offset]), self.vptr)

    def load(self, base, offset, mask):
        if mask is None:
            return self.builder.load(self.at(base, offset), align=4)
        return self.builder.call(self.mload, [self.at(base, offset), self.align4, mask, self.zero])

    def store(self, value, base, offset, mask):
        if mask is None:
            self.builder.store(value, self.at(base, offset), align=4)
        else:
            self.builder.call(self.mstore, [value, self.at(base, offset), self.align4, mask])


def _emit_tile(builder, ptrs, strides, k, rows, cols, mode, mr, nv):
    """The IR of one micro-tile; ``ptrs`` (c, a, b, bias) are float* values."""
    vectors = _Vectors(builder)
    vty = vectors.vty
    fma = _declare(builder.module, f"llvm.fma.v{VEC}f32", vty, [vty, vty, vty])
    c, a, b, bias = ptrs
    ldc, a_rs, a_cs, ldb = strides
    zero_vec = vectors.zero
    splat_mask = ir.Constant(ir.VectorType(_I32, VEC), [0] * VEC)
    load, store = vectors.load, vectors.store

    def masks():
        return vectors.masks(cols, nv)

    # Rows past the tile's end read the last row again (valid memory) and are not stored.
    last = builder.sub(rows, ir.Constant(_I64, 1))
    row_a = []
    for r in range(mr):
        rr = ir.Constant(_I64, r)
        clamped = builder.select(builder.icmp_signed("<", rr, rows), rr, last)
        row_a.append(builder.mul(clamped, a_rs))
    accs = [[cgutils.alloca_once(builder, vty) for _ in range(nv)] for _ in range(mr)]
    start = builder.and_(mode, ir.Constant(_I64, 3))
    relu = builder.icmp_signed("!=", builder.and_(mode, ir.Constant(_I64, RELU_OUT)), ir.Constant(_I64, 0))

    def body(mask_list):
        m = mask_list if mask_list is not None else [None] * nv
        with builder.if_else(builder.icmp_signed("==", start, ir.Constant(_I64, START_C))) as (from_c, other):
            with from_c:
                for r in range(mr):
                    for j in range(nv):
                        builder.store(load(c, builder.add(builder.mul(ir.Constant(_I64, r), ldc),
                                                          ir.Constant(_I64, j * VEC)), m[j]), accs[r][j])
            with other:
                is_bias = builder.icmp_signed("==", start, ir.Constant(_I64, START_BIAS))
                for j in range(nv):
                    with builder.if_else(is_bias) as (yes, no):
                        with yes:
                            v = load(bias, ir.Constant(_I64, j * VEC), m[j])
                            for r in range(mr):
                                builder.store(v, accs[r][j])
                        with no:
                            for r in range(mr):
                                builder.store(zero_vec, accs[r][j])
        with cgutils.for_range(builder, k) as loop:
            kk = loop.index
            b_row = builder.mul(kk, ldb)
            bv = [load(b, builder.add(b_row, ir.Constant(_I64, j * VEC)), m[j]) for j in range(nv)]
            a_col = builder.mul(kk, a_cs)
            for r in range(mr):
                scalar = builder.load(builder.gep(a, [builder.add(row_a[r], a_col)]), align=4)
                av = builder.shuffle_vector(builder.insert_element(ir.Constant(vty, None), scalar,
                                                                   ir.Constant(_I32, 0)),
                                            ir.Constant(vty, None), splat_mask)
                for j in range(nv):
                    builder.store(builder.call(fma, [av, bv[j], builder.load(accs[r][j])]), accs[r][j])
        for r in range(mr):
            with builder.if_then(builder.icmp_signed("<", ir.Constant(_I64, r), rows)):
                for j in range(nv):
                    v = builder.load(accs[r][j])
                    # _scalar.relu exactly: z if z > 0 else 0 * z (NaN stays NaN, -0 for z < 0).
                    rectified = builder.select(builder.fcmp_ordered(">", v, zero_vec), v, builder.fmul(zero_vec, v))
                    v = builder.select(relu, rectified, v)
                    store(v, c, builder.add(builder.mul(ir.Constant(_I64, r), ldc), ir.Constant(_I64, j * VEC)),
                          m[j])

    full = builder.icmp_signed("==", cols, ir.Constant(_I64, nv * VEC))
    with builder.if_else(full) as (whole, ragged):
        with whole:
            body(None)
        with ragged:
            body(masks())


def _tile_intrinsic(mr, nv):
    @intrinsic
    def tile(typingctx, c, a, b, bias, strides, k, rows, cols, mode):
        sig = types.void(types.int64, types.int64, types.int64, types.int64, types.UniTuple(types.int64, 4),
                         types.int64, types.int64, types.int64, types.int64)

        def codegen(context, builder, signature, args):
            fptr = _F32.as_pointer()
            ptrs = [builder.inttoptr(v, fptr) for v in args[:4]]
            strides_ = cgutils.unpack_tuple(builder, args[4], 4)
            _emit_tile(builder, ptrs, strides_, *args[5:], mr=mr, nv=nv)
            return context.get_dummy_value()

        return sig, codegen

    return tile


# tile(c, a, b, bias, (ldc, a_rs, a_cs, ldb), k, rows, cols, mode), addresses and strides in
# float32 elements: C[r, j] (=|+=) sum_k A[r, k] B[k, j] for r < rows <= MR, j < cols <= NV *
# WIDTH, with A[r, k] at a + r a_rs + k a_cs, B[k, j] at b + k ldb + j, C[r, j] at c + r ldc + j.
tile_wide = _tile_intrinsic(MR, NV)
tile_narrow = _tile_intrinsic(MR_NARROW, 1)
# The same tile for the last rows of a product whose row count is not a multiple of MR, when at
# most 4 are left. A batch of 2^j rows leaves 2 or 4 (16, 32, 64, ... = 6q + 4 or 6q + 2), and a
# wide tile there cost as much as a full one: forward 1.06-1.13x faster on eleven shapes from 8 x
# 64 x 64 to 32 x 1024 x 512, weight gradient 0.97-1.10x, results unchanged bit for bit (a tile
# for 2 rows as well gained a little more and cost 2 s of a cold `fastbp train`).
tile_rows4 = _tile_intrinsic(4, NV)


@intrinsic
def copy_panel(typingctx, dst, src, ldb, k, cols):
    """Copy k rows of ``cols`` <= NR floats from ``src`` (row stride ``ldb`` floats) to ``dst``
    (row stride NR): a panel of B, its rows side by side, for tiles to read with ldb = NR
    (``gemm_small._gemm``). Addresses as integers; a panel narrower than NR is copied with
    masked loads and stores, and nothing past ``cols`` in a row is read or written."""
    sig = types.void(types.int64, types.int64, types.int64, types.int64, types.int64)

    def codegen(context, builder, signature, args):
        vectors = _Vectors(builder)
        dst_, src_ = (builder.inttoptr(v, _F32.as_pointer()) for v in args[:2])
        ldb_, k_, cols_ = args[2:]
        masks = vectors.masks(cols_, NV)
        with builder.if_else(builder.icmp_signed("==", cols_, ir.Constant(_I64, NR))) as (whole, ragged):
            for masked, block in ((False, whole), (True, ragged)):
                with block, cgutils.for_range(builder, k_) as loop:
                    row_src = builder.mul(loop.index, ldb_)
                    row_dst = builder.mul(loop.index, ir.Constant(_I64, NR))
                    for j in range(NV):
                        mask = masks[j] if masked else None
                        v = vectors.load(src_, builder.add(row_src, ir.Constant(_I64, j * VEC)), mask)
                        vectors.store(v, dst_, builder.add(row_dst, ir.Constant(_I64, j * VEC)), mask)
        return context.get_dummy_value()

    return sig, codegen
