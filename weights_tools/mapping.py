"""Match a Keras model (as a :class:`~weights_tools.graph.KLayer` list) to npxception's table.

Two rules, as Keras itself uses them:

* **Wiring known** (live models, ``.keras`` archives, full-model ``.h5``): walk our
  architecture table in order and, for each of our layers, find the one Keras
  layer of the same kind whose inputs are the Keras layers already matched to
  ours. Names are never trusted, so auto-named residual branches (``conv2d_1``,
  ``batch_normalization_1``) and the article's all-auto-named model are matched
  by where they sit in the graph. Every configuration value that changes the
  arithmetic (filters, kernel, strides, padding, bias, epsilon) is checked.
  The variant is detected: the first of ``keras``, ``article`` (then the other
  combinations of the four differences) whose graph fits.
* **Wiring unknown** (weights-only ``.h5``, such as the official download):
  Keras' ``load_weights`` rule, by order of the layers that carry weights,
  checking every shape. This is only unambiguous for ``variant="keras"``, whose
  weight order Keras defines; article-variant files need their config.

Layers that are identities at inference (Dropout, augmentation) are routed
around; preprocessing between the input and the backbone becomes the model's
input stage (:mod:`weights_tools.preprocessing`); any other layer is refused by
name, with the way out (``--skip-layer`` only for classes not known to compute
something: :mod:`weights_tools.keras_layers`). A weights-only file's head is taken
from the file only when the file determines it (a bare backbone, by documented
policy and with a notice; Keras' official ImageNet file, by its MD5), else from
the user's ``head_spec``, else refused: never guessed.

Explicit list of transforms: none. Keras' kernel layouts are npxception's
layouts ((KH, KW, C_in, C_out), depthwise (KH, KW, C_in, M), dense (C_in, units)),
so every array is copied as it is; channels_first files too, whose kernels Keras
stores in the same layouts (:mod:`weights_tools.layout`): only their input
shape and BN axis are read the other way round.
"""

from __future__ import annotations

import itertools

import numpy as np

from npxception import architecture as arch
from npxception.config import CONFIG
from npxception.input_stage import MAX_STEPS
from npxception.model import XceptionModel

from . import operations
from .graph import KLayer
from .keras_layers import not_identity_reason
from .layout import CHANNEL_AXES, CHANNELS_FIRST, CHANNELS_LAST, LayoutError, model_data_format, to_hwc
from .preprocessing import IDENTITY, STAGE, StageError, input_stage


class ConversionError(ValueError):
    """A file or model that npxception cannot convert; the message says why and where."""


# Keras class name -> our layer kind. Anything else is refused by name.
_KINDS = {
    "InputLayer": "input",
    "Conv2D": "conv",
    "Convolution2D": "conv",
    "SeparableConv2D": "sepconv",
    "SeparableConvolution2D": "sepconv",
    "BatchNormalization": "bn",
    "MaxPooling2D": "maxpool",
    "MaxPool2D": "maxpool",
    "Add": "add",
    "GlobalAveragePooling2D": "global_avg_pool",
    "GlobalAvgPool2D": "global_avg_pool",
    "GlobalMaxPooling2D": "global_max_pool",
    "GlobalMaxPool2D": "global_max_pool",
    "Dense": "dense",
    **{cls: "identity" for cls in IDENTITY},  # Dropout, augmentation: `return inputs` at inference
    **STAGE,  # Rescaling, Normalization, Resizing, CenterCrop, RandomCrop: the input stage
}
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")
# Keras 3 serialises activation="swish" by its function's name, "silu": the same x * sigmoid(x) as tf_keras'
# swish (keras/src/activations/activations.py silu; tf_keras/activations.py swish -> tf.nn.silu).
_ACTIVATION_ALIASES = {"silu": "swish"}


def _activation_name(cfg) -> str | None:
    act = (cfg or {}).get("activation", "linear")
    if isinstance(act, dict):  # Keras 3 may serialise built-ins as {"class_name": "function", "config": "relu"}
        act = act.get("config") if isinstance(act.get("config"), str) else None
    return _ACTIVATION_ALIASES.get(act, act)


