"""Flatten heads on a fixed-size backbone, as the fine-tuning tutorials build them, measured against Keras.

The tutorials' model: ``Xception(include_top=False, weights=None, input_shape=(H, W, 3))``, then
``Flatten()(base.output)``, ``Dense(256, "relu")``, ``Dropout(0.5)``, ``Dense(n, "softmax")``, fit(), save.
Here at 71x71 (a 3x3x2048 map: 18,432 features) with Dense(16), random kernels and BN statistics
(keras_helpers.randomize), the backbone frozen, one fit() step before saving:

* ``k3``: Keras 3, functional on ``base.output``, softmax over 3 classes; ``.keras``, Keras 3 ``.h5`` and
  ``.weights.h5`` + ``config.json``. The last Dense is scaled so that the probabilities are not saturated
  (a softmax at 1.0 would hide a wrong flatten order), as tests/test_head_layers.py does;
* ``tfk``: tf_keras ``Sequential([base, Flatten(), Dense(16, relu), Dropout(.5), Dense(3)])``, logits, ``.h5``;
* ``cf``: Keras 3 under ``image_data_format("channels_first")``: ``Input((3, 71, 71))`` and a
  channels_first Flatten, Dense(3) logits, ``.keras`` (not fitted: Keras 3 on TensorFlow predicts NCHW on
  this CPU, as tests/test_channels_first.py measured, and that is what this case is for). Keras' Flatten moves the channels last before
  reshaping (keras/src/layers/reshaping/flatten.py), so it orders the features (H, W, C) as a
  channels_last model does: the Dense's rows need no permutation, and a (C, H, W) order is measured wrong;
* ``wch``: k3's backbone with ``Flatten(data_format="channels_first")`` on its channels_last map: Keras
  reads (N, H, W, C) as (N, C, H, W) and flattens (W, C, H); the converter records that order.

Tolerances: probabilities 1e-5 absolute, logits 1e-4 relative to the size of the terms the last Dense
sums (keras_corpus._logits_and_terms: a fit() step can leave logits far below their terms, and float32
rounding, Keras' included, is relative to the terms), as test_head_layers.py and test_real_world_files.py:
float32 sums over ~36 layers in another order, then the 18,432-term Dense, whose rounding grows like
sqrt(n) * 6e-8 = 8e-6 of its terms. A wrong feature order moves the outputs by far more (asserted).
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from keras_corpus import PHOTOS
from keras_helpers import keras_predict, random_keras_weights, randomize

import npxception
from npxception import weights_tools
from npxception.weights_tools import ConversionError

SIZE = 71
MAP = [3, 3, 2048]  # 71 -> 35 -> 33 -> 17 -> 9 -> 5 -> 3 (architecture.trace)
PROB_ATOL = 1e-5
LOGIT_RTOL = 1e-4


def _x(seed, n=2):
    return np.random.default_rng(seed).uniform(-1, 1, (n, SIZE, SIZE, 3)).astype(np.float32)  # preprocess_input's


def _fit(model, loss, x, labels):
    # eager: tracing Xception's training graph costs seconds more than one step at 71x71 (keras_corpus)
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    model.fit(x, labels, epochs=1, batch_size=len(x), verbose=0)


def _keras(model, x):
    """Keras' answer on ``x``: ``model(x, training=False)``, the layers predict runs, in inference mode, on the
    same batch, without the graph ``predict`` traces for every model (seconds of CPU each; one batch here)."""
    out = model(x, training=False)
    return [np.asarray(o) for o in out] if isinstance(out, (list, tuple)) else np.asarray(out)


def _terms(fw, model, dense, x, run=_keras):
    """Keras' output on ``x`` and the size of the terms its last Dense ``dense`` sums."""
    layer = model.get_layer(dense)
    both = fw.Model(model.inputs, [layer.input, model.output])
    features, y = run(both, x)
    kernel, bias = layer.get_weights()
    return y, float((np.abs(features) @ np.abs(kernel) + np.abs(bias)).max())


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    import tf_keras

    from test_channels_first import channels_first

    root = tmp_path_factory.mktemp("flatten")
    out = {}
    x = _x(1)
    photos = np.stack([keras.utils.img_to_array(keras.utils.load_img(p, target_size=(SIZE, SIZE)))
                       for p in PHOTOS]) / 127.5 - 1

    # -- Keras 3, the tutorial's functional head, softmax
    base = keras.applications.Xception(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    base.trainable = False  # the tutorials' first phase: the head trains (and fit() takes 1/3 of the time)
    y = keras.layers.Flatten(name="flatten")(base.output)
    y = keras.layers.Dense(16, activation="relu", name="fc")(y)
    y = keras.layers.Dropout(0.5, name="dropout")(y)
    k3 = randomize(keras.Model(base.input, keras.layers.Dense(3, activation="softmax", name="predictions")(y)), 51)
    _fit(k3, "sparse_categorical_crossentropy", _x(99), np.array([0, 2]))
    hidden = np.abs(np.asarray(keras.Model(k3.input, k3.get_layer("fc").output)(x))).max()
    kernel, bias = k3.get_layer("predictions").get_weights()  # logits of size ~2: probabilities not saturated
    k3.get_layer("predictions").set_weights([kernel * (2.0 / (hidden * np.abs(kernel).sum(0).max())), bias * 0])
    expected = _keras(k3, np.concatenate([x, photos]))
    k3.save(root / "k3.keras")
    k3.save(root / "k3.h5")
    k3.save_weights(root / "k3.weights.h5")
    (root / "k3.json").write_text(k3.to_json())
    case = {"x": x, "expected": expected[:2], "photos": expected[2:], "probabilities": True}
    out["k3.keras"] = dict(case, path=str(root / "k3.keras"))
    out["k3.h5"] = dict(case, path=str(root / "k3.h5"))
    out["k3.weights.h5"] = dict(case, path=str(root / "k3.weights.h5"), config=str(root / "k3.json"))

    # -- the same model behind Input((None, None, 3)) and Resizing(71, 71): any size, the backbone's fixed
    # (k3's own layers called again: nesting the compiled k3 would save its optimizer's state inside it)
    y = base(keras.layers.Resizing(SIZE, SIZE, name="resizing")(image := keras.Input((None, None, 3), name="image")))
    for name in ("flatten", "fc", "dropout", "predictions"):
        y = k3.get_layer(name)(y)
    resized = keras.Model(image, y)
    resized.save(root / "resized.keras")
    other = np.random.default_rng(2).uniform(-1, 1, (2, 100, 90, 3)).astype(np.float32)
    out["resized.keras"] = {"path": str(root / "resized.keras"), "x": other, "probabilities": True,
                            "expected": _keras(resized, other)}

    # -- the same backbone, flattened by a Flatten of the other data format: (W, C, H) order
    y = keras.layers.Flatten(data_format="channels_first", name="flatten_wch")(base.output)
    dense = keras.layers.Dense(3, name="logits")
    wch = keras.Model(base.input, dense(y))
    dense.set_weights(random_keras_weights(dense, np.random.default_rng(52)))
    wch.save(root / "wch.keras")
    y, scale = _terms(keras, wch, "logits", x)
    out["wch.keras"] = {"path": str(root / "wch.keras"), "x": x, "expected": y, "scale": scale}

    # -- tf_keras, Sequential([base, Flatten(), ...]), logits
    base = tf_keras.applications.Xception(include_top=False, weights=None, input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    tfk = randomize(tf_keras.Sequential([base, tf_keras.layers.Flatten(name="flatten"),
                                         tf_keras.layers.Dense(16, activation="relu", name="fc"),
                                         tf_keras.layers.Dropout(0.5), tf_keras.layers.Dense(3, name="logits")]), 53)
    _fit(tfk, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), _x(98), np.array([1, 2]))
    tfk.save(root / "tfk.h5")
    y, scale = _terms(tf_keras, tfk, "logits", x)
    out["tfk.h5"] = {"path": str(root / "tfk.h5"), "x": x, "expected": y, "scale": scale}

    # -- Keras 3 channels_first: NCHW input, a channels_first Flatten
    with channels_first(keras):
        base = keras.applications.Xception(include_top=False, weights=None, input_shape=(3, SIZE, SIZE))
        y = keras.layers.Flatten(name="flatten")(base.output)
        cf = randomize(keras.Model(base.input, keras.layers.Dense(3, name="logits")(y)), 54)
        cf.save(root / "cf.keras")  # no fit(): the fitted files above hold the training state; this one the layout
        # predict: its graph runs the NCHW model on this CPU (tests/test_channels_first.py)
        y, scale = _terms(keras, cf, "logits", x.transpose(0, 3, 1, 2), run=keras_predict)
    out["cf.keras"] = {"path": str(root / "cf.keras"), "x": x, "expected": y, "scale": scale}
    return out


@pytest.fixture(scope="module")
def converted(files):
    return {name: weights_tools.read(case["path"], config=case.get("config")) for name, case in files.items()}


def _close(ours, case, what):
    ours = np.asarray(ours, np.float64)
    assert ours.shape == case["expected"].shape, (what, ours.shape)
    err = float(np.abs(ours - case["expected"]).max())
    if case.get("probabilities"):
        assert case["expected"].max() < 0.95, case["expected"]  # the test's power: not saturated
        assert err <= PROB_ATOL, f"{what}: max |ours - keras| {err:.3g}; ours {ours[0]} vs keras {case['expected'][0]}"
    else:
        assert err <= LOGIT_RTOL * case["scale"], f"{what}: max |ours - keras| {err:.3g} > {LOGIT_RTOL} * {case['scale']:.3g}"
    return err


ORDERS = {"k3.keras": "hwc", "k3.h5": "hwc", "k3.weights.h5": "hwc", "tfk.h5": "hwc", "cf.keras": "hwc",
          "wch.keras": "wch"}


@pytest.mark.parametrize("name", list(ORDERS))
def test_flatten_head_converts_to_what_keras_predicts(files, converted, name):
    model = converted[name]
    assert model.head[0] == {"kind": "flatten", "name": model.head[0]["name"], "map_shape": MAP, "order": ORDERS[name]}
    assert model.input_shape == (SIZE, SIZE, 3)
    _close(model(files[name]["x"]), files[name], name)


def test_behind_a_resizing_the_model_takes_any_size(files, converted):
    """A Resizing before the backbone fixes its size, so the Flatten's map: the source's other sizes convert
    and compute, as Keras computes them (100x90 here, resized bilinearly to 71x71 by the stage)."""
    model = converted["resized.keras"]
    assert model.source_input_shape == (None, None, 3) and model.input_shape == (SIZE, SIZE, 3)
    assert model.head[0]["map_shape"] == MAP
    _close(model(files["resized.keras"]["x"]), files["resized.keras"], "resized.keras at 100x90")
    assert "its input stage brings every image to 71x71" in weights_tools.inspect(files["resized.keras"]["path"])


def test_fast_and_reference_paths_in_both_dtypes(files, converted):
    """The head in npxception/head.py on the backbone's map: fast and reference ops, float32 and float64;
    and the whole float64 model (its fused plan) against Keras."""
    from npxception.head import run_head

    from npxception import architecture as arch

    case, model = files["tfk.h5"], converted["tfk.h5"]
    weights = model.weights  # read once: each read unpacks every kernel the fast plan holds packed
    backbone = {k: weights[k] for k in arch.param_shapes(model.layers, [], model.channels)}
    features = npxception.model.XceptionModel(backbone, input_shape=model.input_shape)(case["x"])  # (2, 3, 3, 2048)
    assert features.shape == (2, *MAP)
    for dtype in (np.float32, np.float64):
        params = {k: a.astype(dtype) for k, a in weights.items()}
        for impl in ("fast", "reference"):
            _close(run_head(model.head, params, features.astype(dtype), impl), case, f"head {impl} {dtype.__name__}")
    _close(model.astype("float64")(case["x"]), case, "float64 model")


@pytest.mark.parametrize("name, wrong", [("cf.keras", "chw"), ("wch.keras", "hwc"), ("k3.keras", "chw")])
def test_the_recorded_order_is_the_one_keras_computes(files, converted, name, wrong):
    """The power of the tests above: another order of the same features (a channels_first model flattened
    (C, H, W), as a PyTorch port's ``x.view(N, -1)`` would) moves the outputs far beyond the tolerance."""
    model, case = converted[name], files[name]
    head = [dict(h, order=wrong) if h["kind"] == "flatten" else h for h in model.head]
    other = npxception.model.XceptionModel(model.weights, head=head, input_shape=model.input_shape)
    err = float(np.abs(np.asarray(other(case["x"]), np.float64) - case["expected"]).max())
    assert err > 100 * (PROB_ATOL if case.get("probabilities") else LOGIT_RTOL * case["scale"]), (name, wrong, err)


def test_predict_resizes_photos_to_the_size_the_flatten_fixes(files, converted):
    """`predict` loads photos at 71x71 (load_img's nearest), as the Keras user feeds them; another size is
    refused naming the one the model takes and its Flatten, never computed."""
    model, case = converted["k3.keras"], files["k3.keras"]
    ours = np.zeros_like(case["photos"])
    for i, preds in enumerate(npxception.predict(PHOTOS, model=model, top=3)):
        for index, _, score in preds:
            ours[i, index] = score
    assert np.abs(ours - case["photos"]).max() <= PROB_ATOL, (ours, case["photos"])
    built = r"takes 71x71 images \(the source model's input shape \(71, 71, 3\); its Flatten head flatten is built " \
            r"for the 3x3x2048 feature map of that size\), found 96x96"
    with pytest.raises(ValueError, match=r"target_size: this model takes 71x71 images only .*found 96x96; give "
                                         r"target_size=\(71, 71\)"):
        npxception.predict(PHOTOS[0], model=model, target_size=(96, 96))
    with pytest.raises(ValueError, match=built):
        model(np.zeros((1, 96, 96, 3), np.float32))  # 96x96 would give a 3x3 map too: still not the model's size


def test_npz_records_it_and_the_golden_checks_it(converted, tmp_path):
    """The manifest records the flatten (format 6); the golden check on load runs through it, and fails when
    the recorded order is altered; summary() shows it with the Dense's 18,432 rows."""
    from npxception import weights as wfile

    model = converted["k3.keras"]
    path = model.save(tmp_path / "flat.npz")
    with np.load(path) as f:
        arrays = dict(f)
    manifest = json.loads(str(arrays["__manifest__"]))
    assert manifest["format_version"] == wfile.WITH_FLATTEN == 6
    assert manifest["head"][0] == {"kind": "flatten", "name": "flatten", "map_shape": MAP, "order": "hwc"}
    loaded = npxception.load(path)  # runs the golden case
    assert loaded.head == model.head
    lines = []
    loaded.summary(print_fn=lines.append)
    assert "flatten (Flatten)                               (None, 18432)                      0" in lines[0]
    assert "fc (Dense)                                      (None, 16)                   294,928" in lines[0]
    manifest["head"][0]["order"] = "chw"
    arrays["__manifest__"] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "reordered.npz", **arrays)
    with pytest.raises(npxception.golden.GoldenMismatch, match="reordered.npz"):
        npxception.load(tmp_path / "reordered.npz")


