"""Tier 1: every op, both implementations, both dtypes, against TensorFlow / Keras.

TensorFlow is the specification (Keras' Xception runs on it), so each draw
computes the op with TF and with ``impl="reference"`` and ``impl="fast"``,
and checks all three agree; fast is also checked against reference.
Draws, tolerances and their reasoning live in
tests/test_ops_reference_vs_fast.py (``assert_close``): float64 agrees to
rtol 1e-10 plus ~8 eps per term of the reduction, float32 to rtol 1e-5 plus
1e-6 * (reduction length) * (max product size).

TensorFlow is imported here only; npxception never imports it.
"""

from __future__ import annotations

import keras  # a test extra: imported, never skipped
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given
from hypothesis import strategies as st
from test_ops_reference_vs_fast import (
    DTYPES, amax, assert_close, batch, channels, fits, ksize, multiplier, rand, seeds, size, stride, window,
    x_and_kernel,
)
from test_ops_reference_vs_fast import warm_jit  # noqa: F401  (autouse fixture: compile the kernels first)

from npxception import ops

IMPLS = ["reference", "fast"]


def T(a):
    """A TF tensor of exactly a's dtype. Always convert explicitly: in TF 2.21 eager, a float64 NumPy
    array passed straight to tf.nn.max_pool2d came back float32 on a repeated call."""
    return tf.constant(a, dtype=a.dtype)


def check_all(fn, theirs, dtype, what, **tol):
    """fn(impl) for both impls against TF's ``theirs``, and fast against reference."""
    theirs = np.asarray(theirs)
    assert theirs.dtype == np.dtype(dtype), f"{what}: TF computed in {theirs.dtype}, not {np.dtype(dtype)}"
    outs = {impl: fn(impl) for impl in IMPLS}
    for impl, ours in outs.items():
        assert_close(ours, theirs, dtype, what=f"{what} impl={impl} vs TF", **tol)
    assert_close(outs["fast"], outs["reference"], dtype, what=f"{what} fast vs reference", **tol)
    return outs["fast"]


def tf_depthwise(x, k, sh, sw, padding):
    """TF's depthwise conv. TF's kernel only takes equal strides, so for sh != sw the same op is
    written as a full tf.nn.conv2d whose kernel is zero between different channels
    (weight k[i, j, c, m] at input c, output c*M + m), keeping TF's own SAME padding."""
    if sh == sw:
        return tf.nn.depthwise_conv2d(T(x), T(k), strides=[1, sh, sw, 1], padding=padding.upper())
    kh, kw, c, m = k.shape
    full = np.zeros((kh, kw, c, c * m), k.dtype)
    for ci in range(c):
        full[:, :, ci, ci * m:(ci + 1) * m] = k[:, :, ci, :]
    return tf.nn.conv2d(T(x), T(full), strides=[sh, sw], padding=padding.upper())


def tf_max_pool(x, kh, kw, sh, sw, padding):
    return tf.nn.max_pool2d(T(x), ksize=[kh, kw], strides=[sh, sw], padding=padding.upper())


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, c_out=channels)
def test_conv2d(dtype, n, h, w, c, c_out, kh, kw, sh, sw, padding, seed):
    fits(padding, kh, kw, h, w)
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (kh, kw, c, c_out), dtype)
    theirs = tf.nn.conv2d(T(x), T(k), strides=[sh, sw], padding=padding.upper())
    check_all(lambda impl: ops.conv2d(x, k, strides=(sh, sw), padding=padding, impl=impl), theirs, dtype,
              "conv2d", terms=kh * kw * c, scale=amax(x, k))


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, m=multiplier)
def test_depthwise_conv2d(dtype, n, h, w, c, m, kh, kw, sh, sw, padding, seed):
    fits(padding, kh, kw, h, w)
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (kh, kw, c, m), dtype)
    check_all(lambda impl: ops.depthwise_conv2d(x, k, strides=(sh, sw), padding=padding, impl=impl),
              tf_depthwise(x, k, sh, sw, padding), dtype, "depthwise_conv2d", terms=kh * kw, scale=amax(x, k))


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, m=multiplier, c_out=channels)
def test_separable_conv2d(dtype, n, h, w, c, m, c_out, kh, kw, sh, sw, padding, seed):
    fits(padding, kh, kw, h, w)
    rng, x, dk = x_and_kernel(seed, (n, h, w, c), (kh, kw, c, m), dtype)
    pk = rand(rng, (1, 1, c * m, c_out), dtype, -1, 1)
    if sh == sw:
        theirs = tf.nn.separable_conv2d(T(x), T(dk), T(pk), strides=[1, sh, sw, 1], padding=padding.upper())
    else:  # TF's depthwise kernel needs equal strides; same op via tf_depthwise then a 1x1 conv
        theirs = tf.nn.conv2d(tf_depthwise(x, dk, sh, sw, padding), T(pk), strides=1, padding="VALID")
    check_all(lambda impl: ops.separable_conv2d(x, dk, pk, strides=(sh, sw), padding=padding, impl=impl),
              theirs, dtype, "separable_conv2d", terms=kh * kw * c * m, scale=amax(x, dk, pk))


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=batch, h=size, w=size, c=channels, c_out=channels, seed=seeds)
def test_pointwise_conv2d(dtype, n, h, w, c, c_out, seed):
    rng, x, k = x_and_kernel(seed, (n, h, w, c), (1, 1, c, c_out), dtype)
    check_all(lambda impl: ops.pointwise_conv2d(x, k, impl=impl), tf.nn.conv2d(T(x), T(k), 1, "VALID"), dtype,
              "pointwise_conv2d", terms=c, scale=amax(x, k))


