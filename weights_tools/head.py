"""Wiring known: the classifier head, the single chain of layers after the backbone.

It must start with global pooling (a Flatten head depends on the input size and
is refused in :mod:`weights_tools.kinds`), then Dense, BatchNormalization,
Activation, ReLU and Softmax layers in any order :func:`npxception.architecture.validate_head`
accepts, each checked against the features it receives. Any live layer left
over is neither backbone nor head, and is refused by name.
"""

from __future__ import annotations

from npxception import architecture as arch

from .errors import ConversionError
from .kinds import _activation_name, kind_of
from .layer_checks import _BN_VARS, FEATURE_AXES, _bn_arrays, _check_bn, _one_axis
from .walk import _consumers

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


def _head_chain(matched, live, inputs, v):
    """[(name, name)] for the single chain of layers after the backbone (names are kept)."""
    consumers = _consumers(live, inputs)
    current = matched[arch.backbone(v)[-1].name]
    chain = []
    while len(consumers.get(current, [])) == 1:
        current = consumers[current][0].name
        chain.append((current, current))
    return chain
