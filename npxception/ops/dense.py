"""Fully connected layer, as ``keras.layers.Dense`` without activation (``x @ kernel + bias``).

Xception's ImageNet head is ``Dense(1000)`` on the 2048 globally pooled
features; the softmax is applied separately (:func:`npxception.ops.softmax`).

* ``reference``: the formula as an ``einsum`` (a plain sum over input features, no BLAS).
* ``fast``: one GEMM through NumPy's BLAS.
"""

from __future__ import annotations

import numpy as np

from ._checks import check_impl, check_rank, check_same_shape, float_array


def dense(x, kernel, bias=None, *, impl="fast"):
    """Affine map of a batch of feature vectors.

    Shapes::

        x       (N, C_in)
        kernel  (C_in, units)     Keras Dense layout
        bias    (units,) or None  (None: no bias, Keras ``use_bias=False``)
        ->      (N, units)

    Formula::

        y[n, u] = sum_c x[n, c] * kernel[c, u] + bias[u]

    The output has x's dtype; kernel and bias must share it.
    """
    op = "dense"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    kernel = float_array(op, "kernel", kernel, like=x)
    check_rank(op, "x", x, 2, "(N, C_in)")
    check_rank(op, "kernel", kernel, 2, "(C_in, units)")
    c_in = x.shape[1]
    if kernel.shape[0] != c_in:
        raise ValueError(f"{op}: kernel has C_in={kernel.shape[0]} but x has {c_in} features; "
                         f"expected kernel shape ({c_in}, units), found {kernel.shape}")
    if bias is not None:
        bias = float_array(op, "bias", bias, like=x)
        check_same_shape(op, "bias", bias, (kernel.shape[1],), "one value per unit of kernel")
    if impl == "reference":
        # not a Python loop over C_in, for speed (docs/performance.md, "Measurements behind the code's choices")
        y = np.einsum("nc,cu->nu", x, kernel, optimize=False)  # y[n,u] = sum_c x[n,c] kernel[c,u]
    else:
        y = x @ kernel
    if bias is not None:
        y += bias
    return y