@pytest.mark.parametrize("edit, message", [
    (lambda m: m.update(input_shape=[None, None, 3]),
     r"head: flatten \(Flatten\) is built for a 3x3x2048 feature map, so the model takes one input size; "
     r"input_shape \(None, None, 3\) takes any size"),
    (lambda m: m.update(input_shape=[160, 160, 3]),
     r"flatten \(Flatten\): built for a 3x3x2048 feature map, but a 160x160 input gives 5x5x2048"),
    (lambda m: m["head"][0].update(map_shape=[3, 3]), r"flatten needs map_shape, the \[H', W', C\] feature map"),
    (lambda m: m["head"][0].update(order="nhwc"), r"flatten order must be one of"),
    (lambda m: m["head"].insert(1, {"kind": "global_avg_pool", "name": "pool"}),
     r"head\[1\] \(pool\): global_avg_pool after flatten \(flatten\); a head reduces the feature map once"),
])
def test_a_manifest_that_misdescribes_the_flatten_is_refused(converted, tmp_path, edit, message):
    model = converted["k3.keras"]
    path = model.save(tmp_path / "flat.npz", golden=False)
    with np.load(path) as f:
        arrays = dict(f)
    manifest = json.loads(str(arrays["__manifest__"]))
    edit(manifest)
    arrays["__manifest__"] = np.array(json.dumps(manifest))
    np.savez(tmp_path / "edited.npz", **arrays)
    with pytest.raises(ValueError, match=message):
        npxception.load(tmp_path / "edited.npz")


