"""``model.predict(x, batch_size=32)`` as Keras' ``model.predict``, ``npxception.predict``'s
``batch_size`` checked as ``top`` is, and a finite input whose activations overflow refused by name.

* ``model.predict`` runs the network ``batch_size`` images at a time (Keras' default 32) and concatenates:
  checked by recording the batches the network is called with; each row is exactly what ``model(chunk)``
  gives (the same code on the same chunk), and within BATCH_RTOL of ``model(x)`` on the whole batch: our
  GEMM kernels block the work by batch size, so the summation order may differ (tests/test_predict.py
  measures ~1e-7). Against Keras' own ``model.predict(x, batch_size=3)``: LOGIT_RTOL, the float32
  reordering through ~36 layers (test_keras_arguments.py, measured 2e-7..1e-6).
* Overflow: a finite input of 1e38 overflows float32 inside the network; Keras returns NaN silently,
  ours raises ActivationOverflow naming the range; npxception.predict names the image.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import npxception
ActivationOverflow = npxception.ActivationOverflow  # public, as the README names it

SIZE = 71
BATCH_RTOL = 1e-5
LOGIT_RTOL = 1e-4
BAD_SIZES = [(-1, "-1"), (0, "0"), (2.5, "2.5"), (True, "True"), ("8", "'8'"), (None, "None")]


@pytest.fixture(scope="module")
def keras_model():
    """Keras 3's Xception, 71x71, 5 logits, random kernels and BN statistics."""
    import keras
    from keras_helpers import randomize

    return randomize(keras.applications.Xception(weights=None, classes=5, input_shape=(SIZE, SIZE, 3),
                                                 classifier_activation=None), seed=2)


@pytest.fixture(scope="module")
def model(keras_model):
    from npxception.weights_tools import from_keras

    return from_keras(keras_model)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(0).uniform(-1, 1, (7, SIZE, SIZE, 3)).astype(np.float32)


def test_predict_runs_the_network_in_chunks_of_batch_size(model, x, monkeypatch):
    whole = model(x)
    seen = []
    run = model._run_backbone

    def spy(b, wanted, impl):
        seen.append(b.shape[0])
        return run(b, wanted, impl)

    monkeypatch.setattr(model, "_run_backbone", spy)
    out = model.predict(x, batch_size=3)
    assert seen == [3, 3, 1]
    monkeypatch.undo()
    chunks = np.concatenate([model(x[i:i + 3]) for i in range(0, 7, 3)])
    np.testing.assert_array_equal(out, chunks)  # the same code on the same chunks: the same bits
    np.testing.assert_allclose(out, whole, rtol=0, atol=BATCH_RTOL * np.abs(whole).max())
    seen.clear()
    monkeypatch.setattr(model, "_run_backbone", spy)
    model.predict(x)  # Keras' default, 32: one call for 7 images
    assert seen == [7]


def test_predict_matches_keras_model_predict(model, keras_model, x):
    theirs = keras_model.predict(x, batch_size=3, verbose=0)
    err = np.abs(model.predict(x, batch_size=3) - theirs).max()
    assert err <= LOGIT_RTOL * np.abs(theirs).max(), f"max |ours - keras| {err:.3g}"


@pytest.mark.parametrize("value, shown", BAD_SIZES)
def test_batch_size_must_be_a_positive_int(model, x, value, shown):
    """Refused before any work (Keras' predict(batch_size=0) fails deep in its data adapter); a bool is not a
    count, as for ``top``."""
    message = re.escape(f"batch_size: expected a positive int, found {shown}")
    with pytest.raises(ValueError, match=message):
        model.predict(x, batch_size=value)
    with pytest.raises(ValueError, match=message):
        npxception.predict([x[0], x[1]], model=model, batch_size=value)
    with pytest.raises(ValueError, match=message):
        npxception.prediction.predict_files([], model, batch_size=value)


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning",
                            "ignore:invalid value encountered:RuntimeWarning")  # NumPy's, on the way to the NaN
