"""Windowed ops: max-pool padding, window and stride; convolution padding and kernel layouts."""

from __future__ import annotations

import numpy as np

from ... import ops
from .case import Candidate, Case, closest


def _padded(x, pads, fill):
    (t, b), (l, r) = pads
    return np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=fill)


def _symmetric(x, k, s):
    """PyTorch's ``padding=k//2``: the same on every side; output ``floor((H + 2p - k) / s) + 1``."""
    p = k // 2
    return ((p, p), (p, p))


def _pool(x, k, s, pads, fill=-np.inf):
    return ops.max_pool2d(_padded(x, pads, fill), pool_size=k, strides=s, padding="valid", impl="reference")


def _same_pads(x, k, s):
    return tuple(ops.same_padding(x.shape[i], k, s) for i in (1, 2))


def _symmetric_pool(case: Case, cause: str, what: str, fill) -> Candidate | None:
    """The max-pool padded ``k//2`` on every side with ``fill``, then VALID; None where that is TF SAME's rule."""
    layer, x = case.spec, case.inputs[0]
    pads = _symmetric(x, layer.kernel_size, layer.strides)
    same = _same_pads(x, layer.kernel_size, layer.strides)
    if pads == same:
        return None
    return Candidate(cause, f"{what} {pads[0][0]}/{pads[0][1]} instead of TF SAME {same[0][0]}/{same[0][1]} "
                     f"(top/bottom) on the {x.shape[1]}x{x.shape[2]} map",
                     _pool(x, layer.kernel_size, layer.strides, pads, fill), pads[0][0])


def pool_symmetric_padding(case: Case) -> Candidate | None:
    """Max-pool padded symmetrically (PyTorch ``MaxPool2d(3, 2, padding=1)``) instead of TF SAME,
    which puts the odd pixel bottom/right: they differ when the input size is even."""
    return _symmetric_pool(case, "pool_symmetric_padding", "symmetric padding", -np.inf)


def pool_symmetric_zero_padding(case: Case) -> Candidate | None:
    """Zeros padded on every side, then a VALID max-pool (TF-Slim's and DeepLab's ``fixed_padding``:
    ``tf.pad`` 1/1 before a VALID pool): on an even map, where TF SAME pads 0/1 with -inf, both the
    rule and the fill differ; on an odd map this is :func:`pool_zero_padding`."""
    return _symmetric_pool(case, "pool_symmetric_zero_padding",
                           "zeros padded (TF-Slim's fixed_padding, then a VALID pool)", 0.0)


def pool_zero_padding(case: Case) -> Candidate | None:
    """SAME padding filled with 0 instead of -inf: a negative border window then returns 0."""
    layer, x = case.spec, case.inputs[0]
    if layer.padding != "same":
        return None
    return Candidate("pool_zero_padding", "padding filled with 0 instead of -inf",
                     _pool(x, layer.kernel_size, layer.strides, _same_pads(x, layer.kernel_size, layer.strides), 0.0))


