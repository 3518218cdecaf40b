"""Keras models written with ``image_data_format("channels_first")`` (NCHW, the PyTorch convention).

Two classifiers of the keras.io recipe's shape, built under channels_first, given
random kernels and BN statistics (keras_helpers.randomize), trained one ``fit()``
step and saved in the formats people save them in:

* ``k3``: Keras 3, ``Input((3, 71, 71))``, RandomFlip, an adapted per-channel
  ``Normalization(axis=1)``, the frozen nested backbone, GAP, Dropout, ``Dense(2)``
  logits; saved as ``.keras``, Keras-3 ``.h5`` and ``.weights.h5`` + ``config.json``;
* ``tfk``: the same in tf_keras with ``Rescaling(1/127.5, offset=-1)``, a
  full-model ``.h5``. TensorFlow 2.21 runs tf_keras' NCHW convolutions and
  pooling on this CPU (measured: its predictions equal a channels_last clone's
  with the same weights), so tf_keras itself is the reference, not a stand-in.

Keras gets NCHW input; ours gets the same batch as NHWC. The conversions,
``model(x)`` and ``npxception predict`` on photo files run in one framework-free
subprocess (free_runner.py); compare and ``--check-with-keras`` run here.

Tolerance: 1e-5 relative to the size of the terms the logits sum, as in
test_real_world_files.py (keras_corpus._logits_and_terms: a fit() step can make
two logits nearly cancel, and float32 rounding is relative to the terms); a
layout read the wrong way round (an input transposed, the channels normalised
with the wrong statistics) moves the logits by far more than 1e-2 of them.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os

import numpy as np
import pytest

from free_runner import run_jobs
from keras_corpus import PHOTOS
from keras_helpers import keras_predict, randomize

RTOL = 1e-5
SIZE = 71
FORMATS = ["k3_keras", "k3_h5", "k3_weights_h5", "tfk_h5"]


@contextlib.contextmanager
def channels_first(fw):
    """The framework's global image_data_format set to channels_first for the block, restored after."""
    backend = getattr(fw, "config", None) or fw.backend  # Keras 3: keras.config; tf_keras: tf_keras.backend
    before = backend.image_data_format()
    backend.set_image_data_format("channels_first")
    try:
        yield
    finally:
        backend.set_image_data_format(before)


def _pixels(seed, n=2):
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype(np.float32)  # NHWC


def _nchw(x):
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def _classifier(fw, preprocessing, seed, adapt=None):
    """The recipe's layout under channels_first, randomised, ``preprocessing`` adapted to ``adapt`` (NCHW
    pixels) when given, then trained one step."""
    base = fw.applications.Xception(weights=None, include_top=False, input_shape=(3, SIZE, SIZE))
    base.trainable = False
    inputs = fw.Input((3, SIZE, SIZE), name="image")
    x = preprocessing(fw.layers.RandomFlip("horizontal", name="random_flip")(inputs))
    x = base(x, training=False)
    x = fw.layers.GlobalAveragePooling2D(name="pool")(x)
    x = fw.layers.Dropout(0.2, name="dropout")(x)
    model = randomize(fw.Model(inputs, fw.layers.Dense(2, name="dense")(x)), seed=seed)
    if adapt is not None:  # after randomize, which would overwrite the statistics
        preprocessing.adapt(adapt)
    # one training step on NCHW pixels, eager as keras_corpus._fit_one_step where it can be: tf_keras' eager
    # tape back-propagates into the frozen backbone too, and TensorFlow has no NCHW MaxPoolGrad on CPU
    # ("Default MaxPoolingGradOp only supports NHWC"); its traced graph prunes that path (measured)
    model.compile(optimizer="adam", loss=fw.losses.SparseCategoricalCrossentropy(from_logits=True),
                  run_eagerly=fw.__name__ == "keras")
    model.fit(_nchw(_pixels(99)), np.array([0, 1]), epochs=1, batch_size=2, verbose=0)
    return model


