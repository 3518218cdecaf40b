"""The Xception architecture, declared once as data, with Keras' layer names.

Provenance: Chollet, "Xception: Deep Learning with Depthwise Separable
Convolutions" (arXiv:1610.02357), figure 5, as implemented layer for layer by
``keras/src/applications/xception.py``. The table below is written in the order
of Keras' ``model.layers`` for the layers that carry weights, which is the order
Keras itself uses to load the official HDF5 weights.

Reading the table is reading the paper's figure::

    entry flow   block1  conv 32 s2 -> conv 64                      299 -> 149 -> 147
                 block2  sep 128, sep 128, maxpool  + 1x1 s2 residual    -> 74
                 block3  sep 256, sep 256, maxpool  + 1x1 s2 residual    -> 37
                 block4  sep 728, sep 728, maxpool  + 1x1 s2 residual    -> 19
    middle flow  block5..block12: 3 x (relu, sep 728, bn)  + identity    -> 19
    exit flow    block13 sep 728, sep 1024, maxpool + 1x1 s2 residual    -> 10
                 block14 sep 1536, sep 2048 -> global pool -> dense

Keras leaves the four residual branches (and the adds) unnamed, so its weight
files carry auto-names (``conv2d_1``, ``batch_normalization_1``, ``add_1``...).
We name them explicitly: ``block2_residual_conv``, ``block2_residual_bn``,
``block2_add``. Only ``weights_tools`` knows the Keras auto-names.

Two architectures are supported. ``keras`` (the default) is what real weights
fit. ``article`` is the "from scratch" TensorFlow article's model, which departs
from the paper in four small, named ways; see :class:`Variant`.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .head_schema import map_batch_norms
from .ops.padding import output_size  # TF's SAME/VALID rule, written once


@dataclass(frozen=True)
class Layer:
    """One node of the network graph.

    kind is one of ``conv``, ``sepconv``, ``bn``, ``relu``, ``maxpool``, ``add``;
    ``inputs`` names the layers feeding it ("input" is the image batch).
    """

    name: str
    kind: str
    inputs: tuple[str, ...]
    filters: int = 0  # output channels of conv / sepconv
    kernel_size: int = 0  # square kernel (conv, sepconv) or pool window (maxpool)
    strides: int = 1
    padding: str = "valid"
    flow: str = "entry"  # the paper's stage: "entry", "middle" or "exit" (compare's per-stage summary)


@dataclass(frozen=True)
class Variant:
    """Where an architecture departs from Keras/the paper. All False is ``keras``.

    Each flag is one of the article's four departures, so each can be studied
    alone (docs/article-vs-paper.md measures the effect of each).
    """

    # The article gives its stem convolutions padding="same": 299 -> 150 -> 150
    # instead of Keras' VALID 299 -> 149 -> 147.
    same_stem: bool = False
    # The article's entry-flow residuals of blocks 3 and 4 take the previous
    # residual branch ("tensor") instead of the block output.
    chained_residuals: bool = False
    # The article applies a ReLU after the third middle-flow BN, before each Add.
    relu_before_middle_add: bool = False
    # The article pools block14_sepconv2_bn directly; Keras applies ReLU first.
    no_final_relu: bool = False


VARIANTS = {
    "keras": Variant(),
    "article": Variant(
        same_stem=True,
        chained_residuals=True,
        relu_before_middle_add=True,
        no_final_relu=True,
    ),
}

MIDDLE_FLOW_BLOCKS = range(5, 13)  # block5 .. block12: the paper's "repeated 8 times"
MIDDLE_FLOW_WIDTH = 728  # channels throughout the middle flow (paper, fig. 5)


def resolve_variant(variant: str | Variant) -> Variant:
    """``"keras"``, ``"article"`` or a :class:`Variant` -> a :class:`Variant`."""
    if isinstance(variant, Variant):
        return variant
    if isinstance(variant, str) and variant in VARIANTS:
        return VARIANTS[variant]
    raise ValueError(
        f"variant: expected one of {sorted(VARIANTS)} or an npxception.architecture.Variant, "
        f"found {variant!r}"
    )


def variant_name(variant: Variant) -> str:
    """The registered name of a variant, or a description of its flags."""
    for name, known in VARIANTS.items():
        if known == variant:
            return name
    flags = [f.name for f in dataclasses.fields(variant) if getattr(variant, f.name)]
    return "custom(" + ",".join(flags) + ")"


def backbone(variant: str | Variant = "keras") -> list[Layer]:
    """The layers from the image to the last feature map, in Keras' order."""
    v = resolve_variant(variant)
    stem_padding = "same" if v.same_stem else "valid"
    layers: list[Layer] = []
    flow = "entry"

    def add(name, kind, inputs, **kw) -> str:
        layers.append(Layer(name, kind, tuple(inputs), flow=flow, **kw))
        return name

    def conv_bn(name, x, filters, kernel_size, strides=1, padding="valid") -> str:
        x = add(name, "conv", [x], filters=filters, kernel_size=kernel_size,
                strides=strides, padding=padding)
        return add(name + "_bn", "bn", [x])

    def sep_bn(name, x, filters) -> str:
        x = add(name, "sepconv", [x], filters=filters, kernel_size=3, padding="same")
        return add(name + "_bn", "bn", [x])

    def relu(name, x) -> str:
        return add(name, "relu", [x])

    # ---- entry flow -------------------------------------------------------
    x = conv_bn("block1_conv1", "input", 32, 3, strides=2, padding=stem_padding)
    x = relu("block1_conv1_act", x)
    x = conv_bn("block1_conv2", x, 64, 3, padding=stem_padding)
    x = relu("block1_conv2_act", x)

    residual_source = x
    for block, filters in ((2, 128), (3, 256), (4, 728)):
        b = f"block{block}"
        block_input = x
        if block == 2:
            # block1 already ended in a ReLU; Keras names the ReLU between the
            # two separable convolutions "block2_sepconv2_act" (no sepconv1_act).
            x = sep_bn(f"{b}_sepconv1", x, filters)
        else:
            x = relu(f"{b}_sepconv1_act", x)
            x = sep_bn(f"{b}_sepconv1", x, filters)
        x = relu(f"{b}_sepconv2_act", x)
        x = sep_bn(f"{b}_sepconv2", x, filters)
        residual_input = residual_source if v.chained_residuals else block_input
        # Keras' order: residual conv, the block's max-pool, residual BN, add.
        r = add(f"{b}_residual_conv", "conv", [residual_input], filters=filters,
                kernel_size=1, strides=2, padding="same")
        x = add(f"{b}_pool", "maxpool", [x], kernel_size=3, strides=2, padding="same")
        r = add(f"{b}_residual_bn", "bn", [r])
        x = add(f"{b}_add", "add", [x, r])
        residual_source = r

    # ---- middle flow ------------------------------------------------------
    flow = "middle"
    for block in MIDDLE_FLOW_BLOCKS:
        b = f"block{block}"
        residual = x
        for i in (1, 2, 3):
            x = relu(f"{b}_sepconv{i}_act", x)
            x = sep_bn(f"{b}_sepconv{i}", x, MIDDLE_FLOW_WIDTH)
        if v.relu_before_middle_add:
            x = relu(f"{b}_sepconv3_bn_act", x)
        x = add(f"{b}_add", "add", [x, residual])

    # ---- exit flow --------------------------------------------------------
    flow = "exit"
    block_input = x
    x = relu("block13_sepconv1_act", x)
    x = sep_bn("block13_sepconv1", x, 728)
    x = relu("block13_sepconv2_act", x)
    x = sep_bn("block13_sepconv2", x, 1024)
    r = add("block13_residual_conv", "conv", [block_input], filters=1024,
            kernel_size=1, strides=2, padding="same")
    x = add("block13_pool", "maxpool", [x], kernel_size=3, strides=2, padding="same")
    r = add("block13_residual_bn", "bn", [r])
    x = add("block13_add", "add", [x, r])

    x = sep_bn("block14_sepconv1", x, 1536)
    x = relu("block14_sepconv1_act", x)
    x = sep_bn("block14_sepconv2", x, 2048)
    if not v.no_final_relu:
        x = relu("block14_sepconv2_act", x)
    return layers


