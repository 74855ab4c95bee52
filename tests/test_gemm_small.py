"""fastbp's own float32 SIMD products (kernels/cpu/gemm_small.py) against float64 NumPy.

Shapes straddle every tile edge: rows around MR (6), the 4-row tile of a product's last rows
and MR_NARROW (8), columns around one and two vectors (8 and 16 floats with AVX2, 16 and 32
with AVX-512), k around the driver's chunk KC (256). Both vector widths run, each in a fresh
interpreter with FASTBP_SIMD_WIDTH set (the width is read once, at import): 16-wide IR runs on
AVX2 hardware too. Width 0 checks that the dense kernels keep their plain path on a CPU without
SIMD kernels.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fastbp.kernels.cpu import gemm_small as G
from fastbp.kernels.cpu._simd import WIDTH

ROWS = (1, 2, 4, 5, 6, 7, 8, 9, 10, 13)  # the last tile: 1-4 rows (tile_rows4), 5-6 (tile_wide)
K = (1, 3, 17)
K_CHUNKS = (255, 256, 257, 600)


def _columns(width):
    return sorted({1, width - 1, width, width + 1, 2 * width - 1, 2 * width, 2 * width + 1, 3 * width + 5})


def _operands(rng, m, k, n):
    x = rng.standard_normal((m, k)).astype(np.float32)
    w = rng.standard_normal((k, n)).astype(np.float32)
    return x, w, rng.standard_normal(n).astype(np.float32), rng.standard_normal((m, n)).astype(np.float32)


def _check_products(width):
    """Every product at every shape; returns the worst error relative to the largest |value|."""
    rng = np.random.default_rng(width)
    worst = 0.0
    shapes = [(m, k, n) for m in ROWS for k in K for n in _columns(width)]
    shapes += [(m, k, n) for m in (6, 7) for k in K_CHUNKS for n in (width, 2 * width + 3)]
    for m, k, n in shapes:
        x, w, b, dz = _operands(rng, m, k, n)
        x64, w64, dz64 = x.astype(np.float64), w.astype(np.float64), dz.astype(np.float64)
        expected = {"out": x64 @ w64 + b, "dw": x64.T @ dz64, "dx": dz64 @ w64.T}
        expected["relu"] = np.maximum(expected["out"], 0.0)
        got = {name: np.full(a.shape, np.nan, np.float32) for name, a in expected.items()}
        G.matmul_bias(got["out"], x, w, b, False)
        G.matmul_bias(got["relu"], x, w, b, True)
        G.matmul_tn(got["dw"], x, dz)
        G.matmul_nt(got["dx"], dz, w)
        for name in expected:
            # float32 sums of k products: a few ulp of the largest term, times sqrt(k)-ish growth.
            scale = np.abs(expected[name]).max() + 1.0
            err = float(np.abs(got[name] - expected[name]).max() / scale)
            assert err < 1e-5 * (1 + np.sqrt(k)), (width, (m, k, n), name, err)
            worst = max(worst, err)
    return max(worst, _check_copied_panels(rng, width))


def _check_copied_panels(rng, width):
    """The weight gradient with dz at a row stride of a multiple of PANEL_STRIDE floats (a column
    slice of a wider array), whose panels matmul_tn copies before its tiles read them: against
    float64, and bit for bit against the same product read in place (dz at another stride)."""
    worst = 0.0
    for m in (5, 7, 300):  # 300 rows: k in two chunks of KC
        for k in (7, 17, 40):  # more rows of dw than one tile (MR)
            for n in (1, width - 1, 2 * width, 2 * width + 3, G.PANEL_STRIDE):
                x = rng.standard_normal((m, k)).astype(np.float32)
                wide = rng.standard_normal((m, 2 * G.PANEL_STRIDE)).astype(np.float32)
                padded = np.empty((m, n + (8 if (n + 8) % G.PANEL_STRIDE else 16)), np.float32)
                copied, in_place = wide[:, :n], padded[:, :n]
                in_place[:] = copied
                assert copied.strides[0] // 4 % G.PANEL_STRIDE == 0 and in_place.strides[0] // 4 % G.PANEL_STRIDE
                got, again = (np.full((k, n), np.nan, np.float32) for _ in range(2))
                G.matmul_tn(got, x, copied)
                G.matmul_tn(again, x, in_place)
                assert np.array_equal(got, again), (width, (m, k, n))
                expected = x.T.astype(np.float64) @ copied.astype(np.float64)
                err = float(np.abs(got - expected).max() / (np.abs(expected).max() + 1.0))
                assert err < 1e-5 * (1 + np.sqrt(m)), (width, (m, k, n), err)
                worst = max(worst, err)
    return worst


def _check_dense_kernels():
    """The checked dense kernels in float32, ReLU and identity, against float64 NumPy."""
    from fastbp import kernels as K_

    def close(got, expected, k):
        # as in _check_products: a few ulp of the largest term, growing with the sum's length k
        scale = np.abs(expected).max() + 1.0
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * (1 + np.sqrt(k)) * scale)

    rng = np.random.default_rng(1)
    # (16, 32, 32) and (16, 33, 32) straddle SIMD_NT_MAX_MACS (dx in the SIMD kernel, in BLAS).
    # The last two straddle use_simd's rule for medium products: few rows (SIMD) and one more
    # row than SIMD_FEW_ROWS (BLAS), both above SIMD_MAX_MACS. (16, 20, 512): dw copies dz's
    # panels (16 rows at a stride of 512 floats span L1_FLOATS).
    for n, i, o in ((32, 64, 32), (7, 23, 5), (13, 17, 33), (1, 9, 1), (16, 32, 32), (16, 33, 32),
                    (16, 700, 130), (G.SIMD_FEW_ROWS + 1, 600, 120), (16, 20, 512)):
        x, w, b, dout = _operands(rng, n, i, o)
        for act in ("relu", "identity"):
            out = np.empty((n, o), np.float32)
            K_.dense_act_forward(out, x, w, b, K_.ACTIVATIONS[act], 0.0)
            z = x.astype(np.float64) @ w + b
            y = np.maximum(z, 0) if act == "relu" else z
            close(out, y, i)
            dx, dw, db, dz = (np.empty(s, np.float32) for s in ((n, i), (i, o), (o,), (n, o)))
            K_.dense_act_backward(dx, dw, db, dz, dout, out, x, w, K_.ACTIVATIONS[act], 0.0)
            g = dout.astype(np.float64) * ((out > 0) if act == "relu" else 1.0)
            close(dw, x.T.astype(np.float64) @ g, n)
            close(dx, g @ w.T.astype(np.float64), o)
            close(db, g.sum(0), n)


@pytest.mark.skipif(WIDTH == 0, reason="no SIMD kernels on this CPU")
def test_products_at_the_host_width_match_float64():
    assert _check_products(WIDTH) < 1e-4


def test_relu_keeps_nan_and_the_sign_of_zero():
    """The fused ReLU is _scalar.relu: NaN propagates (divergence stays visible), 0 * z below 0."""
    if WIDTH == 0:
        pytest.skip("no SIMD kernels on this CPU")
    x = np.array([[1.0, 0.0], [0.0, 1.0], [np.nan, 0.0]], np.float32)
    w = np.array([[2.0, -3.0], [1.0, 1.0]], np.float32)
    out = np.empty((3, 2), np.float32)
    G.matmul_bias(out, x, w, np.zeros(2, np.float32), True)
    assert out[0, 0] == 2.0 and out[0, 1] == 0.0 and np.signbit(out[0, 1])
    assert np.isnan(out[2]).all()


_CHILD = """
import json, sys
sys.path.insert(0, {tests!r})
import test_gemm_small as t
from fastbp.kernels.cpu import _simd
worst = t._check_products(_simd.VEC) if _simd.WIDTH else None
t._check_dense_kernels()
print(json.dumps({{"width": _simd.WIDTH, "worst": worst}}))
"""


def test_dense_kernels_at_the_host_width_match_float64():
    _check_dense_kernels()


@pytest.mark.skipif(WIDTH == 0, reason="no SIMD kernels on this CPU")
def test_medium_products_stay_in_simd_on_few_rows_only():
    """The medium shapes _check_dense_kernels runs take the paths its comment says."""
    few, more = G.SIMD_FEW_ROWS, G.SIMD_FEW_ROWS + 1
    x16, x17 = np.empty((16, 700), np.float32), np.empty((more, 600), np.float32)
    assert few >= 16 and 16 * 700 * 130 > G.SIMD_MAX_MACS and G.use_simd(x16, 16, 16 * 700 * 130)
    assert more * 600 * 120 > G.SIMD_MAX_MACS and not G.use_simd(x17, more, more * 600 * 120)
    assert not G.use_simd(x16, 16, G.SIMD_FEW_ROWS_MAX_MACS + 1)
    assert not G.use_simd(x16.astype(np.float64), 16, 16 * 700 * 130)
    assert 16 * 32 * 32 == G.SIMD_NT_MAX_MACS < 16 * 33 * 32 <= G.SIMD_MAX_MACS


@pytest.mark.parametrize("width", [8, 16, 0])
def test_each_vector_width_in_a_fresh_process(width):
    if width == WIDTH and "FASTBP_SIMD_WIDTH" not in os.environ:
        pytest.skip(f"width {width} is this CPU's own: the tests above ran it in this process")
    env = dict(os.environ, FASTBP_SIMD_WIDTH=str(width))
    done = subprocess.run([sys.executable, "-c", _CHILD.format(tests=os.path.dirname(__file__))], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["width"] == width
    if width:
        assert result["worst"] < 1e-4


def test_a_bad_forced_width_is_refused_by_name():
    env = dict(os.environ, FASTBP_SIMD_WIDTH="12")
    done = subprocess.run([sys.executable, "-c", "import fastbp.kernels.cpu._simd"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "FASTBP_SIMD_WIDTH must be 0, 8 or 16; got '12'" in done.stderr


def test_a_forced_width_selects_its_own_cache_folder(monkeypatch):
    """The width is frozen into compiled code: code compiled for one must never load for another."""
    from fastbp.kernels import _cache

    hashes = set()
    for width in ("", "0", "8", "16"):
        monkeypatch.setenv("FASTBP_SIMD_WIDTH", width)
        hashes.add(_cache.tree_hash())
    assert len(hashes) == 4
