"""Tier 2: every op's fast implementation against its plain NumPy reference, on the same draws.

No TensorFlow here (tests/test_ops_tf.py compares both with TF); this file
also holds the draws and tolerances that test_ops_tf.py reuses.

Tolerances. Both sides compute the same dtype, but sum in different orders
(BLAS blocking, im2col order, Numba loops), so a sum of K products of size at
most ``scale = max|x| * max|w|`` can differ by a few ulps of ``K * scale``:
``atol = TERM_ATOL[dtype] * K * scale`` with TERM_ATOL about 8 machine
epsilons (float32 eps = 1.2e-7 -> 1e-6; float64 eps = 2.2e-16 -> 1e-14),
plus ``rtol`` 1e-5 (float32) / 1e-10 (float64) for large outputs.
Max, ReLU and add do no rounding-order-dependent work, so they must be equal
bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from npxception import ops

DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 1e-5, np.float64: 1e-10}
TERM_ATOL = {np.float32: 1e-6, np.float64: 1e-14}  # ~8 eps per unit of K * scale, see module docstring

# The draws of the issue: batch 1-3, H and W 1-33 independently, channels 1-16,
# kernel 1-5 (KH, KW independent), strides 1-3 (sh, sw independent), depth multiplier 1-3.
batch = st.integers(1, 3)
size = st.integers(1, 33)
channels = st.integers(1, 16)
ksize = st.integers(1, 5)
stride = st.integers(1, 3)
paddings = st.sampled_from(["same", "valid"])
multiplier = st.integers(1, 3)
seeds = st.integers(0, 2**32 - 1)  # numpy RNG from a seed: fast for big arrays, still reproducible
# one windowed-op draw: batch, map, channels, kernel / pool window, strides, padding, seed
window = dict(n=batch, h=size, w=size, c=channels, kh=ksize, kw=ksize, sh=stride, sw=stride, padding=paddings,
              seed=seeds)


def fits(padding, kh, kw, h, w):
    """VALID needs the window inside the map (otherwise the op refuses: tests/test_ops_errors.py)."""
    assume(padding == "same" or (kh <= h and kw <= w))


def x_and_kernel(seed, x_shape, k_shape, dtype):
    """Input in [-10, 10) and kernel in [-1, 1) from one seed, plus the RNG for further draws."""
    rng = np.random.default_rng(seed)
    return rng, rand(rng, x_shape, dtype), rand(rng, k_shape, dtype, -1, 1)


def rand(rng, shape, dtype, lo=-10.0, hi=10.0):
    """Uniform floats in [lo, hi) of ``dtype`` (bounded, so tolerances have a known scale)."""
    return rng.uniform(lo, hi, shape).astype(dtype)


def amax(*arrays):
    """Product of max |a| over the arrays: the size of one product term."""
    return float(np.prod([np.abs(a).max() if a.size else 0.0 for a in arrays]))


def assert_close(ours, theirs, dtype, *, terms=1, scale=1.0, what="", exact=False):
    """Same dtype and shape, and equal within the tolerance of a ``terms``-long sum of ``scale``-sized products."""
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype ours {ours.dtype}, expected {np.dtype(dtype)}"
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape ours {ours.shape}, theirs {theirs.shape}"
    assert np.isfinite(ours).all(), f"{what}: non-finite output for finite input"
    if exact:
        np.testing.assert_array_equal(ours, theirs, err_msg=f"{what}: ours (ACTUAL) vs theirs (DESIRED)")
    else:
        np.testing.assert_allclose(ours, theirs, rtol=RTOL[dtype], atol=TERM_ATOL[dtype] * terms * scale,
                                   err_msg=f"{what}: ours (ACTUAL) vs theirs (DESIRED)")


@pytest.fixture(scope="module", autouse=True)
def warm_jit():
    """Compile every fast kernel for both dtypes once, before hypothesis starts timing examples."""
    for dtype in DTYPES:
        x = np.ones((1, 3, 3, 2), dtype)
        ops.conv2d(x, np.ones((2, 2, 2, 1), dtype))
        ops.separable_conv2d(x, np.ones((2, 2, 2, 1), dtype), np.ones((1, 1, 2, 1), dtype))
        ops.batch_norm(x, *np.ones((4, 2), dtype))
        ops.relu(x)
        ops.add(x, x)
        ops.max_pool2d(x)
        ops.global_avg_pool2d(x)
        ops.global_max_pool2d(x)
        ops.softmax(x)


def both(fn):
    """``fn(impl)`` for both implementations: (reference, fast)."""
    return fn("reference"), fn("fast")


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, c_out=channels)
def test_conv2d(dtype, n, h, w, c, c_out, kh, kw, sh, sw, padding, seed):
    fits(padding, kh, kw, h, w)
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (kh, kw, c, c_out), dtype)
    ref, fast = both(lambda impl: ops.conv2d(x, k, strides=(sh, sw), padding=padding, impl=impl))
    assert_close(fast, ref, dtype, terms=kh * kw * c, scale=amax(x, k), what="conv2d fast vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, m=multiplier)
def test_depthwise_and_separable(dtype, n, h, w, c, m, kh, kw, sh, sw, padding, seed):
    fits(padding, kh, kw, h, w)
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (kh, kw, c, m), dtype)
    pk = rand(rng, (1, 1, c * m, 5), dtype, -1, 1)
    ref, fast = both(lambda impl: ops.depthwise_conv2d(x, k, strides=(sh, sw), padding=padding, impl=impl))
    assert_close(fast, ref, dtype, terms=kh * kw, scale=amax(x, k), what="depthwise_conv2d fast vs reference")
    ref, fast = both(lambda impl: ops.separable_conv2d(x, k, pk, strides=(sh, sw), padding=padding, impl=impl))
    assert_close(fast, ref, dtype, terms=kh * kw * c * m, scale=amax(x, k, pk),
                 what="separable_conv2d fast vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, shift=st.sampled_from([0.0, -100.0]))
def test_max_pool2d(dtype, n, h, w, c, kh, kw, sh, sw, padding, shift, seed):
    fits(padding, kh, kw, h, w)
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype) + dtype(shift)  # shift -100: all negative, padding must not win
    ref, fast = both(lambda impl: ops.max_pool2d(x, pool_size=(kh, kw), strides=(sh, sw), padding=padding,
                                                 impl=impl))
    assert_close(fast, ref, dtype, what="max_pool2d fast vs reference", exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=batch, h=size, w=size, c=channels, c_out=channels, seed=seeds)
def test_pointwise_global_pools_dense(dtype, n, h, w, c, c_out, seed):
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (1, 1, c, c_out), dtype)
    ref, fast = both(lambda impl: ops.pointwise_conv2d(x, k, impl=impl))
    assert_close(fast, ref, dtype, terms=c, scale=amax(x, k), what="pointwise_conv2d fast vs reference")
    ref, fast = both(lambda impl: ops.global_avg_pool2d(x, impl=impl))
    assert_close(fast, ref, dtype, terms=h * w, scale=amax(x), what="global_avg_pool2d fast vs reference")
    ref, fast = both(lambda impl: ops.global_max_pool2d(x, impl=impl))
    assert_close(fast, ref, dtype, what="global_max_pool2d fast vs reference", exact=True)
    feats, kernel, bias = ref, k[0, 0], rand(rng, (c_out,), dtype)
    ref, fast = both(lambda impl: ops.dense(feats, kernel, bias, impl=impl))
    assert_close(fast, ref, dtype, terms=c + 1, scale=amax(feats, kernel) + amax(bias),
                 what="dense fast vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.lists(st.integers(1, 9), min_size=2, max_size=4), seed=seeds,
       offset=st.sampled_from([0.0, 1e3]))
def test_elementwise_batchnorm_softmax(dtype, shape, seed, offset):
    rng = np.random.default_rng(seed)
    x, b = rand(rng, shape, dtype), rand(rng, shape, dtype)
    ref, fast = both(lambda impl: ops.relu(x, impl=impl))
    assert_close(fast, ref, dtype, what="relu fast vs reference", exact=True)
    ref, fast = both(lambda impl: ops.add(x, b, impl=impl))
    assert_close(fast, ref, dtype, what="add fast vs reference", exact=True)
    c = shape[-1]
    gamma, beta, mean = rand(rng, (c,), dtype, -2, 2), rand(rng, (c,), dtype), rand(rng, (c,), dtype)
    var = rand(rng, (c,), dtype, 0.1, 2.0)
    ref, fast = both(lambda impl: ops.batch_norm(x, gamma, beta, mean, var, impl=impl))
    # a handful of roundings on values of size |gamma| * (|x| + |mean|) / sqrt(min var) + |beta|
    bn_scale = amax(gamma) * (amax(x) + amax(mean)) / np.sqrt(0.1) + amax(beta)
    assert_close(fast, ref, dtype, terms=4, scale=bn_scale, what="batch_norm fast vs reference")
    logits = x + dtype(offset)  # offset 1e3: exp would overflow without the max subtraction
    for axis in range(-len(shape), len(shape)):
        ref, fast = both(lambda impl: ops.softmax(logits, axis=axis, impl=impl))
        # probabilities are <= 1; the normalising sum has shape[axis] terms
        assert_close(fast, ref, dtype, terms=shape[axis] + 8, what=f"softmax(axis={axis}) fast vs reference")


@pytest.mark.parametrize("dtype", DTYPES)
def test_xception_shapes(dtype):
    """The shapes Xception itself runs (small spatial size, real channel counts), fast vs reference."""
    rng = np.random.default_rng(0)
    x = rand(rng, (1, 19, 19, 64), dtype)
    k = rand(rng, (3, 3, 64, 128), dtype, -1, 1)
    ref, fast = both(lambda impl: ops.conv2d(x, k, strides=2, padding="valid", impl=impl))
    assert_close(fast, ref, dtype, terms=9 * 64, scale=amax(x, k), what="conv2d 3x3 s2")
    dk, pk = rand(rng, (3, 3, 64, 1), dtype, -1, 1), rand(rng, (1, 1, 64, 728), dtype, -1, 1)
    ref, fast = both(lambda impl: ops.separable_conv2d(x, dk, pk, padding="same", impl=impl))
    assert_close(fast, ref, dtype, terms=9 * 64, scale=amax(x, dk, pk), what="separable 3x3 -> 728")
    ref, fast = both(lambda impl: ops.max_pool2d(ref, pool_size=3, strides=2, padding="same", impl=impl))
    assert_close(fast, ref, dtype, what="max_pool2d 3x3 s2 same", exact=True)


def _all_ops(x, dtype):
    """Every op on a (N, H, W, 4) input ``x`` and weights derived from it: {name: lambda impl: output}.

    The weights are views too (reversed, strided), so non-contiguous weights are covered as well."""
    rng = np.random.default_rng(7)
    k = rand(rng, (3, 3, 8, 6), dtype, -1, 1)[::-1, :, ::2, :]  # (3, 3, 4, 6), non-contiguous
    dk = np.asfortranarray(rand(rng, (3, 2, 4, 2), dtype, -1, 1))
    pk = rand(rng, (1, 1, 5, 8), dtype, -1, 1)[..., ::2].transpose(0, 1, 3, 2)  # (1, 1, 4, 5)
    pk8 = rand(rng, (1, 1, 8, 3), dtype, -1, 1)[:, :, ::-1]
    v = rand(rng, (8,), dtype, 0.5, 2)[::2]  # (4,)
    feats = x[:, 0, 0, :]  # (N, 4), a strided view
    dense_k = rand(rng, (3, 4), dtype).T  # (4, 3)
    return {
        "conv2d": lambda i: ops.conv2d(x, k, strides=(2, 1), padding="same", impl=i),
        "depthwise_conv2d": lambda i: ops.depthwise_conv2d(x, dk, strides=2, padding="same", impl=i),
        "pointwise_conv2d": lambda i: ops.pointwise_conv2d(x, pk, impl=i),
        "separable_conv2d": lambda i: ops.separable_conv2d(x, dk, pk8, padding="valid", impl=i),
        "batch_norm": lambda i: ops.batch_norm(x, v, v, v, v, impl=i),
        "relu": lambda i: ops.relu(x, impl=i),
        "add": lambda i: ops.add(x, x[::-1], impl=i),
        "max_pool2d": lambda i: ops.max_pool2d(x, pool_size=(3, 2), strides=(2, 3), padding="same", impl=i),
        "global_avg_pool2d": lambda i: ops.global_avg_pool2d(x, impl=i),
        "global_max_pool2d": lambda i: ops.global_max_pool2d(x, impl=i),
        "dense": lambda i: ops.dense(feats, dense_k, v[:3], impl=i),
        "softmax": lambda i: ops.softmax(x, axis=1, impl=i),
    }


@pytest.mark.parametrize("dtype", DTYPES)
def test_empty_batch_has_the_formulas_shapes(dtype):
    """Batch 0 (the draws above start at 1): every op, both impls, gives the output-size formula's shape with
    N = 0, written out here with ceil. Checked against the formula, not TensorFlow: TF 2.21 returns wrong
    shapes for an empty-batch convolution."""
    x = np.zeros((0, 7, 9, 4), dtype)
    c = math.ceil
    expected = {
        "conv2d": (0, c(7 / 2), 9, 6),  # SAME, strides (2, 1): ceil(H / s)
        "depthwise_conv2d": (0, c(7 / 2), c(9 / 2), 4 * 2),  # SAME, stride 2, M = 2
        "pointwise_conv2d": (0, 7, 9, 5),
        "separable_conv2d": (0, 7 - 3 + 1, 9 - 2 + 1, 3),  # VALID 3x2, stride 1: H - K + 1
        "batch_norm": (0, 7, 9, 4), "relu": (0, 7, 9, 4), "add": (0, 7, 9, 4),
        "max_pool2d": (0, c(7 / 2), c(9 / 3), 4),  # SAME, strides (2, 3)
        "global_avg_pool2d": (0, 4), "global_max_pool2d": (0, 4),
        "dense": (0, 3), "softmax": (0, 7, 9, 4),
    }
    for name, op in _all_ops(x, dtype).items():
        for impl in ("reference", "fast"):
            y = op(impl)
            assert (y.shape, y.dtype) == (expected[name], np.dtype(dtype)), f"{name} {impl}: ours {y.shape} {y.dtype}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_non_contiguous_inputs(dtype):
    """Views (reversed, strided, transposed, Fortran-ordered) give exactly what their contiguous copies give."""
    rng = np.random.default_rng(1)
    base = rand(rng, (3, 14, 9, 8), dtype)
    view = base[::-1, ::2, :, ::2]  # (3, 7, 9, 4): negative and non-unit strides
    assert not view.flags.c_contiguous
    on_view, on_copy = _all_ops(view, dtype), _all_ops(np.ascontiguousarray(view), dtype)
    for name in on_view:
        for impl in ("reference", "fast"):
            np.testing.assert_array_equal(on_view[name](impl), on_copy[name](impl), err_msg=f"{name} {impl}")
    transposed = np.ascontiguousarray(base[:, :, :4, :4].transpose(0, 2, 1, 3)).transpose(0, 2, 1, 3)
    for impl in ("reference", "fast"):
        np.testing.assert_array_equal(ops.conv2d(transposed, np.ones((2, 2, 4, 1), dtype), impl=impl),
                                      ops.conv2d(base[:, :, :4, :4], np.ones((2, 2, 4, 1), dtype), impl=impl))


@pytest.mark.parametrize("dtype", DTYPES)
def test_inputs_not_modified(dtype):
    """No op writes into its inputs: they are read-only here (a write would raise) and compared afterwards."""
    rng = np.random.default_rng(2)
    x = rand(rng, (2, 7, 6, 4), dtype)
    before = x.copy()
    x.flags.writeable = False
    for name, call in _all_ops(x, dtype).items():
        for impl in ("reference", "fast"):
            out = call(impl)
            assert out.dtype == np.dtype(dtype), name
            assert not np.shares_memory(out, x), f"{name} {impl} returned a view of its input"
    np.testing.assert_array_equal(x, before)
