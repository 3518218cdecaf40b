"""Image resampling as ``tf.image.resize`` computes it, and the crop / pad boxes Keras' geometry layers use.

Keras' ``Resizing``, ``CenterCrop`` and ``RandomCrop`` (Keras 3 through
``keras.src.backend.tensorflow.image.resize``, tf_keras directly and through
``smart_resize``) end in ``tf.image.resize(images, size, method, antialias=False)``,
which runs TensorFlow's ``ResizeBilinear`` / ``ResizeNearestNeighbor`` kernels with
``half_pixel_centers=True`` (tensorflow/core/kernels/image/resize_bilinear_op.cc,
resize_nearest_neighbor_op.cc). Along each axis, output index ``y`` of ``h`` reads
the input of length ``H`` at::

    scale = H / h                                                  (float32)
    bilinear:  s = (y + 0.5) * scale - 0.5                         (float32)
               y0 = max(floor(s), 0)    y1 = min(ceil(s), H - 1)    a = s - floor(s)
    nearest:   y0 = min(floor((y + 0.5) * scale), H - 1)

and, with ``(x0, x1, b)`` the same along the width::

    top    = in[y0, x0] + (in[y0, x1] - in[y0, x0]) * b
    bottom = in[y1, x0] + (in[y1, x1] - in[y1, x0]) * b
    out    = top + (bottom - top) * a                 (bilinear)
    out    = in[y0, x0]                               (nearest)

The indices and weights are computed in float32 exactly as the kernels compute
them, so the same pixels are read with the same weights; the values are
interpolated in ``x``'s dtype (TensorFlow's bilinear kernel works in float32;
float64 here is the oracle). At ``h == H`` both are the identity (``s = y``).

The boxes (:func:`aspect_crop_box`, :func:`aspect_pad`) are the integer
arithmetic of Keras' ``crop_to_aspect_ratio`` / ``smart_resize`` and
``pad_to_aspect_ratio``, also in float32 as those run on ``tf.shape`` tensors.

There is no Numba twin: a resize is a gather and three lerps per output value,
vectorised here, O(N h w C) against block1_conv1's O(N h w C 32 9 / 4).
"""

from __future__ import annotations

import numpy as np

INTERPOLATIONS = ("bilinear", "nearest")


def _f32(v) -> np.float32:
    return np.float32(v)


def source_coordinates(out_size: int, in_size: int, interpolation: str):
    """``(i0, i1, frac)`` along one axis: the two input indices each output reads and the weight of ``i1``.

    For ``nearest`` ``i1 == i0`` and ``frac`` is 0. Float32 arithmetic, as TF's kernels.
    """
    scale = _f32(in_size) / _f32(out_size)
    y = np.arange(out_size, dtype=np.float32)
    if interpolation == "nearest":
        i0 = np.minimum(np.floor((y + _f32(0.5)) * scale).astype(np.int64), in_size - 1)
        i0 = np.maximum(i0, 0)
        return i0, i0, np.zeros(out_size, np.float32)
    if interpolation != "bilinear":
        raise ValueError(f"interpolation: expected one of {INTERPOLATIONS}, found {interpolation!r}")
    s = (y + _f32(0.5)) * scale - _f32(0.5)
    floor = np.floor(s)
    i0 = np.maximum(floor.astype(np.int64), 0)
    i1 = np.minimum(np.ceil(s).astype(np.int64), in_size - 1)
    return i0, i1, (s - floor).astype(np.float32)


def resize(x: np.ndarray, size, interpolation: str = "bilinear") -> np.ndarray:
    """``tf.image.resize(x, size, method=interpolation, antialias=False)``: ``(N, H, W, C) -> (N, h, w, C)``.

    ``size`` is ``(h, w)``, both >= 1; ``H, W >= 1``. A new array in ``x``'s
    (floating) dtype; ``x`` is not modified.
    """
    h, w = (int(s) for s in size)
    n, in_h, in_w, c = x.shape
    if min(h, w, in_h, in_w) < 1:
        raise ValueError(f"resize: sizes must be at least 1, found {in_h}x{in_w} -> {h}x{w}")
    dt = x.dtype
    y0, y1, a = source_coordinates(h, in_h, interpolation)
    x0, x1, b = source_coordinates(w, in_w, interpolation)
    if interpolation == "nearest":
        return x[:, y0][:, :, x0].copy()
    a = a.astype(dt)[None, :, None, None]  # (1, h, 1, 1)
    b = b.astype(dt)[None, None, :, None]  # (1, 1, w, 1)
    rows0, rows1 = x[:, y0], x[:, y1]  # (N, h, W, C)
    top = rows0[:, :, x0] + (rows0[:, :, x1] - rows0[:, :, x0]) * b  # (N, h, w, C)
    bottom = rows1[:, :, x0] + (rows1[:, :, x1] - rows1[:, :, x0]) * b
    return top + (bottom - top) * a


def aspect_crop_box(in_h: int, in_w: int, h: int, w: int, *, at_least_one: bool = True):
    """``(top, left, crop_h, crop_w)``: the largest centred window of ``in_h x in_w`` with ``h:w``'s aspect.

    Keras' ``crop_to_aspect_ratio`` and ``smart_resize``, on int32 / float32 tensors::

        crop_h = min(in_h, int32(float32(in_w * h) / w))      (then >= 1 in Keras 3)
        crop_w = min(in_w, int32(float32(in_h * w) / h))
        top = (in_h - crop_h) // 2        left = (in_w - crop_w) // 2

    ``at_least_one`` is Keras 3's ``max(crop, 1)``; tf_keras has none, and its
    empty window fails in ``tf.image.resize``: raised here as a ValueError.
    """
    crop_h = min(in_h, int(_f32(in_w * h) / _f32(w)))
    crop_w = min(in_w, int(_f32(in_h * w) / _f32(h)))
    if at_least_one:
        crop_h, crop_w = max(crop_h, 1), max(crop_w, 1)
    elif min(crop_h, crop_w) < 1:
        raise ValueError(f"a {in_h}x{in_w} image has no {h}:{w} window of at least one pixel")
    return (in_h - crop_h) // 2, (in_w - crop_w) // 2, crop_h, crop_w


def aspect_pad(x: np.ndarray, h: int, w: int, fill_value: float) -> np.ndarray:
    """Keras 3's ``pad_to_aspect_ratio``: pad ``(N, H, W, C)`` with ``fill_value`` towards ``h:w``'s aspect.

    As keras.src.backend.tensorflow.image.resize computes it::

        pad_h = max(H, int32(float32(W * h) / w))      top = (pad_h - H) // 2
        pad_w = max(W, int32(float32(H * w) / h))      left = (pad_w - W) // 2

    and ``top`` rows (``left`` columns) of ``fill_value`` go on *both* sides, so an
    odd difference leaves the result one row (column) short of ``pad_h`` (``pad_w``).
    At most one of the two is non-zero.
    """
    n, in_h, in_w, c = x.shape
    top = (max(in_h, int(_f32(in_w * h) / _f32(w))) - in_h) // 2
    left = (max(in_w, int(_f32(in_h * w) / _f32(h))) - in_w) // 2
    if top == 0 and left == 0:
        return x
    return np.pad(x, ((0, 0), (top, top), (left, left), (0, 0)), constant_values=x.dtype.type(fill_value))
