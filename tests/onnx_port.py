"""An NCHW ONNX graph of a PyTorch-convention Xception, written with onnx.helper.

It stands in for ``torch.onnx.export`` of timm's ``legacy_xception``: NCHW
input, OIHW kernels, BatchNormalization nodes with PyTorch's epsilon,
``MaxPool2d(3, 2, padding=1)`` (symmetric pads), logits out, and tensors named
the way the exporter names them, after module scopes
(``/block1/rep/rep.0/pointwise/Conv_output_0``). Module paths come from
npxception.compare.names' timm map; the layer sequence from the architecture table.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from npxception import architecture as arch
from npxception.compare.names import timm_legacy_xception


def exporter_scope(module_path: str) -> str:
    """``block1.rep.0`` -> ``/block1/rep/rep.0``: the exporter names a numbered child after its parent."""
    parts, out = module_path.split("."), []
    for i, part in enumerate(parts):
        out.append(f"{parts[i - 1]}.{part}" if part.isdigit() and i else part)
    return "/" + "/".join(out)


def build(model, path, *, epsilon=1e-5, pool_pads=(1, 1, 1, 1), opset=17):
    """Write the graph to ``path``; returns the final output's name."""
    module = {ours: theirs for theirs, ours in timm_legacy_xception().items()}
    w = model.weights
    nodes, inits = [], []

    def const(name, array):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(op, inputs, scope, **attrs):
        out = f"{scope}/{op}_output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{scope}/{op}", **attrs))
        return out

    def conv(x, kernel, scope, stride, pads, group=1):
        k = const(f"{scope}.weight", kernel.transpose(3, 2, 0, 1))  # HWIO -> OIHW
        return node("Conv", [x, k], scope, strides=[stride, stride], pads=list(pads), group=group)

    acts = {"input": "x"}
    for layer in arch.backbone():
        n, scope = layer.name, exporter_scope(module[layer.name])
        ins = [acts[i] for i in layer.inputs]
        if layer.kind == "conv":
            p = layer.kernel_size // 2 if layer.padding == "same" else 0
            y = conv(ins[0], w[f"{n}/kernel"], scope, layer.strides, (p, p, p, p))
        elif layer.kind == "sepconv":
            dw = w[f"{n}/depthwise_kernel"]  # (3, 3, C, 1) -> a grouped conv, one group per channel
            d = conv(ins[0], dw.transpose(0, 1, 3, 2), scope + "/conv1", 1, (1, 1, 1, 1), group=dw.shape[2])
            y = conv(d, w[f"{n}/pointwise_kernel"], scope + "/pointwise", 1, (0, 0, 0, 0))
        elif layer.kind == "bn":
            args = [const(f"{scope}.{v}", w[f"{n}/{v}"]) for v in ("gamma", "beta", "moving_mean", "moving_variance")]
            y = node("BatchNormalization", [ins[0], *args], scope, epsilon=epsilon)
        elif layer.kind == "relu":
            y = node("Relu", ins, scope)
        elif layer.kind == "maxpool":
            y = node("MaxPool", ins, scope, kernel_shape=[3, 3], strides=[2, 2], pads=list(pool_pads))
        else:
            y = node("Add", ins, scope)
        acts[n] = y
    g = node("GlobalAveragePool", [acts["block14_sepconv2_act"]], "/global_pool/pool")
    g = node("Flatten", [g], "/global_pool/flatten", axis=1)
    out = node("Gemm", [g, const("fc.weight", w["predictions/kernel"].T), const("fc.bias", w["predictions/bias"])],
               "/fc", transB=1)
    graph = helper.make_graph(
        nodes, "legacy_xception", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, None, None])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", w["predictions/bias"].shape[0]])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return out
