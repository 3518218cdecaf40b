"""Our kind for each Keras layer class, and the refusal of the classes we have none for.

The matcher (:mod:`npxception.weights_tools.graph_match`, :mod:`npxception.weights_tools.head`) compares
kinds, never names or classes: ``Conv2D`` and Keras 1's ``Convolution2D`` are one
kind, ``Dropout`` and augmentation are identities at inference, and the
preprocessing layers are the input stage (:mod:`npxception.weights_tools.preprocessing`).
A class with no kind is refused by name, with the way out.
"""

from __future__ import annotations

import re

from npxception import head_schema

from .errors import ConversionError
from .graph import KLayer
from .keras_layers import not_identity_reason
from .preprocessing import IDENTITY, STAGE, version_tuple

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
    "Flatten": "flatten",  # in the head only (weights_tools.head); anywhere else refused by name
    **{cls: "identity" for cls in IDENTITY},  # Dropout, augmentation: `return inputs` at inference
    **STAGE,  # Rescaling, Normalization, Resizing, CenterCrop, RandomCrop: the input stage
}
# Keras 3 serialises activation="swish" by its function's name, "silu": the same x * sigmoid(x) as tf_keras'
# swish (keras/src/activations/activations.py silu; tf_keras/activations.py swish -> tf.nn.silu).
_ACTIVATION_ALIASES = {"silu": "swish"}


def _activation_name(cfg) -> str | None:
    act = (cfg or {}).get("activation", "linear")
    if isinstance(act, dict):  # Keras 3 may serialise built-ins as {"class_name": "function", "config": "relu"}
        act = act.get("config") if isinstance(act.get("config"), str) else None
    return _ACTIVATION_ALIASES.get(act, act)


def resolve_activation(act, keras_version, where: str):
    """The head's name for the activation a layer's config calls ``act``, read with the Keras version the
    file records (``keras_version``, None when it records none); ConversionError when that does not determine
    the function.

    "hard_sigmoid" is relu6(x + 3) / 6 from Keras 3 on and clip(0.2 x + 0.5, 0, 1) before (Keras 1/2,
    tf_keras): it becomes "hard_sigmoid_keras3" or "hard_sigmoid_keras2" by the version, and is refused
    without one. "hard_silu" and "hard_swish" are Keras 3's only: a file that an earlier Keras wrote
    holds a custom function of that name, whose code it does not record. Any other name is returned as it is.
    """
    version = version_tuple(keras_version)
    if act in head_schema.VERSIONED_ACTIVATIONS:
        if version is None:
            recorded = (f"records the Keras version {keras_version!r}, which is not one" if keras_version is not None
                        else "does not record which Keras wrote it")
            old, new = head_schema.VERSIONED_ACTIVATIONS[act]
            raise ConversionError(
                f"{where}: activation {act!r} is relu6(x + 3) / 6 in Keras 3 and clip(0.2 x + 0.5, 0, 1) in "
                f"Keras 1/2 and tf_keras, and the file {recorded} (its keras_version: .keras metadata.json, "
                f"a .h5 file's root attributes, a config's to_json()). Give a config that records it (the "
                f"model's .keras archive, or a tf_keras to_json()), or, for a weights-only file's classifier, "
                f"--classifier-activation {new} or {old}")
        return head_schema.VERSIONED_ACTIVATIONS[act][1 if version >= (3,) else 0]
    if act in head_schema.KERAS3_HARD_ACTIVATIONS and version is not None and version < (3,):
        raise ConversionError(f"{where}: activation {act!r} is Keras 3's, and Keras {keras_version} wrote the "
                              "file: there it names a custom function, whose code the file does not record")
    return act


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
        return "activation" if act in head_schema.ACTIVATIONS or act in head_schema.VERSIONED_ACTIVATIONS else "unsupported"
    return "unsupported"


# The names Keras gives the layers that compute something on the tensor and that a weights-only file
# records only by name (tf_keras' layer_names, Keras 3's layers/<name> groups): Rescaling (scale and offset
# in its config), Normalization (its weights, but how they apply: axis, invert, in the config), Resizing,
# CenterCrop, a Lambda (code), tf_keras' TFOpLambda (preprocess_input on the symbolic tensor:
# tf.math.truediv, tf.math.subtract, tf.__operators__.add...). A user-named one (Lambda(..., name="prep"))
# is not recognisable in a weights-only file; every auto-named one is.
COMPUTING_LAYER = re.compile(r"(rescaling|normalization|resizing|center_crop|lambda)(_\d+)?|tf\.[A-Za-z0-9_.]+")

# The names Keras gives the global pooling layers, which a weights-only file records (weightless) by name:
# tf_keras' layer_names ("avg_pool", the name keras.applications gives it with include_top, or the auto-name
# "global_average_pooling2d"), Keras 3's layers/<class> groups ("global_max_pooling2d_1"). Which pooling a
# head has is what they say; the user's --pooling is checked against it (by_order._recorded_pooling).
POOLING_LAYER = re.compile(r"(?P<avg>avg_pool|global_average_pooling2d(_\d+)?)|(?P<max>max_pool|global_max_pooling2d(_\d+)?)")
POOLING_CLASS = {"avg": "GlobalAveragePooling2D", "max": "GlobalMaxPooling2D"}


