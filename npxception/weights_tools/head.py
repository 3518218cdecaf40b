"""Wiring known: the classifier head, the single chain of layers after the backbone.

It must start with global pooling or a ``Flatten`` of the backbone's map (after
BatchNormalization layers on the map, if any: they run there, not commuted past
the pooling, which a negative scale would break for a max), then
Dense, BatchNormalization, Activation, ReLU and Softmax layers in any order
:func:`npxception.head_schema.validate_head` accepts, each checked against the
features it receives. A Flatten records the map it flattens (the model's input
size fixes it, and a variable size is refused: Keras cannot build a Dense after it)
and the order of its features, read from its data_format and the backbone's
(:func:`flatten_order`); a Flatten of pooled ``(N, C)`` features is Keras' identity
and is dropped. Any live layer left over is neither backbone nor head, and is
refused by name.
"""

from __future__ import annotations

from npxception import architecture as arch
from npxception import head_schema

from .errors import ConversionError
from .kinds import _activation_name, kind_of, resolve_activation
from .layer_checks import _BN_VARS, FEATURE_AXES, _bn_arrays, _check_bn, _one_axis
from .layout import CHANNEL_AXES, CHANNELS_FIRST, CHANNELS_LAST, LayoutError, layer_data_format
from .walk import _consumers

# The order of a Flatten's features, as the NHWC map's axes slowest first, by (the backbone's data format,
# the Flatten's). Keras' Flatten moves a channels_first tensor's axis 1 last before reshaping
# (keras/src/layers/reshaping/flatten.py, tf_keras/layers/reshaping/flatten.py; measured in both): a
# channels_first model flattens (H, W, C) as a channels_last one does. A Flatten of the other format than
# its input's reshapes what it is given: (C, H, W) as it lies, or NHWC read as (N, C, H, W) and moved
# to (N, W, C, H).
_FLATTEN_ORDERS = {(CHANNELS_LAST, CHANNELS_LAST): "hwc", (CHANNELS_FIRST, CHANNELS_FIRST): "hwc",
                   (CHANNELS_FIRST, CHANNELS_LAST): "chw", (CHANNELS_LAST, CHANNELS_FIRST): "wch"}


def flatten_order(k, data_format, source) -> str:
    """The order of a Flatten's features (:data:`_FLATTEN_ORDERS`) after a backbone in ``data_format``."""
    backbone = data_format or CHANNELS_LAST
    try:
        own = layer_data_format(k.class_name, k.config)
    except LayoutError as exc:
        raise ConversionError(f"{source}: layer {k.name} (Flatten): {exc}") from None
    if own is None and backbone == CHANNELS_FIRST:
        raise ConversionError(f"{source}: layer {k.name} (Flatten) records no data_format after a channels_first "
                              "backbone: it flattens (H, W, C) if it was channels_first, (C, H, W) if not, and "
                              "the file does not say which. Save the model with a Keras that records it")
    return _FLATTEN_ORDERS[(backbone, own or CHANNELS_LAST)]


