"""Batch normalisation in inference form, as ``keras.layers.BatchNormalization`` called with
``training=False`` (``tf.nn.batch_normalization`` with the moving statistics).

Normalises over the last axis (Keras' default ``axis=-1``, the channel of
NHWC) with the stored moving mean and variance. Keras' default epsilon is
1e-3; PyTorch ports of Xception use 1e-5 and so do not match Keras exactly.

* ``reference``: the textbook formula, literally.
* ``fast``: folds the four vectors into one scale and one shift, then a Numba
  kernel applies ``x * scale + shift``, parallel over rows.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange
from ..config import CONFIG
from ._checks import check_impl, check_same_shape, float_array

def batch_norm(x, gamma, beta, moving_mean, moving_variance, *, epsilon=CONFIG.bn_epsilon, impl="fast"):
    """Inference-mode batch normalisation over the last axis.

    Shapes::

        x                                          (..., C)   any rank >= 2: (N, H, W, C) or (N, C)
        gamma, beta, moving_mean, moving_variance  (C,)       Keras BatchNormalization weight order
        ->                                         (..., C)

    Formula::

        y = gamma * (x - moving_mean) / sqrt(moving_variance + epsilon) + beta

    Output size: unchanged. The output has x's dtype; all five arrays must share it.
    """
    op = "batch_norm"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    if x.ndim < 2:
        raise ValueError(f"{op}: x must have rank >= 2, (N, ..., C), found {x.ndim}-D array of shape {x.shape}")
    c = x.shape[-1]
    params = {}
    for name, v in (("gamma", gamma), ("beta", beta), ("moving_mean", moving_mean),
                    ("moving_variance", moving_variance)):
        params[name] = float_array(op, name, v, like=x)
        check_same_shape(op, name, params[name], (c,), f"one value per channel of x, C={c}")
    if not (np.isfinite(epsilon) and epsilon >= 0):
        raise ValueError(f"{op}: epsilon must be a finite number >= 0, found {epsilon!r}")
    eps = x.dtype.type(epsilon)  # in x's dtype: no upcast
    gamma, beta, mean, var = params["gamma"], params["beta"], params["moving_mean"], params["moving_variance"]
    if impl == "reference":
        return gamma * (x - mean) / np.sqrt(var + eps) + beta
    scale = gamma / np.sqrt(var + eps)  # (C,)
    shift = beta - mean * scale  # (C,)
    y = np.empty_like(x)
    _scale_shift(x.reshape(-1, c), scale, shift, y.reshape(-1, c))
    return y


@njit(parallel=True)
def _scale_shift(x, scale, shift, out):
    """out[r, c] = x[r, c] * scale[c] + shift[c] for x, out (R, C)."""
    rows, c_ = x.shape
    for r in prange(rows):
        for c in range(c_):
            out[r, c] = x[r, c] * scale[c] + shift[c]