def test_compare_captures_the_flatten_by_its_keras_name(files, converted):
    """compare runs the source in Keras and reaches the Flatten's output by its name: (N, 18432) on both
    sides, the channels_first model's too (Keras' flattened features need no layout change)."""
    from npxception.compare import compare

    for name in ("k3.keras", "cf.keras"):
        report = compare(converted[name], files[name]["path"], files[name]["x"], explain=False)
        assert report.ok, str(report)
        assert "flatten" in [row.layer for row in report.rows], [row.layer for row in report.rows][-5:]


def test_inspect_lists_the_flatten(files):
    text = weights_tools.inspect(files["tfk.h5"]["path"])
    assert "head ['flatten', 'dense', 'dense']" in text
    assert "head: flatten (Flatten) of the 3x3x2048 feature map, features in (H, W, C) order; the model takes " \
           "71x71 images only" in text


# ---- refusals: what Keras does not compute, or the file does not determine --------------------------------

def _edited(path, edit, **kw):
    from npxception.weights_tools.mapping import to_npxception

    klayers = [dataclasses.replace(k, config=json.loads(json.dumps(k.config)) if k.config else k.config)
               for k in weights_tools.read_layers(path).klayers]
    edit(klayers)
    return to_npxception(klayers, source="model", **kw)


