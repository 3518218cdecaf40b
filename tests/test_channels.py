"""Xception for 1- and 4-channel inputs (grayscale X-rays, RGBA or RGB+NIR), against the Keras model that wrote each file.

Keras builds ``keras.applications.Xception(weights=None, input_shape=(H, W, C))`` for any ``C``
(imagenet_utils.obtain_input_shape warns for C not in {1, 3}; ImageNet weights take 3 only). Only
block1_conv1's kernel changes, ``(3, 3, C, 32)``: the channel count flows from the input shape through
the architecture table, the fast plan (im2col K = 9C), the manifest (format version 7) and predict's
photos (``load_img(color_mode="grayscale")`` for C = 1, ``"rgba"`` for C = 4).

One model per source, built once per module, 71x71, one fit() step each, then random kernels and
BN statistics (keras_helpers.randomize), the classifier scaled to logits of standard deviation ~1:
* ``gray``: ``keras.applications.Xception(weights=None, input_shape=(71, 71, 1), classes=3)``, Keras 3,
  saved as .keras, Keras 3 legacy .h5, and .weights.h5 + its to_json() config;
* ``rgba``: Keras 3, Input((71, 71, 4)) -> Normalization with 4 means and variances -> a nested
  Xception(include_top=False, input_shape=(71, 71, 4)) -> GAP -> Dropout -> Dense(2, softmax);
  .keras and .weights.h5 + config;
* ``tf_gray``: tf_keras, Input((71, 71, 1)) -> Rescaling(1/127.5, offset=-1) -> a nested 1-channel
  backbone -> GAP -> Dense(3, softmax); full-model .h5, a SavedModel directory
  (``model.save("dir", save_traces=False)``),
  a TensorFlow checkpoint + config, and a legacy weights-only .h5 (``save_weights("w.h5")``) + config,
  which without its config is refused (it does not record the input's channels).

Tolerance: 1e-5 absolute on probabilities, as tests/test_nested_compiled.py: float32 sums over ~36 layers
in another order than Keras' (71x71, random BN statistics), far below a wrong layer's effect (logits of
standard deviation ~1 keep the probabilities away from 0 and 1, where an error shows).
"""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from keras_helpers import randomize

import npxception
from npxception import weights_tools
from npxception import weights as wfile

SIZE = 71
PROB_ATOL = 1e-5
# {source: channels}
CHANNELS = {"gray": 1, "rgba": 4, "tf_gray": 1}


