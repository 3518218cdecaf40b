"""Keras 3 weights read with the config of the same model built again, and LoRA in a checkpoint (review 29).

A notebook that trains a model, then builds it again to save its config, gets layers whose auto-names
(``conv2d_12``, ``batch_normalization_9``: applications.Xception leaves its residual convolutions and their
BN unnamed) count on from the first build, while the ``.weights.h5`` written by the first records
``conv2d_8``. Keras' ``load_weights`` places weights by their path in the file (class and order), never by
name, so it loads them; the converter does the same for auto-names of the same class, and still refuses a
config whose *given* name differs (``head`` where the file holds ``classifier``'s weights).

A Keras 3 model with LoRA enabled (``enable_lora``) and written with ``tf.train.Checkpoint`` keeps
``lora_kernel_a`` and ``lora_kernel_b`` unmerged beside the kernel: refused, naming LoRA and the saves that
merge it (``.keras`` and ``.weights.h5`` do: tested in review 29, 1.9e-6 of the logits).

One model trained (random BN statistics, one fit() step), one built after it: 71x71, the smallest input.
Tolerance: 1e-5 of the size of the terms the Dense logits sum (keras_corpus._logits_and_terms; the same rule
and reason as tests/test_small_inputs.py: float32 rounding in another order, measured below 2e-7 of them).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import npxception.weights_tools as wt
from keras_corpus import _fit_one_step, _logits_and_terms
from keras_helpers import randomize

S = 71


def _model(keras, seed):
    base = keras.applications.Xception(weights=None, include_top=False, input_shape=(S, S, 3))
    pooled = keras.layers.GlobalAveragePooling2D(name="pool")(base.output)
    return randomize(keras.Model(base.input, keras.layers.Dense(3, name="dense")(pooled)), seed=seed)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import keras
    import tensorflow as tf

    root = tmp_path_factory.mktemp("rebuilt")
    trained = _model(keras, 7)
    _fit_one_step(trained, keras.losses.SparseCategoricalCrossentropy(from_logits=True), S, False, np.array([2, 0]))
    x = np.random.default_rng(5).uniform(-1, 1, (2, S, S, 3)).astype(np.float32)
    logits, terms = _logits_and_terms(keras, trained)(x)
    trained.save_weights(root / "trained.weights.h5")
    rebuilt = _model(keras, 8)  # the notebook's second build: its auto-names count on
    (root / "rebuilt.json").write_text(rebuilt.to_json())
    trained.get_layer("dense").enable_lora(2)
    tf.train.Checkpoint(model=trained).write(str(root / "lora" / "ckpt"))
    (root / "lora.json").write_text(trained.to_json())
    names = {n for n in json.dumps(json.loads(rebuilt.to_json())).split('"') if n.startswith("conv2d")}
    return root, x, logits, terms, names


def test_weights_read_with_the_config_of_the_model_built_again(files):
    root, x, logits, terms, names = files
    with open(root / "trained.weights.h5", "rb") as f:
        assert b"conv2d" in f.read()
    assert names and "conv2d" not in names, names  # the second build's residual convolutions: conv2d_N, N > 0
    ours = wt.read(root / "trained.weights.h5", config=root / "rebuilt.json")
    err = float(np.abs(ours(x).astype(np.float64) - logits).max())
    assert err <= 1e-5 * terms, (err, terms)


def test_a_given_name_that_differs_is_still_refused(files, tmp_path):
    root, *_ = files
    config = json.loads((root / "rebuilt.json").read_text())
    text = json.dumps(config).replace('"dense"', '"classifier"')
    assert text != json.dumps(config)
    (tmp_path / "renamed.json").write_text(text)
    with pytest.raises(wt.ConversionError, match=r"holds the weights of layer 'dense', but the config puts layer "
                                                 r"'classifier' there"):
        wt.read(root / "trained.weights.h5", config=tmp_path / "renamed.json")


def test_lora_in_a_checkpoint_is_refused_naming_lora_and_the_saves_that_merge_it(files):
    root, *_ = files
    with pytest.raises(wt.ConversionError, match=r"\(layer dense, Dense\) holds lora_kernel_a and lora_kernel_b: "
                                                 r"LoRA .*enable_lora.*unmerged.*model\.save\('model\.keras'\)"):
        wt.read(root / "lora" / "ckpt", config=root / "lora.json")
