"""The fast plan's fused kernels against their NumPy twins, and BN folding against explicit BN.

The whole fast plan is compared with Keras in tests/test_model_keras.py (and at the
smallest inputs, 1x1 maps from block2 on, in tests/test_small_inputs.py); these
tests localise a fault to one kernel. Maps start at 1x1: a variable-size model runs its
pooling and strided residuals on 1x1 and 2x2 maps for inputs below 71x71. Both sides run the same dtype; the
float32 tolerance 1e-5 relative covers reductions of at most 9 taps (depthwise)
or a max (exact); float64 agrees to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npxception import blas, fast, ops
from npxception.config import CONFIG
from npxception.fast import direct, fused, packing
from npxception.ops.padding import window_geometry

TOL = {np.float32: 1e-5, np.float64: 1e-12}
dtypes = st.sampled_from([np.float32, np.float64])


def rand(rng, shape, dtype):
    return rng.normal(0, 1, shape).astype(dtype)


def conv_geometry(h, w, k, stride, same):
    """(Ho, Wo, pad_top, pad_left) of a k x k convolution, TF's SAME or VALID (the ops' one rule)."""
    padding = "same" if same else "valid"
    (ho, pad_t), (wo, pad_l) = window_geometry(h, k, stride, padding), window_geometry(w, k, stride, padding)
    return ho, wo, pad_t, pad_l


@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 9),
       relu=st.booleans(), dtype=dtypes, seed=st.integers(0, 2**16))
def test_depthwise3x3_same(n, h, w, c, relu, dtype, seed):
    rng = np.random.default_rng(seed)
    x, k = rand(rng, (n, h, w, c), dtype), rand(rng, (3, 3, c), dtype)
    out = np.empty((n * h * w, c), dtype)
    fast.depthwise3x3_same(x, k, out, relu)
    want = fast.depthwise3x3_same_reference(x, k, relu)
    np.testing.assert_allclose(out, want, rtol=TOL[dtype], atol=TOL[dtype] * 9)
    # and the reference twin is the ops' depthwise on relu(x)
    xin = np.maximum(x, 0) if relu else x
    via_ops = ops.depthwise_conv2d(xin, k[..., None], padding="same", impl="reference")
    np.testing.assert_allclose(want, via_ops.reshape(-1, c), rtol=TOL[dtype], atol=TOL[dtype] * 9)


def valid_fits(h, w, k, same):
    """A VALID window needs at least k rows and columns; SAME takes any map, 1x1 included."""
    assume(same or min(h, w) >= k)


@given(n=st.integers(1, 2), h=st.integers(1, 13), w=st.integers(1, 13), c=st.integers(1, 7),
       k=st.integers(1, 3), stride=st.integers(1, 3), same=st.booleans(), dtype=dtypes, seed=st.integers(0, 2**16),
       threads=st.sampled_from([1, 2, 3, 5]))
def test_maxpool_add(n, h, w, c, k, stride, same, dtype, seed, threads):
    valid_fits(h, w, k, same)
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype) - 3  # mostly negative: padded cells must never win
    ho, wo, pad_t, pad_l = conv_geometry(h, w, k, stride, same)
    res = rand(rng, (n, ho, wo, c), dtype)
    out = np.empty_like(res)
    fast.maxpool_add(x, res, k, stride, pad_t, pad_l, out, threads)  # 5 threads: more than output rows, often
    np.testing.assert_array_equal(out, fast.maxpool_add_reference(x, res, k, stride, "same" if same else "valid"))


@given(n=st.integers(1, 2), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 5),
       k=st.sampled_from([1, 3]), stride=st.integers(1, 2), same=st.booleans(), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_im2col(n, h, w, c, k, stride, same, dtype, seed):
    valid_fits(h, w, k, same)
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype)
    ho, wo, pad_t, pad_l = conv_geometry(h, w, k, stride, same)
    out = np.empty((n * ho * wo, k * k * c), dtype)
    fast.im2col(x, k, k, stride, pad_t, pad_l, ho, wo, out)
    np.testing.assert_array_equal(out, fast.im2col_reference(x, k, k, stride, pad_t, pad_l, ho, wo))
    kernel = rand(rng, (k, k, c, 4), dtype)
    conv = ops.conv2d(x, kernel, strides=stride, padding="same" if same else "valid", impl="reference")
    np.testing.assert_allclose((out @ kernel.reshape(-1, 4)).reshape(conv.shape), conv,
                               rtol=TOL[dtype], atol=TOL[dtype] * k * k * c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_epilogues(dtype):
    """affine_act and affine_add_residual against their twins in kernels.py, and the twins against the ops
    (the folded BN is ops.batch_norm's fast formula, tested against TF; the ReLU is ops.relu's)."""
    rng = np.random.default_rng(0)
    y, b, r = rand(rng, (37, 11), dtype), rand(rng, (11,), dtype), rand(rng, (37, 11), dtype)
    s = rand(rng, (11,), dtype)
    y[0, 0] = np.nan  # passes through both. An exact zero's sign is not compared: for -0.0 * 1 + -0.0 the
    # float32 kernel gave +0.0 and the twin -0.0 (found in review 19, not explained yet)
    for relu in (True, False):
        got = y.copy()
        fast.affine_act(got, s, b, relu)
        twin = fast.affine_act_reference(y, s, b, relu)
        np.testing.assert_allclose(got, twin, rtol=TOL[dtype], atol=TOL[dtype])
        assert np.isnan(got[0, 0]) and np.isnan(twin[0, 0])
        plain = y * s + b
        np.testing.assert_array_equal(twin, ops.relu(plain, impl="reference") if relu else plain)
    res = r.copy()
    fast.affine_add_residual(y, s, b, res)
    twin = fast.affine_add_residual_reference(y, s, b, r)
    np.testing.assert_allclose(res, twin, rtol=TOL[dtype], atol=TOL[dtype])
    np.testing.assert_array_equal(twin, ops.add(y * s + b, r, impl="reference"))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_bn_equals_conv_then_bn(dtype):
    rng = np.random.default_rng(1)
    x = rand(rng, (2, 5, 5, 6), dtype)
    kernel = rand(rng, (1, 1, 6, 4), dtype)
    gamma, beta = rng.uniform(0.5, 1.5, 4).astype(dtype), rng.normal(0, 0.1, 4).astype(dtype)
    mean, var = rng.normal(0, 0.5, 4).astype(dtype), rng.uniform(0.5, 2, 4).astype(dtype)
    explicit = ops.batch_norm(ops.pointwise_conv2d(x, kernel, impl="reference"), gamma, beta, mean, var,
                              epsilon=CONFIG.bn_epsilon, impl="reference")
    scale, shift = fast.fold_bn(gamma, beta, mean, var, CONFIG.bn_epsilon)
    assert scale.dtype == dtype and shift.dtype == dtype
    # folded into the epilogue (as the plan does) and into the kernel (the textbook form)
    np.testing.assert_allclose((x @ kernel[0, 0]) * scale + shift, explicit, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(x @ (kernel[0, 0] * scale) + shift, explicit, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)


# ---- the fused layers (one parallel region, a GEMM per thread) ---------------
# Their twins (fast.*_fused_reference) compose the twins above. A GEMM's reduction runs
# over up to 9 * C terms here (C <= 9): 1e-5 relative in float32 with an
# absolute floor scaled by the reduction length, 1e-12 in float64.

fused_only = pytest.mark.skipif(not blas.AVAILABLE, reason=f"fused path needs NumPy's bundled OpenBLAS: {blas.WHERE}")


@fused_only
@pytest.mark.parametrize("order", ["forward", "backward"])
@pytest.mark.parametrize("threads,tile_rows", [(2, 1), (2, 2), (3, 1), (3, 4)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sep_conv_fused_in_place_every_order(order, threads, tile_rows, dtype):
    # The hazards of writing in place, each hit for certain: a thread's first
    # row needs the row above it (its neighbour's), its last the row below, and
    # each tile the previous tile's last row.
    for pack in (False, True):
        check_sep_conv_fused(2, 7, 4, 3, 3, True, True, "in_place", threads, tile_rows, order, dtype, 5, pack)


@fused_only
@given(n=st.integers(1, 3), h=st.integers(1, 11), w=st.integers(1, 11), c=st.integers(1, 9),
       cout=st.integers(1, 9), relu_in=st.booleans(), relu_out=st.booleans(),
       mode=st.sampled_from(["out", "in_place", "residual"]), threads=st.integers(1, 3),
       tile_rows=st.integers(1, 5), order=st.sampled_from(["parallel", "forward", "backward"]),
       dtype=dtypes, seed=st.integers(0, 2**16), pack=st.booleans())
def test_sep_conv_fused(n, h, w, c, cout, relu_in, relu_out, mode, threads, tile_rows, order, dtype, seed, pack):
    check_sep_conv_fused(n, h, w, c, cout, relu_in, relu_out, mode, threads, tile_rows, order, dtype, seed, pack)


def sep_conv_case(n, h, w, c, cout, mode, dtype, seed):
    """A separable convolution's operands, drawn from ``seed``; in place, the output has the input's channels."""
    rng = np.random.default_rng(seed)
    if mode == "in_place":
        cout = c
    x = rand(rng, (n, h, w, c), dtype)
    dw, pw = rand(rng, (3, 3, c), dtype), rand(rng, (c, cout), dtype)
    scale, shift = rand(rng, (cout,), dtype), rand(rng, (cout,), dtype)
    return rng, cout, x, dw, pw, scale, shift


def check_sep_conv_fused(n, h, w, c, cout, relu_in, relu_out, mode, threads, tile_rows, order, dtype, seed,
                         pack):
    rng, cout, x, dw, pw, scale, shift = sep_conv_case(n, h, w, c, cout, mode, dtype, seed)
    want = fast.sep_conv_fused_reference(x, dw, pw, scale, shift, relu_in, relu_out)
    scratch = np.empty((threads, tile_rows * w, c), dtype)
    saved = np.full((threads, 3, w, c), np.nan, dtype)  # must never be read before it is written
    residual = np.empty((0, cout), dtype)
    if mode == "out":
        out = np.full((n * h * w, cout), np.nan, dtype)
    elif mode == "in_place":
        out = x.copy().reshape(n * h * w, c)
    else:
        start = rand(rng, (n * h * w, cout), dtype)
        residual = start.copy()
        out = np.empty((threads * tile_rows * w, cout), dtype)
        want = want + start
    src = out.reshape(n, h, w, c) if mode == "in_place" else x
    args = (src, dw, pw, scale, shift, relu_in, relu_out, out, residual, scratch, tile_rows, saved)
    # the pointwise GEMM by OpenBLAS, or by the microkernel of npxception/fast/direct.py on the kernel packed
    # in advance, as the plan chooses (float32 on AVX-512)
    packed = packing.pack_kernel(pw) if pack and direct.worth_packing(pw.dtype) else fused.NOT_PACKED
    packed_args = (packed, np.arange(c if packed.shape[0] else 0, dtype=np.int64))  # as sep_conv_fused passes
    with blas.single_threaded():
        if order == "parallel":
            fast.sep_conv_fused(*args, packed)
        else:
            # the threads' shares one after another, in an adversarial order: in
            # place, each share must survive its neighbours having written first
            fused.bind_symbols(dtype)  # what the public wrapper does first
            fused._save_halo_rows(src, threads, saved)
            part = fused._sep_conv_packed if packed.shape[0] else fused._sep_conv_blas  # as sep_conv_fused picks
            for t in (range(threads) if order == "forward" else reversed(range(threads))):
                part(t, *args, np.zeros((w, c), dtype), *packed_args, direct.PREFETCH)
    got = residual if mode == "residual" else out
    np.testing.assert_allclose(got, want, rtol=TOL[dtype], atol=TOL[dtype] * 9 * c)


@fused_only
@given(n=st.integers(1, 2), h=st.integers(1, 6), w=st.integers(1, 8), c=st.integers(1, 9),
       cout=st.integers(1, 150), relu_in=st.booleans(), relu_out=st.booleans(),
       mode=st.sampled_from(["out", "in_place", "residual"]), threads=st.integers(1, 3),
       order=st.sampled_from(["parallel", "forward", "backward"]), dtype=dtypes, seed=st.integers(0, 2**16))
def test_sep_conv_by_panels(n, h, w, c, cout, relu_in, relu_out, mode, threads, order, dtype, seed):
    """The threads sharing the packed kernel's output panels (up to 150 channels: several panels of 16-64, the
    last one masked), in place, into a residual or out: the reference's answer, and the same bits as the
    threads sharing the rows (the same microkernel sums each output in the same order). Each region's shares
    in any order, as in_parallel may run them one after another."""
    if not direct.worth_packing(dtype):
        pytest.skip("no microkernel here: nothing is packed, and the plan never shares panels")
    rng, cout, x, dw, pw, scale, shift = sep_conv_case(n, h, w, c, cout, mode, dtype, seed)
    packed = packing.pack_kernel(pw)
    want = fast.sep_conv_fused_reference(x, dw, pw, scale, shift, relu_in, relu_out)
    start = rand(rng, (n * h * w, cout), dtype)
    if mode == "residual":
        want = want + start

    def dest_and_src():
        if mode == "in_place":
            dest = x.copy().reshape(n * h * w, c)
            return dest, dest.reshape(n, h, w, c)
        return (start.copy() if mode == "residual" else np.full((n * h * w, cout), np.nan, dtype)), x

    dest, src = dest_and_src()
    dwbuf = np.full((n * h * w, c), np.nan, dtype)
    add = mode == "residual"
    if order == "parallel":
        fused.sep_conv_by_panels(src, dw, scale, shift, relu_in, relu_out, dest, add, dwbuf, packed, threads)
    else:
        fused.bind_symbols(dtype)
        ts = list(range(threads) if order == "forward" else reversed(range(threads)))
        for t in ts:
            fused._depthwise_part(t, threads, src, dw, relu_in, np.zeros((w, c), dtype), dwbuf, packed, cout,
                                  False)
        for t in ts:
            fused._panels_part(t, threads, dwbuf, packed, np.arange(c, dtype=np.int64), scale, shift, relu_out,
                               add, dest, True)
    np.testing.assert_allclose(dest, want, rtol=TOL[dtype], atol=TOL[dtype] * 9 * c)
    rows, rows_src = dest_and_src()
    tile_rows = -(-n * h // threads)
    scratch = np.empty((threads, tile_rows * w, c), dtype)
    saved = np.empty((threads, 3, w, c), dtype)
    residual, out = (rows, np.empty((threads * tile_rows * w, cout), dtype)) if add else (np.empty((0, cout), dtype),
                                                                                            rows)
    with blas.single_threaded():
        fast.sep_conv_fused(rows_src, dw, np.empty((0, cout), dtype), scale, shift, relu_in, relu_out, out, residual,
                            scratch, tile_rows, saved, packed)
    bits = {4: np.uint32, 8: np.uint64}[np.dtype(dtype).itemsize]
    np.testing.assert_array_equal(dest.view(bits), rows.view(bits))


@fused_only
def test_panels_split_the_middle_flow_evenly():
    """The middle flow's step at batch 1 (19x19 pixels, 728 -> 728 channels: 11 full panels of 64 and one of
    24, which runs on half a panel): two threads' spans tile the (panel, row) line once, cut inside panel 5
    on a whole tile of rows, each thread 5.75 panels' work; and the step gives the same bits as the threads
    sharing the rows."""
    if not direct.worth_packing(np.float32):
        pytest.skip("no microkernel here: nothing is packed, and the plan never shares panels")
    from npxception.fast.pointwise import span_start

    m, c = 361, 728
    rng, cout, x, dw, pw, scale, shift = sep_conv_case(1, 19, 19, c, c, "out", np.float32, 0)
    packed = packing.pack_kernel(pw)
    cuts = [span_start(t, 2, m, packed, cout) for t in range(3)]
    assert cuts == [0, 5 * m + 270, 12 * m]  # 270 rows of panel 5: 5.75 of the 11.5 panels' work, 45 tiles
    dest = np.full((m, cout), np.nan, np.float32)
    fused.sep_conv_by_panels(x, dw, scale, shift, True, True, dest, False, np.empty((m, c), np.float32), packed, 2)
    rows = np.full((m, cout), np.nan, np.float32)
    with blas.single_threaded():
        fast.sep_conv_fused(x, dw, np.empty((0, cout), np.float32), scale, shift, True, True, rows,
                            np.empty((0, cout), np.float32), np.empty((2, 181 * 19, c), np.float32), 181,
                            np.empty((2, 3, 19, c), np.float32), packed)
    np.testing.assert_array_equal(dest.view(np.uint32), rows.view(np.uint32))
    want = fast.sep_conv_fused_reference(x, dw, pw, scale, shift, True, True)
    np.testing.assert_allclose(dest, want, rtol=TOL[np.float32], atol=TOL[np.float32] * 9 * c)


@fused_only
@given(n=st.integers(1, 3), h=st.integers(1, 12), w=st.integers(1, 12), c=st.integers(1, 5),
       cout=st.integers(1, 6), k=st.sampled_from([1, 3]), stride=st.integers(1, 2), same=st.booleans(),
       relu=st.booleans(), threads=st.integers(1, 3), tile_rows=st.integers(1, 4), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_conv_fused(n, h, w, c, cout, k, stride, same, relu, threads, tile_rows, dtype, seed):
    valid_fits(h, w, k, same)
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype)
    ho, wo, pad_t, pad_l = conv_geometry(h, w, k, stride, same)
    kernel = rand(rng, (k * k * c, cout), dtype)
    scale, shift = rand(rng, (cout,), dtype), rand(rng, (cout,), dtype)
    want = fast.conv_fused_reference(x, kernel, k, stride, pad_t, pad_l, ho, wo, scale, shift, relu)
    out = np.full((n * ho * wo, cout), np.nan, dtype)
    cols = np.empty((threads, tile_rows * wo, k * k * c), dtype)
    with blas.single_threaded():
        fast.conv_fused(x, kernel, k, stride, pad_t, pad_l, ho, wo, scale, shift, relu, out, cols, tile_rows)
    np.testing.assert_allclose(out, want, rtol=TOL[dtype], atol=TOL[dtype] * k * k * c)


def test_fused_path_finds_numpys_openblas():
    # NumPy's wheels bundle scipy-openblas; with it the fused path must be on,
    # or every fused test above would be skipped and the model tests would
    # silently run the np.matmul path only.
    blas_name = np.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"]
    if blas_name != "scipy-openblas":
        pytest.skip(f"NumPy built against {blas_name}: the np.matmul path is the one in use")
    assert blas.AVAILABLE, blas.WHERE


@fused_only
def test_single_threaded_restores_openblas_threads():
    before = blas._get_threads()
    with blas.single_threaded():
        with blas.single_threaded():  # nested, as two models in two threads would be
            assert blas._get_threads() == 1
        assert blas._get_threads() == 1
    assert blas._get_threads() == before


def test_gemm_fallback_can_be_forced():
    import subprocess
    import sys

    code = ("import npxception.blas as b, numpy as np; from npxception import Xception;"
            "m = Xception(weights=None, include_top=False, input_shape=(71, 71, 3));"
            "x = np.zeros((1, 71, 71, 3), np.float32); m(x);"
            "print(b.AVAILABLE, m._fast.fused, b.WHERE)")
    env = {**__import__("os").environ, "NPXCEPTION_GEMM": "numpy"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "NPXCEPTION_GEMM=numpy"]
