"""Layers called with ``training=True``, and multi-output models, in every format that carries a config.

tf_keras records ``base(x, training=True)``, Monte-Carlo ``Dropout(0.5)(x, training=True)`` and
``BatchNormalization()(x, training=True)`` in the layer's inbound node and honours the flag in
``predict``; Keras 3 records it too and honours it in eager ``model(x)`` (not in ``predict``). The
converter computes inference only, so it refuses such a file, naming the layers
(npxception/weights_tools/training_mode.py). The refusal is structural (it happens while the config is read,
before any weight is matched), so a small nested model shows it in each format; the measured
premise (the framework's training mode differs from its inference mode) is asserted on it.

The one exception, a BatchNormalization with ``trainable=False``, is accepted only because both
frameworks compute it with its moving statistics: a frozen Xception backbone called with
``training=True`` (71x71, random kernels and BN statistics, one fit() step) converts to what
``predict`` gives, and Keras 3's eager ``model(x)`` agrees with its ``predict``.

Tolerance: logits 1e-4 relative to their largest magnitude, as tests/test_head_layers.py (float32
sums over ~36 layers in a different order).
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_corpus import _fit_one_step, _x
from keras_helpers import randomize

from npxception import weights_tools
from npxception.weights_tools import ConversionError

LOGIT_RTOL = 1e-4


def _tiny(fw, multi_output=False):
    """image -> RandomFlip -> base (Conv2D, BN; trainable) called training=True -> frozen (BN, trainable=False) called
    training=True -> GAP -> Dense -> head_bn (training=True) -> Dropout(0.5, training=True) -> Dense."""
    L = fw.layers
    inner = fw.Input((8, 8, 3))
    base = fw.Model(inner, L.BatchNormalization(name="base_bn")(L.Conv2D(4, 3, name="base_conv")(inner)), name="base")
    inner2 = fw.Input((6, 6, 4))
    frozen = fw.Model(inner2, L.BatchNormalization(name="frozen_bn")(inner2), name="frozen")
    frozen.trainable = False
    inp = fw.Input((8, 8, 3), name="image")
    # Keras 3 records its default training=True in a RandomFlip's node: not a flag the user set, not refused
    x = frozen(base(L.RandomFlip("horizontal", name="random_flip")(inp), training=True), training=True)
    x = L.Dense(4, name="fc")(L.GlobalAveragePooling2D(name="pool")(x))
    x = L.BatchNormalization(name="head_bn")(x, training=True)
    x = L.Dropout(0.5, name="mc_dropout")(x, training=True)
    out = L.Dense(2, name="logits")(x)
    outputs = [out, L.Dense(3, name="aux")(x)] if multi_output else out
    return randomize(fw.Model(inp, outputs), seed=5)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("training_flag")
    out = {}
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype(np.float32)
    premise = {}

    tk = _tiny(tf_keras)
    tk.save(str(root / "tk.h5"))
    tk.save(str(root / "tk_savedmodel"), save_format="tf")
    tk.save_weights(str(root / "tk_ckpt"))
    (root / "tk.json").write_text(tk.to_json())
    out["tf_keras .h5"] = (root / "tk.h5", {})
    out["tf_keras SavedModel"] = (root / "tk_savedmodel", {})
    out["TF checkpoint + config"] = (root / "tk_ckpt", {"config": str(root / "tk.json")})
    # tf_keras' predict with the flags as saved vs the same weights without them (inference)
    premise["tf_keras"] = (tk.predict(x, verbose=0), tk.predict(x, verbose=0))

    k3 = _tiny(keras)
    k3.save(str(root / "k3.keras"))
    k3.save(str(root / "k3.h5"))
    k3.save_weights(str(root / "k3.weights.h5"))
    (root / "k3.json").write_text(k3.to_json())
    out["Keras 3 .keras"] = (root / "k3.keras", {})
    out["Keras 3 .h5"] = (root / "k3.h5", {})
    out["Keras 3 .weights.h5 + config"] = (root / "k3.weights.h5", {"config": str(root / "k3.json")})
    premise["keras"] = (np.asarray(k3(x)), k3.predict(x, verbose=0))

    multi = _tiny(keras, multi_output=True)
    multi.save(str(root / "multi.keras"))
    out["multi"] = (root / "multi.keras", {})
    return out, premise


FORMATS = ["tf_keras .h5", "tf_keras SavedModel", "TF checkpoint + config", "Keras 3 .keras", "Keras 3 .h5",
           "Keras 3 .weights.h5 + config"]


def test_the_flag_changes_what_the_framework_computes(files):
    """The premise of the refusal, measured: tf_keras' predict runs the dropout (two calls differ), Keras 3's
    eager model(x) runs the training mode while its predict does not."""
    _, premise = files
    a, b = premise["tf_keras"]
    assert np.abs(a - b).max() > 1e-3
    eager, predicted = premise["keras"]
    assert np.abs(eager - predicted).max() > 1e-3


@pytest.mark.parametrize("fmt", FORMATS)
def test_training_true_is_refused_by_name(files, fmt):
    path, options = files[0][fmt]
    with pytest.raises(ConversionError, match="training=True") as exc:
        weights_tools.read(str(path), **options)
    msg = str(exc.value)
    assert "training=True" in msg and "training=False" in msg, msg  # what is wrong and the remedy
    for name in ("base (a nested model: 1 BatchNormalization", "head_bn (BatchNormalization)",
                 "mc_dropout (Dropout)"):
        assert name in msg, msg
    assert "frozen" not in msg, msg  # its BN has trainable=False: computed with its moving statistics
    assert "random_flip" not in msg, msg


def test_a_multi_output_model_names_its_outputs_and_the_remedy(files):
    path, _ = files[0]["multi"]
    with pytest.raises(ConversionError, match=r"2 outputs \(logits, aux\)") as exc:
        weights_tools.read_layers(str(path))
    msg = str(exc.value)
    assert "2 outputs (logits, aux)" in msg and "model.get_layer('logits').output" in msg, msg


@pytest.fixture(scope="module")
def frozen_base(tmp_path_factory):
    """image -> Rescaling(1/127.5, -1) -> frozen Xception called with training=True -> GAP -> Dense(3), in
    tf_keras (.h5, save_weights("w.h5") and ModelCheckpoint(save_weights_only=True) .h5 with to_json())
    and Keras 3 (.keras)."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("frozen_training")
    out = {}
    for fw, name in ((tf_keras, "tk"), (keras, "k3")):
        base = fw.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
        base.trainable = False
        inp = fw.Input((71, 71, 3), name="image")
        x = fw.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")(inp)
        x = fw.layers.GlobalAveragePooling2D(name="pool")(base(x, training=True))
        model = randomize(fw.Model(inp, fw.layers.Dense(3, name="logits")(x)), seed=17)
        model.compile(optimizer="adam", loss="mse", run_eagerly=True)  # eager: see keras_corpus._fit_one_step
        callbacks = [fw.callbacks.ModelCheckpoint(str(root / "tk_checkpoint.h5"), save_weights_only=True)] \
            if fw is tf_keras else []
        model.fit(_x(71, True, 99), np.zeros((2, 3), np.float32), epochs=1, batch_size=2, verbose=0,
                  callbacks=callbacks)
        x = _x(71, True, 17)
        expected = model.predict(x, verbose=0)
        if fw is tf_keras:
            model.save(str(root / "tk.h5"))
            model.save_weights(str(root / "tk_w.h5"))
            (root / "tk.json").write_text(model.to_json())
        else:
            model.save(str(root / "k3.keras"))
        out[name] = (root, x, expected, np.asarray(model(x)))
    return out


