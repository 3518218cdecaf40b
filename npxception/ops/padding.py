"""TensorFlow's SAME / VALID padding rule, written once for every windowed op.

TF (``tf.nn.conv2d``, ``tf.nn.max_pool2d``; Keras layers with
``padding="same"``) choose the output size first and then pad just enough to
produce it:

    SAME:   H' = ceil(H / s)              pad_total = max((H' - 1) * s + K - H, 0)
    VALID:  H' = ceil((H - K + 1) / s)    no padding

SAME padding is *asymmetric*: ``before = pad_total // 2`` and the extra pixel,
if any, goes ``after`` (bottom / right). PyTorch-style symmetric padding
differs from TF whenever pad_total is odd (e.g. even H with stride 2).
"""

from __future__ import annotations

import numpy as np


def output_size(size: int, kernel: int, stride: int, padding: str) -> int:
    """Output length along one axis.

    SAME: ``ceil(size / stride)``; VALID: ``ceil((size - kernel + 1) / stride)``.
    """
    if padding == "same":
        return -(-size // stride)
    if padding == "valid":
        return -(-(size - kernel + 1) // stride)
    raise ValueError(f"output_size: padding must be 'same' or 'valid', found {padding!r}")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF's SAME padding along one axis as ``(before, after)``; the odd pixel goes after (bottom/right)."""
    out = -(-size // stride)  # ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return before, total - before  # the odd pixel goes after


def window_geometry(size: int, kernel: int, stride: int, padding: str) -> tuple[int, int]:
    """``(output length, padding before)`` along one axis: what a kernel that skips the padding needs.

    A fast kernel that reads x itself (no padded copy) starts output ``o``'s
    window at input ``o * stride - before``; taps outside ``[0, size)`` are padding.
    """
    before = same_padding(size, kernel, stride)[0] if padding == "same" else 0
    return output_size(size, kernel, stride, padding), before


def tap_view(xp: np.ndarray, i: int, j: int, strides: tuple[int, int], out_hw: tuple[int, int]) -> np.ndarray:
    """The padded input pixels under kernel tap ``(i, j)``, one per output pixel.

    xp (N, Hp, Wp, C) already padded -> (N, H', W', C), a strided view (no copy):
    ``view[n, h, w, c] = xp[n, h*sh + i, w*sw + j, c]``. A windowed op is the sum
    (or max) over taps of these views: rows i, i+sh, ..., i+sh*(H'-1).
    """
    (sh, sw), (ho, wo) = strides, out_hw
    return xp[:, i:i + sh * (ho - 1) + 1:sh, j:j + sw * (wo - 1) + 1:sw, :]


def pad_nhwc(x: np.ndarray, kernel_hw: tuple[int, int], strides: tuple[int, int], padding: str,
             value: float = 0.0) -> np.ndarray:
    """Pad an NHWC batch in H and W for ``padding`` (VALID: returned unchanged).

    ``value`` fills the border: 0 for convolutions, ``-inf`` for max-pooling so
    that padded cells never win. After padding, every op is a VALID window op
    with output ``(Hp - K) // s + 1`` rows, which equals :func:`output_size`.
    """
    if padding == "valid":
        return x
    top, bottom = same_padding(x.shape[1], kernel_hw[0], strides[0])
    left, right = same_padding(x.shape[2], kernel_hw[1], strides[1])
    if top == bottom == left == right == 0:
        return x
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=value)