@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, shift=st.sampled_from([0.0, -100.0]))
def test_max_pool2d(dtype, n, h, w, c, kh, kw, sh, sw, padding, shift, seed):
    fits(padding, kh, kw, h, w)
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype) + dtype(shift)  # shift -100: all negative, a 0 pad would win
    check_all(lambda impl: ops.max_pool2d(x, pool_size=(kh, kw), strides=(sh, sw), padding=padding, impl=impl),
              tf_max_pool(x, kh, kw, sh, sw, padding), dtype, "max_pool2d", exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=batch, h=size, w=size, c=channels, seed=seeds)
def test_global_pools(dtype, n, h, w, c, seed):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c), dtype)
    check_all(lambda impl: ops.global_avg_pool2d(x, impl=impl), tf.reduce_mean(T(x), axis=[1, 2]), dtype,
              "global_avg_pool2d", terms=h * w, scale=amax(x))
    check_all(lambda impl: ops.global_max_pool2d(x, impl=impl), tf.reduce_max(T(x), axis=[1, 2]), dtype,
              "global_max_pool2d", exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(rank=st.sampled_from([2, 4]), n=batch, h=size, w=size, c=channels, seed=seeds,
       epsilon=st.sampled_from([1e-3, 1e-5]))
def test_batch_norm(dtype, rank, n, h, w, c, seed, epsilon):
    rng = np.random.default_rng(seed)
    x = rand(rng, (n, h, w, c) if rank == 4 else (n, c), dtype)
    gamma, beta, mean = rand(rng, (c,), dtype, -2, 2), rand(rng, (c,), dtype), rand(rng, (c,), dtype)
    var = rand(rng, (c,), dtype, 0.1, 2.0)
    layer = keras.layers.BatchNormalization(epsilon=epsilon, dtype=np.dtype(dtype).name)
    layer.build(x.shape)
    layer.set_weights([gamma, beta, mean, var])  # Keras' weight order
    theirs = np.asarray(layer(T(x), training=False))
    # a handful of roundings on values of size |gamma| * (|x| + |mean|) / sqrt(min var) + |beta|
    scale = amax(gamma) * (amax(x) + amax(mean)) / np.sqrt(0.1) + amax(beta)
    check_all(lambda impl: ops.batch_norm(x, gamma, beta, mean, var, epsilon=epsilon, impl=impl), theirs,
              dtype, "batch_norm", terms=4, scale=scale)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.lists(st.integers(1, 9), min_size=1, max_size=4), seed=seeds)
def test_relu_add(dtype, shape, seed):
    rng = np.random.default_rng(seed)
    a, b = rand(rng, shape, dtype), rand(rng, shape, dtype)
    check_all(lambda impl: ops.relu(a, impl=impl), tf.nn.relu(T(a)), dtype, "relu", exact=True)
    check_all(lambda impl: ops.add(a, b, impl=impl), tf.add(T(a), T(b)), dtype, "add", exact=True)


@pytest.mark.parametrize("dtype", DTYPES)
@given(shape=st.lists(st.integers(1, 12), min_size=1, max_size=3), data=st.data(), seed=seeds,
       offset=st.sampled_from([0.0, 1e3, -1e4]))
def test_softmax(dtype, shape, data, seed, offset):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1), label="axis")
    rng = np.random.default_rng(seed)
    logits = rand(rng, shape, dtype, -30, 30) + dtype(offset)  # +1e3: naive exp overflows
    # probabilities are <= 1; the normalising sum has shape[axis] terms
    check_all(lambda impl: ops.softmax(logits, axis=axis, impl=impl), tf.nn.softmax(T(logits), axis=axis), dtype,
              "softmax", terms=shape[axis] + 8)


