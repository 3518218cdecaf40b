"""The work an ONNX graph asks for, bounded before onnxruntime sees it.

:func:`npxception.compare.inputs.load_onnx` checks what a graph is made of (CNN
operators, a bounded node count); that bounds neither time nor memory. A 17 MB
graph of 9,998 2048x2048 1x1 convolutions sharing one weight would run for ~4.7
hours; a 250-byte graph with one ``Resize`` by 60 asked onnxruntime for 3.9 GB
(docs/security.md). So, for the input about to be fed, ONNX's own shape inference
(with data propagation, so that ``Shape -> Gather -> Concat -> Reshape`` chains
resolve) gives every tensor's shape, and the graph is refused, naming the node,
when:

* a tensor's shape does not follow from the input's (its size could be anything);
* one tensor holds more values than :data:`TENSOR_FACTOR` times our largest layer
  output at that input size, or all of them together more than
  :data:`TOTAL_FACTOR` times all of ours: this bounds ``Resize``, ``Pad``,
  ``Reshape`` and ``Concat``, whose output size is set by values, and every
  elementwise operator's work;
* convolutions, ``Gemm``, ``MatMul`` and pooling windows together ask for more
  than :data:`MAC_FACTOR` times the multiply-adds of our architecture table at
  that size (``architecture.trace``).

:func:`deadline_seconds` turns the same budget into a time limit for the run
itself, a backstop should onnxruntime do more than the shapes say.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .. import architecture as arch
from .. import input_stage as stage
from .inputs import node_label

# Budgets are multiples of what our own Xception does for the same input, so they scale with the
# input size and batch. A real port (tf2onnx's, a torch export, a float16 conversion) does the
# same arithmetic as ours in a different layout: its multiply-adds are ours (a head of 1000
# classes instead of 3 adds 2 M per image), its tensors ours plus layout copies (a Transpose at each
# end, a separable convolution's depthwise half, a Cast on each side of a float16 graph). 4x leaves
# room for an unfolded BatchNorm, a larger head or input resampling, and still refuses a graph
# asking an hour of work where ours asks a second.
MAC_FACTOR = 4
TENSOR_FACTOR = 4  # one tensor: 4x our largest layer output, e.g. an input resized 2x by the port
TOTAL_FACTOR = 4  # all tensors, counted as if none were freed (a Sum of 1,000 Resizes keeps them all alive)
SLACK_VALUES = 1 << 16  # what a tensor may always hold: tiny inputs have tiny layers, a 1000-class head does not
# Data propagation needs the values of shape-like tensors (a Reshape's target, a Resize's scales),
# never a weight's: larger initializers are given to shape inference by their shape alone.
SHAPE_VALUES = 1024
# The run's deadline: the multiply-add budget at a rate far below onnxruntime's (~25 G/s on the
# 2 busy cores measured in docs/security.md), plus a floor for session start-up on a loaded machine.
SLOWEST_MACS_PER_SECOND = 1e9
DEADLINE_FLOOR_SECONDS = 60.0


@dataclass(frozen=True)
class Budget:
    """What a graph run on one batch may ask for, from our architecture at that input size."""

    macs: int  # multiply-adds, all images of the batch
    tensor: int  # values in any one tensor
    total: int  # values in all tensors together


def budget(model, batch: int, hw) -> Budget:
    """The budget for a batch of ``batch`` ``H x W`` images (``hw``), what our ``model`` is fed.

    Raises ValueError when ``model`` does not take that size (its own message): the budget, like the
    comparison, is measured against our model at that size.
    """
    model.check_image_size(*hw)
    traced = arch.trace(model.layers, model.head, (*stage.output_size(model.input_stage, hw), model.channels))
    values = [math.prod(shape) for shape, _, _ in traced.values()] + [math.prod(hw) * model.channels]
    macs = sum(m for _, _, m in traced.values())
    return Budget(macs=MAC_FACTOR * macs * batch,
                  tensor=(TENSOR_FACTOR * max(values) + SLACK_VALUES) * batch,
                  total=(TOTAL_FACTOR * sum(values) + SLACK_VALUES) * batch)


def deadline_seconds(limit: Budget) -> float:
    """How long one run of a graph that passed :func:`check_work` may take: its multiply-add budget at
    :data:`SLOWEST_MACS_PER_SECOND`, plus :data:`DEADLINE_FLOOR_SECONDS`."""
    return DEADLINE_FLOOR_SECONDS + limit.macs / SLOWEST_MACS_PER_SECOND


def _shape_graph(proto, image: str, feed_shape):
    """A copy of ``proto`` for shape inference only: its image input fixed at ``feed_shape``, its weights
    (initializers and ``Constant`` nodes) as typed inputs without their values; only the small,
    shape-like ones keep theirs. No weight is copied, whatever the file holds."""
    import onnx  # optional extra ('bench'), imported by compare's caller first with its install hint
    from onnx import helper  # optional extra, as onnx above

    g = proto.graph
    kind = next(i for i in g.input if i.name == image).type.tensor_type.elem_type
    inputs = [helper.make_tensor_value_info(image, kind, list(feed_shape))]
    light = onnx.ModelProto(ir_version=proto.ir_version, graph=onnx.GraphProto(name=g.name or "graph"))
    light.opset_import.extend(proto.opset_import)
    for t in g.initializer:
        if math.prod(t.dims) <= SHAPE_VALUES:
            light.graph.initializer.append(t)
        else:
            inputs.append(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims)))
    for node in g.node:
        value = next((a.t for a in node.attribute if a.name == "value" and a.HasField("t")), None)
        if node.op_type == "Constant" and value is not None and math.prod(value.dims) > SHAPE_VALUES:
            inputs.append(helper.make_tensor_value_info(node.output[0], value.data_type, list(value.dims)))
        else:
            light.graph.node.append(node)
    light.graph.input.extend(inputs)
    return light


# ONNX's data propagation resolves Shape -> Gather -> Unsqueeze -> Concat -> Reshape (torch's
# x.view(x.size(0), -1) with a dynamic batch) from opset 14 on only; below, the same graph's shapes stay
# unknown (onnx 1.17-1.19), so an older graph whose shapes do not all follow is inferred again as converted
# to this opset: the converter rewrites operators' signatures (Unsqueeze's axes attribute to an input, ...)
# and keeps every tensor's name.
INFERENCE_OPSET = 17


def _inferred_shapes(light) -> dict:
    """``{tensor: shape}`` for every tensor of ``light`` whose shape ONNX's inference fixes."""
    import onnx  # see _shape_graph

    g = onnx.shape_inference.infer_shapes(light, check_type=True, strict_mode=True, data_prop=True).graph
    shapes = {t.name: tuple(t.dims) for t in g.initializer}
    for info in (*g.input, *g.value_info, *g.output):
        dims = info.type.tensor_type.shape.dim if info.type.tensor_type.HasField("shape") else None
        if dims is not None and all(d.HasField("dim_value") and d.dim_value >= 0 for d in dims):
            shapes[info.name] = tuple(d.dim_value for d in dims)
    return shapes


