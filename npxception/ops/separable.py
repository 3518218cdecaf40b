"""Depthwise-separable convolution, as ``keras.layers.SeparableConv2D(use_bias=False)`` /
``tf.nn.separable_conv2d``: a depthwise convolution followed by a pointwise one.

This is Xception's building block ("extreme Inception", Chollet 2017,
arXiv:1610.02357): spatial filtering per channel, then channel mixing. Keras
applies no activation or normalisation between the two halves.
"""

from __future__ import annotations

from ._checks import check_impl, check_rank, conv_args, float_array
from .depthwise import depthwise_conv2d
from .pointwise import pointwise_conv2d


def separable_conv2d(x, depthwise_kernel, pointwise_kernel, *, strides=1, padding="valid", impl="fast"):
    """Depthwise then pointwise convolution, NHWC, Keras SeparableConv2D semantics.

    Shapes::

        x                 (N, H, W, C_in)
        depthwise_kernel  (KH, KW, C_in, M)        Keras layout, M = depth multiplier
        pointwise_kernel  (1, 1, C_in * M, C_out)  Keras layout
        ->                (N, H', W', C_out)

    Formula::

        d[n, h, w, c*M + m] = sum_{i, j} xp[n, h*sh + i, w*sw + j, c] * depthwise_kernel[i, j, c, m]
        y[n, h, w, o]       = sum_k d[n, h, w, k] * pointwise_kernel[0, 0, k, o]

    Output size (the depthwise step's; stride s, kernel K)::

        SAME:  H' = ceil(H / s)
        VALID: H' = ceil((H - K + 1) / s)
    """
    op = "separable_conv2d"
    check_impl(op, impl)
    # validated here, not only in the two halves, so that errors name this op
    x, depthwise_kernel, strides, padding = conv_args(op, x, depthwise_kernel, strides, padding,
                                                      kernel_name="depthwise_kernel", layout="(KH, KW, {c}, M)")
    pointwise_kernel = float_array(op, "pointwise_kernel", pointwise_kernel, like=x)
    c_mid = x.shape[3] * depthwise_kernel.shape[3]
    check_rank(op, "pointwise_kernel", pointwise_kernel, 4, "(1, 1, C_in * M, C_out)")
    if pointwise_kernel.shape[:3] != (1, 1, c_mid):
        raise ValueError(f"{op}: pointwise_kernel must have shape (1, 1, C_in * M = {c_mid}, C_out) "
                         f"for depthwise_kernel of shape {depthwise_kernel.shape}, found {pointwise_kernel.shape}")
    d = depthwise_conv2d(x, depthwise_kernel, strides=strides, padding=padding, impl=impl)
    return pointwise_conv2d(d, pointwise_kernel, impl=impl)
