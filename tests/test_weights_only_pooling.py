"""A weights-only file's head pooling is read from the file when the file names it (review 26, F2).

``keras.applications.Xception(include_top=True, pooling="max")`` ignores ``pooling`` and builds
``GlobalAveragePooling2D(name="avg_pool")``. A user who passed ``pooling="max"`` gives ``--pooling max``;
converted so, the output was 2e-2 of its largest value off ``model.predict``, without a word. The file
says which: tf_keras' ``layer_names`` lists the weightless ``avg_pool``, a Keras 3 ``.weights.h5`` has a
``layers/global_average_pooling2d`` group. The recorded pooling is used; a contradicting flag is refused.

What such a file never records is its dtype policy (review 26, F3): a mixed_float16 model keeps float32
weights, and one converted with the head flags was 1.65e-4 off its predict without a word. Every
weights-only conversion now says so in a notice, and the refusal offering the head flags says they do not give it.
"""

from __future__ import annotations

import numpy as np
import pytest

from keras_helpers import keras_predict, randomize
from npxception import weights_tools
from npxception.weights_tools import ConversionError

SIZE = 71  # Keras' smallest Xception input: a cheap build
# Both compute in float32 from the same float32 weights; measured 4e-7 of the largest logit here and on
# review 26's files, and the wrong pooling is 2e-2: 1e-5 separates them with room on either side.
RTOL = 1e-5


def _close(model, fx):
    ours = model(fx["x"])
    err = np.abs(ours.astype(np.float64) - fx["expected"]).max()
    assert err <= RTOL * np.abs(fx["expected"]).max(), err


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The two frameworks' weights-only files of Xception(include_top=True, pooling="max") (an avg_pool head)
    and Keras 3's of a bare backbone with pooling="max"."""
    pytest.importorskip("tf_keras")
    pytest.importorskip("keras")
    import keras
    import tf_keras

    root = tmp_path_factory.mktemp("pooling")
    x = np.random.default_rng(26).uniform(-1, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    out = {}
    for name, lib, path in (("tf_keras", tf_keras, "w.h5"), ("keras3", keras, "m.weights.h5")):
        model = randomize(lib.applications.Xception(weights=None, include_top=True, pooling="max", classes=3,
                                                    classifier_activation=None, input_shape=(SIZE, SIZE, 3)),
                          seed=26)
        model.save_weights(str(root / f"{name}_{path}"))
        out[name] = {"path": str(root / f"{name}_{path}"), "x": x, "expected": keras_predict(model, x)}
    base = randomize(keras.applications.Xception(weights=None, include_top=False, pooling="max",
                                                 input_shape=(SIZE, SIZE, 3)), seed=27)
    base.save_weights(str(root / "base.weights.h5"))
    out["backbone"] = {"path": str(root / "base.weights.h5"), "x": x, "expected": keras_predict(base, x)}
    bare = randomize(keras.applications.Xception(weights=None, include_top=False, input_shape=(SIZE, SIZE, 3)),
                     seed=28)
    bare.save_weights(str(root / "bare.weights.h5"))
    out["unpooled"] = {"path": str(root / "bare.weights.h5"), "x": x, "expected": keras_predict(bare, x)}
    return out


@pytest.mark.parametrize("name", ["tf_keras", "keras3"])
def test_contradicting_pooling_is_refused_naming_both(files, name):
    fx = files[name]
    with pytest.raises(ConversionError, match="--pooling max contradicts") as err:
        weights_tools.read(fx["path"], pooling="max", input_shape=(SIZE, SIZE), classifier_activation="linear")
    msg = str(err.value)
    assert "--pooling max contradicts" in msg and "avg" in msg and "GlobalAveragePooling2D" in msg, msg
    assert ("avg_pool" if name == "tf_keras" else "global_average_pooling2d") in msg, msg


@pytest.mark.parametrize("name", ["tf_keras", "keras3"])
def test_recorded_pooling_is_used_and_not_asked_for(files, name):
    fx = files[name]
    # the file determines the pooling: the refusal asks only for what it does not record
    with pytest.raises(ConversionError, match="--input-shape") as err:
        weights_tools.read(fx["path"])
    msg = str(err.value)
    assert "pooling (average or max)" not in msg and "--pooling" not in msg, msg
    assert "--input-shape" in msg and "--classifier-activation" in msg, msg
    model = weights_tools.read(fx["path"], input_shape=(SIZE, SIZE), classifier_activation="linear")
    assert model.head[0]["kind"] == "global_avg_pool"
    _close(model, fx)
    _close(weights_tools.read(fx["path"], pooling="avg", input_shape=(SIZE, SIZE),
                              classifier_activation="linear"), fx)


def test_bare_backbone_pooling_is_read_from_the_file(files):
    fx = files["backbone"]
    model = weights_tools.read(fx["path"])
    assert [h["kind"] for h in model.head] == ["global_max_pool"]
    _close(model, fx)
    # the notice names only what the file does not record: the input size
    head_notice = [n for n in model.notices if "dtype policy" not in n]
    assert len(head_notice) == 1 and "max pooling" in head_notice[0], model.notices
    assert "--pooling" not in head_notice[0] and "--input-shape" in head_notice[0], model.notices
    with pytest.raises(ConversionError, match="--pooling avg contradicts"):
        weights_tools.read(fx["path"], pooling="avg")


def test_backbone_without_pooling_layer_converts_unpooled_with_a_notice(files):
    """No pooling layer in the file: the documented policy (unpooled, any size), said in a notice."""
    fx = files["unpooled"]
    model = weights_tools.read(fx["path"])
    assert model.head == []
    _close(model, fx)
    notice = " ".join(model.notices)
    for needed in ("does not record", "pooling", "input shape", "unpooled", "--pooling avg|max", "--input-shape H,W"):
        assert needed in notice, (needed, notice)


def _dtype_notice(model):
    found = [n for n in model.notices if "does not record the dtype policy" in n]
    assert len(found) == 1, model.notices
    return found[0]


@pytest.mark.parametrize("name", ["tf_keras", "keras3", "backbone"])
def test_weights_only_conversion_says_the_dtype_policy_is_not_recorded(files, name):
    fx = files[name]
    head = {} if name == "backbone" else dict(input_shape=(SIZE, SIZE), classifier_activation="linear")
    notice = _dtype_notice(weights_tools.read(fx["path"], **head))
    for needed in ("mixed_float16", "float32 weights", "--config", fx["path"]):
        assert needed in notice, (needed, notice)
    if name != "backbone":
        with pytest.raises(ConversionError, match=r"--classifier-activation.*dtype policy.*mixed-precision "
                                                  r"model needs --config"):
            weights_tools.read(fx["path"])
