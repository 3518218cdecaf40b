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

Explicit list of transforms: none. Keras' kernel layouts are npxception's
layouts ((KH, KW, C_in, C_out), depthwise (KH, KW, C_in, M), dense (C_in, units)),
so every array is copied as it is.
"""

from __future__ import annotations

import itertools

import numpy as np

from npxception import architecture as arch
from npxception.config import CONFIG
from npxception.model import XceptionModel

from .graph import KLayer


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
    "Dropout": "dropout",
    "SpatialDropout2D": "dropout",
    "GaussianDropout": "dropout",
    "AlphaDropout": "dropout",
}
_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


def _activation_name(cfg) -> str | None:
    act = (cfg or {}).get("activation", "linear")
    if isinstance(act, dict):  # Keras 3 may serialise built-ins as {"class_name": "function", "config": "relu"}
        act = act.get("config") if isinstance(act.get("config"), str) else None
    return act


def kind_of(layer: KLayer) -> str:
    """Our kind for a Keras layer, or "unsupported"."""
    if layer.class_name in _KINDS:
        return _KINDS[layer.class_name]
    cfg = layer.config or {}
    if layer.class_name == "ReLU":
        plain = (cfg.get("max_value") in (None,) and float(cfg.get("negative_slope", 0) or 0) == 0
                 and float(cfg.get("threshold", 0) or 0) == 0)
        return "relu" if plain else "unsupported"
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
                  dtype=None, labels=None) -> XceptionModel:
    """Convert a KLayer list to an :class:`XceptionModel`; raise :class:`ConversionError` if it is not Xception."""
    if not klayers:
        raise ConversionError(f"{source}: no layers found")
    wired = all(k.inbound is not None for k in klayers)
    if wired:
        params, v, head, in_shape, names = _match_graph(klayers, variant, source)
    else:
        params, v, head, names = _match_by_order(klayers, variant, source)
        in_shape = None
    if input_shape is None:
        input_shape = in_shape
    if input_shape is None or input_shape[0] is None:
        # A classifier was trained at one size; Keras' Xception top is 299x299.
        has_dense = any(h["kind"] == "dense" for h in head)
        input_shape = CONFIG.default_input_shape if has_dense and input_shape is None else (None, None, 3)
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
                              labels=labels, source=source)
    except (ValueError, TypeError) as exc:
        raise ConversionError(f"{source}: {exc}") from None
    # {our layer name: the source's layer name}: how compare() finds Keras' auto-named layers.
    model.source_layer_names = names
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


def _collapse(klayers: list[KLayer], source: str):
    """Index layers by name and route around identity layers (nested InputLayers, Dropout)."""
    by_name = {}
    for k in klayers:
        if k.name in by_name:
            raise ConversionError(f"{source}: two layers are named {k.name!r}")
        by_name[k.name] = k

    def resolve(name, seen=()):
        k = by_name.get(name)
        if k is None:
            raise ConversionError(f"{source}: layer input {name!r} names no layer")
        kind = kind_of(k)
        if (kind == "input" and k.inbound) or kind == "dropout":
            if len(k.inbound or []) != 1 or name in seen:
                raise ConversionError(f"{source}: {k.name} ({k.class_name}) must have exactly one input")
            return resolve(k.inbound[0], seen + (name,))
        return name

    inputs = {k.name: [resolve(i) for i in k.inbound] for k in klayers}
    live = [k for k in klayers if not ((kind_of(k) == "input" and k.inbound) or kind_of(k) == "dropout")]
    return by_name, inputs, live


def _match_graph(klayers, variant, source):
    by_name, inputs, live = _collapse(klayers, source)
    roots = [k for k in live if kind_of(k) == "input"]
    if len(roots) != 1:
        raise ConversionError(f"{source}: expected one image input, found {len(roots)} input layers")
    unsupported = [k for k in live if kind_of(k) == "unsupported"]
    if unsupported:
        k = unsupported[0]
        raise ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}); npxception converts "
                              "an Xception backbone plus a head of GlobalAverage/MaxPooling2D, Dense, "
                              "Dropout, Activation and BatchNormalization")
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, params = _walk(v, roots[0], live, inputs, source)
        except ConversionError as exc:
            failures.append((v, exc))
            continue
        head, head_params = _head(matched, live, inputs, v, source)
        params.update(head_params)
        matched.pop("input")
        matched.update({h["name"]: h["name"] for h in head})
        return params, v, head, _input_shape(roots[0]), matched
    v, exc = failures[0]
    raise ConversionError(str(exc)) from None


def _input_shape(root: KLayer):
    cfg = root.config or {}
    shape = cfg.get("batch_shape") or cfg.get("batch_input_shape")
    if not shape or len(shape) != 4:
        return None
    h, w, c = shape[1:]
    if c != 3:
        raise ConversionError(f"input layer {root.name}: expected 3 channels (RGB), found {c}")
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
    failures = []
    for v in _candidate_variants(variant):
        try:
            matched, _ = _walk(v, roots[0], live, inputs, source, check=False)
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


def _walk(v, root, live, inputs, source, check=True):
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
            _check_config(layer, k, source)
            params.update(_layer_params(layer.name, layer.kind, k, shapes, source))
    return matched, params


def _check_config(layer: arch.Layer, k: KLayer, source: str):
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
        if cfg.get("data_format", "channels_last") != "channels_last":
            raise ConversionError(f"{what}: data_format {cfg.get('data_format')!r}; expected channels_last")
    elif layer.kind == "maxpool":
        expect("pool_size", (3, 3), pair(cfg.get("pool_size", 3)))
        expect("strides", (2, 2), pair(cfg.get("strides", 2)))
        expect("padding", "same", str(cfg.get("padding", "same")).lower())
    elif layer.kind == "bn":
        _check_bn(cfg, what, fixed_epsilon=True)


def _check_bn(cfg, what, fixed_epsilon):
    axis = cfg.get("axis", -1)
    axis = axis[0] if isinstance(axis, list) and len(axis) == 1 else axis
    if axis not in (-1, 3, 1) or (axis == 1 and cfg.get("_rank", 4) == 4):
        raise ConversionError(f"{what}: BatchNormalization axis {axis!r}; expected the channel axis (-1)")
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


def _head(matched, live, inputs, v, source):
    """Follow the single chain of layers after the backbone: the classifier head."""
    consumers = _consumers(live, inputs)
    last = matched[arch.backbone(v)[-1].name]
    used = set(matched.values())
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
            eps = _check_bn(cfg, f"{source}: layer {k.name}", fixed_epsilon=False)
            head.append({"kind": "batch_norm", "name": k.name, "epsilon": eps})
            for var, a in zip(_BN_VARS, _bn_arrays(k, features, source)):
                if a.shape != (features,):
                    raise ConversionError(f"{source}: shape mismatch in layer {k.name} ({var}): "
                                          f"expected {(features,)}, found {a.shape}")
                params[f"{k.name}/{var}"] = a
        elif kind in ("activation", "relu"):
            act = "relu" if kind == "relu" else _activation_name(cfg)
            head.append({"kind": "activation", "name": k.name, "activation": act})
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

def _match_by_order(klayers, variant, source):
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
    head: list[dict] = []
    if len(rest) == 1 and len(rest[0].weights) in (1, 2) and rest[0].weights[0].ndim == 2:
        k = rest[0]
        units = k.weights[0].shape[1]
        if k.weights[0].shape[0] != 2048 or (len(k.weights) == 2 and tuple(k.weights[1].shape) != (units,)):
            raise ConversionError(f"{source}: shape mismatch in layer #{len(ours)} (predictions / {k.name} "
                                  f"in the file): expected [(2048, units), (units,)], found "
                                  f"{[tuple(w.shape) for w in k.weights]}")
        head = arch.keras_head(True, None, units, "softmax")
        names["predictions"] = k.name
        params["predictions/kernel"] = k.weights[0]  # read later, in to_npxception
        if len(k.weights) == 2:
            params["predictions/bias"] = k.weights[1]
        else:
            head[-1]["use_bias"] = False
    elif rest:
        k = rest[0]
        raise ConversionError(f"{source}: unsupported layer {k.name} after the Xception backbone "
                              f"(weights {[tuple(w.shape) for w in k.weights]}); a weights-only file "
                              "may end in the (2048, classes) predictions layer only")
    return params, v, head, names
