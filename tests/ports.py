"""Foreign Xception ports built without torch: our ops with another framework's conventions.

``run_port(model, x, conventions)`` walks the architecture table of
``conventions.variant`` and runs every layer with *our ops* (the same weights
as ``model``) but the port's choices: a BN epsilon, a pooling padding rule,
an input channel order and preprocessing, a kernel layout mistake, logits
instead of probabilities. It returns ``{layer name: activation}``, as a dump of
that port would. Each convention is independent, so a test can plant exactly
the causes it wants and check that compare names those and nothing else.

This deliberately does not call ``model.run_layer`` or ``model.forward``: the
port has its own dispatch, as another implementation would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from npxception import architecture as arch
from npxception import ops
from npxception.compare.hypotheses import CAFFE_MEAN_BGR


@dataclass(frozen=True)
class Conventions:
    bn_epsilon: float = 1e-3  # PyTorch's BatchNorm2d default is 1e-5
    # "tf" (SAME, odd pixel bottom/right), "symmetric" (PyTorch padding=1), "zero" (SAME's pads filled with 0),
    # "symmetric_zero" (TF-Slim / DeepLab fixed_padding: tf.pad zeros 1/1, then a VALID pool)
    pool_padding: str = "tf"
    channels: str = "rgb"  # "bgr": the port reverses the channels of what it is given
    # the port preprocesses the raw image its own way: "caffe" (Keras'), "unit" (x/255), "raw" (none: 0..255)
    preprocessing: str = "tf"
    oihw_reshaped: frozenset = frozenset()  # conv layers whose HWIO kernel the port reshaped as OIHW
    hw_swapped: frozenset = frozenset()  # conv layers whose kernel the port transposed kh <-> kw
    # sepconv layers whose depthwise kernel went (kh, kw, C, 1) -> PyTorch's (C, 1, kh, kw) by a reshape
    depthwise_reshaped: frozenset = frozenset()
    global_pool: str = "avg"  # "max": the port's global pooling takes the max
    logits: bool = False  # the port's classifier has no softmax
    # "torch_view": a Flatten head as a PyTorch port writes it, x.view(N, -1) on NCHW, the Dense after it as
    # Keras' (transposed to (out, in)); "torch_view_rows": the same, with that Dense's rows reordered to match
    flatten: str = "keras"
    variant: str = "keras"  # "article": the article's four departures
    relu_after_add: bool = False  # a ReLU after every residual add, its value fed on to the add's readers
    # each BN folded into the convolution before it, the fused weights stored as TFLite's quantization leaves
    # them: "float16" (supported_types=[tf.float16]) or "int8" (per output channel, symmetric: 2^-8 of the
    # range, as dynamic-range quantization stores them); the convolution's key then holds the BN's output
    fused_weights: str = ""
    extra: dict = field(default_factory=dict)


PYTORCH = Conventions(bn_epsilon=1e-5, pool_padding="symmetric")


# The model and input the compare tests port (tests/test_compare_explain.py and
# tests/test_onnx_exports.py share them, each building them once per module).
PORT_SIZE = 75


def port_model():
    import npxception  # the package's top level; this module needs only its ops

    return npxception.Xception(input_shape=(PORT_SIZE, PORT_SIZE, 3), classes=10, seed=3)


def port_input() -> np.ndarray:
    return np.random.default_rng(1).uniform(-1, 1, (1, PORT_SIZE, PORT_SIZE, 3)).astype(np.float32)


def _pool(x, layer, rule):
    k, s = layer.kernel_size, layer.strides
    if rule == "symmetric":  # torch.nn.MaxPool2d(3, 2, padding=1)
        p = k // 2
        xp = np.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), constant_values=-np.inf)
        return ops.max_pool2d(xp, pool_size=k, strides=s, padding="valid")
    if rule == "symmetric_zero":  # TF-Slim's fixed_padding: tf.pad(x, 1/1) with zeros, then VALID
        xp = np.pad(x, ((0, 0), (k // 2, k // 2), (k // 2, k // 2), (0, 0)), constant_values=0.0)
        return ops.max_pool2d(xp, pool_size=k, strides=s, padding="valid")
    if rule == "zero":
        (t, b), (l, r) = (ops.same_padding(x.shape[i], k, s) for i in (1, 2))
        xp = np.pad(x, ((0, 0), (t, b), (l, r), (0, 0)), constant_values=0.0)
        return ops.max_pool2d(xp, pool_size=k, strides=s, padding="valid")
    return ops.max_pool2d(x, pool_size=k, strides=s, padding=layer.padding)


def _kernel(name, k, c: Conventions):
    if name in c.oihw_reshaped:  # torch_weight = keras_kernel.reshape(O, I, H, W): the classic slip
        kh, kw, ci, co = k.shape
        return np.ascontiguousarray(k).reshape(co, ci, kh, kw).transpose(2, 3, 1, 0)
    if name in c.hw_swapped:  # transpose(3, 2, 1, 0) instead of (3, 2, 0, 1)
        return k.transpose(1, 0, 2, 3)
    return k


def _stored(w, how):
    """Fused weights as the port stores them: float16, or int8 per output channel (the last axis)."""
    if how == "float16":
        return w.astype(np.float16).astype(np.float64)
    scale = np.abs(w).reshape(-1, w.shape[-1]).max(0) / 127
    return np.round(w / np.where(scale > 0, scale, 1)) * scale


def _fused(layer, ins, p, bn, c: Conventions):
    """The convolution with ``bn`` folded in, its fused weights stored as ``c.fused_weights`` says."""
    n = layer.name
    s = p[f"{bn}/gamma"].astype(np.float64) / np.sqrt(p[f"{bn}/moving_variance"].astype(np.float64) + c.bn_epsilon)
    bias = _stored(p[f"{bn}/beta"] - p[f"{bn}/moving_mean"] * s, c.fused_weights) if c.fused_weights == "float16" \
        else p[f"{bn}/beta"] - p[f"{bn}/moving_mean"] * s  # int8 quantization keeps the bias in float32
    if layer.kind == "conv":
        y = ops.conv2d(ins[0], _stored(p[f"{n}/kernel"] * s, c.fused_weights).astype(ins[0].dtype),
                       strides=layer.strides, padding=layer.padding)
    else:
        d = p[f"{n}/depthwise_kernel"]
        d = _stored(d, "float16") if c.fused_weights == "float16" else _stored(d[..., 0], "int8")[..., None]
        y = ops.separable_conv2d(ins[0], d.astype(ins[0].dtype),
                                 _stored(p[f"{n}/pointwise_kernel"] * s, c.fused_weights).astype(ins[0].dtype),
                                 strides=layer.strides, padding=layer.padding)
    return (y + bias).astype(ins[0].dtype)


def run_port(model, x, c: Conventions = Conventions()) -> dict:
    """Every activation of the port on ``x`` (our tf-preprocessed batch), keyed by its layer name."""
    p = model.weights
    x = np.asarray(x, dtype=model.dtype)
    raw = (x.astype(np.float64) + 1.0) * 127.5  # the port gets the same image and preprocesses it its way
    if c.preprocessing == "caffe":
        x = (raw[..., ::-1] - np.array(CAFFE_MEAN_BGR)).astype(model.dtype)
    elif c.preprocessing in ("unit", "raw"):
        x = (raw / 255.0 if c.preprocessing == "unit" else raw).astype(model.dtype)
    if c.channels == "bgr":
        x = np.ascontiguousarray(x[..., ::-1])
    acts = {"input": x}
    bn_of = {layer.inputs[0]: layer.name for layer in arch.backbone(c.variant) if layer.kind == "bn"}
    for layer in arch.backbone(c.variant):
        n, ins = layer.name, [acts[i] for i in layer.inputs]
        if c.fused_weights and n in bn_of:
            y = _fused(layer, ins, p, bn_of[n], c)
        elif c.fused_weights and layer.kind == "bn":
            y = ins[0]  # folded into the convolution before it
        elif layer.kind == "conv":
            y = ops.conv2d(ins[0], _kernel(n, p[f"{n}/kernel"], c), strides=layer.strides, padding=layer.padding)
        elif layer.kind == "sepconv":
            d = p[f"{n}/depthwise_kernel"]
            if n in c.depthwise_reshaped:  # torch_weight = keras_kernel.reshape(C, 1, kh, kw), read back by layout
                d = np.ascontiguousarray(d).reshape(d.shape[2], 1, *d.shape[:2]).transpose(2, 3, 0, 1)
            y = ops.separable_conv2d(ins[0], d, _kernel(n, p[f"{n}/pointwise_kernel"], c),
                                     strides=layer.strides, padding=layer.padding)
        elif layer.kind == "bn":
            y = ops.batch_norm(ins[0], p[f"{n}/gamma"], p[f"{n}/beta"], p[f"{n}/moving_mean"],
                               p[f"{n}/moving_variance"], epsilon=c.bn_epsilon)
        elif layer.kind == "relu":
            y = ops.relu(ins[0])
        elif layer.kind == "maxpool":
            y = _pool(ins[0], layer, c.pool_padding)
        else:
            y = ops.add(ins[0], ins[1])
            y = ops.relu(y) if c.relu_after_add else y
        acts[n] = y
    y = acts[arch.backbone(c.variant)[-1].name]
    after_flatten = False
    for h in model.head:
        n = h["name"]
        if h["kind"] == "global_avg_pool":
            y = y.max((1, 2)) if c.global_pool == "max" else ops.global_avg_pool2d(y)
        elif h["kind"] == "flatten":
            assert h["order"] == "hwc", h["order"]
            if c.flatten.startswith("torch_view"):  # the port's map is NCHW: x.view(N, -1) reads it (C, H, W)
                y = np.ascontiguousarray(y.transpose(0, 3, 1, 2)).reshape(len(y), -1)
            else:  # Keras' Flatten: the NHWC map as it lies in memory, (H, W, C)
                y = y.reshape(len(y), -1)
            after_flatten = True
        elif h["kind"] == "dense":
            kernel = p[f"{n}/kernel"]
            if after_flatten and c.flatten == "torch_view_rows":  # rows (H, W, C) -> (C, H, W), as the features
                mh, mw, mc = h_map = next(s["map_shape"] for s in model.head if s["kind"] == "flatten")
                kernel = kernel.reshape(*h_map, -1).transpose(2, 0, 1, 3).reshape(mh * mw * mc, -1)
            after_flatten = False
            y = ops.dense(y, kernel, p.get(f"{n}/bias"))
            if h.get("activation") == "softmax" and not c.logits:
                y = ops.softmax(y)
            elif h.get("activation") == "relu":
                y = ops.relu(y)
            else:
                assert h.get("activation") in (None, "linear", "softmax"), h.get("activation")
        else:  # pragma: no cover - the test models use Keras' own heads
            raise AssertionError(h["kind"])
        acts[n] = y
    del acts["input"]
    return acts