def pooling_of(name: str) -> str | None:
    """"avg" or "max" for a global pooling layer's Keras name (:data:`POOLING_LAYER`), else None."""
    m = POOLING_LAYER.fullmatch(name)
    return None if m is None else "avg" if m.group("avg") else "max"



def _lambda_function(cfg) -> str | None:
    """The name a Lambda's config records for its function, or None (a lambda's bytecode, nothing).
    Keras 3: ``{"module": "builtins", "class_name": "function", "config": "preprocess_input", ...}``;
    tf_keras: ``"function": "preprocess_input"`` with ``"function_type": "function"``."""
    function = (cfg or {}).get("function")
    if isinstance(function, dict) and function.get("class_name") == "function":
        function = function.get("config")
    elif (cfg or {}).get("function_type") != "function":
        return None
    return function if isinstance(function, str) and len(function) < 200 else None


# The module tf_keras records for a Lambda of keras.applications.xception.preprocess_input, whose function it
# stores as marshalled bytecode ("function_type": "lambda"): "tf_keras.src.applications.xception" (Keras 2.x:
# "keras.applications.xception", "keras.src.applications.xception"; tf.keras: "tensorflow.python.keras...").
_XCEPTION_MODULE = re.compile(r"[A-Za-z0-9_.]*\bapplications\.xception")


def _xception_lambda_module(cfg) -> str | None:
    """The module a tf_keras Lambda's config records for its bytecode when it is Keras' applications xception
    module (the function a user wraps from there is its preprocess_input); None otherwise. Only the config's
    strings are read, bounded; the bytecode is never unmarshalled."""
    module = (cfg or {}).get("module")
    if (cfg or {}).get("function_type") == "lambda" and isinstance(module, str) and len(module) < 200 \
            and _XCEPTION_MODULE.fullmatch(module):
        return module
    return None


def _lambda_refusal(k: KLayer, source: str) -> ConversionError:
    """A Lambda's function is code: a file read as data holds at most its name. No --skip-layer hint: a Lambda's
    purpose is to compute something, and skipping preprocess_input ran raw pixels through the backbone."""
    name = _lambda_function(k.config)
    module = _xception_lambda_module(k.config)
    if module is not None or (name is not None and name.rsplit(".", 1)[-1] == "preprocess_input"):
        recorded = (f"tf_keras records its function as Python bytecode from module {module!r} (Keras' "
                    "xception.preprocess_input, wrapped in a Lambda), which a file read as data does not run "
                    "(Keras runs it only outside its safe mode)" if module is not None else
                    f"Keras records only its function's name, {name!r} (Keras 3 writes {{\"module\": "
                    "\"builtins\", \"config\": \"preprocess_input\"}), not the function, so neither npxception "
                    "nor Keras itself can load it from the file")
        return ConversionError(
            f"{source}: unsupported layer {k.name} (Lambda): {recorded}. Rebuild the "
            "model with preprocess_input called on the tensor (x = keras.applications.xception."
            "preprocess_input(inputs)) or with layers.Rescaling(1 / 127.5, offset=-1) in its place, copy the "
            "weights into it (new_model.set_weights(model.get_weights()), or load_weights of the trained "
            "file), save it and convert that")
    recorded = f"only its name, {name!r}" if name is not None else "its code (or nothing)"
    return ConversionError(
        f"{source}: unsupported layer {k.name} (Lambda): Keras records {recorded} for a Lambda's function, which a "
        "file read as data cannot run. Rebuild the model with that computation as Keras layers or as "
        "operations on the tensor, copy the weights into it (set_weights), save it and convert that")


def _unsupported(k: KLayer, source: str) -> ConversionError:
    if k.class_name == "Lambda":
        return _lambda_refusal(k, source)
    why = ("npxception converts an Xception backbone; before it the "
           "layers Rescaling, Normalization, Resizing, CenterCrop, RandomCrop, Keras' augmentation layers that "
           "return their input at inference (" + ", ".join(sorted(c for c in IDENTITY if c.startswith("Rand")
                                                                   or c in ("AugMix", "Solarization", "MixUp", "CutMix")))
           + "), Dropout and noise layers, and arithmetic with a number (preprocess_input's); after it a head of "
           "GlobalAverage/MaxPooling2D or Flatten, Dense, Dropout, Activation, ReLU, Softmax and BatchNormalization")
    if not_identity_reason(k.class_name):  # a known computation: --skip-layer would change the answer
        return ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): {why}. A "
                               f"{k.class_name} is not an identity at inference ({not_identity_reason(k.class_name)}); "
                               "npxception cannot reproduce this model")
    return ConversionError(f"{source}: unsupported layer {k.name} ({k.class_name}): {why}. Rebuild the model "
                           f"without it, or, if it is an identity at inference, pass --skip-layer {k.name}")