def _by_name(klayers, name):
    return next(k for k in klayers if k.name == name)


def _any_size(klayers):
    root = next(k for k in klayers if k.class_name == "InputLayer")
    root.config["batch_shape"] = [None, None, None, 3]


def _map_relu(klayers):
    """An Activation between the backbone and the Flatten: the head would not start with its reduction."""
    flatten = _by_name(klayers, "flatten")
    relu = weights_tools.KLayer("map_relu", "Activation", {"activation": "relu"}, inbound=list(flatten.inbound))
    flatten.inbound = ["map_relu"]
    klayers.insert(klayers.index(flatten), relu)


def _set_class(name, class_name, **config):
    def edit(klayers):
        k = _by_name(klayers, name)
        k.class_name = class_name
        k.config.update(config)
    return edit


@pytest.mark.parametrize("edit, message", [
    (_any_size, r"layer flatten \(Flatten\) flattens the backbone's feature map, whose size this model leaves open"
                r".*Keras cannot build a Dense after it"),
    (_set_class("block1_conv1_act", "Flatten"),
     r"unsupported layer block1_conv1_act \(Flatten\) inside the backbone, reading from block1_conv1_bn"),
    (_map_relu, r"unsupported layer map_relu \(Activation\) on the backbone's feature map: the head must reduce the "
                r"map first, with GlobalAveragePooling2D, GlobalMaxPooling2D or Flatten"),
    (_set_class("flatten", "Flatten", data_format="channels_middle"),
     r"layer flatten \(Flatten\): data_format 'channels_middle'"),
])
def test_flatten_refusals_name_the_layer(files, edit, message):
    with pytest.raises(ConversionError, match=message):
        _edited(files["k3.keras"]["path"], edit)