def _keras(model, x):
    """Keras' answer on ``x``: ``model(x, training=False)``, the layers predict runs, in inference mode, on the
    same batch, without the graph ``predict`` traces for every model (seconds of CPU each; one batch here)."""
    out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def _train(fw, model, channels, pixels, seed):
    """One fit() step, then random weights and BN statistics, the last Dense scaled to logits of std ~1."""
    rng = np.random.default_rng(seed)
    lo, hi = (0, 255) if pixels else (-1, 1)
    x = rng.uniform(lo, hi, (2, SIZE, SIZE, channels)).astype(np.float32)
    # eager: tracing Xception's training graph costs seconds more than one step at 71x71 (keras_corpus)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=True)
    model.fit(x, np.array([0, 1]), epochs=1, batch_size=2, verbose=0)
    randomize(model, seed=seed)
    last = model.layers[-1]
    kernel, bias = last.get_weights()
    features = _keras(fw.Model(model.input, last.input), x)
    last.set_weights([kernel / float(np.std(features @ kernel)), np.zeros_like(bias)])
    batch = rng.uniform(lo, hi, (2, SIZE, SIZE, channels)).astype(np.float32)
    return batch, _keras(model, batch)


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """{source: (Keras model, {file kind: (path, config)}, x, Keras' predict(x))}."""
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("channels")
    out = {}

    gray = keras.applications.Xception(weights=None, input_shape=(SIZE, SIZE, 1), classes=3)
    x, y = _train(keras, gray, 1, False, seed=1)
    gray.save(root / "gray.keras")
    gray.save(root / "gray.h5")
    gray.save_weights(root / "gray.weights.h5")
    (root / "gray.json").write_text(gray.to_json())
    out["gray"] = (gray, {"keras": (root / "gray.keras", None), "keras3_h5": (root / "gray.h5", None),
                          "weights_h5": (root / "gray.weights.h5", root / "gray.json")}, x, y)

    image = keras.Input((SIZE, SIZE, 4), name="image")
    norm = keras.layers.Normalization(mean=[120.0, 110.0, 100.0, 140.0], variance=[3600.0, 3000.0, 3300.0, 2500.0])
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 4))
    features = keras.layers.GlobalAveragePooling2D(name="pool")(base(norm(image)))
    rgba = keras.Model(image, keras.layers.Dense(2, activation="softmax", name="dense")(
        keras.layers.Dropout(0.2)(features)))
    x, y = _train(keras, rgba, 4, True, seed=2)
    rgba.save(root / "rgba.keras")
    rgba.save_weights(root / "rgba.weights.h5")
    (root / "rgba.json").write_text(rgba.to_json())
    out["rgba"] = (rgba, {"keras": (root / "rgba.keras", None),
                          "weights_h5": (root / "rgba.weights.h5", root / "rgba.json")}, x, y)

    image = tf_keras.Input((SIZE, SIZE, 1), name="image")
    base = tf_keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 1))
    scaled = tf_keras.layers.Rescaling(1 / 127.5, offset=-1)(image)
    pooled = tf_keras.layers.GlobalAveragePooling2D(name="pool")(base(scaled))
    tf_gray = tf_keras.Model(image, tf_keras.layers.Dense(3, activation="softmax", name="dense")(pooled))
    x, y = _train(tf_keras, tf_gray, 1, True, seed=3)
    tf_gray.save(root / "tf_gray.h5")
    # tf_keras' default format for a path without extension. save_traces=False: ~14 s of CPU to save with the traced
    # functions, ~4 s without (measured 2026-11-29); the channels are in keras_metadata.pb's config either way, and
    # tests/test_real_world_files.py::test_savedmodel_without_traces_reads_as_the_default_one shows the reader gets
    # the same config, manifest and arrays from both saves (the corpus keeps a default one)
    tf_gray.save(root / "tf_gray_savedmodel", save_traces=False)
    tf_gray.save_weights(str(root / "tf_gray_ckpt"))
    tf_gray.save_weights(root / "tf_gray.weights_only.h5")  # legacy HDF5, weights only: no input shape
    (root / "tf_gray.json").write_text(tf_gray.to_json())
    out["tf_gray"] = (tf_gray, {"tf_keras_h5": (root / "tf_gray.h5", None),
                                "savedmodel": (root / "tf_gray_savedmodel", None),
                                "checkpoint": (root / "tf_gray_ckpt", root / "tf_gray.json"),
                                "weights_only_h5": (root / "tf_gray.weights_only.h5", root / "tf_gray.json")}, x, y)
    return out


REFERENCE_RUN = {"gray": "keras", "rgba": "keras", "tf_gray": "tf_keras_h5"}
FILES = [(s, k) for s, kinds in {"gray": ("keras", "keras3_h5", "weights_h5"), "rgba": ("keras", "weights_h5"),
                                 "tf_gray": ("tf_keras_h5", "savedmodel", "checkpoint", "weights_only_h5")}.items()
         for k in kinds]


