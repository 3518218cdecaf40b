"""Files shaped like real projects' files, written by Keras 3 and tf_keras for the tests.

Each model is built the way people build Xception classifiers, given random
kernels and random BN statistics (keras_helpers.randomize: an identity BN would
hide a wrongly mapped one), then compiled and trained one step with ``fit()``
before saving, so every file holds optimizer state like a real trained model:

* ``recipe``: the keras.io transfer-learning recipe. RandomFlip + RandomRotation
  (in a Sequential), ``Rescaling(1/127.5, offset=-1)``, the frozen backbone
  nested as one layer called with ``training=False``, GAP, Dropout, ``Dense(1)``
  logits; saved as ``.keras``, Keras-3 ``.h5`` and ``.weights.h5`` + ``config.json``.
* ``normalization``: the same with an adapted ``Normalization`` instead of Rescaling.
* ``two_dense``: inline backbone, GAP, Dense(32, relu), BatchNormalization,
  Dropout, Dense(6, softmax), trained with Adam; takes preprocess_input's output.
* ``tf_keras``: the recipe in tf_keras (3 softmax classes), a full-model ``.h5``, and the same model as
  tf_keras writes a ``.keras`` archive and a ``.weights.h5`` (+ its ``to_json()``): Keras 3's layouts.
* ``tf_keras_savedmodel`` / ``tf_keras_ckpt``: the recipe in tf_keras with 2 logits and a
  Sequential preprocessing model (Rescaling, then an adapted Normalization: weights inside a
  nested Sequential), saved in TensorFlow's formats: a SavedModel directory (``model.save(dir)``)
  and a checkpoint (``save_weights(prefix)``, plus ``to_json()``), given as its prefix and as ``.index``;
  the SavedModel again with ``save_traces=False`` (``tf_keras_savedmodel_no_traces/``, beside it).
* ``tf_keras_flat_ckpt_flags``: tf_keras' ``applications.Xception(include_top=True, classes=3,
  classifier_activation=None)`` at 71x71, a checkpoint without config: converted by layer order
  with ``--pooling avg --input-shape 71,71 --classifier-activation linear``.
* ``gmp160``: GlobalMaxPooling2D + Dense(4) at 160x160 as ``.weights.h5`` (and its
  ``config.json``): without the config the file cannot say max pooling or 160x160.
* ``center_crop``: the recipe at a variable input size, ``Input((None, None, 3))``
  then ``CenterCrop(71, 71)`` before Rescaling, 2 logits: the crop's target becomes
  the backbone's input size, and the converted model takes every size Keras 3 crops.
* ``resizing``: the same with Keras 3's ``Resizing(71, 71)`` (bilinear): any size.
* ``tf_keras_center_crop``: the center_crop case in tf_keras (a full-model ``.h5``),
  whose CenterCrop resizes (smart_resize) images smaller than its target.
* ``any_size``: ``Input((None, None, 3))``, Rescaling, a nested backbone built for any size
  (``input_shape=(None, None, 3)``), GAP, Dropout, Dense(3) logits, no geometry layer: nothing
  fixes the backbone's size, so each photo runs at its own size, down to 7x7 as in Keras; smaller is refused.
* ``preprocess_input``: the tensorflow.org transfer-learning tutorial: augmentation, then
  ``applications.xception.preprocess_input`` called on the symbolic tensor (``x /= 127.5; x -= 1``,
  saved as operation nodes: Keras 3's TrueDivide and Subtract, tf_keras' TFOpLambda), the nested
  backbone, GAP, Dropout(0.2), Dense(3) logits; as Keras 3 ``.keras`` and tf_keras ``.h5``.

The variable-size cases also record Keras' predictions at other sizes (``sizes``:
larger and smaller, odd and even, non-square) and on photos at their own size
(``img_to_array(load_img(path))``, the photos of ``examples/`` plus a JPEG and a
small PNG cut from them), one predict call per photo as a Keras user makes it.

Inputs are 71x71 (Keras' minimum without the top) except where the case is the
input size. Each :class:`Case` records the model's own kind of input (raw
pixels where it rescales in-graph), and what the writing framework predicts
on it and on the photos in ``examples/`` loaded with ``load_img``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_helpers import keras_predict, randomize  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PHOTOS = [os.path.join(REPO, "examples", n) for n in ("chelsea.png", "coffee.png")]


@dataclass
class Case:
    path: str  # the file to convert
    size: int  # the model's input height and width
    pixels: bool  # True: the model takes raw [0, 255] pixels (it rescales in-graph)
    x: np.ndarray  # the model's own kind of input
    expected: np.ndarray  # keras_model.predict(x)
    photos: list[str]  # image files for `npxception predict`
    photos_expected: np.ndarray  # keras_model.predict on img_to_array(load_img(photo, target_size))
    config: str | None = None  # the architecture of a weights-only file
    options: list[str] = field(default_factory=list)  # extra convert options
    # variable-size sources: {(h, w): (x, keras_model.predict(x), scale)}, None for a size we must refuse
    sizes: dict = field(default_factory=dict)
    # the size of the terms the logits sum (_logits_and_terms), where the tolerance is relative to them
    scale: float | None = None
    photos_scale: float | None = None
    # variable-size sources: the photos and Keras on them resized to the 71x71 case's size by load_img
    resized_photos: list[str] = field(default_factory=list)
    resized_expected: np.ndarray | None = None
    resized_scale: float | None = None
    # the live Keras model that wrote the file, kept for the cases whose tests probe its layers (the golden
    # tests: Keras' values from the writing model, not from the file opened again); None for the others
    keras_model: object = field(default=None, repr=False)


def _x(size, pixels, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (2, size, size, 3))
    return (x if pixels else x / 127.5 - 1).astype(np.float32)


def _photo_batch(fw, size, pixels):
    """The photos as the Keras user feeds them: img_to_array(load_img(path, target_size))."""
    batch = np.stack([fw.utils.img_to_array(fw.utils.load_img(p, target_size=(size, size))) for p in PHOTOS])
    return batch if pixels else batch / 127.5 - 1


# Sizes around the 71x71 target: equal, larger non-square, even/odd, smaller on one or both axes.
SIZES = [(71, 71), (100, 133), (90, 80), (72, 97), (64, 50), (80, 66)]


def own_size_photos(root) -> list[str]:
    """examples/' photos plus a JPEG (173x141) and a PNG smaller than 71x71 (52x64) cut from them."""
    from PIL import Image

    with Image.open(PHOTOS[0]) as im:
        im.convert("RGB").crop((120, 40, 120 + 173, 40 + 141)).save(os.path.join(root, "cat.jpg"), quality=90)
        im.convert("RGB").crop((200, 90, 200 + 52, 90 + 64)).save(os.path.join(root, "small.png"))
    return PHOTOS + [os.path.join(root, "cat.jpg"), os.path.join(root, "small.png")]


