"""Tier 5: bad input to every op raises ValueError / TypeError whose message names the op,
the argument, what was expected and what was found. Never a segfault, garbage or NaN."""

from __future__ import annotations

import numpy as np
import pytest

import npxception
from npxception import ops

f32, f64 = np.float32, np.float64
X = np.ones((1, 5, 5, 3), f32)
K = np.ones((3, 3, 3, 4), f32)
DK = np.ones((3, 3, 3, 1), f32)
PK = np.ones((1, 1, 3, 4), f32)
V3 = np.ones(3, f32)
IMPLS = ["reference", "fast"]

# (name, call(impl), exception, regex the message must match)
CASES = [
    # --- dtypes: only float32 / float64, and x and weights must agree -------------------------
    ("int x", lambda i: ops.conv2d(X.astype(np.int32), K, impl=i), TypeError,
     r"conv2d: x must be float32 or float64, found dtype int32"),
    ("float16 x", lambda i: ops.relu(X.astype(np.float16), impl=i), TypeError,
     r"relu: x must be float32 or float64, found dtype float16"),
    ("bool x", lambda i: ops.global_avg_pool2d(X > 0, impl=i), TypeError,
     r"global_avg_pool2d: x must be float32 or float64, found dtype bool"),
    ("complex x", lambda i: ops.softmax(X.astype(np.complex64), impl=i), TypeError,
     r"softmax: x must be float32 or float64, found dtype complex64"),
    ("object x", lambda i: ops.max_pool2d(np.array([None]), impl=i), TypeError,
     r"max_pool2d: x must be float32 or float64, found dtype object"),
    ("int kernel", lambda i: ops.conv2d(X, K.astype(np.int64), impl=i), TypeError,
     r"conv2d: kernel must be float32 or float64, found dtype int64"),
    ("conv mixed dtypes", lambda i: ops.conv2d(X, K.astype(f64), impl=i), TypeError,
     r"conv2d: kernel has dtype float64 but x has dtype float32; expected float32"),
    ("depthwise mixed dtypes", lambda i: ops.depthwise_conv2d(X.astype(f64), DK, impl=i), TypeError,
     r"depthwise_conv2d: kernel has dtype float32 but x has dtype float64"),
    ("pointwise mixed dtypes", lambda i: ops.pointwise_conv2d(X, PK.astype(f64), impl=i), TypeError,
     r"pointwise_conv2d: kernel has dtype float64 but x has dtype float32"),
    ("separable mixed dtypes", lambda i: ops.separable_conv2d(X, DK, PK.astype(f64), impl=i), TypeError,
     r"separable_conv2d: pointwise_kernel has dtype float64 but x has dtype float32"),
    ("bn mixed dtypes", lambda i: ops.batch_norm(X, V3, V3, V3.astype(f64), V3, impl=i), TypeError,
     r"batch_norm: moving_mean has dtype float64 but x has dtype float32"),
    ("add mixed dtypes", lambda i: ops.add(X, X.astype(f64), impl=i), TypeError,
     r"add: b has dtype float64 but a has dtype float32"),
    ("dense mixed bias dtype", lambda i: ops.dense(np.ones((2, 3), f32), np.ones((3, 4), f32),
                                                   np.ones(4, f64), impl=i), TypeError,
     r"dense: bias has dtype float64 but x has dtype float32"),
    # --- wrong rank -----------------------------------------------------------------------------
    ("conv 3-D x", lambda i: ops.conv2d(X[0], K, impl=i), ValueError,
     r"conv2d: x must be 4-D \(N, H, W, C\), found 3-D array of shape \(5, 5, 3\)"),
    ("conv 3-D kernel", lambda i: ops.conv2d(X, K[0], impl=i), ValueError,
     r"conv2d: kernel must be 4-D \(KH, KW, C_in, C_out\), found 3-D"),
    ("depthwise 3-D kernel", lambda i: ops.depthwise_conv2d(X, DK[..., 0], impl=i), ValueError,
     r"depthwise_conv2d: kernel must be 4-D \(KH, KW, C_in, M\), found 3-D"),
    ("pointwise 2-D kernel", lambda i: ops.pointwise_conv2d(X, PK[0, 0], impl=i), ValueError,
     r"pointwise_conv2d: kernel must be 4-D \(1, 1, C_in, C_out\), found 2-D"),
    ("max_pool 2-D x", lambda i: ops.max_pool2d(X[0, 0], impl=i), ValueError,
     r"max_pool2d: x must be 4-D \(N, H, W, C\), found 2-D"),
    ("global pool 2-D x", lambda i: ops.global_max_pool2d(X[0, 0], impl=i), ValueError,
     r"global_max_pool2d: x must be 4-D \(N, H, W, C\), found 2-D"),
    ("dense 4-D x", lambda i: ops.dense(X, np.ones((3, 4), f32), impl=i), ValueError,
     r"dense: x must be 2-D \(N, C_in\), found 4-D"),
    ("bn 1-D x", lambda i: ops.batch_norm(V3, V3, V3, V3, V3, impl=i), ValueError,
     r"batch_norm: x must have rank >= 2.*found 1-D"),
    ("softmax 0-D x", lambda i: ops.softmax(np.float32(1.0), impl=i), ValueError,
     r"softmax: x must have rank >= 1, found a 0-D"),
    ("empty map", lambda i: ops.conv2d(np.ones((1, 0, 5, 3), f32), K, padding="same", impl=i), ValueError,
     r"conv2d: x must have H, W, C >= 1, found shape \(1, 0, 5, 3\)"),
    # --- channel / shape mismatch ---------------------------------------------------------------
    ("conv channels", lambda i: ops.conv2d(X, np.ones((3, 3, 4, 2), f32), impl=i), ValueError,
     r"conv2d: kernel has C_in=4 but x has 3 channels; expected kernel shape \(KH, KW, 3, C_out\)"),
    ("depthwise channels", lambda i: ops.depthwise_conv2d(X, np.ones((3, 3, 2, 1), f32), impl=i), ValueError,
     r"depthwise_conv2d: kernel has C_in=2 but x has 3 channels; expected kernel shape \(KH, KW, 3, M\)"),
    ("depthwise M=0", lambda i: ops.depthwise_conv2d(X, np.ones((3, 3, 3, 0), f32), impl=i), ValueError,
     r"depthwise_conv2d: kernel must have no zero-length axis, found shape \(3, 3, 3, 0\)"),
    ("pointwise channels", lambda i: ops.pointwise_conv2d(X, np.ones((1, 1, 5, 2), f32), impl=i), ValueError,
     r"pointwise_conv2d: kernel must have shape \(1, 1, 3, C_out\).*found \(1, 1, 5, 2\)"),
    ("pointwise 3x3 kernel", lambda i: ops.pointwise_conv2d(X, K, impl=i), ValueError,
     r"pointwise_conv2d: kernel must have shape \(1, 1, 3, C_out\).*found \(3, 3, 3, 4\)"),
    ("separable depthwise channels", lambda i: ops.separable_conv2d(X, np.ones((3, 3, 2, 1), f32), PK, impl=i),
     ValueError, r"separable_conv2d: depthwise_kernel has C_in=2 but x has 3 channels"),
    ("separable pointwise channels", lambda i: ops.separable_conv2d(X, np.ones((3, 3, 3, 2), f32), PK, impl=i),
     ValueError, r"separable_conv2d: pointwise_kernel must have shape \(1, 1, C_in \* M = 6, C_out\).*found"),
    ("bn param length", lambda i: ops.batch_norm(X, V3, np.ones(4, f32), V3, V3, impl=i), ValueError,
     r"batch_norm: beta must have shape \(3,\) \(one value per channel of x, C=3\), found \(4,\)"),
    ("bn negative epsilon", lambda i: ops.batch_norm(X, V3, V3, V3, V3, epsilon=-1.0, impl=i), ValueError,
     r"batch_norm: epsilon must be a finite number >= 0, found -1.0"),
    ("add shapes", lambda i: ops.add(X, X[:, :1], impl=i), ValueError,
     r"add: b must have the same shape as a, \(1, 5, 5, 3\) \(no broadcasting\), found \(1, 1, 5, 3\)"),
    ("dense features", lambda i: ops.dense(np.ones((2, 3), f32), np.ones((4, 5), f32), impl=i), ValueError,
     r"dense: kernel has C_in=4 but x has 3 features; expected kernel shape \(3, units\)"),
    ("dense bias length", lambda i: ops.dense(np.ones((2, 3), f32), np.ones((3, 5), f32), np.ones(4, f32),
                                              impl=i), ValueError,
     r"dense: bias must have shape \(5,\).*found \(4,\)"),
    ("softmax axis", lambda i: ops.softmax(np.ones((2, 3), f32), axis=2, impl=i), ValueError,
     r"softmax: axis must be an int in \[-2, 1\] for x of shape \(2, 3\), found 2"),
    ("softmax empty axis", lambda i: ops.softmax(np.ones((2, 0), f32), impl=i), ValueError,
     r"softmax: x must have at least one entry along axis -1, found shape \(2, 0\)"),
    # --- kernel larger than the input under VALID ----------------------------------------------
    ("conv kernel > map", lambda i: ops.conv2d(X[:, :2], K, impl=i), ValueError,
     r"conv2d: kernel 3x3 is larger than the input 2x5 under padding='valid'"),
    ("depthwise kernel > map", lambda i: ops.depthwise_conv2d(X[:, :, :1], DK, impl=i), ValueError,
     r"depthwise_conv2d: kernel 3x3 is larger than the input 5x1 under padding='valid'"),
    ("separable kernel > map", lambda i: ops.separable_conv2d(X[:, :1, :1], DK, PK, impl=i), ValueError,
     r"separable_conv2d: depthwise_kernel 3x3 is larger than the input 1x1 under padding='valid'"),
    ("pool > map", lambda i: ops.max_pool2d(X[:, :2], pool_size=3, impl=i), ValueError,
     r"max_pool2d: pool_size 3x3 is larger than the input 2x5 under padding='valid'"),
    # --- padding ----------------------------------------------------------------------------------
    ("conv padding", lambda i: ops.conv2d(X, K, padding="full", impl=i), ValueError,
     r"conv2d: padding must be 'same' or 'valid', found 'full'"),
    ("depthwise padding", lambda i: ops.depthwise_conv2d(X, DK, padding="causal", impl=i), ValueError,
     r"depthwise_conv2d: padding must be 'same' or 'valid', found 'causal'"),
    ("separable padding", lambda i: ops.separable_conv2d(X, DK, PK, padding=1, impl=i), ValueError,
     r"separable_conv2d: padding must be 'same' or 'valid', found 1"),
    ("pool padding", lambda i: ops.max_pool2d(X, padding=None, impl=i), ValueError,
     r"max_pool2d: padding must be 'same' or 'valid', found None"),
    # --- strides / pool size ----------------------------------------------------------------------
    ("conv stride 0", lambda i: ops.conv2d(X, K, strides=0, impl=i), ValueError,
     r"conv2d: strides must be >= 1, found 0"),
    ("conv negative stride pair", lambda i: ops.conv2d(X, K, strides=(1, -2), impl=i), ValueError,
     r"conv2d: strides must be >= 1, found \(1, -2\)"),
    ("depthwise stride 0", lambda i: ops.depthwise_conv2d(X, DK, strides=(0, 1), impl=i), ValueError,
     r"depthwise_conv2d: strides must be >= 1, found \(0, 1\)"),
    ("separable stride 0", lambda i: ops.separable_conv2d(X, DK, PK, strides=0, impl=i), ValueError,
     r"separable_conv2d: strides must be >= 1, found 0"),
    ("pool stride 0", lambda i: ops.max_pool2d(X, strides=0, impl=i), ValueError,
     r"max_pool2d: strides must be >= 1, found 0"),
    ("pool size 0", lambda i: ops.max_pool2d(X, pool_size=0, padding="same", impl=i), ValueError,
     r"max_pool2d: pool_size must be >= 1, found 0"),
    ("pool size negative pair", lambda i: ops.max_pool2d(X, pool_size=(2, -1), impl=i), ValueError,
     r"max_pool2d: pool_size must be >= 1, found \(2, -1\)"),
    ("stride triple", lambda i: ops.conv2d(X, K, strides=(1, 1, 1), impl=i), TypeError,
     r"conv2d: strides must be an int or a pair of ints, found \(1, 1, 1\)"),
    ("float stride", lambda i: ops.max_pool2d(X, strides=1.5, impl=i), TypeError,
     r"max_pool2d: strides must be an int or a pair of ints, found 1.5"),
    ("bool pool size", lambda i: ops.max_pool2d(X, pool_size=True, impl=i), TypeError,
     r"max_pool2d: pool_size must be an int or a pair of ints, found True"),
]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("name, call, exc, match", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, call, exc, match, impl):
    with pytest.raises(exc, match=match):
        call(impl)


