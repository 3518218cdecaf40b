"""The classifier head: global pooling or flatten, then dense / BatchNormalization / activation layers.

Both the plain forward pass (npxception/forward.py) and the fast plan
(npxception/fast/) run the head through :func:`run_head`, so a head is
executed one way. The head's description is a list of dicts, validated by
:func:`npxception.head_schema.validate_head`.
"""

from __future__ import annotations

import math

import numpy as np

from . import head_schema
from . import ops
from .config import CONFIG


def run_head(head, p, y, impl, captured=None, wanted=(), dense_impl=None):
    """Run ``head`` (a validated list of layer dicts) on the last feature map ``y``.

    p: the model's weights by ``layer/variable``. With ``captured`` (a dict),
    the outputs of the layers named in ``wanted`` are stored into it.
    ``dense_impl``: the dense layers' implementation, if not ``impl``.
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
            y = ops.dense(y, p[f"{n}/kernel"], p.get(f"{n}/bias"), impl=dense_impl or impl)
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
    Flatten gives "hwc" in both data formats (head_schema.py). A
    reshape computes nothing, so the fast and the reference path are this one.
    """
    axes = tuple(1 + "hwc".index(a) for a in order)
    return np.ascontiguousarray(y.transpose(0, *axes)).reshape(y.shape[0], -1)


def activation(y, name, impl):
    """Keras' activations by name, for classifier heads: ``(N, C) -> (N, C)``, in ``y``'s dtype.

    Equations (keras.activations, Keras 3 and tf_keras alike)::

        sigmoid(x) = 1 / (1 + e^-x)            swish(x) = silu(x) = x * sigmoid(x)
        elu(x)     = x if x > 0 else e^x - 1   selu(x)  = 1.0507 * elu_1.6733(x)
        softplus(x) = log(1 + e^x)             softsign(x) = x / (1 + |x|)
        relu6(x)   = min(max(x, 0), 6)         mish(x) = x * tanh(softplus(x))
        gelu(x)    = x / 2 * erfc(-x / sqrt 2)   (approximate=False, both Kerases' default)
        log_softmax(x)_i = x_i - log sum_j e^x_j     log_sigmoid(x) = -softplus(-x)
        exponential(x) = e^x
        hard_sigmoid_keras3(x) = relu6(x + 3) / 6          (Keras 3's "hard_sigmoid")
        hard_sigmoid_keras2(x) = clip(0.2 x + 0.5, 0, 1)   (Keras 1/2's and tf_keras' "hard_sigmoid")
        hard_silu(x) = hard_swish(x) = x * relu6(x + 3) / 6   (Keras 3)

    Each is computed as the TensorFlow backend computes it (keras/src/backend/tensorflow/nn.py,
    tf_keras/backend.py hard_sigmoid), in the same order of operations.
    """
    if name in (None, "linear"):
        return y
    if name == "relu":
        return ops.relu(y, impl=impl)
    if name == "softmax":
        return ops.softmax(y, axis=-1, impl=impl)
    dt = y.dtype
    one = dt.type(1)
    if name == "sigmoid":
        # split by sign so exp never overflows: sigma(x) = 1/(1+e^-x) = e^x/(1+e^x)
        e = np.exp(-np.abs(y))
        return np.where(y >= 0, one / (one + e), e / (one + e)).astype(dt)
    if name == "tanh":
        return np.tanh(y)
    if name in ("swish", "silu"):
        return y * activation(y, "sigmoid", impl)
    if name == "elu":
        return _elu(y, 1.0)
    if name == "selu":  # the constants of Klambauer et al. 2017, as Keras and tf.nn.selu write them
        return (dt.type(1.0507009873554804934193349852946) * _elu(y, 1.6732632423543772848170429916717)).astype(dt)
    if name == "softplus":
        return np.logaddexp(dt.type(0), y)  # log(1 + e^x) without overflow
    if name == "softsign":
        return y / (one + np.abs(y))
    if name == "relu6":
        return np.clip(y, dt.type(0), dt.type(6))
    if name == "mish":
        return y * np.tanh(np.logaddexp(dt.type(0), y))
    if name == "gelu":
        # erfc, not 1 + erf: no cancellation for x << 0 (tf.nn.gelu's form). NumPy has no erfc; a head has
        # N x classes values
        erfc = np.frompyfunc(math.erfc, 1, 1)
        return (dt.type(0.5) * y * erfc(-y / dt.type(math.sqrt(2))).astype(dt)).astype(dt)
    if name == "log_softmax":
        shifted = y - y.max(axis=-1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    if name == "log_sigmoid":
        return -np.logaddexp(dt.type(0), -y)
    if name == "exponential":
        return np.exp(y)
    if name == "hard_sigmoid_keras3":
        return np.clip(y + dt.type(3), dt.type(0), dt.type(6)) / dt.type(6)
    if name == "hard_sigmoid_keras2":
        return np.clip(y * dt.type(0.2) + dt.type(0.5), dt.type(0), one)
    if name in ("hard_silu", "hard_swish"):
        return y * activation(y, "hard_sigmoid_keras3", impl)
    raise ValueError(f"activation: unsupported {name!r}; expected one of {head_schema.ACTIVATIONS}")


def _elu(y, alpha):
    """``x if x > 0 else alpha * (e^x - 1)``, in ``y``'s dtype."""
    return np.where(y > 0, y, y.dtype.type(alpha) * np.expm1(np.minimum(y, 0))).astype(y.dtype)