def _logits_and_terms(fw, model, eager=False):
    """``x -> (model.predict(x), terms)`` in one Keras run, where ``terms`` is ``max_k sum_j |f_j W_jk| + |b_k|``
    over the batch: the size of the terms the Dense logits sum, from Keras' own pooled features. A fit()
    step can leave logits far smaller than their terms (measured on the resizing case: 5.1e3 against ~5e4
    before the step), and float32 rounding, Keras' included, is relative to the terms: Keras' own
    batch-of-2 and batch-of-4 predictions then differ by 1.3e-5 of max|logit|.

    ``eager``: ``predict`` runs eagerly, as the corpus' compiled models' own ``predict`` does (_fit_one_step):
    the same layers in inference mode, without a predict graph traced for each new input size and photo
    (measured 2026-11-30 on the any_size model: ~1.0 s of CPU a traced call at 71x71 to 141x173, 0.2-0.3 s
    eager, the same logits to float32 rounding; the corpus makes 45 such calls)."""
    both = fw.Model(model.input, [model.get_layer("pool").output, model.output])
    if eager:
        both.run_eagerly = True
    kernel, bias = model.get_layer("dense").get_weights()

    def run(x):
        features, logits = keras_predict(both, x)
        return logits, float((np.abs(features) @ np.abs(kernel) + np.abs(bias)).max())
    return run