def kind_of(layer: KLayer) -> str:
    """Our kind for a Keras layer, "op" for an operation node (weights_tools.operations), or "unsupported"."""
    if layer.function is not None:
        return "op"
    if layer.class_name in _KINDS:
        return _KINDS[layer.class_name]
    cfg = layer.config or {}
    if layer.class_name == "ReLU":
        plain = (cfg.get("max_value") in (None,) and float(cfg.get("negative_slope", 0) or 0) == 0
                 and float(cfg.get("threshold", 0) or 0) == 0)
        return "relu" if plain else "unsupported"
    if layer.class_name == "Softmax":  # its axis is checked where the rank is known: in the head
        return "softmax"
    if layer.class_name == "Activation":
        act = _activation_name(cfg)
        if act == "relu":
            return "relu"
        return "activation" if act in arch.ACTIVATIONS else "unsupported"
    return "unsupported"


# ---------------------------------------------------------------------------
# entry point
# ---------------------------------------------------------------------------

def to_npxception(klayers: list[KLayer], *, variant=None, source: str, input_shape=None,
                  dtype=None, labels=None, skip_layers=(), head_spec=None, keras_version=None,
                  official_file=None) -> XceptionModel:
    """Convert a KLayer list to an :class:`XceptionModel`; raise :class:`ConversionError` if it is not Xception.

    ``skip_layers``: names of layers to treat as identities (the user's word that
    they are at inference). ``head_spec``: ``{"pooling", "input_shape",
    "classifier_activation"}`` for a weights-only file, which records none of them.
    ``keras_version``: the Keras version the file records (None: none), for the
    preprocessing layers whose inference changed between versions. ``official_file``:
    the file is one of Keras' official ImageNet files (``True``/``False`` for with/without
    the top, checked by the caller against the pinned MD5 of its whole bytes), whose
    head ``keras.applications.Xception`` defines; None for any other file.

    The model's ``notices`` lists what was decided by documented policy rather than
    read from the file (a weights-only backbone's pooling and input size), one line each.
    """
    if not klayers:
        raise ConversionError(f"{source}: no layers found")
    wired = all(k.inbound is not None for k in klayers)
    given = {k: v for k, v in (head_spec or {}).items() if v is not None}
    steps, source_shape, notices = [], None, []
    if wired:
        if given:
            raise ConversionError(f"{source}: {_flags(given)} describe the head of a weights-only file; this "
                                  "file records its own head and input size")
        params, v, head, input_shape, source_shape, names, steps, data_format = _match_graph(
            klayers, variant, source, skip_layers, input_shape, keras_version)
    else:
        if skip_layers:
            raise ConversionError(f"{source}: --skip-layer needs a file that records its layers (a weights-only "
                                  "file is matched by weight order; pass --config)")
        params, v, head, names, input_shape, notices = _match_by_order(klayers, variant, source, given,
                                                                       official_file)
        data_format = None  # no config: the weights' layout is the same in both formats (layout.py)
    if input_shape is None or input_shape[0] is None:
        input_shape = (None, None, 3)  # the file allows any size (>= 7x7), as the Keras model does
    dtypes = {a.dtype for a in params.values()}
    for a in params.values():
        if a.dtype.kind != "f":
            raise ConversionError(f"{source}: weights must be floating point, found {a.dtype}")
    target = np.dtype(dtype) if dtype is not None else (
        np.dtype("float64") if np.dtype("float64") in dtypes else np.dtype("float32"))
    # The arrays are read here, after every shape was checked; asarray: no copy
    # when the dtype already fits (a budget-sized file must not need twice the memory).
    params = {k: np.asarray(a, dtype=target) for k, a in params.items()}
    for key, a in params.items():
        if not np.isfinite(a).all():
            raise ConversionError(f"{source}: weight {key} contains NaN or Inf")
    try:
        model = XceptionModel(params, variant=v, head=head, input_shape=input_shape,
                              labels=labels, source=source, input_stage=steps, source_input_shape=source_shape,
                              source_data_format=data_format)
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"{source}: {exc}") from None
    # {our layer name: the source's layer name}: how compare() finds Keras' auto-named layers.
    model.source_layer_names = names
    model.notices = notices
    return model


# ---------------------------------------------------------------------------
# wiring known: graph walk
# ---------------------------------------------------------------------------

def _candidate_variants(variant):
    if variant is not None:
        return [arch.resolve_variant(variant)]
    flags = [f for f in arch.Variant.__dataclass_fields__]
    others = [arch.Variant(**dict(zip(flags, bits))) for bits in itertools.product((False, True), repeat=4)]
    ordered = [arch.VARIANTS["keras"], arch.VARIANTS["article"]]
    return ordered + [o for o in others if o not in ordered]


