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
* ``tf_keras``: the recipe in tf_keras (3 softmax classes), a full-model ``.h5``.
* ``tf_keras_savedmodel`` / ``tf_keras_ckpt``: the recipe in tf_keras with 2 logits and a
  Sequential preprocessing model (Rescaling, then an adapted Normalization: weights inside a
  nested Sequential), saved in TensorFlow's formats: a SavedModel directory (``model.save(dir)``)
  and a checkpoint (``save_weights(prefix)``, plus ``to_json()``), given as its prefix and as ``.index``.
* ``tf_keras_flat_ckpt_flags``: tf_keras' ``applications.Xception(include_top=True, classes=3,
  classifier_activation=None)`` at 71x71, a checkpoint without config: converted by layer order
  with ``--pooling avg --input-shape 71,71 --classifier-activation linear``.
* ``gmp160``: GlobalMaxPooling2D + Dense(4) at 160x160 as ``.weights.h5`` (and its
  ``config.json``): without the config the file cannot say max pooling or 160x160.
* ``center_crop``: the recipe at a variable input size, ``Input((None, None, 3))``
  then ``CenterCrop(71, 71)`` before Rescaling, 2 logits: the crop's target is the only
  input size the file determines, so it becomes the converted model's.

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

from keras_helpers import randomize  # noqa: E402

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


def _x(size, pixels, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (2, size, size, 3))
    return (x if pixels else x / 127.5 - 1).astype(np.float32)


def _photo_batch(fw, size, pixels):
    """The photos as the Keras user feeds them: img_to_array(load_img(path, target_size))."""
    batch = np.stack([fw.utils.img_to_array(fw.utils.load_img(p, target_size=(size, size))) for p in PHOTOS])
    return batch if pixels else batch / 127.5 - 1


def _fit_one_step(model, loss, size, pixels, labels):
    # run_eagerly: tracing the training (and predict) graph of Xception costs ~5 s of CPU per model,
    # far more than one eager step at 71x71; the arithmetic is the same kernels either way.
    model.compile(optimizer="adam", loss=loss, run_eagerly=True)
    model.fit(_x(size, pixels, 99), labels, epochs=1, batch_size=2, verbose=0)


def _case(fw, model, path, size, pixels, seed, **kw):
    """One predict() call (one trace) for both the random batch and the photos."""
    x = _x(size, pixels, seed)
    photos = _photo_batch(fw, size, pixels).astype(np.float32)
    y = model.predict(np.concatenate([x, photos]), batch_size=len(x) + len(photos), verbose=0)
    return Case(path, size, pixels, x, y[:len(x)], PHOTOS, y[len(x):], **kw)


def _same_model(case, path, **kw):
    """Another file of the same model: the same inputs and Keras outputs."""
    return Case(path, case.size, case.pixels, case.x, case.expected, case.photos, case.photos_expected, **kw)


