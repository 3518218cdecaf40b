"""Pooling: ``max_pool2d`` (``tf.nn.max_pool2d`` / ``keras.layers.MaxPooling2D``) and the
global pools (``keras.layers.GlobalAveragePooling2D`` / ``GlobalMaxPooling2D``,
i.e. ``tf.reduce_mean`` / ``tf.reduce_max`` over H and W).

Xception down-samples its entry and exit flows with 3x3 stride-2 SAME max
pools, and its ImageNet head averages globally. Under SAME, TF pads max-pool
with -inf, so padded cells never win: padding with 0 (a common port bug)
changes every border output whose window is all negative.

* ``reference``: a loop over window taps taking the running maximum of
  shifted, strided views; global pools are NumPy reductions.
* ``fast``: Numba kernels, parallel over output rows (max pool) or images
  (global pools), with per-row local accumulators.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange
from ._checks import check_impl, check_nhwc, check_padding, check_window_fits, float_array, pair
from .padding import output_size, pad_nhwc, tap_view


def max_pool2d(x, *, pool_size=3, strides=2, padding="valid", impl="fast"):
    """2-D max pooling, NHWC, TF semantics.

    Shapes::

        x   (N, H, W, C)
        ->  (N, H', W', C)

    Formula (``xp`` = x padded with -inf by :func:`~npxception.ops.same_padding`)::

        y[n, h, w, c] = max_{0 <= i < PH, 0 <= j < PW} xp[n, h*sh + i, w*sw + j, c]

    Output size (per axis, stride s, pool size K)::

        SAME:  H' = ceil(H / s)             (extra pad cell at bottom / right; never wins)
        VALID: H' = ceil((H - K + 1) / s)   (requires K <= H)

    ``pool_size`` and ``strides`` are ints or pairs. The output has x's dtype.

    NaN: skipped, as ``tf.nn.max_pool2d`` (hence Keras' MaxPooling2D) skips it: the maximum of
    ``[1, nan, nan]`` is 1. A window holding only NaN gives -inf here and the dtype's lowest
    finite value in TensorFlow (which starts its running maximum there instead of at -inf). Note
    that :func:`global_max_pool2d` propagates NaN, as ``tf.reduce_max`` does: TF itself differs.
    """
    op = "max_pool2d"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    check_nhwc(op, "x", x)
    ph, pw = pair(op, "pool_size", pool_size)
    sh, sw = pair(op, "strides", strides)
    padding = check_padding(op, padding)
    check_window_fits(op, "pool_size", x.shape[1:3], (ph, pw), padding)
    n, h, w, c = x.shape
    ho, wo = output_size(h, ph, sh, padding), output_size(w, pw, sw, padding)
    xp = pad_nhwc(x, (ph, pw), (sh, sw), padding, value=-np.inf)
    if impl == "reference":
        y = np.full((n, ho, wo, c), -np.inf, dtype=x.dtype)
        for i in range(ph):
            for j in range(pw):
                view = tap_view(xp, i, j, (sh, sw), (ho, wo))  # (N, H', W', C)
                np.fmax(y, view, out=y)  # fmax, not maximum: NaN is skipped, as TF's max pool does
        return y
    y = np.empty((n, ho, wo, c), dtype=x.dtype)
    _max_pool_kernel(np.ascontiguousarray(xp), ph, pw, sh, sw, y)
    return y


@njit(parallel=True)
def _max_pool_kernel(xp, ph, pw, sh, sw, out):
    """VALID max pool of the already (-inf) padded ``xp`` into ``out`` (N, H', W', C)."""
    n_, ho, wo, c_ = out.shape
    for r in prange(n_ * ho):  # output rows are independent
        n = r // ho
        oh = r % ho
        acc = np.empty(c_, dtype=out.dtype)
        for ow in range(wo):
            acc[:] = -np.inf
            for i in range(ph):
                for j in range(pw):
                    for c in range(c_):
                        v = xp[n, oh * sh + i, ow * sw + j, c]
                        if v > acc[c]:
                            acc[c] = v
            for c in range(c_):
                out[n, oh, ow, c] = acc[c]


def global_avg_pool2d(x, *, impl="fast"):
    """Mean over the spatial axes, as Keras GlobalAveragePooling2D.

    Shapes: ``(N, H, W, C) -> (N, C)``. Formula: ``y[n, c] = (1 / (H*W)) * sum_{h, w} x[n, h, w, c]``.
    The output has x's dtype.
    """
    return _global_pool("global_avg_pool2d", x, impl, take_max=False)


def global_max_pool2d(x, *, impl="fast"):
    """Maximum over the spatial axes, as Keras GlobalMaxPooling2D.

    Shapes: ``(N, H, W, C) -> (N, C)``. Formula: ``y[n, c] = max_{h, w} x[n, h, w, c]``.
    The output has x's dtype. A NaN anywhere in a channel makes its maximum NaN, as
    ``tf.reduce_max`` (Keras' GlobalMaxPooling2D); unlike :func:`max_pool2d`, which skips NaN as TF's does.
    """
    return _global_pool("global_max_pool2d", x, impl, take_max=True)


def _global_pool(op, x, impl, take_max):
    """Both global pools: checks, then the NumPy reduction (reference) or the kernel (fast)."""
    check_impl(op, impl)
    x = float_array(op, "x", x)
    check_nhwc(op, "x", x)
    if impl == "reference":
        return x.max(axis=(1, 2)) if take_max else x.mean(axis=(1, 2))
    y = np.empty((x.shape[0], x.shape[3]), dtype=x.dtype)
    _global_pool_kernel(x, take_max, y)
    return y


@njit(parallel=True)
def _global_pool_kernel(x, take_max, out):
    """out[n, c] = max or mean over (h, w) of x[n, h, w, c]; x (N, H, W, C), H*W >= 1."""
    n_, h_, w_, c_ = x.shape
    for n in prange(n_):  # images are independent
        acc = np.empty(c_, dtype=np.float64)  # mean accumulates in float64, then rounds once
        for c in range(c_):
            acc[c] = x[n, 0, 0, c] if take_max else 0.0
        for h in range(h_):
            for w in range(w_):
                for c in range(c_):
                    v = x[n, h, w, c]
                    if take_max:
                        if v > acc[c] or v != v:  # a NaN wins and stays (nothing is > NaN), as tf.reduce_max
                            acc[c] = v
                    else:
                        acc[c] += v
        for c in range(c_):
            out[n, c] = acc[c] if take_max else acc[c] / (h_ * w_)
