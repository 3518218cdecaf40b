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
from npxception import ops
from npxception.compare.names import timm_legacy_xception


def exporter_scope(module_path: str) -> str:
    """``block1.rep.0`` -> ``/block1/rep/rep.0``: the exporter names a numbered child after its parent."""
    parts, out = module_path.split("."), []
    for i, part in enumerate(parts):
        out.append(f"{parts[i - 1]}.{part}" if part.isdigit() and i else part)
    return "/" + "/".join(out)


def build(model, path, *, epsilon=1e-5, pool_pads=(1, 1, 1, 1), opset=17, fold_bn=False, fold_bias=True,
          bn=True, swap_hw=(), stem_pad=None, head="flatten", softmax=False, channel_order=None, drop_relu=(),
          kernel_bug=None, depthwise_bug=None, conv_pads=None):
    """Write the graph to ``path``; returns the final output's name. ``fold_bn``: as ``torch.onnx.export``
    in eval mode, each BN folded into the convolution before it (kernel * gamma / sqrt(var + eps) per
    output channel, plus a bias beta - mean * that), its weights named ``onnx::Conv_N``, no BN node.

    Bugs a port may carry: ``fold_bias=False`` a fold that drops the fused bias; ``bn=False`` no BN at
    all; ``swap_hw`` the convolutions whose kernel height and width are swapped; ``stem_pad`` PyTorch
    ``padding=`` of the stem's two VALID convolutions. ``head="view"``: ``F.adaptive_avg_pool2d(x, 1)``
    then ``x.view(x.size(0), -1)`` as the exporter writes it (Shape, Gather, Unsqueeze, Concat, Reshape:
    the pooled tensor is (N, C, 1, 1)). ``pool_pads="same"``: TF SAME per pool at the model's input size;
    ``softmax``: a Softmax after the classifier, as Keras'. The input takes the model's channels;
    ``channel_order``: a port that reads its image in another channel order (its stem kernel's input
    channels permuted so, as a port trained on BGR(A) images has them against our RGB(A)). ``head="none"``:
    timm's ``num_classes=0`` feature extractor, ``global_pool`` (pool, flatten) its output, no ``fc``.
    ``drop_relu``: ReLU layers (ours) the port leaves out. ``kernel_bug``: ``(layer, fn)``, that layer's
    kernel (HWIO; a separable convolution's pointwise one) passed through ``fn`` before it is written;
    ``depthwise_bug`` the same for a depthwise kernel ((kh, kw, C, 1)); ``conv_pads``: ``{conv layer:
    ONNX pads}`` replacing what that convolution pads (timm's residual 1x1 ``padding=`` bugs)."""
    module = {ours: theirs for theirs, ours in timm_legacy_xception().items()}
    w = model.weights
    nodes, inits = [], []
    bn_of = {layer.inputs[0]: layer.name for layer in arch.backbone() if layer.kind == "bn"}

    def const(name, array):
        dtype = np.int64 if np.asarray(array).dtype == np.int64 else np.float32  # shape operands stay int64
        inits.append(numpy_helper.from_array(np.array(array, dtype=dtype, order="C"), name))  # 0-d stays 0-d
        return name

    def folded(conv, kernel):
        """``(kernel, bias)`` with the BN after ``conv`` folded in (HWIO: output channels last)."""
        g, b, mean, var = (w[f"{bn_of[conv]}/{v}"].astype(np.float64)
                           for v in ("gamma", "beta", "moving_mean", "moving_variance"))
        s = g / np.sqrt(var + epsilon)
        return kernel * s, b - mean * s

    def node(op, inputs, scope, **attrs):
        out = f"{scope}/{op}_output_0"
        nodes.append(helper.make_node(op, inputs, [out], name=f"{scope}/{op}", **attrs))
        return out

    def conv(x, kernel, scope, stride, pads, group=1, fold=None):
        if fold is None:
            k, bias = const(f"{scope}.weight", kernel.transpose(3, 2, 0, 1)), []  # HWIO -> OIHW
        else:
            kernel, b = folded(fold, kernel)
            k = const(f"onnx::Conv_{len(inits)}", kernel.transpose(3, 2, 0, 1))
            bias = [const(f"onnx::Conv_{len(inits)}", b)] if fold_bias else []
        return node("Conv", [x, k, *bias], scope, strides=[stride, stride], pads=list(pads), group=group)

    acts = {"input": "x"}
    maps = {k: v[0] for k, v in arch.trace(list(arch.backbone()), [], model.input_shape).items()}
    for layer in arch.backbone():
        n, scope = layer.name, exporter_scope(module[layer.name])
        ins = [acts[i] for i in layer.inputs]
        fold = n if fold_bn else None
        if layer.kind == "conv":
            p = layer.kernel_size // 2 if layer.padding == "same" else 0
            p = p if stem_pad is None or n not in ("block1_conv1", "block1_conv2") else stem_pad
            kernel = w[f"{n}/kernel"].transpose(1, 0, 2, 3) if n in swap_hw else w[f"{n}/kernel"]
            kernel = kernel_bug[1](kernel) if kernel_bug and kernel_bug[0] == n else kernel
            if channel_order is not None and layer.inputs == ("input",):
                kernel = kernel[:, :, list(channel_order), :]
            pads = (conv_pads or {}).get(n, (p, p, p, p))
            y = conv(ins[0], kernel, scope, layer.strides, pads, fold=fold)
        elif layer.kind == "sepconv":
            dw = w[f"{n}/depthwise_kernel"]  # (3, 3, C, 1) -> a grouped conv, one group per channel
            dw = depthwise_bug[1](dw) if depthwise_bug and depthwise_bug[0] == n else dw
            d = conv(ins[0], dw.transpose(0, 1, 3, 2), scope + "/conv1", 1, (1, 1, 1, 1), group=dw.shape[2])
            pw = w[f"{n}/pointwise_kernel"]
            pw = kernel_bug[1](pw) if kernel_bug and kernel_bug[0] == n else pw
            y = conv(d, pw, scope + "/pointwise", 1, (0, 0, 0, 0), fold=fold)
        elif layer.kind == "bn" and (fold_bn or not bn):
            y = ins[0]  # already in the convolution before it
        elif layer.kind == "bn":
            args = [const(f"{scope}.{v}", w[f"{n}/{v}"]) for v in ("gamma", "beta", "moving_mean", "moving_variance")]
            y = node("BatchNormalization", [ins[0], *args], scope, epsilon=epsilon)
        elif layer.kind == "relu" and n in drop_relu:
            y = ins[0]
        elif layer.kind == "relu":
            y = node("Relu", ins, scope)
        elif layer.kind == "maxpool":
            pads = pool_pads
            if pool_pads == "same":  # ops.same_padding: the odd pixel bottom/right, as TF
                (t, b), (left, r) = (ops.same_padding(maps[layer.inputs[0]][i], 3, 2) for i in (0, 1))
                pads = (t, left, b, r)
            y = node("MaxPool", ins, scope, kernel_shape=[3, 3], strides=[2, 2], pads=list(pads))
        else:
            y = node("Add", ins, scope)
        acts[n] = y
    if head == "view":
        g = node("GlobalAveragePool", [acts["block14_sepconv2_act"]], "/global_pool")
        i0 = node("Gather", [node("Shape", [g], ""), const("/Constant_output_0", np.array(0, np.int64))], "", axis=0)
        if opset >= 13:
            i0 = node("Unsqueeze", [i0, const("/Constant_1_output_0", np.array([0], np.int64))], "")
        else:
            i0 = node("Unsqueeze", [i0], "", axes=[0])
        g = node("Reshape", [g, node("Concat", [i0, const("/Constant_2_output_0", np.array([-1], np.int64))], "",
                                     axis=0)], "")
    else:
        g = node("GlobalAveragePool", [acts["block14_sepconv2_act"]], "/global_pool/pool")
        g = node("Flatten", [g], "/global_pool/flatten", axis=1)
    if head == "none":
        out = g
    else:
        out = node("Gemm", [g, const("fc.weight", w["predictions/kernel"].T), const("fc.bias", w["predictions/bias"])],
                   "/fc", transB=1)
    if softmax:
        out = node("Softmax", [out], "/softmax", axis=1)
    graph = helper.make_graph(
        nodes, "legacy_xception",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", model.channels, None, None])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["N", w["predictions/bias"].shape[0]
                                                                 if head != "none" else 2048])], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(proto)
    onnx.save(proto, str(path))
    return out