def _variable_case(fw, model, path, seed, photos, refuses, sizes=SIZES):
    """A variable-size source: the 71x71 case, plus Keras on other ``sizes`` and on each photo at its own
    size; ``refuses(h, w)`` marks the sizes the converted model must refuse (no Keras answer recorded)."""
    case = _case(fw, model, path, 71, True, seed)
    run = _logits_and_terms(fw, model, eager=True)
    case.scale = run(case.x)[1]
    rng = np.random.default_rng(seed + 100)
    for h, w in sizes:
        x = rng.uniform(0, 255, (2, h, w, 3)).astype(np.float32)
        case.sizes[(h, w)] = None if refuses(h, w) else (x, *run(x))
    rows, scales = [], []
    for p in photos:
        arr = fw.utils.img_to_array(fw.utils.load_img(p))[None]
        if refuses(*arr.shape[1:3]):
            rows.append(np.full(case.expected.shape[1], np.nan))
            continue
        logits, terms = run(arr)
        rows.append(logits[0])
        scales.append(terms)
    # Keras on the photos resized by load_img(target_size=(71, 71)): what --size 71x71 feeds
    case.resized_photos = PHOTOS
    case.resized_expected, case.resized_scale = run(_photo_batch(fw, 71, True).astype(np.float32))
    case.photos, case.photos_expected, case.photos_scale = photos, np.array(rows), max(scales)
    return case


