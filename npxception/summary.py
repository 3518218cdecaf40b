"""``model.summary()``: the network as a Keras-like table, read from the architecture table;
and :func:`to_dot`, the same network as a Graphviz DOT graph (``npxception summary --format dot``).

One row per layer: name (Keras type), output shape, parameters and
multiply-adds, all from :func:`npxception.architecture.trace`. Multiply-adds
count the convolutions and dense layers (BN, ReLU, pooling and adds are a
rounding error next to them, and BN folds away).
"""

from __future__ import annotations

import numpy as np

from . import architecture as arch
from . import input_stage as stage
from .config import CONFIG
from .dtype_policy import describe as describe_policy

KERAS_TYPES = {  # our layer kinds -> the Keras class each stands for, as Keras' summary names it
    "conv": "Conv2D",
    "sepconv": "SeparableConv2D",
    "bn": "BatchNormalization",
    "relu": "Activation",
    "maxpool": "MaxPooling2D",
    "add": "Add",
    "global_avg_pool": "GlobalAveragePooling2D",
    "global_max_pool": "GlobalMaxPooling2D",
    "flatten": "Flatten",
    "dense": "Dense",
    "batch_norm": "BatchNormalization",
    "activation": "Activation",
}


def summary_table(model, input_shape=None) -> str:
    """The table ``model.summary()`` prints, at ``input_shape`` (default: the model's).

    A model of any size shows None for its heights and widths, as Keras' summary does; its
    multiply-adds, which need a size, are counted at 299x299 and the table says so.
    """
    shape = tuple(input_shape or model.input_shape)
    rows = arch.trace(model.layers, model.head, shape)
    at = f"{shape[0]}x{shape[1]}"
    if None in shape[:2]:
        at = "x".join(str(d) for d in CONFIG.default_input_shape[:2])
        macs = arch.trace(model.layers, model.head, (*CONFIG.default_input_shape[:2], shape[2]))
        rows = {name: (out, params, macs[name][2]) for name, (out, params, _) in rows.items()}
    lines = [f'Model: "xception" (variant={model.variant_name}, input {shape}, dtype={model.dtype.name})']
    header = f"{'Layer (type)':<48}{'Output Shape':<24}{'Param #':>12}{'Mult-Adds @' + at:>22}"
    rule = "=" * len(header)
    lines += [rule, header, rule]
    if model.source_data_format == "channels_first":
        lines.append("  converted from a channels_first (NCHW) Keras model: model(x) takes NHWC (N, H, W, 3); "
                     "the weights need no transpose")
    if model.source_dtype_policy:
        lines.append(f"  converted from a Keras model that computed in {describe_policy(model.source_dtype_policy)}: "
                     f"this one computes its weights in {model.dtype.name}")
    for step in model.input_stage:
        lines.append(f"  input stage: {stage.describe(step)}")
    if model.input_stage:
        takes = ("" if model.source_input_shape == model.input_shape else
                 f" to the source's {model.source_input_shape} images, photos at their own size"
                 if None in model.source_input_shape else f" to the source's {model.source_input_shape} images")
        lines.append(f"  (applied by model(x){takes}; predict() feeds it "
                     + ("raw pixels in [0, 255])" if model.takes_pixels else "preprocess_input(pixels))"))
    kinds = {layer.name: layer.kind for layer in model.layers}
    kinds.update({h["name"]: h["kind"] for h in model.head})
    total_macs = 0
    for name, (out_shape, params, macs) in rows.items():
        n = sum(int(np.prod(s)) for s in params.values())
        total_macs += macs
        typ = KERAS_TYPES[kinds[name]]
        lines.append(f"{name + ' (' + typ + ')':<48}{str((None, *out_shape)):<24}{n:>12,}{macs:>22,}")
    total, trainable = model.count_params(), model.count_trainable_params()
    lines += [
        rule,
        f"Total params: {total:,}",
        f"Trainable params: {trainable:,}",
        f"Non-trainable params: {total - trainable:,}",
        f"Total mult-adds: {total_macs:,} ({total_macs / 1e9:.2f} G) for one {at} image",
        rule,
    ]
    return "\n".join(lines)


def to_dot(layers, head, input_shape, variant="keras") -> str:
    """The architecture as Graphviz DOT: one node per layer, clustered by flow, with output shapes."""
    rows = arch.trace(layers, head, input_shape)
    flows = {"entry": [], "middle": [], "exit": []}
    for layer in layers:
        flows[layer.flow].append(layer)  # the table's own stage, never read from the layer's name
    colors = {"conv": "lightblue", "sepconv": "lightskyblue", "bn": "lightyellow", "relu": "palegreen",
              "maxpool": "lightpink", "add": "orange"}
    out = [f'digraph xception_{variant} {{', '  rankdir=TB;', '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];',
           f'  input [label="input\\n{input_shape}", fillcolor=white];']
    for flow, members in flows.items():
        out.append(f'  subgraph cluster_{flow} {{ label="{flow} flow"; style=dashed;')
        for layer in members:
            shape = rows[layer.name][0]
            out.append(f'    "{layer.name}" [label="{layer.name}\\n{layer.kind}\\n{shape}", '
                       f'fillcolor={colors[layer.kind]}];')
        out.append("  }")
    for layer in layers:
        for i in layer.inputs:
            out.append(f'  "{i}" -> "{layer.name}";')
    prev = layers[-1].name
    for h in head:
        out.append(f'  "{h["name"]}" [label="{h["name"]}\\n{h["kind"]}\\n{rows[h["name"]][0]}", fillcolor=lavender];')
        out.append(f'  "{prev}" -> "{h["name"]}";')
        prev = h["name"]
    out.append("}")
    return "\n".join(out)