# ---- shapes and parameters --------------------------------------------------

def trace(layers, head, input_shape=(299, 299, 3)):
    """Shapes and weights of every layer for one input size (batch omitted).

    Returns ``{name: (output_shape, {variable: weight_shape}, multiply_adds)}``
    in network order. ``input_shape`` may be ``(None, None, C)``: spatial sizes
    are then None and multiply-adds 0. ``C``, the input's channels, flows into the
    first convolution's kernel ``(3, 3, C, 32)``; every later layer's comes from the table.
    """
    h, w, c = input_shape
    shapes = {"input": (h, w, c)}
    out = {}
    for layer in layers:
        ih, iw, ic = shapes[layer.inputs[0]]
        params: dict[str, tuple] = {}
        macs = 0
        if layer.kind in ("conv", "sepconv", "maxpool"):
            k, s = layer.kernel_size, layer.strides
            oh = None if ih is None else output_size(ih, k, s, layer.padding)
            ow = None if iw is None else output_size(iw, k, s, layer.padding)
            hw = 0 if oh is None else oh * ow
            if layer.kind == "conv":
                oc = layer.filters
                params = {"kernel": (k, k, ic, oc)}
                macs = hw * k * k * ic * oc
            elif layer.kind == "sepconv":
                oc = layer.filters
                params = {"depthwise_kernel": (k, k, ic, 1), "pointwise_kernel": (1, 1, ic, oc)}
                macs = hw * (k * k * ic + ic * oc)
            else:
                oc = ic
            shape = (oh, ow, oc)
        elif layer.kind == "bn":
            shape = (ih, iw, ic)
            params = {v: (ic,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}
        elif layer.kind in ("relu", "add"):
            shapes_in = {shapes[i] for i in layer.inputs}
            if len(shapes_in) != 1:
                raise ValueError(f"{layer.name}: inputs have different shapes {sorted(map(str, shapes_in))}")
            shape = (ih, iw, ic)
        else:  # pragma: no cover - the table only uses the kinds above
            raise ValueError(f"{layer.name}: unknown kind {layer.kind!r}")
        shapes[layer.name] = shape
        out[layer.name] = (shape, params, macs)
    last = shapes[layers[-1].name]
    features = last[-1]
    map_bns = map_batch_norms(head)
    for layer in head:
        kind = layer["kind"]
        params, macs = {}, 0
        if kind.startswith("global_"):
            shape = (features,)
        elif kind == "flatten":
            built = tuple(layer["map_shape"])
            if None not in last and last != built:
                raise ValueError(f"{layer['name']} (Flatten): built for a {shape_text(built)} feature map, but a "
                                 f"{input_shape[0]}x{input_shape[1]} input gives {shape_text(last)}")
            features = built[0] * built[1] * built[2]
            shape = (features,)
        elif kind == "dense":
            params = {"kernel": (features, layer["units"])}
            if layer.get("use_bias", True):
                params["bias"] = (layer["units"],)
            macs = features * layer["units"]
            features = layer["units"]
            shape = (features,)
        elif kind == "batch_norm":
            params = {v: (features,) for v in ("gamma", "beta", "moving_mean", "moving_variance")}
            shape = last if any(layer is b for b in map_bns) else (features,)  # before the pooling: on the map
        else:
            shape = (features,)
        out[layer["name"]] = (shape, params, macs)
    return out


def shape_text(shape) -> str:
    """``(3, 3, 2048)`` as messages write a map: ``3x3x2048``."""
    return "x".join(map(str, shape))


def vanishing_layer(layers, size: int) -> str | None:
    """The first layer left with no output row by an input ``size`` rows high, else None.

    Every windowed layer of the table has a square window and acts on each axis
    alone, so the same rule holds for the width: an ``H x W`` input computes iff
    neither ``H`` nor ``W`` vanishes. Keras' VALID stem: 5 -> 2 (block1_conv1,
    3x3/2) -> 0 (block1_conv2, 3x3); SAME layers give ``ceil(H / s) >= 1`` rows.
    """
    rows = {"input": size}
    for layer in layers:
        n = rows[layer.inputs[0]]
        if layer.kind in ("conv", "sepconv", "maxpool"):
            n = output_size(n, layer.kernel_size, layer.strides, layer.padding)
            if n < 1:
                return layer.name
        rows[layer.name] = n
    return None


def min_input_size(layers) -> int:
    """The smallest input height (and width) at which every layer of ``layers`` has an output pixel.

    7 for Keras' table (7 -> 3 -> 1 through the VALID stem, then 1x1 maps to the
    end), 1 for the article's SAME stem. Keras' ``model.predict`` of a model built
    for any size (``input_shape=(None, None, 3)``) answers from this size up and
    raises below it, on either axis (measured with Keras 3 and tf_keras,
    tests/test_small_inputs.py). ``keras.applications.Xception``'s constructor
    asks more of a fixed ``input_shape``: ``CONFIG.constructor_min_size``.
    """
    size = 1
    while vanishing_layer(layers, size) is not None:  # output sizes grow with the input: stops at the first fit
        size += 1
    return size


def param_shapes(layers, head, channels: int) -> dict[str, tuple]:
    """``{"block1_conv1/kernel": (3, 3, channels, 32), ...}`` in Keras' weight order.

    ``channels``: the input's (the model's ``input_shape[2]``): 3 for RGB photos, 1 for a grayscale
    model, 4 for RGBA or RGB+NIR. Only the first convolution's kernel depends on it (its ``C_in``).
    """
    return {
        f"{name}/{var}": shape
        for name, (_, params, _) in trace(layers, head, (None, None, channels)).items()
        for var, shape in params.items()
    }


NON_TRAINABLE = ("moving_mean", "moving_variance")  # BN statistics: Keras counts them as non-trainable