@pytest.mark.parametrize("dtype", DTYPES)
@given(n=batch, c_in=st.integers(1, 64), units=st.integers(1, 32), use_bias=st.booleans(), seed=seeds)
def test_dense(dtype, n, c_in, units, use_bias, seed):
    rng, x, k = x_and_kernel(seed, (n, c_in), (c_in, units), dtype)
    bias = rand(rng, (units,), dtype) if use_bias else None
    theirs = tf.matmul(T(x), T(k)) + (T(bias) if use_bias else 0)
    check_all(lambda impl: ops.dense(x, k, bias, impl=impl), theirs, dtype, "dense",
              terms=c_in + 1, scale=amax(x, k) + (amax(bias) if use_bias else 0))


# --- the padding helper itself, against TF -----------------------------------------------------

@given(size=size, k=ksize, s=stride)
def test_same_padding_is_tfs(size, k, s):
    """TF SAME conv == TF VALID conv of the input padded by our (before, after): TF's padding is ours."""
    x = np.arange(1.0, size + 1).reshape(1, size, 1, 1)
    kernel = np.arange(1.0, k + 1).reshape(k, 1, 1, 1)
    before, after = ops.same_padding(size, k, s)
    assert after - before in (0, 1)  # asymmetric: the odd pixel goes bottom / right
    padded = np.pad(x, ((0, 0), (before, after), (0, 0), (0, 0)))
    same = tf.nn.conv2d(T(x), T(kernel), strides=[s, 1], padding="SAME").numpy()
    np.testing.assert_array_equal(same, tf.nn.conv2d(T(padded), T(kernel), strides=[s, 1], padding="VALID").numpy())
    assert same.shape[1] == ops.output_size(size, k, s, "same")
    if k <= size:
        valid = tf.nn.conv2d(T(x), T(kernel), strides=[s, 1], padding="VALID").numpy()
        assert valid.shape[1] == ops.output_size(size, k, s, "valid")


# --- the traps that break naive code, named explicitly -------------------------------------------

