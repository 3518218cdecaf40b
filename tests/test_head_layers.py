"""Classifier heads as users write them, converted and measured against the Keras that wrote them.

Each model is the keras.io layout (a frozen Xception backbone nested as one layer,
71x71, random kernels and BN statistics, one fit() step before saving) with a
head the converter once refused or got wrong:

* Keras 3: GAP -> Dense(8, activation="swish") -> Dense(3) -> ``layers.Softmax()``.
  Keras 3 saves "swish" as "silu"; ``Softmax`` is a layer of its own, not an
  ``Activation``. The last Dense is scaled so that the probabilities are not
  saturated (a softmax at 1.0 would hide a wrong swish).
* tf_keras: GAP -> Dense(8, relu) -> BatchNormalization -> Dense(3) logits.
  tf_keras records the BN's axis as [1], the channel axis of its (N, 8) input.

Tolerances: probabilities 1e-5 absolute, logits 1e-4 relative to their largest
magnitude; the reasons are test_convert_files.py's (float32 sums over ~36 layers
in a different order, softmax's Jacobian bounded by 1/4).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from keras_corpus import _fit_one_step, _nested_classifier, _x
from keras_helpers import keras_predict

from npxception import weights_tools
from npxception.weights_tools import ConversionError

PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4


@pytest.fixture(scope="module")
def heads(tmp_path_factory):
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("heads")
    out = {}

    def k3_head(x):
        x = keras.layers.Dense(8, activation="swish", name="dense_swish")(x)
        x = keras.layers.Dense(3, name="dense")(x)
        return keras.layers.Softmax(name="softmax")(x)

    model = _nested_classifier(keras, 71, keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"),
                               k3_head, seed=41)
    _fit_one_step(model, "sparse_categorical_crossentropy", 71, True, np.array([0, 2]))
    x = _x(71, True, 41)
    # after the step (Adam moves each weight by ~1e-3, times features in the hundreds): logits of size
    # ~2 from the swish features Keras computes on x, so the probabilities are not saturated
    hidden = np.abs(np.asarray(keras.Model(model.input, model.get_layer("dense_swish").output)(x))).max()
    kernel, bias = model.get_layer("dense").get_weights()
    model.get_layer("dense").set_weights([kernel * (2.0 / (hidden * np.abs(kernel).sum(0).max())), bias * 0])
    expected = keras_predict(model, x)
    for ext in (".keras", ".h5"):
        model.save(str(root / f"softmax{ext}"))
        out[f"softmax{ext}"] = (str(root / f"softmax{ext}"), {}, x, expected)

    def tk_head(x):
        x = tf_keras.layers.Dense(8, activation="relu", name="fc")(x)
        x = tf_keras.layers.BatchNormalization(epsilon=1e-5, name="head_bn")(x)
        return tf_keras.layers.Dense(3, name="dense")(x)

    tk = _nested_classifier(tf_keras, 71, tf_keras.layers.Rescaling(1 / 127.5, offset=-1), tk_head, seed=42)
    _fit_one_step(tk, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([1, 2]))
    x = _x(71, True, 42)
    expected = keras_predict(tk, x)
    tk.save(str(root / "tk_head_bn.h5"))
    tk.save_weights(str(root / "tk_head_bn_ckpt"))
    (root / "tk_head_bn.json").write_text(tk.to_json())
    out["tk_head_bn.h5"] = (str(root / "tk_head_bn.h5"), {}, x, expected)
    out["tk_head_bn_ckpt"] = (str(root / "tk_head_bn_ckpt"), {"config": str(root / "tk_head_bn.json")}, x, expected)
    return out


@pytest.mark.parametrize("name", ["softmax.keras", "softmax.h5", "tk_head_bn.h5", "tk_head_bn_ckpt"])
def test_head_converts_to_what_keras_predicts(heads, name):
    path, options, x, expected = heads[name]
    model = weights_tools.read(path, **options)
    ours = np.asarray(model(x), np.float64)
    assert ours.shape == expected.shape
    err = float(np.abs(ours - expected).max())
    if name.startswith("softmax"):
        # the test's power: probabilities away from 0/1, so a wrong swish or a missing softmax shows
        assert expected.max() < 0.95, expected
        assert err <= PROB_ATOL, f"{name}: max |ours - keras| {err:.3g}; ours {ours[0]} vs keras {expected[0]}"
        assert [h["kind"] for h in model.head][-1] == "activation" and model.head[-1]["activation"] == "softmax"
        assert model.head[1]["activation"] == "swish"
    else:
        scale = float(np.abs(expected).max())
        assert err <= LOGIT_RTOL * scale, f"{name}: max |ours - keras| {err:.3g} > {LOGIT_RTOL} * {scale:.3g}"
        assert [h["kind"] for h in model.head] == ["global_avg_pool", "dense", "batch_norm", "dense"]


def test_the_files_record_what_the_converter_maps(heads):
    """Keras 3 writes swish as "silu" and tf_keras the BN axis as [1]: the cases above test the mapping."""
    k3 = {k.name: k for k in weights_tools.read_layers(heads["softmax.keras"][0]).klayers}
    assert k3["dense_swish"].config["activation"] in ("silu", {"class_name": "function", "config": "silu"})
    assert k3["softmax"].class_name == "Softmax"
    tk = {k.name: k for k in weights_tools.read_layers(heads["tk_head_bn.h5"][0]).klayers}
    assert tk["head_bn"].config["axis"] in (1, [1])


def test_skip_layer_is_refused_for_a_softmax(heads):
    """The old refusal suggested --skip-layer softmax, which then returned logits; now the Softmax
    converts, and skipping it (or any class known to compute something at inference) is refused."""
    path = heads["softmax.keras"][0]
    with pytest.raises(ConversionError, match=r"--skip-layer softmax: a Softmax layer is not an identity "
                                              r"at inference \(it computes an activation"):
        weights_tools.read(path, skip_layers=("softmax",))


def _edited_read(path, name, class_name, **config):
    from npxception.weights_tools.mapping import to_npxception

    klayers = [dataclasses.replace(k, class_name=class_name, config={**(k.config or {}), **config})
               if k.name == name else k for k in weights_tools.read_layers(path).klayers]
    return lambda **kw: to_npxception(klayers, source="model", input_shape=(71, 71, 3), **kw)


@pytest.mark.parametrize("class_name", ["LayerNormalization", "LeakyReLU", "Reshape"])
def test_known_computations_are_refused_without_suggesting_skip_layer(heads, class_name):
    convert = _edited_read(heads["softmax.keras"][0], "softmax", class_name)
    with pytest.raises(ConversionError, match=f"unsupported layer softmax \\({class_name}") as info:
        convert()
    assert "--skip-layer" not in str(info.value)
    with pytest.raises(ConversionError, match=f"--skip-layer softmax: a {class_name} layer is not an identity"):
        convert(skip_layers=("softmax",))


def test_softmax_over_another_axis_is_refused_by_name(heads):
    convert = _edited_read(heads["softmax.keras"][0], "softmax", "Softmax", axis=0)
    with pytest.raises(ConversionError, match=r"layer softmax \(Softmax\) normalises over axis 0"):
        convert()
    # axis 1 of the (N, classes) output is the last axis: the same model
    assert _edited_read(heads["softmax.keras"][0], "softmax", "Softmax", axis=1)().head[-1]["activation"] == "softmax"


# Lambda(preprocess_input) as the two Kerases record it (read from files they wrote, review 7): only a name
K3_PREPROCESS = {"module": "builtins", "class_name": "function", "config": "preprocess_input",
                 "registered_name": "function"}


@pytest.mark.parametrize("config", [{"function": K3_PREPROCESS},
                                    {"function": "preprocess_input", "function_type": "function",
                                     "module": "tf_keras.src.applications.xception"}], ids=["keras3", "tf_keras"])
def test_lambda_preprocess_input_names_the_rewrites_not_skip_layer(heads, config):
    """The old message called the function code and offered --skip-layer, which then fed the backbone raw
    pixels; the file holds only the function's name, which Keras cannot load either."""
    convert = _edited_read(heads["softmax.keras"][0], "rescaling", "Lambda", **config)
    with pytest.raises(ConversionError, match=r"layer rescaling \(Lambda\): Keras records only its function's "
                                              r"name, 'preprocess_input'.*neither npxception nor Keras itself can load") as info:
        convert()
    text = str(info.value)
    assert "preprocess_input(inputs)" in text and "Rescaling(1 / 127.5, offset=-1)" in text and "set_weights" in text
    assert "--skip-layer" not in text


def test_other_lambda_is_refused_without_skip_layer(heads):
    convert = _edited_read(heads["softmax.keras"][0], "rescaling", "Lambda",
                           function={"class_name": "__lambda__", "config": {"code": "4wEAAA=="}})
    with pytest.raises(ConversionError, match=r"layer rescaling \(Lambda\): Keras records its code") as info:
        convert()
    assert "--skip-layer" not in str(info.value)


def test_unsupported_dense_activation_lists_the_accepted_ones(heads):
    # hard_tanh: Keras 3's clip(x, -1, 1), which npxception does not compute (hard_sigmoid, refused here
    # before, is read by the file's Keras version now: tests/test_hard_sigmoid.py)
    convert = _edited_read(heads["softmax.keras"][0], "dense_swish", "Dense", activation="hard_tanh")
    with pytest.raises(ConversionError, match=r"unsupported activation 'hard_tanh' in layer dense_swish \(Dense\); "
                                              r"npxception computes 'linear', 'relu', 'softmax', 'sigmoid', "
                                              r"'tanh', 'swish', 'silu', 'elu', 'gelu', "):
        convert()