def _collapse(klayers: list[KLayer], source: str, skip_layers=()):
    """Index layers by name and route around identity layers (nested InputLayers, Dropout,
    augmentation, and the layers the user named in ``skip_layers``)."""
    by_name = {}
    for k in klayers:
        if k.name in by_name:
            raise ConversionError(f"{source}: two layers are named {k.name!r}")
        by_name[k.name] = k
    skip = set(skip_layers)
    for name in sorted(skip):
        if name not in by_name:
            hint = [k.name for k in klayers if k.name.rsplit("/", 1)[-1] == name]
            raise ConversionError(f"{source}: --skip-layer {name}: no such layer"
                                  + (f" (did you mean {hint[0]}?)" if hint else ""))
        if by_name[name].weights:
            raise ConversionError(f"{source}: --skip-layer {name}: it has weights "
                                  f"({len(by_name[name].weights)} arrays), so it is not an identity")
        # a layer class's rule: an operation node (Keras 3's Multiply op shares the merge layer's class name)
        # reads one tensor when --skip-layer is offered for it (weights_tools.operations.refusal)
        why = not_identity_reason(by_name[name].class_name) if by_name[name].function is None else None
        if why:
            raise ConversionError(f"{source}: --skip-layer {name}: a {by_name[name].class_name} layer is not an "
                                  f"identity at inference ({why}); skipping it would change the model's output")

    def is_identity(k):
        kind = kind_of(k)
        return (kind == "input" and k.inbound) or kind == "identity" or k.name in skip

    def resolve(name, seen=()):
        k = by_name.get(name)
        if k is None:
            raise ConversionError(f"{source}: layer input {name!r} names no layer")
        if is_identity(k):
            if len(k.inbound or []) != 1 or name in seen:
                raise ConversionError(f"{source}: {k.name} ({k.class_name}) must have exactly one input")
            return resolve(k.inbound[0], seen + (name,))
        return name

    inputs = {k.name: [resolve(i) for i in k.inbound] for k in klayers}
    live = [k for k in klayers if not is_identity(k)]
    return by_name, inputs, live


def _unsupported(k: KLayer, source: str) -> ConversionError:
    if k.class_name == "Flatten":
        fmt = (k.config or {}).get("data_format", CHANNELS_LAST)
        order = "(C, H, W)" if fmt == CHANNELS_FIRST else "(H, W, C)"
        return ConversionError(
            f"{source}: unsupported layer {k.name} (Flatten, data_format {fmt}): it feeds the next layer the "
            f"feature map flattened in {order} order, so the head depends on the input size and the data "
            "format; npxception converts heads that start with GlobalAveragePooling2D or GlobalMaxPooling2D. "
            "Rebuild the head on global pooling and fine-tune it")
    why = ("a Lambda layer's function is code, which a file read as data does not hold"
           if k.class_name == "Lambda" else "npxception converts an Xception backbone; before it the "
           "layers Rescaling, Normalization, Resizing, CenterCrop, RandomCrop, Keras' augmentation and noise "
           "layers and arithmetic with a number (preprocess_input's); after it a head of "
           "GlobalAverage/MaxPooling2D, Dense, Dropout, Activation, ReLU, Softmax and BatchNormalization")
    if not_identity_reason(k.class_name):  # a known computation: --skip-layer would change the answer
        return ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): {why}. A "
                               f"{k.class_name} is not an identity at inference ({not_identity_reason(k.class_name)}); "
                               "npxception cannot reproduce this model")
    return ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): {why}. Rebuild the model "
                           f"without it, or, if it is an identity at inference, pass --skip-layer {k.name}")


def _stage_chain(root: KLayer, live, inputs) -> list[KLayer]:
    """The input-stage layers (Rescaling, Normalization, Resizing..., operation nodes such as
    preprocess_input's) that follow the input in a chain."""
    consumers = _consumers(live, inputs)
    chain, current = [], root.name
    while len(consumers.get(current, [])) == 1 and kind_of(consumers[current][0]) in (*STAGE.values(), "op"):
        chain.append(consumers[current][0])
        current = chain[-1].name
    return chain