def to_float16(src, dst, *, keep_io_types=False):
    """The graph at ``src`` in float16, written to ``dst``, as a float16 export leaves it: its weights
    float16 and, like ``model.half()``, its input and output float16; or, like onnxconverter-common's
    ``convert_float_to_float16(keep_io_types=True)``, float32 at the edges with a Cast after the input
    and before the output."""
    proto = onnx.load(str(src))
    g = proto.graph
    for i, t in enumerate(g.initializer):
        g.initializer[i].CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float16), t.name))
    x, y = g.input[0].name, g.output[0].name
    if keep_io_types:
        for n in g.node:
            n.input[:] = [f"{x}_fp16" if v == x else v for v in n.input]
            n.output[:] = [f"{y}_fp16" if v == y else v for v in n.output]
        nodes = [helper.make_node("Cast", [x], [f"{x}_fp16"], to=TensorProto.FLOAT16, name="graph_input_cast0"),
                 *g.node, helper.make_node("Cast", [f"{y}_fp16"], [y], to=TensorProto.FLOAT, name="graph_output_cast0")]
        del g.node[:]
        g.node.extend(nodes)
    else:
        g.input[0].type.tensor_type.elem_type = TensorProto.FLOAT16
        g.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dst))
    return dst


_FX_NAMES = {"Conv": "convolution", "BatchNormalization": "_native_batch_norm_legit_no_training", "Relu": "relu",
             "MaxPool": "max_pool2d", "Add": "add", "GlobalAveragePool": "mean", "Flatten": "view", "Gemm": "linear"}


