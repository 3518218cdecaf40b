"""Their convolutions' weights and padding, read from an ONNX graph, against ours.

A port map pairs their convolution's tensor with our layer (``block7.rep.4`` is our
``block8_sepconv2``), and the graph holds that convolution's initializers: so where a layer
differs, compare can read *why* from the weights themselves instead of guessing from the
activations. :func:`read` collects, for each of our conv / separable conv layers, their kernel
(and depthwise kernel), bias, pads and strides; :func:`differences` says in words how they
differ from ours (output channels permuted, taps of a depthwise kernel that differ, the pixel
phase a strided 1x1 convolution samples); :mod:`.hypotheses.their_weights` runs our layer with
them, so a cause is named only when their weights reproduce their output.

A BN folded into the convolution (``torch.onnx.export`` in eval mode, :mod:`.folded_bn`) scales
each output channel: the kernel is then compared up to one number per output channel.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..ops import same_padding
from .folded_bn import is_folded


@dataclass
class TheirConv:
    """One convolution of theirs, in our layouts. Its arrays are read from the graph's initializers when
    first asked for (a source's diagnosis): a compare with no source copies no weight."""

    layer: str  # our conv / sepconv layer
    names: tuple  # their initializers: (kernel,) or (depthwise, pointwise)
    protos: tuple  # (kernel OIHW, depthwise (C, 1, kh, kw) or None, bias or None): onnx TensorProtos
    pads: tuple  # (top, left, bottom, right), as the node states them
    folded: bool  # a BN folded into it: the kernel is ours up to a per-output-channel scale

    @functools.cached_property
    def kernel(self) -> np.ndarray:
        """HWIO (a separable convolution's pointwise half: (1, 1, C, O))."""
        return _array(self.protos[0]).transpose(2, 3, 1, 0)

    @functools.cached_property
    def depthwise(self) -> np.ndarray | None:
        """(kh, kw, C, 1), for a separable convolution."""
        return None if self.protos[1] is None else _array(self.protos[1]).transpose(2, 3, 0, 1)

    @functools.cached_property
    def bias(self) -> np.ndarray | None:
        return None if self.protos[2] is None else _array(self.protos[2])

    def run(self, x, ops_module, strides):
        """This convolution on NHWC ``x``, with their pads."""
        t, left, b, r = self.pads
        xp = np.pad(x, ((0, 0), (t, b), (left, r), (0, 0)))
        if self.depthwise is None:
            y = ops_module.conv2d(xp, self.kernel.astype(x.dtype), strides=strides, padding="valid")
        else:
            y = ops_module.separable_conv2d(xp, self.depthwise.astype(x.dtype), self.kernel.astype(x.dtype),
                                            strides=strides, padding="valid")
        return y if self.bias is None else y + self.bias.astype(y.dtype)


def _array(proto) -> np.ndarray:
    from onnx import numpy_helper  # optional extra ('bench'), present whenever a graph is read

    return numpy_helper.to_array(proto)


def _attr(node, name, default):
    for a in node.attribute:
        if a.name == name:
            from onnx import helper  # optional extra ('bench'), present whenever a graph is read

            return helper.get_attribute_value(a)
    return default


def _plain(node, strides) -> bool:
    """A Conv whose pads are explicit (no auto_pad) and undilated, at ``strides``."""
    auto = _attr(node, "auto_pad", b"NOTSET")
    return (auto in (b"NOTSET", "NOTSET") and list(_attr(node, "dilations", [1, 1])) == [1, 1]
            and list(_attr(node, "strides", [1, 1])) == list(strides))


def read(model, graph, named: dict) -> dict:
    """``{our conv layer: TheirConv}`` for each conv / sepconv layer whose tensor ``named`` pairs with a
    Conv of theirs that has its weights as initializers, in our layer's shapes (others are not read)."""
    inits = {t.name: t for t in graph.initializer}
    producer = {out: node for node in graph.node for out in node.output}
    bn_of = {layer.inputs[0]: layer.name for layer in model.layers if layer.kind == "bn"}
    folded = is_folded(graph)
    shapes = model._shapes()  # from the table: no kernel of ours is unpacked to read a shape

    def oihw(key):
        h, w_, i, o = shapes[key]
        return (o, i, h, w_)

    def init(node, i):
        """The initializer feeding input ``i`` of ``node`` (its shape is ``.dims``), or None."""
        return inits.get(node.input[i]) if len(node.input) > i else None

    def shape(proto):
        return tuple(proto.dims)

    out = {}
    for layer in model.layers:
        if layer.kind not in ("conv", "sepconv"):
            continue
        via_bn = folded and bn_of.get(layer.name) in named and layer.name not in named
        node = producer.get(named.get(bn_of.get(layer.name)) if via_bn else named.get(layer.name))
        if node is None or node.op_type != "Conv" or (k := init(node, 1)) is None:
            continue
        bias = init(node, 2)
        if layer.kind == "conv":
            if not _plain(node, [layer.strides] * 2) or shape(k) != oihw(f"{layer.name}/kernel"):
                continue
            pads, names, d = tuple(_attr(node, "pads", [0, 0, 0, 0])), (node.input[1],), None
        else:
            kh, kw, c, _ = shapes[f"{layer.name}/depthwise_kernel"]
            dnode = producer.get(node.input[0])
            if (dnode is None or dnode.op_type != "Conv" or (d := init(dnode, 1)) is None or init(dnode, 2) is not None
                    or _attr(dnode, "group", 1) != c or not _plain(dnode, [layer.strides] * 2)
                    or not _plain(node, [1, 1]) or any(_attr(node, "pads", [0, 0, 0, 0]))
                    or shape(d) != (c, 1, kh, kw) or shape(k) != oihw(f"{layer.name}/pointwise_kernel")):
                continue
            pads, names = tuple(_attr(dnode, "pads", [0, 0, 0, 0])), (dnode.input[1], node.input[1])
        if len(pads) != 4 or (bias is not None and shape(bias) != (shape(k)[0],)):
            continue
        out[layer.name] = TheirConv(layer.name, names, (k, d, bias), (pads[0], pads[1], pads[2], pads[3]), via_bn)
    return out


# float32 storage of the same weights: a copy is exact, a fold's product rounds at 2^-24 of each weight
_SAME = 1e-5


def _kernel_words(theirs: np.ndarray, ours: np.ndarray, scaled: bool) -> str:
    """How their kernel (HWIO) differs from ours, in words; "" when it does not (up to a per-output-channel
    scale when ``scaled``)."""
    o = ours.reshape(-1, ours.shape[-1]).T.astype(np.float64)  # (out, everything else)
    f = theirs.reshape(-1, theirs.shape[-1]).T.astype(np.float64)
    if scaled:
        den = (o * o).sum(1)
        s = np.divide((f * o).sum(1), den, out=np.zeros_like(den), where=den > 0)
        same = np.abs(f - s[:, None] * o).max() <= _SAME * np.abs(f).max()
    else:
        same = np.abs(f - o).max() <= _SAME * np.abs(o).max()
    if same:
        return ""
    on = o / np.maximum(np.linalg.norm(o, axis=1, keepdims=True), 1e-30)
    fn = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-30)
    cos = fn @ on.T
    match = np.abs(cos).argmax(1)
    best = np.abs(cos[np.arange(len(match)), match])
    moved = np.flatnonzero(match != np.arange(len(match)))
    if (best >= 1 - _SAME).all() and len(set(match.tolist())) == len(match) and len(moved):
        pairs = ", ".join(f"their {i} is our {match[i]}" for i in moved[:4])
        more = f" and {len(moved) - 4} more" if len(moved) > 4 else ""
        return f"output channels permuted ({pairs}{more})"
    bad = np.flatnonzero(np.abs(f - (s[:, None] * o if scaled else o)).max(1) > _SAME * np.abs(f).max())
    shown = ", ".join(str(i) for i in bad[:6]) + (f" and {len(bad) - 6} more" if len(bad) > 6 else "")
    return f"{len(bad)} output channel(s) differ ({shown}), by no permutation of ours"


