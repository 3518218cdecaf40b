"""The fast plan's fused kernels against their NumPy twins, and BN folding against explicit BN.

The whole fast plan is compared with Keras in tests/test_model_keras.py; these
tests localise a fault to one kernel. Both sides run the same dtype; the
float32 tolerance 1e-5 relative covers reductions of at most 9 taps (depthwise)
or a max (exact); float64 agrees to 1e-12.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npxception import fast, ops

TOL = {np.float32: 1e-5, np.float64: 1e-12}
dtypes = st.sampled_from([np.float32, np.float64])


def rand(rng, shape, dtype):
    return rng.normal(0, 1, shape).astype(dtype)


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


@given(n=st.integers(1, 2), h=st.integers(1, 13), w=st.integers(1, 13), c=st.integers(1, 7),
       dtype=dtypes, seed=st.integers(0, 2**16))
def test_maxpool_add(n, h, w, c, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype) - 3  # mostly negative: padded cells must never win
    ho, wo = -(-h // 2), -(-w // 2)
    res = rand(rng, (n, ho, wo, c), dtype)
    out = np.empty_like(res)
    fast.maxpool3x3s2_same_add(x, res, out)
    np.testing.assert_array_equal(out, fast.maxpool3x3s2_same_add_reference(x, res))


@given(n=st.integers(1, 2), h=st.integers(3, 12), w=st.integers(3, 12), c=st.integers(1, 5),
       k=st.sampled_from([1, 3]), stride=st.integers(1, 2), same=st.booleans(), dtype=dtypes,
       seed=st.integers(0, 2**16))
def test_im2col(n, h, w, c, k, stride, same, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype)
    if same:
        ho, wo = -(-h // stride), -(-w // stride)
        pad_t, pad_l = max((ho - 1) * stride + k - h, 0) // 2, max((wo - 1) * stride + k - w, 0) // 2
    else:
        ho, wo, pad_t, pad_l = (h - k) // stride + 1, (w - k) // stride + 1, 0, 0
    out = np.empty((n * ho * wo, k * k * c), dtype)
    fast.im2col(x, k, k, stride, pad_t, pad_l, ho, wo, out)
    np.testing.assert_array_equal(out, fast.im2col_reference(x, k, k, stride, pad_t, pad_l, ho, wo))
    kernel = rand(rng, (k, k, c, 4), dtype)
    conv = ops.conv2d(x, kernel, strides=stride, padding="same" if same else "valid", impl="reference")
    np.testing.assert_allclose((out @ kernel.reshape(-1, 4)).reshape(conv.shape), conv,
                               rtol=TOL[dtype], atol=TOL[dtype] * k * k * c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_epilogues(dtype):
    rng = np.random.default_rng(0)
    y, b, r = rand(rng, (37, 11), dtype), rand(rng, (11,), dtype), rand(rng, (37, 11), dtype)
    s = rand(rng, (11,), dtype)
    got = y.copy()
    fast.affine_act(got, s, b, True)
    np.testing.assert_allclose(got, np.maximum(y * s + b, 0), rtol=TOL[dtype], atol=TOL[dtype])
    got = y.copy()
    fast.affine_act(got, s, b, False)
    np.testing.assert_allclose(got, y * s + b, rtol=TOL[dtype], atol=TOL[dtype])
    res = r.copy()
    fast.affine_add_residual(y, s, b, res)
    np.testing.assert_allclose(res, y * s + b + r, rtol=TOL[dtype], atol=TOL[dtype])
    x = rand(rng, (2, 3, 5, 11), dtype)
    pooled = np.empty((2, 11), dtype)
    fast.relu_global_avg(x, True, pooled)
    np.testing.assert_allclose(pooled, np.maximum(x, 0).mean(axis=(1, 2)), rtol=TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_bn_equals_conv_then_bn(dtype):
    rng = np.random.default_rng(1)
    x = rand(rng, (2, 5, 5, 6), dtype)
    kernel = rand(rng, (1, 1, 6, 4), dtype)
    gamma, beta = rng.uniform(0.5, 1.5, 4).astype(dtype), rng.normal(0, 0.1, 4).astype(dtype)
    mean, var = rng.normal(0, 0.5, 4).astype(dtype), rng.uniform(0.5, 2, 4).astype(dtype)
    explicit = ops.batch_norm(ops.pointwise_conv2d(x, kernel, impl="reference"), gamma, beta, mean, var,
                              epsilon=1e-3, impl="reference")
    scale, shift = fast.fold_bn(gamma, beta, mean, var, 1e-3)
    assert scale.dtype == dtype and shift.dtype == dtype
    # folded into the epilogue (as the plan does) and into the kernel (the textbook form)
    np.testing.assert_allclose((x @ kernel[0, 0]) * scale + shift, explicit, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
    np.testing.assert_allclose(x @ (kernel[0, 0] * scale) + shift, explicit, rtol=TOL[dtype] * 10, atol=TOL[dtype] * 10)
