"""The head's schema: what may follow the backbone's last feature map, as plain dicts.

A head is a short list of dicts (stored as JSON in weight files): pooling or flatten, dense,
batch_norm and activation steps, with the activations and flatten orders Keras can write. This module
says which heads are valid (:func:`validate_head`), builds the ones ``keras.applications.Xception``
builds (:func:`keras_head`) and answers questions about one (:func:`map_batch_norms`,
:func:`flatten_step`). :mod:`npxception.head` computes them.

Dependencies point one way: :mod:`npxception.architecture` imports this module (its ``trace`` sizes
the head, and a batch_norm before the pooling runs on the map), and this module needs nothing of
the architecture's table: a head is described without the backbone it sits on, so the architecture
table reads as the paper's figure and the head's rules live here.
"""

from __future__ import annotations

from typing import NamedTuple

from .untrusted import short_repr

# A head is a short list of plain dicts (it is stored as JSON in weight files):
#   {"kind": "global_avg_pool" | "global_max_pool", "name": ...}
#   {"kind": "flatten", "name": ..., "map_shape": [H', W', C], "order": "hwc"}
#   {"kind": "dense", "name": ..., "units": int, "activation": str|None, "use_bias": bool}
#   {"kind": "batch_norm", "name": ..., "epsilon": float}
#   {"kind": "activation", "name": ..., "activation": str}
# Dropout is the identity at inference and is not kept.
#
# A head reduces the map once, by one global pooling or one flatten; BatchNormalization layers
# may come before it (the Kaggle head ``base.output -> BN -> GAP -> Dense``) and run on the
# (N, H', W', C) map, per channel as Keras computes them there. Exact for GAP and GMP alike; commuting
# such a BN past the pooling would be exact for GAP only (a negative gamma turns a max into a min). A flatten is Keras' Flatten on the
# backbone's (N, H', W', C) map: the features of each image in ``order`` (a permutation of
# "hwc": the NHWC axes, slowest first). Keras' Flatten gives "hwc" in both data formats (its
# channels_first Flatten moves the channels last before reshaping, keras/src/layers/reshaping/
# flatten.py, tf_keras alike); another order comes only from a Flatten whose data_format is not
# the backbone's (weights_tools.head). The Dense after it has H' * W' * C input rows, so a
# flatten fixes the map it was built for, and with it the model's input size: ``map_shape``.

HEAD_KINDS = ("global_avg_pool", "global_max_pool", "flatten", "dense", "batch_norm", "activation")
# Keras' activations by name that make sense on logits (head.activation computes each). "silu" is Keras 3's
# name for "swish", "hard_swish" its alias of "hard_silu" (x * relu6(x + 3) / 6, Keras 3 only). "hard_sigmoid"
# is two functions: Keras 3's relu6(x + 3) / 6, Keras 1/2's and tf_keras' clip(0.2 x + 0.5, 0, 1), and a
# head's name does not say which Keras wrote it; a head holds one of the two by its own name, which the
# converter picks by the Keras version the file records (weights_tools.kinds.resolve_activation).
ACTIVATIONS = (None, "linear", "relu", "softmax", "sigmoid", "tanh", "swish", "silu", "elu", "gelu", "softplus",
               "softsign", "relu6", "selu", "mish", "log_softmax", "log_sigmoid", "exponential",
               "hard_sigmoid_keras3", "hard_sigmoid_keras2", "hard_silu", "hard_swish")
# {a Keras name that means different functions in Keras 3 and before: (our name for Keras 1/2's, for Keras 3's)}
VERSIONED_ACTIVATIONS = {"hard_sigmoid": ("hard_sigmoid_keras2", "hard_sigmoid_keras3")}
# Keras 3's hard activations, which Keras 1/2 and tf_keras do not define: in a file they wrote, such a name is a
# custom function of the user's, not this one
KERAS3_HARD_ACTIVATIONS = ("hard_silu", "hard_swish")


def versioned_activation_hint(name) -> str:
    """For a name in VERSIONED_ACTIVATIONS: the two functions it means and the names that say which."""
    old, new = VERSIONED_ACTIVATIONS[name]
    return (f"{name!r} is relu6(x + 3) / 6 in Keras 3 and clip(0.2 x + 0.5, 0, 1) in Keras 1/2 and tf_keras; "
            f"pass {new!r} or {old!r}")


FLATTEN_ORDERS = ("hwc", "hcw", "whc", "wch", "chw", "cwh")  # the six permutations of the NHWC axes
# Keras computes BatchNormalization in the model's float32, where a larger epsilon is inf: the layer
# then outputs beta whatever its input (measured, Keras 3 and tf_keras, epsilon 1e308 and 3e38).
FLOAT32_MAX = 3.4028234663852886e38  # np.finfo(np.float32).max


