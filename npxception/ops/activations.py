"""Element-wise ops: ``relu`` (``tf.nn.relu``), ``add`` (``keras.layers.Add``, the residual
sum of Xception's blocks) and ``softmax`` (``tf.nn.softmax``, the ImageNet head).

* ``reference``: plain NumPy expressions.
* ``fast``: Numba kernels, parallel over independent elements or rows.
"""

from __future__ import annotations

import numpy as np

from .._jit import njit, prange
from ._checks import check_impl, float_array


def relu(x, *, impl="fast"):
    """Rectified linear unit, element-wise.

    Shapes: ``(...) -> (...)`` (any rank). Formula: ``y = max(x, 0)``.
    Output size: unchanged. The output has x's dtype.
    NaN propagates (``relu(nan) = nan``), as in ``tf.nn.relu``: a NaN input stays visible
    instead of turning into a plausible 0. ``relu(-0.0)`` is ``-0.0`` in both implementations,
    as ``tf.nn.relu`` gives in float32; TF's float64 kernel gives ``+0.0`` (TF 2.21,
    tests/test_ops_tf.py::test_relu_signed_zero). The two zeros are equal as numbers; only
    ``np.signbit`` (or a division by them) tells them apart.
    """
    op = "relu"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    if impl == "reference":
        # max(x, 0), keeping -0.0 as the kernel and TF's float32 relu do (np.maximum(-0.0, 0.0) is +0.0)
        return np.where(x < 0, x.dtype.type(0), x)
    y = np.empty_like(x)
    _relu_kernel(x.reshape(-1), y.reshape(-1))
    return y


@njit(parallel=True)
def _relu_kernel(x, out):
    for k in prange(x.size):
        v = x[k]
        out[k] = 0.0 if v < 0 else v  # not "v if v > 0": NaN and -0.0 pass through, as in tf.nn.relu


def add(a, b, *, impl="fast"):
    """Element-wise sum of two arrays of exactly the same shape (no broadcasting).

    Shapes: ``(...), (...) -> (...)``. Formula: ``y = a + b``.
    Broadcasting is refused because in a residual block a shape mismatch is a bug.
    The output has the inputs' (common) dtype.
    """
    op = "add"
    check_impl(op, impl)
    a = float_array(op, "a", a)
    b = float_array(op, "b", b)
    if b.dtype != a.dtype:
        raise TypeError(f"{op}: b has dtype {b.dtype} but a has dtype {a.dtype}; expected {a.dtype} "
                        f"(no silent up- or downcast)")
    if a.shape != b.shape:
        raise ValueError(f"{op}: b must have the same shape as a, {a.shape} (no broadcasting), found {b.shape}")
    if impl == "reference":
        return a + b
    y = np.empty_like(a)
    _add_kernel(a.reshape(-1), b.reshape(-1), y.reshape(-1))
    return y


@njit(parallel=True)
def _add_kernel(a, b, out):
    for k in prange(a.size):
        out[k] = a[k] + b[k]


def softmax(x, axis=-1, *, impl="fast"):
    """Numerically stable softmax along ``axis``.

    Shapes: ``(...) -> (...)`` (any rank >= 1), e.g. logits ``(N, classes)``.
    Formula::

        y = exp(x - max(x)) / sum(exp(x - max(x)))      (max and sum along axis)

    Subtracting the max changes nothing mathematically and keeps exp() <= 1, so
    large logits never overflow. Output size: unchanged. The output has x's dtype.
    """
    op = "softmax"
    check_impl(op, impl)
    x = float_array(op, "x", x)
    if x.ndim < 1:
        raise ValueError(f"{op}: x must have rank >= 1, found a 0-D array")
    if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{op}: axis must be an int in [{-x.ndim}, {x.ndim - 1}] for x of shape {x.shape}, "
                         f"found {axis!r}")
    if x.shape[axis] == 0:
        raise ValueError(f"{op}: x must have at least one entry along axis {axis}, found shape {x.shape}")
    if impl == "reference":
        # x - max can overflow to -inf for logits near -float max; exp(-inf) = 0 is the right limit
        with np.errstate(over="ignore"):
            e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    moved = np.ascontiguousarray(np.moveaxis(x, axis, -1))  # the softmax axis last: one row per softmax
    y = np.empty_like(moved)
    k = moved.shape[-1]
    _softmax_rows(moved.reshape(-1, k), y.reshape(-1, k))
    return np.ascontiguousarray(np.moveaxis(y, -1, axis))


@njit(parallel=True)
def _softmax_rows(x, out):
    """Softmax of each row of x (R, K) into out."""
    rows, k_ = x.shape
    for r in prange(rows):
        top = x[r, 0]
        for k in range(1, k_):
            if x[r, k] > top:
                top = x[r, k]
        total = 0.0
        for k in range(k_):
            e = np.exp(x[r, k] - top)
            out[r, k] = e
            total += e
        for k in range(k_):
            out[r, k] = out[r, k] / total