def _match_graph(klayers, variant, source, skip_layers=(), recorded_shape=None, keras_version=None):
    """``(params, variant, head, backbone input shape, source input shape, names, stage steps, data format)``."""
    by_name, inputs, live = _collapse(klayers, source, skip_layers)
    try:
        data_format = model_data_format(live, source)
    except LayoutError as exc:
        raise ConversionError(str(exc)) from None
    roots = [k for k in live if kind_of(k) == "input"]
    if len(roots) != 1:
        raise ConversionError(f"{source}: expected one image input, found {len(roots)} input layers")
    unsupported = [k for k in live if kind_of(k) == "unsupported"]
    if unsupported:
        raise _unsupported(unsupported[0], source)
    root_shape = _input_shape(roots[0], data_format) or to_hwc(recorded_shape, data_format) or (None, None, 3)
    chain = _stage_chain(roots[0], live, inputs)
    input_dtype = (roots[0].config or {}).get("dtype")
    input_dtype = input_dtype if isinstance(input_dtype, str) else None
    try:
        steps, size = input_stage(chain, root_shape[:2], keras_version, data_format or CHANNELS_LAST,
                                  input_dtype=input_dtype)
    except StageError as exc:
        raise ConversionError(f"{source}: {exc}") from None
    if len(steps) > MAX_STEPS:  # the model's own limit (npxception.input_stage.validate), before any matching
        raise ConversionError(f"{source}: input_stage: at most {MAX_STEPS} steps, found {len(steps)} (the layers "
                              f"{chain[0].name} to {chain[-1].name} between the input and the backbone)")
    in_chain = {c.name for c in chain}
    misplaced = [k for k in live if kind_of(k) == "op" and k.name not in in_chain]
    if misplaced:
        where = _where(misplaced[0], live, inputs)
        raise ConversionError(f"{source}: {operations.refusal(misplaced[0], where, input_dtype)}")
    # the stage's output is the backbone's input: a geometry layer (CenterCrop...) behind a
    # variable-size Input fixes the size that the recorded (None, None, 3) leaves open
    in_shape = (*size, 3)
    source_shape = tuple(root_shape) if chain else None
    start = chain[-1] if chain else roots[0]
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, params = _walk(v, start, live, inputs, source, data_format=data_format)
        except ConversionError as exc:
            failures.append((v, exc))
            continue
        head, head_params = _head(matched, live, inputs, v, source,
                                  before={roots[0].name} | {k.name for k in chain})
        params.update(head_params)
        matched.pop("input")
        matched.update({h["name"]: h["name"] for h in head})
        return params, v, head, in_shape, source_shape, matched, steps, data_format
    v, exc = failures[0]
    raise ConversionError(str(exc)) from None


def _where(k: KLayer, live, inputs) -> str:
    """Where a layer sits, in words: on the input path, inside the backbone or in the head, reading from what."""
    consumers = _consumers(live, inputs)
    by_name = {x.name: x for x in live}

    def reaches_conv(start, step):  # a linear walk up (inputs) or down (consumers) the graph
        seen, stack = set(), list(start)
        while stack:
            name = stack.pop()
            if name in seen:
                continue
            seen.add(name)
            if kind_of(by_name[name]) in ("conv", "sepconv"):
                return True
            stack.extend(step(name))
        return False

    after = reaches_conv(inputs[k.name], lambda n: inputs[n])
    before = reaches_conv([c.name for c in consumers.get(k.name, [])], lambda n: [c.name for c in consumers.get(n, [])])
    where = ("inside the backbone" if after and before else "in the head" if after
             else "on the input path" if before else "apart from the backbone")
    return where + (f", reading from {', '.join(inputs[k.name])}" if inputs[k.name] else "")


def _input_shape(root: KLayer, data_format=None):
    """The input's ``(H, W, C)``, read from ``(N, C, H, W)`` when the model's layers are channels_first."""
    cfg = root.config or {}
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not shape or len(shape) != 4:
        return None
    h, w, c = to_hwc(shape[1:], data_format)
    if c != 3:
        fmt = data_format or CHANNELS_LAST
        where = "(N, C, H, W)" if fmt == CHANNELS_FIRST else "(N, H, W, C)"
        why = f"the model's layers are {fmt}" if data_format else f"no layer records a data_format: {fmt}"
        raise ConversionError(f"input layer {root.name}: expected 3 channels (RGB), found {c}: its shape "
                              f"{tuple(shape)} read as {where}, as {why}")
    return (h, w, c)


def match_names(klayers: list[KLayer], *, variant=None, source="model") -> dict[str, str]:
    """``{our layer name: Keras layer name}`` by the wiring alone.

    Configuration values (epsilon, padding...) are not checked, so a model with a
    planted fault still maps; that is what compare() needs to find the fault.
    """
    _, inputs, live = _collapse(klayers, source)
    roots = [k for k in live if kind_of(k) == "input"]
    if len(roots) != 1:
        raise ConversionError(f"{source}: expected one image input, found {len(roots)} input layers")
    chain = _stage_chain(roots[0], live, inputs)
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, _ = _walk(v, chain[-1] if chain else roots[0], live, inputs, source, check=False)
        except ConversionError as exc:
            failures.append(exc)
            continue
        matched.pop("input")
        matched.update(dict(_head_chain(matched, live, inputs, v)))
        return matched
    raise failures[0]