def _record(fw, model, path, x):
    """What the framework predicts: on ``x`` (given NCHW) and on the photos as a channels_first Keras user
    loads them (``img_to_array(load_img(path, target_size))`` is (3, H, W) under channels_first)."""
    photos = np.stack([fw.utils.img_to_array(fw.utils.load_img(p, target_size=(SIZE, SIZE))) for p in PHOTOS])
    assert photos.shape[1] == 3, photos.shape  # the user's own arrays are NCHW
    both = fw.Model(model.input, [model.get_layer("pool").output, model.output])  # one predict, one trace
    features, logits = keras_predict(both, np.concatenate([_nchw(x), photos]))
    kernel, bias = model.get_layer("dense").get_weights()
    terms = (np.abs(features) @ np.abs(kernel) + np.abs(bias)).max(axis=1)  # keras_corpus._logits_and_terms
    y, photos_y = logits[:len(x)], logits[len(x):]
    scale, photos_scale = float(terms[:len(x)].max()), float(terms[len(x):].max())
    return {"path": path, "x": x, "expected": y, "scale": scale, "photos_expected": photos_y,
            "photos_scale": photos_scale, "config": None}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("channels_first")
    out = {}
    x = _pixels(1)
    with channels_first(keras):
        norm = keras.layers.Normalization(axis=1, name="normalization")  # per channel: axis 1 in NCHW
        k3 = _classifier(keras, norm, seed=31, adapt=_nchw(_pixels(5, 4) * np.array([0.5, 0.8, 1.0], np.float32)))
        k3.save(root / "k3.keras")
        k3.save(root / "k3.h5")
        k3.save_weights(root / "k3.weights.h5")
        (root / "k3.config.json").write_text(k3.to_json())
        out["k3_keras"] = case = _record(keras, k3, str(root / "k3.keras"), x)
        out["k3_h5"] = dict(case, path=str(root / "k3.h5"))
        out["k3_weights_h5"] = dict(case, path=str(root / "k3.weights.h5"), config=str(root / "k3.config.json"))
        out["k3_model"] = k3  # for the dumps test: the live model
    with channels_first(tf_keras):
        tfk = _classifier(tf_keras, tf_keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"), seed=32)
        tfk.save(root / "tfk.h5")
        out["tfk_h5"] = _record(tf_keras, tfk, str(root / "tfk.h5"), x)
    return out


@pytest.fixture(scope="module")
def converted(corpus, tmp_path_factory):
    work = tmp_path_factory.mktemp("channels_first_out")
    jobs = []
    for name in FORMATS:
        case = corpus[name]
        np.save(work / f"{name}_x.npy", case["x"])
        argv = ["convert", case["path"], "-o", str(work / f"{name}.npz")]
        if case["config"]:
            argv += ["--config", case["config"]]
        jobs.append({"name": name, "argv": argv, "output": str(work / f"{name}.npz"), "x": str(work / f"{name}_x.npy"),
                     "result": str(work / f"{name}_y.npy"), "photos": PHOTOS})
    jobs.append({"name": "inspect", "argv": ["inspect", corpus["k3_keras"]["path"]]})
    return work, run_jobs(jobs, work)


def _close(ours, theirs, scale, what):
    assert ours.shape == theirs.shape, f"{what}: shape ours {ours.shape} vs keras {theirs.shape}"
    err = float(np.abs(ours.astype(np.float64) - theirs).max())
    scale = max(float(np.abs(theirs).max()), scale)
    assert err <= RTOL * scale, f"{what}: max |ours - keras| {err:.3g} > {RTOL:g} * {scale:.3g}; " \
                                f"ours {ours.ravel()[:4]} vs keras {theirs.ravel()[:4]}"


@pytest.mark.parametrize("name", FORMATS)
def test_channels_first_file_matches_keras_predict_on_nchw_input(corpus, converted, name):
    """npxception.load(...)(x) on NHWC x equals Keras' model.predict on the same batch as NCHW."""
    work, results = converted
    res, case = results[name], corpus[name]
    assert res["rc"] == 0, f"{name}: {res['stderr']}"
    assert "run_error" not in res, res.get("run_error")
    assert res["input_shape"] == [SIZE, SIZE, 3] and res["takes_pixels"]
    assert "channels_first (NCHW) Keras model" in res["summary"]
    _close(np.load(work / f"{name}_y.npy"), case["expected"], case["scale"], name)


@pytest.mark.parametrize("name", FORMATS)
def test_npxception_predict_on_photos_matches_keras(corpus, converted, name):
    """`npxception predict --weights X.npz photo...` gives Keras' logits on the photos it loads as (3, H, W)."""
    res, case = converted[1][name], corpus[name]
    assert res["predict_rc"] == 0, res["predict_stderr"]
    ours = np.zeros_like(case["photos_expected"])
    for i, item in enumerate(json.loads(res["predict"])):
        for p in item["predictions"]:
            ours[i, p["index"]] = p["score"]
    _close(ours, case["photos_expected"], case["photos_scale"], f"{name} on photos")


def test_data_format_is_recorded_and_shown(converted):
    import npxception

    work, results = converted
    text = results["inspect"]["stdout"]
    assert "input shape: (3, 71, 71)" in text  # as the file records it
    assert "data_format: channels_first (the source takes NCHW" in text
    model = npxception.load(work / "k3_keras.npz")
    assert model.source_data_format == "channels_first"
    assert model.manifest()["source_data_format"] == "channels_first"
    assert model.astype("float64").source_data_format == "channels_first"


# k3_keras is run by Keras in the two tests after this one; the weights-only file with its config and
# tf_keras' .h5 are the other two ways keras_side opens a file
@pytest.mark.parametrize("name", ["k3_weights_h5", "tfk_h5"])
def test_compare_feeds_keras_nchw_and_finds_no_divergence(corpus, name):
    from npxception import weights_tools
    from npxception.compare import compare

    case = corpus[name]
    model = weights_tools.read(case["path"], config=case["config"])
    report = compare(model, case["path"], case["x"], config=case["config"])
    assert report.ok, str(report)
    backbone = [r for r in report.rows if r.flow != "input"]  # the input stage's layers are rows of their own
    assert len(backbone) >= 132 and backbone[0].layer == "block1_conv1"


def test_check_with_keras_golden_is_keras_own_output(corpus, tmp_path, name="k3_keras"):
    """convert --check-with-keras feeds Keras the golden input as NCHW: the output digest it stores is Keras'
    model.predict on that input, and the file loads (its golden check passes on our NHWC model)."""
    import npxception
    from npxception import weights_tools
    from npxception import golden as gold

    case = corpus[name]
    path = weights_tools.convert(case["path"], tmp_path / "checked.npz", check_with_keras=True)
    model = npxception.load(path)
    assert model.golden.source.startswith(("keras ", "tf_keras ")), model.golden.source
    kmodel = corpus["k3_model"]  # the model that wrote the file
    x = gold.model_input(model, model.golden.pixels, np.float32)  # (1, H, W, 3)
    theirs = np.asarray(keras_predict(kmodel, _nchw(x)), np.float64).ravel()
    digest = model.golden.digests[-1]
    assert digest.layer == "dense" and digest.shape == (1, 2)
    # Keras with oneDNN is not bit-reproducible between graphs: its predict and its call (the golden's) differ
    # by 1.5e-6 of max|logit| here (measured), where the two logits nearly cancel terms ~10x larger; an input
    # fed NHWC, or a channels_last reading, is refused by Keras or changes the logits entirely
    np.testing.assert_allclose(digest.sample, theirs[digest.index], rtol=0, atol=RTOL * np.abs(theirs).max())


def test_nchw_dump_of_a_channels_first_model_compares_with_layout_nchw(corpus, tmp_path):
    """A channels_first Keras user's own activation dump (NCHW arrays, named by Keras, with its input) compares
    with layout='NCHW', as a PyTorch port's dump does."""
    import keras

    from npxception import weights_tools
    from npxception.compare import compare

    case, kmodel = corpus["k3_keras"], corpus["k3_model"]
    model = weights_tools.read(case["path"])
    base = kmodel.get_layer("xception")
    names = ["block1_conv1", "block2_sepconv2_bn", "block4_pool", "block14_sepconv2_act"]
    probe = keras.Model(base.input, [base.get_layer(n).output for n in names])
    feed = _nchw(model.backbone_input(case["x"]))  # what the nested backbone reads, NCHW
    dump = dict(zip(names, (np.asarray(a) for a in probe(feed))))
    np.savez(tmp_path / "dump.npz", **dump)
    report = compare(model, str(tmp_path / "dump.npz"), case["x"], layout="NCHW")
    assert report.ok, str(report)
    assert {r.layer for r in report.rows} >= set(names)


# ---- refusals: read the k3 file's layers once, change one thing each ---------------------------------------

@pytest.fixture(scope="module")
def k3_layers(corpus):
    from npxception import weights_tools

    return weights_tools.read_layers(corpus["k3_keras"]["path"]).klayers


def _convert(klayers, edit, keras_version=None):
    from npxception.weights_tools.mapping import to_npxception

    layers = copy.deepcopy(klayers)
    edit({k.name: k for k in layers})
    return to_npxception(layers, source="cf.keras", keras_version=keras_version)


def _rescaling(scale, offset):
    """The k3 model with Rescaling(scale, offset) instead of its Normalization."""
    def edit(by):
        k = by["normalization"]
        k.class_name, k.weights = "Rescaling", []
        k.config = {"name": k.name, "scale": scale, "offset": offset}
    return edit


def test_per_channel_rescaling_scales_the_channels_as_keras_3_does(k3_layers):
    """Keras 3 reshapes a per-channel Rescaling scale to (3, 1, 1) under channels_first (layout.py): the converted
    stage scales the channels of our NHWC batch as Keras' layer does the NCHW one."""
    import keras

    scale = [1 / 255, 2 / 255, 3 / 255]
    model = _convert(k3_layers, _rescaling(scale, -1.0), keras_version="3.15.1")
    x = _pixels(7)
    with channels_first(keras):
        theirs = np.asarray(keras.layers.Rescaling(scale, offset=-1.0)(_nchw(x)))
    np.testing.assert_allclose(model.backbone_input(x), theirs.transpose(0, 2, 3, 1), rtol=1e-6)


@pytest.mark.parametrize("layer", ["Resizing", "CenterCrop"])
def test_geometry_stage_of_a_channels_first_model_is_keras_own(k3_layers, layer):
    """Keras 3's Resizing and CenterCrop with data_format channels_first resize and crop the H and W of the NCHW
    batch: behind Input((3, None, None)) the converted stage computes the same on NHWC at another size."""
    import keras

    cfg = {"height": SIZE, "width": SIZE, "data_format": "channels_first"}
    if layer == "Resizing":
        cfg.update(interpolation="bilinear", crop_to_aspect_ratio=False, pad_to_aspect_ratio=False,
                   fill_mode="constant", fill_value=0.0, antialias=False)

    def edit(by):
        k = by["normalization"]
        k.class_name, k.weights, k.config = layer, [], {"name": k.name, **cfg}
        by["image"].config["batch_shape"] = [None, 3, None, None]
    model = _convert(k3_layers, edit, keras_version="3.15.1")
    assert model.source_input_shape == (None, None, 3) and model.input_shape == (SIZE, SIZE, 3)
    x = np.random.default_rng(8).uniform(0, 255, (2, 100, 133, 3)).astype(np.float32)
    theirs = np.asarray(getattr(keras.layers, layer)(**cfg)(_nchw(x))).transpose(0, 2, 3, 1)
    # bilinear sums of two-by-two float32 products of pixels up to 255: round-off ~255 * 6e-8 per term
    np.testing.assert_allclose(model.backbone_input(x), theirs, rtol=0, atol=255 * 1e-6)


@pytest.mark.parametrize("scale, offset, version, message", [
    (1 / 127.5, [-1.0, 0.0, 1.0], "3.15.1", r"a per-channel offset in a channels_first model broadcasts over the "
                                            r"width of the NCHW batch \(Keras 3 reshapes the scale only\)"),
    ([0.1, 0.2, 0.3], 0.0, "2.15.0", r"a per-channel scale .*\(only Keras 3 reshapes the scale; the file records "
                                     r"Keras 2.15.0\)"),
    ([0.1, 0.2, 0.3], 0.0, None, r"a per-channel scale .*the file records no Keras version"),
])
def test_per_channel_rescaling_keras_cannot_compute_is_refused(k3_layers, scale, offset, version, message):
    from npxception.weights_tools import ConversionError

    with pytest.raises(ConversionError, match=r"layer normalization \(Rescaling\): " + message):
        _convert(k3_layers, _rescaling(scale, offset), keras_version=version)


def _set(name, **cfg):
    def edit(by):
        by[name].config.update(cfg)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_set("pool", data_format="channels_last"),
     r"mixed data_format: layer block1_conv1 \(Conv2D\) is channels_first, layer pool \(GlobalAveragePooling2D\) "
     r"is channels_last"),
    (_set("block13_pool", data_format="channels_last"), r"mixed data_format: .*layer block13_pool \(MaxPooling2D\)"),
    (_set("block5_sepconv1", data_format="channels_last"), r"mixed data_format: .*block5_sepconv1"),
    (_set("block1_conv1_bn", axis=-1), r"block1_conv1_bn .*BatchNormalization axis -1; expected the channel axis "
                                      r"of a channels_first map \(1 or -3\)"),
    (_set("normalization", axis=-1), r"normalization \(Normalization\): axis -1; only per-channel statistics "
                                     r"convert \(axis 1 or -3 in a channels_first model\)"),
    (_set("block1_conv1", data_format="channels_middle"), r"block1_conv1 \(Conv2D\): data_format 'channels_middle'"),
])
def test_inconsistent_layouts_are_refused_by_name(k3_layers, edit, message):
    from npxception.weights_tools import ConversionError

    with pytest.raises(ConversionError, match=message):
        _convert(k3_layers, edit)


