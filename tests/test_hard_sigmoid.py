"""hard_sigmoid in a saved head: read by the Keras version the file records, measured against that Keras' predict.

Keras 3's hard_sigmoid is relu6(x + 3) / 6, Keras 1/2's and tf_keras' clip(0.2 x + 0.5, 0, 1); a saved
head records only the name, so the converter reads the file's keras_version (.keras metadata.json, a
.h5 file's root attributes, a SavedModel's keras_metadata.pb, a given config's to_json()) and refuses a
file that records none (weights_tools.kinds.resolve_activation).

Each model: Keras Xception at 71x71 (random kernels and BN statistics), global average pooling, then
Dense layers scaled so that every pre-activation lies in [-3, 3], where the two formulas differ by up to
0.1 (|x| / 30 below 2.5): a file read with the other Keras' formula would miss by far more than the
tolerance, which each case checks on Keras' own pre-activations (``_formulas_differ``).

Tolerance: 1e-3 absolute on outputs in [0, 1] (hard sigmoid) or [-3, 3] (hard_silu). Measured 1.3e-4 on
k3.keras: the bias that centres each Dense's pre-activations on 0 cancels sums far larger than 3 (the pooled
features share a large common part), so float32's ~1e-6 relative summation-order difference from
TensorFlow shows ~100 times larger; each head function has slope at most 1.5. 1e-3 is still far below
what the other formula would give (checked: more than 20 times it, ``_formulas_differ``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from keras_helpers import keras_predict, randomize

from npxception import weights_tools
from npxception.weights_tools import ConversionError
from npxception.weights_tools.kinds import resolve_activation

from npxception.head import activation

ATOL = 1e-3
SIZE = 71


def _x(seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(-1, 1, (4, SIZE, SIZE, 3)).astype(np.float32)


def _scaled(fw, model, x, names, seed):
    """Rescale each named Dense so that its pre-activations on ``x`` span [-3, 3], centred on 0."""
    rng = np.random.default_rng(seed)
    for name in names:
        layer = model.get_layer(name)
        feats = np.asarray(fw.Model(model.input, layer.input)(x, training=False), np.float64)
        kernel = rng.normal(size=layer.get_weights()[0].shape)
        pre = feats @ kernel
        centre, spread = pre.mean(0), np.abs(pre - pre.mean(0)).max()
        kernel = kernel * (3.0 / spread)
        layer.set_weights([kernel.astype(np.float32), (-centre * 3.0 / spread).astype(np.float32)])


def _pre_activations(fw, model, x, name):
    """Keras' own inputs to ``name``'s activation (a Dense's x @ W + b)."""
    layer = model.get_layer(name)
    feats = np.asarray(fw.Model(model.input, layer.input)(x, training=False), np.float64)
    kernel, bias = layer.get_weights()
    return feats @ kernel + bias


def _formulas_differ(pre):
    """The case's power: on these pre-activations the two hard sigmoids differ by far more than ATOL."""
    gap = np.abs(activation(pre, "hard_sigmoid_keras3", "fast") - activation(pre, "hard_sigmoid_keras2", "fast"))
    assert gap.max() > 20 * ATOL, gap.max()  # the gap is at most 1/12, at |x| = 2.5


def _backbone(fw):
    base = fw.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3), pooling="avg")
    return base.input, base.output


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("hard_sigmoid")
    out = {}

    # Keras 3: Dense(hard_sigmoid) -> Dense(hard_silu)
    inp, y = _backbone(keras)
    y = keras.layers.Dense(6, activation="hard_sigmoid", name="hs")(y)
    y = keras.layers.Dense(4, activation="hard_silu", name="out")(y)
    k3 = randomize(keras.Model(inp, y), seed=5)
    x = _x(5)
    _scaled(keras, k3, x, ["hs", "out"], 5)
    _formulas_differ(_pre_activations(keras, k3, x, "hs"))
    expected = keras_predict(k3, x)
    k3.save(str(root / "k3.keras"))
    k3.save(str(root / "k3.h5"))
    k3.save_weights(str(root / "k3.weights.h5"))
    (root / "k3.json").write_text(k3.to_json())
    out["k3.keras"] = (root / "k3.keras", {}, x, expected, "hard_sigmoid_keras3")
    out["k3.h5"] = (root / "k3.h5", {}, x, expected, "hard_sigmoid_keras3")
    out["k3.weights.h5+k3.keras"] = (root / "k3.weights.h5", {"config": str(root / "k3.keras")}, x, expected,
                                     "hard_sigmoid_keras3")

    # tf_keras: Dense(hard_sigmoid) -> Dense -> Activation(hard_sigmoid)
    tk_input, tk_pooled = _backbone(tf_keras)
    y = tf_keras.layers.Dense(6, activation="hard_sigmoid", name="hs")(tk_pooled)
    y = tf_keras.layers.Dense(4, name="logits")(y)
    y = tf_keras.layers.Activation("hard_sigmoid", name="out")(y)
    tk = randomize(tf_keras.Model(tk_input, y), seed=6)
    x = _x(6)
    _scaled(tf_keras, tk, x, ["hs", "logits"], 6)
    _formulas_differ(_pre_activations(tf_keras, tk, x, "logits"))
    expected = keras_predict(tk, x)
    tk.save(str(root / "tk.h5"))
    tk.save(str(root / "tk.keras"))
    # save_traces=False: the traced functions are most of a SavedModel save's CPU (~14-30 s against ~4 s, measured
    # 2026-11-29) and carry nothing the converter reads; the version and the activations are in keras_metadata.pb
    # either way (test_real_world_files::test_savedmodel_without_traces_reads_as_the_default_one: the same config,
    # manifest and arrays, bit for bit, from both saves)
    tk.save(str(root / "tk_savedmodel"), save_traces=False)
    tk.save_weights(str(root / "tk_ckpt"))
    (root / "tk.json").write_text(tk.to_json())
    for name, path, options in [("tk.h5", "tk.h5", {}), ("tk.keras", "tk.keras", {}),
                                ("tk_savedmodel", "tk_savedmodel", {}),
                                ("tk_ckpt+tk.json", "tk_ckpt", {"config": str(root / "tk.json")})]:
        out[name] = (root / path, options, x, expected, "hard_sigmoid_keras2")

    # weights-only legacy .h5 (tf_keras save_weights) of one Dense(hard_sigmoid) classifier: its head is given.
    # Its backbone is tk's layers (tk's files are written): randomize() gives them new weights, and the file holds
    # the same layers by the same names as a second Xception built for it would
    tw = randomize(tf_keras.Model(tk_input, tf_keras.layers.Dense(5, activation="hard_sigmoid",
                                                                  name="predictions")(tk_pooled)), seed=7)
    x = _x(7)
    _scaled(tf_keras, tw, x, ["predictions"], 7)
    _formulas_differ(_pre_activations(tf_keras, tw, x, "predictions"))
    tw.save_weights(str(root / "tw.h5"))
    out["tw.h5"] = (root / "tw.h5", {"variant": "keras", "pooling": "avg", "input_shape": (SIZE, SIZE),
                                     "classifier_activation": "hard_sigmoid"}, x, keras_predict(tw, x),
                    "hard_sigmoid_keras2")

    # the same classifier saved by Keras 3 as .weights.h5, which records no version (on k3's backbone layers: only
    # its head is read by the test)
    kw = keras.Model(k3.input, keras.layers.Dense(5, activation="hard_sigmoid", name="predictions")(k3.get_layer("hs").input))
    kw.save_weights(str(root / "kw.weights.h5"))
    out["kw.weights.h5"] = (root / "kw.weights.h5",)
    return out