def _consumers(live, inputs) -> dict[str, list[KLayer]]:
    """{layer name: the layers reading it}, in model order."""
    consumers: dict[str, list[KLayer]] = {}
    for k in live:
        for i in inputs[k.name]:
            consumers.setdefault(i, []).append(k)
    return consumers


def _head_chain(matched, live, inputs, v):
    """[(name, name)] for the single chain of layers after the backbone (names are kept)."""
    consumers = _consumers(live, inputs)
    current = matched[arch.backbone(v)[-1].name]
    chain = []
    while len(consumers.get(current, [])) == 1:
        current = consumers[current][0].name
        chain.append((current, current))
    return chain


def _walk(v, root, live, inputs, source, check=True, data_format=None):
    """Match our backbone table to the Keras graph; return ({ours: theirs}, params)."""
    matched = {"input": root.name}
    used = {root.name}
    params = {}
    consumers = _consumers(live, inputs)
    layers = arch.backbone(v)
    shapes = arch.param_shapes(layers, [])
    for layer in layers:
        srcs = [matched[i] for i in layer.inputs]
        cands = [k for k in consumers.get(srcs[0], [])
                 if k.name not in used and kind_of(k) == layer.kind
                 and sorted(inputs[k.name]) == sorted(srcs)]
        if len(cands) != 1:
            where = ", ".join(srcs)
            raise ConversionError(
                f"{source}: not an Xception ({arch.variant_name(v)}) graph: expected one {layer.kind} "
                f"layer reading from {where} (our {layer.name}), found {len(cands)}")
        k = cands[0]
        matched[layer.name] = k.name
        used.add(k.name)
        if check:
            _check_config(layer, k, source, data_format or CHANNELS_LAST)
            params.update(_layer_params(layer.name, layer.kind, k, shapes, source))
    return matched, params


def _check_config(layer: arch.Layer, k: KLayer, source: str, data_format: str = CHANNELS_LAST):
    cfg = k.config or {}
    what = f"{source}: layer {k.name} (our {layer.name}) does not fit Xception"

    def expect(key, wanted, found):
        if found != wanted:
            raise ConversionError(f"{what}: {key} is {found!r}, expected {wanted!r}")

    def pair(value):
        return tuple(value) if isinstance(value, (list, tuple)) else (value, value)

    if layer.kind in ("conv", "sepconv"):
        expect("filters", layer.filters, cfg.get("filters", layer.filters))
        expect("kernel_size", (layer.kernel_size,) * 2, pair(cfg.get("kernel_size", layer.kernel_size)))
        expect("strides", (layer.strides,) * 2, pair(cfg.get("strides", layer.strides)))
        expect("padding", layer.padding, str(cfg.get("padding", layer.padding)).lower())
        expect("dilation_rate", (1, 1), pair(cfg.get("dilation_rate", 1)))
        expect("use_bias", False, cfg.get("use_bias", False))
        expect("activation", "linear", _activation_name(cfg) or "linear")
        if layer.kind == "sepconv":
            expect("depth_multiplier", 1, cfg.get("depth_multiplier", 1))
    elif layer.kind == "maxpool":
        expect("pool_size", (3, 3), pair(cfg.get("pool_size", 3)))
        expect("strides", (2, 2), pair(cfg.get("strides", 2)))
        expect("padding", "same", str(cfg.get("padding", "same")).lower())
    elif layer.kind == "bn":
        _check_bn(cfg, what, fixed_epsilon=True, axes=CHANNEL_AXES[data_format], data_format=data_format)


# After global pooling, a head's (N, C) features: the channel axis is 1, or -1.
FEATURE_AXES = (-1, 1)


def _one_axis(axis):
    """An axis as Keras 3 (-1) or tf_keras (a one-element list, [1]) records it."""
    return axis[0] if isinstance(axis, list) and len(axis) == 1 else axis