def _nested_classifier(fw, size, preprocessing, head, seed, input_size="fixed"):
    """The keras.io layout: augmentation, preprocessing, frozen nested backbone, head.

    input_size "fixed": Input((size, size, 3)); "variable": Input((None, None, 3)).
    """
    base = fw.applications.Xception(weights=None, include_top=False, input_shape=(size, size, 3))
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
    out["recipe_keras"] = case = _case(keras, recipe, path("recipe.keras"), 71, True, 1)
    out["recipe_h5"] = _same_model(case, path("recipe.h5"))
    out["recipe_weights_h5"] = _same_model(case, path("recipe.weights.h5"), config=path("recipe.config.json"))

    # adapted Normalization instead of Rescaling: statistics of a pixel sample with unequal channels
    norm = keras.layers.Normalization(name="normalization")
    normalization = _nested_classifier(keras, 71, norm, keras.layers.Dense(3, activation="softmax"), seed=22)
    norm.adapt(_x(71, True, 5) * np.array([0.5, 0.8, 1.0], np.float32))
    _fit_one_step(normalization, "sparse_categorical_crossentropy", 71, True, np.array([0, 2]))
    normalization.save(path("normalization.keras"))
    out["normalization_keras"] = _case(keras, normalization, path("normalization.keras"), 71, True, 2)

    # two Dense layers with BatchNormalization and Dropout between them, Adam, 6 classes
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(71, 71, 3))
    y = keras.layers.GlobalAveragePooling2D()(base.output)
    y = keras.layers.Dense(32, activation="relu")(y)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Dropout(0.3)(y)
    two_dense = randomize(keras.Model(base.input, keras.layers.Dense(6, activation="softmax")(y)), seed=23)
    _fit_one_step(two_dense, "sparse_categorical_crossentropy", 71, False, np.array([1, 5]))
    two_dense.save(path("two_dense.keras"))
    out["two_dense_keras"] = _case(keras, two_dense, path("two_dense.keras"), 71, False, 3)

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
    crop = keras.Sequential([keras.layers.CenterCrop(71, 71, name="center_crop"),
                             keras.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")], name="preprocessing")
    center_crop = _nested_classifier(keras, 71, crop, keras.layers.Dense(2, name="dense"), seed=26,
                                     input_size="variable")
    _fit_one_step(center_crop, keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True,
                  np.array([0, 1]))
    center_crop.save(path("center_crop.keras"))
    out["center_crop_keras"] = _case(keras, center_crop, path("center_crop.keras"), 71, True, 6)

    # the recipe in tf_keras, 3 classes, a full-model .h5
    tk = _nested_classifier(tf_keras, 71, tf_keras.layers.Rescaling(1 / 127.5, offset=-1),
                            tf_keras.layers.Dense(3, activation="softmax"), seed=25)
    _fit_one_step(tk, "sparse_categorical_crossentropy", 71, True, np.array([0, 1]))
    tk.save(path("tf_keras_recipe.h5"))
    out["tf_keras_recipe_h5"] = _case(tf_keras, tk, path("tf_keras_recipe.h5"), 71, True, 5)

    # tf_keras' own formats: 2 logits, a Sequential preprocessing model holding weights (Normalization)
    norm = tf_keras.layers.Normalization(name="normalization")
    prep = tf_keras.Sequential([tf_keras.layers.Rescaling(1 / 255.0, name="rescaling"), norm], name="preprocessing")
    tfs = _nested_classifier(tf_keras, 71, prep, tf_keras.layers.Dense(2, name="dense"), seed=27)
    norm.adapt(_x(71, True, 7) / 255.0 * np.array([0.5, 0.8, 1.0], np.float32))
    _fit_one_step(tfs, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, True, np.array([0, 1]))
    tfs.save(path("tf_keras_savedmodel"))  # no extension: a SavedModel directory
    tfs.save_weights(path("tf_keras_ckpt"))  # no .h5: a TensorFlow checkpoint
    tfs.save(path("tf_keras_same.h5"))  # the same model in the format the converter read first
    with open(path("tf_keras_ckpt.json"), "w") as f:
        f.write(tfs.to_json())
    out["tf_keras_savedmodel"] = case = _case(tf_keras, tfs, path("tf_keras_savedmodel"), 71, True, 7)
    out["tf_keras_ckpt"] = _same_model(case, path("tf_keras_ckpt"), config=path("tf_keras_ckpt.json"))
    out["tf_keras_ckpt_index"] = _same_model(case, path("tf_keras_ckpt.index"), config=path("tf_keras_ckpt.json"))

    # applications.Xception itself (no nesting), 3 logits, a checkpoint without its config
    flat = randomize(tf_keras.applications.Xception(weights=None, include_top=True, input_shape=(71, 71, 3),
                                                     classes=3, classifier_activation=None), seed=28)
    _fit_one_step(flat, tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True), 71, False, np.array([0, 2]))
    flat.save_weights(path("tf_keras_flat_ckpt"))
    out["tf_keras_flat_ckpt_flags"] = _case(tf_keras, flat, path("tf_keras_flat_ckpt"), 71, False, 8, options=[
        "--pooling", "avg", "--input-shape", "71,71", "--classifier-activation", "linear"])
    return out