def _head(matched, live, inputs, v, source, before=(), map_shape=None, data_format=None, keras_version=None):
    """Follow the single chain of layers after the backbone: the classifier head.

    ``before``: the input and the input stage's layers, matched already. ``map_shape``: the
    backbone's output ``(H', W', C)`` at the model's input size (None per side the model leaves open),
    which a Flatten records; ``data_format``: the backbone's, which orders a Flatten's features;
    ``keras_version``: the version the file records, which says what "hard_sigmoid" computes
    (:func:`~npxception.weights_tools.kinds.resolve_activation`).
    """
    consumers = _consumers(live, inputs)
    last = matched[arch.backbone(v)[-1].name]
    used = set(matched.values()) | set(before)
    head, params = [], {}
    classes = {}  # {head layer: its Keras class}, for messages
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
        reduced = any(h["kind"].startswith("global_") or h["kind"] == "flatten" for h in head)  # (N, features)
        if kind == "flatten" and k.weights:  # Keras' Flatten has none: arrays here would be dropped unread
            raise ConversionError(f"{source}: layer {k.name} (Flatten) holds {len(k.weights)} weight arrays; "
                                  "Keras' Flatten has none")
        if kind == "flatten" and reduced:  # (N, features) already: Keras' Flatten returns them unchanged
            flatten_order(k, data_format, source)  # a data_format it records is still checked
        elif kind == "flatten":
            order = flatten_order(k, data_format, source)
            if map_shape is None or None in map_shape:
                raise ConversionError(
                    f"{source}: layer {k.name} (Flatten) flattens the backbone's feature map, whose size this "
                    "model leaves open (its input takes any size): the number of features would depend on the "
                    "image, and Keras cannot build a Dense after it ('The last dimension of the inputs to a "
                    "Dense layer should be defined'). Give the model a fixed input size, or a Resizing layer "
                    "before the backbone, or pool the map (GlobalAveragePooling2D)")
            head.append({"kind": "flatten", "name": k.name, "map_shape": list(map_shape), "order": order})
            features = map_shape[0] * map_shape[1] * map_shape[2]
        elif kind in ("global_avg_pool", "global_max_pool"):
            if cfg.get("keepdims", False):
                raise ConversionError(f"{source}: layer {k.name} uses keepdims=True; expected (N, C) output")
            head.append({"kind": kind, "name": k.name})
        elif kind == "dense":
            units = int(cfg.get("units", k.weights[0].shape[-1] if k.weights else 0))
            use_bias = bool(cfg.get("use_bias", len(k.weights) == 2))
            act = resolve_activation(_activation_name(cfg), keras_version, f"{source}: layer {k.name} (Dense)")
            if act not in head_schema.ACTIVATIONS:
                accepted = ", ".join(repr(a) for a in head_schema.ACTIVATIONS if a is not None)
                raise ConversionError(f"{source}: unsupported activation {act!r} in layer {k.name} (Dense); "
                                      f"npxception computes {accepted} (or None)")
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
            # on the (N, H', W', C) map before the pooling (head_schema.py), else on (N, C) features
            axes = FEATURE_AXES if reduced else CHANNEL_AXES[data_format or CHANNELS_LAST]
            eps = _check_bn(cfg, f"{source}: layer {k.name}", fixed_epsilon=False, axes=axes,
                            data_format=None if reduced else data_format or CHANNELS_LAST)
            head.append({"kind": "batch_norm", "name": k.name, "epsilon": eps})
            for var, a in zip(_BN_VARS, _bn_arrays(k, features, source)):
                if a.shape != (features,):
                    raise ConversionError(f"{source}: shape mismatch in layer {k.name} ({var}): "
                                          f"expected {(features,)}, found {a.shape}")
                params[f"{k.name}/{var}"] = a
        elif kind in ("activation", "relu"):
            act = "relu" if kind == "relu" else resolve_activation(_activation_name(cfg), keras_version,
                                                                   f"{source}: layer {k.name} (Activation)")
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
        classes[k.name] = k.class_name
        current = k.name
    first = next((h for h in head if h["kind"] != "batch_norm"), head[-1] if head else None)
    if first is not None and not (first["kind"].startswith("global_") or first["kind"] == "flatten"):
        raise ConversionError(f"{source}: unsupported layer {first['name']} ({classes[first['name']]}) on the "
                              "backbone's feature map: the head must reduce the map first, with "
                              "GlobalAveragePooling2D, GlobalMaxPooling2D or Flatten (BatchNormalization layers "
                              "may come before it)")
    leftovers = [k for k in live if k.name not in used]
    if leftovers:
        k = leftovers[0]
        raise ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): "
                              "it is not part of the Xception backbone or its head")
    try:
        head_schema.validate_head(head)
    except ValueError as exc:
        raise ConversionError(f"{source}: {exc}") from None
    return head, params


def _head_chain(matched, live, inputs, v):
    """[(name, name)] for the single chain of layers after the backbone (names are kept)."""
    consumers = _consumers(live, inputs)
    current = matched[arch.backbone(v)[-1].name]
    chain = []
    while len(consumers.get(current, [])) == 1:
        current = consumers[current][0].name
        chain.append((current, current))
    return chain