def _check_bn(cfg, what, fixed_epsilon, axes=FEATURE_AXES, data_format=None):
    """BN's epsilon, after checking that it normalises the channels: ``axes`` are the channel axis'
    spellings (``CHANNEL_AXES`` of the data format on a 4-D map, ``FEATURE_AXES`` on pooled features)."""
    axis = _one_axis(cfg.get("axis", -1))
    if axis not in axes:
        on = f"a {data_format} map" if data_format else "pooled (N, C) features"
        raise ConversionError(f"{what}: BatchNormalization axis {axis!r}; expected the channel axis of {on} "
                              f"({' or '.join(map(str, axes))})")
    eps = float(cfg.get("epsilon", CONFIG.bn_epsilon))
    if fixed_epsilon and eps != CONFIG.bn_epsilon:
        raise ConversionError(f"{what}: BatchNormalization epsilon is {eps:g}, expected Keras' "
                              f"{CONFIG.bn_epsilon:g} (Xception's value)")
    return eps


def _bn_arrays(k: KLayer, channels: int, source: str):
    """[gamma, beta, mean, var] from a BN layer with scale/center possibly off."""
    cfg = k.config or {}
    ws = list(k.weights)
    scale, center = cfg.get("scale", True), cfg.get("center", True)
    expected = 2 + int(bool(scale)) + int(bool(center))
    if len(ws) != expected:
        raise ConversionError(f"{source}: layer {k.name} (BatchNormalization) has {len(ws)} weights, "
                              f"expected {expected}")
    dt = ws[0].dtype
    gamma = ws.pop(0) if scale else np.ones(channels, dt)
    beta = ws.pop(0) if center else np.zeros(channels, dt)
    return [gamma, beta, ws[0], ws[1]]


def _layer_params(ours: str, kind: str, k: KLayer, shapes: dict, source: str) -> dict:
    names = [key for key in shapes if key.rsplit("/", 1)[0] == ours]
    if kind == "bn":
        channels = shapes[names[0]][0]
        arrays = _bn_arrays(k, channels, source)
    else:
        arrays = list(k.weights)
    if len(arrays) != len(names):
        raise ConversionError(f"{source}: layer {k.name} (our {ours}) has {len(arrays)} weights, "
                              f"expected {len(names)}")
    out = {}
    for key, a in zip(names, arrays):  # every shape checked before any array is read
        if tuple(a.shape) != tuple(shapes[key]):
            raise ConversionError(f"{source}: shape mismatch in layer {k.name} (our {key}): "
                                  f"expected {tuple(shapes[key])}, found {tuple(a.shape)}")
        out[key] = a
    return out


def _head(matched, live, inputs, v, source, before=()):
    """Follow the single chain of layers after the backbone: the classifier head.

    ``before``: the input and the input stage's layers, matched already.
    """
    consumers = _consumers(live, inputs)
    last = matched[arch.backbone(v)[-1].name]
    used = set(matched.values()) | set(before)
    head, params = [], {}
    features = [layer for layer in arch.backbone(v) if layer.filters][-1].filters  # 2048
    current = last
    while True:
        nxt = [k for k in consumers.get(current, []) if k.name not in used]
        if not nxt:
            break
        if len(nxt) > 1:
            raise ConversionError(f"{source}: the head branches after {current} "
                                  f"({', '.join(k.name for k in nxt)}); expected a single chain")
        k = nxt[0]
        if len(inputs[k.name]) != 1:
            raise ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}) in the head: "
                                  "it has several inputs")
        kind = kind_of(k)
        cfg = k.config or {}
        if kind in ("global_avg_pool", "global_max_pool"):
            if cfg.get("keepdims", False):
                raise ConversionError(f"{source}: layer {k.name} uses keepdims=True; expected (N, C) output")
            head.append({"kind": kind, "name": k.name})
        elif kind == "dense":
            units = int(cfg.get("units", k.weights[0].shape[-1] if k.weights else 0))
            use_bias = bool(cfg.get("use_bias", len(k.weights) == 2))
            act = _activation_name(cfg)
            if act not in arch.ACTIVATIONS:
                raise ConversionError(f"{source}: unsupported activation {act!r} in layer {k.name}")
            head.append({"kind": "dense", "name": k.name, "units": units,
                         "activation": None if act == "linear" else act, "use_bias": use_bias})
            expect = [(features, units)] + ([(units,)] if use_bias else [])
            found = [tuple(w.shape) for w in k.weights]
            if found != expect:
                raise ConversionError(f"{source}: shape mismatch in layer {k.name} (Dense): "
                                      f"expected {expect}, found {found}")
            params[f"{k.name}/kernel"] = k.weights[0]  # read later, in to_npxception
            if use_bias:
                params[f"{k.name}/bias"] = k.weights[1]
            features = units
        elif kind == "bn":
            eps = _check_bn(cfg, f"{source}: layer {k.name}", fixed_epsilon=False)  # on (N, C) features
            head.append({"kind": "batch_norm", "name": k.name, "epsilon": eps})
            for var, a in zip(_BN_VARS, _bn_arrays(k, features, source)):
                if a.shape != (features,):
                    raise ConversionError(f"{source}: shape mismatch in layer {k.name} ({var}): "
                                          f"expected {(features,)}, found {a.shape}")
                params[f"{k.name}/{var}"] = a
        elif kind in ("activation", "relu"):
            act = "relu" if kind == "relu" else _activation_name(cfg)
            head.append({"kind": "activation", "name": k.name, "activation": act})
        elif kind == "softmax":  # layers.Softmax(axis): Activation("softmax") when the axis is the classes'
            if _one_axis(cfg.get("axis", -1)) not in FEATURE_AXES:
                raise ConversionError(f"{source}: layer {k.name} (Softmax) normalises over axis "
                                      f"{cfg.get('axis')!r} of the head's (N, classes) output; npxception's "
                                      "softmax is over the last axis (-1)")
            head.append({"kind": "activation", "name": k.name, "activation": "softmax"})
        else:
            raise ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}) in the head")
        used.add(k.name)
        current = k.name
    if head and not head[0]["kind"].startswith("global_"):
        raise ConversionError(f"{source}: unsupported layer {head[0]['name']} after the backbone: "
                              "the head must start with GlobalAveragePooling2D or GlobalMaxPooling2D")
    leftovers = [k for k in live if k.name not in used]
    if leftovers:
        k = leftovers[0]
        raise ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): "
                              "it is not part of the Xception backbone or its head")
    try:
        arch.validate_head(head)
    except ValueError as exc:
        raise ConversionError(f"{source}: {exc}") from None
    return head, params


