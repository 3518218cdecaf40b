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
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    before = total // 2
    return before, total - before


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
