"""Keras as the source of a weight file's golden test case (see :mod:`npxception.golden`).

Keras' own output on the golden input is the strongest expectation a file can
carry: it was computed by the framework that trained the weights, not by us.

* :func:`keras_golden` runs a live ``keras.Model`` / ``tf_keras.Model`` on the
  golden input and digests its output and every checked layer, reached by its
  Keras name through :mod:`npxception.keras_side`: inside a nested backbone
  (the keras.io recipe's ``base_model(inputs)``) as at the top level.
* :func:`check_with_keras` opens a source file with :func:`npxception.weights_tools.vetting.open_in_keras`
  (vetted, then the framework that wrote it; TensorFlow needed) for ``convert --check-with-keras``.

No framework is imported here: ``keras_side`` imports it when a file is opened,
and a live model brings its own.
"""

from __future__ import annotations

import dataclasses

from npxception import golden as gold
from npxception import keras_side
from npxception.dtype_policy import SIXTEEN_BIT, describe
from npxception.extras import pip_install

from .errors import ConversionError
from .vetting import open_in_keras

# --check-with-keras on a source that computed in 16 bits: the golden's deviation (max|ours - Keras'| over
# the digest, relative to the layer's max|x|) allowed by the arithmetic's dtype. Measured on 71x71 Xceptions
# fit one step (docs/keras-recipe.md#mixed-precision): float16 (Keras 3 and tf_keras mixed_float16, pure
# float16) at most 5.5e-3, 11 unit round-offs (2^-11) compounded over the 36 layers; mixed_bfloat16 (Keras 3
# and tf_keras) 7.0e-2, 18 of its (2^-8). 2e-2 and 0.2 leave ~3.6x and ~2.9x; ours is within 8e-6 of the
# float64 oracle there, so the whole deviation is Keras' rounding. A pointwise kernel 50% off moves float16's
# residual add past it at once, bfloat16's two blocks on (0.22): compare's local errors are the finer check.
SIXTEEN_BIT_RTOL = {"float16": 2e-2, "bfloat16": 0.2}


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
    except keras_side.FrameworkError as exc:  # the framework's own words, one bounded line, after the file's name
        raise ConversionError(f"{src}: --check-with-keras: {exc.framework} could not open it "
                              f"({exc.detail})") from None
    except ImportError:
        raise ConversionError(f"{src}: --check-with-keras runs the file in Keras, which is not installed: "
                              f"{pip_install('keras')}, or convert without --check-with-keras") from None
    except (ValueError, OSError, KeyError, TypeError) as exc:  # Keras' own errors seldom name the file
        raise ConversionError(f"{src}: --check-with-keras: Keras could not open it: {exc}") from None


def check_with_keras(src, model, *, config=None) -> gold.Golden:
    """Keras' golden for ``model``, converted from ``src``; ConversionError if we disagree with it.

    A model whose source computed in 16 bits (``model.source_dtype_policy``) is checked against Keras at
    that precision (:func:`sixteen_bit_golden`), and carries our float64 oracle's golden.
    """
    keras_model = load_in_keras(src, model, config=config)
    if model.source_dtype_policy:
        return sixteen_bit_golden(keras_model, model, str(src))
    golden = keras_golden(keras_model, model)
    for path in ("fast", "fused"):
        check = gold.run_path(model, golden, path)
        if not check.passed:
            raise ConversionError(gold.mismatch_message(
                str(src), golden, check, advice=ADVICE))
    return golden


ADVICE = ("npxception and Keras disagree on this file; nothing was written. Compare them layer by layer with "
          "`npxception compare --against {where}`.")


def sixteen_bit_golden(keras_model, model, where: str) -> gold.Golden:
    """The golden of ``model``, converted (to compute in float32) from ``keras_model``, which computes in the
    16-bit policy ``model.source_dtype_policy``: ConversionError unless every checked layer of ours is within
    that precision's tolerance (:data:`SIXTEEN_BIT_RTOL`) of Keras'.

    Keras' 16-bit answers cannot certify our float32 kernels at the golden's 1e-4 on every later load,
    so the golden kept is our float64 oracle's, its source naming the Keras check it passed.
    """
    dtype = SIXTEEN_BIT[model.source_dtype_policy]
    tol = SIXTEEN_BIT_RTOL[dtype]
    theirs = keras_golden(keras_model, model)
    theirs = dataclasses.replace(theirs, rtol={k: tol for k in theirs.rtol})
    worst = 0.0
    for path in ("fast", "fused"):
        check = gold.run_path(model, theirs, path)
        if not check.passed:
            raise ConversionError(gold.mismatch_message(where, theirs, check, advice=(
                f"The source computes in {describe(model.source_dtype_policy)}, and the tolerance is its "
                f"rounding's ({tol:g}); this is more. " + ADVICE)))
        worst = max(worst, check.worst.deviation)
    ours = gold.reference_golden(model)
    return dataclasses.replace(ours, source=(
        f"{ours.source}; checked against {theirs.source}, which computes in {model.source_dtype_policy}: "
        f"agreed within {worst:.2g} of each layer's max|x| (tolerance {tol:g})"))
