"""Fine-tuned Xceptions as Kaggle notebooks write them, converted and measured against the Keras that wrote them.

* A serving model: ``Input(dtype="uint8") -> cast -> preprocess_input -> Xception -> GAP -> Dense``. Keras
  casts whatever it is fed to uint8 first, truncating fractional pixels (npxception.input_stage): model(x)
  must too, and compare's seeded batch for it must be integer, or it reports a divergence at block1_conv1
  that no layer makes.

* ``x = base.output; BatchNormalization; GlobalAveragePooling2D (or GlobalMaxPooling2D); Dense``: the BN runs
  on the (N, H', W', C) map, where Keras runs it. Half its gammas are negative: moved after a max pooling it
  would give another answer (a negative scale turns a max into a min), so the GMP case tests where it runs.

Keras 3, a nested backbone at 71x71 with random kernels and BN statistics (tests/keras_helpers.randomize),
built once per module. Tolerance: logits within 1e-4 of their largest magnitude, test_head_layers.py's
(float32 sums over ~36 layers in a different order); the wrong answers these tests catch are 1e-3 or more
of it (a truncated pixel moves the input by up to 1/127.5).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from keras_helpers import keras_predict, randomize

from npxception import weights_tools
from npxception.network import XceptionModel
from npxception.untrusted import short_repr

LOGIT_RTOL = 1e-4
SIZE = 71


def _backbone(keras):
    return keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    import keras

    inputs = keras.Input((SIZE, SIZE, 3), dtype="uint8", name="pixels")
    x = keras.applications.xception.preprocess_input(keras.ops.cast(inputs, "float32"))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(_backbone(keras)(x, training=False))
    model = randomize(keras.Model(inputs, keras.layers.Dense(4, name="dense")(x)), seed=71)
    path = tmp_path_factory.mktemp("serving") / "serving.keras"
    model.save(str(path))
    return model, str(path)


def _close(ours, theirs, what):
    scale = float(np.abs(theirs).max())
    err = float(np.abs(np.asarray(ours, np.float64) - theirs).max())
    assert err <= LOGIT_RTOL * scale, f"{what}: max |ours - keras| {err:.3g} > {LOGIT_RTOL} * {scale:.3g}"


def test_uint8_input_truncates_fractional_pixels_as_keras(serving):
    kmodel, path = serving
    ours = weights_tools.read(path)
    assert ours.input_stage[0] == {"kind": "cast", "name": "pixels", "dtype": "uint8"} and ours.takes_pixels
    x = np.random.default_rng(5).uniform(-0.99, 255.99, (2, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_predict(kmodel, x)
    _close(ours(x), expected, "fractional pixels")
    _close(ours(x.astype(np.float64)), expected, "the same pixels as float64")
    # the case's power: the same model without the cast (the converter's old stage) misses by far more
    old = XceptionModel(ours.weights, head=ours.head, input_shape=ours.input_shape, input_stage=ours.input_stage[1:])
    assert np.abs(np.asarray(old(x), np.float64) - expected).max() > 10 * LOGIT_RTOL * np.abs(expected).max()
    with pytest.raises(ValueError, match=r"pixels is uint8.*256.5.*\(-1, 256\)"):
        ours(np.full((1, SIZE, SIZE, 3), 256.5, np.float32))


def test_uint8_input_survives_the_file_and_compare_feeds_integers(serving, tmp_path):
    from npxception import load
    from npxception.compare import cli_input, compare
    from npxception.weights import MANIFEST_KEY, WITH_INPUT_CAST

    kmodel, path = serving
    ours = weights_tools.read(path)
    ours.save(tmp_path / "serving.npz", golden=False)  # the golden runs Keras again: seconds, tested elsewhere
    loaded = load(tmp_path / "serving.npz")
    assert loaded.input_stage == ours.input_stage
    with np.load(tmp_path / "serving.npz") as f:
        assert json.loads(str(f[MANIFEST_KEY]))["format_version"] == WITH_INPUT_CAST
    x = cli_input(loaded)  # what `npxception compare --against serving.keras` feeds without --image
    assert np.array_equal(x, np.trunc(x)) and x.min() >= 0 and x.max() <= 255 and len(np.unique(x)) > 200
    report = compare(loaded, kmodel, x)
    assert report.ok, str(report)


@pytest.fixture(scope="module")
def map_bn(tmp_path_factory):
    """Two heads on one backbone (one build): BN on the map, then GAP or GMP, then Dense."""
    import keras

    root = tmp_path_factory.mktemp("map_bn")
    inputs = keras.Input((SIZE, SIZE, 3), name="image")
    features = _backbone(keras)(inputs, training=False)
    x = np.random.default_rng(8).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    out = {}
    for pool in (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D):
        y = keras.layers.BatchNormalization(name="map_bn")(features)
        model = keras.Model(inputs, keras.layers.Dense(3, name="dense")(pool(name="pool")(y)))
        randomize(model, seed=81)
        bn = model.get_layer("map_bn")
        gamma, *rest = bn.get_weights()
        bn.set_weights([gamma * np.where(np.arange(gamma.size) % 2, -1, 1).astype(gamma.dtype), *rest])
        path = root / f"{pool.__name__}.keras"
        model.save(str(path))
        out[pool.__name__] = (str(path), keras_predict(model, x))
    return x, out


@pytest.mark.parametrize("pool", ["GlobalAveragePooling2D", "GlobalMaxPooling2D"])
def test_batch_norm_on_the_map_runs_there(map_bn, pool):
    x, models = map_bn
    path, expected = models[pool]
    ours = weights_tools.read(path)
    kinds = "global_avg_pool" if pool.startswith("GlobalAverage") else "global_max_pool"
    assert [h["kind"] for h in ours.head] == ["batch_norm", kinds, "dense"]
    _close(ours(x), expected, pool)
    _close(ours(x, impl="reference"), expected, f"{pool}, reference ops")
    assert ours.forward(x, capture=["map_bn"])[1]["map_bn"].shape == (2, 3, 3, 2048)  # on the map
    if pool == "GlobalMaxPooling2D":  # the case's power: the BN moved after the pooling misses
        moved = [ours.head[1], ours.head[0], ours.head[2]]
        other = XceptionModel(ours.weights, head=moved, input_shape=ours.input_shape)
        assert np.abs(np.asarray(other(x), np.float64) - expected).max() > 10 * LOGIT_RTOL * np.abs(expected).max()


def test_batch_norm_on_the_map_survives_the_file(map_bn, tmp_path):
    from npxception import load
    from npxception.weights import MANIFEST_KEY, WITH_MAP_BN

    x, models = map_bn
    path, expected = models["GlobalMaxPooling2D"]
    weights_tools.read(path).save(tmp_path / "map_bn.npz", golden=False)  # the golden runs Keras again
    with np.load(tmp_path / "map_bn.npz") as f:
        assert json.loads(str(f[MANIFEST_KEY]))["format_version"] == WITH_MAP_BN
    _close(load(tmp_path / "map_bn.npz")(x), expected, "loaded")



def _edited(src, dst, epsilon, variance=None):
    """``src`` (.keras) with map_bn's epsilon set in its config.json, and its moving_variance replaced."""
    import io
    import zipfile

    import h5py

    with zipfile.ZipFile(src) as z:
        members = {name: z.read(name) for name in z.namelist()}
    cfg = json.loads(members["config.json"])
    (bn,) = [layer for layer in cfg["config"]["layers"] if layer["config"].get("name") == "map_bn"]
    bn["config"]["epsilon"] = epsilon
    members["config.json"] = json.dumps(cfg).encode()
    if variance is not None:
        buf = io.BytesIO(members["model.weights.h5"])
        with h5py.File(buf, "r+") as f:
            (key,) = [k for k in f["layers"] if k.startswith("batch_normalization")]
            var = f[f"layers/{key}/vars/3"]  # gamma, beta, moving_mean, moving_variance
            var[...] = variance(var[...])
        members["model.weights.h5"] = buf.getvalue()
    with zipfile.ZipFile(dst, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    return str(dst)


@pytest.mark.parametrize("epsilon", ["abc", None, [1e-3], -1.0, -0.6, float("nan"), float("inf"), 1e308,
                                     10**400],  # reviewer 14 F3: int() to float overflowed, naming no file or layer
                         ids=["text", "null", "list", "negative", "negative_small", "nan", "inf", "beyond_float32",
                              "int_beyond_float64"])
def test_a_bad_batch_norm_epsilon_in_the_config_is_refused_naming_the_file_and_layer(map_bn, tmp_path, epsilon):
    """Keras 3 and tf_keras take any float: 1e308 is inf in the float32 they compute in, and the layer
    then outputs beta whatever its input (measured); no trained model does that, so it is refused too."""
    from npxception.weights_tools import ConversionError

    bad = _edited(map_bn[1]["GlobalAveragePooling2D"][0], tmp_path / "bad.keras", epsilon)
    with pytest.raises(ConversionError,
                       match="^" + re.escape(f"{bad}: layer map_bn: BatchNormalization epsilon must be a ")) as info:
        weights_tools.read(bad)
    assert f"found {short_repr(epsilon)}" in str(info.value)


def test_a_zero_variance_with_a_zero_epsilon_is_refused_at_conversion(map_bn, tmp_path):
    """sqrt(moving_variance + epsilon) = 0 would divide by zero: refused naming the layer and channel when the
    file is converted, not later by the golden's NaN check."""
    bad = _edited(map_bn[1]["GlobalAveragePooling2D"][0], tmp_path / "bad.keras", 0.0,
                  variance=lambda v: np.where(np.arange(v.size) % 7 == 0, 0, v).astype(v.dtype))
    with pytest.raises(ValueError, match=re.escape(
            "layer 'map_bn' (batch_norm): moving_variance + epsilon is 0 in channel 0 (293 channels in all; "
            "epsilon 0.0), so BatchNormalization would divide by zero")) as info:
        weights_tools.read(bad)
    assert str(bad) in str(info.value)