def renamed(src, dst, *, style, wrapper=""):
    """The graph at ``src`` with its names as another exporter leaves them, written to ``dst``
    (``wrapper``: the port held in a module of that name, its module paths ``model.block1...``):

    * ``"dynamo"``: ``torch.onnx.export(dynamo=True)`` (torch >= 2.9's default): tensors named after FX
      nodes (``convolution_3``), nodes ``node_Conv_3``, the module path only in each node's
      ``metadata_props["pkg.torch.onnx.name_scopes"]``, ``"['', 'block1', 'block1.rep', ..., 'convolution_3']"``;
    * ``"numbered"``: torch < 1.13: tensors numbered, nodes ``Conv_3``, no module path anywhere.
    """
    from npxception.compare.onnx_side import torch_module_paths

    proto = onnx.load(str(src))
    g = proto.graph
    count, rename = {}, {}
    for i, n in enumerate(g.node):
        paths = [f"{wrapper}.{p}" if wrapper else p for p in torch_module_paths(n.output[0])]
        paths = [wrapper] * bool(wrapper) + paths
        base = _FX_NAMES[n.op_type]
        k = count[base] = count.get(base, -1) + 1
        new = (base if k == 0 else f"{base}_{k}") if style == "dynamo" else str(100 + i)
        rename[n.output[0]] = new
        n.name = f"node_{n.op_type}_{i}" if style == "dynamo" else f"{n.op_type}_{i}"
        if style == "dynamo":
            n.metadata_props.add(key="pkg.torch.onnx.name_scopes", value=str(["", *paths, new]))
    for n in g.node:
        n.input[:] = [rename.get(v, v) for v in n.input]
        n.output[:] = [rename.get(v, v) for v in n.output]
    g.output[0].name = rename[g.output[0].name]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dst))
    return dst


_TFLITE_OPS = {"Relu": "Relu", "MaxPool": "MaxPool2d", "Add": "Add", "GlobalAveragePool": "Mean"}


def tflite_named(src, dst, scope="model"):
    """The BN-folded graph at ``src`` (``build(fold_bn=True)``) named as ``tf2onnx --tflite`` names a
    TFLite model converted from Keras (3, traced: scopes ``block1_conv1_1``), written to ``dst``: a fused
    op's tensor is named after every op fused into it, joined by ``;``, the op whose output it is first.
    A convolution read by its ReLU alone carries that ReLU first
    (``model/block1_conv1_act_1/Relu;model/block1_conv1_bn_1/batchnorm/add_1;model/block1_conv1_1/convolution;
    model/block1_conv1_bn_1/batchnorm/sub1``), though tf2onnx splits the activation off into a Relu node of
    its own (``Relu__7:0``): the tensor is the BN's output. The other layers are ``model/block2_pool_1/MaxPool2d``,
    ``model/block2_add_1/Add``, ``model/block3_sepconv1_act_1/Relu``; a separable convolution's depthwise
    half ``model/block2_sepconv1_1/separable_conv2d/depthwise1``."""
    from npxception.compare.onnx_side import torch_module_paths

    ours = timm_legacy_xception()
    bn_of = {layer.inputs[0]: layer.name for layer in arch.backbone() if layer.kind == "bn"}
    proto = onnx.load(str(src))
    g = proto.graph
    readers = {}
    for n in g.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    rename = {}
    for i, n in enumerate(g.node):
        out = n.output[0]
        paths = torch_module_paths(out)
        layer = next((ours[p] for p in reversed(paths) if p in ours), None)
        if layer is None or out in rename:
            continue
        if n.op_type == "Conv" and paths[-1].endswith(".conv1"):
            rename[out] = f"{scope}/{layer}_1/separable_conv2d/depthwise1"
        elif n.op_type == "Conv":
            bn, op = bn_of[layer], "separable_conv2d" if "sepconv" in layer else "convolution"
            name = f"{scope}/{bn}_1/batchnorm/add_1;{scope}/{layer}_1/{op};{scope}/{bn}_1/batchnorm/sub1"
            after = readers.get(out, [])
            if len(after) == 1 and after[0].op_type == "Relu":  # the activation TFLite fuses into the convolution
                act = next(ours[p] for p in reversed(torch_module_paths(after[0].output[0])) if p in ours)
                name = f"{scope}/{act}_1/Relu;{name}"
                rename[after[0].output[0]] = f"Relu__{i + 1}:0"
            rename[out] = name
        elif n.op_type in _TFLITE_OPS:
            rename[out] = f"{scope}/{layer}_1/{_TFLITE_OPS[n.op_type]}"
    for n in g.node:
        n.input[:] = [rename.get(v, v) for v in n.input]
        n.output[:] = [rename.get(v, v) for v in n.output]
    onnx.checker.check_model(proto)
    onnx.save(proto, str(dst))
    return dst
