"""Depthwise 2-D convolution, as ``tf.nn.depthwise_conv2d`` / ``keras.layers.DepthwiseConv2D``.

Each input channel c is convolved with its own M filters (M = depth
multiplier); no mixing between channels. The output channel of (c, m) is
``c*M + m``, TF's order. In Xception it is the first half of every
SeparableConv2D (M = 1, 3x3, SAME).

* ``reference``: loop over kernel taps (i, j); each tap scales a shifted,
  strided view of the padded input by the tap's (C_in, M) weights.
* ``fast``: a Numba kernel, parallel over output rows (n, h'), that
  accumulates each output pixel's C_in*M sums in a local buffer.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange
from ._checks import check_impl, conv_args
from .padding import output_size, pad_nhwc, tap_view


def depthwise_conv2d(x, kernel, *, strides=1, padding="valid", impl="fast"):
    """Depthwise 2-D convolution, NHWC, TF semantics.

    Shapes::

        x       (N, H, W, C_in)
        kernel  (KH, KW, C_in, M)          Keras DepthwiseConv2D layout, M = depth multiplier
        ->      (N, H', W', C_in * M)

    Formula (``xp`` = x zero-padded by :func:`~npxception.ops.same_padding`)::

        y[n, h, w, c*M + m] = sum_{i, j} xp[n, h*sh + i, w*sw + j, c] * kernel[i, j, c, m]

    Output size (per axis, stride s, kernel K)::

        SAME:  H' = ceil(H / s)             (extra pad pixel at bottom / right)
        VALID: H' = ceil((H - K + 1) / s)   (requires K <= H)

    ``strides`` is an int or a pair ``(sh, sw)``. The output has x's dtype.
    """
    op = "depthwise_conv2d"
    check_impl(op, impl)
    x, kernel, strides, padding = conv_args(op, x, kernel, strides, padding, layout="(KH, KW, {c}, M)")
    kh, kw = kernel.shape[:2]
    n, h, w, c_in = x.shape
    ho, wo = output_size(h, kh, strides[0], padding), output_size(w, kw, strides[1], padding)
    xp = pad_nhwc(x, (kh, kw), strides, padding, value=0.0)
    if impl == "reference":
        return _depthwise_reference(xp, kernel, strides, ho, wo)
    y = np.empty((n, ho, wo, c_in * kernel.shape[3]), dtype=x.dtype)
    _depthwise_kernel(np.ascontiguousarray(xp), kernel, strides[0], strides[1], y)
    return y


def _depthwise_reference(xp, kernel, strides, ho, wo):
    """Sum over taps (i, j): strided view (N, H', W', C_in, 1) * tap weights (C_in, M)."""
    n, _, _, c_in = xp.shape
    kh, kw, _, m = kernel.shape
    sh, sw = strides
    y = np.zeros((n, ho, wo, c_in, m), dtype=xp.dtype)
    for i in range(kh):
        for j in range(kw):
            view = tap_view(xp, i, j, (sh, sw), (ho, wo))  # (N, H', W', C_in)
            y += view[..., None] * kernel[i, j]  # (N, H', W', C_in, 1) * (C_in, M)
    return y.reshape(n, ho, wo, c_in * m)  # (c, m) -> channel c*M + m, as TF


@njit(parallel=True)
def _depthwise_kernel(xp, kernel, sh, sw, out):
    """VALID depthwise conv of the already padded ``xp`` into ``out`` (N, H', W', C_in*M)."""
    n_, ho, wo, _ = out.shape
    kh, kw, c_, m_ = kernel.shape
    for r in prange(n_ * ho):  # output rows are independent
        n = r // ho
        oh = r % ho
        acc = np.empty(c_ * m_, dtype=out.dtype)  # this row's per-pixel accumulators
        for ow in range(wo):
            acc[:] = 0.0
            for i in range(kh):
                hi = oh * sh + i
                for j in range(kw):
                    wj = ow * sw + j
                    for c in range(c_):
                        v = xp[n, hi, wj, c]
                        for m in range(m_):
                            acc[c * m_ + m] += v * kernel[i, j, c, m]
            for k in range(c_ * m_):
                out[n, oh, ow, k] = acc[k]
