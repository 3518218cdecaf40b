"""Models npxception does not convert are refused as what they are (review 26, F4-F6).

Each refusal used to describe a symptom that read like a damaged file: a subclassed model's Keras 3
``.weights.h5`` was "an HDF5 file without Keras weights", a ``TimeDistributed`` model's weights "belong to
no layer of the model config", a model with a metadata input "expected one image input, found 2 input
layers" with neither the inputs nor a remedy. The refusals come before any Xception is matched, so the
models here are small (the layout Keras writes is the same for an Xception inside).
"""

from __future__ import annotations

import pytest

from npxception import weights_tools
from npxception.weights_tools import ConversionError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    keras = pytest.importorskip("keras")
    root = tmp_path_factory.mktemp("refusals")

    @keras.saving.register_keras_serializable(package="review26")
    class Wrap(keras.Model):
        def __init__(self, **kw):
            super().__init__(**kw)
            inputs = keras.Input((8, 8, 3))
            self.base = keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(
                keras.layers.SeparableConv2D(4, 3)(inputs)))
            self.head = keras.layers.Dense(2)

        def call(self, x):
            return self.head(self.base(x))

    sub = Wrap()
    sub(keras.ops.zeros((1, 8, 8, 3)))
    sub.save_weights(str(root / "sub.weights.h5"))
    sub.save(str(root / "sub.keras"))

    inner_in = keras.Input((8, 8, 3))
    inner = keras.Model(inner_in, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(inner_in)))
    frames = keras.Input((2, 8, 8, 3))
    td = keras.Model(frames, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling1D()(
        keras.layers.TimeDistributed(inner, name="per_frame")(frames))))
    td.save(str(root / "td.keras"))

    image, meta = keras.Input((8, 8, 3), name="image"), keras.Input((2,), name="meta")
    features = keras.layers.GlobalAveragePooling2D()(keras.layers.SeparableConv2D(4, 3)(image))
    two = keras.Model([image, meta], keras.layers.Dense(2)(keras.layers.Concatenate()([features, meta])))
    two.save(str(root / "two.keras"))
    return root


@pytest.mark.parametrize("with_config", [False, True])
def test_subclassed_models_weights_h5_is_named(saved, with_config):
    with pytest.raises(ConversionError, match="subclassed Keras model") as err:
        weights_tools.read(saved / "sub.weights.h5", config=saved / "sub.keras" if with_config else None)
    msg = str(err.value)
    assert "without Keras weights" not in msg, msg
    assert "subclassed Keras model" in msg and "Functional" in msg, msg
    # the given config is consulted first: its class is named; without it, the attribute groups are
    assert ("'review26>Wrap'" if with_config else "its attributes base, head") in msg, msg


def test_time_distributed_is_named_before_its_weights(saved):
    with pytest.raises(ConversionError, match=r"per_frame \(TimeDistributed\)") as err:
        weights_tools.read(saved / "td.keras")
    msg = str(err.value)
    assert "belong to no layer" not in msg, msg
    assert "per_frame (TimeDistributed)" in msg and "model.get_layer('per_frame').layer.save(" in msg, msg


def test_extra_input_names_the_inputs_and_a_remedy(saved):
    with pytest.raises(ConversionError, match="found 2 input layers") as err:
        weights_tools.read(saved / "two.keras")
    msg = str(err.value)
    assert "found 2 input layers (image (None, 8, 8, 3), meta (None, 2))" in msg, msg
    assert "model.get_layer('image').output" in msg and "image_branch.keras" in msg, msg