def test_a_flatten_after_global_pooling_is_keras_identity(files):
    """Keras' Flatten of pooled (N, C) features returns them unchanged (rank 2: nothing to move or reshape):
    GAP -> Flatten -> Dense converts as GAP -> Dense."""
    def pool_first(klayers):
        flatten = _by_name(klayers, "flatten")
        pool = weights_tools.KLayer("pool", "GlobalAveragePooling2D", {"data_format": "channels_last"},
                                    inbound=list(flatten.inbound))
        flatten.inbound = ["pool"]
        klayers.insert(klayers.index(flatten), pool)
        fc = _by_name(klayers, "fc")
        fc.weights = [fc.weights[0][:2048], fc.weights[1]]

    model = _edited(files["k3.keras"]["path"], pool_first)
    assert [h["kind"] for h in model.head] == ["global_avg_pool", "dense", "dense"]


def test_a_weights_only_file_needs_its_config(files):
    """The arrays of a Flatten head do not say it is one (nor the size): refused without --config."""
    with pytest.raises(ConversionError, match=r"layer fc after the Xception backbone \(weights \[\(18432, 16\), "
                                              r"\(16,\)\]\): a weights-only file records no head beyond one "
                                              r"\(2048, classes\) Dense; pass the model's --config"):
        weights_tools.read(files["k3.weights.h5"]["path"])


def test_the_docs_flatten_head_runs():
    """docs/keras-recipe.md's Flatten head, run with Keras: 160x160 gives a 5x5x2048 map, so the first Dense has
    51,200 rows, as the page says."""
    import keras  # a test extra: imported, never skipped
    from test_docs_quotes import QUOTES, ROOT

    (quote,) = [q for q in QUOTES if q[2] == "run"]
    doc, line, _, body = quote
    assert doc == "docs/keras-recipe.md" and "Flatten()" in body
    namespace = {"keras": keras, "n": 3}
    exec(compile(body, f"{doc}:{line}", "exec"), namespace)
    model = keras.Model(namespace["base"].input, namespace["outputs"])
    flatten_dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)][0]
    assert flatten_dense.kernel.shape == (51200, 256)
    assert model.output_shape == (None, 3)
    assert "160x160 gives a 5x5x2048 map: 51,200 rows" in (ROOT / doc).read_text()
