"""``Normalization(invert=True)`` and ``Normalization(axis=None)`` in front of the backbone (review 29: both
were refused; Keras 3 writes ``axis=None`` as ``[]``).

Keras 3 and tf_keras compute the inverted layer as ``mean + x * max(sqrt(variance), epsilon)`` (keras/src/
layers/preprocessing/normalization.py, tf_keras/src/layers/preprocessing/normalization.py): a pipeline that
feeds normalised images and maps them back to pixels in-graph. It is as affine as the forward direction, so
the converter records it as a normalization step with ``"invert": true`` (npxception.input_stage).

The layer alone is checked bit for bit against each framework's own call (the same two float32 operations,
a multiply then an add, in the same order: no rounding may differ), with the statistics given and adapted;
the whole path once, a fine-tuned Keras 3 file against ``model.predict`` of the model that wrote it.
"""

from __future__ import annotations

import importlib
import json

import numpy as np
import pytest

from npxception import input_stage
from npxception.weights_tools.graph import KLayer
from npxception.weights_tools.preprocessing import _step
from keras_corpus import _fit_one_step, _logits_and_terms
from keras_helpers import randomize

S = 71  # the smallest input Xception takes without the top: the cheapest whole network
MEAN, VARIANCE = [0.4, -0.2, 0.1], [0.09, 0.04, 0.25]  # a normalised feed mapped back: small values, small spread


def _pixels(seed, n=2):
    return np.random.default_rng(seed).normal(0.0, 1.0, (n, S, S, 3)).astype(np.float32)


def _layer_step(fw, adapted, x, **kw):
    """``(the layer's own call on x, our step from its saved config and weights)`` of a Normalization made with
    ``kw``, its statistics ``adapted`` on pixels or given as mean/variance (``kw``'s, when not adapted)."""
    given = {k: kw.pop(k) for k in ("mean", "variance") if k in kw}
    layer = fw.layers.Normalization(**kw, **({} if adapted else given), name="norm")
    weights = []
    if adapted:
        layer.adapt(np.random.default_rng(2).normal(100.0, 40.0, (8, 5, 5, 3)).astype(np.float32))
        weights = [np.asarray(w) for w in layer.get_weights()]
        assert len(weights) == 3, [w.shape for w in weights]  # mean, variance, count: what a saved file holds
    config = json.loads(json.dumps(layer.get_config()))  # as a saved file holds it (axis a list)
    return np.asarray(layer(x)), _step(KLayer(name="norm", class_name="Normalization", config=config,
                                              weights=weights))


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
@pytest.mark.parametrize("adapted", [False, True])
def test_inverted_normalization_step_is_the_frameworks_own_call(framework, adapted):
    x = _pixels(1)
    theirs, step = _layer_step(importlib.import_module(framework), adapted, x, invert=True, mean=MEAN,
                               variance=VARIANCE)
    assert step["invert"] is True, step  # read from the config
    stage = input_stage.validate([step], channels=3)
    ours = input_stage.apply(stage, x)
    assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())
    assert "invert=True" in input_stage.describe(stage[0]), input_stage.describe(stage[0])
    # the forward direction is untouched: the same layer without invert is the other formula
    forward = input_stage.validate([{k: v for k, v in step.items() if k != "invert"}], channels=3)
    assert not np.allclose(input_stage.apply(forward, x), theirs)


@pytest.mark.parametrize("framework", ["keras", "tf_keras"])
@pytest.mark.parametrize("adapted", [False, True])
def test_one_mean_and_variance_for_every_value_is_the_frameworks_own_call(framework, adapted):
    """axis=None: scalar statistics, broadcast over the channels, bit for bit as the layer's own call."""
    x = _pixels(4)
    theirs, step = _layer_step(importlib.import_module(framework), adapted, x, axis=None, mean=120.0,
                               variance=3600.0)
    assert np.ndim(step["mean"]) == 0 and np.ndim(step["variance"]) == 0, step
    ours = input_stage.apply(input_stage.validate([step], channels=3), x)
    assert np.array_equal(ours, theirs), float(np.abs(ours - theirs).max())


def test_invert_must_be_a_boolean():
    with pytest.raises(ValueError, match=r"input_stage\[0\]\.invert: expected true or false, found 'yes'"):
        input_stage.validate([{"kind": "normalization", "name": "n", "mean": 0.0, "variance": 1.0, "invert": "yes"}],
                          channels=3)


def test_fine_tuned_file_with_an_inverted_normalization_converts_to_what_predict_gives(tmp_path):
    """A Keras 3 model fed normalised images: Normalization(invert=True) back to pixels, the recipe's
    Rescaling, Xception, GAP, Dense; BN statistics random, one fit() step, saved as .keras.

    Tolerance: 1e-5 of the size of the terms the Dense logits sum (keras_corpus._logits_and_terms: random BN
    statistics leave logits far smaller than their terms, and float32 rounding, Keras' included, is relative
    to the terms); the stage itself is bit-exact (the test above), so only the backbone's float32 sums in
    another order differ, measured below 2e-7 of the terms elsewhere in the suite (test_small_inputs.py)."""
    import keras

    import npxception

    L = keras.layers
    inp = keras.Input((S, S, 3), name="normalised")
    h = L.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 3000.0, 3300.0], invert=True,
                        name="unnormalize")(inp)
    h = L.Rescaling(1 / 127.5, offset=-1.0, name="rescale")(h)
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(S, S, 3))
    pooled = L.GlobalAveragePooling2D(name="pool")(base(h))
    model = randomize(keras.Model(inp, L.Dense(3, name="dense")(pooled)), seed=29)
    _fit_one_step(model, keras.losses.SparseCategoricalCrossentropy(from_logits=True), S, False, np.array([2, 0]))
    model.save(tmp_path / "m.keras")
    x = _pixels(3, n=3)
    theirs, terms = _logits_and_terms(keras, model)(x)
    ours = npxception.weights_tools.read(tmp_path / "m.keras")
    assert [s["kind"] for s in ours.input_stage] == ["normalization", "rescaling"], ours.input_stage
    assert ours.input_stage[0].get("invert") is True, ours.input_stage[0]
    err = float(np.abs(ours(x).astype(np.float64) - theirs).max())
    assert err <= 1e-5 * terms, (err, terms)
    # the manifest keeps it: a saved and reloaded model computes the same
    ours.save(tmp_path / "m.npz")
    again = npxception.load(tmp_path / "m.npz")
    assert again.input_stage[0].get("invert") is True, again.input_stage[0]
    assert np.array_equal(again(x), ours(x))