def _shapes(proto, image: str, feed_shape) -> dict:
    """:func:`_inferred_shapes` of ``proto`` fed ``feed_shape``; for a graph of opset < 14 whose shapes
    do not all follow, those of its copy converted to :data:`INFERENCE_OPSET` when they all do there (a
    graph the converter cannot convert keeps its own)."""
    import onnx  # see _shape_graph

    light = _shape_graph(proto, image, feed_shape)
    shapes = _inferred_shapes(light)
    outputs = [out for node in proto.graph.node for out in node.output if out]
    opset = next((o.version for o in light.opset_import if o.domain in ("", "ai.onnx")), INFERENCE_OPSET)
    if opset >= 14 or all(out in shapes for out in outputs):
        return shapes
    try:
        converted = _inferred_shapes(onnx.version_converter.convert_version(light, INFERENCE_OPSET))
    except Exception:  # noqa: BLE001 - the converter raises RuntimeError and its own types: keep ours
        return shapes
    return converted if all(out in converted for out in outputs) else shapes


def check_work(proto, image: str, feed_shape, limit: Budget, where: str) -> None:
    """Refuse ``proto`` (vetted by ``load_onnx``), naming the node, when fed ``feed_shape`` at its
    input ``image`` it asks more than ``limit`` (module docstring), or its shapes do not follow."""
    fed = "x".join(map(str, feed_shape))
    try:
        shapes = _shapes(proto, image, feed_shape)
    except Exception as exc:  # noqa: BLE001 - onnx raises InferenceError, ValidationError and RuntimeError
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc)
        raise ValueError(f"{where}: its shapes do not follow from a {fed} input ({first}); compare runs "
                         "graphs whose every tensor's shape ONNX shape inference determines") from None
    macs = total = 0
    for i, node in enumerate(proto.graph.node):  # the file's nodes, as numbered in its refusals
        for out in filter(None, node.output):
            if out not in shapes:
                raise ValueError(f"{where}: the shape of {out!r}, output of node {node_label(node, i)}, a "
                                 f"{node.op_type}, does not follow from a {fed} input; compare runs graphs whose "
                                 "every tensor's shape ONNX shape inference determines, to bound the work before "
                                 "running them: an export with a fixed batch size (torch.onnx.export without "
                                 "dynamic_axes) and opset_version >= 14 determines them")
            values = math.prod(shapes[out])
            total += values
            if values > limit.tensor:
                raise ValueError(f"{where}: node {node_label(node, i)}, a {node.op_type}, makes {out!r} of shape "
                                 f"{shapes[out]}, {values:,} values, for a {fed} input; more than the {limit.tensor:,} "
                                 f"any one tensor may hold ({TENSOR_FACTOR}x an Xception's largest layer output at "
                                 "that size): refused before running it")
        macs += _node_macs(node, shapes)
        if macs > limit.macs:
            raise ValueError(f"{where}: its convolutions, products and pools up to node {node_label(node, i)}, "
                             f"a {node.op_type}, ask for {macs:,} multiply-adds for a {fed} input; more than the "
                             f"{limit.macs:,} allowed ({MAC_FACTOR}x an Xception's at that size): refused before "
                             "running it")
    if total > limit.total:
        raise ValueError(f"{where}: its tensors hold {total:,} values in all for a {fed} input; more than the "
                         f"{limit.total:,} allowed ({TOTAL_FACTOR}x all of an Xception's layer outputs at that "
                         "size): refused before running it")


def _node_macs(node, shapes) -> int:
    """Multiply-adds (or window comparisons) of one node: output values times the terms each one sums."""
    if not node.output or node.output[0] not in shapes:
        return 0
    out = math.prod(shapes[node.output[0]])
    ins = [shapes.get(name) for name in node.input]
    if node.op_type == "Conv" and len(ins) > 1 and ins[1]:
        return out * math.prod(ins[1][1:])  # weight (M, C/group, k...): each output sums C/group x k... terms
    if node.op_type == "MatMul" and ins[0]:
        return out * ins[0][-1]
    if node.op_type == "Gemm" and ins[0] and len(ins[0]) == 2:
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        return out * ins[0][0 if trans_a else 1]
    if node.op_type in ("MaxPool", "AveragePool"):
        kernel = next((list(a.ints) for a in node.attribute if a.name == "kernel_shape"), [])
        return out * math.prod(kernel)
    return 0