# ---------------------------------------------------------------------------
# wiring unknown: Keras' by-order rule
# ---------------------------------------------------------------------------

def _match_by_order(klayers, variant, source, given, official_file=None):
    v = arch.resolve_variant(variant or "keras")
    if v != arch.VARIANTS["keras"]:
        raise ConversionError(
            f"{source}: a weights-only file has no wiring, and only variant='keras' has a defined "
            "weight order; convert the article model from a .keras or full-model .h5 file instead")
    layers = arch.backbone(v)
    shapes = arch.param_shapes(layers, [])
    ours = [layer for layer in layers if layer.kind in ("conv", "sepconv", "bn")]
    theirs = [k for k in klayers if k.weights]
    if len(theirs) < len(ours):
        raise ConversionError(f"{source}: not Xception weights: {len(theirs)} layers carry weights, "
                              f"Xception's backbone has {len(ours)}")
    params = {}
    names = {layer.name: k.name for layer, k in zip(ours, theirs)}
    for n, (layer, k) in enumerate(zip(ours, theirs)):
        label = f"layer #{n} ({layer.name} / {k.name} in the file)"
        try:
            params.update(_layer_params(layer.name, layer.kind, k, shapes, source))
        except ConversionError as exc:
            raise ConversionError(f"{source}: {label}: {str(exc).split(': ', 1)[-1]}") from None
    rest = theirs[len(ours):]
    dense = None
    if len(rest) == 1 and len(rest[0].weights) in (1, 2) and rest[0].weights[0].ndim == 2:
        dense = rest[0]
        units = dense.weights[0].shape[1]
        if dense.weights[0].shape[0] != 2048 or (len(dense.weights) == 2
                                                 and tuple(dense.weights[1].shape) != (units,)):
            raise ConversionError(f"{source}: shape mismatch in layer #{len(ours)} (predictions / {dense.name} "
                                  f"in the file): expected [(2048, units), (units,)], found "
                                  f"{[tuple(w.shape) for w in dense.weights]}")
    elif rest:
        k = rest[0]
        raise ConversionError(f"{source}: layer {k.name} after the Xception backbone (weights "
                              f"{[tuple(w.shape) for w in k.weights]}): a weights-only file records no head "
                              "beyond one (2048, classes) Dense; pass the model's --config model.keras|config.json")
    head, input_shape, notices = _weights_only_head(dense, given, source, official_file)
    if dense is not None:
        name = head[-1]["name"]
        names[name] = dense.name
        params[f"{name}/kernel"] = dense.weights[0]  # read later, in to_npxception
        if len(dense.weights) == 2:
            params[f"{name}/bias"] = dense.weights[1]
        else:
            head[-1]["use_bias"] = False
    return params, v, head, names, input_shape, notices


