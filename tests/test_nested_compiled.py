"""A model compiled and fit, then wrapped in another model and saved: its optimizer state sits inside.

Users train a model, then wrap it for serving (here behind a ``Rescaling`` that takes pixels) and save the
wrapper. Keras 3 then writes the inner model's optimizer under ``layers/<inner>/optimizer/vars/<i>``
(measured with Keras 3.15: 14 arrays for a three-layer inner model, next to its ``layers/...``), and
``load_model(..., compile=False)`` ignores them as it ignores a top-level ``optimizer/``. The converter
refused them as weights belonging to no layer. Measured here against the wrapper's ``predict``.

Tolerance: 1e-5 absolute on probabilities, as tests/test_flatten_head.py: float32 sums over ~36 layers in
another order than Keras' (the 71x71 backbone, BN statistics random), far below a wrong layer's effect.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import keras_predict, randomize

from npxception import weights_tools
from npxception.weights_tools.keras3 import training_state

SIZE = 71
PROB_ATOL = 1e-5


@pytest.fixture(scope="module")
def wrapped(tmp_path_factory):
    import keras

    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3),
                                       pooling="avg")
    out = keras.layers.Dense(3, activation="softmax")(base.output)
    inner = keras.Model(base.input, out)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    # eager: tracing Xception's training graph costs seconds more than one step at 71x71 (keras_corpus)
    inner.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    inner.fit(x, np.array([0, 2]), epochs=1, batch_size=2, verbose=0)
    randomize(inner, seed=1)  # random BN statistics and kernels after the step (the optimizer state stays)
    last = inner.layers[-1]
    kernel, bias = last.get_weights()
    features = keras_predict(keras.Model(inner.input, last.input), x)
    # logits of standard deviation ~1: probabilities away from 0 and 1, so that an error shows in them
    last.set_weights([kernel / float(np.std(features @ kernel)), np.zeros_like(bias)])
    wrapper = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Rescaling(1 / 127.5, offset=-1), inner])
    path = tmp_path_factory.mktemp("nested_compiled") / "served.keras"
    wrapper.save(path)
    pixels = rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32)
    return path, pixels, keras_predict(wrapper, pixels)


def test_a_wrapped_compiled_model_converts_to_what_predict_gives(wrapped):
    path, pixels, expected = wrapped
    model = weights_tools.read(path)
    assert model.takes_pixels
    probs = model(pixels)
    assert np.abs(probs - expected).max() < PROB_ATOL
    assert 0.05 < expected.max() < 0.95  # not saturated: a wrong layer would move them (checked above)


def test_the_inner_optimizer_state_is_reported_as_ignored(wrapped, capsys):
    from npxception.weights_tools.cli import main

    path, _, _ = wrapped
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert "optimizer state:" in out and "ignored" in out, out


def test_only_a_nested_models_own_groups_are_training_state():
    found = training_state(["layers/functional/optimizer/vars/0", "layers/functional/optimizer/vars/2",
                            "layers/functional/layers/dense/vars/0", "layers/rescaling/optimizer/vars/0"],
                           models={"layers/functional"})
    # the nested model's optimizer is training state; its layers' weights are not, and a group named
    # optimizer under a layer that is no model is not either (it is refused as belonging to no layer)
    assert found == {"optimizer state": ["layers/functional/optimizer/vars/0", "layers/functional/optimizer/vars/2"]}