@pytest.mark.parametrize("source, kind", FILES, ids=[f"{s}-{k}" for s, k in FILES])
def test_converted_files_compute_what_model_predict_gives(sources, tmp_path, source, kind):
    """Every file of each model converts to a C-channel model whose fast and reference paths give Keras'
    probabilities; saved and loaded, it keeps them, as format version 7 with a (3, 3, C, 32) stem kernel."""
    _, files, x, expected = sources[source]
    path, config = files[kind]
    c = CHANNELS[source]
    model = weights_tools.read(str(path), config=None if config is None else str(config))
    assert model.channels == c and model.input_shape == (SIZE, SIZE, c)
    assert model.weights["block1_conv1/kernel"].shape == (3, 3, c, 32)
    assert 0.05 < expected.max() < 0.95  # not saturated: a wrong layer would move them
    # the reference ops once per model (the same arithmetic for each of its files)
    for impl in ("fast", "reference") if kind == REFERENCE_RUN[source] else ("fast",):
        probs = model(x, impl=impl)
        err = float(np.abs(probs - expected).max())
        assert err < PROB_ATOL, f"{source} {kind} {impl}: max |ours - keras| {err:.3g}; ours {probs[0]} vs keras {expected[0]}"
    if kind != REFERENCE_RUN[source]:
        return  # the file format once per model
    out = tmp_path / "m.npz"
    model.save(out)
    loaded = npxception.load(out)  # runs its golden test case
    manifest, _ = wfile.read(out)
    assert manifest["format_version"] == wfile.WITH_CHANNELS == 7
    assert manifest["input_shape"][2] == c and manifest["source_input_shape"][2] == c
    assert np.abs(loaded(x) - expected).max() < PROB_ATOL


def test_a_weights_only_h5_of_a_non_rgb_model_is_refused_without_its_config(sources, tmp_path, capsys):
    """tf_keras save_weights("w.h5") of the 1-channel model records no input shape: Keras' by-order rule
    would build an RGB stem. Refused, naming the stem's kernel, its channels and --config (the way out,
    with which it converts: test_converted_files_compute_what_model_predict_gives[tf_gray-weights_only_h5]),
    by the API and by the command line (one line, no output file)."""
    from npxception.weights_tools.cli import main

    path = sources["tf_gray"][1]["weights_only_h5"][0]
    message = (f"{path}: layer #0 (block1_conv1 / xception/block1_conv1 in the file) has a kernel (3, 3, 1, 32): "
               "a model of 1-channel inputs, whose input shape a weights-only file does not record; pass the "
               "model's --config model.keras|config.json")
    with pytest.raises(weights_tools.ConversionError, match="^" + re.escape(message)):
        weights_tools.read(str(path))
    assert main(["convert", str(path), "-o", str(tmp_path / "out.npz")]) == 1
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not list(tmp_path.glob("out.npz*"))


def test_the_fast_plan_reads_the_channels_from_the_input_shape():
    """block1_conv1's im2col row is K = 3 * 3 * C: 9 for grayscale, 27 for RGB, 36 for RGBA; no special case."""
    from npxception.fast.run import FastPlan

    for c in (1, 3, 4):
        model = npxception.Xception(include_top=False, input_shape=(None, None, c), seed=c)
        plan = FastPlan(model)  # the kernel as a (K, 32) matrix, or packed in panels of (K, 32) (fast/direct.py)
        kernel = plan.packed.get("block1_conv1", plan.folded["block1_conv1"][0])
        assert kernel.shape[-2:] == (9 * c, 32)
        x = np.random.default_rng(c).uniform(-1, 1, (1, 23, 29, c)).astype(np.float32)
        oracle = model.astype("float64").forward(x.astype(np.float64), impl="reference")[0]
        # float32 against the float64 oracle: 1e-5 of the map's scale (~36 layers of float32 sums, measured
        # ~1e-6 at this size); a misread channel moves every value
        assert np.abs(model(x) - oracle).max() <= 1e-5 * np.abs(oracle).max()