# The official ImageNet file's head, the only one a weights-only file determines:
# keras.applications.Xception(include_top=True) is avg-pooled, softmax, 299x299. The layout alone
# (a 1000-unit Dense named predictions) does not say it: Xception(classifier_activation=None) or a
# fine-tuned copy saves the same layout, so only the official file itself (its MD5) gets this head.
IMAGENET_CLASSES = 1000
_HEAD_FLAGS = {"pooling": "--pooling avg|max", "input_shape": "--input-shape H,W",
               "classifier_activation": "--classifier-activation softmax|sigmoid|linear|..."}


def _flags(given) -> str:
    return " ".join(_HEAD_FLAGS[k].split()[0] for k in given)


def _official_layout(dense: KLayer) -> bool:
    return dense.name.rsplit("/", 1)[-1] == "predictions" and dense.weights[0].shape[1] == IMAGENET_CLASSES


def _weights_only_head(dense: KLayer | None, given: dict, source: str, official_file=None):
    """``(head, input_shape, notices)`` of a weights-only file: what it determines, plus ``given``; else refuse.

    A bare backbone converts by documented policy as the unpooled backbone at any
    input size (Keras' ``include_top=False, pooling=None``); the file records neither,
    so ``notices`` says so, unless ``given`` or the official file settles them.
    A classifier is determined only by the official ImageNet file with the top
    (``official_file`` True, the caller's MD5 check). Any other classifier,
    the official layout included, needs its pooling, its activation and its input
    size from the user: guessing them changes the answer silently (a
    GlobalMaxPooling head converted as average pooling, a linear classifier given a softmax).
    """
    pooling, shape, act = (given.get(k) for k in ("pooling", "input_shape", "classifier_activation"))
    if pooling not in (None, "avg", "max"):
        raise ConversionError(f"{source}: --pooling: expected avg or max, found {pooling!r}")
    if act is not None and act not in arch.ACTIVATIONS:
        raise ConversionError(f"{source}: --classifier-activation: expected one of "
                              f"{[a for a in arch.ACTIVATIONS if a]}, found {act!r}")
    if shape is not None:
        shape = tuple(shape)
        if len(shape) == 2:
            shape = (*shape, 3)
        low = arch.min_input_size(arch.backbone("keras"))  # weights-only files are variant keras (_match_by_order)
        if len(shape) != 3 or shape[2] != 3 or not all(isinstance(d, int) and d >= low for d in shape[:2]):
            raise ConversionError(f"{source}: --input-shape: expected H,W of at least {low}, found {shape!r}")
    if dense is None:
        if act is not None:
            raise ConversionError(f"{source}: --classifier-activation: the file holds no classifier "
                                  "(a bare backbone)")
        unknown = [flag for key, flag in _HEAD_FLAGS.items() if key != "classifier_activation" and given.get(key)
                   is None]
        notices = [] if official_file is False or not unknown else [
            f"note: {source}: a weights-only backbone does not record the model's "
            f"{' or '.join(f.split()[0].lstrip('-').replace('-', ' ') for f in unknown)}; converted "
            + ("unpooled (Keras' pooling=None)" if pooling is None else f"with {pooling} pooling")
            + (" for any input size" if shape is None else f" at {shape[0]}x{shape[1]}")
            + f". If the model had them, give {' '.join(unknown)}"]
        return arch.keras_head(False, pooling), shape, notices
    official = official_file is True and _official_layout(dense)
    if official:
        pooling, shape, act = pooling or "avg", shape or CONFIG.default_input_shape, act or "softmax"
    missing = [flag for key, flag in _HEAD_FLAGS.items()
               if {"pooling": pooling, "input_shape": shape, "classifier_activation": act}[key] is None]
    if missing:
        units = dense.weights[0].shape[1]
        layout = (" It has the official ImageNet layout, but it is not Keras' official file (whose MD5 "
                  "decides its softmax head), and the layout is also what Xception(classifier_activation=None) "
                  "or a fine-tuned copy saves." if _official_layout(dense) else "")
        raise ConversionError(
            f"{source}: a weights-only file does not determine the model: it holds the backbone and a "
            f"{units}-unit Dense ({dense.name}), but not the head's pooling (average or max), the "
            f"classifier's activation or the input size it was trained at.{layout} Pass the model's "
            f"architecture with --config model.keras|config.json, or give {' '.join(missing)}")
    head = arch.keras_head(False, pooling) + [
        {"kind": "dense", "name": "predictions", "units": int(dense.weights[0].shape[1]),
         "activation": None if act == "linear" else act, "use_bias": True}]
    return head, shape, []
