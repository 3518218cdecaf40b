"""Running an ONNX file as the other side, with its intermediate tensors under our names.

An ONNX graph names tensors after whoever exported it:

* tf2onnx (from Keras) keeps Keras' layer names as scopes: ``block2_pool/MaxPool:0``;
* ``torch.onnx.export`` keeps module paths as scopes:
  ``/block1/rep/rep.5/MaxPool_output_0`` is module ``block1.rep.5`` (and so is
  the node's name, ``/block1/rep/rep.5/MaxPool``, when the tensor's is a number);
* its ``dynamo=True`` exporter names tensors after FX nodes (``convolution_3``)
  and keeps the module path in each node's ``metadata_props``
  (``pkg.torch.onnx.name_scopes``: ``"['', 'block1', 'block1.rep', ..., 'convolution_3']"``);
* a graph written by hand may name its tensors anything, our names included.

A module path that wraps every other (``model`` of ``/model/block1/...``, a port
held inside a wrapper module) is stripped when that makes the names match.

The last tensor produced inside a scope is that layer's output. Names go through
the user's or a known port's map (``names=``) first. ``layout="NCHW"`` (a plain
``torch.onnx.export``) feeds the input as NCHW and reads 4-D outputs back as NHWC;
without it each tensor's layout is detected from its shape (tf2onnx mixes both).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from . import folded_bn, onnx_work, their_convs
from .inputs import MAX_SCOPE_DEPTH, NAME_SCOPES, input_layout, load_onnx, name_scopes
from .names import KNOWN_PORTS
from ..untrusted import short_repr
from .report import UNKNOWN

# The ONNX op that ends each of our layer kinds in a tf2onnx export. A scope's last
# node is only that layer's output when it is this op: tf2onnx folds BatchNorm into
# the convolution before it and leaves the pointwise half of a separable
# convolution unscoped ("Conv__434"), so "block2_sepconv1/.../depthwise" is the
# depthwise half only and must not be compared with our whole layer.
_KERAS_FINAL_OPS = {
    "conv": {"Conv"}, "sepconv": set(), "bn": {"BatchNormalization"}, "relu": {"Relu"},
    "maxpool": {"MaxPool"}, "add": {"Add", "Sum"}, "global_avg_pool": {"GlobalAveragePool", "ReduceMean"},
    "global_max_pool": {"GlobalMaxPool", "ReduceMax"}, "flatten": {"Reshape", "Flatten"},
    "dense": {"Gemm", "MatMul", "Add"},
    "batch_norm": {"BatchNormalization"}, "activation": {"Softmax", "Relu", "Sigmoid", "Tanh"},
}


def _scopes(name: str) -> list[str]:
    """The scopes of a TensorFlow-named tensor or node: ``model/add_1/add:0`` -> ``[model, add_1]``.

    The op's own name, the last part before the output index ``:N``, is not a scope: tf_keras names
    each Add layer's op ``add``, which as a scope would be every Add layer's, and the last of them
    (``add_11``, block13's) was taken for Keras' first, auto-named ``add`` (block2_add), in tf2onnx's
    export of a tf_keras Xception (measured, tf2onnx 1.17; docs/security.md, the names of real exports).
    """
    base, colon, index = name.rpartition(":")
    if colon and index.isdigit():
        name = base
    return name.replace(":", "/").split("/")[:-1]


_LAYER_OPS = set().union(*_KERAS_FINAL_OPS.values())


def keras_scopes(graph):
    """{scope name: (last output in that scope, its node's op type)}; nodes are topologically sorted.
    A TFLite fused op's ``;``-joined name is not one scope's: :func:`_tflite_matches` reads those."""
    last = {}
    for node in graph.node:
        for out in node.output:
            if ";" not in out:
                for part in _scopes(out):
                    last[part] = (out, node.op_type)
    return last


def fused_segments(graph) -> dict:
    """{``;``-joined tensor name: (its node, [the scopes of each segment])}: a TFLite model converted by
    ``tf2onnx --tflite`` names a fused op's tensor after every op fused into it, the op whose output it
    is first (``.../block1_conv1_act_1/Relu;.../block1_conv1_bn_1/batchnorm/add_1;.../block1_conv1_1/
    convolution;...``)."""
    return {out: (node, [_scopes(seg) for seg in out.split(";")])
            for node in graph.node for out in node.output if ";" in out}


def torch_module_paths(tensor: str) -> list[str]:
    """Every module path enclosing a ``torch.onnx.export`` tensor, outermost first.

    ``/block1/rep/rep.0/pointwise/Conv_output_0`` -> ``block1``, ``block1.rep``,
    ``block1.rep.0``, ``block1.rep.0.pointwise``: a child scope repeats its
    parent's name (``rep`` then ``rep.0``), so it extends the path by its own tail.

    Costs the name's depth x length: ``load_onnx`` refused names deeper or longer than
    ``inputs.MAX_SCOPE_DEPTH`` and ``inputs.MAX_SCOPED_NAME``.
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


def _keras_matches(model, graph, refused: list | None = None) -> dict:
    """{our name: their tensor} by Keras scopes; ``refused`` collects the TFLite fused tensors
    (:func:`_tflite_matches`) that could not be told to be one of our layers."""
    scopes = keras_scopes(graph)
    fused = fused_segments(graph)
    all_scopes = set(scopes) | {p for _, segs in fused.values() for seg in segs for p in seg}
    src_names = model.source_layer_names or {}
    keras_names = set(src_names.values()) | set(model.layer_names)
    kinds = {layer.name: layer.kind for layer in model.layers} | {h["name"]: h["kind"] for h in model.head}
    theirs_names = [src_names.get(n, n) for n in model.layer_names]
    suffixed = sum(f"{n}_1" in all_scopes for n in theirs_names) > sum(n in all_scopes for n in theirs_names)
    wanted, layer_of = {}, {}
    for ours in model.layer_names:
        scope = _keras_scope_of(src_names.get(ours, ours), all_scopes, keras_names, suffixed)
        if scope is not None:
            layer_of[scope] = ours
        if scope in scopes:
            tensor, op = scopes[scope]
            if op in _KERAS_FINAL_OPS[kinds[ours]]:
                wanted[ours] = tensor
    found, not_ours = _tflite_matches(model, graph, fused, layer_of, kinds)
    if refused is not None:
        refused.extend(not_ours)
    return wanted | found


def _tflite_matches(model, graph, fused, layer_of, kinds) -> tuple[dict, list]:
    """``({our name: their tensor}, [fused tensors refused])`` for TFLite's ``;``-joined names.

    The tensor is the output of the op its first segment names, when the node that makes it is that
    layer's final op (a Relu whose name begins with an ``_act`` scope). tf2onnx splits a fused
    activation off into a Relu node of its own (``Relu__5:0``): the Conv then keeps the fused name
    and its value is the convolution with its BN folded in, before the activation, which is that BN's
    output (the segments name a BN and the convolution it reads); the Relu after it is the first
    segment's activation layer when that layer reads the BN. Any other fused tensor is refused, never
    mapped to a layer whose value it is not.
    """
    inputs = {layer.name: layer.inputs for layer in model.layers}
    readers = {}
    for node in graph.node:
        for i in node.input:
            readers.setdefault(i, []).append(node)
    found, refused = {}, []
    for tensor, (node, segments) in fused.items():
        named = [[layer_of[p] for p in seg if p in layer_of] for seg in segments]
        first = named[0][0] if named[0] else None
        if first is not None and node.op_type in _KERAS_FINAL_OPS[kinds[first]]:
            found[first] = tensor
            continue
        layers = {n for seg in named for n in seg}
        bn = next((n for n in layers if kinds[n] == "bn" and inputs[n][0] in layers), None)
        if node.op_type != "Conv" or bn is None:
            if node.op_type in _LAYER_OPS:  # a layer's output, whose: not a Transpose tf2onnx adds
                refused.append(tensor)
            continue
        found[bn] = tensor
        relu = [r for r in readers.get(tensor, []) if r.op_type == "Relu"]
        if first is not None and kinds[first] == "relu" and inputs[first] == (bn,) and len(relu) == 1:
            found[first] = relu[0].output[0]
    return found, refused




def node_module_paths(node) -> list[str]:
    """The module paths enclosing ``node``, outermost first, from whichever its exporter left: its
    outputs' scopes, its own name's scopes, or the dynamo exporter's ``name_scopes`` metadata (read as
    quoted strings, never evaluated; its first entry is the root "", its last the node's own name)."""
    for name in (*node.output, node.name):
        paths = torch_module_paths(name)
        if paths:
            return paths
    for prop in node.metadata_props:
        if prop.key == NAME_SCOPES:  # bounded by load_onnx, as the names above
            return [p for p in name_scopes(prop.value)[:-1] if p]
    return []


def strip_root(paths, hits) -> str:
    """The module path wrapping every other (``model`` of ``model.block1.rep``), when its removal
    makes more paths count as ``hits(path)`` than before; else "". Looked for at most
    ``MAX_SCOPE_DEPTH`` modules deep.

    Linear in the paths' length per level: each level looks at one module of each path still under the
    prefix (found from where the last one ended, never re-splitting a path) and counts those paths' hits
    once; load_onnx caps a path's modules, '.'-separated ones included, at MAX_SCOPE_DEPTH."""
    root, best = "", sum(map(hits, paths))
    under = [(p, 0) for p in paths]  # the paths still under the prefix, and where their next module starts
    prefix = ""
    for _ in range(MAX_SCOPE_DEPTH):
        # a path with no module below this level leaves; those with one must all go through the same
        ends = [(p, start, p.find(".", start)) for p, start in under]
        firsts = {p[start:end] for p, start, end in ends if end >= 0}
        if len(firsts) != 1:
            return root
        prefix += firsts.pop() + "."
        under = [(p, end + 1) for p, _, end in ends if end >= 0]
        n = sum(hits(p[len(prefix):]) for p, _ in under)
        if n > best:
            root, best = prefix, n
    return root


def _module_last(graph) -> dict:
    """{module path: the last tensor produced inside it}; nodes are topologically sorted."""
    last = {}
    for node in graph.node:
        for path in node_module_paths(node):
            last[path] = node.output[0]
    return last


def _named_matches(model, graph, mapping) -> dict:
    """Tensors named (or scoped, torch-style) by a mapped name or one of our names."""
    ours = set(model.layer_names)
    wanted = {}
    for node in graph.node:
        for out in node.output:
            target = mapping.get(out, out if out in ours else None)
            if target is not None:
                wanted[target] = out
    module_last = _module_last(graph)
    root = strip_root(list(module_last), lambda path: path in mapping)
    for path, tensor in module_last.items():
        target = mapping.get(path.removeprefix(root)) if path.startswith(root) else None
        if target is not None and target not in wanted:
            wanted[target] = tensor
    if folded_bn.is_folded(graph):  # the fused convolution's tensor is the BN's output
        wanted = folded_bn.as_bn(model, wanted)
    return wanted


def _dims(declared):
    return "(" + ", ".join("?" if d is None else str(d) for d in declared) + ")"


def _fits(declared, shape) -> bool:
    return len(declared) == len(shape) and all(d is None or d == s for d, s in zip(declared, shape))


class InputRefused(ValueError):
    """The graph's declared input refuses the batch for a reason the command line can fix (the layout or the
    size given): ``npxception compare`` exits 2 on it, as for any value the model cannot take."""


def _size_hint(declared, fed, layout) -> str:
    """What to pass when the graph takes one image size only and the batch is another (an any-size model of
    ours against a fixed 299x299 export): that size, by --size or an x at that size."""
    if len(declared) != 4 or len(fed) != 4:
        return ""
    hw = declared[2:4] if layout == "NCHW" else declared[1:3]
    got = fed[2:4] if layout == "NCHW" else fed[1:3]
    if None in hw or tuple(hw) == tuple(got):
        return ""
    return (f"; the graph takes {hw[0]}x{hw[1]} images only: compare at that size "
            f"(--size {hw[0]}x{hw[1]}, or an x of that size)")


def _layout_hint(declared, fed) -> str:
    """What to pass instead, only when the layout is why the input was refused: the declared
    dims fit the fed batch transposed, and not as fed."""
    if len(fed) != 4 or _fits(declared, fed):
        return ""
    if _fits(declared, (fed[0], fed[3], fed[1], fed[2])):
        return "; its input is NCHW: pass layout='NCHW' (--layout NCHW)"
    if _fits(declared, (fed[0], fed[2], fed[3], fed[1])):
        return "; its input is NHWC: drop layout='NCHW'"
    return ""


# ONNX element types by their unit round-off, the least precise last; compare needs to know the
# lowest precision a port computed in (precision.DEFAULT_RTOL), not only what its input takes.
_FLOAT_TYPES = {1: "float32", 11: "float64", 10: "float16", 16: "bfloat16"}  # TensorProto.FLOAT, ...
_LEAST_PRECISE = ("bfloat16", "float16", "float32", "float64")


def graph_precision(graph) -> str:
    """The least precise floating type among the graph's weights and its input: a float16 export
    (``model.half()``, or onnxconverter-common's ``keep_io_types`` with float32 edges) is float16."""
    found = {_FLOAT_TYPES.get(t.data_type) for t in graph.initializer}
    found |= {_FLOAT_TYPES.get(i.type.tensor_type.elem_type) for i in graph.input}
    return next((name for name in _LEAST_PRECISE if name in found), "float32")


def _examples(names, n: int) -> str:
    """The first ``n`` names, each cut (a file's name may be hundreds of characters long)."""
    return ", ".join(short_repr(name, 60) for name in names[:n])


def _no_names(graph, mapping) -> str:
    """What their graph's names look like and what to pass, when none of its intermediate tensors
    matched one of our layers (only the final output can then be compared)."""
    paths = list(_module_last(graph))
    for port, known in KNOWN_PORTS.items():
        keys = set(known())
        root = strip_root(paths, keys.__contains__)
        if sum(p.removeprefix(root) in keys for p in paths if p.startswith(root)) >= len(keys) // 2:
            if mapping:
                return (f"its module paths are {port}'s (e.g. {_examples(paths, 3)}), "
                        "and the names map given matches none of them")
            return f"its module paths are {port}'s (e.g. {_examples(paths, 3)}): pass names='{port}' (--port {port})"
    if paths:
        return (f"its module paths (e.g. {_examples(paths, 5)}) are none of ours"
                f"{' nor in the names map given' if mapping else ''}: map them to ours with names= "
                "({module path: our layer name}, --names FILE.json)")
    tensors = [o for node in graph.node for o in node.output][:5]
    return (f"its tensors' names (e.g. {_examples(tensors, 5)}) carry no module path (an export by torch < 1.13 "
            "names them by number): re-export with a newer torch, or map tensor names to ours with names=")


# onnxruntime's log level for compare's sessions and runs: FATAL only. At 3 (ERROR) a failed run still
# printed its raw coloured "[E:onnxruntime ...]" line before our message; the exception it raises carries
# the same text, which reaches the user as one line naming the file.
_ORT_QUIET = 4


@dataclass(frozen=True)
class OnnxRun:
    """An ONNX file as the other side."""

    run: Callable  # x (NHWC), final_only=False -> {our name: activation}, fed the type its input declares
    precision: str  # graph_precision()
    no_names: str  # why no intermediate tensor matched one of our layers (_no_names), or ""
    notes: list = field(default_factory=list)  # what the report should say about this graph
    activation: str | None = UNKNOWN  # what its final output ends with (final_activation)
    convs: dict = field(default_factory=dict)  # {our conv layer: TheirConv}, their weights (their_convs.read)


def onnx_runner(model, path, layout, mapping) -> OnnxRun:
    """The ONNX file at ``path``, run by onnxruntime, its tensors under our names."""
    try:
        import onnx  # optional extra ('onnx'): only an .onnx comparison needs it
        import onnxruntime as ort  # optional extra ('onnx'), as onnx
    except ImportError:
        raise ImportError("comparing against an ONNX file needs onnx and onnxruntime "
                          "(pip install 'npxception[onnx]')") from None
    proto = load_onnx(path)  # bounded, self-contained, CNN operators only: checked before onnxruntime sees it
    graph = proto.graph
    inputs = [i.name for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    if len(inputs) != 1:
        raise ValueError(f"{path}: expected one image input, found {len(inputs)}: {inputs}")
    final = graph.output[0].name  # before we add the intermediate outputs
    named = _named_matches(model, graph, mapping)
    refused = []
    wanted = _keras_matches(model, graph, refused) | named
    refused = [t for t in refused if t not in set(wanted.values())]
    no_names = "" if set(wanted) - {model.layer_names[-1]} else _no_names(graph, mapping)
    existing = {o.name for o in graph.output}
    for name in sorted(set(wanted.values()) - existing):
        graph.output.append(onnx.ValueInfoProto(name=name))
    sessions = []  # made on the first run: a graph compare refuses (no names in common) is never loaded
    checked = {}  # {(feed shape, NHWC height and width): the run's deadline}, once the graph's work fits

    def session():
        if not sessions:
            options = ort.SessionOptions()
            options.log_severity_level = _ORT_QUIET
            sessions.append(ort.InferenceSession(proto.SerializeToString(), options,
                                                 providers=["CPUExecutionProvider"]))
        return sessions[0]

    def work_deadline(feed, hw):
        """Check the work the graph asks for this input (onnx_work) before onnxruntime loads it."""
        key = (feed.shape, hw)
        if key not in checked:
            limit = onnx_work.budget(model, feed.shape[0], hw)
            onnx_work.check_work(proto, inputs[0], feed.shape, limit, str(path))
            checked[key] = onnx_work.deadline_seconds(limit)
        return checked[key]

    image = graph.input[[i.name for i in graph.input].index(inputs[0])].type.tensor_type
    declared = [d.dim_value if d.HasField("dim_value") else None for d in image.shape.dim]
    if image.elem_type not in _FLOAT_TYPES:
        raise ValueError(f"{path}: its input {inputs[0]!r} is {onnx.TensorProto.DataType.Name(image.elem_type)}; "
                         "expected a floating-point image batch")
    feed_dtype = onnx.helper.tensor_dtype_to_np_dtype(image.elem_type)  # float16 for a model.half() export
    precision = graph_precision(graph)

    # The model's channel count says which dim of the declared input is the channels: (N, C, H, W) with only
    # dim 1 the model's C is fed NCHW without --layout, as the README says; both dims C is refused by name
    # (input_layout), neither (all dims unknown) is fed NHWC unless told. Only the feed follows it: their
    # other tensors are still read one by one by shape (to_nhwc), as a graph may feed NCHW and compute NHWC
    # (tf2onnx --inputs-as-nchw).
    if layout is None:
        layout_in = input_layout(declared, model.channels, f"{path}: its input {inputs[0]!r}") or "NHWC"
    else:
        layout_in = layout

    def run(x, final_only=False):
        feed = x.transpose(0, 3, 1, 2) if layout_in == "NCHW" else x
        if (image.HasField("shape") and len(x) > 1 and declared and declared[0] == 1
                and _fits(declared, (1, *feed.shape[1:]))):
            # a batch of one fixed (torch.onnx.export without dynamic_axes, its default): one image at a time
            parts = [run(x[i:i + 1], final_only) for i in range(len(x))]
            return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        if image.HasField("shape") and not _fits(declared, feed.shape):  # as onnxruntime would, before its session
            fixable = _layout_hint(declared, feed.shape) or _size_hint(declared, feed.shape, layout_in)
            raise (InputRefused if fixable else ValueError)(f"{path}: its input {inputs[0]!r} is declared {_dims(declared)}, and the "
                             f"{layout_in} {feed_dtype.name} input is {feed.shape}"
                             f"{_layout_hint(declared, feed.shape) or _size_hint(declared, feed.shape, layout_in)}")
        seconds = work_deadline(feed, x.shape[1:3])
        sess = session()  # outside the try below: a graph onnxruntime cannot load is not an input refused
        fetch = [final] if final_only else [o.name for o in sess.get_outputs()]
        options = ort.RunOptions()
        options.log_severity_level = _ORT_QUIET
        timer = threading.Timer(seconds, setattr, (options, "terminate", True))
        timer.start()
        try:
            outs = sess.run(fetch, {inputs[0]: np.ascontiguousarray(feed, dtype=feed_dtype)}, options)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if options.terminate:
                raise ValueError(f"{path}: onnxruntime ran longer than {seconds:,.0f} s, the time the work its "
                                 f"graph declares for a {feed.shape} input allows "
                                 f"({onnx_work.SLOWEST_MACS_PER_SECOND / 1e9:g} G multiply-adds a second, plus "
                                 f"{onnx_work.DEADLINE_FLOOR_SECONDS:.0f} s); stopped") from None
            raise ValueError(f"{path}: onnxruntime refused the {layout_in} {feed_dtype.name} input "
                             f"{feed.shape} (declared {_dims(declared)}): {str(exc).splitlines()[0]}"
                             f"{_layout_hint(declared, feed.shape)}") from None
        finally:
            timer.cancel()
        by_name = dict(zip(fetch, outs))
        acts = {ours: by_name[n] for ours, n in wanted.items() if n in by_name}
        acts[model.layer_names[-1]] = by_name[final]
        return acts

    notes = [folded_bn.note(model, graph, named)]
    if refused:
        notes.append(f"{len(refused)} tensor(s) named by TFLite's fused ops (';'-joined) say no one layer of ours "
                     f"and were not compared (e.g. {refused[0][:200]!r}); map them with names= if you know them")
    return OnnxRun(run, precision, no_names, [n for n in notes if n], final_activation(graph),
                   their_convs.read(model, graph, named))


# The graph's final op -> the activation its output ends with; ops that only move data are looked through.
_FINAL_ACTIVATIONS = {"Softmax": "softmax", "Sigmoid": "sigmoid", "Relu": "relu", "Tanh": "tanh",
                      "Gemm": None, "MatMul": None, "Add": None, "BatchNormalization": None}
_DATA_MOVES = {"Identity", "Reshape", "Flatten", "Squeeze", "Cast"}


def final_activation(graph) -> str | None:
    """The activation the graph's first output ends with (None: logits, a Gemm or MatMul and bias),
    or UNKNOWN for any other final op."""
    producer = {out: node for node in graph.node for out in node.output}
    node = producer.get(graph.output[0].name)
    for _ in range(len(graph.node)):  # bounded: a walk up a chain of data moves
        if node is None or node.op_type not in _DATA_MOVES:
            break
        node = producer.get(node.input[0]) if node.input else None
    return _FINAL_ACTIVATIONS.get(node.op_type, UNKNOWN) if node is not None else UNKNOWN
