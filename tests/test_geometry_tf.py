"""The geometry steps (npxception/ops/resize.py, npxception/input_stage.py) against TensorFlow and the
Keras layers themselves, Keras 3 and tf_keras, on random sizes: up and down, odd and even, non-square.

Each step is built the way the converter builds it, from the live layer's get_config()
(weights_tools.preprocessing.input_stage), so the Keras-3-or-tf_keras detection is tested too.

Tolerances. Nearest is a gather: exact. Bilinear: the indices and weights are computed in float32
with TF's own formulas (measured bit-exact on float32 over these draws); the values go through three
lerps, each rounded once, so a compiler's FMA contraction in TF's kernel could move a value by a few
ulps: atol 4 ulps of 255 (float32 ulp at 255 is 1.5e-5), i.e. 6.1e-5. Float64 ours against TF's
float32 kernel: the same bound (TF rounds in float32, ours does not).
"""

from __future__ import annotations

import keras  # test extras: imported, never skipped
import numpy as np
import pytest
import tensorflow as tf
import tf_keras
from hypothesis import given
from hypothesis import strategies as st

from npxception import input_stage as stage
from npxception.ops.resize import aspect_pad, pad_and_resize, resize
from npxception.weights_tools.graph import KLayer
from npxception.weights_tools.preprocessing import StageError, input_stage

ATOL = 4 * float(np.spacing(np.float32(255)))  # see the module docstring
sides = st.integers(1, 48)


def _pixels(seed, h, w, n=2):
    return np.random.default_rng(seed).uniform(0, 255, (n, h, w, 3)).astype(np.float32)


def _steps(layer, hw):
    """The converter's steps for a live Keras layer, at a fixed input size ``hw``, recording the version
    of the Keras that runs it (as a file it saved would)."""
    version = (tf_keras if type(layer).__module__.startswith("tf_keras") else keras).__version__
    steps, _ = input_stage([KLayer(layer.name, type(layer).__name__, layer.get_config())], hw, version)
    return steps


def _tf_keras_check(layer, x, what, **call):
    """tf_keras' layer on x against ours; where we refuse (an empty h:w window), tf_keras must fail too."""
    try:
        steps = _steps(layer, x.shape[1:3])
    except StageError as exc:
        assert "no" in str(exc) and "window" in str(exc), exc
        with pytest.raises(tf.errors.InvalidArgumentError, match="ResizeBilinear"):
            layer(x, **call)
        return
    assert steps[0]["keras"] == "tf_keras"
    _close(stage.apply(steps, x), layer(x, **call), what)


def _close(ours, theirs, what):
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape ours {ours.shape} vs keras {theirs.shape}"
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    assert err <= ATOL, f"{what}: max |ours - theirs| {err:.3g} > {ATOL:.3g}"


@given(h=sides, w=sides, out_h=sides, out_w=sides, seed=st.integers(0, 2**16),
       method=st.sampled_from(["bilinear", "nearest"]), dtype=st.sampled_from([np.float32, np.float64]))
def test_resize_matches_tf_image_resize(h, w, out_h, out_w, seed, method, dtype):
    x = _pixels(seed, h, w).astype(dtype)
    theirs = tf.image.resize(tf.constant(x), (out_h, out_w), method=method, antialias=False).numpy()
    ours = resize(x, (out_h, out_w), method)
    assert ours.dtype == dtype
    if method == "nearest":
        np.testing.assert_array_equal(ours, theirs)
    else:
        _close(ours, theirs, f"{h}x{w} -> {out_h}x{out_w} {method} {np.dtype(dtype).name}")


@given(h=sides, w=sides, out_h=sides, out_w=sides, seed=st.integers(0, 2**16),
       method=st.sampled_from(["bilinear", "nearest"]), aspect=st.sampled_from(["none", "crop", "pad"]),
       fill=st.sampled_from([0.0, 127.5]))
def test_keras3_resizing_layer(h, w, out_h, out_w, seed, method, aspect, fill):
    layer = keras.layers.Resizing(out_h, out_w, interpolation=method, crop_to_aspect_ratio=aspect == "crop",
                                  pad_to_aspect_ratio=aspect == "pad", fill_value=fill, name="resize")
    x = _pixels(seed, h, w)
    steps = _steps(layer, (h, w))
    assert steps[0]["keras"] == "keras3"
    _close(stage.apply(steps, x), layer(x), f"Resizing {h}x{w} -> {out_h}x{out_w} {method} {aspect}")


@given(h=sides, w=sides, out_h=sides, out_w=sides, seed=st.integers(0, 2**16),
       method=st.sampled_from(["bilinear", "nearest"]), crop=st.booleans())
def test_tf_keras_resizing_layer(h, w, out_h, out_w, seed, method, crop):
    layer = tf_keras.layers.Resizing(out_h, out_w, interpolation=method, crop_to_aspect_ratio=crop, name="resize")
    _tf_keras_check(layer, _pixels(seed, h, w), f"tf_keras Resizing {h}x{w} -> {out_h}x{out_w} {method} crop={crop}")