TRAPS = [  # (H, W, K, stride, padding, why)
    (8, 8, 3, 2, "same", "even size, stride 2: odd total pad, extra pixel bottom/right"),
    (6, 10, 3, 3, "same", "even size, stride 3"),
    (4, 4, 2, 2, "same", "even kernel, even size: no padding at all"),
    (10, 8, 4, 3, "same", "even kernel, stride 3"),
    (1, 1, 3, 1, "same", "1x1 map, 3x3 kernel"),
    (1, 1, 1, 1, "valid", "1x1 map, 1x1 kernel"),
    (1, 1, 3, 2, "same", "1x1 map, stride 2"),
    (2, 3, 5, 1, "same", "kernel larger than the map under SAME"),
    (3, 2, 5, 2, "same", "kernel larger than the map, stride 2"),
    (4, 4, 5, 3, "same", "kernel larger than the map, stride 3"),
    (7, 7, 3, 2, "valid", "odd size, stride 2, VALID"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("h, w, k, s, padding, why", TRAPS, ids=[t[-1] for t in TRAPS])
def test_traps(dtype, h, w, k, s, padding, why):
    rng = np.random.default_rng(h * 100 + w * 10 + k + s)
    x = rand(rng, (2, h, w, 3), dtype)
    kernel, dk = rand(rng, (k, k, 3, 4), dtype, -1, 1), rand(rng, (k, k, 3, 2), dtype, -1, 1)
    pk = rand(rng, (1, 1, 6, 5), dtype, -1, 1)
    check_all(lambda impl: ops.conv2d(x, kernel, strides=s, padding=padding, impl=impl),
              tf.nn.conv2d(T(x), T(kernel), strides=s, padding=padding.upper()), dtype, f"conv2d [{why}]",
              terms=k * k * 3, scale=amax(x, kernel))
    check_all(lambda impl: ops.depthwise_conv2d(x, dk, strides=s, padding=padding, impl=impl),
              tf_depthwise(x, dk, s, s, padding), dtype, f"depthwise_conv2d [{why}]", terms=k * k,
              scale=amax(x, dk))
    check_all(lambda impl: ops.separable_conv2d(x, dk, pk, strides=s, padding=padding, impl=impl),
              tf.nn.separable_conv2d(T(x), T(dk), T(pk), strides=[1, s, s, 1], padding=padding.upper()), dtype,
              f"separable_conv2d [{why}]", terms=k * k * 6, scale=amax(x, dk, pk))
    negative = x - dtype(100)  # all negative: a zero-padded pool would output 0 at the border
    out = check_all(lambda impl: ops.max_pool2d(negative, pool_size=k, strides=s, padding=padding, impl=impl),
                    tf_max_pool(negative, k, k, s, s, padding), dtype, f"max_pool2d [{why}]",
                    exact=True)
    assert (out < -80).all(), "a padded cell won the max"


@pytest.mark.parametrize("dtype", DTYPES)
def test_depth_multiplier_3_channel_order(dtype):
    """Output channel c*M + m, as TF: with M = 3, a wrong (m*C + c) order cannot pass."""
    rng = np.random.default_rng(3)
    x, k = rand(rng, (1, 5, 6, 4), dtype), rand(rng, (3, 3, 4, 3), dtype, -1, 1)
    for padding in ("same", "valid"):
        check_all(lambda impl: ops.depthwise_conv2d(x, k, padding=padding, impl=impl),
                  tf.nn.depthwise_conv2d(T(x), T(k), strides=[1, 1, 1, 1], padding=padding.upper()), dtype,
                  f"depthwise_conv2d M=3 {padding}", terms=9, scale=amax(x, k))


@pytest.mark.parametrize("dtype", DTYPES)
def test_softmax_huge_logits(dtype):
    big = np.finfo(dtype).max / 4
    logits = np.array([[big, big, -big], [0.0, -big, big]], dtype)
    for impl in IMPLS:
        y = ops.softmax(logits, impl=impl)
        assert np.isfinite(y).all()
        np.testing.assert_allclose(y, tf.nn.softmax(T(logits)).numpy(), atol=1e-6)


def with_nans(rng, shape, dtype, fraction):
    """Bounded floats with about ``fraction`` of them NaN (a student feeding a broken input)."""
    x = rand(rng, shape, dtype)
    x[rng.uniform(size=shape) < fraction] = np.nan
    return x


def check_nan_all(fn, theirs, what):
    """Both impls equal to TF's output, NaN in the same places (assert_array_equal: NaN == NaN)."""
    theirs = np.asarray(theirs)
    for impl in IMPLS:
        np.testing.assert_array_equal(fn(impl), theirs, err_msg=f"{what} impl={impl}: ours (ACTUAL) vs TF")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_signed_zero(dtype):
    """relu(-0.0) is -0.0 in both impls (its docstring), as tf.nn.relu in float32; TF's float64 kernel gives
    +0.0 (TF 2.21). np.signbit, because assert_array_equal takes -0.0 == +0.0. If TF's float64 changes, the
    docstring's statement of the difference must change with it."""
    x = np.array([-0.0, 0.0, -1.0, 2.0], dtype)
    ours = {impl: np.signbit(ops.relu(x, impl=impl)).tolist() for impl in IMPLS}
    assert ours == {impl: [True, False, False, False] for impl in IMPLS}, f"signbit of relu([-0, 0, -1, 2]): {ours}"
    theirs = np.signbit(np.asarray(tf.nn.relu(T(x)))).tolist()
    assert theirs == ([True, False, False, False] if dtype == np.float32 else [False, False, False, False]), theirs


# Review 15, finding 3: relu and global_max_pool2d's fast kernels dropped NaN where TF (and the
# references) propagate it; TF's max pool skips NaN, and the reference now does too.
@pytest.mark.parametrize("dtype", DTYPES)
@given(**window, fraction=st.sampled_from([0.05, 0.5, 1.0]))
def test_nan_as_tf(dtype, n, h, w, c, kh, kw, sh, sw, padding, seed, fraction):
    rng = np.random.default_rng(seed)
    x = with_nans(rng, (n, h, w, c), dtype, fraction)
    check_nan_all(lambda impl: ops.relu(x, impl=impl), tf.nn.relu(T(x)), "relu")
    check_nan_all(lambda impl: ops.global_max_pool2d(x, impl=impl), tf.reduce_max(T(x), axis=[1, 2]),
                  "global_max_pool2d")
    if padding == "valid" and (kh > h or kw > w):
        return
    theirs = np.asarray(tf_max_pool(x, kh, kw, sh, sw, padding))
    # TF starts its running maximum at the dtype's lowest finite value, we at -inf: a window of
    # nothing but NaN is the one documented difference (inputs are bounded by 10, never that low)
    theirs = np.where(theirs == np.finfo(dtype).min, -np.inf, theirs).astype(dtype)
    check_nan_all(lambda impl: ops.max_pool2d(x, pool_size=(kh, kw), strides=(sh, sw), padding=padding, impl=impl),
                  theirs, "max_pool2d")
