"""Keras 3's newer save options and layers, converted or refused as what they are (review 27).

* F1/F2: a model quantized by ``model.quantize("int8")``/``("int4")`` is refused naming its policy
  (``int8_from_float32``, which Keras 3 records as mode and source_name) and the remedy (the float model
  saved before quantize()); its ``.weights.h5`` read with the float model's config says it looks quantized.
* F3: a ``.keras`` archive written with ``weights_format="npz"`` is refused naming ``model.weights.npz``.
* F5: the ``variables/variables.index`` of a ``model.export()`` SavedModel says so, and points to ``.keras``.
* F4: Keras 3's newer augmentation layers (RandomColorJitter ... CutMix) and a ``Pipeline`` of them
  are identities at inference and convert to what ``model.predict`` gives; a Pipeline holding
  preprocessing (Resizing, Rescaling) converts as the input stage it is, and ``--skip-layer`` on it is refused.

One module fixture builds every file: one 71x71 Xception backbone (random weights and BN statistics,
keras_helpers.randomize) shared by two models, and a tiny Dense model for the refusals (they come at
reading, before any Xception is matched).
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import randomize
from npxception import weights_tools
from npxception.weights_tools import ConversionError

# max |ours - Keras| / max|Keras| at the logits: float32 unit round-off 6e-8, summed in a different order by
# TensorFlow's kernels and ours over ~36 layers, leaves ~2e-6 (tests/test_real_world_files.py); any
# augmentation applied at inference (a blur, a grayscale, an erased patch) moves the logits by far more.
RTOL = 1e-5
R = (0, 255)


def _augmentations(L):
    """Every new augmentation layer with its strongest settings: each transforms in training."""
    return [L.RandomColorJitter(value_range=R, brightness_factor=0.5, contrast_factor=0.5, saturation_factor=(0.2, 0.9),
                                hue_factor=0.5), L.RandomGrayscale(1.0), L.RandomErasing(1.0, value_range=R),
            L.RandomGaussianBlur(1.0, value_range=R), L.RandomPerspective(1.0, scale=1.0), L.RandomShear(0.5, 0.5),
            L.RandomHue(1.0, value_range=R), L.RandomSaturation(1.0, value_range=R),
            L.RandomSharpness(1.0, value_range=R), L.RandomInvert(1.0, value_range=R),
            L.RandomPosterization((1, 8), value_range=R), L.RandomColorDegeneration(1.0, value_range=R),
            L.RandomElasticTransform(1.0, scale=1.0, value_range=R), L.RandAugment(value_range=R, num_ops=3, factor=1.0),
            L.AugMix(value_range=R), L.Solarization(addition_factor=1.0, threshold_factor=(0, 0), value_range=R),
            L.MixUp(), L.CutMix(1.0)]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    from keras.src.saving import saving_lib

    L = keras.layers
    root = tmp_path_factory.mktemp("keras3_saves")
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    inp = keras.Input((71, 71, 3), name="image")
    x = keras.Sequential(_augmentations(L), name="augment")(inp)
    x = L.Pipeline([L.RandomFlip(), L.RandomGrayscale(1.0)], name="pipe")(x)
    x = L.Rescaling(1 / 127.5, offset=-1, name="rescaling")(x)
    x = L.GlobalAveragePooling2D(name="pool")(base(x, training=False))
    aug = randomize(keras.Model(inp, L.Dense(3, name="logits")(x)), seed=30)
    aug.save(str(root / "aug.keras"))
    pixels = np.random.default_rng(30).uniform(0, 255, (2, 71, 71, 3)).astype(np.float32)
    # predict run eagerly (as keras_corpus' compiled models predict): the same layers in inference mode without
    # tracing predict's graph through 18 augmentation layers and Xception (measured 3.1 s of CPU vs 0.9 s eager)
    aug.run_eagerly = True
    expected = aug.predict(pixels, verbose=0)

    inp = keras.Input((80, 80, 3), name="image")
    x = L.Pipeline([L.Resizing(71, 71), L.Rescaling(1 / 127.5, offset=-1, name="rescaling")], name="prep")(inp)
    x = L.GlobalAveragePooling2D(name="pool")(base(x, training=False))
    prep = randomize(keras.Model(inp, L.Dense(3, name="logits")(x)), seed=32)
    prep.save(str(root / "pipe_prep.keras"))
    pixels80 = np.random.default_rng(32).uniform(0, 255, (2, 80, 80, 3)).astype(np.float32)
    prep.run_eagerly = True
    expected80 = prep.predict(pixels80, verbose=0)

    inp = keras.Input((4,))
    tiny = randomize(keras.Model(inp, L.Dense(3, name="head")(L.Dense(8, name="dense")(inp))), seed=31)
    tiny.save(str(root / "float.keras"))
    saving_lib.save_model(tiny, str(root / "npzfmt.keras"), weights_format="npz")
    tiny.export(str(root / "exported"), verbose=False)  # a SavedModel: saved_model.pb, variables/
    for mode in ("int8", "int4"):
        q = keras.models.clone_model(tiny)
        q.set_weights(tiny.get_weights())
        q.quantize(mode)
        q.save(str(root / f"{mode}.keras"))
        q.save_weights(str(root / f"{mode}.weights.h5"))
    return root, {"aug": (pixels, expected), "pipe_prep": (pixels80, expected80)}


@pytest.mark.parametrize("name", ["aug", "pipe_prep"])
def test_new_augmentation_layers_and_pipelines_convert_to_what_predict_gives(files, name):
    """aug: every new augmentation layer, then a Pipeline of two; pipe_prep: a Pipeline of Resizing(71, 71)
    and Rescaling on an 80x80 input, read as the input stage it is."""
    root, refs = files
    pixels, expected = refs[name]
    ours = np.asarray(weights_tools.read(str(root / f"{name}.keras"))(pixels), np.float64)
    scale = float(np.abs(expected).max())
    err = float(np.abs(ours - expected).max())
    assert err <= RTOL * scale, f"{name}: max |ours - predict| {err:.3g} > {RTOL} * {scale:.3g}"


def test_skip_layer_never_drops_a_pipeline_that_preprocesses(files):
    """The Pipeline is read as its layers; skipping it whole, or its Rescaling, would change the answer."""
    with pytest.raises(ConversionError, match=r"--skip-layer prep: a nested model \(a Sequential or Pipeline\)"):
        weights_tools.read(str(files[0] / "pipe_prep.keras"), skip_layers=["prep"])
    with pytest.raises(ConversionError, match=r"--skip-layer rescaling: a Rescaling layer is not an identity"):
        weights_tools.read(str(files[0] / "pipe_prep.keras"), skip_layers=["rescaling"])


@pytest.mark.parametrize("mode,policy", [("int8", "int8_from_float32"), ("int4", "int4")])
def test_a_quantized_model_is_refused_naming_its_policy_and_the_float_model(files, mode, policy):
    root = files[0]
    for path, config in ((f"{mode}.keras", None), (f"{mode}.weights.h5", f"{mode}.keras")):
        with pytest.raises(ConversionError, match="dtype policy") as err:
            weights_tools.read(str(root / path), config=config and str(root / config))
        text = str(err.value)
        assert f"dtype policy '{policy}" in text and f"model.quantize('{mode}')" in text, text
        assert "saved before quantize()" in text and "set_global_policy" not in text, text


def test_quantized_weights_read_with_the_float_config_say_they_look_quantized(files):
    root = files[0]
    with pytest.raises(ConversionError, match=r"has dtype int8.*quantized by Keras' model\.quantize.*saved before"):
        weights_tools.read(str(root / "int8.weights.h5"), config=str(root / "float.keras"))


def test_a_keras_archive_with_npz_weights_is_named_as_such(files):
    root = files[0]
    with pytest.raises(ConversionError, match=r"model\.weights\.npz \(saved with weights_format=\"npz\"\).*model\.save"):
        weights_tools.read(str(root / "npzfmt.keras"))


def test_an_exported_savedmodels_variables_say_what_they_are(files):
    with pytest.raises(ConversionError, match=r"the variables of a TensorFlow SavedModel .*model\.export\(\).*"
                                              r"model\.save\('model\.keras'\)"):
        weights_tools.read(str(files[0] / "exported" / "variables" / "variables.index"))