def test_theano_dim_ordering_is_refused(k3_layers):
    from npxception.weights_tools import ConversionError

    def theano(by):
        cfg = by["block1_conv1"].config
        del cfg["data_format"]
        cfg["dim_ordering"] = "th"
    with pytest.raises(ConversionError, match=r"block1_conv1 \(Conv2D\): Keras 1 dim_ordering 'th'"):
        _convert(k3_layers, theano)


def test_manifest_without_the_field_reads_as_not_recorded(converted, tmp_path):
    """A file written before source_data_format existed loads with None; a bad value is refused by name."""
    import npxception

    work, _ = converted
    with np.load(work / "k3_keras.npz") as f:
        arrays = dict(f)
    manifest = json.loads(str(arrays["__manifest__"]))
    assert manifest.pop("source_data_format") == "channels_first"
    arrays["__manifest__"] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "older.npz", **arrays)
    assert npxception.load(tmp_path / "older.npz").source_data_format is None
    manifest["source_data_format"] = "NCHW"
    arrays["__manifest__"] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=r"bad.npz: source_data_format: expected one of"):
        npxception.load(tmp_path / "bad.npz")


def test_nchw_input_in_a_channels_last_model_names_the_layout_it_was_read_in(k3_layers):
    """The report that started this: an input of (None, 3, 71, 71) read as NHWC. The message says which layout
    the shape was read in, and why (every layer that depends on a data format says channels_last)."""
    from npxception.weights_tools import ConversionError
    from npxception.weights_tools.layout import DEPENDS

    def channels_last(by):
        for k in by.values():
            if k.class_name in DEPENDS:
                k.config["data_format"] = "channels_last"
    with pytest.raises(ConversionError, match=r"cf\.keras: input layer image: 71 channels and a side of 3: its shape "
                                              r"\(None, 3, 71, 71\) read as \(N, H, W, C\), as the model's layers "
                                              r"are channels_last; in the other layout it is a 3-channel \(RGB\) image"):
        _convert(k3_layers, channels_last)
