"""A converted model keeps its Keras model's name (review 26, F7).

``model.name`` was always "xception" after conversion: a ``keras.Model(..., name="renamed_model")``
around a nested Xception came out under the nested model's name, or Keras' default. The name every
config records (its top-level ``config.name``) is now the converted model's, and survives save/load.
"""

from __future__ import annotations

import numpy as np
import pytest

import npxception
from keras_helpers import keras_predict, randomize
from npxception import weights_tools

SIZE = 71
# float32 both sides from the same weights: ~1e-7 relative measured on these; 1e-5 catches a wrong layer
RTOL = 1e-5


@pytest.fixture(scope="module")
def renamed(tmp_path_factory):
    keras = pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("renamed")
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), pooling="avg")
    inputs = keras.Input((SIZE, SIZE, 3))
    model = randomize(keras.Model(inputs, keras.layers.Dense(2, name="cls")(base(inputs)), name="renamed_model"),
                      seed=7)
    x = np.random.default_rng(7).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    model.save(str(root / "m.keras"))
    model.save(str(root / "m.h5"))
    model.save_weights(str(root / "m.weights.h5"))
    return root, x, keras_predict(model, x)


@pytest.mark.parametrize("form", ["m.keras", "m.h5", "m.weights.h5"])
def test_converted_model_keeps_the_keras_models_name(renamed, form, tmp_path):
    root, x, expected = renamed
    config = root / "m.keras" if form == "m.weights.h5" else None
    model = weights_tools.read(root / form, config=config)
    assert model.name == "renamed_model"
    assert np.abs(model(x).astype(np.float64) - expected).max() <= RTOL * np.abs(expected).max()
    assert npxception.load(model.save(tmp_path / "c.npz")).name == "renamed_model"
