"""A framework-neutral view of a Keras model: its layers, their wiring and weights.

Every reader in weights_tools (a live ``keras.Model``, a ``.keras`` archive, a
legacy ``.h5`` full-model or weights-only file) produces a list of
:class:`KLayer` in the model's layer order, with nested sub-models flattened
(a nested model's consumers read from its output layer, its input layer reads
from what fed the nested model). :mod:`npxception.weights_tools.mapping` turns that list
into an npxception model. Nothing here imports TensorFlow or Keras.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import numpy as np


# The class of a layer a file lists without saying what it is: a Keras 3 checkpoint read without config
# references each layer of its model's list, but records nothing of a layer without weights (an Activation,
# a pooling, a Rescaling); weights_tools.by_order counts them against the table.
UNRECORDED = "(class not recorded)"


@dataclass(frozen=True)
class Argument:
    """One argument of an operation node (tf_keras' ``TFOpLambda``, a Keras 3 operation), as its config records it."""
    name: str  # the parameter's name ("y", "x2"), or "#i" for the i-th positional argument
    tensor: str | None = None  # the flat name of the layer whose output it is; None for a constant
    value: object = None  # a constant as plain JSON data: a number, a list, ...
    dtype: str | None = None  # a tensor's or a typed constant's recorded dtype; None for a Python number


@dataclass
class KLayer:
    name: str  # the Keras layer name (auto-names like "conv2d_3" included)
    class_name: str  # "Conv2D", "SeparableConv2D", "BatchNormalization", "Activation", "ReLU", ...
    config: dict | None = None  # the layer's Keras config as plain JSON data; None if unknown
    inbound: list[str] | None = None  # names of the layers feeding it; None if unknown (weights-only files)
    weights: list[np.ndarray] = field(default_factory=list)  # in Keras' get_weights() order
    weight_names: list[str] = field(default_factory=list)  # as stored in the file, for messages
    # An operation node, not a layer: what it calls ("tf.math.truediv" for a TFOpLambda, the module and
    # class for a Keras 3 operation: "keras.src.ops.numpy.TrueDivide") and its arguments in call order.
    function: str | None = None
    arguments: list[Argument] = field(default_factory=list)

    def describe(self) -> str:
        shapes = ", ".join(str(tuple(w.shape)) for w in self.weights)
        return f"{self.name} ({self.class_name}) [{shapes}]"


def dtype_policy(config) -> str | None:
    """A layer's dtype policy name: Keras 3 and tf_keras write a string or ``{"config": {"name": ...}}``."""
    dtype = (config or {}).get("dtype") if isinstance(config, dict) else None
    if dtype is None or isinstance(dtype, str):
        return dtype
    inner = dtype.get("config") if isinstance(dtype, dict) else None
    name = inner.get("name") if isinstance(inner, dict) else None
    return name if isinstance(name, str) else repr(dtype)[:80]


def to_snake_case(name: str) -> str:
    """Keras' ``naming.to_snake_case``: "SeparableConv2D" -> "separable_conv2d"."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


def set_aside(names, classify) -> tuple[dict[str, int], list[str]]:
    """``({what: count}, the rest)``: the names ``classify`` (``-> {what: [names]}``) calls training
    state, counted to be ignored as ``load_model(..., compile=False)`` ignores them, and the others in order."""
    ignored = classify(names)
    state = {n for group in ignored.values() for n in group}
    return {what: len(group) for what, group in ignored.items()}, [n for n in names if n not in state]