FROZEN = {"tf_keras .h5": ("tk", "tk.h5", None), "Keras 3 .keras": ("k3", "k3.keras", None),
          "tf_keras save_weights .h5 + config": ("tk", "tk_w.h5", "tk.json"),
          "tf_keras ModelCheckpoint weights .h5 + config": ("tk", "tk_checkpoint.h5", "tk.json")}


@pytest.mark.parametrize("case", list(FROZEN))
def test_a_frozen_backbone_called_in_training_mode_converts_to_what_predict_gives(frozen_base, case):
    """Also finding 2: a tf_keras weights-only .h5 with its config converts with the config's Rescaling."""
    fw, name, config = FROZEN[case]
    root, x, expected, eager = frozen_base[fw]
    scale = float(np.abs(expected).max())
    # the framework itself: the frozen BNs use their moving statistics in eager model(x) as in predict
    assert np.abs(eager - expected).max() <= LOGIT_RTOL * scale
    model = weights_tools.read(str(root / name), config=config and str(root / config))
    ours = np.asarray(model(x), np.float64)  # raw pixels: the Rescaling stage must come from the config
    err = float(np.abs(ours - expected).max())
    assert err <= LOGIT_RTOL * scale, f"{case}: max |ours - keras| {err:.3g} > {LOGIT_RTOL} * {scale:.3g}"


def test_a_given_config_is_never_ignored(frozen_base, tmp_path):
    root = frozen_base["tk"][0]
    config = str(root / "tk.json")
    # head flags describe a weights-only file without a config: with one, they are refused, not preferred
    with pytest.raises(ConversionError, match="describe the head of a weights-only file"):
        weights_tools.read(str(root / "tk_w.h5"), config=config, pooling="avg", input_shape=(71, 71),
                           classifier_activation="linear")
    for full in ("tk.h5", "k3.keras"):  # files that record their own architecture
        with pytest.raises(ConversionError, match="records its own architecture"):
            weights_tools.read(str(frozen_base["k3" if full == "k3.keras" else "tk"][0] / full), config=config)
    # a config that is not the weights' model: refused by name, never paired by guess
    other = tmp_path / "other.json"
    other.write_text((root / "tk.json").read_text().replace('"logits"', '"classifier"'))
    with pytest.raises(ConversionError, match="holds weights for logits, which the given config does not have"):
        weights_tools.read(str(root / "tk_w.h5"), config=str(other))
