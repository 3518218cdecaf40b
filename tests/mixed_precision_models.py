"""Models fine-tuned under Keras' mixed precision, as keras.io and Kaggle notebooks train them on GPUs.

``keras.mixed_precision.set_global_policy("mixed_float16")`` (or ``"mixed_bfloat16"``), then the
keras.io recipe (Rescaling, the nested frozen backbone, a head whose last layer computes in float32:
``Activation("softmax", dtype="float32")`` or ``Dense(..., dtype="float32")``), BN statistics
randomised around the data's (keras_helpers.calibrate_batchnorm: randomize()'s alone overflow float16),
one step of ``fit()``, saved in each format its Keras writes. Each case records the model's own
``predict`` and its float32 twin's answer: the same weights in the same graph with every layer's policy
set to float32 (:func:`float32_math`), i.e. the exact float32 math of the weights.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import numpy as np

from keras_helpers import calibrate_batchnorm, keras_predict, randomize

SIZE = 71


@dataclass
class Case:
    policy: str
    files: dict  # {format: path}; "checkpoint" has its config in "config"
    x: np.ndarray  # raw pixels, (N, 71, 71, 3) float32
    expected: np.ndarray  # the mixed-precision model's predict(x)
    exact: np.ndarray  # its float32 twin's predict(x)
    config: str | None = None  # the model's to_json(), for a checkpoint
    notes: dict = field(default_factory=dict)


@contextlib.contextmanager
def global_policy(fw, name):
    """``set_global_policy(name)`` for the block, float32 again after it."""
    setter = fw.config.set_dtype_policy if fw.__name__ == "keras" else fw.mixed_precision.set_global_policy
    setter(name)
    try:
        yield
    finally:
        setter("float32")


def recipe(fw, last, classes, seed):
    """The keras.io recipe under the global policy in force, its last layer computing in float32."""
    base = fw.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3))
    base.trainable = False
    inputs = fw.Input((SIZE, SIZE, 3), name="image")
    x = fw.layers.Rescaling(1 / 127.5, offset=-1, name="rescaling")(inputs)
    x = base(x, training=False)
    x = fw.layers.GlobalAveragePooling2D(name="pool")(x)
    x = fw.layers.Dropout(0.2, name="dropout")(x)
    if last == "activation":  # keras.io's mixed precision guide: the softmax alone in float32
        logits = fw.layers.Dense(classes, name="dense")(x)
        outputs = fw.layers.Activation("softmax", dtype="float32", name="probs")(logits)
    else:
        outputs = fw.layers.Dense(classes, activation="softmax", dtype="float32", name="dense")(x)
    model = randomize(fw.Model(inputs, outputs), seed=seed)
    rng = np.random.default_rng(seed)
    calibrate_batchnorm(model.get_layer("xception"), rng.uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32), seed)
    # run_eagerly under bfloat16: one eager step at 71x71 (~0.7 s of CPU) costs less than tracing the training
    # graph (~3 s). Not under float16: the tape watches the frozen backbone's variables too (freezing is Keras',
    # their tf.Variables stay trainable), so an eager step computes every float16 convolution's gradient on the
    # CPU's slow float16 kernels (~13 s of CPU a step), which the traced graph prunes as unused (~3 s with its
    # tracing). Measured 2026-11-30 on both frameworks; either way it is the same fit() of the same model.
    policy = fw.config.dtype_policy() if fw.__name__ == "keras" else fw.mixed_precision.global_policy()
    eager = policy.name == "mixed_bfloat16"
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", run_eagerly=eager)
    # the Dropout mask of the fit step is the framework's random draw: seeded, so every run trains the same
    # weights (unseeded, which of the head's weights Adam moved varied by run, and with it the bfloat16
    # head's rounding: CI measured 0.202 of max|x| at the dense layer once, against 0.2 allowed)
    fw.utils.set_random_seed(seed)
    model.fit(rng.uniform(0, 255, (2, SIZE, SIZE, 3)).astype(np.float32), np.array([0, classes - 1]), epochs=1,
              batch_size=2, verbose=0)
    return model


def float32_math(fw, model, x):
    """``model(x)`` with every layer's dtype policy float32: the same graph and weights (mixed precision keeps
    float32 variables) computing in float32, i.e. the exact float32 math of the weights. The policies are set
    in place (Keras 3's ``dtype_policy`` setter, tf_keras' ``_set_dtype_policy``), so call it last. It was a
    second model read back from ``model.to_json()`` with the policies replaced (``model_from_json``): ~1.4 s
    of CPU a model to build, and its answers agree with these within 2e-6 of max|p| (measured 2026-11-30).
    A layer left computing in 16 bits would fail the tests: RTOL (1e-5) against ours, FLOAT32_ROUNDOFF (1e-4)
    against the 16-bit predict."""
    def walk(layer):
        if fw.__name__ == "keras":
            layer.dtype_policy = "float32"
        else:
            layer._set_dtype_policy("float32")
        for inner in getattr(layer, "layers", []):
            walk(inner)
    walk(model)
    return np.asarray(model(x, training=False))


def _case(fw, model, policy, files, seed, **kw):
    x = np.random.default_rng(seed).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    expected = keras_predict(model, x)
    exact = float32_math(fw, model, x)
    return Case(policy, files, x, expected, exact, **kw)


def build(root) -> dict[str, Case]:
    import keras
    import tf_keras

    path = lambda name: os.path.join(root, name)  # noqa: E731
    out = {}
    with global_policy(keras, "mixed_float16"):
        model = recipe(keras, "activation", 4, seed=41)
        files = {"keras": path("k16.keras"), "h5": path("k16.h5"), "weights": path("k16.weights.h5")}
        model.save(files["keras"])
        model.save(files["h5"])
        model.save_weights(files["weights"])
        out["keras_mixed_float16"] = _case(keras, model, "mixed_float16", files, 1, config=files["keras"])
    with global_policy(keras, "mixed_bfloat16"):
        model = recipe(keras, "dense", 3, seed=42)
        model.save(path("kbf16.keras"))
        out["keras_mixed_bfloat16"] = _case(keras, model, "mixed_bfloat16", {"keras": path("kbf16.keras")}, 2)
    with global_policy(tf_keras, "mixed_float16"):
        model = recipe(tf_keras, "dense", 3, seed=43)
        files = {"h5": path("t16.h5"), "savedmodel": path("t16_savedmodel"), "checkpoint": path("t16_ckpt")}
        model.save(files["h5"])
        # no extension: a SavedModel directory. save_traces=False: with its traced functions it was most of the 34 s
        # of CPU that tf_keras' three model.save calls of build() took (two .h5 and this; measured 2026-11-29), and
        # the file measured 14.5 s of CPU less without them. The dtype policies are in keras_metadata.pb's config
        # either way, and tests/test_real_world_files.py::test_savedmodel_without_traces_reads_as_the_default_one
        # shows the reader gets the same config, manifest and arrays from both saves (the corpus keeps a default one)
        model.save(files["savedmodel"], save_traces=False)
        model.save_weights(files["checkpoint"])  # no .h5: a TensorFlow checkpoint
        with open(path("t16.json"), "w") as f:
            f.write(model.to_json())
        out["tf_keras_mixed_float16"] = _case(tf_keras, model, "mixed_float16", files, 3, config=path("t16.json"))
    with global_policy(tf_keras, "mixed_bfloat16"):
        model = recipe(tf_keras, "activation", 2, seed=44)
        model.save(path("tbf16.h5"))
        out["tf_keras_mixed_bfloat16"] = _case(tf_keras, model, "mixed_bfloat16", {"h5": path("tbf16.h5")}, 4)
    return out