def _geometry_classifier(fw, geometry, path, seed, labels, case_seed, photos, refuses=lambda h, w: False):
    """``Input((None, None, 3))`` -> ``geometry`` -> Rescaling -> the nested backbone -> Dense(2) logits,
    fit one step at 71x71, saved to ``path``; the case records Keras at other sizes and on photos."""
    preprocessing = fw.Sequential([geometry, fw.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")],
                                  name="preprocessing")
    model = _nested_classifier(fw, 71, preprocessing, fw.layers.Dense(2, name="dense"), seed=seed,
                               input_size="variable")
    _fit_one_step(model, fw.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array(labels))
    model.save(path)
    return _variable_case(fw, model, path, case_seed, photos, refuses)


def _logits_case(fw, model, path, seed, **kw):
    """A case whose model ends in logits: Keras' predictions and the size of their terms
    (_logits_and_terms) on the random batch and the photos, in one predict call."""
    x = _x(71, True, seed)
    photos = _photo_batch(fw, 71, True).astype(np.float32)
    y, terms = _logits_and_terms(fw, model, eager=True)(np.concatenate([x, photos]))
    return Case(path, 71, True, x, y[:len(x)], PHOTOS, y[len(x):], scale=terms, photos_scale=terms, **kw)


def _fit_one_step(model, loss, size, pixels, labels):
    # run_eagerly: tracing the training (and predict) graph of Xception costs ~5 s of CPU per model,
    # far more than one eager step at 71x71; the arithmetic is the same kernels either way.
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    model.fit(_x(size, pixels, 99), labels, epochs=1, batch_size=2, verbose=0)


def _case(fw, model, path, size, pixels, seed, **kw):
    """One Keras run for both the random batch and the photos."""
    x = _x(size, pixels, seed)
    photos = _photo_batch(fw, size, pixels).astype(np.float32)
    # one predict for both: each predict call traces the model, ~33 s of the corpus' CPU over all cases (profiled 2026-11-29)
    y = keras_predict(model, np.concatenate([x, photos]))
    return Case(path, size, pixels, x, y[:len(x)], PHOTOS, y[len(x):], **kw)


def _same_model(case, path, **kw):
    """Another file of the same model: the same inputs and Keras outputs."""
    return Case(path, case.size, case.pixels, case.x, case.expected, case.photos, case.photos_expected, **kw)


def _nested_classifier(fw, size, preprocessing, head, seed, input_size="fixed"):
    """The keras.io layout: augmentation, preprocessing, frozen nested backbone, head.

    input_size "fixed": Input((size, size, 3)); "variable": Input((None, None, 3)) (a geometry layer in
    ``preprocessing`` brings it to the backbone's size); "any": that, and the backbone takes any size too.
    """
    base_side = None if input_size == "any" else size
    base = fw.applications.Xception(weights=None, include_top=False, input_shape=(base_side, base_side, 3))
    base.trainable = False
    # Layers named explicitly: auto-names depend on what the process built before.
    side = size if input_size == "fixed" else None
    inputs = fw.Input((side, side, 3), name="image")
    augmentation = fw.Sequential([fw.layers.RandomFlip("horizontal", name="random_flip"),
                                  fw.layers.RandomRotation(0.1, name="random_rotation")], name="data_augmentation")
    x = preprocessing(augmentation(inputs))
    x = base(x, training=False)
    x = fw.layers.GlobalAveragePooling2D(name="pool")(x)
    x = fw.layers.Dropout(0.2, name="dropout")(x)
    model = fw.Model(inputs, head(x))
    return randomize(model, seed=seed)


def build(root) -> dict[str, Case]:
    import keras
    import tf_keras

    out = {}
    path = lambda name: os.path.join(root, name)  # noqa: E731

    # the keras.io recipe: Dense(1) logits, binary cross-entropy
    recipe = _nested_classifier(keras, 71, keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"),
                                keras.layers.Dense(1, name="dense"), seed=21)
    _fit_one_step(recipe, keras.losses.BinaryCrossentropy(from_logits=True), 71, True, np.array([[0.], [1.]]))
    recipe.save(path("recipe.keras"))
    recipe.save(path("recipe.h5"))
    recipe.save_weights(path("recipe.weights.h5"))
    with open(path("recipe.config.json"), "w") as f:
        f.write(recipe.to_json())
    out["recipe_keras"] = case = _case(keras, recipe, path("recipe.keras"), 71, True, 1, keras_model=recipe)
    out["recipe_h5"] = _same_model(case, path("recipe.h5"))
    out["recipe_weights_h5"] = _same_model(case, path("recipe.weights.h5"), config=path("recipe.config.json"))

    # adapted Normalization instead of Rescaling: statistics of a pixel sample with unequal channels
    norm = keras.layers.Normalization(name="normalization")
    normalization = _nested_classifier(keras, 71, norm, keras.layers.Dense(3, activation="softmax"), seed=22)
    norm.adapt(_x(71, True, 5) * np.array([0.5, 0.8, 1.0], np.float32))
    _fit_one_step(normalization, "sparse_categorical_crossentropy", 71, True, np.array([0, 2]))
    normalization.save(path("normalization.keras"))
    out["normalization_keras"] = _case(keras, normalization, path("normalization.keras"), 71, True, 2,
                                       keras_model=normalization)

    # two Dense layers with BatchNormalization and Dropout between them, Adam, 6 classes
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    y = keras.layers.GlobalAveragePooling2D()(base.output)
    y = keras.layers.Dense(32, activation="relu")(y)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Dropout(0.3)(y)
    two_dense = randomize(keras.Model(base.input, keras.layers.Dense(6, activation="softmax")(y)), seed=23)
    _fit_one_step(two_dense, "sparse_categorical_crossentropy", 71, False, np.array([1, 5]))
    two_dense.save(path("two_dense.keras"))
    out["two_dense_keras"] = _case(keras, two_dense, path("two_dense.keras"), 71, False, 3, keras_model=two_dense)

    # GlobalMaxPooling at 160x160, saved as weights only (plus its config.json)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(160, 160, 3))
    y = keras.layers.GlobalMaxPooling2D()(base.output)
    gmp = randomize(keras.Model(base.input, keras.layers.Dense(4, activation="softmax")(y)), seed=24)
    _fit_one_step(gmp, "sparse_categorical_crossentropy", 160, False, np.array([0, 3]))
    gmp.save_weights(path("gmp160.weights.h5"))
    with open(path("gmp160.config.json"), "w") as f:
        f.write(gmp.to_json())
    out["gmp160_weights_h5"] = case = _case(keras, gmp, path("gmp160.weights.h5"), 160, False, 4,
                                            config=path("gmp160.config.json"))
    out["gmp160_weights_h5_flags"] = _same_model(case, path("gmp160.weights.h5"), options=[
        "--pooling", "max", "--input-shape", "160,160", "--classifier-activation", "softmax"])

    # a variable input size with CenterCrop(71, 71) in front of the Rescaling, 2 logits (a softmax of
    # random weights saturates at one class, and would hide a wrong input)
    photos = own_size_photos(root)
    # Keras 3 crops images of at least 71x71; a smaller one is refused (input_stage.py says why)
    out["center_crop_keras"] = _geometry_classifier(keras, keras.layers.CenterCrop(71, 71, name="center_crop"),
                                                    path("center_crop.keras"), 26, [0, 1], 6, photos,
                                                    refuses=lambda h, w: h < 71 or w < 71)
    # Keras 3's Resizing(71, 71), bilinear: every size
    out["resizing_keras"] = _geometry_classifier(keras, keras.layers.Resizing(71, 71, name="resizing"),
                                                 path("resizing.keras"), 27, [1, 0], 7, photos)
    # tf_keras' CenterCrop: its smaller-input path (smart_resize) is determined, so every size converts
    out["tf_keras_center_crop_h5"] = _geometry_classifier(
        tf_keras, tf_keras.layers.CenterCrop(71, 71, name="center_crop"), path("tf_keras_center_crop.h5"), 28,
        [0, 1], 8, photos)

    # Input((None, None, 3)) with no geometry layer and a backbone of any size: each photo at its own size,
    # 3 logits; below 7 rows or columns block1_conv2 has no output: refused, as Keras raises
    # (tests/test_small_inputs.py); 64x50 and the 52x64 photo run, as in Keras, with 2x2 exit-flow maps
    any_size = _nested_classifier(keras, 71, keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling"),
                                  keras.layers.Dense(3, name="dense"), seed=31, input_size="any")
    _fit_one_step(any_size, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([2, 0]))
    any_size.save(path("any_size.keras"))
    # (its photos already run at three sizes; each other size is one more trace of Keras' predict graph)
    out["any_size_keras"] = _variable_case(keras, any_size, path("any_size.keras"), 9, photos,
                                           refuses=lambda h, w: min(h, w) < 7, sizes=[(72, 97), (64, 50), (6, 50)])

    # the recipe in tf_keras, 3 classes, a full-model .h5
    tk = _nested_classifier(tf_keras, 71, tf_keras.layers.Rescaling(1 / 127.5, offset=-1),
                            tf_keras.layers.Dense(3, activation="softmax"), seed=25)
    _fit_one_step(tk, "sparse_categorical_crossentropy", 71, True, np.array([0, 1]))
    tk.save(path("tf_keras_recipe.h5"))
    out["tf_keras_recipe_h5"] = case = _case(tf_keras, tk, path("tf_keras_recipe.h5"), 71, True, 5, keras_model=tk)
    # tf_keras' model.save("m.keras") and save_weights("m.weights.h5") write Keras 3's layouts (the archive's
    # metadata.json says keras_version 2.x, the to_json() config too): run in tf_keras, not Keras 3 (review 30 F1)
    tk.save(path("tf_keras_recipe.keras"))
    tk.save_weights(path("tf_keras_recipe.weights.h5"))
    with open(path("tf_keras_recipe.config.json"), "w") as f:
        f.write(tk.to_json())
    out["tf_keras_recipe_keras"] = _same_model(case, path("tf_keras_recipe.keras"))
    out["tf_keras_recipe_weights_h5"] = _same_model(case, path("tf_keras_recipe.weights.h5"),
                                                    config=path("tf_keras_recipe.config.json"))

    # the tensorflow.org tutorial: preprocess_input on the symbolic input, 3 logits
    # (not also as a tf_keras SavedModel: saving one takes ~30 s here; the reader is tf_keras_savedmodel's)
    for fw, name, file, seed in ((keras, "preprocess_input_keras", "preprocess_input.keras", 29),
                                 (tf_keras, "tf_keras_preprocess_input_h5", "tf_keras_preprocess_input.h5", 30)):
        model = _nested_classifier(fw, 71, fw.applications.xception.preprocess_input,
                                   fw.layers.Dense(3, name="dense"), seed=seed)
        _fit_one_step(model, fw.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([0, 2]))
        model.save(path(file))
        out[name] = _logits_case(fw, model, path(file), seed - 20, keras_model=model)

    # tf_keras' own formats: 2 logits, a Sequential preprocessing model holding weights (Normalization)
    norm = tf_keras.layers.Normalization(name="normalization")
    prep = tf_keras.Sequential([tf_keras.layers.Rescaling(1 / 255.0, name="rescaling"), norm], name="preprocessing")
    tfs = _nested_classifier(tf_keras, 71, prep, tf_keras.layers.Dense(2, name="dense"), seed=27)
    norm.adapt(_x(71, True, 7) / 255.0 * np.array([0.5, 0.8, 1.0], np.float32))
    _fit_one_step(tfs, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([0, 1]))
    tfs.save(path("tf_keras_savedmodel"))  # no extension: a SavedModel directory, as users save it (traces kept)
    # The same model with save_traces=False (no traced functions: ~4 s of CPU to save instead of ~14-30 s, measured
    # 2026-11-29): test_savedmodel_without_traces_reads_as_the_default_one shows our reader gets the same config,
    # layer paths, manifest and arrays from it, which lets tests/test_mixed_precision.py and tests/test_channels.py
    # save theirs this way; this default save stays the one whose variables/N keys and metrics state are read.
    tfs.save(path("tf_keras_savedmodel_no_traces"), save_traces=False)
    tfs.save_weights(path("tf_keras_ckpt"))  # no .h5: a TensorFlow checkpoint
    tfs.save(path("tf_keras_same.h5"))  # the same model in the format the converter read first
    with open(path("tf_keras_ckpt.json"), "w") as f:
        f.write(tfs.to_json())
    out["tf_keras_savedmodel"] = case = _case(tf_keras, tfs, path("tf_keras_savedmodel"), 71, True, 7)
    # its 2 logits nearly cancel (measured: up to 2.4e4 with one of -1.8e3): rounding is relative to the terms
    run = _logits_and_terms(tf_keras, tfs, eager=True)
    case.scale = run(case.x)[1]
    case.photos_scale = run(_photo_batch(tf_keras, 71, True).astype(np.float32))[1]
    scales = dict(scale=case.scale, photos_scale=case.photos_scale)
    out["tf_keras_ckpt"] = _same_model(case, path("tf_keras_ckpt"), config=path("tf_keras_ckpt.json"), **scales)
    out["tf_keras_ckpt_index"] = _same_model(case, path("tf_keras_ckpt.index"), config=path("tf_keras_ckpt.json"),
                                             **scales)

    # applications.Xception itself (no nesting), 3 logits, a checkpoint without its config
    flat = randomize(tf_keras.applications.Xception(weights=None, include_top=True, input_shape=(71, 71, 3),
                                                     classes=3, classifier_activation=None), seed=28)
    _fit_one_step(flat, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, False, np.array([0, 2]))
    flat.save_weights(path("tf_keras_flat_ckpt"))
    out["tf_keras_flat_ckpt_flags"] = _case(tf_keras, flat, path("tf_keras_flat_ckpt"), 71, False, 8, options=[
        "--pooling", "avg", "--input-shape", "71,71", "--classifier-activation", "linear"])
    return out