CONVERTED = ["k3.keras", "k3.h5", "k3.weights.h5+k3.keras", "tk.h5", "tk.keras", "tk_savedmodel", "tk_ckpt+tk.json",
             "tw.h5"]


@pytest.mark.parametrize("name", CONVERTED)
def test_hard_sigmoid_converts_to_what_the_writing_keras_predicts(files, name):
    path, options, x, expected, formula = files[name]
    model = weights_tools.read(path, **options)
    acts = [h.get("activation") for h in model.head if h["kind"] in ("dense", "activation")]
    assert formula in acts, acts
    ours = np.asarray(model(x), np.float64)
    assert ours.shape == expected.shape
    err = float(np.abs(ours - expected).max())
    assert err <= ATOL, f"{name}: max |ours - keras| {err:.3g}; ours {ours[0]} vs keras {expected[0]}"


def test_the_files_record_the_version_read(files):
    """What each real file records, as the converter reads it (the cases above rest on it)."""
    versions = {}
    for name in CONVERTED:
        path, options = files[name][:2]
        with weights_tools.open_layers(path, config=options.get("config")) as reading:
            versions[name] = reading.keras_version
    assert all(v.startswith("3.") for n, v in versions.items() if n.startswith("k3")), versions
    assert all(v.startswith("2.") for n, v in versions.items() if n.startswith("t")), versions


