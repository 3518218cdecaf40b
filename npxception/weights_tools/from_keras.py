"""Convert a live, in-memory Keras model (Keras 3 or tf_keras) to npxception.

The wiring comes from ``keras_model.get_config()`` read as plain data
(:func:`npxception.weights_tools.keras_config.read_keras_config`), the arrays from each
live layer's ``get_weights()``, nested models walked recursively. This module
imports no framework: it only calls methods on the object it is given, so it
works the same for ``keras`` and ``tf_keras`` models.

The Keras model's dtype is kept: a float64 Keras model gives a float64
npxception model (the arrays are passed through as they are). A file saved from
the result carries Keras' own output as its golden test case
(:mod:`npxception.weights_tools.keras_golden`).
"""

from __future__ import annotations

import json
import sys

import numpy as np

from .errors import ConversionError
from .graph import KLayer
from .keras_config import flatten_config
from .keras_golden import keras_golden, sixteen_bit_golden
from .mapping import to_npxception


def _live_layer(model, path):
    """The live layer at ``path`` (nested model names, then the layer name)."""
    layer = model
    for name in path:
        layer = layer.get_layer(name)
    return layer


def keras_layers(keras_model) -> list[KLayer]:
    """The model as a flat :class:`KLayer` list, with wiring and ``get_weights()`` arrays."""
    source = f"keras model {getattr(keras_model, 'name', '?')!r}"
    try:
        config = keras_model.get_config()
    except Exception as exc:  # noqa: BLE001 - a subclassed model has no config
        raise ConversionError(f"{source}: get_config() failed ({type(exc).__name__}: {exc}); "
                              "only Functional and Sequential models can be converted") from None
    if isinstance(config, dict) and "layers" not in config and "config" not in config:
        raise ConversionError(f"{source}: its config has no layer list (a subclassed model?); "
                              "only Functional and Sequential models can be converted")
    # As plain JSON data, exactly what a saved file would hold (tuples become lists).
    config = json.loads(json.dumps(config, default=str))
    klayers, paths, _ = flatten_config(config, source=source)
    for k in klayers:
        if k.class_name == "InputLayer":
            continue  # no weights; Keras 3 Sequential does not even list it
        try:
            layer = _live_layer(keras_model, paths[k.name])
        except (ValueError, KeyError, AttributeError) as exc:
            raise ConversionError(f"{source}: layer {k.name} of the config is not in the model ({exc})") from None
        k.weights = [np.asarray(w) for w in layer.get_weights()]
        k.weight_names = [str(getattr(v, "path", None) or v.name) for v in layer.weights]
    return klayers


def from_keras(keras_model, variant=None, *, dtype_policy=None):
    """An :class:`~npxception.model.XceptionModel` with ``keras_model``'s weights.

    ``keras_model`` is an Xception backbone (``keras.applications.Xception`` or
    the article's model), nested or inline, plus an optional classifier head.
    ``variant`` ("keras", "article" or None to detect it) fixes the architecture.
    ``dtype_policy="float32"`` converts a model that computes in 16 bits (mixed precision), refused without
    it (:mod:`npxception.weights_tools.dtype_policy`).
    Raises :class:`~npxception.weights_tools.errors.ConversionError` naming the first
    layer that does not fit.
    """
    source = f"keras model {getattr(keras_model, 'name', '?')!r}"
    klayers = keras_layers(keras_model)
    # the Keras running the model (keras or tf_keras, already imported by the caller), as a file records it
    package = sys.modules.get(type(keras_model).__module__.split(".")[0])
    model = to_npxception(klayers, variant=variant, source=source,
                          keras_version=getattr(package, "__version__", None), dtype_policy=dtype_policy)
    # The golden a saved file will carry is Keras' own output (our oracle's, checked against Keras at 16-bit
    # precision, for a 16-bit source); Keras runs only if it is saved.
    model.golden_factory = (lambda: sixteen_bit_golden(keras_model, model, source)) if model.source_dtype_policy \
        else (lambda: keras_golden(keras_model, model))
    return model
