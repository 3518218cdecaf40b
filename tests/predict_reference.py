"""One Keras Xception with random weights, and what Keras' own pipeline predicts with it.

Shared by test_predict.py, test_cli.py and test_framework_free.py and built once
per pytest process (building and running a 299x299 Keras Xception costs seconds).

Why the classifier kernel is scaled. ``keras_helpers.randomize`` draws He-normal
kernels and random BatchNorm statistics; nothing renormalises the activations,
so the pooled features reach ~1e5-1e6 and the raw logits differ by ~1e6: the
softmax is exactly one-hot and every other score is 0.0. Comparing such
scores would check nothing but the argmax. So the ``predictions`` kernel is
multiplied by ``TARGET_LOGIT_STD / std(logits)`` (measured on the sample
photos with Keras' own pooled features): the logits then spread with a
standard deviation of ~3, the top class gets ~0.3-0.5 and the next ones
~0.01-0.3, so all five scores and their order are informative.
The logits (the same network with ``classifier_activation=None``) are also
recorded, for a comparison that no softmax can flatten.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

REPO = pathlib.Path(__file__).resolve().parent.parent
SAMPLES = [REPO / "examples" / "chelsea.png", REPO / "examples" / "coffee.png"]
SIZE = 299
TARGET_LOGIT_STD = 3.0
SEED = 5


@dataclass
class KerasReference:
    keras_model: object  # the Keras 3 model (softmax head, scaled kernel)
    ours: object  # npxception.XceptionModel converted from it by weights_tools.from_keras
    npz: pathlib.Path  # `ours` saved as an npxception weight file
    probs: np.ndarray  # (2, 1000) Keras: load_img -> img_to_array -> preprocess_input -> predict
    logits: np.ndarray  # (2, 1000) the same before the softmax
    inputs: np.ndarray  # (2, 299, 299, 3) Keras' preprocessed batch
    folder: pathlib.Path
    _keras_file: pathlib.Path | None = None

    def keras_file(self) -> pathlib.Path:
        """The Keras model saved as a Keras 3 ``.keras`` archive (written on first use)."""
        if self._keras_file is None:
            path = self.folder / "random_xception.keras"
            self.keras_model.save(path)
            self._keras_file = path
        return self._keras_file


_CACHE: dict = {}


def keras_reference(tmp_path_factory) -> KerasReference:
    if "ref" in _CACHE:
        return _CACHE["ref"]
    import keras

    from keras_helpers import randomize
    from npxception.weights_tools import from_keras

    model = randomize(keras.applications.Xception(weights=None, input_shape=(SIZE, SIZE, 3)), seed=SEED)
    # Keras' documented pipeline, step by step.
    batch = np.stack([keras.utils.img_to_array(keras.utils.load_img(str(p), target_size=(SIZE, SIZE)))
                      for p in SAMPLES])
    x = keras.applications.xception.preprocess_input(batch.copy())  # Keras divides in place

    dense = model.get_layer("predictions")
    kernel, bias = dense.get_weights()
    features = keras.Model(model.input, model.get_layer("avg_pool").output).predict(x, verbose=0)
    scale = TARGET_LOGIT_STD / float(np.std(features.astype(np.float64) @ kernel))
    dense.set_weights([(kernel * scale).astype(kernel.dtype), bias])

    probs = model.predict(x, verbose=0)
    # The logits with Keras' own arithmetic: the pooled features through the scaled Dense.
    logits = np.asarray(keras.ops.matmul(features, dense.kernel) + dense.bias)

    # Cached for the process (four files share it): conftest keeps "session_" directories to the end.
    folder = tmp_path_factory.mktemp("session_keras_reference")
    ours = from_keras(model)
    npz = ours.save(folder / "random_xception.npz")
    ref = KerasReference(model, ours, pathlib.Path(npz), probs, logits, x, folder)
    _CACHE["ref"] = ref
    return ref


def top_indices(scores: np.ndarray, top: int) -> list[list[int]]:
    """Best-first class indices per row (Keras' decode_predictions order when there are no ties)."""
    return [[int(i) for i in row.argsort()[-top:][::-1]] for row in scores]


def assert_well_separated(scores: np.ndarray, top: int, gap: float) -> None:
    """The top-``top`` (+1) scores differ by more than ``gap``, so their order is not a rounding accident."""
    for row in scores:
        best = np.sort(row)[::-1][:top + 1]
        assert np.all(-np.diff(best) > gap), f"scores too close to order reliably: {best}"
