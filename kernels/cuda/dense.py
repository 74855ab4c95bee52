"""Dense layer kernels on the GPU: out = f(x @ w + b), forward and backward.

Shapes: x (N, I), w (I, O), b (O,), out (N, O). Gradients are *overwritten*,
never accumulated, and dense backward is a plain sum over the batch (the mean
is taken in the loss backward), as on the CPU.

All three products of a layer go through one shared-memory tiled GEMM:

    forward       out (N, O) = x (N, I)   @ w (I, O)     A = x,    B = w
    input grad    dx  (N, I) = dz (N, O)  @ w.T (O, I)   A = dz,   B = w read transposed
    weight grad   dw  (I, O) = x.T (I, N) @ dz (N, O)    A = x read transposed, B = dz

A block computes a BM x BN tile of the output. It walks the shared dimension
BK at a time: its threads copy a BM x BK slab of A and a BK x BN slab of B
into shared memory (each global element is then read once per block instead
of once per output), synchronize, and each thread accumulates its TM x TN
outputs in registers from the slabs (register blocking: per step of k a
thread loads TM + TN values from shared memory for TM * TN multiply-adds). No
transpose is materialized: a transposed operand is copied into the slab from
its original layout, with the element-to-thread mapping chosen so that
consecutive threads read consecutive addresses (coalesced loads) either way.
Edges are guarded: slab entries outside the matrix are zero and outputs
outside it are not stored, so any N, I, O works (5 x 23 @ 23 x 7 is one
partly filled block).

The forward fuses bias and activation into the GEMM epilogue. The backward
starts with one pass over dout that computes dz = dout * f'(out) and the bias
gradient db = dz.sum(0) together (a column reduction), then runs the two
products on dz.

Accumulators take the arrays' dtype: float32 layers multiply and add in
float32, float64 layers in float64 (no Python float literal enters the loops).
The epilogue and the activation derivative call the shared scalar formulas of
``kernels/_scalar.py``, written with float literals, so for float32 they
evaluate in float64 like the CPU kernels do; that is O(N O) work against the
O(N I O) of the products.
"""
from .._scalar import IDENTITY, activate, activate_grad
from ._launch import cdiv, dev, fixed
from ._numba_cuda import cuda, device, kernel

# GEMM tile: a block of THREADS threads computes BM x BN outputs, each thread a
# TM x TN lattice of them, and consumes the shared dimension BK at a time.
# Module constants, frozen into the compiled kernels: never change at run time.
BM = 64
BN = 64
BK = 16
TM = 4
TN = 4
THREADS_M = BM // TM  # 16 thread rows
THREADS_N = BN // TN  # 16 thread columns
THREADS = THREADS_M * THREADS_N  # 256
# One extra column in each slab row so that the column-wise slab writes of a
# warp (consecutive threads, consecutive k) fall in different banks.
PAD = 1
A_SLAB = (BK, BM + PAD)  # shared-memory slab shapes, as literal tuples for numba
B_SLAB = (BK, BN + PAD)
ACC = (TM, TN)

# Column reduction for the bias gradient: a block of COLS x LANES threads owns
# COLS columns; the LANES threads of a column stride down its rows.
COLS = 32
LANES = 8
PARTIALS = (LANES, COLS)


