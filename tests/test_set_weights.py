"""model.set_weights / layer.set_weights: Keras' counterparts of get_weights, measured against Keras 3.

The same list of arrays, set on a Keras Xception and on ours, gives the same outputs on the fast path and
the reference ops, after the model already ran (its plan compiled, its kernels packed) on other weights.
What Keras accepts silently and computes garbage with (NaN, a negative variance, values beyond float32,
complex arrays) is refused, as a weight file holding them is; the model is then unchanged.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import randomize

import keras  # noqa: E402  (a test extra; imported, never skipped)

import npxception  # noqa: E402

# float32 both sides, 36 layers of sums in a different order: the whole-network tolerance of
# tests/test_model_keras.py (relative to the output's largest magnitude)
RTOL = 1e-4
SIZE = 71  # Keras' smallest Xception without the ImageNet top (71 -> 3x3 map)


def _keras(**kw):
    return keras.applications.Xception(weights=None, input_shape=(SIZE, SIZE, 3), **kw)


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(7).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)


@pytest.mark.parametrize("kw", [dict(include_top=False, pooling="avg"),
                                dict(include_top=True, classes=5, classifier_activation=None)],
                         ids=["pooled", "dense_top"])
def test_set_weights_computes_what_keras_computes(kw, x):
    kmodel = randomize(_keras(**kw), seed=11)  # random kernels and BN statistics
    weights = kmodel.get_weights()
    ours = npxception.Xception(weights=None, input_shape=(SIZE, SIZE, 3), **kw)  # seeded, other weights
    before = ours(x)  # the plan compiled and kernels packed for the old weights: set_weights must drop them
    ours.set_weights(weights)
    expected = kmodel.predict(x, verbose=0)
    scale = np.abs(expected).max()
    assert np.abs(before - expected).max() > 100 * RTOL * scale  # the old weights computed something else
    for impl in ("fast", "reference"):
        got = ours(x, impl=impl)
        assert np.abs(got - expected).max() <= RTOL * scale, f"{impl}: ours {got.ravel()[:4]} vs keras " \
                                                              f"{expected.ravel()[:4]}"
    for a, b in zip(ours.get_weights(), weights):
        np.testing.assert_array_equal(a, b)

    # one layer, as Keras' layer.set_weights: the same list on both sides
    layer = "block14_sepconv2_bn"
    new = [a * 1.5 + 0.25 for a in kmodel.get_layer(layer).get_weights()]
    kmodel.get_layer(layer).set_weights(new)
    ours.get_layer(layer).set_weights(new)
    expected = kmodel.predict(x, verbose=0)
    got = ours(x)
    assert np.abs(got - expected).max() <= RTOL * np.abs(expected).max()


@pytest.fixture(scope="module")
def model():
    return npxception.Xception(weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))


def _refused(model, x, weights, error, message):
    before = [a.copy() for a in model.get_weights()]
    out = model(x)
    with pytest.raises(error, match=message):
        model.set_weights(weights)
    for a, b in zip(model.get_weights(), before):  # all or nothing: Keras would have set the ones before
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(model(x), out)


def test_bad_lists_are_refused_naming_the_weight_and_both_shapes(model, x):
    w = model.get_weights()
    _refused(model, x, w[:-1], ValueError, r"set_weights: expected a list of 234 arrays, one per weight in "
             r"get_weights\(\)' order \('block1_conv1/kernel' \(3, 3, 3, 32\) to "
             r"'block14_sepconv2_bn/moving_variance' \(2048,\)\), found 233")
    bad = [a + 1 for a in w]
    bad[5] = np.zeros(7, np.float32)
    _refused(model, x, bad, ValueError, r"set_weights: weights\[5\] is for 'block1_conv2/kernel', of shape "
             r"\(3, 3, 32, 64\); found shape \(7,\)")
    _refused(model, x, w[0], TypeError, r"set_weights: expected a list of arrays .*found ndarray")
    _refused(model, x, [w[0].tolist()] + w[1:], TypeError, r"weights\[0\], for 'block1_conv1/kernel' "
             r"\(3, 3, 3, 32\), must be an array, found list")
    _refused(model, x, [w[0].astype(np.complex64)] + w[1:], TypeError, r"weights\[0\] \('block1_conv1/kernel'\) "
             r"has dtype complex64; expected real numbers")


@pytest.mark.parametrize("index,value,message", [
    (0, np.nan, r"weight 'block1_conv1/kernel' \(weights\[0\]\) contains NaN or Inf"),
    (0, 1e300, r"weight 'block1_conv1/kernel' \(weights\[0\]\) holds values beyond float32's range "
               r"\(largest magnitude 1e\+300\): in the model's float32 they would be inf"),
    (4, -0.5, r"weight 'block1_conv1_bn/moving_variance' is a variance but holds negative values"),
])
def test_values_keras_would_compute_garbage_with_are_refused(model, x, index, value, message):
    """Keras 3.15 accepts each silently (measured): NaN, values it stores as inf, a negative variance."""
    w = [a.astype(np.float64) for a in model.get_weights()]
    w[index] = np.full_like(w[index], value)
    _refused(model, x, w, ValueError, r"set_weights: " + message)


def test_a_head_batch_norm_dividing_by_zero_is_refused(x):
    """moving_variance 0 with epsilon 0: the rule a file's head obeys (params.check_bn_divisors)."""
    head = [{"kind": "global_avg_pool", "name": "avg_pool"}, {"kind": "batch_norm", "name": "bn", "epsilon": 0.0}]
    from npxception.network import XceptionModel
    from npxception.params import random_params
    from npxception import architecture as arch

    model = XceptionModel(random_params(arch.backbone("keras"), head, "float32", 1), head=head,
                          input_shape=(SIZE, SIZE, 3))
    w = model.get_weights()
    w[-1] = np.zeros_like(w[-1])
    _refused(model, x, w, ValueError, r"set_weights: layer 'bn' \(batch_norm\): moving_variance \+ epsilon is 0")


def test_arrays_are_cast_copied_and_the_file_claims_dropped(tmp_path, x):
    model = npxception.Xception(weights=None, include_top=False, pooling="avg", input_shape=(SIZE, SIZE, 3))
    path = model.save(tmp_path / "a.npz")
    model = npxception.load(path)
    assert model.golden is not None
    w = [a.astype(np.float64) for a in npxception.Xception(weights=None, include_top=False, pooling="avg",
                                                            input_shape=(SIZE, SIZE, 3), seed=3).get_weights()]
    w[1] = np.ones(32, np.int64)  # block1_conv1_bn/gamma: ints, cast as Keras casts them
    model.set_weights(w)
    got = model.get_weights()
    assert all(a.dtype == np.float32 for a in got) and got[1].tolist() == [1.0] * 32
    np.testing.assert_array_equal(got[0], w[0].astype(np.float32))
    w[0][...] = 0  # the caller's array stays the caller's
    assert np.abs(model.get_weights()[0]).max() > 0
    assert model.golden is None and model.source.endswith(" + set_weights")  # the file's golden was the old weights'
    again = npxception.load(model.save(tmp_path / "b.npz"))  # saved with a golden of the new weights: it loads
    np.testing.assert_array_equal(again(x), model(x))
    layer = model.get_layer("block1_conv1_act")
    layer.set_weights([])  # a layer without weights takes [], as in Keras
    with pytest.raises(ValueError, match=r"set_weights: layer 'block1_conv1_act': expected a list of 0 arrays, "
                                         r"one per weight in get_weights\(\)' order \(this layer has no weights\), "
                                         r"found 1"):
        layer.set_weights([np.zeros(1)])