def test_a_finite_input_whose_activations_overflow_is_refused_by_name(model, x):
    big = x[:3].copy()
    big[1] *= 1e38  # finite in float32 (max 3.4e38), but the first convolution's sums are not
    assert np.isfinite(big).all()
    with pytest.raises(ActivationOverflow, match=re.escape("model: image 1: the output is NaN or Inf: activations "
                                                           "overflowed the float32 range (largest 3.403e+38) inside "
                                                           "the network, although the input is finite; the input "
                                                           "the backbone read has values up to 1e+38")) as caught:
        model(big)
    assert caught.value.rows.tolist() == [1] and np.isfinite(caught.value.output[[0, 2]]).all()
    # the layer: the first convolution's sums overflow (1e38 x a kernel summed over 27 taps)
    assert "the first layer whose output is NaN or Inf is block1_conv1 " in str(caught.value), caught.value
    with pytest.raises(ActivationOverflow, match="model: image 1: the output is NaN or Inf"):
        model.predict(big, batch_size=2)  # the second chunk's row 0 is image 1 of x
    with pytest.raises(ActivationOverflow, match="model: image 0: the output is NaN or Inf"):
        model.forward(big[1:2], impl="reference")
    with pytest.raises(ActivationOverflow, match="wider range"):
        model.astype("float32")(big[1:2])
    # npxception.predict feeds [0, 255] pixels; a model with a huge kernel overflows them, named by position
    weights = model.weights
    weights["predictions/kernel"] = np.full_like(weights["predictions/kernel"], 1e38)
    huge = npxception.model.XceptionModel(weights, head=model.head, input_shape=model.input_shape)
    pixels = np.full((SIZE, SIZE, 3), 200, np.uint8)
    with pytest.raises(ActivationOverflow, match=r"model: images\[0\], images\[1\]: the output is NaN or Inf"
                       ".* the first layer whose output is NaN or Inf is predictions "):
        npxception.predict([pixels, pixels], model=huge)
    # review 18: a BN whose gamma is near float32's largest, inside the network, is named (not only the output)
    weights = model.weights
    weights["block2_sepconv1_bn/gamma"] = np.full_like(weights["block2_sepconv1_bn/gamma"], 3e38)
    with pytest.raises(ActivationOverflow, match="the first layer whose output is NaN or Inf is block2_sepconv1_bn "):
        npxception.model.XceptionModel(weights, head=model.head, input_shape=model.input_shape)(x[:1])


def test_a_bool_batch_is_cast_as_keras_3_casts_it(model, keras_model):
    """Keras 3's model.predict and preprocess_input take bool arrays as 0 and 1 (measured: preprocess_input
    gives -0.99215686 for True); ours refused them. Tolerance: LOGIT_RTOL, as above."""
    from keras.applications.xception import preprocess_input as keras_preprocess

    xb = np.random.default_rng(3).random((2, SIZE, SIZE, 3)) < 0.5
    theirs = keras_model.predict(xb, verbose=0)
    err = np.abs(model.predict(xb) - theirs).max()
    assert err <= LOGIT_RTOL * np.abs(theirs).max(), f"max |ours - keras| {err:.3g}"
    np.testing.assert_array_equal(npxception.preprocess_input(xb), keras_preprocess(xb.copy()))


def _batches(x, form):
    """A fresh generator over ``x`` in uneven batches (3, 1, 3), each yielded as ``form`` makes it."""
    return (form(x[i:j]) for i, j in ((0, 3), (3, 4), (4, 7)))


@pytest.mark.parametrize("form", [lambda b: (b,), lambda b: (b, np.zeros(len(b)))], ids=["(x,)", "(x, y)"])
def test_a_generator_of_batches_is_predicted_as_keras_predicts_it(model, keras_model, x, form):
    """Keras 3's predict takes a Python generator of (x,) / (x, y) / (x, y, w) batches, one step each,
    and concatenates (GeneratorDataAdapter; measured here on the same content). Ours gave "found dtype
    object". Tolerance: LOGIT_RTOL, as above; each row is also exactly model(its batch)."""
    theirs = keras_model.predict(_batches(x, form), verbose=0)
    ours = model.predict(_batches(x, form), batch_size=2)
    assert ours.shape == theirs.shape == (7, 5)
    err = np.abs(ours - theirs).max()
    assert err <= LOGIT_RTOL * np.abs(theirs).max(), f"max |ours - keras| {err:.3g}"
    np.testing.assert_array_equal(ours[3:4], model.predict(x[3:4]))


def test_a_generator_keras_refuses_and_other_iterators_are_refused_by_name(model, keras_model, x):
    """Keras refuses a generator of bare arrays or lists ("must return a tuple", measured) and an empty one,
    and does not take other iterators ("Unrecognized data type"): ours names each, and a bad batch by its
    number."""
    for gen, says in (((b for b in (x[:2],)), "must return a tuple"), (([b] for b in (x[:2],)), "must return a tuple"),
                      ((b for b in ()), "must yield at least one batch")):
        with pytest.raises(ValueError, match=says):  # Keras 3.15's words, measured
            keras_model.predict(gen, verbose=0)
    with pytest.raises(TypeError, match=r"x: batch 0 of the generator is a ndarray; expected a tuple \(x,\)"):
        model.predict(b for b in (x[:2],))
    with pytest.raises(TypeError, match=r"x: batch 0 of the generator is a list; expected a tuple \(x,\)"):
        model.predict([b] for b in (x[:2],))
    with pytest.raises(ValueError, match="the generator yielded no batch"):
        model.predict(b for b in ())
    with pytest.raises(TypeError, match=r"x: an iterator \(list_iterator\) is not accepted; pass an array"):
        model.predict(iter([x[:2]]))
    with pytest.raises(ValueError, match=r"x: batch 1 of the generator: expected a batch \(N, H, W, 3\), found a single image"):
        model.predict((b,) for b in (x[:2], x[0]))