@device
def _load_slab(tile, src, outer0, k0, n_outer, depth, k_major, width):
    """Copy M[outer0:outer0+width, k0:k0+BK] into tile[k, o], zero outside the matrix.

    M[o, k] is ``src[k, o]`` when ``k_major`` (src is depth x n_outer: a row of
    src runs along o, so o is the fast index) and ``src[o, k]`` otherwise (k the
    fast index), so that consecutive threads read consecutive elements either
    way. The A slab of A = a is M = a (k fast), of A = a.T is M with src = a
    (k-major); the B slab of B = b is M = b.T, i.e. src = b k-major, and of
    B = b.T it is src = b with k fast.
    """
    tid = cuda.threadIdx.x
    for s in range(width * BK // THREADS):
        e = tid + s * THREADS
        if k_major:
            kk = e // width
            oo = e - kk * width
        else:
            oo = e // BK
            kk = e - oo * BK
        o = outer0 + oo
        k = k0 + kk
        if o < n_outer and k < depth:
            tile[kk, oo] = src[k, o] if k_major else src[o, k]
        else:
            tile[kk, oo] = 0


@device
def _tile_product(acc, a_tile, b_tile, a, b, n_rows, n_cols, depth, a_transposed, b_transposed):
    """acc[r, c] = sum_k A[row_r, k] B[k, col_c] over this thread's TM x TN outputs.

    Thread (tm, tn) of the block owns rows row0 + tm + THREADS_M r and columns
    col0 + tn + THREADS_N c: a lattice with stride 16 rather than a contiguous
    4 x 4 patch, so that the 16 threads of a half-warp read 16 consecutive
    slab entries of B (distinct banks) and later store 16 consecutive outputs
    of a row (coalesced). Blocks tile the output disjointly and threads
    partition the block tile, so every output has exactly one writer.

    Every thread of the block must call this (it synchronizes); the k loop
    has the same trip count in all of them.
    """
    tid = cuda.threadIdx.x
    tm = tid // THREADS_N
    tn = tid - tm * THREADS_N
    row0 = cuda.blockIdx.x * BM
    col0 = cuda.blockIdx.y * BN
    a_frag = cuda.local.array(TM, a_tile.dtype)
    b_frag = cuda.local.array(TN, b_tile.dtype)
    for r in range(TM):
        for c in range(TN):
            acc[r, c] = 0
    for k0 in range(0, depth, BK):
        _load_slab(a_tile, a, row0, k0, n_rows, depth, a_transposed, BM)
        _load_slab(b_tile, b, col0, k0, n_cols, depth, not b_transposed, BN)
        cuda.syncthreads()  # slabs complete before anyone reads them
        for kk in range(BK):
            for r in range(TM):
                a_frag[r] = a_tile[kk, tm + r * THREADS_M]
            for c in range(TN):
                b_frag[c] = b_tile[kk, tn + c * THREADS_N]
            for r in range(TM):
                for c in range(TN):
                    acc[r, c] += a_frag[r] * b_frag[c]
        cuda.syncthreads()  # everyone done reading before the next copy overwrites


@device
def _first_output():
    """(row, column) of this thread's first output; the others are THREADS_M / THREADS_N apart."""
    tid = cuda.threadIdx.x
    tm = tid // THREADS_N
    tn = tid - tm * THREADS_N
    return cuda.blockIdx.x * BM + tm, cuda.blockIdx.y * BN + tn


@kernel
def _forward_kernel(out, x, w, b, activation, alpha):
    """out = f(x @ w + b): the GEMM with bias and activation in the epilogue."""
    a_tile = cuda.shared.array(A_SLAB, x.dtype)
    b_tile = cuda.shared.array(B_SLAB, x.dtype)
    acc = cuda.local.array(ACC, x.dtype)
    n_rows, depth = x.shape
    n_cols = w.shape[1]
    _tile_product(acc, a_tile, b_tile, x, w, n_rows, n_cols, depth, False, False)
    row, col = _first_output()
    for r in range(TM):
        n = row + r * THREADS_M
        if n < n_rows:
            for c in range(TN):
                j = col + c * THREADS_N
                if j < n_cols:
                    out[n, j] = activate(activation, acc[r, c] + b[j], alpha)


@device
def _plain_product(c, a, b, depth, a_transposed, b_transposed):
    """c = A @ B, no epilogue: A is a or a.T and B is b or b.T, both read in place.

    The kernels below call it with literal flags, which NVVM propagates into
    the inlined slab loads, as when each kernel had its own copy of this body.
    """
    a_tile = cuda.shared.array(A_SLAB, c.dtype)
    b_tile = cuda.shared.array(B_SLAB, c.dtype)
    acc = cuda.local.array(ACC, c.dtype)
    n_rows, n_cols = c.shape
    _tile_product(acc, a_tile, b_tile, a, b, n_rows, n_cols, depth, a_transposed, b_transposed)
    row, col = _first_output()
    for r in range(TM):
        i = row + r * THREADS_M
        if i < n_rows:
            for k in range(TN):
                j = col + k * THREADS_N
                if j < n_cols:
                    c[i, j] = acc[r, k]


@kernel
def _input_grad_kernel(dx, dz, w):
    """dx (N, I) = dz (N, O) @ w.T, reading w (I, O) in place."""
    _plain_product(dx, dz, w, dz.shape[1], False, True)


@kernel
def _weight_grad_kernel(dw, x, dz):
    """dw (I, O) = x.T @ dz (N, O), reading x (N, I) in place; a plain sum over the batch."""
    _plain_product(dw, x, dz, x.shape[0], True, False)


@kernel
def _bias_grad_kernel(db, dz, dout, out, activation, alpha, fused):
    """db = dz.sum(0), first computing dz = dout * f'(out) when ``fused``.

    Block (COLS, LANES): thread (c, l) owns column blockIdx.x * COLS + c and
    rows l, l + LANES, ...; a warp reads 32 consecutive columns of a row
    (coalesced). Each dz element has one owner, which reads dout before it
    writes dz, so dz may be dout. The LANES partial sums of a column are then
    added by a shared-memory tree in a fixed order: the result is
    deterministic, with no atomics.
    """
    partial = cuda.shared.array(PARTIALS, db.dtype)
    c = cuda.threadIdx.x
    lane = cuda.threadIdx.y
    j = cuda.blockIdx.x * COLS + c
    n_rows, n_cols = dout.shape
    total = db.dtype.type(0)
    if j < n_cols:
        for n in range(lane, n_rows, LANES):
            if fused:
                dz[n, j] = dout[n, j] * activate_grad(activation, out[n, j], alpha)
            total += dz[n, j]  # sums dz as stored, exactly like the CPU kernel
    partial[lane, c] = total
    cuda.syncthreads()
    step = LANES // 2
    while step > 0:  # same trip count in every thread: syncthreads is never divergent
        if lane < step:
            partial[lane, c] += partial[lane + step, c]
        cuda.syncthreads()
        step //= 2
    if lane == 0 and j < n_cols:
        db[j] = partial[0, c]


def _products_backward(dx, dw, dz, x, w):
    n_rows, n_in = x.shape
    n_out = w.shape[1]
    fixed(_weight_grad_kernel, (cdiv(n_in, BM), cdiv(n_out, BN)), THREADS)(dw, x, dz)
    if dx.size:
        fixed(_input_grad_kernel, (cdiv(n_rows, BM), cdiv(n_in, BN)), THREADS)(dx, dz, w)


def _bias_grad(db, dz, dout, out, activation, alpha, fused):
    fixed(_bias_grad_kernel, cdiv(dout.shape[1], COLS), (COLS, LANES))(
        db, dz, dout, out, activation, alpha, fused)


def dense_act_forward(out, x, w, b, activation, alpha):
    """Fused dense + activation forward: out = f(x @ w + b).

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten. ``activation`` is an
    activation code from ``fastbp.kernels.ACTIVATIONS`` and ``alpha`` its
    parameter (leaky slope, ELU alpha; ignored otherwise). One kernel: the
    tiled product with bias and activation applied as each output is stored.
    """
    out, x, w, b = (dev(a) for a in (out, x, w, b))
    n_rows = x.shape[0]
    n_out = w.shape[1]
    fixed(_forward_kernel, (cdiv(n_rows, BM), cdiv(n_out, BN)), THREADS)(
        out, x, w, b, int(activation), float(alpha))


def dense_forward(out, x, w, b):
    """Dense forward: out = x @ w + b.

    x (N, I), w (I, O), b (O,) -> out (N, O), overwritten.
    """
    dense_act_forward(out, x, w, b, IDENTITY, 0.0)


def dense_backward(dx, dw, db, dout, x, w):
    """Backward of out = x @ w + b.

    dout (N, O), x (N, I), w (I, O) -> dx (N, I) = dout @ w.T,
    dw (I, O) = x.T @ dout, db (O,) = dout.sum(0). All three are overwritten.
    Pass a zero-size dx (e.g. ``cuda.device_array((0, 0))``) to skip the input
    gradient, as the first layer of a network does.
    """
    dx, dw, db, dout, x, w = (dev(a) for a in (dx, dw, db, dout, x, w))
    _bias_grad(db, dout, dout, dout, IDENTITY, 0.0, False)
    _products_backward(dx, dw, dout, x, w)


def dense_act_backward(dx, dw, db, dz, dout, out, x, w, activation, alpha):
    """Backward of out = f(z), z = x @ w + b, for activations derivable from out.

    dout (N, O), out (N, O), x (N, I), w (I, O) -> dz (N, O) = dout * f'(z)
    with f'(z) computed from out; dx (N, I) = dz @ w.T, dw (I, O) = x.T @ dz,
    db (O,) = dz.sum(0). All outputs are overwritten; dz may be the same array
    as dout. A zero-size dx skips the input gradient. Not valid for GELU, whose
    derivative needs z. The first kernel computes dz and db in one pass.
    """
    dx, dw, db, dz, dout, out, x, w = (dev(a) for a in (dx, dw, db, dz, dout, out, x, w))
    _bias_grad(db, dz, dout, out, int(activation), float(alpha), True)
    _products_backward(dx, dw, dz, x, w)
