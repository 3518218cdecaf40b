"""Pointwise (1x1) convolution: ``keras.layers.Conv2D(kernel_size=1, use_bias=False)``.

A per-pixel matrix product that mixes channels. In Xception it is the second
half of every SeparableConv2D.

* ``reference``: the formula as an ``einsum``, a sum over input channels per
  pixel in NumPy's own C loop (``optimize=False``: no BLAS, so it shares nothing
  with the fast path). Not a Python loop over channels: too slow for the float64
  oracle that certifies weight files (docs/performance.md, "Measurements behind
  the code's choices").
* ``fast``: one GEMM through NumPy's BLAS on the (N*H*W, C_in) pixel matrix.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_impl, check_nhwc, check_rank, float_array


def pointwise_conv2d(x, kernel, *, impl="fast"):
    """1x1 convolution, stride 1, no bias, NHWC.

    Shapes::

        x       (N, H, W, C_in)
        kernel  (1, 1, C_in, C_out)        Keras Conv2D / SeparableConv2D pointwise layout
        ->      (N, H, W, C_out)

    Formula::

        y[n, h, w, o] = sum_c x[n, h, w, c] * kernel[0, 0, c, o]

    Output size: H' = H, W' = W (1x1 kernel, stride 1; SAME and VALID agree).
    The output has x's dtype.
    """
    op = "pointwise_conv2d"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    kernel = float_array(op, "kernel", kernel, like=x)
    check_nhwc(op, "x", x)
    check_rank(op, "kernel", kernel, 4, "(1, 1, C_in, C_out)")
    c_in = x.shape[3]
    if kernel.shape[:3] != (1, 1, c_in):
        raise ValueError(f"{op}: kernel must have shape (1, 1, {c_in}, C_out) for x with {c_in} channels, "
                         f"found {kernel.shape}")
    w = kernel[0, 0]  # (C_in, C_out)
    n, h, wd, _ = x.shape
    if impl == "reference":
        return np.einsum("nhwc,co->nhwo", x, w, optimize=False)  # y[n,h,w,o] = sum_c x[n,h,w,c] w[c,o]
    return (x.reshape(n * h * wd, c_in) @ w).reshape(n, h, wd, w.shape[1])