def test_xception_takes_what_keras_takes(sources):
    """Without ImageNet weights any channel count, as Keras; with them 3 only, refused with Keras' words,
    before any download. The parameter counts are Keras' own."""
    import keras

    gray, rgba = sources["gray"][0], sources["rgba"][0]
    assert npxception.Xception(input_shape=(SIZE, SIZE, 1), classes=3).count_params() == gray.count_params()
    nested = next(layer for layer in rgba.layers if hasattr(layer, "layers"))
    assert npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 4)).count_params() == nested.count_params()
    with pytest.raises(ValueError, match="The input must have 3 channels"):
        keras.applications.Xception(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 1))
    with pytest.raises(ValueError, match=r"ImageNet weights take 3 channels \(Keras: 'The input must have 3 channels'\)"):
        npxception.Xception(weights="imagenet", include_top=False, input_shape=(SIZE, SIZE, 1))
    with pytest.raises(ValueError, match=r"ImageNet weights with the top take \(299, 299, 3\)"):
        npxception.Xception(weights="imagenet", input_shape=(299, 299, 4))
    with pytest.raises(ValueError, match=r"C, the channels, in \[1, 1024\]"):
        npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 0))
    model = npxception.Xception(input_shape=(SIZE, SIZE, 4), classes=2)
    with pytest.raises(ValueError, match=r"expected shape \(N, H, W, 4\), found \(1, 71, 71, 3\) "
                                         r"\(this model takes 4-channel images\)"):
        model(np.zeros((1, SIZE, SIZE, 3), np.float32))


def test_captured_layers_are_keras_layers(sources):
    """capture= on a grayscale model: the stem and the pooled features against Keras' own layers."""
    import keras

    gray, files, x, _ = sources["gray"]
    model = weights_tools.read(str(files["keras"][0]))
    names = ["block1_conv1_act", "block4_add", "avg_pool"]
    keras_names = [model.source_layer_names.get(n, n) for n in names]
    theirs = _keras(keras.Model(gray.input, [gray.get_layer(n).output for n in keras_names]), x)
    _, acts = model.forward(x, capture=names)
    for name, t in zip(names, theirs):
        # 1e-5 of the layer's scale: float32 sums in another order (see the module docstring)
        assert np.abs(acts[name] - t).max() <= 1e-5 * np.abs(t).max(), name


def test_three_channel_files_keep_their_format_version(tmp_path):
    """Only a model whose channels are not 3 is written as version 7: older readers keep reading the rest."""
    path = npxception.Xception(include_top=False, input_shape=(SIZE, SIZE, 3)).save(tmp_path / "rgb.npz")
    manifest = wfile.read(path)[0]
    assert manifest["format_version"] == wfile.WITHOUT_INPUT_STAGE and manifest["input_shape"] == [SIZE, SIZE, 3]


# ---- photos: Keras' load_img color mode for the model's channels ------------------------------------

@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """Photo files of the modes a grayscale or RGBA model meets: RGB, 8-bit and 16-bit grayscale, RGBA with
    transparency, palette; sizes other than 71x71 (predict resizes them, nearest, as load_img does)."""
    from PIL import Image

    root = tmp_path_factory.mktemp("channel_photos")
    rng = np.random.default_rng(7)
    rgb = Image.open("examples/chelsea.png").convert("RGB")
    paths = {"rgb.png": rgb, "gray.jpg": rgb.convert("L"),
             # a 16-bit X-ray: load_img(color_mode="grayscale") keeps its 0..65535 values, unscaled
             "gray16.png": Image.fromarray(rng.integers(0, 65536, (90, 80)).astype(np.uint16)),
             "rgba.png": Image.fromarray(rng.integers(0, 256, (64, 75, 4)).astype(np.uint8)),
             "palette.gif": rgb.convert("P")}
    out = []
    for name, img in paths.items():
        img.save(root / name)
        out.append(str(root / name))
    assert Image.open(root / "gray16.png").mode == "I;16"
    return out


MODES = {"gray": "grayscale", "rgba": "rgba", "tf_gray": "grayscale"}
KERAS_FILE = {"gray": "keras", "rgba": "keras", "tf_gray": "tf_keras_h5"}


