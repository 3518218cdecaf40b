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

The boxes (:func:`aspect_crop_box`, :func:`aspect_pad_offsets`) are the integer
arithmetic of Keras' ``crop_to_aspect_ratio`` / ``smart_resize`` and
``pad_to_aspect_ratio``, also in float32 as those run on ``tf.shape`` tensors.

There is no Numba twin: a resize is a gather and three lerps per output value,
vectorised here, O(N h w C) against block1_conv1's O(N h w C 32 9 / 4).
A resize reads at most two rows and two columns per output coordinate:
:func:`coordinates` says which, :func:`compact` lists them, so a caller can read
only those of a large image (npxception.input_stage.apply_gathered) and
:func:`resample` them with the same weights.
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


def _take(x: np.ndarray, index: np.ndarray, axis: int, fill) -> np.ndarray:
    """``x``'s slices at ``index`` along ``axis``; where ``index`` is -1, ``fill`` (the padding)."""
    out = np.take(x, np.maximum(index, 0), axis=axis)
    outside = index < 0
    if outside.any():
        where = [slice(None)] * x.ndim
        where[axis] = outside
        out[tuple(where)] = fill
    return out


def resample(x: np.ndarray, rows, cols, interpolation: str, fill=None) -> np.ndarray:
    """The gather and the three lerps of the module docstring, given each axis' ``(i0, i1, frac)``.

    ``(N, H, W, C) -> (N, h, w, C)`` with ``h = len(rows[0])``, ``w = len(cols[0])``;
    an index of -1 reads ``fill`` (:func:`coordinates` with ``pad``). Values are
    interpolated in ``x``'s dtype; only the indexed rows and columns are read.
    """
    (y0, y1, a), (x0, x1, b) = rows, cols
    if interpolation == "nearest":
        return _take(_take(x, y0, 1, fill), x0, 2, fill)
    dt = x.dtype
    a = a.astype(dt)[None, :, None, None]  # (1, h, 1, 1)
    b = b.astype(dt)[None, None, :, None]  # (1, 1, w, 1)
    rows0, rows1 = _take(x, y0, 1, fill), _take(x, y1, 1, fill)  # (N, h, W, C)
    r00, r01 = _take(rows0, x0, 2, fill), _take(rows0, x1, 2, fill)  # (N, h, w, C)
    r10, r11 = _take(rows1, x0, 2, fill), _take(rows1, x1, 2, fill)
    top = r00 + (r01 - r00) * b
    bottom = r10 + (r11 - r10) * b
    return top + (bottom - top) * a


def coordinates(in_hw, size, interpolation: str, *, pad: bool = False):
    """``(rows, cols)``, each axis' ``(i0, i1, frac)``: what :func:`resize` (``pad=False``) or
    :func:`pad_and_resize` (``pad=True``; -1 where the padding is read) reads of an ``in_h x in_w`` image."""
    (in_h, in_w), (h, w) = in_hw, (int(s) for s in size)
    if min(h, w, in_h, in_w) < 1:
        raise ValueError(f"resize: sizes must be at least 1, found {in_h}x{in_w} -> {h}x{w}")
    if not pad:
        return source_coordinates(h, in_h, interpolation), source_coordinates(w, in_w, interpolation)
    top, left = aspect_pad_offsets(in_h, in_w, h, w)

    def axis(out, inside, offset):  # source coordinates in the padded frame, mapped into x (-1: padding)
        i0, i1, frac = source_coordinates(out, inside + 2 * offset, interpolation)
        i0, i1 = i0 - offset, i1 - offset
        return (np.where((i0 >= 0) & (i0 < inside), i0, -1), np.where((i1 >= 0) & (i1 < inside), i1, -1), frac)

    return axis(h, in_h, top), axis(w, in_w, left)


def compact(axis):
    """``(kept, (j0, j1, frac))``: the distinct indices one axis' ``(i0, i1, frac)`` reads (sorted, at least
    one), and ``i0``, ``i1`` re-indexed into ``kept`` (-1 stays -1). ``resample(x[:, kept], (j0, j1, frac), ...)``
    reads the same values with the same weights as ``resample(x, (i0, i1, frac), ...)``: at most two
    indices per output, whatever the input's length."""
    i0, i1, frac = axis
    both = np.concatenate([i0, i1])
    kept = np.unique(both[both >= 0])
    if kept.size == 0:  # every output reads the padding: keep one index for np.take to clamp to
        kept = np.zeros(1, np.int64)

    def where(i):
        return np.where(i >= 0, np.searchsorted(kept, i), -1)

    return kept, (where(i0), where(i1), frac)


def resize(x: np.ndarray, size, interpolation: str = "bilinear") -> np.ndarray:
    """``tf.image.resize(x, size, method=interpolation, antialias=False)``: ``(N, H, W, C) -> (N, h, w, C)``.

    ``size`` is ``(h, w)``, both >= 1; ``H, W >= 1``. A new array in ``x``'s
    (floating) dtype; ``x`` is not modified.
    """
    return resample(x, *coordinates(x.shape[1:3], size, interpolation), interpolation)


def pad_and_resize(x: np.ndarray, size, interpolation: str, fill_value: float) -> np.ndarray:
    """``resize(aspect_pad(x, h, w, fill_value), size, interpolation)`` without building the padded image.

    Keras 3's ``Resizing(pad_to_aspect_ratio=True)``. The padded image can be far
    larger than ``x`` (a 1x2048 image padded to a 2048:1 aspect is 4M x 2048
    pixels) although only ``h x w`` of its values are read, so each index into it
    is mapped back to ``x``'s (or to ``fill_value``): memory stays ``O(N h W C)``,
    as :func:`resize`'s, and the values are the same, read with the same weights.
    """
    return resample(x, *coordinates(x.shape[1:3], size, interpolation, pad=True), interpolation,
                    x.dtype.type(fill_value))


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


def aspect_pad_offsets(in_h: int, in_w: int, h: int, w: int) -> tuple[int, int]:
    """``(top, left)``: the rows (columns) of padding Keras 3's ``pad_to_aspect_ratio`` puts on *each* side.

    As keras.src.backend.tensorflow.image.resize computes it::

        pad_h = max(H, int32(float32(W * h) / w))      top = (pad_h - H) // 2
        pad_w = max(W, int32(float32(H * w) / h))      left = (pad_w - W) // 2

    ``top`` rows (``left`` columns) go on *both* sides, so an odd difference
    leaves the result one row (column) short of ``pad_h`` (``pad_w``). At most one
    of the two is non-zero.
    """
    top = (max(in_h, int(_f32(in_w * h) / _f32(w))) - in_h) // 2
    left = (max(in_w, int(_f32(in_h * w) / _f32(h))) - in_w) // 2
    return top, left


def aspect_pad(x: np.ndarray, h: int, w: int, fill_value: float) -> np.ndarray:
    """Keras 3's ``pad_to_aspect_ratio``: pad ``(N, H, W, C)`` with ``fill_value`` towards ``h:w``'s aspect.

    The readable twin of :func:`pad_and_resize` (which never builds this array):
    ``(N, H + 2 top, W + 2 left, C)`` with :func:`aspect_pad_offsets`.
    """
    top, left = aspect_pad_offsets(x.shape[1], x.shape[2], h, w)
    if top == 0 and left == 0:
        return x
    return np.pad(x, ((0, 0), (top, top), (left, left), (0, 0)), constant_values=x.dtype.type(fill_value))
