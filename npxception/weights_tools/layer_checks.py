"""What a matched Keras layer must hold: the configuration values that change the
arithmetic (filters, kernel, strides, padding, bias, activation, BatchNormalization's
axis and epsilon), and its weights, counted and shape-checked before any is read.

Used by both rules, the graph walk (:mod:`npxception.weights_tools.walk`) and Keras' by-order
rule (:mod:`npxception.weights_tools.by_order`), and by the head (:mod:`npxception.weights_tools.head`).
"""

from __future__ import annotations

import numpy as np

from npxception import architecture as arch
from npxception import head_schema
from npxception.config import CONFIG

from .errors import ConversionError
from .graph import KLayer
from .kinds import _activation_name
from .layout import CHANNEL_AXES, CHANNELS_LAST

_BN_VARS = ("gamma", "beta", "moving_mean", "moving_variance")


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
    try:
        eps = head_schema.check_bn_epsilon(cfg.get("epsilon", CONFIG.bn_epsilon))
    except ValueError as exc:
        raise ConversionError(f"{what}: BatchNormalization {exc}") from None
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