def check_bn_epsilon(eps) -> float:
    """A BatchNormalization epsilon as a float: a finite real number >= 0 that float32 holds.
    Raise ValueError saying what was found (callers name the file and layer)."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float)):
        raise ValueError(f"epsilon must be a real number >= 0, found {short_repr(eps)}")
    # compared as it is, never converted first: an int of 400 digits is no float (OverflowError); NaN fails both
    if not 0 <= eps <= FLOAT32_MAX:
        raise ValueError(f"epsilon must be a finite real number >= 0 that float32 holds (at most "
                         f"{FLOAT32_MAX:.4g}; Keras computes it in float32, where a larger one is inf and "
                         f"the layer ignores its input), found {short_repr(eps)}")
    return float(eps)


def keras_head(include_top=True, pooling=None, classes=1000, classifier_activation="softmax"):
    """The head ``keras.applications.Xception`` builds for these arguments."""
    if include_top:
        return [
            {"kind": "global_avg_pool", "name": "avg_pool"},
            {"kind": "dense", "name": "predictions", "units": int(classes),
             "activation": classifier_activation, "use_bias": True},
        ]
    if pooling == "avg":
        return [{"kind": "global_avg_pool", "name": "avg_pool"}]
    if pooling == "max":
        return [{"kind": "global_max_pool", "name": "max_pool"}]
    return []


def validate_head(head) -> list[dict]:
    """Check a head description; return it as a list of dicts. Raise ValueError naming the fault."""
    if not isinstance(head, (list, tuple)):
        raise ValueError(f"head: expected a list of layer dicts, found {type(head).__name__}")
    reduced = False  # the map has become (N, features): by global pooling or flatten
    out = []
    for i, layer in enumerate(head):
        if not isinstance(layer, dict) or "kind" not in layer or "name" not in layer:
            raise ValueError(f"head[{i}]: expected a dict with 'kind' and 'name', found {layer!r}")
        kind = layer["kind"]
        if kind not in HEAD_KINDS:
            raise ValueError(f"head[{i}] ({layer['name']}): unsupported kind {kind!r}; "
                             f"expected one of {HEAD_KINDS}")
        if kind.startswith("global_") or kind == "flatten":
            if reduced:
                raise ValueError(f"head[{i}] ({layer['name']}): {kind} after {out[0]['name']} "
                                 f"({out[0]['kind']}); a head reduces the feature map once")
            reduced = True
        elif not reduced and kind != "batch_norm":  # a batch_norm before it runs on the map
            raise ValueError(f"head[{i}] ({layer['name']}): {kind} before global pooling; "
                             "a head must start with global_avg_pool, global_max_pool or flatten "
                             "(after batch_norm layers on the map, if any)")
        if kind == "flatten":
            _check_flatten(i, layer)
        if kind == "batch_norm" and "epsilon" in layer:
            try:
                check_bn_epsilon(layer["epsilon"])
            except ValueError as exc:
                raise ValueError(f"head[{i}] ({layer['name']}): batch_norm {exc}") from None
        if kind == "dense" and (not isinstance(layer.get("units"), int) or layer["units"] < 1):
            raise ValueError(f"head[{i}] ({layer['name']}): units must be a positive int, "
                             f"found {layer.get('units')!r}")
        if kind in ("dense", "activation") and layer.get("activation") not in ACTIVATIONS:
            raise ValueError(f"head[{i}] ({layer['name']}): activation must be one of "
                             f"{ACTIVATIONS}, found {layer.get('activation')!r}")
        out.append(dict(layer))
    if out and not reduced:  # batch_norm alone: a normalised map, which no model of the converter ends with
        raise ValueError(f"head: {out[-1]['name']} ({out[-1]['kind']}) on the feature map is not followed by "
                         "global_avg_pool, global_max_pool or flatten")
    return out


def map_batch_norms(head) -> list[dict]:
    """The head's batch_norm steps before its pooling or flatten: they run on the (N, H', W', C) map."""
    out = []
    for h in head:
        if h["kind"] != "batch_norm":
            break
        out.append(h)
    return out


def _check_flatten(i, layer) -> None:
    shape = layer.get("map_shape")
    if not (isinstance(shape, (list, tuple)) and len(shape) == 3
            and all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 16 for d in shape)):
        raise ValueError(f"head[{i}] ({layer['name']}): flatten needs map_shape, the [H', W', C] feature map "
                         f"it was built for (sizes in [1, 65536]), found {layer.get('map_shape')!r}")
    if layer.get("order") not in FLATTEN_ORDERS:
        raise ValueError(f"head[{i}] ({layer['name']}): flatten order must be one of {FLATTEN_ORDERS}, "
                         f"found {layer.get('order')!r}")


def output_activation(head) -> str | None:
    """What a head's last layer outputs: its activation (``"softmax"``, ``"sigmoid"``...), None for plain
    values (a Dense without one: logits; a BatchNormalization; a head that is only pooling)."""
    last = head[-1] if head else {}
    act = last.get("activation") if last.get("kind") in ("dense", "activation") else None
    return None if act == "linear" else act


class DecisionRule(NamedTuple):
    """Keras' yes/no decision on one output unit: ``value > threshold`` means class 1, else class 0."""

    threshold: float
    value: str  # what the number is: "logit" or "probability"
    text: str  # the rule as compare prints it, of two heads' values: "z > 0" or "p > 0.5" (predict names the
    # one value it prints: "logit > 0")


def decision_rule(activation) -> DecisionRule | None:
    """The yes/no rule for an output unit whose activation is ``activation`` (a head's
    :func:`output_activation`): a logit (None, "linear") is class 1 when z > 0, a sigmoid's probability
    when p > 0.5, as Keras reads a ``Dense(1)`` head trained on ``label_mode="binary"`` labels (the keras.io
    recipe's ``BinaryCrossentropy(from_logits=True)``: the probability of label 1 is sigmoid(z), over 0.5
    exactly when z > 0; with a sigmoid head, ``binary_accuracy``'s 0.5). None for any other activation: its threshold is the
    user's choice (tanh, relu...), and a softmax over one unit is always 1. Both ``compare`` (the
    agreement of two heads' decisions) and ``predict`` (the class it prints) decide with this rule."""
    act = None if activation == "linear" else activation
    if act is None:
        return DecisionRule(0.0, "logit", "z > 0")
    if act == "sigmoid":
        return DecisionRule(0.5, "probability", "p > 0.5")
    return None


def flatten_step(head) -> dict | None:
    """The head's flatten step, or None: a model with one takes only the input size that gives its map."""
    return next((h for h in head if h["kind"] == "flatten"), None)