def pool_ceil_mode(case: Case) -> Candidate:
    """PyTorch ``ceil_mode=True`` without padding: ``ceil((H - k) / s) + 1`` windows, the last ones
    running off the bottom/right edge."""
    layer, x = case.spec, case.inputs[0]
    k, s = layer.kernel_size, layer.strides
    pads = []
    for size in x.shape[1:3]:
        out = -(-(size - k) // s) + 1
        if (out - 1) * s >= size:  # PyTorch drops a last window that starts in the padding
            out -= 1
        pads.append((0, max((out - 1) * s + k - size, 0)))
    return Candidate("pool_ceil_mode", "ceil_mode=True without padding", _pool(x, k, s, tuple(pads)))


def pool_window_off_by_one(case: Case) -> Candidate | None:
    """A pool window one larger or smaller than Keras' (3x3), with SAME padding."""
    layer, x = case.spec, case.inputs[0]
    found = closest(((k, _pool(x, k, layer.strides, _same_pads(x, k, layer.strides)))
                     for k in (layer.kernel_size - 1, layer.kernel_size + 1) if k >= 1), case.theirs)
    if found is None:
        return None
    k, y = found
    return Candidate("pool_window", f"pool window {k}x{k} instead of {layer.kernel_size}x{layer.kernel_size}", y, k)


def pool_stride_off_by_one(case: Case) -> Candidate | None:
    """A pool stride one larger or smaller than Keras' (2), with SAME padding."""
    layer, x = case.spec, case.inputs[0]
    for s in (layer.strides - 1, layer.strides + 1):
        if s >= 1:
            y = _pool(x, layer.kernel_size, s, _same_pads(x, layer.kernel_size, s))
            if y.shape == case.theirs.shape:
                return Candidate("pool_stride", f"pool stride {s} instead of {layer.strides}", y, s)
    return None


# ---- convolutions -------------------------------------------------------------------------

def _conv(case, x=None, kernel=None, depthwise=None, pads=None, padding=None):
    """Our conv / sepconv layer with one thing replaced."""
    layer, p = case.spec, case.params
    x = case.inputs[0] if x is None else x
    padding = layer.padding if padding is None else padding
    if pads is not None:
        x, padding = _padded(x, pads, 0.0), "valid"
    if layer.kind == "conv":
        k = p["kernel"] if kernel is None else kernel
        return ops.conv2d(x, k, strides=layer.strides, padding=padding)
    d = p["depthwise_kernel"] if depthwise is None else depthwise
    pw = p["pointwise_kernel"] if kernel is None else kernel
    return ops.separable_conv2d(x, d, pw, strides=layer.strides, padding=padding)


def conv_symmetric_padding(case: Case) -> Candidate | None:
    """PyTorch-style ``padding=k//2`` on every side instead of TF's rule (VALID, or SAME with the
    odd pixel bottom/right)."""
    layer, x = case.spec, case.inputs[0]
    pads = _symmetric(x, layer.kernel_size, layer.strides)
    if pads[0][0] == 0 or (layer.padding == "same" and pads == _same_pads(x, layer.kernel_size, layer.strides)):
        return None
    rule = "VALID" if layer.padding == "valid" else "TF SAME"
    return Candidate("conv_symmetric_padding", f"padding {pads[0][0]} on every side instead of {rule}",
                     _conv(case, pads=pads), pads[0][0])


def conv_same_for_valid(case: Case) -> Candidate | None:
    """SAME padding where Keras pads VALID (the article's stem: 299 -> 150 -> 150)."""
    if case.spec.padding != "valid":
        return None
    # in a PyTorch port's words too: SAME pads a stride-1 3x3 by 1 on every side (PyTorch's padding=1); at a
    # stride of 2 it pads 0/1 or 1/1 by the size (ops.same_padding), padding=p only where it is even
    (t, b), (left, r) = _same_pads(case.inputs[0], case.spec.kernel_size, case.spec.strides)
    if t == b == left == r:
        what = f"padding={t} (SAME at this size) instead of VALID"
    else:
        what = (f"SAME padding ({t}/{b} top/bottom, {left}/{r} left/right: no PyTorch padding= gives it) "
                "instead of VALID")
    return Candidate("conv_same_padding", what, _conv(case, padding="same"))


def conv_kernel_hw_swapped(case: Case) -> Candidate | None:
    """kh and kw swapped (a wrong transpose when converting HWIO <-> OIHW)."""
    p = case.params
    if case.spec.kind == "conv":
        if p["kernel"].shape[0] == 1:
            return None
        return Candidate("kernel_hw_swapped", "kernel height and width swapped",
                         _conv(case, kernel=p["kernel"].transpose(1, 0, 2, 3)))
    return Candidate("kernel_hw_swapped", "depthwise kernel height and width swapped",
                     _conv(case, depthwise=p["depthwise_kernel"].transpose(1, 0, 2, 3)))


def conv_kernel_read_as_oihw(case: Case) -> Candidate:
    """The Keras HWIO kernel's memory read as PyTorch OIHW (a reshape where a transpose was needed)."""
    p = case.params
    name = "kernel" if case.spec.kind == "conv" else "pointwise_kernel"
    kh, kw, ci, co = p[name].shape
    k = np.ascontiguousarray(p[name]).reshape(co, ci, kh, kw).transpose(2, 3, 1, 0)
    what = "kernel" if name == "kernel" else "pointwise kernel"
    return Candidate("kernel_read_as_oihw", f"HWIO {what} read as OIHW (reshaped, not transposed)",
                     _conv(case, kernel=k))


def depthwise_channel_order(case: Case) -> Candidate | None:
    """The depthwise kernel's channels in reverse order (a flip along the wrong axis)."""
    if case.spec.kind != "sepconv":
        return None
    d = case.params["depthwise_kernel"]
    return Candidate("depthwise_channel_order", "depthwise kernel channels in reverse order",
                     _conv(case, depthwise=d[:, :, ::-1, :]))


def depthwise_reshaped_from_torch(case: Case) -> Candidate | None:
    """The depthwise kernel converted to or from PyTorch's ``(C, 1, kh, kw)`` with a reshape where a
    transpose was needed: Keras' ``(kh, kw, C, 1)`` memory read as ``(C, 1, kh, kw)``, then transposed."""
    if case.spec.kind != "sepconv":
        return None
    d = case.params["depthwise_kernel"]
    kh, kw, c, m = d.shape
    return Candidate("depthwise_reshaped", "depthwise kernel reshaped, not transposed, to PyTorch's (C, 1, kh, kw)",
                     _conv(case, depthwise=np.ascontiguousarray(d).reshape(c, m, kh, kw).transpose(2, 3, 0, 1)))


def conv_extra_bias(case: Case) -> Candidate | None:
    """A bias Keras does not have (Xception's convolutions use none): a per-channel offset."""
    if case.local.shape != case.theirs.shape:
        return None
    axes = tuple(range(case.local.ndim - 1))
    b = (case.theirs.astype(np.float64) - case.local).mean(axes)
    return Candidate("extra_bias", f"an extra bias (a per-channel offset, max |b| {np.abs(b).max():.3g})",
                     (case.local + b).astype(case.local.dtype), float(np.abs(b).max()))

