"""Keras as the source of a weight file's golden test case (see :mod:`npxception.golden`).

Keras' own output on the golden input is the strongest expectation a file can
carry: it was computed by the framework that trained the weights, not by us.

* :func:`keras_golden` runs a live ``keras.Model`` / ``tf_keras.Model`` on the
  golden input and digests its output and every checked layer, reached by its
  Keras name through :mod:`npxception.keras_side`: inside a nested backbone
  (the keras.io recipe's ``base_model(inputs)``) as at the top level.
* :func:`check_with_keras` opens a source file with :func:`weights_tools.vetting.open_in_keras`
  (vetted, then the framework that wrote it; TensorFlow needed) for ``convert --check-with-keras``.

No framework is imported here: ``keras_side`` imports it when a file is opened,
and a live model brings its own.
"""

from __future__ import annotations

from npxception import golden as gold
from npxception import keras_side

from .errors import ConversionError
from .vetting import open_in_keras


def keras_golden(keras_model, model) -> gold.Golden:
    """The golden of ``model`` (converted from ``keras_model``) with Keras' own activations."""
    framework = keras_side.framework_of(keras_model)
    checked = gold.checked_layers(model)
    pixels = gold.golden_pixels(model)
    dtype = keras_side.keras_dtype(keras_model)
    x = gold.model_input(model, pixels, dtype)
    acts = keras_side.activations(model, keras_model, x, layers=checked[:-1])
    acts[checked[-1]] = keras_side.output(keras_model, x)  # the model's output, however its head ends
    what = "its output" + (f" and {len(acts) - 1} intermediate layers" if len(acts) > 1 else "")
    return gold.make_golden(model, acts, pixels=pixels, precision=dtype.name,
                            source=f"{framework.__name__} {framework.__version__}: the Keras model "
                                   f"{getattr(keras_model, 'name', '?')!r} ({what})",
                            extra_versions={framework.__name__: framework.__version__})


def load_in_keras(src, model, *, config=None):
    """The Keras model ``src`` holds, opened by the framework that wrote it once vetted as compare vets it
    (weights_tools.vetting: the objects inside a layer's config too, which the conversion does not read);
    ConversionError if it cannot be."""
    try:
        return open_in_keras(src, config=config, model=model)
    except ConversionError:  # refused before Keras opened it (weights_tools.vetting): the message says why
        raise
    except ImportError:
        raise ConversionError(f"{src}: --check-with-keras runs the file in Keras, which is not installed: "
                              "pip install 'npxception[test]', or convert without --check-with-keras") from None
    except (ValueError, OSError, KeyError, TypeError) as exc:  # Keras' own errors seldom name the file
        raise ConversionError(f"{src}: --check-with-keras: Keras could not open it: {exc}") from None


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