def test_a_keras3_weights_file_with_a_config_json_is_refused_naming_the_version(files):
    """Keras 3's to_json() records no keras_version, nor does its .weights.h5: the formula is not determined."""
    path, options = files["k3.weights.h5+k3.keras"][:2]
    config = json.loads(files["k3.keras"][0].with_name("k3.json").read_text())
    assert "keras_version" not in config
    with pytest.raises(ConversionError, match=r"layer hs \(Dense\): activation 'hard_sigmoid' is relu6\(x \+ 3\) / 6 "
                                              r"in Keras 3 and clip\(0.2 x \+ 0.5, 0, 1\) in Keras 1/2 and "
                                              r"tf_keras, and the file does not record which Keras wrote it"):
        weights_tools.read(path, config=str(files["k3.keras"][0].with_name("k3.json")))


def test_a_weights_only_file_without_a_version_needs_the_formula_named(files):
    (path,) = files["kw.weights.h5"]
    head = dict(variant="keras", pooling="avg", input_shape=(SIZE, SIZE))
    with pytest.raises(ConversionError, match=r"--classifier-activation: activation 'hard_sigmoid' .* does not "
                                              r"record which Keras wrote it .*--classifier-activation "
                                              r"hard_sigmoid_keras3 or hard_sigmoid_keras2"):
        weights_tools.read(path, classifier_activation="hard_sigmoid", **head)
    model = weights_tools.read(path, classifier_activation="hard_sigmoid_keras3", **head)
    assert model.head[-1]["activation"] == "hard_sigmoid_keras3"


@pytest.mark.parametrize("version,expected", [("3.0.0", "hard_sigmoid_keras3"), ("3.15.1", "hard_sigmoid_keras3"),
                                              ("2.21.0", "hard_sigmoid_keras2"), ("2.2.4", "hard_sigmoid_keras2"),
                                              ("1.2.2", "hard_sigmoid_keras2")])
def test_resolve_by_version(version, expected):
    assert resolve_activation("hard_sigmoid", version, "f") == expected


def test_hard_silu_from_an_earlier_keras_is_a_custom_function():
    """tf_keras and Keras 2 define no hard_silu/hard_swish: in a file they wrote, it is the user's own function."""
    for name in ("hard_silu", "hard_swish"):
        assert resolve_activation(name, "3.15.1", "f") == name
        assert resolve_activation(name, None, "f") == name  # Keras 3's only definition
        with pytest.raises(ConversionError, match=rf"'{name}' is Keras 3's, and Keras 2.21.0 wrote the file"):
            resolve_activation(name, "2.21.0", "f")
    with pytest.raises(ConversionError, match=r"records the Keras version 'x.y', which is not one"):
        resolve_activation("hard_sigmoid", "x.y", "f")
