"""The head's activations (npxception.head.activation) against keras.activations, Keras 3 and tf_keras, in float64.

Both sides compute in float64 (hypothesis draws logits in [-40, 40]); each formula is a few operations,
so they agree to a few ulps: rtol 1e-12 (measured at most 3.2e-15 relative on a grid of [-40, 40], both
Kerases), atol 1e-13 for values that cancel near zero (measured 1.4e-14, mish). gelu: TensorFlow's float64
erfc (Eigen's) is the less exact one: measured 5.0e-9 absolute against math.erfc (correctly rounded to an
ulp or two) over [-40, 40], so atol 1e-8 for it.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra.numpy import arrays

from npxception import head_schema
from npxception.head import activation

NAMES = [a for a in head_schema.ACTIVATIONS if a not in (None, "linear")]
# our names for the two hard sigmoids, by the Keras that computes each (head_schema.VERSIONED_ACTIVATIONS)
KERAS3_NAME = {"hard_sigmoid_keras3": "hard_sigmoid"}
TF_KERAS_NAME = {"hard_sigmoid_keras2": "hard_sigmoid"}
TOL = {"gelu": dict(rtol=1e-12, atol=1e-8)}
DEFAULT_TOL = dict(rtol=1e-12, atol=1e-13)
LOGITS = arrays(np.float64, st.tuples(st.integers(1, 3), st.integers(1, 6)),
                elements=st.floats(-40, 40, allow_nan=False, allow_infinity=False))


@pytest.mark.parametrize("name", [n for n in NAMES if n != "hard_sigmoid_keras2"])
@settings(max_examples=15)  # each example is an eager TF call; 15 per name keeps the file ~30 s
@given(z=LOGITS)
def test_each_activation_is_keras_3s(name, z):
    import keras

    theirs = np.asarray(keras.activations.get(KERAS3_NAME.get(name, name))(
        keras.ops.convert_to_tensor(z, dtype="float64")))
    ours = activation(z, name, "fast")
    assert ours.dtype == np.float64
    np.testing.assert_allclose(ours, theirs, **TOL.get(name, DEFAULT_TOL), err_msg=name)


@pytest.mark.parametrize("name", [n for n in NAMES if n not in ("silu", "log_sigmoid", "log_softmax", "hard_silu",
                                                                  "hard_swish", "hard_sigmoid_keras3")])
@settings(max_examples=15)
@given(z=LOGITS)
def test_each_activation_is_tf_keras(name, z):
    """tf_keras has these names too (silu, log_sigmoid, log_softmax, hard_silu and hard_swish are Keras 3's
    only; its hard_sigmoid is our hard_sigmoid_keras2)."""
    import tensorflow as tf
    import tf_keras

    theirs = tf_keras.activations.get(TF_KERAS_NAME.get(name, name))(tf.constant(z, dtype=tf.float64)).numpy()
    np.testing.assert_allclose(activation(z, name, "fast"), theirs, **TOL.get(name, DEFAULT_TOL), err_msg=name)


@pytest.mark.parametrize("name", NAMES)
def test_float32_stays_float32(name):
    """The head computes in the model's dtype."""
    z = np.linspace(-5, 5, 12, dtype=np.float32).reshape(2, 6)
    assert activation(z, name, "fast").dtype == np.float32


def test_hard_sigmoid_by_name_alone_is_refused_naming_both():
    """Keras 3's hard_sigmoid is relu6(x + 3) / 6, tf_keras' clip(0.2 x + 0.5, 0, 1): a name alone does not
    say which (head_schema.VERSIONED_ACTIVATIONS); Xception() takes the two by their own names."""
    import keras
    import tensorflow as tf
    import tf_keras

    z = np.array([[-2.0, 1.0]])
    k3 = np.asarray(keras.activations.hard_sigmoid(keras.ops.convert_to_tensor(z)))
    tfk = tf_keras.activations.hard_sigmoid(tf.constant(z)).numpy()
    assert not np.allclose(k3, tfk)  # the two formulas differ: 1/6 vs 0.1 at -2
    import npxception

    with pytest.raises(ValueError, match=r"classifier_activation: 'hard_sigmoid' is relu6\(x \+ 3\) / 6 in Keras 3 "
                                         r"and clip\(0.2 x \+ 0.5, 0, 1\) in Keras 1/2 and tf_keras; pass "
                                         r"'hard_sigmoid_keras3' or 'hard_sigmoid_keras2'"):
        npxception.Xception(classifier_activation="hard_sigmoid")
    for name in ("hard_sigmoid_keras3", "hard_sigmoid_keras2"):
        assert npxception.Xception(classifier_activation=name, include_top=True).classifier_activation == name