def _tap_words(theirs: np.ndarray, ours: np.ndarray) -> str:
    """How their depthwise kernel (kh, kw, C, 1) differs from ours, tap by tap; "" when it does not."""
    t, o = theirs[..., 0].astype(np.float64), ours[..., 0].astype(np.float64)
    diff = np.abs(t - o) > _SAME * np.abs(o).max()
    if not diff.any():
        return ""
    channels = np.flatnonzero(diff.any((0, 1)))
    words = []
    for c in channels[:3]:
        taps = [tuple(int(v) for v in p) for p in np.argwhere(diff[:, :, c])]
        if len(taps) == 2 and np.isclose(t[taps[0] + (c,)], o[taps[1] + (c,)]) and np.isclose(
                t[taps[1] + (c,)], o[taps[0] + (c,)]):
            words.append(f"taps {taps[0]} and {taps[1]} swapped in channel {c}")
        else:
            words.append(f"taps {', '.join(map(str, taps[:4]))}{' ...' if len(taps) > 4 else ''} in channel {c}")
    more = f" and {len(channels) - 3} more channel(s)" if len(channels) > 3 else ""
    return "differs at " + "; ".join(words) + more


def pad_words(conv: TheirConv, spec, x_shape) -> str:
    """How their pads differ from what our layer pads on an ``x_shape`` input (TF SAME or VALID); ""
    when they do not."""
    k = spec.kernel_size
    if spec.padding == "same":
        (t, b), (left, r) = (same_padding(x_shape[i], k, spec.strides) for i in (1, 2))
    else:
        t = b = left = r = 0
    ct, cl, cb, cr = conv.pads
    if (ct, cl, cb, cr) == (t, left, b, r):
        return ""
    words = (f"their convolution pads {ct}/{cb} top/bottom and {cl}/{cr} left/right where ours pads "
             f"{t}/{b} and {left}/{r} on the {x_shape[1]}x{x_shape[2]} map")
    if spec.strides > 1 and ((ct - t) % spec.strides or (cl - left) % spec.strides):
        words += ": it samples the other pixel phase (every window shifted by one)"
    return words


def differences(conv: TheirConv, model, spec, x_shape) -> str:
    """Everything in which their convolution differs from our ``spec`` layer, in words; "" for nothing."""
    w = model._params
    parts = []
    if conv.depthwise is not None:
        if words := _tap_words(conv.depthwise, w[f"{conv.layer}/depthwise_kernel"]):
            parts.append(f"their {conv.names[0]} {words} of our {conv.layer} depthwise kernel")
        ours = w[f"{conv.layer}/pointwise_kernel"]
    else:
        ours = w[f"{conv.layer}/kernel"]
    if words := _kernel_words(conv.kernel, ours, conv.folded):
        scaled = " (up to the per-channel scale of the BN folded into it)" if conv.folded else ""
        parts.append(f"their {conv.names[-1]} differs from our {conv.layer} kernel{scaled}: {words}")
    if words := pad_words(conv, spec, x_shape):
        parts.append(words)
    return "; ".join(parts)
