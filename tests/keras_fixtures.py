"""Keras-written weight files for the converter tests, built once per session.

Every model gets random kernels and random BN statistics (keras_helpers.randomize)
so that a BN mapped wrongly cannot hide behind an identity. Each entry records
the file, the input batch and what the framework that wrote it predicts.

Input sizes are small (71-150) to keep the suite fast, except the tf_keras model
with the ImageNet top, which Keras fixes at 299x299.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from keras_helpers import keras_predict, randomize  # noqa: E402


@dataclass
class Fixture:
    path: str  # the Keras-written file
    x: np.ndarray  # a preprocessed input batch
    expected: np.ndarray  # the writing framework's output on x
    kind: str  # "probabilities" (softmax) or "features"/"logits" (unbounded)
    config: str | None = None  # a .keras archive giving a .weights.h5 its wiring
    pool: bool = False  # the file holds no pooling: compare mean over H, W
    options: tuple = ()  # convert options giving what the file does not record


def _input(size, seed):
    return np.random.default_rng(seed).uniform(-1, 1, (2, size, size, 3)).astype(np.float32)


# A stand-in for the official file (the official layout, not its bytes) records no head: the head Keras'
# official file has, given by options (test_convert_files tests the official-file rule by the MD5 itself).
OFFICIAL_HEAD = ("--pooling", "avg", "--input-shape", "299,299", "--classifier-activation", "softmax")


def build_tf_keras(root) -> dict[str, Fixture]:
    """tf_keras Xception with the ImageNet top (299x299): the official file layout."""
    import tf_keras

    model = randomize(tf_keras.applications.Xception(weights=None), seed=1)
    x = _input(299, 11)
    expected = keras_predict(model, x)
    weights_only, full = os.path.join(root, "tk_weights.h5"), os.path.join(root, "tk_full.h5")
    model.save_weights(weights_only)
    model.save(full)
    tiny = tf_keras.Sequential([tf_keras.layers.Conv2D(4, 3, input_shape=(16, 16, 3)),
                                tf_keras.layers.GlobalAveragePooling2D(), tf_keras.layers.Dense(2)])
    tiny.save(os.path.join(root, "tiny_cnn.h5"))
    return {
        "tf_keras_weights_h5": Fixture(weights_only, x, expected, "probabilities", options=OFFICIAL_HEAD),
        "tf_keras_full_h5": Fixture(full, x, expected, "probabilities"),
    }


def build_keras3(root) -> dict[str, Fixture]:
    import keras

    out = {}
    # (a) the plain backbone, average-pooled
    base = randomize(keras.applications.Xception(weights=None, include_top=False,
                                                 input_shape=(96, 96, 3), pooling="avg"), seed=2)
    x = _input(96, 12)
    expected = keras_predict(base, x)
    base.save(os.path.join(root, "a_backbone.keras"))
    base.save_weights(os.path.join(root, "a_backbone.weights.h5"))
    out["a_keras"] = Fixture(os.path.join(root, "a_backbone.keras"), x, expected, "features")
    # Without a config the file records its pooling by its layers/global_average_pooling2d group only
    # (by_order._recorded_pooling): converted pooled, as Keras computed it.
    out["a_weights_h5"] = Fixture(os.path.join(root, "a_backbone.weights.h5"), x, expected, "features")

    x150 = _input(150, 13)

    def head(features, name):
        y = keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(features)
        y = keras.layers.Dense(100, activation="relu", name=f"{name}_fc")(y)
        y = keras.layers.Dropout(0.5, name=f"{name}_dropout")(y)
        return keras.layers.Dense(6, activation="softmax", name=f"{name}_predictions")(y)

    # (b) the backbone as a nested sub-model at 150x150
    backbone = keras.applications.Xception(weights=None, include_top=False, input_shape=(150, 150, 3))
    inputs = keras.Input((150, 150, 3))
    nested = keras.Model(inputs, head(backbone(inputs), "b"), name="classifier_nested")
    randomize(nested, seed=3)
    # (c) the same head built inline on the backbone's output tensor
    inline_base = keras.applications.Xception(weights=None, include_top=False, input_shape=(150, 150, 3))
    inline = keras.Model(inline_base.input, head(inline_base.output, "c"), name="classifier_inline")
    randomize(inline, seed=4)
    for key, model in (("b", nested), ("c", inline)):
        expected = keras_predict(model, x150)
        archive = os.path.join(root, f"{key}_classifier.keras")
        weights = os.path.join(root, f"{key}_classifier.weights.h5")
        model.save(archive)
        model.save_weights(weights)
        out[f"{key}_keras"] = Fixture(archive, x150, expected, "probabilities")
        out[f"{key}_weights_h5"] = Fixture(weights, x150, expected, "probabilities", config=archive)

    # another architecture's weights
    keras.applications.MobileNet(weights=None, alpha=0.25, include_top=False,
                                 input_shape=(96, 96, 3)).save(os.path.join(root, "mobilenet.keras"))
    return out


def build_bad_files(root, good_h5) -> dict[str, str]:
    """{name: path} of files every conversion must refuse (one line, exit code 1)."""
    import shutil

    import h5py

    bad = {}

    def path(name):
        bad[name.split(".")[0]] = p = os.path.join(root, name)
        return p

    open(path("empty.h5"), "wb").close()
    with open(good_h5, "rb") as f:
        head = f.read(os.path.getsize(good_h5) // 2)
    with open(path("truncated.h5"), "wb") as f:
        f.write(head)
    with open(path("text.h5"), "w") as f:
        f.write("this is not a weight file\n")
    with zipfile.ZipFile(path("not_keras.keras"), "w") as z:
        z.writestr("readme.txt", "a zip, but not a Keras archive")
    bad["tiny_cnn"] = os.path.join(root, "tiny_cnn.h5")
    bad["mobilenet"] = os.path.join(root, "mobilenet.keras")

    def edited(name, edit):
        p = path(name)
        shutil.copyfile(good_h5, p)
        with h5py.File(p, "r+") as f:
            edit(f)

    dset = "block2_sepconv1/block2_sepconv1/pointwise_kernel:0"

    def wrong_shape(f):
        del f[dset]
        f.create_dataset(dset, data=np.zeros((1, 1, 64, 100), np.float32))

    def set_value(value):
        def edit(f):
            a = f[dset][()]
            a.flat[0] = value
            f[dset][...] = a
        return edit

    def external_link(f):
        del f[dset]
        f[dset] = h5py.ExternalLink("/etc/passwd", "/x")

    def soft_link(f):
        del f[dset]
        f[dset] = h5py.SoftLink("/block1_conv1/block1_conv1/kernel:0")

    def external_storage(f):
        shape = f[dset].shape
        del f[dset]
        f.create_dataset(dset, shape=shape, dtype="f4",
                         external=[("/dev/zero", 0, int(np.prod(shape)) * 4)])

    edited("wrong_shape.h5", wrong_shape)
    edited("nan.h5", set_value(np.nan))
    edited("inf.h5", set_value(np.inf))
    edited("external_link.h5", external_link)
    edited("soft_link.h5", soft_link)
    edited("external_storage.h5", external_storage)
    return bad
