"""Running an ONNX file as the other side, with its intermediate tensors under our names.

An ONNX graph names tensors after whoever exported it:

* tf2onnx (from Keras) keeps Keras' layer names as scopes: ``block2_pool/MaxPool:0``;
* ``torch.onnx.export`` keeps module paths as scopes:
  ``/block1/rep/rep.5/MaxPool_output_0`` is module ``block1.rep.5``;
* a graph written by hand may name its tensors anything, our names included.

The last tensor produced inside a scope is that layer's output. Names go through
the user's or a known port's map (``names=``) first. ``layout="NCHW"`` (a plain
``torch.onnx.export``) feeds the input as NCHW and reads 4-D outputs back as NHWC;
without it each tensor's layout is detected from its shape (tf2onnx mixes both).
"""

from __future__ import annotations

import numpy as np

from .inputs import load_onnx

# The ONNX op that ends each of our layer kinds in a tf2onnx export. A scope's last
# node is only that layer's output when it is this op: tf2onnx folds BatchNorm into
# the convolution before it and leaves the pointwise half of a separable
# convolution unscoped ("Conv__434"), so "block2_sepconv1/.../depthwise" is the
# depthwise half only and must not be compared with our whole layer.
_KERAS_FINAL_OPS = {
    "conv": {"Conv"}, "sepconv": set(), "bn": {"BatchNormalization"}, "relu": {"Relu"},
    "maxpool": {"MaxPool"}, "add": {"Add", "Sum"}, "global_avg_pool": {"GlobalAveragePool", "ReduceMean"},
    "global_max_pool": {"GlobalMaxPool", "ReduceMax"}, "dense": {"Gemm", "MatMul", "Add"},
    "batch_norm": {"BatchNormalization"}, "activation": {"Softmax", "Relu", "Sigmoid", "Tanh"},
}


def keras_scopes(graph):
    """{scope name: (last output in that scope, its node's op type)}; nodes are topologically sorted."""
    last = {}
    for node in graph.node:
        for out in node.output:
            for part in out.replace(":", "/").split("/")[:-1]:  # the last part is the op, not a scope
                last[part] = (out, node.op_type)
    return last


def torch_module_paths(tensor: str) -> list[str]:
    """Every module path enclosing a ``torch.onnx.export`` tensor, outermost first.

    ``/block1/rep/rep.0/pointwise/Conv_output_0`` -> ``block1``, ``block1.rep``,
    ``block1.rep.0``, ``block1.rep.0.pointwise``: a child scope repeats its
    parent's name (``rep`` then ``rep.0``), so it extends the path by its own tail.
    """
    if not tensor.startswith("/"):
        return []
    parts = tensor.split("/")[1:-1]
    paths, path, prev = [], "", ""
    for part in parts:
        tail = part[len(prev) + 1:] if prev and part.startswith(prev + ".") else part
        path = f"{path}.{tail}" if path else tail
        paths.append(path)
        prev = part
    return paths


def _keras_scope_of(theirs: str, scopes: dict, keras_names: set, suffixed: bool) -> str | None:
    """The scope holding Keras layer ``theirs``: its name or, when ``suffixed`` (Keras 3 traced
    by tf.function names scopes "block1_conv1_act_1"), its name + "_1". A suffixed name that
    is also another layer's name ("add" + "_1" is "add_1") is ambiguous: TensorFlow
    de-duplicates such scopes further ("add_1_2"), so those layers are left out rather than
    risk comparing the wrong tensor."""
    if not suffixed:
        return theirs if theirs in scopes else None
    scope = f"{theirs}_1"
    return scope if scope in scopes and scope not in keras_names else None


def _keras_matches(model, graph) -> dict:
    scopes = keras_scopes(graph)
    src_names = model.source_layer_names or {}
    keras_names = set(src_names.values()) | set(model.layer_names)
    kinds = {layer.name: layer.kind for layer in model.layers} | {h["name"]: h["kind"] for h in model.head}
    theirs_names = [src_names.get(n, n) for n in model.layer_names]
    suffixed = sum(f"{n}_1" in scopes for n in theirs_names) > sum(n in scopes for n in theirs_names)
    wanted = {}
    for ours in model.layer_names:
        scope = _keras_scope_of(src_names.get(ours, ours), scopes, keras_names, suffixed)
        if scope is not None:
            tensor, op = scopes[scope]
            if op in _KERAS_FINAL_OPS[kinds[ours]]:
                wanted[ours] = tensor
    return wanted


def _named_matches(model, graph, mapping) -> dict:
    """Tensors named (or scoped, torch-style) by a mapped name or one of our names."""
    ours = set(model.layer_names)
    module_last = {}
    wanted = {}
    for node in graph.node:
        for out in node.output:
            target = mapping.get(out, out if out in ours else None)
            if target is not None:
                wanted[target] = out
            for path in torch_module_paths(out):
                module_last[path] = out
    for path, tensor in module_last.items():
        target = mapping.get(path)
        if target is not None and target not in wanted:
            wanted[target] = tensor
    if not any(node.op_type == "BatchNormalization" for node in graph.node):
        # BN was folded into the convolution before it (torch.onnx.export does in
        # eval mode): that convolution's tensor is the BN's output, not the conv's.
        bn_inputs = {layer.inputs[0] for layer in model.layers if layer.kind == "bn"}
        wanted = {k: v for k, v in wanted.items() if k not in bn_inputs}
    return wanted


def _dims(declared):
    return "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")"


def onnx_runner(model, path, layout, mapping):
    """A callable ``x (NHWC) -> {our name: activation}`` running the ONNX file at ``path``."""
    try:
        import onnx  # optional extra ('bench'): only an .onnx comparison needs it
        import onnxruntime as ort  # optional extra ('bench'), as onnx
    except ImportError:
        raise ImportError("comparing against an ONNX file needs onnx and onnxruntime "
                          "(pip install 'npxception[bench]')") from None
    proto = load_onnx(path)  # bounded, self-contained, CNN operators only: checked before onnxruntime sees it
    graph = proto.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one image input, found {len(inputs)}: {inputs}")
    final = graph.output[0].name  # before we add the intermediate outputs
    wanted = _keras_matches(model, graph) | _named_matches(model, graph, mapping)
    existing = {o.name for o in graph.output}
    for name in sorted(set(wanted.values()) - existing):
        graph.output.append(onnx.ValueInfoProto(name=name))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    dims = graph.input[[i.name for i in graph.input].index(inputs[0])].type.tensor_type.shape.dim
    declared = [d.dim_value if d.HasField("dim_value") else None for d in dims]

    nchw_input = len(declared) == 4 and declared[1] == 3 and declared[3] != 3

    def run(x, final_only=False):
        if nchw_input and layout != "NCHW":
            raise ValueError(f"{path}: its input is NCHW {_dims(declared)}; pass layout='NCHW' "
                             "(--layout NCHW) to feed it")
        feed = x.transpose(0, 3, 1, 2) if layout == "NCHW" else x
        fetch = [final] if final_only else [o.name for o in session.get_outputs()]
        try:
            outs = session.run(fetch, {inputs[0]: np.ascontiguousarray(feed, dtype=np.float32)})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ValueError(f"{path}: onnxruntime refused the {layout or 'NHWC'} input {feed.shape} "
                             f"(declared {_dims(declared)}): {str(exc).splitlines()[0]}; "
                             "a PyTorch export needs layout='NCHW'") from None
        by_name = dict(zip(fetch, outs))
        acts = {ours: by_name[n] for ours, n in wanted.items() if n in by_name}
        acts[model.layer_names[-1]] = by_name[final]
        return acts

    return run