@pytest.fixture(scope="module")
def converted(sources, tmp_path_factory):
    """{source: the .npz converted from its Keras file}."""
    root = tmp_path_factory.mktemp("channel_npz")
    out = {}
    for source, kind in KERAS_FILE.items():
        out[source] = str(root / f"{source}.npz")
        weights_tools.convert(str(sources[source][1][kind][0]), out[source])
    return out


def test_photos_are_read_as_keras_load_img_reads_them_for_the_models_channels(photos):
    """load_image(color_mode=...) is keras.utils.load_img + img_to_array bit for bit, for every photo mode."""
    import keras

    for mode, c in (("grayscale", 1), ("rgba", 4), ("rgb", 3)):
        assert npxception.images.color_mode(c) == mode
        for path in photos:
            for size in (None, (SIZE, SIZE)):
                theirs = keras.utils.img_to_array(keras.utils.load_img(path, color_mode=mode, target_size=size))
                ours = npxception.load_image(path, target_size=size, color_mode=mode)
                assert ours.dtype == theirs.dtype and ours.shape == theirs.shape and ours.shape[2] == c, (path, mode)
                assert np.array_equal(ours, theirs), (path, mode, size)
    # the 16-bit grayscale photo keeps its values, as Keras: above 255
    assert npxception.load_image(photos[2], color_mode="grayscale").max() > 255
    with pytest.raises(ValueError, match=r"this model takes 2-channel images, and a photo is 1 \(grayscale\), 3 "
                                         r"\(rgb\) or 4 \(rgba\) channels"):
        npxception.images.color_mode(2)


@pytest.mark.parametrize("source", list(MODES))
def test_predict_and_the_cli_give_model_predict_of_keras_own_photo_arrays(sources, converted, photos, source,
                                                                          capsys):
    """predict() and `npxception predict` on photo files: the Keras model (_keras: in inference mode, as its
    predict) on img_to_array(load_img(photo, color_mode=..., target_size=(71, 71))), preprocess_input'ed unless
    the model rescales in-graph."""
    import keras

    from npxception.cli import main

    kmodel, _, _, _ = sources[source]
    model = npxception.load(converted[source])
    arrays = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, color_mode=MODES[source],
                                                                       target_size=(SIZE, SIZE))) for p in photos])
    expected = _keras(kmodel, arrays if model.takes_pixels else arrays / 127.5 - 1)
    classes = expected.shape[1]
    results = npxception.predict(photos, weights=converted[source], top=classes)
    for path, preds, want in zip(photos, results, expected):
        got = np.zeros(classes)
        for index, _, score in preds:
            got[index] = score
        assert np.abs(got - want).max() < PROB_ATOL, (source, path, got, want)
    assert main(["predict", *photos, "--weights", converted[source], "--top", str(classes), "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["file"] for r in rows] == photos
    for row, want in zip(rows, expected):
        got = np.zeros(classes)
        for p in row["predictions"]:
            got[p["index"]] = p["score"]
        assert np.abs(got - want).max() < PROB_ATOL, (source, row)


def test_compare_and_show_feed_a_grayscale_model_its_photo(sources, converted, photos, tmp_path, capsys):
    """compare --image runs the .npz and the Keras file that wrote it on the grayscale photo (load_photo, as
    predict reads it) and finds no divergence; show draws the maps of that photo (a 16-bit one included)."""
    from PIL import Image

    from npxception.cli import main

    keras_file = str(sources["gray"][1]["keras"][0])
    assert main(["compare", "--against", keras_file, "--weights", converted["gray"], "--image", photos[2]]) == 0
    out = capsys.readouterr().out
    assert "input: 1 photo(s) at 71x71" in out and "no divergence" in out
    maps = tmp_path / "maps.png"
    assert main(["show", photos[2], "--weights", converted["gray"], "--layer", "block1_conv1_act", "-o", str(maps)]) == 0
    assert Image.open(maps).mode == "RGB"