@pytest.mark.parametrize("op", ["conv2d", "relu", "dense", "max_pool2d"])
def test_unknown_impl(op):
    args = {"conv2d": (X, K), "relu": (X,), "dense": (np.ones((2, 3), f32), np.ones((3, 4), f32)),
            "max_pool2d": (X,)}[op]
    with pytest.raises(ValueError, match=rf"{op}: impl must be 'fast' or 'reference', found 'numba'"):
        getattr(ops, op)(*args, impl="numba")


def test_unknown_impl_on_the_model_is_refused_before_any_work():
    """Every public entry of the model names the argument, as the ops do; the input is not even looked at."""
    model = npxception.Xception(weights=None, include_top=False, input_shape=(71, 71, 3), seed=0)
    calls = [lambda: model(None, impl="numba"), lambda: model.forward(None, impl="numba"),
             lambda: model.predict(None, impl="numba"), lambda: model.run_backbone(None, impl="numba"),
             lambda: model.run_layer("block1_conv1", [None], impl="numba")]
    for call in calls:
        with pytest.raises(ValueError, match=r"impl must be 'fast' or 'reference', found 'numba'"):
            call()


def test_padding_is_case_insensitive():
    for impl in IMPLS:
        np.testing.assert_array_equal(ops.conv2d(X, K, padding="SAME", impl=impl),
                                      ops.conv2d(X, K, padding="same", impl=impl))
        np.testing.assert_array_equal(ops.max_pool2d(X, padding="Valid", impl=impl),
                                      ops.max_pool2d(X, padding="valid", impl=impl))


def test_output_size_unknown_padding():
    with pytest.raises(ValueError, match=r"output_size: padding must be 'same' or 'valid', found 'full'"):
        ops.output_size(5, 3, 1, "full")


def test_no_nan_for_finite_extremes():
    """Huge finite inputs stay finite where the math does (softmax, max-pool, relu, add of opposites)."""
    for dtype in (f32, f64):
        big = np.finfo(dtype).max
        x = np.full((1, 2, 2, 1), big, dtype)
        x[0, 0, 0, 0] = -big
        for impl in IMPLS:
            assert np.isfinite(ops.max_pool2d(x, pool_size=2, strides=1, padding="same", impl=impl)).all()
            assert np.isfinite(ops.relu(x, impl=impl)).all()
            assert np.isfinite(ops.add(x, -x, impl=impl)).all()
            assert np.isfinite(ops.softmax(x.reshape(1, 4), impl=impl)).all()
