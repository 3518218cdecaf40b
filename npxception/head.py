"""The classifier head: global pooling or flatten, then dense / BatchNormalization / activation layers.

Both the plain forward pass (npxception/forward.py) and the fast plan
(npxception/fast/) run the head through :func:`run_head`, so a head is
executed one way. The head's description is a list of dicts, validated by
:func:`npxception.architecture.validate_head`.
"""

from __future__ import annotations

import numpy as np

from . import architecture as arch
from . import ops
from .config import CONFIG


def run_head(head, p, y, impl, captured=None, wanted=()):
    """Run ``head`` (a validated list of layer dicts) on the last feature map ``y``.

    p: the model's weights by ``layer/variable``. With ``captured`` (a dict),
    the outputs of the layers named in ``wanted`` are stored into it.
    """
    for h in head:
        n, kind = h["name"], h["kind"]
        if kind == "global_avg_pool":
            y = ops.global_avg_pool2d(y, impl=impl)
        elif kind == "global_max_pool":
            y = ops.global_max_pool2d(y, impl=impl)
        elif kind == "flatten":
            y = flatten(y, h["order"])
        elif kind == "dense":
            y = ops.dense(y, p[f"{n}/kernel"], p.get(f"{n}/bias"), impl=impl)
            y = activation(y, h.get("activation"), impl)
        elif kind == "batch_norm":
            y = ops.batch_norm(y, p[f"{n}/gamma"], p[f"{n}/beta"], p[f"{n}/moving_mean"],
                               p[f"{n}/moving_variance"], epsilon=h.get("epsilon", CONFIG.bn_epsilon),
                               impl=impl)
        elif kind == "activation":
            y = activation(y, h["activation"], impl)
        if captured is not None and n in wanted:
            captured[n] = y
    return y


def flatten(y, order="hwc"):
    """Keras' ``Flatten`` of a feature map: ``(N, H, W, C) -> (N, H * W * C)``.

    Each image's features in ``order``, the NHWC axes slowest first: "hwc" is
    ``y.reshape(N, -1)``, feature ``(i * W + j) * C + c`` is ``y[n, i, j, c]``. Keras'
    Flatten gives "hwc" in both data formats (architecture.py, the head). A
    reshape computes nothing, so the fast and the reference path are this one.
    """
    axes = tuple(1 + "hwc".index(a) for a in order)
    return np.ascontiguousarray(y.transpose(0, *axes)).reshape(y.shape[0], -1)


def activation(y, name, impl):
    """Keras' activations by name, for classifier heads: ``(N, C) -> (N, C)``."""
    if name in (None, "linear"):
        return y
    if name == "relu":
        return ops.relu(y, impl=impl)
    if name == "softmax":
        return ops.softmax(y, axis=-1, impl=impl)
    one = y.dtype.type(1)
    if name == "sigmoid":
        # split by sign so exp never overflows: sigma(x) = 1/(1+e^-x) = e^x/(1+e^x)
        e = np.exp(-np.abs(y))
        return np.where(y >= 0, one / (one + e), e / (one + e)).astype(y.dtype)
    if name == "tanh":
        return np.tanh(y)
    if name == "swish":
        return y * activation(y, "sigmoid", impl)
    if name == "elu":
        return np.where(y > 0, y, np.expm1(np.minimum(y, 0))).astype(y.dtype)
    raise ValueError(f"activation: unsupported {name!r}; expected one of {arch.ACTIVATIONS}")
