"""A Keras 3 model's tf.train.Checkpoint is refused as what it is (review 26, F1).

Keras 3 with the TensorFlow backend tracks a Functional model's layers as ``_operations/N``
(``model/_operations/10/depthwise_kernel``), not tf_keras' ``layer-N``/``layer_with_weights-N``. The
converter reads only tf_keras' layout; such a checkpoint used to be called "not a
tf.train.Checkpoint(model=...)", which it is. Now it is named, with the saves that do convert.
"""

from __future__ import annotations

import pytest

from npxception import weights_tools
from npxception.weights_tools import ConversionError


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    pytest.importorskip("tensorflow")
    keras = pytest.importorskip("keras")
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        pytest.skip("a tf.train.Checkpoint of a Keras 3 model needs its TensorFlow backend")
    root = tmp_path_factory.mktemp("k3ckpt")
    # The refusal comes before any layer is matched: a small model has the same object graph layout.
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.SeparableConv2D(4, 3, name="block1_sepconv1")(inputs)
    x = keras.layers.BatchNormalization()(x)
    model = keras.Model(inputs, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x)))
    model.save(str(root / "m.keras"))
    prefix = tf.train.Checkpoint(model=model).write(str(root / "ckpt"))
    return prefix, str(root / "m.keras")


@pytest.mark.parametrize("with_config", [False, True])
def test_keras3_tf_checkpoint_is_refused_by_name(checkpoint, with_config):
    prefix, config = checkpoint
    with pytest.raises(ConversionError, match="Keras 3 model's tf.train.Checkpoint") as err:
        weights_tools.read(prefix, config=config if with_config else None)
    msg = str(err.value)
    assert "Keras 3 model's tf.train.Checkpoint" in msg and "model/_operations/N" in msg, msg
    assert "model.save('x.keras')" in msg and "x.weights.h5" in msg, msg
    assert "nor a tf.train.Checkpoint(model=...)" not in msg, msg
