"""Keras' model API on our models: get_weights, get_layer(...).get_weights, output_shape, input/output, input_tensor.

Measured against Keras itself: the same weights (a Keras Xception with random kernels and BN statistics,
saved and converted) give the same list of arrays, bit for bit, in Keras' order, from Keras 3 and tf_keras.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import randomize

import npxception
from npxception import weights_tools


@pytest.fixture(scope="module", params=["keras", "tf_keras"])
def pair(request, tmp_path_factory):
    """(our model, the Keras model it was converted from): include_top, 5 classes, 71x71."""
    import importlib

    fw = importlib.import_module(request.param)
    kmodel = randomize(fw.applications.Xception(weights=None, input_shape=(71, 71, 3), classes=5), seed=3)
    path = tmp_path_factory.mktemp("api") / ("m.keras" if request.param == "keras" else "m.h5")
    kmodel.save(str(path))
    return weights_tools.read(path), kmodel


def test_get_weights_is_keras_order_and_values(pair):
    ours, kmodel = pair
    theirs = kmodel.get_weights()
    mine = ours.get_weights()
    assert [a.shape for a in mine] == [a.shape for a in theirs]
    for i, (a, b) in enumerate(zip(mine, theirs)):
        np.testing.assert_array_equal(a, b, err_msg=f"weight #{i}")
    assert len(mine) == len(kmodel.weights)


def test_get_layer_get_weights_is_keras(pair):
    ours, kmodel = pair
    names = ["block1_conv1", "block1_conv1_bn", "block4_sepconv2", "block14_sepconv2_bn", "predictions",
             "block1_conv1_act", "avg_pool"]
    names += [n for n in (l.name for l in kmodel.layers) if n.startswith("conv2d")][:1]  # a residual, auto-named
    for name in names:
        mine, theirs = ours.get_layer(name).get_weights(), kmodel.get_layer(name).get_weights()
        assert len(mine) == len(theirs), name
        for a, b in zip(mine, theirs):
            np.testing.assert_array_equal(a, b, err_msg=name)
    with pytest.raises(ValueError, match=r"get_layer: unknown layer name 'nope'"):
        ours.get_layer("nope")


def test_output_shape_is_keras(pair):
    ours, kmodel = pair
    assert ours.output_shape == tuple(kmodel.output_shape)
    assert npxception.Xception(include_top=False, input_shape=(299, 299, 3)).output_shape == (None, 10, 10, 2048)
    assert npxception.Xception(include_top=False, pooling="max").output_shape == (None, 2048)
    assert npxception.Xception(include_top=False, input_shape=(None, None, 3)).output_shape == (None, None, None, 2048)


def test_input_and_output_point_to_the_shapes():
    model = npxception.Xception(include_top=False, input_shape=(71, 71, 3))
    with pytest.raises(AttributeError, match=r"model.input: npxception builds no graph .*model.input_shape"):
        model.input
    with pytest.raises(AttributeError, match=r"model.output: .*model.output_shape"):
        model.output
    assert model.input_shape == (71, 71, 3) and model.output_shape == (None, 3, 3, 2048)


@pytest.mark.parametrize("tensor,found", [(np.zeros((2, 71, 71, 3), np.float32), r"an array of shape \(2, 71, 71, 3\)"),
                                          ("x", "a str")])
def test_input_tensor_is_refused_naming_what_to_do(tensor, found):
    with pytest.raises(ValueError, match=rf"input_tensor: npxception builds no graph .*found {found}; give "
                                         r"input_shape=\(H, W, C\) instead .*input_shape=x.shape\[1:\]"):
        npxception.Xception(input_tensor=tensor)