@given(h=sides, w=sides, out_h=sides, out_w=sides, seed=st.integers(0, 2**16))
def test_center_crop_layers(h, w, out_h, out_w, seed):
    """Larger on both axes: a centred slice in both Kerases. Smaller on one: tf_keras smart_resizes,
    Keras 3 is refused (its model.predict answer depends on the sizes it traced first)."""
    x = _pixels(seed, h, w)
    _tf_keras_check(tf_keras.layers.CenterCrop(out_h, out_w, name="crop"), x,
                    f"tf_keras CenterCrop {h}x{w} -> {out_h}x{out_w}")
    k3 = keras.layers.CenterCrop(out_h, out_w, name="crop")
    if h >= out_h and w >= out_w:
        np.testing.assert_array_equal(stage.apply(_steps(k3, (h, w)), x), k3(x))
    else:
        with pytest.raises(StageError, match=f"layer crop \\(CenterCrop\\) cannot take {h}x{w} images"):
            _steps(k3, (h, w))


@given(h=sides, w=sides, out_h=sides, out_w=sides, seed=st.integers(0, 2**16))
def test_random_crop_layers_at_inference(h, w, out_h, out_w, seed):
    """training=False: tf_keras smart_resizes at every size; Keras 3 returns its input (refused unless
    that is the size it declares, see npxception/input_stage.py)."""
    x = _pixels(seed, h, w)
    _tf_keras_check(tf_keras.layers.RandomCrop(out_h, out_w, name="crop"), x, f"tf_keras RandomCrop {h}x{w}",
                    training=False)
    k3 = keras.layers.RandomCrop(out_h, out_w, name="crop")
    if (h, w) == (out_h, out_w):
        np.testing.assert_array_equal(stage.apply(_steps(k3, (h, w)), x), k3(x, training=False))
    else:  # Keras 3 returns its input, at a size other than the one it declares: refused
        assert k3(x, training=False).shape == x.shape
        with pytest.raises(StageError, match=f"layer crop \\(RandomCrop\\) cannot take {h}x{w} images"):
            _steps(k3, (h, w))


@pytest.mark.parametrize("kwargs, option", [
    ({"interpolation": "bicubic"}, "interpolation='bicubic'"),
    ({"interpolation": "area"}, "interpolation='area'"),
    ({"interpolation": "lanczos3"}, "interpolation='lanczos3'"),
    ({"interpolation": "gaussian"}, "interpolation='gaussian'"),
    ({"interpolation": "mitchellcubic"}, "interpolation='mitchellcubic'"),
    ({"antialias": True}, "antialias=True"),
])
def test_unsupported_resizing_options_are_refused_by_name(kwargs, option):
    layer = keras.layers.Resizing(71, 71, name="resize_photo", **kwargs)
    with pytest.raises(StageError, match=f"layer resize_photo \\(Resizing\\): {option}"):
        _steps(layer, (None, None))


@given(h=sides, w=sides, out_h=sides, out_w=sides, method=st.sampled_from(["bilinear", "nearest"]),
       fill=st.sampled_from([0.0, -1.5, 255.0]))
def test_pad_and_resize_is_resize_of_the_padded_image(h, w, out_h, out_w, method, fill):
    """The bounded pad (indices mapped back into x, never building the padded image) against its
    readable twin, which builds it; the same values read with the same weights: equal, bit for bit.
    (Both against Keras 3's Resizing(pad_to_aspect_ratio=True): test_resizing_layers above.)"""
    x = _pixels(h * 100 + w, h, w)
    ours = pad_and_resize(x, (out_h, out_w), method, fill)
    reference = resize(aspect_pad(x, out_h, out_w, fill), (out_h, out_w), method)
    np.testing.assert_array_equal(ours, reference)


@pytest.mark.parametrize("version", [None, "2.6.0", "2.4.0-tf", "garbage"])
def test_tf_keras_random_crop_off_its_size_needs_keras_2_7(version):
    """Keras before 2.7 resized to the shorter side and centre-cropped at inference; 2.7 and later
    smart_resize; the two write the same config. Without a recorded version of at least 2.7 a
    RandomCrop that resizes is refused at conversion; at its own size it is an identity in every version."""
    layer = KLayer("crop", "RandomCrop", tf_keras.layers.RandomCrop(71, 71, name="crop").get_config())
    with pytest.raises(StageError, match="layer crop \\(RandomCrop\\): at inference Keras 2.7 and later .*"
                                         "earlier versions resized to the shorter side"):
        input_stage([layer], (None, None), version)
    with pytest.raises(StageError, match="Give the model Input\\(shape=\\(71, 71, 3\\)\\)"):
        input_stage([layer], (100, 80), version)
    steps, size = input_stage([layer], (71, 71), version)
    assert size == (71, 71) and steps[0]["keras"] == "tf_keras"
    for recorded in ("2.7.0", "2.15.1", tf_keras.__version__):
        assert input_stage([layer], (None, None), recorded)[1] == (71, 71)
