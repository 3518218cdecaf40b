"""Keras as the source of a weight file's golden test case (see :mod:`npxception.golden`).

Keras' own output on the golden input is the strongest expectation a file can
carry: it was computed by the framework that trained the weights, not by us.

* :func:`keras_golden` runs a live ``keras.Model`` / ``tf_keras.Model`` on the
  golden input and digests its output and every checked layer it exposes at its
  top level (a backbone nested inside the model exposes only its output there,
  so such a golden checks the head and the output only; docs/weights-format.md).
* :func:`load_in_keras` opens a source file in Keras for ``convert
  --check-with-keras`` (TensorFlow needed; the only place a framework reads it).

No framework is imported here at module level: the model object brings its own.
"""

from __future__ import annotations

import importlib
import json
import pathlib

import numpy as np

from npxception import golden as gold

from .formats import detect_format
from .keras_config import flatten_config
from .mapping import ConversionError, match_names


def _framework(keras_model):
    return importlib.import_module(type(keras_model).__module__.split(".")[0])  # keras or tf_keras


def _keras_dtype(keras_model) -> np.dtype:
    w = keras_model.weights[0]
    return np.dtype(w.dtype if isinstance(w.dtype, str) else w.dtype.name)


def keras_golden(keras_model, model) -> gold.Golden:
    """The golden of ``model`` (converted from ``keras_model``) with Keras' own activations."""
    framework = _framework(keras_model)
    config = json.loads(json.dumps(keras_model.get_config(), default=str))
    klayers, paths, _ = flatten_config(config, source="keras model")
    names = match_names(klayers, variant=model.variant)  # {ours: flat Keras name}
    checked = gold.checked_layers(model)
    pixels = gold.golden_pixels(model)
    dtype = _keras_dtype(keras_model)
    x = gold.model_input(model, pixels, dtype)
    # Layers of the top-level graph can be model outputs; a nested model's cannot.
    exposed = [n for n in checked[:-1] if n in names and len(paths.get(names[n], ())) == 1]
    acts = {}
    if exposed:
        probe = framework.Model(keras_model.inputs, [keras_model.get_layer(names[n]).output for n in exposed])
        values = probe(x, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        acts = {n: np.asarray(v) for n, v in zip(exposed, values)}
    acts[checked[-1]] = np.asarray(keras_model(x, training=False))
    what = "its output" + (f" and {len(acts) - 1} intermediate layers" if len(acts) > 1 else "")
    return gold.make_golden(model, acts, pixels=pixels, precision=dtype.name,
                            source=f"{framework.__name__} {framework.__version__}: the Keras model "
                                   f"{getattr(keras_model, 'name', '?')!r} ({what})",
                            extra_versions={framework.__name__: framework.__version__})


def load_in_keras(src, model, *, config=None):
    """The Keras model a source file holds (TensorFlow needed), for ``convert --check-with-keras``.

    A ``.keras`` archive loads in Keras 3 (``safe_mode``); a legacy full-model
    ``.h5`` in tf_keras (Keras 3 when tf_keras is missing); a weights-only file
    into the architecture its wiring names (``config``) or, for a standard
    ``keras.applications.Xception`` layout, the one npxception detected.
    """
    where = str(src)
    try:
        import keras
    except ImportError:
        raise ConversionError(f"{where}: --check-with-keras needs Keras (pip install tensorflow)") from None
    try:
        import tf_keras as legacy
    except ImportError:
        legacy = keras
    if detect_format(src) == "zip":
        return keras.saving.load_model(src, compile=False, safe_mode=True)
    try:
        return legacy.models.load_model(src, compile=False)
    except (ValueError, OSError, KeyError, TypeError):
        pass  # a weights-only file: no architecture inside
    if config is not None:
        arch_src = pathlib.Path(config)
        kmodel = (keras.saving.load_model(arch_src, compile=False, safe_mode=True)
                  if detect_format(arch_src) == "zip"
                  else keras.models.model_from_json(arch_src.read_text()))
        kmodel.load_weights(src)
        return kmodel
    standard = [h["kind"] for h in model.head] in ([], ["global_avg_pool"], ["global_max_pool"],
                                                   ["global_avg_pool", "dense"])
    if model.variant_name != "keras" or not standard:
        raise ConversionError(f"{where}: a weights-only file records no architecture; --check-with-keras "
                              "can rebuild only keras.applications.Xception's (pass --config)")
    pooling = {"global_avg_pool": "avg", "global_max_pool": "max"}.get(model.head[0]["kind"]) if model.head else None
    kmodel = legacy.applications.Xception(
        weights=None, include_top=model.include_top, classes=model.classes or 1000,
        pooling=None if model.include_top else pooling,
        input_shape=tuple(model.input_shape) if model.input_shape[0] is not None else None)
    kmodel.load_weights(src)
    return kmodel


def check_with_keras(src, model, *, config=None) -> gold.Golden:
    """Keras' golden for ``model``, converted from ``src``; ConversionError if we disagree with it."""
    golden = keras_golden(load_in_keras(src, model, config=config), model)
    for path in ("fast", "fused"):
        check = gold.run_path(model, golden, path)
        if not check.passed:
            raise ConversionError(gold.mismatch_message(
                str(src), golden, check, advice="npxception and Keras disagree on this file; nothing was "
                "written. Compare them layer by layer with `npxception compare --against {where}`."))
    return golden
