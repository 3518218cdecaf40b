"""2-D convolution (cross-correlation), as ``tf.nn.conv2d`` / ``keras.layers.Conv2D(use_bias=False)``.

Xception uses it twice at the stem (``block1_conv1`` 3x3 s2 VALID,
``block1_conv2`` 3x3 VALID) and for the strided 1x1 residual convolutions.
Like TF and Keras this is a cross-correlation: the kernel is not flipped.

Two implementations of the same formula:

* ``reference``: a loop over the KH*KW kernel taps; each tap multiplies one
  shifted, strided view of the padded input by that tap's (C_in, C_out) matrix.
* ``fast``: im2col (a Numba kernel gathers every receptive field into one row)
  followed by a single GEMM through NumPy's BLAS.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange
from ._checks import check_impl, conv_args
from .padding import output_size, pad_nhwc, tap_view, window_geometry


def conv2d(x, kernel, *, strides=1, padding="valid", impl="fast"):
    """2-D convolution without bias, NHWC, TF semantics.

    Shapes::

        x       (N, H, W, C_in)
        kernel  (KH, KW, C_in, C_out)      Keras Conv2D layout
        ->      (N, H', W', C_out)

    Formula (cross-correlation, ``xp`` = x zero-padded by :func:`~npxception.ops.same_padding`)::

        y[n, h, w, o] = sum_{i, j, c} xp[n, h*sh + i, w*sw + j, c] * kernel[i, j, c, o]

    Output size (per axis, stride s, kernel K)::

        SAME:  H' = ceil(H / s)             (extra pad pixel at bottom / right)
        VALID: H' = ceil((H - K + 1) / s)   (requires K <= H)

    ``strides`` is an int or a pair ``(sh, sw)``; ``padding`` is ``"same"`` or
    ``"valid"`` (any case). The output has x's dtype (float32 or float64).
    """
    op = "conv2d"
    check_impl(op, impl)
    x, kernel, strides, padding = conv_args(op, x, kernel, strides, padding, layout="(KH, KW, {c}, C_out)")
    if impl == "reference":
        return _conv2d_reference(x, kernel, strides, padding)
    return _conv2d_fast(x, kernel, strides, padding)


def _conv2d_reference(x, kernel, strides, padding):
    """Sum over kernel taps (i, j) of a shifted strided view times that tap's (C_in, C_out) matrix."""
    n, h, w, _ = x.shape
    kh, kw, _, c_out = kernel.shape
    sh, sw = strides
    ho, wo = output_size(h, kh, sh, padding), output_size(w, kw, sw, padding)
    xp = pad_nhwc(x, (kh, kw), strides, padding, value=0.0)
    y = np.zeros((n, ho, wo, c_out), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            # rows i, i+sh, ..., i+sh*(ho-1): the input pixel under tap (i, j) for every output pixel
            view = tap_view(xp, i, j, (sh, sw), (ho, wo))  # (N, H', W', C_in)
            y += view @ kernel[i, j]  # (N, H', W', C_in) @ (C_in, C_out)
    return y


def _conv2d_fast(x, kernel, strides, padding):
    """im2col + one GEMM: (N*H'*W', KH*KW*C_in) @ (KH*KW*C_in, C_out)."""
    n, h, w, c_in = x.shape
    kh, kw, _, c_out = kernel.shape
    sh, sw = strides
    ho, pad_t = window_geometry(h, kh, sh, padding)
    wo, pad_l = window_geometry(w, kw, sw, padding)
    if kh == kw == 1 and sh == sw == 1:  # a pointwise convolution: the input already is its im2col
        cols = x.reshape(n * h * w, c_in)
    else:
        cols = np.empty((n * ho * wo, kh * kw * c_in), dtype=x.dtype)
        _im2col(x, kh, kw, sh, sw, pad_t, pad_l, ho, wo, cols)
    y = cols @ kernel.reshape(kh * kw * c_in, c_out)  # Keras layout flattens to (i, j, c) order
    return y.reshape(n, ho, wo, c_out)


@njit(parallel=True)
def _im2col(x, kh, kw, sh, sw, pad_t, pad_l, ho, wo, out):
    """out[(n, oh, ow), (i, j, c)] = x[n, oh*sh + i - pad_t, ow*sw + j - pad_l, c], zero outside x."""
    for r in prange(x.shape[0] * ho):  # one output row per iteration: rows are independent
        _im2col_row(x, r // ho, r % ho, kh, kw, sh, sw, pad_t, pad_l, wo, out[r * wo:(r + 1) * wo])


@njit
def _im2col_row(x, n, oh, kh, kw, sh, sw, pad_t, pad_l, wo, dst):
    """One output row of :func:`_im2col`: dst (Wo, KH*KW*C). Also used by npxception/fast/fused.py."""
    _, h_, w_, c_ = x.shape
    hi0 = oh * sh - pad_t
    for ow in range(wo):
        d = dst[ow]
        col = 0
        for i in range(kh):
            hi = hi0 + i
            for j in range(kw):
                wj = ow * sw + j - pad_l
                if 0 <= hi < h_ and 0 <= wj < w_:
                    for c in range(c_):
                        d[col + c] = x[n, hi, wj, c]
                else:
                    for c in range(c_):
                        d[col + c] = 0.0
                col += c_
